"""Where the search spends its time: pure decisions from the table's size, the budget and what the
trials measured. No fitting and no clock here (callers pass seconds in), so every rule is a
table-driven test.

- **Predicted fit seconds** (:func:`fit_seconds`): one fit of a configuration on a fold, from the
  rows, the inputs and the configuration's own size (boosting rounds, trees, features tried per
  split), scaled by the probe — one measured fit of LightGBM's first portfolio entry on the same
  rows — so that the machine's speed and the data's difficulty come from a measurement and only
  the *ratios* between families come from constants (measured on this stack, 1-2 threads).
- **The gate** (:func:`admit`): a portfolio entry runs now when its predicted cost (every fold) is
  a small share of the time left, is deferred behind the cheap entries when it is larger, and is
  skipped when it would take a large share and is unlikely to win. The share allowed scales with
  :func:`win_odds`, the family's odds of winning at this size: on 40,000 rows a 200-tree forest
  that takes half of a 30 s search and rarely beats boosting never starts.
- **Sizes** (:func:`sized_boosting`): larger tables get larger LightGBM trees to start from and to
  search among (leaves up to rows / 16), instead of the small-table ranges.
- **Bagging or refit** (:func:`finish_by_bagging`): the search keeps its trials' fold models, and
  the winner's (averaged) is what the holdout scores; then either those are registered (bagging),
  or the winner is refitted on every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sqlml.automl.spec import BOOSTING, DEFAULT_LEAVES, EARLY_STOPPING_ROUNDS, TREES

RUN, DEFER, SKIP = "run", "defer", "skip"

# Work of one fit: boosting, round x (row x input x a leaves factor + overhead); forests, tree x row x level x
# feature tried per split. An estimator's ``cost`` (``EstimatorSpec.cost``) is its seconds per unit
# of work relative to LightGBM's, measured on this stack (1 thread, 2k-32k rows, 10 inputs, forests
# to 1,024 leaves): random forest ~3.5 (200 trees of all features on 10k regression rows cost ten
# LightGBM fits of lr 0.1 with early stopping), extra trees ~1.
SECONDS_PER_UNIT = 2e-9  # LightGBM's, without a probe: this machine's order of magnitude
# a fit of logistic regression (ridge costs less) per row x encoded input x class: some 40 lbfgs
# iterations of ~5 ns a cell (measured: 72,000 rows x 103 one-hot inputs, 10 iterations in 1.7 s at
# load 9 on 2 cores; a fit of 45 iterations, 9 s there)
LINEAR_SECONDS_PER_CELL = 2e-7
FIT_OVERHEAD = 0.02  # seconds of any fit (preprocessing, Python)
MAX_TREE_LEVELS = 20  # forests stop at 1,024 leaves: about twice log2 of that deep
LEAVES_PER_ROUND_SCALE = 128  # a round's cost grows with its leaves beyond the histogram pass
ROUND_OVERHEAD = 66_000  # units of a boosting round whatever its rows (2k rows: half its cost)
MIN_SPEED, MAX_SPEED = 0.5, 8.0  # bounds of machine_speed: a probe's noise must not price linear at nothing

RUN_SHARE = 0.15  # of the time left: a likely winner costing less runs at once
MAX_SHARE = 1.0  # of the time left: the most a likely winner's entry may take (all of it: it is worth it)
SMALL_ROWS, LARGE_ROWS = 2_000, 30_000  # forests' odds fall from 1 to FOREST_LARGE_ODDS between these (fit rows)
FOREST_LARGE_ODDS = 0.1

BAG_REFIT_SHARE = 0.2  # of the budget: the finish's refits costing more than this pay for bagging


@dataclass(frozen=True)
class Size:
    """What one fit sees: the rows of a fold's fit part, the model inputs, classes (0: regression)."""

    rows: int
    inputs: int
    classes: int = 0
    threads: int = 1

    @property
    def trees_per_round(self) -> int:
        return self.classes if self.classes > 2 else 1


