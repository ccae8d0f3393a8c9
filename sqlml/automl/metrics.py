"""Metrics, and which way is better (which metrics judge a task: ``sqlml.data.task``).

Predictions come as ``proba`` of shape (n, n_classes) for classification (columns in class
order, labels encoded 0..k-1) and ``values`` of shape (n,) for regression.
"""

from __future__ import annotations

import numpy as np

from sqlml.data.task import Task, task_of

HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "roc_auc": True, "log_loss": False,
                    "rmse": False, "mae": False, "r2": True}


def score(metric: str, y: np.ndarray, pred: np.ndarray, n_classes: int = 0) -> float:
    """``metric`` of predictions ``pred`` (proba or values) against encoded labels / targets ``y``."""
    from sklearn import metrics as m

    if metric in ("rmse", "mae", "r2"):
        pred = np.asarray(pred, dtype=np.float64).ravel()
        if metric == "rmse":
            return float(np.sqrt(np.mean((y - pred) ** 2)))
        if metric == "mae":
            return float(np.mean(np.abs(y - pred)))
        return float(m.r2_score(y, pred))
    proba = np.clip(np.asarray(pred, dtype=np.float64), 1e-15, 1.0)
    proba = proba / proba.sum(axis=1, keepdims=True)
    labels = np.arange(proba.shape[1])
    if metric == "log_loss":
        return float(m.log_loss(y, proba, labels=labels))
    if metric == "accuracy":
        return float(np.mean(proba.argmax(axis=1) == y))
    if metric == "f1":
        return float(m.f1_score(y, proba.argmax(axis=1), average="binary" if proba.shape[1] == 2 else "macro",
                                labels=labels if proba.shape[1] > 2 else None, zero_division=0))
    if metric == "roc_auc":
        if len(np.unique(y)) < 2:
            return float("nan")
        if proba.shape[1] == 2:
            return float(m.roc_auc_score(y, proba[:, 1]))
        present = np.unique(y)
        if len(present) < proba.shape[1]:  # ovr needs every class present: score the present ones
            sub = proba[:, present] / proba[:, present].sum(axis=1, keepdims=True)
            return float(m.roc_auc_score(np.searchsorted(present, y), sub, multi_class="ovr", average="macro"))
        return float(m.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    raise ValueError(metric)


def all_metrics(task: Task | str, y: np.ndarray, pred: np.ndarray) -> dict:
    """Every metric of ``task`` (``Task.metrics``)."""
    return {name: score(name, y, pred) for name in task_of(task).metrics}


def better(metric: str, a: float, b: float) -> bool:
    """True when score ``a`` is strictly better than ``b`` (NaN is never better)."""
    if a is None or np.isnan(a):
        return False
    if b is None or np.isnan(b):
        return True
    return a > b if HIGHER_IS_BETTER[metric] else a < b


def loss(metric: str, value: float) -> float:
    """A number to minimise."""
    return -value if HIGHER_IS_BETTER[metric] else value


def error(metric: str, value: float) -> float:
    """What ``metric`` says is left to gain, 0 at a perfect score: the metric itself where lower is
    better; else 1 minus it (AUC, accuracy, F1, R²: each at most 1). Errors compare as ratios."""
    return 1.0 - value if HIGHER_IS_BETTER[metric] else value
