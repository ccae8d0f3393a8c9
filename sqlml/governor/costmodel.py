"""Predicted runtime and peak memory of a job, learned from the jobs that ran before it.

Until a kind of job (training; or scoring, predict_batch and score together) has
``MIN_HISTORY`` succeeded jobs, the prediction is the analytic estimate: bytes per row from the
column kinds times a copy factor (plus the trees of forests, which grow with the rows; plus the
model for scoring), and the time budget plus fixed costs; both err on the high side. Afterwards
the analytic estimate is corrected by what history says: a ridge regression of
log(actual / analytic) on log-scaled job features, fitted on the newest ``HISTORY`` jobs of that
kind (milliseconds). Learning a correction rather than the cost itself keeps the analytic scaling
(memory grows with rows x bytes per row) where history is thin, and the correction is clipped to
the range history has seen, so the model never extrapolates wildly. For memory admission the
prediction is raised to an upper bound (the 90th percentile of the model's own errors), never
below the size of the data itself; and a job unlike those seen so far (twice as large, another
mix of algorithms) gets the analytic estimate.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

MB = 1024 ** 2
MIN_HISTORY = 10
HISTORY = 500
REFIT_GROWTH = 0.05  # a fitted cost model serves until its history has grown by this share
RIDGE_ALPHA = 1.0
CLIP_MARGIN = math.log(2.0)  # a correction may go this far beyond the range history has seen
MIN_UPPER_FACTOR = 1.25  # the memory upper bound is at least 25% above the point prediction
# Kinds that learn from each other's history: both scorings read a relation and run a model over it.
POOLS = {"train": ("train",), "predict_batch": ("predict_batch", "score"), "score": ("predict_batch", "score")}
# A job any of whose features lies beyond the range of the history by more than this (in design
# units: a factor of 2 for the log-scaled sizes, any new count of algorithms or forests, a first
# cold job) is predicted analytically: the history says nothing about it.
SEEN_MARGIN = math.log(2.0)


@dataclass(frozen=True)
class Features:
    """What is known about a job before it reads its data."""

    rows: int
    numeric: int = 0  # numeric, boolean, date and timestamp columns
    category: int = 0  # text columns
    vector: int = 0  # vector dimensions, all vector columns together
    text_bytes: float = 0.0  # average bytes of text per row, all text columns together
    algorithms: int = 0  # candidate algorithms (training)
    forests: int = 0  # of which random forests or extra trees: their trees grow with the rows
    boosting: int = 0  # of which gradient boosting
    budget: float = 0.0  # time budget in seconds (training)
    model_bytes: int = 0  # size of the ONNX model (scoring)
    threads: int = 1
    cold: bool = False  # the backend has yet to load the ML libraries (its first job: a few seconds more)

    def with_rows(self, rows: int) -> Features:
        return replace(self, rows=int(rows))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Features:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


def training_features(columns: list, rows: int, width: int, algorithms, budget: float, threads: int,
                      cold: bool) -> Features:
    """A training's features before it reads its data.

    ``columns``: its ``sqlml.data.schema.Feature`` list; ``rows`` and ``width`` (bytes per row): the
    planner's estimate; ``algorithms``: the candidates (None: the AutoML portfolio), counted per
    estimator family, since forests grow with the rows and boosting does not. Text bytes are what a
    row's width leaves beyond its fixed-size columns.
    """
    from sqlml.automl.estimators import DEFAULT_ALGORITHMS, SPECS
    from sqlml.automl.spec import BOOSTING, TREES
    from sqlml.data.schema import CATEGORY, VECTOR

    candidates = list(algorithms or DEFAULT_ALGORITHMS)
    fixed = sum(4 * c.dim + 8 if c.kind == VECTOR else 8 for c in columns if c.kind != CATEGORY)
    n_cat = sum(1 for c in columns if c.kind == CATEGORY)
    return Features(
        rows=rows, numeric=sum(1 for c in columns if c.kind not in (CATEGORY, VECTOR)), category=n_cat,
        vector=sum(c.dim for c in columns if c.kind == VECTOR),
        text_bytes=float(max(width - fixed, 0)) if n_cat else 0.0,
        algorithms=len(candidates), forests=sum(SPECS[a].family == TREES for a in candidates),
        boosting=sum(SPECS[a].family == BOOSTING for a in candidates), budget=float(budget), threads=threads,
        cold=cold)


def scoring_features(rows: int, width: int, model_bytes: int, threads: int, cold: bool) -> Features:
    """A batch scoring's features: it reads every row (``width`` bytes each) and runs a model of
    ``model_bytes``."""
    return Features(rows=rows, text_bytes=float(width), model_bytes=model_bytes, threads=threads, cold=cold)


def bytes_per_row(f: Features) -> float:
    """Bytes one row takes while read: in PostgreSQL's aggregate and as Python/numpy values."""
    return 16.0 * f.numeric + 12.0 * f.vector + 72.0 * f.category + 2.0 * f.text_bytes


