"""Evaluation on newly labelled rows: labels encoded as the model was trained, then the task's metrics."""

from __future__ import annotations

import numpy as np

from sqlml.automl import metrics
from sqlml.data.schema import Target
from sqlml.data.task import task_of
from sqlml.monitor.diagnostics import jsonable


def encode(target: Target, y_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(y of the kept rows, keep mask over all rows, rows whose label the model never saw).

    Regression: floats, NULL dropped. Classification: indices into ``target.classes``; NULL and
    unseen labels dropped (the model cannot be right or wrong about a class it does not know).
    """
    if not task_of(target.task).classification:
        y = np.asarray(y_raw, dtype=np.float64)
        keep = np.isfinite(y)
        return y[keep], keep, 0
    if target.numeric_labels:
        known = {float(c): i for i, c in enumerate(target.classes)}
        raw = np.asarray(y_raw, dtype=np.float64)
        idx = np.array([-2 if np.isnan(v) else known.get(float(v), -1) for v in raw], dtype=np.int64)
    else:
        known = {str(c): i for i, c in enumerate(target.classes)}
        idx = np.array([-2 if v is None else known.get(str(v), -1) for v in y_raw], dtype=np.int64)
    keep = idx >= 0
    return idx[keep], keep, int((idx == -1).sum())


def evaluate(task: str, y: np.ndarray, out: np.ndarray) -> dict:
    """Every metric of ``task`` for predictions ``out`` (probabilities or values) against ``y``."""
    return jsonable(metrics.all_metrics(task, y, out))
