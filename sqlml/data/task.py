"""What a model learns, as data: each task says how its rows are split for validation, which metrics
judge it (the first is the default), which ONNX outputs its models have, and what its target must be.

Code asks the task (``task.classification``, ``task.folds(...)``, ``task.check_metric(...)``) instead
of comparing its name. The name is what is stored (the feature schema's JSON, the registry) and what
the user passes as ``task => '...'``; ``task_of`` turns either into the :class:`Task`.

  task         split                           metrics (default first)          outputs
  binary       stratified K-fold / holdout     roc_auc log_loss accuracy f1     label, probabilities
  multiclass   stratified K-fold / holdout     log_loss accuracy f1 roc_auc     label, probabilities
  regression   shuffled K-fold / holdout       rmse mae r2                      variable
  forecast     time-ordered (rolling origin)   mase                             variable
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sqlml.data.schema import BINARY, DATE, FLOAT32_MAX, MULTICLASS, NUMERIC, PG_KINDS, REGRESSION, TIMESTAMP, VECTOR
from sqlml.errors import DATA_EXCEPTION, DATATYPE_MISMATCH, INVALID_PARAMETER, NUMERIC_VALUE_OUT_OF_RANGE, SqlmlError

FORECAST = "forecast"
STRATIFIED, SHUFFLED, TIME_ORDERED = "stratified", "shuffled", "time-ordered"  # split strategies
HOLDOUT_SHARE = 0.2  # of the rows, validation of a one-fold split
MAX_CLASSES = 200


@dataclass(frozen=True)
class Task:
    name: str
    metrics: tuple  # metric names this task is judged by; the first is the default
    outputs: tuple  # ONNX output names of its models
    split: str  # STRATIFIED, SHUFFLED or TIME_ORDERED
    classification: bool = False  # predicts class probabilities (else values)
    description: str = ""  # in messages: "binary classification"

    def __str__(self) -> str:
        return self.name

    @property
    def default_metric(self) -> str:
        return self.metrics[0]

    def check_metric(self, metric: str | None) -> str:
        """``metric`` normalised, or the default when None; an error naming the task's metrics otherwise."""
        if metric is None:
            return self.default_metric
        metric = metric.strip().lower()
        if metric not in self.metrics:
            raise SqlmlError(f'unknown metric "{metric}" for {self.description}', sqlstate=INVALID_PARAMETER,
                             hint=f"use one of: {', '.join(self.metrics)}")
        return metric

    # --- the target ---------------------------------------------------------------------------

    def check_target_type(self, name: str, pg_type: str) -> None:
        """Can a column of PostgreSQL type ``pg_type`` be this task's target?"""
        check_target_kind(name, pg_type)
        if not self.classification and PG_KINDS.get(pg_type) != NUMERIC:
            raise SqlmlError(f'target column "{name}" has type {pg_type}: {self.name} needs a numeric target',
                             hint="use task => 'binary' or 'multiclass' for labels, or cast the target to a number",
                             sqlstate=DATATYPE_MISMATCH)

    def encode_target(self, target_name: str, y_raw, numeric: bool):
        """(y, classes, keep mask): labels as 0..k-1 with their sorted classes, or float targets.

        ``numeric``: the labels are numbers (an integer target column); otherwise they are read as text."""
        if not self.classification:
            y = np.asarray(y_raw, dtype=np.float64)
            keep = ~np.isnan(y)
            if np.isinf(y[keep]).any():
                raise SqlmlError(f'target "{target_name}" contains Infinity', sqlstate=DATA_EXCEPTION,
                                 hint="filter those rows out of the relation")
            if (np.abs(y[keep]) > FLOAT32_MAX).any():  # the model's float32 output could not hold such values
                raise SqlmlError(f'target "{target_name}" holds values beyond ±3.4e38, the float32 range sqlml\'s '
                                 "models compute in", sqlstate=NUMERIC_VALUE_OUT_OF_RANGE,
                                 hint="scale the target in a view (divide it, or take its logarithm)")
            return y, (), keep
        if numeric:
            y = np.asarray(y_raw, dtype=np.float64)
            keep = ~np.isnan(y)
            classes = np.unique(y[keep])
            labels = tuple(int(c) if float(c).is_integer() else float(c) for c in classes)
        else:
            keep = np.array([v is not None for v in y_raw], dtype=bool)
            classes = np.unique(np.asarray([v for v in y_raw if v is not None], dtype=object).astype(str))
            labels = tuple(str(c) for c in classes)
        if len(classes) < 2:
            raise SqlmlError(f'target "{target_name}" has a single class ({labels[0] if labels else "none"}): '
                             "there is nothing to classify", sqlstate=DATA_EXCEPTION,
                             hint="check the relation's filter, or train a different target")
        if len(classes) > MAX_CLASSES:
            raise SqlmlError(f'target "{target_name}" has {len(classes)} classes; the limit is {MAX_CLASSES}',
                             hint="use task => 'regression' for a numeric target, or group rare classes",
                             sqlstate=DATA_EXCEPTION)
        y = np.full(len(y_raw), -1, dtype=np.int64)
        if numeric:
            y[keep] = np.searchsorted(classes, np.asarray(y_raw, dtype=np.float64)[keep])
        else:
            text = np.asarray([v for v in y_raw if v is not None], dtype=object).astype(str)
            y[keep] = np.searchsorted(classes, text)
        return y, labels, keep

    # --- splits -------------------------------------------------------------------------------

    def holdout(self, y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, test rows), sorted: the rows held out to score the winner.

        Stratified by class, classes with one row staying in training; shuffled; or the last
        ``test_size`` of the rows (time-ordered: rows come in time order)."""
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(y))
        if self.split == TIME_ORDERED:
            cut = len(y) - max(int(round(len(y) * test_size)), 1)
            return idx[:cut], idx[cut:]
        if self.split == SHUFFLED:
            return tuple(np.sort(a) for a in train_test_split(idx, test_size=test_size, random_state=seed))
        counts = np.bincount(y)
        single = np.isin(y, np.flatnonzero(counts == 1))
        rest = idx[~single]
        tr, te = train_test_split(rest, test_size=test_size, random_state=seed, stratify=y[rest])
        return np.sort(np.concatenate([tr, idx[single]])), np.sort(te)

    def folds(self, y: np.ndarray, k: int, seed: int) -> tuple[list, str]:
        """[(fit rows, validation rows)] for choosing among models, and a description ("5-fold cv",
        "holdout", "3 time-ordered folds").

        ``k`` > 1: K-fold, stratified when every class has k rows. ``k`` == 1: one holdout of
        HOLDOUT_SHARE of the rows, stratified when every class has 2 rows. Time-ordered: each fold
        fits on the rows before its validation rows (an expanding window)."""
        from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit, train_test_split

        idx = np.arange(len(y))
        if self.split == TIME_ORDERED:
            if k > 1:
                return list(TimeSeriesSplit(k).split(idx)), f"{k} time-ordered folds"
            fit, valid = self.holdout(y, HOLDOUT_SHARE, seed)
            return [(fit, valid)], "time-ordered holdout"
        counts = np.bincount(y.astype(int)) if self.split == STRATIFIED else None
        if k > 1:
            stratify = counts is not None and counts[counts > 0].min() >= k
            splitter = (StratifiedKFold if stratify else KFold)(k, shuffle=True, random_state=seed)
            return list(splitter.split(idx, y if stratify else None)), f"{k}-fold cv"
        stratify = y if counts is not None and counts[counts > 0].min() >= 2 else None
        fit, valid = train_test_split(idx, test_size=HOLDOUT_SHARE, random_state=seed, stratify=stratify)
        return [(np.sort(fit), np.sort(valid))], "holdout"

    def backtest_origins(self, lengths: np.ndarray, horizon: int, windows: int) -> np.ndarray:
        """Rolling-origin split of many series (time-ordered): (series, window) index of the last point
        each backtest fits on; window w validates the ``horizon`` points after it, the latest window first."""
        return np.asarray(lengths)[:, None] - 1 - horizon * np.arange(1, windows + 1)[None, :]


CLASSES_OUTPUTS, VALUE_OUTPUTS = ("label", "probabilities"), ("variable",)
TASKS: dict[str, Task] = {t.name: t for t in (
    Task(BINARY, ("roc_auc", "log_loss", "accuracy", "f1"), CLASSES_OUTPUTS, STRATIFIED, classification=True,
         description="binary classification"),
    Task(MULTICLASS, ("log_loss", "accuracy", "f1", "roc_auc"), CLASSES_OUTPUTS, STRATIFIED, classification=True,
         description="multiclass classification"),
    Task(REGRESSION, ("rmse", "mae", "r2"), VALUE_OUTPUTS, SHUFFLED, description="regression"),
    Task(FORECAST, ("mase",), VALUE_OUTPUTS, TIME_ORDERED, description="forecasting"),
)}


def task_of(task: Task | str) -> Task:
    """The :class:`Task` named ``task`` (a Task is returned as it is)."""
    if isinstance(task, Task):
        return task
    try:
        return TASKS[task]
    except KeyError:
        raise SqlmlError(f'unknown task "{task}"', sqlstate=INVALID_PARAMETER,
                         hint=f"use one of: {', '.join(TASKS)}, or NULL to infer it") from None


def check_target_kind(name: str, pg_type: str) -> None:
    """Can a column of PostgreSQL type ``pg_type`` be a target at all (whatever the task)?"""
    kind = PG_KINDS.get(pg_type)
    if kind is None or kind in (DATE, TIMESTAMP, VECTOR):
        raise SqlmlError(f'target column "{name}" has type {pg_type}, which sqlml cannot predict',
                         hint="use a numeric column (regression) or a text, boolean or integer column (classification)",
                         sqlstate=DATATYPE_MISMATCH)


def check_target_type(name: str, pg_type: str, task: Task | str | None) -> None:
    """Can a column of PostgreSQL type ``pg_type`` be the target of ``task`` (None: of some task)?"""
    if task is None:
        check_target_kind(name, pg_type)
    else:
        task_of(task).check_target_type(name, pg_type)
