"""Preprocessing chosen from the data and the estimator's encoding, always inside the ONNX graph.

  encoding            numbers                          text categories
  scaled              median imputation + scaling      one-hot of the frequent categories
  one_hot             median imputation                one-hot of the frequent categories
  native_categories   as they are (NaN is native)      ordinal codes (the estimator's own categoricals),
                                                       or target means for many categories
  native_missing      as they are (NaN is native)      one-hot of the frequent categories

One-hot and ordinal codes keep a text column's MAX_CATEGORIES most frequent categories (a column
each for one-hot: a linear model's width and a forest's split search grow with them). A column of
more categories gets its target means instead under the native-categories encoding
(``sqlml.automl.target_means``: a column per class, up to MAX_MEANS_CATEGORIES categories kept).
Measured with LightGBM on the bench's split (sqlml's codes of the 64 most frequent -> target
means): lme4's InstEval (students, lecturers) log loss 1.556 -> 1.496; nycflights13 (tail numbers,
destinations) rmse 14.72 -> 14.55; a generated churn table whose 300 cities carry almost nothing
AUC 0.657 -> 0.657; and against codes of every category, chem97's 2,355 schools 1.461 -> 1.431.

No scaling ahead of trees: sklearn scales in float64 and ONNX in float32, and the rounding moves
rows across split thresholds (measured: probability gaps up to 0.08). Categories outside the
kept set (rare, or unseen at training) encode as all-zeros (one-hot), NaN (ordinal) or the
overall mean (target means), the same in scikit-learn and in ONNX.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from sqlml.automl.spec import NATIVE_CATEGORIES, NATIVE_MISSING, SCALED
from sqlml.data.schema import FeatureSchema
from sqlml.data.task import task_of

MAX_CATEGORIES = 64  # per text column, one-hot or ordinal codes; beyond it, target means
MAX_MEANS_CATEGORIES = 10_000  # per text column, target means: the graph holds a lookup entry per category and class
MAX_MEANS_ENTRIES = 200_000  # per text column, categories x classes: fewer categories for many classes
MIN_CATEGORY_COUNT = 2


@dataclass(frozen=True)
class Plan:
    """The inputs of each kind, the categories kept for each text input, and the text inputs the
    native-categories encoding gives their target means (``means``, each ``means_width`` columns)
    with the categories kept for them."""

    numeric: tuple
    text: tuple
    categories: dict  # text input -> sorted list of the categories kept for one-hot or ordinal codes
    means: dict = field(default_factory=dict)  # text input -> sorted list of the categories given their means
    means_target: str = "continuous"  # the target's kind, as TargetEncoder names it (binary, multiclass)
    means_width: int = 1  # columns of one input's target means: k for k > 2 classes, else 1

    @classmethod
    def from_data(cls, schema: FeatureSchema, frame) -> Plan:
        """``frame``: the training DataFrame of model inputs."""
        task = task_of(schema.target.task)
        classes = len(schema.target.classes) if task.classification else 0
        kind = "multiclass" if classes > 2 else "binary" if task.classification else "continuous"
        width = classes if classes > 2 else 1
        categories, means = {}, {}
        for name in schema.text_inputs:
            counts = Counter(frame[name].tolist())
            categories[name] = _frequent(counts, MAX_CATEGORIES)
            if len(counts) > MAX_CATEGORIES:
                means[name] = _frequent(counts, min(MAX_MEANS_CATEGORIES, MAX_MEANS_ENTRIES // width))
        return cls(tuple(schema.numeric_inputs), tuple(schema.text_inputs), categories, means, kind, width)

    def coded(self, encoding: str) -> tuple:
        """The text inputs ``encoding`` gives ordinal codes or one-hot (all but the target-encoded ones)."""
        if encoding == NATIVE_CATEGORIES:
            return tuple(n for n in self.text if n not in self.means)
        return self.text

    def width(self, encoding: str) -> int:
        """Columns of the encoded matrix: one per number, and per text input one (ordinal codes),
        ``means_width`` (target means) or one per kept category (one-hot): what a fit's cost grows
        with (``sqlml.automl.policy``)."""
        if encoding == NATIVE_CATEGORIES:
            return len(self.numeric) + len(self.coded(encoding)) + self.means_width * len(self.means)
        return len(self.numeric) + sum(len(self.categories[n]) for n in self.text)

    def categorical_indices(self) -> list[int]:
        """Columns of the transformed matrix that hold ordinal codes (NATIVE_CATEGORIES encoding)."""
        return list(range(len(self.numeric), len(self.numeric) + len(self.coded(NATIVE_CATEGORIES))))


def _frequent(counts: Counter, most: int) -> list:
    """The ``most`` most frequent categories seen MIN_CATEGORY_COUNT times (else the most frequent one), sorted."""
    kept = [c for c, k in counts.most_common(most) if k >= MIN_CATEGORY_COUNT] or [c for c, _ in counts.most_common(1)]
    return sorted(kept)


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
    coded = plan.coded(encoding)
    if coded:
        cats = [plan.categories[n] for n in coded]
        if encoding == NATIVE_CATEGORIES:
            enc = OrdinalEncoder(categories=cats, handle_unknown="use_encoded_value", unknown_value=np.nan,
                                 dtype=np.float32)
        else:
            enc = OneHotEncoder(categories=cats, handle_unknown="ignore", sparse_output=False, dtype=np.float32)
        parts.append(("cat", enc, list(coded)))
    if encoding == NATIVE_CATEGORIES and plan.means:
        from sqlml.automl.target_means import TargetMeans, folds

        # one transformer per input (its ONNX converter takes one text column); for classes "auto":
        # binary or multiclass by the labels the rows hold (a fold may hold two of three classes,
        # which a forced "multiclass" cannot encode); a regression's numbers stay continuous
        target_type = "continuous" if plan.means_target == "continuous" else "auto"
        parts += [(f"means_{i}", TargetMeans(categories=[kept], target_type=target_type, cv=folds()), [name])
                  for i, (name, kept) in enumerate(plan.means.items())]
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)
