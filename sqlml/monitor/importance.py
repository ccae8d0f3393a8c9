"""Global feature importance: mean |contribution| on the holdout, bounded in rows and in time.

The contributions are the model's own explanation (``sqlml.explain.model``): exact, on the raw
output, one per feature. Unlike permutation importance they cannot come out negative, and on
strong ensembles they still rank what the model uses. Holdout rows are explained in chunks, in a
seeded random order, until ``MAX_ROWS`` or the deadline; the result says how many rows it used.
"""

from __future__ import annotations

import time

import numpy as np

MAX_ROWS = 2000
CHUNK = 64  # rows per step: a large forest explains a few rows a second
FIRST = 16  # rows explained even when the budget is spent: a short training still gets an importance
METHOD = "mean |contribution| on the holdout"


def mean_abs_contribution(
    explainer,
    inputs: dict,
    deadline: float,
    max_rows: int = MAX_ROWS,
    seed: int = 0,
    checkpoint=None,
    clock=time.monotonic,
) -> dict:
    """``explainer``: a ``sqlml.explain.model.Explainer``; ``inputs``: holdout model inputs (name ->
    array (n,)); ``deadline``: a ``clock()`` value to stop at (checked before each chunk after
    the first ``FIRST`` rows, which are always explained);
    ``checkpoint()``: called between chunks (the server's interrupt check).

    Returns ``{"method", "rows", "complete", "note", "features": [{"feature",
    "importance"}]}``, features sorted by importance (in units of the raw output, summed over
    the classes of a multiclass model)."""
    n = len(next(iter(inputs.values()))) if inputs else 0
    order = np.random.default_rng(seed).permutation(n)[:max_rows]
    total = np.zeros(len(explainer.features))
    done = 0
    for start in [0, *range(FIRST, len(order), CHUNK)]:
        if start and clock() >= deadline:
            break
        if checkpoint is not None:
            checkpoint()
        rows = np.sort(order[start : start + (FIRST if start == 0 else CHUNK)])
        e = explainer.explain({k: v[rows] for k, v in inputs.items()}, len(rows))
        total += np.abs(e.contributions).sum(axis=(0, 2))
        done += len(rows)
    features = sorted(
        ({"feature": f, "importance": float(v / max(done, 1))} for f, v in zip(explainer.features, total)),
        key=lambda d: -d["importance"],
    )
    complete = done == len(order)
    return {
        "method": METHOD,
        "rows": done,
        "complete": complete,
        "features": features,
        "note": f"{len(features)} features on {done} holdout rows"
        + ("" if complete else f" of {len(order)} (the training budget ran out)"),
    }
