"""Target encoding of a text column of many categories: each category becomes its (shrunk) mean target.

Ids of thousands of levels (students, lecturers, schools, agents) carry real effects that ordinal
codes reach poorly: LightGBM splits on sets of up to 32 codes at a time and finds few of the rare
ones, and each set becomes a chain of ONNX nodes. Their mean targets, one number per class, give
the trees those effects in a handful of splits (``sqlml.automl.preprocess`` gives the figures).

``TargetMeans`` is scikit-learn's ``TargetEncoder``: fitted on its rows by cross fitting (each
row's encoding learned from the other folds, so the trees never see a row's own target in its
feature), then on all of them for new rows; a category it never saw encodes as the overall mean.
It outputs float32 values, as the ONNX graph computes them, so that a tree's thresholds fall
between the same values in both. Per input column and class, the ONNX graph holds one
``LabelEncoder`` from the category's text to its mean, which ``sqlml.onnx.core`` folds into a
lookup table like the ordinal codes' (the compiled row and batch paths need nothing new).

Shapes: fitted on one text column (n, 1) and targets (n,) (labels 0..k-1, or numbers), it outputs
(n, 1) for a regression or a binary target and (n, k) for k > 2 classes.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import TargetEncoder

from sqlml.onnx.convert import add_converter


class TargetMeans(TargetEncoder):
    """``TargetEncoder`` whose output is float32, as ONNX computes it, and whose means leave out the
    rows of categories it does not keep (``categories``): scikit-learn counts them as its first
    category, whose mean they would then move."""

    def fit_transform(self, X, y):
        return super().fit_transform(X, y).astype(np.float32)

    def _transform(self, X, *args, **kwargs):
        # the fitting skips a code of -1 (its fast loops' "unknown"); scikit-learn writes 0 for a
        # category outside ``categories`` and keeps the mask apart, which only transforms read
        codes, known = super()._transform(X, *args, **kwargs)
        codes[~known] = -1
        return codes, known

    def transform(self, X):
        return super().transform(X).astype(np.float32)

    def _classes(self) -> int:
        """Output columns per input: k for k > 2 classes, else 1."""
        return len(self.classes_) if self.target_type_ == "multiclass" else 1

    def width(self) -> int:
        """Output columns (what ``columns`` lists, without building its lookup tables)."""
        return len(self.categories_) * self._classes()

    def columns(self) -> list[tuple[int, dict, float]]:
        """Per output column, in order: (its input's index, {category: mean, a float32 value}, the
        mean an unseen category gets)."""
        classes = self._classes()
        means = np.atleast_1d(self.target_mean_)
        out = []
        for i, categories in enumerate(self.categories_):
            for j in range(classes):
                values = np.asarray(self.encodings_[i * classes + j], dtype=np.float32)
                out.append((i, dict(zip(map(str, categories), values.tolist())), float(np.float32(means[j]))))
        return out


def folds():
    """The cross fitting's folds: shuffled with a fixed seed (a fit is reproducible). Not stratified:
    StratifiedKFold refuses classes of fewer rows than folds, which a target of many classes has."""
    from sklearn.model_selection import KFold

    return KFold(5, shuffle=True, random_state=0)


def shape(operator) -> None:
    """skl2onnx's shape calculator: (n, output columns) float32."""
    from skl2onnx.common.data_types import FloatTensorType

    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([n, operator.raw_operator.width()])


def convert(scope, operator, container) -> None:
    """One ``LabelEncoder`` (text -> float, the unseen mean by default) per input column and class,
    each reshaped to (n, 1), concatenated in ``TargetMeans.columns`` order."""
    from skl2onnx.common._apply_operation import apply_concat, apply_reshape

    inputs = operator.inputs
    if len(inputs) != 1 or inputs[0].get_second_dimension() != 1:
        raise NotImplementedError("TargetMeans converts one text column at a time")
    parts = []
    for _, means, default in operator.raw_operator.columns():  # one input: every index is 0
        encoded = scope.get_unique_variable_name("target_means")
        container.add_node("LabelEncoder", inputs[0].onnx_name, encoded, op_domain="ai.onnx.ml", op_version=2,
                           name=scope.get_unique_operator_name("LabelEncoder"),
                           keys_strings=np.array([k.encode("utf-8") for k in means]),
                           values_floats=np.array(list(means.values()), dtype=np.float32), default_float=default)
        parts.append(scope.get_unique_variable_name("target_means_column"))
        apply_reshape(scope, encoded, parts[-1], container, desired_shape=(-1, 1))
    apply_concat(scope, parts, operator.outputs[0].full_name, container, axis=1)


def register_onnx() -> None:
    """Teach skl2onnx ``TargetMeans`` (its own TargetEncoder converter takes no multiclass target)."""
    from skl2onnx import update_registered_converter

    update_registered_converter(TargetMeans, "SqlmlTargetMeans", shape, convert)


add_converter(__name__, register_onnx)  # run before a conversion while this module is loaded
