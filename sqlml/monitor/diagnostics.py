"""What the model card plots, summarised from the holdout predictions at training time.

Stored with the model (column ``diagnostics``) so that a card can be drawn later without the
training data: a ROC curve (binary), a confusion matrix (classification), a sample of
(actual, predicted) pairs and residual quantiles (regression). Small by construction: at most
``CURVE_POINTS`` curve points, ``SAMPLE`` pairs, ``MAX_CLASSES`` classes.
"""

from __future__ import annotations

import math

import numpy as np

from sqlml.data.schema import BINARY
from sqlml.data.task import task_of

CURVE_POINTS = 200
SAMPLE = 500
MAX_CLASSES = 30
SOURCE = "holdout predictions of the registered ONNX model, computed at training"


def summarise(task: str, y: np.ndarray, out: np.ndarray, classes: tuple, seed: int = 0) -> dict:
    """``y``: encoded labels (0..k-1) or targets, shape (n,); ``out``: probabilities (n, k) or values (n,)."""
    result = {"source": SOURCE, "rows": int(len(y)), "task": task}
    if not task_of(task).classification:
        pred = np.asarray(out, dtype=np.float64).ravel()
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(y), size=SAMPLE, replace=False)) if len(y) > SAMPLE else np.arange(len(y))
        residual = y - pred
        result.update(actual=y[pick].tolist(), predicted=pred[pick].tolist(),
                      residual_quantiles={str(q): float(np.quantile(residual, q))
                                          for q in (0.05, 0.25, 0.5, 0.75, 0.95)})
        return jsonable(result)
    proba = np.asarray(out, dtype=np.float64)
    k = proba.shape[1]
    if k <= MAX_CLASSES:
        matrix = np.zeros((k, k), dtype=np.int64)
        np.add.at(matrix, (y, proba.argmax(axis=1)), 1)
        result["confusion"] = {"classes": [str(c) for c in classes], "matrix": matrix.tolist()}
    if task == BINARY and len(np.unique(y)) == 2:
        from sklearn.metrics import roc_auc_score, roc_curve

        fpr, tpr, _ = roc_curve(y, proba[:, 1])
        if len(fpr) > CURVE_POINTS:
            keep = np.unique(np.linspace(0, len(fpr) - 1, CURVE_POINTS).round().astype(int))
            fpr, tpr = fpr[keep], tpr[keep]
        result["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(roc_auc_score(y, proba[:, 1])),
                         "positive": str(classes[1])}
    return jsonable(result)


def jsonable(value):
    """``value`` with NaN and infinities as None (jsonb has no NaN) and numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