@dataclass(frozen=True)
class Probe:
    """One measured fit: LightGBM's first portfolio entry (``params``) took ``seconds`` for ``rounds``
    on ``inputs`` encoded inputs (None: those of the size it is compared on)."""

    seconds: float
    rounds: int
    params: dict
    inputs: int | None = None


def boosting_rounds(params: dict, probe: Probe | None, cap: int = 1000) -> float:
    """Expected rounds (early stopping, plus its patience): the probe's, scaled by learning rates."""
    if probe is None:
        return min(200.0, cap)
    ratio = probe.params.get("learning_rate", 0.1) / params.get("learning_rate", 0.1)
    return float(min(max(probe.rounds * ratio, 10.0), cap + 50))


def work(family: str, params: dict, size: Size, probe: Probe | None = None, rounds: float | None = None) -> float:
    """Work units of one fit (see the module's constants); 0 for linear models (priced apart).
    ``rounds``: the boosting rounds fitted, when known (else ``boosting_rounds``)."""

    if family == BOOSTING:
        if rounds is None:
            rounds = boosting_rounds(params, probe, int(params.get("n_estimators", 1000)))
        leaves = 1.0 + params.get("num_leaves", 31) / LEAVES_PER_ROUND_SCALE
        rows = size.rows * params.get("subsample", 1.0)
        inputs = max(size.inputs * params.get("colsample_bytree", 1.0), 1.0)
        return rounds * size.trees_per_round * (rows * inputs * leaves + ROUND_OVERHEAD)
    if family == TREES:  # trees are grown in parallel, one per thread
        trees = params.get("n_estimators", 100)
        per_split = features_per_split(params.get("max_features", 1.0), size)
        levels = min(math.log2(max(size.rows, 2.0)), MAX_TREE_LEVELS)
        return trees * size.rows * levels * per_split / max(size.threads, 1)
    return 0.0


def features_per_split(max_features, size: Size) -> float:
    if max_features == "sqrt":
        return max(math.sqrt(size.inputs), 1.0)
    if max_features == "log2":
        return max(math.log2(max(size.inputs, 2)), 1.0)
    return max(float(max_features) * size.inputs, 1.0)


def fit_seconds(family: str, params: dict, size: Size, probe: Probe | None = None, unit: float = 1.0) -> float:
    """Predicted seconds of one fit of ``params`` on ``size``'s rows, scaled by ``probe`` (a
    measured LightGBM fit on the same rows); without a probe, by this stack's order of magnitude
    (a LightGBM round over a million cells takes ~2 ms). ``unit``: the estimator's cost per unit of
    work relative to LightGBM's (``EstimatorSpec.cost``)."""
    if family not in (BOOSTING, TREES):
        cells = size.rows * size.inputs * max(size.trees_per_round, 1)
        return FIT_OVERHEAD + LINEAR_SECONDS_PER_CELL * cells * machine_speed(size, probe)
    units = work(family, params, size, probe) * unit
    if probe is None:
        return FIT_OVERHEAD + units * SECONDS_PER_UNIT
    return FIT_OVERHEAD + max(probe.seconds - FIT_OVERHEAD, 0.0) * units / max(_probe_work(size, probe), 1e-12)


def measured_fit_seconds(family: str, params: dict, size: Size, seconds: float, measured: dict,
                         rounds: int | None = None) -> float:
    """Predicted seconds of one fit of ``params`` from a measured fit of the same estimator on the
    same rows: ``seconds`` for the configuration ``measured``, which kept ``rounds`` boosting rounds
    after early stopping (None: rounds not chosen by early stopping, priced by the probe's rule).

    The measured fit ran its rounds plus the stopping patience (EARLY_STOPPING_ROUNDS); ``params``
    is expected to keep as many rounds scaled by the ratio of learning rates, plus the patience.
    Pricing a measured fit by its *predicted* rounds instead misjudged slow learners five-fold (a
    6-class table of 29k rows: 341 rounds at learning rate 0.05 where 70 were predicted), and the
    search, judging every next trial by that fit, stopped with a third of its budget unused."""
    if family != BOOSTING or rounds is None:
        return seconds * work(family, params, size) / max(work(family, measured, size), 1e-12)
    cap = int(params.get("n_estimators", 1000))
    ratio = measured.get("learning_rate", 0.1) / params.get("learning_rate", 0.1)
    expected = min(max(rounds * ratio, 10.0), cap)
    ran = work(family, measured, size, rounds=rounds + EARLY_STOPPING_ROUNDS)
    return seconds * work(family, params, size, rounds=expected + EARLY_STOPPING_ROUNDS) / max(ran, 1e-12)


