"""The estimator portfolio, described as data.

Each :class:`EstimatorSpec` says which tasks it serves, which preprocessing family it wants, its
search space (:class:`Hyper` per hyperparameter), a short portfolio of configurations known to be
good (tried first, in order), its cost relative to LightGBM, and how to build it. The search loop
(``sqlml.automl.search``) reads these descriptions and knows nothing about any one library.

Every estimator here converts to ONNX under the pinned versions (tested in tests/test_onnx_export.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from sqlml.data.schema import REGRESSION

LINEAR, TREES, BOOSTING = "linear", "trees", "boosting"  # preprocessing families
# Leaves per forest tree. Unbounded regression trees grow to one leaf per sample: 200 of them on
# 7,000 rows are 1.7M nodes, a 60 MB ONNX model that takes 25 s to convert and seconds to load.
FOREST_MAX_LEAVES = 1024


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter's domain: numbers in [low, high] (log scale if ``log``), or ``choices``."""

    name: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple = ()

    def clip(self, value):
        if self.choices:
            return value if value in self.choices else self.choices[0]
        value = min(max(value, self.low), self.high)
        return int(round(value)) if self.integer else float(value)

    def to_unit(self, value) -> float:
        """Position of ``value`` in [0, 1] (for local moves)."""
        if self.choices:
            return self.choices.index(value) / max(len(self.choices) - 1, 1) if value in self.choices else 0.0
        lo, hi, v = (math.log(self.low), math.log(self.high), math.log(value)) if self.log \
            else (self.low, self.high, value)
        return (v - lo) / (hi - lo) if hi > lo else 0.0

    def from_unit(self, u: float):
        u = min(max(u, 0.0), 1.0)
        if self.choices:
            return self.choices[int(round(u * (len(self.choices) - 1)))]
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        v = lo + u * (hi - lo)
        return self.clip(math.exp(v) if self.log else v)


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    family: str
    build: Callable  # (params, task, threads, seed) -> unfitted sklearn estimator
    space: tuple = ()
    portfolio: tuple = ()  # configurations tried first, cheapest first
    cost: float = 1.0  # fit time relative to LightGBM's first portfolio entry
    tasks: frozenset = frozenset({"binary", "multiclass", "regression"})
    early_stopping: bool = False  # fit() accepts a validation set and picks n_estimators itself


# --- builders -------------------------------------------------------------------------------------

def _linear(params, task, threads, seed):
    if task == REGRESSION:
        from sklearn.linear_model import Ridge

        return Ridge(alpha=params.get("alpha", 1.0), random_state=seed)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=params.get("C", 1.0), max_iter=params.get("max_iter", 500), random_state=seed)


def _forest(extra: bool):
    def build(params, task, threads, seed):
        from sklearn import ensemble

        cls = {(False, False): ensemble.RandomForestClassifier, (False, True): ensemble.RandomForestRegressor,
               (True, False): ensemble.ExtraTreesClassifier,
               (True, True): ensemble.ExtraTreesRegressor}[(extra, task == REGRESSION)]
        return cls(n_estimators=int(params.get("n_estimators", 100)),
                   max_features=params.get("max_features", "sqrt" if task != REGRESSION else 1.0),
                   min_samples_leaf=int(params.get("min_samples_leaf", 1)),
                   max_leaf_nodes=params.get("max_leaf_nodes", FOREST_MAX_LEAVES),
                   n_jobs=threads, random_state=seed)

    return build


def _lightgbm(params, task, threads, seed):
    import lightgbm as lgb

    cls = lgb.LGBMRegressor if task == REGRESSION else lgb.LGBMClassifier
    return cls(
        n_estimators=int(params.get("n_estimators", 1000)),
        learning_rate=params.get("learning_rate", 0.05),
        num_leaves=int(params.get("num_leaves", 31)),
        min_child_samples=int(params.get("min_child_samples", 20)),
        subsample=params.get("subsample", 1.0),
        subsample_freq=1 if params.get("subsample", 1.0) < 1.0 else 0,
        colsample_bytree=params.get("colsample_bytree", 1.0),
        reg_lambda=params.get("reg_lambda", 0.0),
        reg_alpha=params.get("reg_alpha", 0.0),
        min_split_gain=0.0,
        max_bin=255,
        cat_smooth=params.get("cat_smooth", 10.0),
        n_jobs=threads,
        random_state=seed,
        verbose=-1,
    )


