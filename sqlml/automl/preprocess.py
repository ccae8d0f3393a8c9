"""Preprocessing chosen from the data and the estimator's encoding, always inside the ONNX graph.

  encoding            numbers                          text categories
  scaled              median imputation + scaling      one-hot of the frequent categories
  one_hot             median imputation                one-hot of the frequent categories
  native_categories   as they are (NaN is native)      ordinal codes (the estimator's own categoricals)
  native_missing      as they are (NaN is native)      one-hot of the frequent categories

No scaling ahead of trees: sklearn scales in float64 and ONNX in float32, and the rounding moves
rows across split thresholds (measured: probability gaps up to 0.08). Categories outside the
kept set (rare, or unseen at training) encode as all-zeros (one-hot) or NaN (ordinal), the same
in scikit-learn and in ONNX.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from sqlml.automl.spec import NATIVE_CATEGORIES, NATIVE_MISSING, SCALED
from sqlml.data.schema import FeatureSchema

MAX_CATEGORIES = 64  # per text column
MIN_CATEGORY_COUNT = 2


@dataclass(frozen=True)
class Plan:
    """The inputs of each kind and the categories kept for each text input."""

    numeric: tuple
    text: tuple
    categories: dict  # text input -> sorted list of kept categories

    @classmethod
    def from_data(cls, schema: FeatureSchema, frame) -> Plan:
        """``frame``: the training DataFrame of model inputs."""
        categories = {}
        for name in schema.text_inputs:
            counts = Counter(frame[name].tolist())
            kept = [c for c, k in counts.most_common(MAX_CATEGORIES) if k >= MIN_CATEGORY_COUNT] \
                or [c for c, _ in counts.most_common(1)]
            categories[name] = sorted(kept)
        return cls(tuple(schema.numeric_inputs), tuple(schema.text_inputs), categories)

    def width(self, encoding: str) -> int:
        """Columns of the encoded matrix: one per number, and per text input one (ordinal codes) or
        one per kept category (one-hot): what a fit's cost grows with (``sqlml.automl.policy``)."""
        if encoding == NATIVE_CATEGORIES:
            return len(self.numeric) + len(self.text)
        return len(self.numeric) + sum(len(self.categories[n]) for n in self.text)

    def categorical_indices(self) -> list[int]:
        """Columns of the transformed matrix that hold ordinal codes (NATIVE_CATEGORIES encoding)."""
        return list(range(len(self.numeric), len(self.numeric) + len(self.text)))


def build(plan: Plan, encoding: str):
    """An unfitted ColumnTransformer over the model-input DataFrame, for an estimator's ``encoding``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    parts = []
    if plan.numeric:
        if encoding in (NATIVE_CATEGORIES, NATIVE_MISSING):
            parts.append(("num", "passthrough", list(plan.numeric)))
        else:
            # keep_empty_features: a column missing in every training row still has a slot in the graph
            steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
            if encoding == SCALED:
                steps.append(("scale", StandardScaler()))
            parts.append(("num", Pipeline(steps), list(plan.numeric)))
    if plan.text:
        cats = [plan.categories[n] for n in plan.text]
        if encoding == NATIVE_CATEGORIES:
            enc = OrdinalEncoder(categories=cats, handle_unknown="use_encoded_value", unknown_value=np.nan,
                                 dtype=np.float32)
        else:
            enc = OneHotEncoder(categories=cats, handle_unknown="ignore", sparse_output=False, dtype=np.float32)
        parts.append(("cat", enc, list(plan.text)))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)
