"""The estimators the search may use: a registry of :class:`~sqlml.automl.spec.EstimatorSpec`.

Each library's estimators live in one module of ``sqlml.automl.learners``, which knows that library
(how to build, fit and encode for it, how its models convert to ONNX and how its trees are read
for explanations). This module only lists them. A new estimator is one such module, a pin of its
library in pyproject.toml's server extras (and its module name in ``sqlml.stack.SERVER_PACKAGES``,
for ``sqlml doctor``), and its ``SPECS`` added below (``add_learner``).

Every estimator here converts to ONNX under the pinned versions (tested in tests/test_onnx_export.py).
"""

from __future__ import annotations

from sqlml.automl.learners import catboost, forest, lightgbm, linear, xgboost
from sqlml.automl.spec import EstimatorSpec
from sqlml.explain import model as explain_model
from sqlml.onnx import convert

SPECS: dict[str, EstimatorSpec] = {}


def add_learner(spec: EstimatorSpec) -> None:
    """Make ``spec`` available to the search (``algorithms => '{name}'``), its models convertible and
    explainable."""
    if spec.name in SPECS:
        raise ValueError(f"estimator {spec.name} is registered twice")
    SPECS[spec.name] = spec
    if spec.register_onnx is not None:
        convert.add_converter(spec.library, spec.register_onnx)
    if spec.explain_trees is not None:
        explain_model.add_tree_reader(spec.library, spec.explain_trees)


for _spec in (*linear.SPECS, *lightgbm.SPECS, *forest.SPECS, *xgboost.SPECS, *catboost.SPECS):
    add_learner(_spec)


# the AutoML portfolio when no algorithms are named; the others (xgboost, catboost) are searched when
# named in ``algorithms``, until a benchmark shows the portfolio gains from them
DEFAULT_ALGORITHMS = ("lightgbm", "linear", "extra_trees", "random_forest")
