"""Permutation feature importance on the holdout, bounded in rows and in time.

For each feature (all of its model inputs together: a date's calendar parts, a vector's
dimensions), shuffle its rows, score again, and record how much the metric got worse. The model
is called through ``predict(inputs) -> output``, so the number describes the registered ONNX
pipeline exactly. Features are visited in schema order until the deadline passes; the result
says whether it is complete.
"""

from __future__ import annotations

import time

import numpy as np

from sqlml.automl import metrics

MAX_ROWS = 2000
REPEATS = 3


def permutation(predict, inputs: dict, groups: dict, y: np.ndarray, metric: str, deadline: float,
                max_rows: int = MAX_ROWS, repeats: int = REPEATS, seed: int = 0, checkpoint=None) -> dict:
    """``inputs``: model input name -> array of shape (n,); ``groups``: feature -> its input names;
    ``y``: encoded holdout labels or targets; ``deadline``: ``time.monotonic()`` value to stop at;
    ``checkpoint()``: called before every shuffle (the server's interrupt check).

    Returns ``{"metric", "score", "rows", "repeats", "complete", "note", "features": [{"feature",
    "importance", "std", "repeats"}]}`` with features sorted by importance (loss increase when
    shuffled, in the metric's units; higher means the model relies on it more). ``complete``:
    every feature was shuffled at least once.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    rows = np.sort(rng.choice(n, size=max_rows, replace=False)) if n > max_rows else np.arange(n)
    sample = {k: v[rows] for k, v in inputs.items()}
    ys = y[rows]
    out = {"metric": metric, "rows": int(len(rows)), "repeats": repeats, "features": [], "complete": False}
    if time.monotonic() >= deadline:
        out["note"] = "skipped: no time left in the training budget"
        return out
    base = metrics.score(metric, ys, predict(sample))
    if not np.isfinite(base):
        out["note"] = f"skipped: {metric} is undefined on the holdout sample"
        return out
    out["score"] = base
    losses: dict[str, list[float]] = {feature: [] for feature in groups}
    # breadth first: every feature once before any twice, so a short budget still covers them all
    for _ in range(repeats):
        for feature, names in groups.items():
            if time.monotonic() >= deadline:
                break
            if checkpoint is not None:
                checkpoint()
            order = rng.permutation(len(rows))
            shuffled = {k: (v[order] if k in names else v) for k, v in sample.items()}
            score = metrics.score(metric, ys, predict(shuffled))
            losses[feature].append(metrics.loss(metric, score) - metrics.loss(metric, base))
    measured = {f: v for f, v in losses.items() if v}
    out["features"] = sorted(({"feature": f, "importance": float(np.mean(v)), "std": float(np.std(v)),
                               "repeats": len(v)} for f, v in measured.items()), key=lambda f: -f["importance"])
    fewest = min((len(v) for v in losses.values()), default=0)
    out["complete"] = fewest >= 1
    if fewest == repeats:
        out["note"] = f"{len(groups)} features, {repeats} shuffles each, on {len(rows)} holdout rows"
    elif fewest >= 1:
        out["note"] = (f"{len(groups)} features, {fewest} to {max(len(v) for v in losses.values())} shuffles each "
                       f"(the training budget ran out), on {len(rows)} holdout rows")
    else:
        out["note"] = f"partial: the training budget ran out after {len(measured)} of {len(groups)} features"
    return out
