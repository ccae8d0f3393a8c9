"""Dataset meta-features, for warm-starting a search from the warehouse's own history.

Each training stores its meta-features as a pgvector ``vector(DIM)`` with the configurations
that did best; a new training looks up the nearest past trainings of the same task and tries
their winners first (auto-sklearn's idea, without its offline corpus: the corpus is what this
database has trained before). Every feature is squashed to about [0, 1] by a fixed transform,
so that the L2 distance between vectors is meaningful without normalising over a population.
"""

from __future__ import annotations

import math

import numpy as np

from sqlml.data.schema import BINARY, MULTICLASS, REGRESSION
from sqlml.data.task import Task, task_of

DIM = 14
NEIGHBOURS = 5
MAX_DISTANCE = 0.6  # farther trainings are not similar enough to borrow from
CONFIGS_PER_TRAINING = 4


def _squash(x: float, scale: float) -> float:
    """x >= 0 -> [0, 1): x / (x + scale)."""
    return float(x / (x + scale)) if x > 0 else 0.0


def _log_ratio(x: float, lo: float, hi: float) -> float:
    """log10(x) mapped linearly from [lo, hi] (log10 units) to [0, 1], clipped."""
    return float(min(max((math.log10(max(x, 1.0)) - lo) / (hi - lo), 0.0), 1.0))


def meta_features(X, y: np.ndarray, task: Task | str, text: list[str]) -> list[float]:
    """DIM numbers describing a training problem.

    ``X``: DataFrame of model inputs (numbers as float32 with NaN, and text); ``y``: encoded
    labels (classification) or targets (regression); ``text``: the text inputs' names.
    """
    rows, inputs = X.shape
    numeric = [c for c in X.columns if c not in set(text)]
    n_text = len(text)
    num = X[numeric].to_numpy(dtype=np.float64) if numeric else np.empty((rows, 0))
    missing = float(np.isnan(num).mean()) if num.size else 0.0
    skews = []
    for j in range(num.shape[1]):
        col = num[:, j][~np.isnan(num[:, j])]
        if len(col) > 2 and col.std() > 0:
            skews.append(abs(float(np.mean(((col - col.mean()) / col.std()) ** 3))))
    cardinality = np.mean([X[c].nunique() for c in text]) if text else 0.0
    task = task_of(task)
    if not task.classification:
        yy = np.asarray(y, dtype=np.float64)
        target_skew = abs(float(np.mean(((yy - yy.mean()) / yy.std()) ** 3))) if yy.std() > 0 else 0.0
        classes, entropy, minority = 0, 0.0, 0.0
    else:
        counts = np.bincount(np.asarray(y, dtype=int))
        p = counts[counts > 0] / counts.sum()
        classes = len(p)
        entropy = float(-(p * np.log(p)).sum() / math.log(classes)) if classes > 1 else 0.0
        minority = float(p.min())
        target_skew = 0.0
    return [
        _log_ratio(rows, 1.0, 7.0),
        _log_ratio(inputs, 0.0, 4.0),
        len(numeric) / max(inputs, 1),
        n_text / max(inputs, 1),
        missing,
        _squash(float(np.mean(skews)) if skews else 0.0, 2.0),
        _log_ratio(cardinality, 0.0, 4.0),
        _log_ratio(classes, 0.0, 3.0),
        entropy,
        minority * 2.0,  # 0.5 (balanced binary) -> 1
        _squash(target_skew, 2.0),
        *(1.0 if task.name == name else 0.0 for name in (BINARY, MULTICLASS, REGRESSION)),  # one-hot of the task
    ]


def best_configurations(trials: list, limit: int = CONFIGS_PER_TRAINING) -> list[dict]:
    """The best distinct (algorithm, params) of a training, best first: what a similar one tries first."""
    ok = sorted((t for t in trials if t.status == "ok" and t.loss is not None and math.isfinite(t.loss)),
                key=lambda t: t.loss)
    out, seen = [], set()
    for t in ok:
        key = (t.algorithm, tuple(sorted(t.params.items())))
        if key not in seen:
            seen.add(key)
            out.append({"algorithm": t.algorithm, "params": t.params})
        if len(out) == limit:
            break
    return out


def to_vector_literal(values: list[float]) -> str:
    """pgvector's text form: '[0.1,0.2,...]'."""
    return "[" + ",".join(f"{v:.6g}" for v in values) + "]"
