"""The budgeted search: portfolio first, then local moves around what is promising.

1. Validation is chosen from the data: k-fold cross-validation when the training part is small
   (a single holdout is a noisy basis for choosing), one stratified holdout otherwise.
2. The portfolios (known-good configurations) are tried first: the portfolio learned offline
   (``sqlml.automl.portfolio``, shipped as data) in its greedy order, then the hand-written
   entries of the estimators it does not cover, interleaved (``policy.portfolio_entries``), so
   that a short budget still sees each family at its best defaults; an entry predicted to take a
   large share of the time left waits, or is skipped when its family is unlikely to win at this
   size (``sqlml.automl.policy``).
3. Then random local moves in each promising estimator's space (in unit coordinates, shrinking).
   Boosting picks its number of rounds by early stopping on the validation fold; forests grow in
   chunks of trees. Both stop at the deadline, and both reach ``budget.checkpoint()`` often.
4. Greedy ensemble selection over the validation predictions (``sqlml.automl.ensemble``).
5. The trials' fold models are kept: the winner's (averaged) is the model the holdout scores; then
   either they are registered as they are (bagging), or the winner is refitted on every row if the
   budget allows (``front``).

A budget nearly spent before the search starts (a cold backend's imports, a large read) gets a
sprint instead: one holdout, one trial of the cheapest estimator's first configuration, its model
kept as the result (no refit, no ensemble), so that the call still ends near its budget.

The search knows estimators only through their specs (``sqlml.automl.spec``), and the task only
through its :class:`~sqlml.data.task.Task`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sqlml.automl import ensemble, metrics, policy, portfolio, preprocess, scoring_cost
from sqlml.automl.budget import Budget
from sqlml.automl.spec import BOOSTING, EARLY_STOPPING_ROUNDS, NATIVE_CATEGORIES, TREES, EstimatorSpec, FitContext
from sqlml.data.task import HOLDOUT_SHARE, TIME_ORDERED, Task, task_of
from sqlml.errors import DATA_EXCEPTION, INVALID_PARAMETER, SqlmlError
from sqlml.onnx import parity

TRIALS_WANTED = 30  # trials the validation scheme must leave room for (see n_folds)
TRIAL_COST_FACTOR = 2.0  # an average trial's fit time over the probe's (forests cost more)
ENSEMBLE_REFITS = 3  # refits the search leaves time for
BOOSTING_PARALLEL_CELLS = 500_000  # rows x inputs from which boosting gets more than one thread
EXPORT_SECONDS_PER_NODE = 15e-6  # ONNX conversion + session + parity check, per tree node
# the winner scores the holdout by itself, and up to parity.MAX_ROWS of its rows by ONNX Runtime (the
# parity check), each priced as its trial's own scoring of the validation rows, per row (on 245k-row
# flights, its 49k holdout rows took 5 s a pass, which a 30 s budget did not reserve)
# on one holdout (large tables), a trial may take this many times its predicted seconds (and never
# more than the time left): on a 6-class table of 36k rows, a learned entry predicted at 2.9 s ran
# 341 rounds for 11.7 s, the whole rest of a 30 s search. With k folds a cut trial is lost, and small
# fits' predictions are noisy: there a trial may take the time left; so may the other families, whose
# cut fits are not scored.
CUT_FACTOR = 3.0
MIN_CUT_SECONDS = 1.0  # a fit's deadline is never sooner: small fits' predictions are noisy
ENSEMBLE_MEMBER_SHARE = 0.15  # of the budget, at most, to refit and export one ensemble member


@dataclass(frozen=True)
class LastFit:
    """An estimator's last single fit: its seconds, its configuration, and the boosting rounds early
    stopping kept (None: rounds fixed, or not boosting)."""

    seconds: float
    params: dict
    rounds: int | None


@dataclass
class Trial:
    n: int
    algorithm: str
    params: dict
    status: str = "ok"  # ok | failed | timeout
    score: float | None = None
    loss: float | None = None
    fit_seconds: float = 0.0
    n_estimators: int | None = None
    error: str | None = None
    origin: str = "search"  # warm_start | portfolio | search
    elapsed: float = 0.0  # seconds since the search started, when the trial ended
    predictions: np.ndarray | None = field(default=None, repr=False)  # on the validation rows
    model: object = field(default=None, repr=False)  # the fitted model, kept only by a sprint (one fold)
    fold_models: list | None = field(default=None, repr=False)  # one per fold (see Search.folds_kept)
    nodes_per_tree: float | None = None  # of its first fold model's ONNX graph, where the spec counts them
    seconds_per_scored_row: float = 0.0  # its first fold model's scoring of the validation rows, per row
    cut: bool = False  # a boosted fit stopped at its deadline: its rounds are all it fitted

    def to_json(self) -> dict:
        return {"n": self.n, "algorithm": self.algorithm, "params": self.params, "status": self.status,
                "score": self.score, "fit_seconds": round(self.fit_seconds, 4), "n_estimators": self.n_estimators,
                "error": self.error, "origin": self.origin, "elapsed": round(self.elapsed, 4)}


@dataclass
class Problem:
    """The training part as the search sees it."""

    X: object  # pandas DataFrame of model inputs
    y: np.ndarray  # encoded labels 0..k-1 (classification) or float targets
    task: Task
    metric: str
    plan: preprocess.Plan
    n_classes: int = 0
    threads: int = 1
    seed: int = 42

    def __post_init__(self):
        self.task = task_of(self.task)


@dataclass
class Result:
    model: object  # fitted Pipeline or voting ensemble
    algorithm: str
    params: dict
    trials: list
    validation_score: float
    validation: str  # "5-fold cv" or "holdout"
    members: list = field(default_factory=list)  # [(Trial, fitted pipeline, weight)] when an ensemble won
    trial: Trial | None = None  # the winning trial, when a single model won
    bagged: int = 0  # folds whose models are averaged and registered (no refit on every row), or 0
    fitted_on: str = "training part"  # what ``model`` was trained on


def n_folds(rows: int, probe_seconds: float, budget_seconds: float) -> int:
    """5 or 3 folds of cross-validation, or 1 (a single holdout): as many folds as leave room for
    TRIALS_WANTED trials, judged by ``probe_seconds``, one fit of a default model on 80% of the rows.

    Cross-validation chooses better than one holdout, which on small or noisy data rewards luck
    (caravan: a 20% holdout with 52 positives); rows x columns alone (FLAML's rule) misjudges the
    cost, which depends on the data (caravan's 371k cells fit in 0.1 s)."""
    if rows < 20:
        return 1
    for k in (5, 3):
        if budget_seconds / (k * max(probe_seconds, 1e-3) * TRIAL_COST_FACTOR) >= TRIALS_WANTED:
            return k
    return 1


def time_shares(trial_seconds: list[float], odds: list[float] | None = None) -> np.ndarray:
    """Odds of trying each estimator next, given the mean seconds of its trials, best-ranked first.

    The ranks share the search's *time*, 0.6 ** rank each, not its trials: an estimator whose trials
    cost ten times more is tried ten times less often (FLAML's cost-frugality, simply). Sharing
    trials instead let five-fold forests at 1.1 s a trial take 80% of OJ's search from 50 ms linear
    models and boosting, which were both ahead of them. ``odds`` (``policy.win_odds``) weigh each
    estimator's share by how likely its family is to win at this size."""
    odds = odds or [1.0] * len(trial_seconds)
    weights = np.array([0.6 ** i * o / max(s, 1e-3) for i, (s, o) in enumerate(zip(trial_seconds, odds))])
    return weights / weights.sum()


def predict(model, X, task: Task | str, n_classes: int) -> np.ndarray:
    """Probabilities (n, n_classes) in class-index order, or values (n,)."""
    if not task_of(task).classification:
        return np.asarray(model.predict(X), dtype=np.float64).ravel()
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    classes = np.asarray(model.classes_).astype(int)
    if len(classes) == n_classes:
        return proba
    full = np.zeros((len(proba), n_classes))
    full[:, classes] = proba  # a fold that lacked a class predicts 0 for it
    return full


def fit_pipeline(spec: EstimatorSpec, params: dict, problem: Problem, X, y, budget: Budget,
                 valid=None, n_estimators: int | None = None):
    """Fit preprocessing + estimator; return (Pipeline, number of boosting rounds or trees, or None).

    ``valid``: validation rows (X, y) for a spec that stops early; ``n_estimators``: fixed rounds instead."""
    from sklearn.pipeline import Pipeline

    pre = preprocess.build(problem.plan, spec.encoding)
    est = spec.build(spec.params_for(params, problem.task), problem.task, threads_for(spec, X, problem.threads),
                     problem.seed)
    Xt = pre.fit_transform(X, y)
    context = FitContext(budget, problem.plan.categorical_indices() if spec.encoding == NATIVE_CATEGORIES else [],
                         n_estimators=n_estimators)
    if spec.early_stopping and valid is not None and not n_estimators:
        context.valid = (pre.transform(valid[0]), valid[1])
    used = spec.fit(est, Xt, y, context)
    return Pipeline([("pre", pre), ("model", est)]), used


def threads_for(spec: EstimatorSpec, X, granted: int) -> int:
    """Boosting synchronises its threads every round: below BOOSTING_PARALLEL_CELLS one thread is
    faster (digits, 1,000 x 64: 0.35 s on one thread, 0.9 s on two)."""
    if spec.family == BOOSTING and X.shape[0] * max(X.shape[1], 1) < BOOSTING_PARALLEL_CELLS:
        return 1
    return granted


class Search:
    """Run with :meth:`run`; ``on_trial(trial, best)`` is called after every trial (progress).

    ``n_estimators`` fixes the boosting rounds and forest sizes (no early stopping) instead of
    searching them: a model of a known size, for benchmarks and reproducible comparisons.
    """

    def __init__(self, problem: Problem, specs: list[EstimatorSpec], budget: Budget, on_trial=None,
                 reserve_seconds: float = 1.0, use_ensemble: bool = True, n_estimators: int | None = None,
                 warm_start: list | None = None, final_rows: int | None = None, run_fit=None,
                 max_scoring_us: float | None = None, bagging: bool | None = None, folds: int | None = None):
        """``final_rows``: the rows the winner is refitted on at the end (the training part and the
        holdout), when the budget allows; the search keeps time for it. ``run_fit(fit)`` runs each
        model fit, ``fit()`` (the server runs it on a thread that yields the CPU to interactive work).
        ``max_scoring_us``: the most a row may cost to score (``scoring_cost``): candidates above it
        are neither kept nor searched around. ``bagging``: keep the k-fold models (averaged) instead
        of refitting the winner: always (True), never (False), or when ``policy.finish_by_bagging``
        says so (None). ``folds``: the validation scheme (k-fold, 1: one holdout) instead of ``n_folds``'s
        choice (a sprint still has one holdout)."""
        self.run_fit = run_fit or (lambda fit: fit())
        self.max_scoring_us = max_scoring_us
        self.final_rows = final_rows or len(problem.y)
        self.use_ensemble = use_ensemble
        self.warm_start = warm_start or []  # [{"algorithm", "params"}] tried before the portfolios
        self.n_estimators = n_estimators
        self.problem = problem
        fit_rows = int(len(problem.y) * (1 - HOLDOUT_SHARE))  # larger tables start from larger trees
        self.specs = sorted((policy.sized_boosting(s, fit_rows) if s.family == BOOSTING else s for s in specs),
                            key=lambda s: s.cost)
        self.yardstick: policy.Probe | None = None  # the probe's boosting fit, measured (see probe)
        # (spec, model, rounds, seconds) of the probe's fit, when it ran to its end or was boosting cut
        # at its deadline: kept as the first trial on a holdout (on 245k rows, refitting it with the
        # whole budget instead grew a model whose scoring, export and explanation took 40 s more)
        self.probed = None
        self.budget = budget
        self.on_trial = on_trial or (lambda trial, best: None)
        self.reserve_seconds = reserve_seconds  # conversion, parity check, registry write
        self.trials: list[Trial] = []
        # nothing left for the search once the finish is reserved; decided before the probe, a
        # boosting fit a sprint cannot afford
        self.sprint = budget.remaining() - reserve_seconds <= 0
        if self.sprint:
            folds = 1
        else:
            probe_seconds = self.probe()
            folds = min(folds, len(problem.y)) if folds else n_folds(len(problem.y), probe_seconds, budget.remaining())
        self.folds, self.validation = problem.task.folds(problem.y, folds, problem.seed)
        self.valid_rows = np.sort(np.concatenate([v for _, v in self.folds]))
        self.rng = np.random.default_rng(problem.seed)
        self.last_fit: dict[str, LastFit] = {}  # algorithm -> its last single fit
        # The trials' fold models are kept (those ensemble selection may pick): the winner's, averaged
        # (or the one holdout model), is the model scored on the holdout, with no refit on the training
        # part; only with folds that all hold every class (a fold model lacking one cannot be averaged)
        # and that all fit on most rows (time-ordered folds fit on ever more).
        counts = np.bincount(problem.y.astype(int)) if problem.task.classification else None
        self.folds_kept = not self.sprint and (counts is None or counts[counts > 0].min() >= len(self.folds)) \
            and (problem.task.split != TIME_ORDERED or len(self.folds) == 1)
        self.bagging = self._bagging(bagging)
        if self.probed is not None and len(self.folds) == 1 and not n_estimators \
                and self.may_meet_scoring_budget(self.probed[0], self.probed[0].portfolio[0]):
            self._keep_probe(*self.probed)
        self.probed = None

    # --- time ------------------------------------------------------------------------------------

    def probe(self) -> float:
        """Seconds one fit of the first portfolio entry (the cheapest boosting estimator's, if one is in
        the search) takes on 80% of the rows: the yardstick for choosing the validation scheme, and
        the estimator's first trial when that scheme is this very holdout (``_keep_probe``)."""
        spec = next((s for s in self.specs if s.family == BOOSTING), self.specs[0])
        p = self.problem
        (fit, valid), = p.task.folds(p.y, 1, p.seed)[0]
        start = self.budget.clock()
        child = self.budget.child(self.budget.remaining() / 4)
        model, rounds = self.run_fit(lambda: fit_pipeline(spec, spec.portfolio[0], p, p.X.iloc[fit], p.y[fit], child,
                                                          valid=(p.X.iloc[valid], p.y[valid])))
        seconds = self.budget.clock() - start
        if spec.family == BOOSTING:
            self.yardstick = policy.Probe(seconds, rounds or 100, dict(spec.portfolio[0]), p.plan.width(spec.encoding))
        if spec.family == BOOSTING or not child.expired():  # a boosted fit cut at its deadline is a model too
            self.probed = (spec, model, rounds, seconds)
        return seconds

    def _keep_probe(self, spec: EstimatorSpec, model, rounds, seconds: float) -> None:
        """With one holdout, the probe fitted exactly its estimator's first portfolio trial (same
        rows, same configuration): record it as that trial rather than fit it again (on a large
        table, a tenth of a short budget)."""
        p = self.problem
        (_, valid), = self.folds
        trial = Trial(n=1, algorithm=spec.name, params=dict(spec.portfolio[0]), origin="portfolio",
                      fit_seconds=seconds, elapsed=self.budget.elapsed(), n_estimators=int(rounds) if rounds else None)
        trial.predictions = self._predict_measured(trial, spec, model, p.X.iloc[valid])
        trial.score = metrics.score(p.metric, p.y[valid], trial.predictions)
        trial.loss = metrics.loss(p.metric, trial.score)
        trial.fold_models = [model] if self.folds_kept else None
        self.last_fit[spec.name] = LastFit(seconds, dict(spec.portfolio[0]), self._stopped_rounds(spec, rounds))
        self.trials.append(trial)
        self.on_trial(trial, self.best())

    def _bagging(self, asked: bool | None) -> bool:
        """Register the averaged fold models instead of refitting on every row? With k kept folds,
        as ``policy`` decides from the probe's estimate of refitting the winner and its ensemble
        partners on every row."""
        if not self.folds_kept:
            return False
        one_refit = self.yardstick.seconds / (1 - HOLDOUT_SHARE) * 1.2 if self.yardstick else 0.0
        return policy.finish_by_bagging(len(self.folds), ENSEMBLE_REFITS * one_refit, self.budget.seconds, asked)

    def size(self, spec: EstimatorSpec) -> policy.Size:
        """What one fold's fit of ``spec`` sees (``policy``'s cost model)."""
        p = self.problem
        return policy.Size(len(self.folds[0][0]), p.plan.width(spec.encoding), p.n_classes,
                           threads_for(spec, p.X, p.threads))

    def predicted_seconds(self, spec: EstimatorSpec, params: dict, basis: Trial | None = None) -> float:
        """Seconds one trial of ``params`` is expected to take (every fold): scaled from a measured
        fit of this estimator (``basis``, a finished trial of it, e.g. the incumbent a local move
        starts from; else its last fit), by the work of the two configurations and the rounds the
        measured fit kept (``policy.measured_fit_seconds``); ``policy.fit_seconds`` before any fit."""
        size = self.size(spec)
        if basis is not None and basis.status == "ok" and basis.fit_seconds > 0:
            one = policy.measured_fit_seconds(spec.family, params, size, basis.fit_seconds / len(self.folds),
                                              basis.params, self._stopped_rounds(spec, basis.n_estimators))
        elif spec.name in self.last_fit:
            last = self.last_fit[spec.name]
            one = policy.measured_fit_seconds(spec.family, params, size, last.seconds, last.params, last.rounds)
        else:
            one = policy.fit_seconds(spec.family, params, size, self.yardstick, unit=spec.cost)
        return one * len(self.folds)

    def _stopped_rounds(self, spec: EstimatorSpec, used) -> int | None:
        """The rounds a fit of ``spec`` kept by early stopping, or None (rounds fixed, or not boosting)."""
        return int(used) if spec.family == BOOSTING and spec.early_stopping and used and not self.n_estimators \
            else None

    def admission(self, spec: EstimatorSpec, params: dict) -> str:
        """``policy.admit`` for a portfolio entry; the first trial always runs (a training must
        produce a model)."""
        if not any(t.status == "ok" for t in self.trials):
            return policy.RUN
        return policy.admit(self.predicted_seconds(spec, params), self.time_left_for_search(),
                            policy.win_odds(spec.family, len(self.folds[0][0])))

    def refit_estimate(self, trial: Trial, rows: int | None = None) -> float:
        """Seconds to refit ``trial`` on ``rows`` rows (default: the whole training part): from its
        own fits (per fold), not from its estimator's last fit, which may be a far slower
        configuration (a refit priced by one took every second left from a search whose winner
        fitted in 3 s). A boosted refit fits the rounds early stopping kept, scaled to its rows; its
        trial also fitted the patience rounds past the best one, and scored the validation rows at
        every round. A round over more rows is priced as a trial's round: on 48k rows of diamonds,
        825 refit rounds took 1.3 s where the trial's 601 took 1.9 s on 32k; on a 6-class table of
        45k rows, 44 rounds took 2.6 s where the trial's 85 took 3.1 s on 29k."""
        fold = trial.fit_seconds / len(self.folds) if trial.fit_seconds > 0 \
            else self.last_fit[trial.algorithm].seconds if trial.algorithm in self.last_fit else 0.0
        grow = (rows or len(self.problem.y)) / len(self.folds[0][0])
        spec = self._spec(trial)
        stopped = spec.family == BOOSTING and spec.early_stopping and trial.n_estimators and not self.n_estimators
        if not stopped:
            return fold * grow * 1.2
        fitted = trial.n_estimators if trial.cut else \
            min(trial.n_estimators + EARLY_STOPPING_ROUNDS, int(trial.params.get("n_estimators", 1000)))
        return fold * trial.n_estimators / fitted * grow

    def _predict_measured(self, trial: Trial, spec: EstimatorSpec, model, X) -> np.ndarray:
        """``model``'s predictions on the validation rows ``X``, recording on ``trial`` what prices its
        finish (``export_estimate``): its scoring seconds per row, and its ONNX nodes per tree where the
        spec counts them."""
        p = self.problem
        start = self.budget.clock()
        out = predict(model, X, p.task, p.n_classes)
        trial.seconds_per_scored_row = (self.budget.clock() - start) / max(len(X), 1)
        if spec.onnx_nodes_per_tree:
            trial.nodes_per_tree = spec.onnx_nodes_per_tree(model.named_steps["model"])
        return out

    def export_estimate(self, trial: Trial) -> float:
        """Seconds to convert the refitted model of ``trial`` to ONNX and check its parity, from
        its expected number of tree nodes (measured: 10-25 us per node; a 10-class boosted model of
        600 rounds has 170,000 nodes): per tree, as counted in its fitted model where its spec
        counts them (``onnx_nodes_per_tree``), else from its leaves."""
        spec = self._spec(trial)
        rows = len(self.problem.y)
        leaves = spec.leaves(trial.params, rows, self.problem.task)
        grow = rows / len(self.folds[0][0]) if spec.family == BOOSTING else 1.0  # the refit's rounds
        if spec.family == BOOSTING:
            trees = (trial.n_estimators or 100) * grow * self._trees_per_round()
            nodes = trees * (trial.nodes_per_tree or 2 * leaves - 1)
        elif spec.family == TREES:  # a refit on more rows than a fold grows larger trees, to the bound
            trees = trial.n_estimators or trial.params.get("n_estimators", 100)
            per_tree = min(trial.nodes_per_tree * rows / len(self.folds[0][0]), 2 * leaves - 1) \
                if trial.nodes_per_tree else 2 * leaves - 1
            nodes = trees * per_tree
        else:
            nodes = 0
        holdout = self.holdout_rows()
        scoring = (holdout + min(holdout, parity.MAX_ROWS)) * trial.seconds_per_scored_row * grow
        return nodes * EXPORT_SECONDS_PER_NODE + scoring

    def holdout_rows(self) -> float:
        """The rows that score the winner: those beyond the training part (a quarter of them if none)."""
        rows = len(self.problem.y)
        return self.final_rows - rows if self.final_rows > rows else rows / 3

    def scoring_us(self, trial: Trial) -> float:
        """Estimated microseconds to score one row with ``trial``'s model (``scoring_cost``)."""
        return self._scoring_us(self._spec(trial), trial.params, trial.n_estimators)

    def least_scoring_us(self, spec: EstimatorSpec, params: dict) -> float:
        """The least ``scoring_us`` a fit of ``params`` can have, known before fitting: a forest's
        size and fixed boosting rounds are set, while early stopping may keep a single round."""
        stopped = spec.family == BOOSTING and spec.early_stopping and not self.n_estimators
        return self._scoring_us(spec, params, 1 if stopped else None)

    def may_meet_scoring_budget(self, spec: EstimatorSpec, params: dict) -> bool:
        """Can a fit of ``params`` score a row within ``max_scoring_us``? A configuration that cannot
        is never fitted: its time goes to those that can."""
        return self.max_scoring_us is None or self.least_scoring_us(spec, params) <= self.max_scoring_us

    def _scoring_us(self, spec: EstimatorSpec, params: dict, rounds: int | None) -> float:
        """``scoring_us`` of ``spec`` with ``params``, of ``rounds`` boosting rounds if known."""
        if spec.family not in (BOOSTING, TREES):
            return scoring_cost.CALL_US
        trees = self.n_estimators or rounds or params.get("n_estimators", 100)
        if spec.family == BOOSTING:
            trees *= self._trees_per_round()
        return scoring_cost.tree_us(trees, spec.leaves(params, len(self.problem.y), self.problem.task))

    def _trees_per_round(self) -> int:
        """Boosting grows one tree per class and round for more than two classes."""
        return self.problem.n_classes if self.problem.n_classes > 2 else 1

    def _spec(self, trial: Trial) -> EstimatorSpec:
        return next(s for s in self.specs if s.name == trial.algorithm)

    def within_scoring_budget(self, trial: Trial) -> bool:
        return self.max_scoring_us is None or self.scoring_us(trial) <= self.max_scoring_us

    def final_refit_cost(self, trial: Trial) -> float:
        """Seconds to refit ``trial`` on every row (``final_rows``) and export it."""
        grow = self.final_rows / len(self.problem.y)
        return self.refit_estimate(trial, self.final_rows) + self.export_estimate(trial) * grow

    def finish_cost(self, trial: Trial) -> float:
        """Seconds to make ``trial`` the registered model. Bagged, its kept fold models are the model:
        exported. Else its model for the holdout (the kept fold models, which only score the holdout,
        or a refit on the training part), then the refit on every row, the one model exported
        (``front.Trained.candidate``). Priced as exports, the fold models of a 5-fold extra-trees
        winner on randhie took 26 s of a 120 s budget that its finish never spent."""
        if self.bagging:
            return self.export_estimate(trial) * len(self.folds)
        honest = self.holdout_rows() * trial.seconds_per_scored_row * len(self.folds) if self.folds_kept \
            else self.refit_estimate(trial)
        return honest + self.final_refit_cost(trial)

    def least_finish_cost(self, trial: Trial) -> float:
        """Seconds to register ``trial`` without the refit on every row (which waits for time left):
        its model for the holdout, exported."""
        if self.folds_kept:
            return self.export_estimate(trial) * len(self.folds)
        return self.refit_estimate(trial) + self.export_estimate(trial)

    def finishable(self) -> list[Trial]:
        """The scored trials that can still be registered in the time left (``least_finish_cost``),
        or all of them when none can: a training must produce a model. A trial that became the best
        after the time for its finish was gone (its finish costlier than the one reserved) must not
        take the training past its budget: on 20k rows, a forest that won the last trial took it to
        40 s of 30."""
        scored = self._scored()
        left = self.budget.remaining() - self.reserve_seconds / 2
        return [t for t in scored if self.least_finish_cost(t) <= left] or scored

    def affords_final_refit(self, result: Result) -> bool:
        """Is there time to refit ``result`` on every row (see ``refit_on``)?

        The search kept time for this refit, but its last trial may have run a few moments past the
        line; half the reserve may absorb that (what follows, importance, is bounded by a deadline)."""
        if self.sprint or result.bagged:
            return False
        trials = [t for t, _, _ in result.members] or [result.trial]
        cost = sum(self.final_refit_cost(t) for t in trials)
        return cost <= self.budget.remaining() - self.reserve_seconds / 2

    def refit_on(self, result: Result, X, y):
        """``result``'s configuration (the single model, or every ensemble member with its weight)
        fitted again on ``X``, ``y``: more rows than the search saw, boosting rounds scaled to them."""
        if result.members:
            return ensemble.voting([(self._refit(t, X, y), w) for t, _, w in result.members], self.problem.task)
        return self._refit(result.trial, X, y)

    def ensemble_candidate(self, trial: Trial) -> bool:
        """A trial may join an ensemble only if finishing it costs a modest share of the budget."""
        return self.finish_cost(trial) <= ENSEMBLE_MEMBER_SHARE * self.budget.seconds

    def time_left_for_search(self) -> float:
        """Budget left once the end is paid for: finishing the best trial, and the next two
        estimators' best ones that could join it in an ensemble (it rarely needs more)."""
        best = self.best()
        if best is None:
            return self.budget.remaining() - self.reserve_seconds
        others = [t for _, t in self._ranked_specs() if t is not best and self.ensemble_candidate(t)]
        finish = self.finish_cost(best) + sum(self.finish_cost(t) for t in others[:ENSEMBLE_REFITS - 1])
        return self.budget.remaining() - finish - self.reserve_seconds

    def trial_seconds(self, spec: EstimatorSpec) -> float:
        """Mean seconds of ``spec``'s trials so far (every fold)."""
        spent = [t.fit_seconds for t in self.trials if t.algorithm == spec.name]
        return float(np.mean(spent)) if spent else 0.0

    def affordable(self, spec: EstimatorSpec, params: dict | None = None, basis: Trial | None = None) -> bool:
        """Is a trial of ``params`` (default: the estimator's last fit) predicted to end within the
        time left for the search (``predicted_seconds`` from ``basis``)?"""
        if not any(t.status == "ok" for t in self.trials):
            return True  # the first trial always runs: a training must produce a model
        if params is None:
            last = self.last_fit.get(spec.name)
            params = last.params if last else spec.portfolio[0] if spec.portfolio else {}
        return self.predicted_seconds(spec, params, basis) < self.time_left_for_search()

    # --- trials ----------------------------------------------------------------------------------

    def best(self) -> Trial | None:
        ok = self._scored()
        return min(ok, key=lambda t: t.loss) if ok else None

    def _scored(self) -> list[Trial]:
        """Trials that finished with a loss, within the scoring budget."""
        return [t for t in self.trials if t.status == "ok" and t.loss is not None and not math.isnan(t.loss)
                and self.within_scoring_budget(t)]

    def evaluate(self, spec: EstimatorSpec, params: dict, origin: str = "search") -> Trial:
        p = self.problem
        trial = Trial(n=len(self.trials) + 1, algorithm=spec.name, params=dict(params), origin=origin)
        first = not any(t.status == "ok" for t in self.trials)
        shape = (len(p.y), p.n_classes) if p.task.classification else (len(p.y),)
        oof = np.full(shape, np.nan)
        rounds, models = [], []
        start = self.budget.clock()
        allowance = None if first else self.time_left_for_search()
        if allowance is not None and len(self.folds) == 1 and spec.family == BOOSTING:  # scored if cut (below)
            allowance = min(allowance, max(CUT_FACTOR * self.predicted_seconds(spec, params), MIN_CUT_SECONDS))
        cut = False
        try:
            for k, (fit_idx, valid_idx) in enumerate(self.folds):
                self.budget.checkpoint()
                fold_budget = self.budget if first else \
                    self.budget.child(allowance - (self.budget.clock() - start))
                t0 = self.budget.clock()
                Xf, yf = p.X.iloc[fit_idx], p.y[fit_idx]
                Xv, yv = p.X.iloc[valid_idx], p.y[valid_idx]
                model, used = self.run_fit(lambda: fit_pipeline(
                    spec, self._sized(spec, params), p, Xf, yf, fold_budget, valid=(Xv, yv),  # noqa: B023 - run at once
                    n_estimators=self.n_estimators if spec.family == BOOSTING else None))
                self.last_fit[spec.name] = LastFit(self.budget.clock() - t0, dict(params),
                                                   self._stopped_rounds(spec, used))
                oof[valid_idx] = self._predict_measured(trial, spec, model, Xv) if k == 0 \
                    else predict(model, Xv, p.task, p.n_classes)
                rounds.append(used)
                if self.folds_kept:
                    models.append(model)
                if self.sprint:
                    trial.model = model  # one fold: the sprint registers this model rather than refit it
                if fold_budget.expired() and not first:
                    # a boosted model cut at its deadline is a model of fewer rounds: with every
                    # fold's predictions in, it is scored as it stands; else the trial is lost
                    cut = k == len(self.folds) - 1 and spec.family == BOOSTING
                    if not cut:
                        trial.status = "timeout"
                    break
        except Exception as e:  # noqa: BLE001 - a failing configuration is a trial result, not a crash
            if _is_interrupt(e):
                raise
            trial.status, trial.error = "failed", f"{type(e).__name__}: {e}"
        trial.fit_seconds = self.budget.clock() - start
        trial.elapsed = self.budget.elapsed()
        if trial.status == "ok":
            yv = p.y[self.valid_rows]
            trial.score = metrics.score(p.metric, yv, oof[self.valid_rows])
            trial.loss = metrics.loss(p.metric, trial.score)
            trial.predictions = oof[self.valid_rows]
            if rounds and rounds[0] is not None:
                trial.n_estimators = int(np.mean(rounds))
            trial.fold_models = models or None
            trial.cut = cut
            if cut:
                trial.error = f"cut at its deadline ({allowance:.1f}s) after {trial.n_estimators} rounds"
        self.trials.append(trial)
        self._release_fold_models()
        self.on_trial(trial, self.best())
        return trial

    def _release_fold_models(self) -> None:
        """Keep fold models only where ensemble selection may look (``ensemble.library``): the memory
        of a search stays that of a few dozen models, whatever its number of trials."""
        if not self.folds_kept:
            return
        scored, best = sorted(self._scored(), key=lambda t: t.loss), self.best()
        keep = {id(t) for t in ensemble.library(scored)}  # and what may win as cheaper to score:
        keep |= {id(t) for t in scored if scoring_cost.equal_within_noise(t.loss, best.loss)}
        for t in self.trials:
            if id(t) not in keep:
                t.fold_models = None

    def _sized(self, spec: EstimatorSpec, params: dict) -> dict:
        """``params`` with the fixed forest size, if one was asked for."""
        if self.n_estimators and spec.family == TREES:
            return {**params, "n_estimators": self.n_estimators}
        return dict(params)

    def neighbour(self, spec: EstimatorSpec, params: dict, step: float) -> dict:
        out = dict(params)
        for h in spec.space:
            if h.name not in params and not h.always:
                continue
            current = params.get(h.name, h.from_unit(0.5))
            out[h.name] = h.from_unit(h.to_unit(current) + self.rng.normal(0, step))
        return out

    def run(self) -> list[Trial]:
        if self.sprint:  # the cheapest estimator's first configuration, and nothing more
            spec = self.specs[0]
            self.evaluate(spec, spec.portfolio[0], "portfolio")
            return self.trials
        by_name = {s.name: s for s in self.specs}

        def key_of(name, params):
            return name, tuple(sorted(params.items(), key=lambda kv: kv[0]))

        tried = {key_of(t.algorithm, t.params) for t in self.trials}  # the probe's, kept as a trial

        def once(spec, params, origin):
            key = key_of(spec.name, params)
            # the first trial runs whatever the clock says: a training must produce a model
            if key not in tried and self.may_meet_scoring_budget(spec, params) \
                    and (self.time_left_for_search() > 0 or not self.trials) and self.affordable(spec, params):
                tried.add(key)
                self.evaluate(spec, params, origin)

        # 0. what won on the most similar past trainings (boosting rounds come from early stopping)
        for config in self.warm_start:
            spec = by_name.get(config.get("algorithm"))
            if spec is not None:
                params = {k: v for k, v in config["params"].items()
                          if not (k == "n_estimators" and spec.family == BOOSTING)}
                once(spec, params, "warm_start")
        # 1. portfolios, the learned order first; an entry predicted to take a large share of the time
        # left waits behind the cheaper ones, or is skipped (policy.admit)
        deferred = []
        for spec, params in self.portfolio_entries():
            decision = self.admission(spec, params)
            if decision == policy.RUN:
                once(spec, params, "portfolio")
            elif decision == policy.DEFER:
                deferred.append((spec, params))
        for spec, params in deferred:
            if self.admission(spec, params) != policy.SKIP:
                once(spec, params, "portfolio")
        # 2. local moves around each estimator's best, the best estimators most often
        step = 0.25
        while self.time_left_for_search() > 0:
            ranked = self._ranked_specs()
            best_error = metrics.error(self.problem.metric, ranked[0][1].score) if ranked else 0.0
            ranked = [(s, t) for s, t in ranked
                      if s.space and not policy.far_behind(metrics.error(self.problem.metric, t.score), best_error)]
            if not ranked:
                break
            odds = time_shares([self.trial_seconds(s) for s, _ in ranked],
                               [policy.win_odds(s.family, len(self.folds[0][0])) for s, _ in ranked])
            spec, incumbent = ranked[self.rng.choice(len(ranked), p=odds)]
            # a move is priced from the incumbent it starts from, not from the estimator's last
            # (perhaps far slower) fit; when it does not fit in the time left, the best-ranked
            # estimator whose move does, else the search ends
            params = self.neighbour(spec, incumbent.params, step)
            if not self._move_fits(spec, params, incumbent):
                moves = ((s, self.neighbour(s, t.params, step), t) for s, t in ranked)
                spec, params, _ = next(((s, m, t) for s, m, t in moves if self._move_fits(s, m, t)),
                                       (None, None, None))
                if spec is None:
                    break
            self.evaluate(spec, params)
            step = max(step * 0.97, 0.05)
        return self.trials

    def _move_fits(self, spec: EstimatorSpec, params: dict, incumbent: Trial) -> bool:
        """May a local move to ``params`` from ``incumbent`` run: within the scoring budget and the time left?"""
        return self.may_meet_scoring_budget(spec, params) and self.affordable(spec, params, incumbent)

    def portfolio_entries(self) -> list[tuple[EstimatorSpec, dict]]:
        """The portfolio entries in the order they are tried: the learned portfolio's greedy order,
        then the entries it does not cover (``policy.portfolio_entries``)."""
        return policy.portfolio_entries(self.specs, [entry["algorithm"] for entry in portfolio.order()])

    def _ranked_specs(self):
        best = {}
        for t in self._scored():
            if t.algorithm not in best or t.loss < best[t.algorithm].loss:
                    best[t.algorithm] = t
        by_name = {s.name: s for s in self.specs}
        return [(by_name[n], t) for n, t in sorted(best.items(), key=lambda kv: kv[1].loss)]

    # --- the final model -----------------------------------------------------------------------

    def finish(self) -> Result:
        """Pick the single best or an ensemble, and refit it on the whole training part if time allows."""
        # of candidates that can finish in time, the best; of those equal within noise, the cheapest to
        # score (scoring_cost)
        finishable = self.finishable()
        best = scoring_cost.cheapest_within_noise(finishable, min(finishable, key=lambda t: t.loss, default=None),
                                                  self.scoring_us)
        finished = [t for t in self.trials if t.status == "ok" and t.loss is not None and not math.isnan(t.loss)]
        if best is None and (finished or self.max_scoring_us is not None and not self.trials):
            # every configuration over the budget: fitted and measured, or skipped unfitted
            cheapest = min([self.scoring_us(t) for t in finished]
                           + [self.least_scoring_us(s, entry) for s in self.specs for entry in s.portfolio[:1]],
                           default=scoring_cost.CALL_US)
            raise SqlmlError(f"no candidate scores a row within max_scoring_us {self.max_scoring_us:g} "
                             f"(the cheapest: ~{cheapest:.1f} us)", sqlstate=INVALID_PARAMETER,
                             hint="raise max_scoring_us, or allow algorithms with smaller models (linear)")
        if best is None:
            errors = "; ".join(sorted({t.error for t in self.trials if t.error})) or "no trial finished"
            raise SqlmlError(f"every trial failed: {errors}", sqlstate=DATA_EXCEPTION,
                             hint="try other algorithms, a larger time_budget, or check the features for problems")
        p = self.problem
        if self.sprint:
            return self._single(best, best.model)
        yv = p.y[self.valid_rows]
        pool = [t for t in self._scored() if (t is best or self.ensemble_candidate(t))
                and (t.fold_models or not self.folds_kept)]
        # members are chosen within the time left: export, and unless bagged a refit on every row
        chosen = ensemble.select(pool, yv, p.metric, p.task, cost=self.finish_cost,
                                 allowance=self.budget.remaining() - self.reserve_seconds) \
            if self.use_ensemble else None
        if chosen and self.max_scoring_us is not None \
                and sum(self.scoring_us(t) for t, _ in chosen) > self.max_scoring_us:
            chosen = None  # an ensemble scores every member: over the budget, the single best
        if chosen and len(chosen) > 1:
            members = [(t, w) for t, w in chosen]
            fitted = [(t, self._final(t), w) for t, w in members]
            # one flat vote: every fold model of a bagged member carries the member's weight
            model = ensemble.voting([(m, w) for t, _, w in fitted for m in t.fold_models] if self.folds_kept
                                    else [(m, w) for _, m, w in fitted], p.task)
            score = metrics.score(p.metric, yv, ensemble.blend([t.predictions for t, _ in members],
                                                               [w for _, w in members]))
            params = {"members": [{"trial": t.n, "algorithm": t.algorithm, "weight": w, "params": t.params}
                                  for t, w in members], **({"bagged_folds": len(self.folds)} if self.bagging else {})}
            return Result(model, "ensemble", params, self.trials, score, self.validation, members=fitted,
                          bagged=len(self.folds) if self.bagging else 0, fitted_on=self.fitted_on())
        return self._single(best, self._final(best))

    def _single(self, trial: Trial, model) -> Result:
        """``trial`` as the result, with ``model`` its fitted pipeline."""
        params = {**trial.params, **({"n_estimators": trial.n_estimators} if trial.n_estimators else {})}
        bagged = len(self.folds) if self.bagging else 0
        if bagged:
            params["bagged_folds"] = bagged
        return Result(model, trial.algorithm, params, self.trials, trial.score, self.validation, trial=trial,
                      bagged=bagged, fitted_on=self.fitted_on())

    def fitted_on(self) -> str:
        """What the model scored on the holdout was trained on (``_final``)."""
        if self.sprint or (self.folds_kept and len(self.folds) == 1):
            return "fit part of the validation split"
        return f"{len(self.folds)} fold models of the training part" if self.folds_kept else "training part"

    def _final(self, trial: Trial):
        """``trial``'s model for the holdout: its kept fold models (averaged), or a refit on the
        training part."""
        if not self.folds_kept:
            return self._refit(trial)
        models = trial.fold_models
        return models[0] if len(models) == 1 else ensemble.voting([(m, 1.0) for m in models], self.problem.task)

    def _refit(self, trial: Trial, X=None, y=None):
        """``trial``'s configuration fitted on ``X``, ``y`` (default: the whole training part)."""
        p = self.problem
        spec = self._spec(trial)
        X, y = (p.X, p.y) if X is None else (X, y)
        rounds = None
        if spec.family == BOOSTING and self.n_estimators:
            rounds = self.n_estimators
        elif spec.family == BOOSTING and trial.n_estimators:
            # more data, a few more rounds than early stopping found on a fold
            rounds = max(int(trial.n_estimators * len(y) / len(self.folds[0][0])), 1)
        if spec.interruptible_refit:
            # bounded by what is left, as its trials were (affords_final_refit's half reserve): it stops
            # with the model so far
            refit_budget = self.budget.child(max(self.budget.remaining() - self.reserve_seconds / 2, 0.0))
        else:  # a refit runs to the end; time for it was reserved
            refit_budget = Budget(math.inf, self.budget.interrupt, clock=self.budget.clock)
        params = self._sized(spec, trial.params)
        if spec.family == TREES and trial.n_estimators and not self.n_estimators:
            params["n_estimators"] = trial.n_estimators
        model, _ = self.run_fit(lambda: fit_pipeline(spec, params, p, X, y, refit_budget, n_estimators=rounds))
        return model


def _is_interrupt(e: BaseException) -> bool:
    """Cancels, timeouts (SPI errors from the interrupt check) and memory caps end the job, not a trial."""
    return isinstance(e, MemoryError) \
        or type(e).__name__ in ("QueryCanceled", "SPIError", "AdminShutdown", "Interrupted") \
        or getattr(e, "sqlstate", None) in ("57014", "57P01", "57P02", "57P03")


