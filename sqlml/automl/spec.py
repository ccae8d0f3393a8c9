"""What the search needs to know about an estimator, as data: :class:`EstimatorSpec`.

A spec says which tasks it serves, the kind of model it is (``family``: how its size is chosen
and what it costs to score), how its inputs are encoded (``encoding``, see ``sqlml.automl.preprocess``),
its search space (:class:`Hyper` per hyperparameter), a short portfolio of configurations known to
be good (tried first, in order), its fit time relative to LightGBM's, how to build and fit it, and
how skl2onnx learns to convert it. One module per library in ``sqlml.automl.learners`` fills these
in; the search (``sqlml.automl.search``) reads them and names no library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

# families: the kind of model, which says how its size is set
LINEAR = "linear"  # no size
TREES = "trees"  # a forest of n_estimators trees, grown in chunks up to the deadline
BOOSTING = "boosting"  # rounds chosen by early stopping on the validation fold, scaled up on a refit

# encodings of the inputs (sqlml.automl.preprocess.build)
SCALED = "scaled"  # numbers: median imputation + scaling; text: one-hot
ONE_HOT = "one_hot"  # numbers: median imputation; text: one-hot
NATIVE_CATEGORIES = "native_categories"  # numbers as they are (NaN native); text: ordinal codes, NaN if unknown,
# or target means for a column of many categories
NATIVE_MISSING = "native_missing"  # numbers as they are (NaN native); text: one-hot

DEFAULT_LEAVES = 31  # leaves per tree when a configuration does not say
EARLY_STOPPING_ROUNDS = 50  # patience of the learners that stop early: rounds fitted past the best one


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter's domain: numbers in [low, high] (log scale if ``log``), or ``choices``.

    ``always``: searched around even when a configuration lacks it (it then starts mid-domain)."""

    name: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple = ()
    always: bool = False

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


@dataclass
class FitContext:
    """What a spec's ``fit`` may use besides the encoded rows.

    ``categorical``: columns of the encoded matrix that hold ordinal codes (NATIVE_CATEGORIES);
    ``valid``: encoded validation rows and targets (Xv, yv), given to specs with ``early_stopping``;
    ``n_estimators``: a fixed number of rounds, instead of early stopping."""

    budget: object  # sqlml.automl.budget.Budget
    categorical: list
    valid: tuple | None = None
    n_estimators: int | None = None


def fit_plain(estimator, X, y, context: FitContext):
    """Fit with no size to choose; returns None (no rounds or trees to report)."""
    estimator.fit(X, y)
    return None


def all_params(params: dict, task) -> dict:
    return dict(params)


def fixed_leaves(params: dict, rows: int, task) -> float:
    return 1.0


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    family: str  # LINEAR, TREES or BOOSTING
    encoding: str  # SCALED, ONE_HOT, NATIVE_CATEGORIES or NATIVE_MISSING
    build: Callable  # (params, task: Task, threads, seed) -> unfitted sklearn-compatible estimator
    fit: Callable = fit_plain  # (estimator, X encoded, y, FitContext) -> rounds or trees kept, or None
    space: tuple = ()
    portfolio: tuple = ()  # configurations tried first, best first (the learned order where it has them)
    cost: float = 1.0  # seconds per unit of work (sqlml.automl.policy.work) relative to LightGBM's
    tasks: frozenset = frozenset({"binary", "multiclass", "regression"})
    early_stopping: bool = False  # fit() uses the validation rows to pick its number of rounds
    params_for: Callable = all_params  # (params, task) -> the params that apply to ``task``
    leaves: Callable = fixed_leaves  # (params, training rows, task) -> leaves per tree, for cost estimates
    library: str = ""  # the module its estimators come from ("lightgbm"), whose version is pinned
    register_onnx: Callable | None = None  # teaches skl2onnx to convert its estimators, if it cannot already
    explain_trees: Callable | None = None  # (estimator, outputs) -> (trees, scale): sqlml.explain.model's reader
    # (fitted estimator) -> mean nodes per tree of its ONNX graph, where its trees' size is not set by
    # ``leaves`` alone (the export's cost estimate)
    onnx_nodes_per_tree: Callable | None = None
    # its fit stops at the budget's deadline with the model so far (FitContext.budget): the final refit
    # is then bounded by the time left rather than run to its end on time reserved for it (a fit time
    # hard to predict, such as lbfgs iterations)
    interruptible_refit: bool = False
