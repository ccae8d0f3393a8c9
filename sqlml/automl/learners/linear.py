"""Linear models (scikit-learn): logistic regression for classes, ridge for values.

Logistic regression is fitted in rounds of lbfgs iterations, warm-started, up to the deadline: on
a wide one-hot encoding (60,000 rows, thousands of text levels, several classes) one fit of 500
iterations took 80 s and could not be interrupted. Ridge is a closed form, fast at any width.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from sqlml.automl import portfolio
from sqlml.automl.spec import LINEAR, SCALED, EstimatorSpec, FitContext, Hyper, fit_plain

FIRST_ROUND = 10  # lbfgs iterations before the first deadline check; they measure what one costs
ROUND_SHARE = 0.25  # a later round takes at most this share of the time left: its overrun past the deadline


def build(params, task, threads, seed):
    if not task.classification:
        from sklearn.linear_model import Ridge

        return Ridge(alpha=params.get("alpha", 1.0), random_state=seed)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=params.get("C", 1.0), max_iter=params.get("max_iter", 500), random_state=seed)


def fit(est, X, y, context: FitContext):
    """Logistic regression: a first round of ``FIRST_ROUND`` lbfgs iterations measures what one
    costs. With time for the whole fit (``max_iter`` within ``ROUND_SHARE`` of what is left), it
    is then fitted once from the start, as without a deadline (the same model, to the bit);
    otherwise in rounds, each warm-started from the last, until it converges, reaches ``max_iter``
    in all, or the deadline passes: then the model so far, usable if less converged. Ridge: one
    plain fit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if not isinstance(est, LogisticRegression):
        return fit_plain(est, X, y, context)
    budget, total = context.budget, int(est.max_iter)
    done, step = 0, min(FIRST_ROUND, total)
    est.set_params(warm_start=True)
    try:
        while True:
            est.set_params(max_iter=step)
            started = budget.clock()
            with warnings.catch_warnings():
                if done + step < total:  # a round ending unconverged is expected; at max_iter, sklearn warns
                    warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, y)
            per_iteration = (budget.clock() - started) / step
            done += step
            if int(np.max(est.n_iter_)) < step or done >= total:  # converged, or max_iter reached
                break
            budget.checkpoint()
            if budget.expired():
                break
            affordable = budget.remaining() * ROUND_SHARE / per_iteration if per_iteration > 0 else math.inf
            if done == step and affordable >= total:  # time for all of it: the fit without a deadline
                est.set_params(warm_start=False, max_iter=total)
                est.fit(X, y)
                break
            step = int(min(max(affordable, FIRST_ROUND), total - done))
    finally:
        est.set_params(warm_start=False, max_iter=total)
    return None


def params_for(params: dict, task) -> dict:
    """C for classifiers, alpha for ridge."""
    return {k: v for k, v in params.items() if k == ("C" if task.classification else "alpha")}


SPECS = (
    EstimatorSpec(
        name="linear", family=LINEAR, encoding=SCALED, build=build, fit=fit, params_for=params_for, cost=0.3,
        library="sklearn", interruptible_refit=True,
        space=(Hyper("C", 1e-3, 1e3, log=True, always=True), Hyper("alpha", 1e-3, 1e3, log=True, always=True)),
        portfolio=portfolio.learned()["linear"],
    ),
)
