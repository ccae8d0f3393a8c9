"""The linear classifier's fit stops at the deadline (``sqlml.automl.learners.linear.fit``), and so
does its refit after the search. Pure: no database; the budget's clock is injected, so nothing
here depends on how fast the machine is."""

import numpy as np
from sklearn.linear_model import LogisticRegression

from sqlml.automl import preprocess
from sqlml.automl.budget import Budget
from sqlml.automl.estimators import SPECS
from sqlml.automl.learners import linear
from sqlml.automl.search import Problem, Search, fit_pipeline, predict, task_of
from sqlml.data import convert
from sqlml.data.schema import MULTICLASS, Feature, FeatureSchema, Target
from sqlml.onnx import convert as onnx_convert
from sqlml.onnx import parity

SPEC = SPECS["linear"]
# weakly regularised fits, which need more lbfgs iterations than a round (the learned portfolio's
# C = 0.1 may converge in the first)
SLOW = ({"C": 1.0}, {"C": 10.0})
CLASSES = 5


class TickingClock:
    """Moves ``tick`` seconds every time it is read: a fit that reads it is a fit that takes time."""

    def __init__(self, tick: float = 1.0):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def wide_problem(rows: int, levels: int, seed: int = 0):
    """Multiclass rows whose class hangs on a text column of ``levels`` values (a wide one-hot)."""
    rng = np.random.default_rng(seed)
    code = rng.integers(0, levels, rows)
    x = rng.normal(size=rows)
    y = ((code % CLASSES) + (x > 1.0) + (rng.random(rows) < 0.2) * rng.integers(0, CLASSES, rows)) % CLASSES
    schema = FeatureSchema((Feature("x", "numeric", "float8"), Feature("ticket", "category", "text")),
                           Target("y", "int4", MULTICLASS, tuple(range(CLASSES))))
    inputs = convert.model_inputs(schema, {"x": x, "ticket": np.array([f"t{c}" for c in code], dtype=object)})
    X = convert.as_frame(schema, inputs)
    problem = Problem(X, y.astype(np.int64), MULTICLASS, "log_loss", preprocess.Plan.from_data(schema, X), CLASSES)
    return schema, inputs, problem


def unbounded(problem, params):
    """Today's fit before rounds: one LogisticRegression.fit of max_iter iterations."""
    pre = preprocess.build(problem.plan, SPEC.encoding)
    Xt = pre.fit_transform(problem.X, problem.y)
    est = SPEC.build(SPEC.params_for(params, problem.task), problem.task, 1, problem.seed)
    est.fit(Xt, problem.y)
    return est, est.predict_proba(pre.transform(problem.X))


def log_loss(problem, model):
    proba = predict(model, problem.X, problem.task, problem.n_classes)
    return -np.mean(np.log(np.clip(proba[np.arange(len(problem.y)), problem.y], 1e-15, None)))


def test_a_wide_multiclass_fit_stops_at_the_deadline_with_a_usable_model():
    schema, inputs, problem = wide_problem(4000, 800)
    params = SLOW[0]
    reference, _ = unbounded(problem, params)
    assert reference.n_iter_[0] > linear.FIRST_ROUND  # the whole fit needs more than a round
    checks = []
    clock = TickingClock()
    budget = Budget(3.0, interrupt=lambda: checks.append(clock.now), clock=clock, min_interval=0.0)
    model, used = fit_pipeline(SPEC, params, problem, problem.X, problem.y, budget)
    est = model.named_steps["model"]
    assert used is None
    assert est.n_iter_[0] == linear.FIRST_ROUND  # the first round, then the deadline had passed
    assert checks, "the interrupt check runs between rounds"
    assert est.max_iter == 500 and not est.warm_start  # the estimator's own settings are given back
    # less converged than the whole fit, yet a model: probabilities, and an ONNX export with parity
    assert log_loss(problem, model) > log_loss(problem, fit_pipeline(SPEC, params, problem, problem.X, problem.y,
                                                                       Budget(float("inf")))[0])
    proba = predict(model, problem.X, problem.task, CLASSES)
    assert np.allclose(proba.sum(axis=1), 1.0)
    got = onnx_convert.run(onnx_convert.session(onnx_convert.to_onnx(model, schema)),
                           convert.as_feeds(schema, inputs), MULTICLASS)
    result = parity.compare(MULTICLASS, proba, got)
    assert result.ok, result.reason


def test_with_time_to_spare_the_fit_is_the_unbounded_one():
    _, _, problem = wide_problem(600, 12, seed=1)
    for params in SLOW:
        reference, expected = unbounded(problem, params)
        assert reference.n_iter_[0] > linear.FIRST_ROUND  # not converged in the first round: the rounds ran
        for budget in (Budget(30.0, clock=lambda: 0.0), Budget(float("inf"))):  # time to spare; no deadline
            model, _ = fit_pipeline(SPEC, params, problem, problem.X, problem.y, budget)
            est = model.named_steps["model"]
            assert np.array_equal(est.coef_, reference.coef_) and np.array_equal(est.intercept_, reference.intercept_)
            assert np.array_equal(predict(model, problem.X, problem.task, CLASSES), expected)


def test_ridge_is_one_plain_fit():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 3)), rng.normal(size=50)
    est = SPEC.build({"alpha": 1.0}, task_of("regression"), 1, 0)
    linear.fit(est, X, y, None)
    assert np.allclose(est.coef_, SPEC.build({"alpha": 1.0}, task_of("regression"), 1, 0).fit(X, y).coef_)
    assert not isinstance(est, LogisticRegression)


def test_the_refit_on_every_row_stops_at_what_is_left_of_the_budget():
    _, _, problem = wide_problem(4000, 800)
    now = [0.0]

    def run_fit(fit):  # time passes only between fits: 10 s each, whatever the machine
        out = fit()
        now[0] += 10.0
        return out

    search = Search(problem, [SPEC], Budget(30.0, clock=lambda: now[0]), run_fit=run_fit, reserve_seconds=1.0,
                    use_ensemble=False, final_rows=len(problem.y))
    search.run()
    result = search.finish()
    now[0] = max(now[0], 40.0)  # past the budget: nothing is left for the refit on every row
    final = search.refit_on(result, problem.X, problem.y)
    assert final.named_steps["model"].n_iter_[0] == linear.FIRST_ROUND  # one round, then it stopped
    assert predict(final, problem.X, problem.task, CLASSES).shape == (len(problem.y), CLASSES)


def test_rounds_under_a_near_deadline_reach_the_same_optimum():
    _, _, problem = wide_problem(600, 12, seed=1)
    params = SLOW[0]
    reference, expected = unbounded(problem, params)
    # each clock read a second: 0.1 s an iteration, ~55 s left, so rounds of ~137 iterations (not one fit of 500)
    model, _ = fit_pipeline(SPEC, params, problem, problem.X, problem.y, Budget(60.0, clock=TickingClock()))
    assert np.abs(predict(model, problem.X, problem.task, CLASSES) - expected).max() < 1e-3  # lbfgs's tolerance