def data_floor(f: Features) -> int:
    """Bytes the data itself takes as numpy/Python values: no job can peak below this."""
    return int(f.rows * (8.0 * (f.numeric + f.vector) + 57.0 * f.category + f.text_bytes))


def analytic(kind: str, f: Features) -> tuple[float, int]:
    """(seconds, peak bytes), deliberately high: copies of the data during preprocessing,
    cross-validation folds and model fitting for training; input and output arrays for scoring."""
    cells = f.rows * max(f.numeric + f.category + f.vector, 1)
    data = f.rows * bytes_per_row(f)
    if kind == "train":  # forests of 200 unpruned trees: ~2 nodes per row per tree, more while converted
        return (f.budget + 3.0 + 4.0 * f.cold + cells * 2e-6 + f.forests * f.rows * 1e-4,
                int(160 * MB + 12 * data + 400 * f.rows + f.forests * f.rows * 64 * 1024))
    return (1.0 + 1.0 * f.cold + cells * 4e-6 + f.rows * 2e-5 + f.model_bytes * 2e-8,
            int(64 * MB + 6 * data + 64 * f.rows + 4 * f.model_bytes))


def design(f: Features) -> np.ndarray:
    data = f.rows * bytes_per_row(f)
    return np.array([math.log1p(f.rows), math.log1p(f.numeric + f.category + f.vector), math.log1p(f.text_bytes),
                     math.log1p(data), math.log1p(f.budget), float(f.algorithms), float(f.forests),
                     float(f.boosting), float(f.algorithms - f.forests - f.boosting > 0 and not f.forests + f.boosting),
                     math.log1p(f.model_bytes), float(f.cold), math.log(max(f.threads, 1))])


@dataclass(frozen=True)
class Prediction:
    seconds: float
    peak: int  # bytes, point prediction
    peak_upper: int  # bytes, what admission plans with
    by: str  # "analytic" | "learned"
    analytic_seconds: float
    analytic_peak: int


class _Correction:
    """log(actual / analytic) as a ridge regression on centred features (intercept unpenalised),
    clipped at prediction to the range seen in training widened by ``CLIP_MARGIN``."""

    def __init__(self, X: np.ndarray, y: np.ndarray, alpha: float = RIDGE_ALPHA):
        self.mean = X.mean(axis=0)
        Z = X - self.mean
        self.intercept = float(y.mean())
        self.coef = np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ (y - self.intercept))
        self.residuals = y - self._raw(X)
        self.low, self.high = float(y.min()) - CLIP_MARGIN, float(y.max()) + CLIP_MARGIN

    def _raw(self, X: np.ndarray) -> np.ndarray:
        return self.intercept + (X - self.mean) @ self.coef

    def predict(self, x: np.ndarray) -> float:
        return float(np.clip(self._raw(x[None, :])[0], self.low, self.high))