def _probe_work(size: Size, probe: Probe) -> float:
    """Work units of the probe's own fit (on its own encoded inputs)."""
    seen = size if probe.inputs is None else replace(size, inputs=probe.inputs)
    return work(BOOSTING, probe.params, seen, probe)


def machine_speed(size: Size, probe: Probe | None) -> float:
    """How much slower than this stack's order of magnitude (SECONDS_PER_UNIT) the probe ran: the
    machine's load, for the models priced apart from boosting (linear); 1 without a probe."""
    if probe is None:
        return 1.0
    expected = _probe_work(size, probe) * SECONDS_PER_UNIT
    return min(max((probe.seconds - FIT_OVERHEAD) / max(expected, 1e-12), MIN_SPEED), MAX_SPEED)


# An estimator whose best error is this many times the best estimator's is not searched further (no
# local moves): tuning does not close such a gap, and an ensemble gives it no weight. On diamonds, 20
# moves of a linear model at twice LightGBM's RMSE took 2.6 s of a 30 s search, chosen for their speed.
FAR_BEHIND = 1.5


def far_behind(family_error: float, best_error: float) -> bool:
    """Is an estimator of best error ``family_error`` (``metrics.error``) out of the race, the best
    being ``best_error``?"""
    return best_error > 0 and family_error > FAR_BEHIND * best_error


def win_odds(family: str, rows: int) -> float:
    """How likely a family is to win (or to matter in the ensemble) at this size, in (0, 1].

    Boosting and the cheap linear models: 1. Forests: 1 up to SMALL_ROWS rows, then falling
    log-linearly to FOREST_LARGE_ODDS at LARGE_ROWS: on this project's benchmarks forests joined
    the winning ensembles of small tables (caravan, OJ, nyse) and never led on the larger ones."""
    if family != TREES or rows <= SMALL_ROWS:
        return 1.0
    if rows >= LARGE_ROWS:
        return FOREST_LARGE_ODDS
    t = math.log(rows / SMALL_ROWS) / math.log(LARGE_ROWS / SMALL_ROWS)
    return 1.0 - t * (1.0 - FOREST_LARGE_ODDS)


def admit(seconds: float, time_left: float, odds: float) -> str:
    """RUN, DEFER or SKIP a portfolio entry predicted to take ``seconds`` (every fold) with
    ``time_left`` for the search, for a family of ``odds`` (``win_odds``).

    It runs at once when it costs at most RUN_SHARE x odds of the time left; it waits behind the
    cheaper entries up to MAX_SHARE x odds; beyond that it is skipped: too large a share of what
    is left for a family that is unlikely to win."""
    if time_left <= 0:
        return SKIP
    share = seconds / time_left
    if share <= RUN_SHARE * odds:
        return RUN
    if share <= MAX_SHARE * odds:
        return DEFER
    return SKIP


# --- sizes ----------------------------------------------------------------------------------------

MEDIUM_BOOSTING_ROWS = 5_000  # fit rows from which LightGBM starts from larger trees
LARGE_BOOSTING_ROWS = 20_000
MAX_LEAVES = 2048

# Large tables' first LightGBM entries: the probe (127 leaves), then small trees at a fast rate (on a
# held-out 6-class table of 36k fit rows, 7 leaves at 0.1 beat 127 leaves by 2% of log loss, and
# the search then went on to the 4-leaf trees that won; at 0.1 they stop early in a few hundred
# rounds), then 255 leaves.
LARGE_TREE_ENTRIES = (
    {"learning_rate": 0.1, "num_leaves": 127, "min_child_samples": 20, "subsample": 0.8, "colsample_bytree": 0.8,
     "reg_lambda": 1.0},
    {"learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 20, "subsample": 0.8, "colsample_bytree": 0.8,
     "reg_lambda": 1.0},
    {"learning_rate": 0.05, "num_leaves": 255, "min_child_samples": 40, "subsample": 0.8, "colsample_bytree": 0.7,
     "reg_lambda": 1.0},
)


