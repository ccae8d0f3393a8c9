"""ONNX parity: the converted graph must predict what the fitted pipeline predicts.

A model is registered only if, on the holdout rows (``MAX_ROWS`` of them at most, see ``rows``),
predicted labels differ on at most
``MAX_LABEL_MISMATCH`` of rows and every probability or value is within ``MAX_RELATIVE_ERROR``
relative to max(|expected|, scale). The scale is 1 for probabilities; for regression it is the
larger of 1 and the standard deviation of the expected values, because boosting libraries that sum
their trees in float32 (XGBoost, CatBoost's ONNX export) err by a share of the magnitudes summed, not
of the row's own value: on a target spread over -200..750 rows near zero differ by ~5e-4 absolute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from sqlml.data.task import Task, task_of

MAX_LABEL_MISMATCH = 0.001
MAX_RELATIVE_ERROR = 1e-4
# The check runs on at most this many holdout rows (a seeded sample of a larger holdout): ONNX Runtime
# walks a categorical split's chain test by test, and on lme4's InstEval (ids of thousands of levels)
# the whole holdout, 11,000 rows, took 6 s of a 30 s training. An export error on one row in 500 is
# still caught with probability 98% (1 - (1 - 1/500)^2000).
MAX_ROWS = 2000


def rows(n: int, limit: int = MAX_ROWS, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the rows checked among ``n``: every row, or ``limit`` drawn with ``seed``."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


@dataclass(frozen=True)
class Parity:
    ok: bool
    rows: int
    label_mismatch: float  # share of rows whose label differs (classification), 0 for regression
    max_relative_error: float
    reason: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def compare(task: Task | str, expected: np.ndarray, actual: np.ndarray) -> Parity:
    """``expected`` from the fitted pipeline, ``actual`` from ONNX Runtime (proba or values)."""
    expected, actual = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    rows = len(expected)
    if expected.shape != actual.shape:
        return Parity(False, rows, 1.0, float("inf"),
                      f"ONNX output shape {actual.shape} != pipeline's {expected.shape}")
    if rows == 0:
        return Parity(True, 0, 0.0, 0.0)
    classification = task_of(task).classification
    scale = 1.0 if classification or not np.isfinite(expected).any() else max(1.0, float(np.nanstd(expected)))
    rel = np.abs(actual - expected) / np.maximum(np.abs(expected), scale)
    max_rel = float(np.nanmax(rel)) if np.isfinite(rel).any() else float("inf")
    if np.isnan(actual).any() != np.isnan(expected).any():
        max_rel = float("inf")
    mismatch = float(np.mean(actual.argmax(axis=1) != expected.argmax(axis=1))) if classification else 0.0
    reasons = []
    if mismatch > MAX_LABEL_MISMATCH:
        reasons.append(f"labels differ on {mismatch:.2%} of {rows} holdout rows (limit {MAX_LABEL_MISMATCH:.1%})")
    if max_rel > MAX_RELATIVE_ERROR:
        what = "probabilities" if classification else "values"
        reasons.append(f"{what} differ by up to {max_rel:.2e} relative (limit {MAX_RELATIVE_ERROR:.0e})")
    return Parity(not reasons, rows, mismatch, max_rel, "; ".join(reasons) or None)