class CostModel:
    """Fitted on one kind's history: rows of the job store (features JSON, actual costs)."""

    def __init__(self, kind: str, history: list[dict]):
        self.kind = kind
        usable = [h for h in history if h.get("features") and h.get("actual_seconds") and h.get("actual_peak")
                  is not None]
        self.n = len(usable)
        self.seconds = self.peak = None
        if self.n < MIN_HISTORY:
            return
        feats = [Features.from_json(h["features"]) for h in usable]
        X = np.array([design(f) for f in feats])
        base = [analytic(kind, f) for f in feats]
        self.seconds = _Correction(X, np.log([max(h["actual_seconds"], 0.01) / b[0] for h, b in zip(usable, base)]))
        self.peak = _Correction(X, np.log([max(h["actual_peak"], MB) / b[1] for h, b in zip(usable, base)]))
        self.peak_margin = max(float(np.quantile(np.abs(self.peak.residuals), 0.9)), math.log(MIN_UPPER_FACTOR))
        self.seen_low, self.seen_high = X.min(axis=0) - SEEN_MARGIN, X.max(axis=0) + SEEN_MARGIN

    @property
    def learned(self) -> bool:
        return self.seconds is not None

    def predict(self, f: Features) -> Prediction:
        a_seconds, a_peak = analytic(self.kind, f)
        x = design(f)
        if not self.learned or np.any(x < self.seen_low) or np.any(x > self.seen_high):  # unlike any job seen
            return Prediction(a_seconds, a_peak, a_peak, "analytic", a_seconds, a_peak)
        log_peak = math.log(max(a_peak * math.exp(self.peak.predict(x)), data_floor(f), 1))
        return Prediction(a_seconds * math.exp(self.seconds.predict(x)), int(math.exp(log_peak)),
                          int(math.exp(log_peak + self.peak_margin)), "learned", a_seconds, a_peak)


class Refitted:
    """Cost models per job kind, each fitted on its history (``JobStore.history``) and fitted again
    once that has grown by ``growth`` of it: every job adds to it, and fitting 500 jobs took ~12 ms
    of each scoring call."""

    def __init__(self, growth: float = REFIT_GROWTH):
        self.growth = growth
        self._fitted: dict = {}  # kind -> (the store's directory, the newest job fitted on, the model)

    def model(self, store, kind: str) -> CostModel:
        pools = POOLS[kind]
        fitted = self._fitted.get(kind)
        if fitted is not None and fitted[0] == store.dir and \
                store.succeeded_since(pools, fitted[1]) < max(1, int(fitted[2].n * self.growth)):
            return fitted[2]
        history = store.history(pools, HISTORY)
        model = CostModel(kind, history)
        self._fitted[kind] = store.dir, max((h["id"] for h in history), default=0), model
        return model


def ape(predicted, actual) -> float | None:
    """Absolute percentage error, in percent (None when there is nothing to compare)."""
    if predicted is None or actual is None or actual <= 0:
        return None
    return abs(predicted - actual) / actual * 100.0


def report(jobs: list[dict]) -> list[dict]:
    """Prediction error of finished jobs, per kind, quantity and the model that made the prediction.

    ``mdape`` is the median absolute percentage error of the predictions used; ``analytic_mdape``
    the analytic estimate's on the same jobs (what learning gained). Memory errors count jobs
    whose actual peak was at least 1 MB (smaller peaks are measurement noise).
    """
    out = []
    groups: dict[tuple, list[dict]] = {}
    for j in jobs:
        groups.setdefault((j["kind"], j.get("predicted_by") or "analytic"), []).append(j)
    for (kind, by), rows in sorted(groups.items()):
        for quantity, pred, base, actual in (("seconds", "predicted_seconds", "analytic_seconds", "actual_seconds"),
                                             ("peak memory", "predicted_peak", "analytic_peak", "actual_peak")):
            pairs = [(ape(r[pred], r[actual]), ape(r[base], r[actual])) for r in rows
                     if quantity == "seconds" or (r[actual] or 0) >= MB]
            pairs = [p for p in pairs if p[0] is not None]
            if not pairs:
                continue
            used = np.array([p[0] for p in pairs])
            baseline = [p[1] for p in pairs if p[1] is not None]
            out.append({"kind": kind, "quantity": quantity, "predicted_by": by, "jobs": len(pairs),
                        "mdape": float(np.median(used)), "p90_ape": float(np.quantile(used, 0.9)),
                        "analytic_mdape": float(np.median(baseline)) if baseline else None})
    return out