def leaves_high(rows: int, low_high: int = 256) -> int:
    """The largest num_leaves worth searching: rows / 16, between the small-table bound and MAX_LEAVES."""
    return int(min(max(low_high, 2 ** int(math.log2(max(rows // 16, 1)))), MAX_LEAVES))


def sized_boosting(spec, rows: int):
    """``spec`` (a boosting EstimatorSpec) for a table of ``rows`` fit rows: from MEDIUM rows its
    portfolio adds a 127-leaf entry after its first (the probe's yardstick stays first); from LARGE
    rows LARGE_TREE_ENTRIES come first and the learned small-tree entries (under 15 leaves) go,
    the first too, so that the probe is a large-tree fit: at 40,000 rows a 4-leaf model at a low
    learning rate is slow to stop early, and small trees get one entry at a fast rate instead
    (the search moves from it where they win). num_leaves may grow to
    ``leaves_high(rows)``. Small tables keep the spec as it is, and so does a boosting spec whose
    trees are not sized by leaves (no ``num_leaves`` in its space)."""
    if rows < MEDIUM_BOOSTING_ROWS or not any(h.name == "num_leaves" for h in spec.space):
        return spec
    if rows >= LARGE_BOOSTING_ROWS:
        entries = (*LARGE_TREE_ENTRIES, *(p for p in spec.portfolio if p.get("num_leaves", DEFAULT_LEAVES) >= 15))
    else:
        entries = (spec.portfolio[0], LARGE_TREE_ENTRIES[0], *spec.portfolio[1:])
    space = tuple(replace(h, high=max(h.high, leaves_high(rows))) if h.name == "num_leaves" else h for h in spec.space)
    return replace(spec, portfolio=entries, space=space)


# --- the order of the portfolio -------------------------------------------------------------------

def portfolio_entries(specs, turns) -> list:
    """[(spec, params)]: every portfolio entry of ``specs``, in the order the search tries them.

    First the learned portfolio's greedy order (``turns``: its estimators' names, one per pick,
    ``sqlml.automl.portfolio.order``): the k-th turn of an estimator takes its k-th entry, and
    turns of estimators not in the search pass. Then the entries no turn took (estimators the
    learned portfolio does not cover, entries ``sized_boosting`` added), interleaved in the order
    of ``specs`` (cheapest first): a short budget still sees each family at its best defaults."""
    taken = {s.name: 0 for s in specs}
    by_name = {s.name: s for s in specs}
    out = []
    for name in turns:
        spec = by_name.get(name)
        if spec is not None and taken[name] < len(spec.portfolio):
            out.append((spec, spec.portfolio[taken[name]]))
            taken[name] += 1
    rest = [(s, s.portfolio[taken[s.name]:]) for s in specs]
    for i in range(max((len(r) for _, r in rest), default=0)):
        out.extend((s, r[i]) for s, r in rest if i < len(r))
    return out


# --- the finish -----------------------------------------------------------------------------------

def finish_by_bagging(folds: int, refit_seconds: float, budget_seconds: float, forced: bool | None = None) -> bool:
    """Register the k fold models (averaged) instead of refitting the winner on every row?

    Only with k-fold validation (a holdout has one fold model, trained on 80% of the training
    part). Then when asked (``forced``), or when the refits (``refit_seconds``) would cost more
    than BAG_REFIT_SHARE of the budget: that time is better spent on trials, and k fold models,
    each trained on (k-1)/k of the rows, average out the variance one refit keeps."""
    if folds < 2:
        return False
    if forced is not None:
        return forced
    return refit_seconds > BAG_REFIT_SHARE * budget_seconds
