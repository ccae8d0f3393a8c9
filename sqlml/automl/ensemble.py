"""Greedy ensemble selection (Caruana et al., 2004) over the validation predictions of the trials.

Forward selection with replacement: start empty, repeatedly add the trial whose addition most
improves the blended validation score, for ``ROUNDS`` rounds; weights are the counts. It costs no
extra fits. The library is the best trials plus the best of every algorithm, and members are chosen
within the time left to refit and export them. The ensemble is kept only when it beats the best
single trial on validation.
"""

from __future__ import annotations

import numpy as np

from sqlml.automl import metrics
from sqlml.data.task import Task, task_of

ROUNDS = 20
CANDIDATES = 12  # best trials considered
PER_ALGORITHM = 2  # and the best of every algorithm: a search that settled on one family still
# blends in the others (OJ: fifty near-identical linear models crowd out every tree model)


def blend(predictions: list, weights: list) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return sum(wi * p for wi, p in zip(w / w.sum(), predictions))


def select(trials: list, y: np.ndarray, metric: str, task: Task, cost=None, allowance: float = np.inf):
    """[(trial, weight)] of a winning ensemble, or None when no blend beats the best single trial.

    ``cost(trial)``: seconds to make the trial a member (refit, export); the members' costs add up
    to at most ``allowance``. A trial already in the blend costs nothing more, so the selection
    goes on reweighting what it can afford instead of giving up the ensemble."""
    ok = sorted((t for t in trials if t.status == "ok" and t.predictions is not None and t.loss is not None
                 and np.isfinite(t.loss)), key=lambda t: t.loss)
    pool = library(ok)
    if len(pool) < 2:
        return None
    price = [cost(t) if cost else 0.0 for t in pool]
    spent = 0.0
    counts = np.zeros(len(pool))
    current, current_loss = None, np.inf
    for _ in range(ROUNDS):
        best_i, best_loss = None, current_loss
        for i, t in enumerate(pool):
            if counts[i] == 0 and spent + price[i] > allowance:
                continue
            k = counts.sum()
            cand = t.predictions if current is None else (current * k + t.predictions) / (k + 1)
            loss = metrics.loss(metric, metrics.score(metric, y, cand))
            if loss < best_loss - 1e-12:
                best_i, best_loss = i, loss
        if best_i is None:
            break
        k = counts.sum()
        current = pool[best_i].predictions if current is None else (current * k + pool[best_i].predictions) / (k + 1)
        spent += price[best_i] if counts[best_i] == 0 else 0.0
        counts[best_i] += 1
        current_loss = best_loss
    chosen = [(pool[i], float(c)) for i in range(len(pool)) if (c := counts[i]) > 0]
    if len(chosen) < 2 or current_loss >= pool[0].loss - 1e-9:
        return None
    return chosen


def library(ok: list) -> list:
    """The candidates among ``ok`` (finished trials, best first), best first: the CANDIDATES best
    trials, then the PER_ALGORITHM best of each algorithm; one per distinct prediction vector."""
    pool = []

    def add(t):
        if not any(np.allclose(t.predictions, q.predictions) for q in pool):
            pool.append(t)

    for t in ok:
        if len(pool) == CANDIDATES:
            break
        add(t)
    for algorithm in dict.fromkeys(t.algorithm for t in ok):
        for t in [t for t in ok if t.algorithm == algorithm][:PER_ALGORITHM]:
            add(t)
    return sorted(pool, key=lambda t: t.loss)


def voting(fitted: list, task: Task | str):
    """A fitted soft-voting ensemble of fitted pipelines [(model, weight)] (converts to one ONNX graph)."""
    from sklearn.ensemble import VotingClassifier, VotingRegressor
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import Bunch

    names = [f"m{i}" for i in range(len(fitted))]
    models = [m for m, _ in fitted]
    weights = np.asarray([w for _, w in fitted], dtype=np.float64)
    if not task_of(task).classification:
        v = VotingRegressor(list(zip(names, models)), weights=weights)
    else:
        v = VotingClassifier(list(zip(names, models)), voting="soft", weights=weights, flatten_transform=False)
        classes = np.asarray(models[0].classes_)
        v.le_ = LabelEncoder().fit(classes)
        v.classes_ = v.le_.classes_
    v.estimators_ = models
    v.named_estimators_ = Bunch(**dict(zip(names, models)))
    return v