# --- the portfolio --------------------------------------------------------------------------------

SPECS: dict[str, EstimatorSpec] = {
    "linear": EstimatorSpec(
        name="linear", family=LINEAR, build=_linear, cost=0.3,
        space=(Hyper("C", 1e-3, 1e3, log=True), Hyper("alpha", 1e-3, 1e3, log=True)),
        portfolio=({"C": 1.0, "alpha": 1.0}, {"C": 0.1, "alpha": 10.0}, {"C": 10.0, "alpha": 0.1}),
    ),
    "lightgbm": EstimatorSpec(
        name="lightgbm", family=BOOSTING, build=_lightgbm, cost=1.0, early_stopping=True,
        space=(
            Hyper("learning_rate", 0.01, 0.3, log=True),
            Hyper("num_leaves", 4, 256, log=True, integer=True),
            Hyper("min_child_samples", 2, 100, log=True, integer=True),
            Hyper("subsample", 0.5, 1.0),
            Hyper("colsample_bytree", 0.3, 1.0),
            Hyper("reg_lambda", 1e-3, 10.0, log=True),
        ),
        portfolio=(
            {"learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20, "subsample": 1.0, "colsample_bytree": 1.0,
             "reg_lambda": 0.001},
            {"learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 10, "subsample": 0.8,
             "colsample_bytree": 0.5, "reg_lambda": 1.0},
            {"learning_rate": 0.05, "num_leaves": 63, "min_child_samples": 30, "subsample": 0.8,
             "colsample_bytree": 0.7, "reg_lambda": 0.1},
            {"learning_rate": 0.03, "num_leaves": 7, "min_child_samples": 50, "subsample": 0.7, "colsample_bytree": 0.5,
             "reg_lambda": 5.0},
        ),
    ),
    "random_forest": EstimatorSpec(
        name="random_forest", family=TREES, build=_forest(extra=False), cost=1.5,
        space=(Hyper("n_estimators", 50, 500, log=True, integer=True),
               Hyper("min_samples_leaf", 1, 20, log=True, integer=True),
               Hyper("max_features", choices=("sqrt", 0.5, 1.0))),
        portfolio=({"n_estimators": 200, "min_samples_leaf": 1, "max_features": "sqrt"},
                   {"n_estimators": 200, "min_samples_leaf": 5, "max_features": 0.5}),
    ),
    "extra_trees": EstimatorSpec(
        name="extra_trees", family=TREES, build=_forest(extra=True), cost=1.0,
        space=(Hyper("n_estimators", 50, 500, log=True, integer=True),
               Hyper("min_samples_leaf", 1, 20, log=True, integer=True),
               Hyper("max_features", choices=("sqrt", 0.5, 1.0))),
        portfolio=({"n_estimators": 200, "min_samples_leaf": 1, "max_features": 0.5},
                   {"n_estimators": 200, "min_samples_leaf": 8, "max_features": "sqrt"},  # noisy targets
                   {"n_estimators": 200, "min_samples_leaf": 2, "max_features": 1.0}),
    ),
}

DEFAULT_ALGORITHMS = ("lightgbm", "linear", "extra_trees", "random_forest")


def task_params(spec: EstimatorSpec, params: dict, task: str) -> dict:
    """The subset of ``params`` that applies to ``task`` (linear models: C for classifiers, alpha for Ridge)."""
    if spec.name == "linear":
        return {k: v for k, v in params.items() if k == ("alpha" if task == REGRESSION else "C")}
    return dict(params)
