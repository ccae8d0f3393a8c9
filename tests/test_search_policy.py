"""Where the search spends its time (``sqlml.automl.policy``): the pure rules, table-driven, then the
search that follows them under a clock the test moves (no wall-clock assertions)."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sqlml.automl import policy, preprocess
from sqlml.automl.budget import Budget
from sqlml.automl.estimators import SPECS
from sqlml.automl.search import EXPORT_SECONDS_PER_NODE, Problem, Search
from sqlml.automl.spec import BOOSTING, LINEAR, TREES
from sqlml.data.schema import Feature, FeatureSchema, Target
from sqlml.errors import SqlmlError
from tests.conftest import query, scalar

LGB = {"learning_rate": 0.1, "num_leaves": 31, "min_child_samples": 20, "subsample": 1.0, "colsample_bytree": 1.0,
       "reg_lambda": 0.001}  # a probe's configuration
RF = dict(SPECS["random_forest"].portfolio[0])  # 200 trees
ET = dict(SPECS["extra_trees"].portfolio[0])


@pytest.mark.parametrize("family, rows, odds", [
    (BOOSTING, 100_000, 1.0),
    (LINEAR, 100_000, 1.0),
    (TREES, 1_000, 1.0),       # small tables: forests win or join the ensemble
    (TREES, 2_000, 1.0),
    (TREES, 10_000, 0.465),    # log-linear between 2k (1.0) and 30k fit rows (0.1)
    (TREES, 30_000, 0.1),
    (TREES, 500_000, 0.1),
])
def test_forests_odds_fall_with_the_table_size(family, rows, odds):
    assert policy.win_odds(family, rows) == pytest.approx(odds, abs=0.01)


@pytest.mark.parametrize("seconds, time_left, odds, decision", [
    (1.0, 25.0, 1.0, policy.RUN),     # 4% of what is left: at once
    (5.0, 25.0, 1.0, policy.DEFER),   # 20%: behind the cheaper entries
    (20.0, 25.0, 1.0, policy.DEFER),  # a likely winner may take all that is left...
    (30.0, 25.0, 1.0, policy.SKIP),   # ...not more
    (1.0, 25.0, 0.1, policy.DEFER),   # a forest on 30k rows: 4% > 0.15 x 0.1
    (5.0, 25.0, 0.1, policy.SKIP),    # 20% of the search for a family unlikely to win: never
    (17.0, 25.0, 0.1, policy.SKIP),   # issue 21's worst case: forests took 17 s of a 30 s call
    (0.1, 25.0, 0.1, policy.RUN),
    (0.1, 0.0, 1.0, policy.SKIP),     # nothing left
])
def test_the_gate_weighs_a_share_of_the_time_left_by_the_odds_of_winning(seconds, time_left, odds, decision):
    assert policy.admit(seconds, time_left, odds) == decision


def _size(rows, inputs=9, classes=0, threads=2):
    return policy.Size(rows, inputs, classes, threads)


def test_predicted_fit_seconds_scale_with_the_probe_and_the_configuration():
    probe = policy.Probe(seconds=2.0, rounds=300, params=LGB)
    size = _size(32_000)
    assert policy.fit_seconds(BOOSTING, LGB, size, probe) == pytest.approx(2.0)  # the probe itself
    # half the learning rate: twice the rounds; larger trees cost more per round
    slow = policy.fit_seconds(BOOSTING, {**LGB, "learning_rate": 0.05}, size, probe)
    assert slow == pytest.approx(2 * 2.0 - policy.FIT_OVERHEAD, rel=0.01)
    assert policy.fit_seconds(BOOSTING, {**LGB, "num_leaves": 255}, size, probe) > 2.0
    # the machine's speed comes from the probe: a probe twice as slow, every prediction twice as large
    slower = policy.Probe(seconds=4.0, rounds=300, params=LGB)
    rf = policy.fit_seconds(TREES, RF, size, probe, unit=SPECS["random_forest"].cost)
    assert policy.fit_seconds(TREES, RF, size, slower, unit=SPECS["random_forest"].cost) == pytest.approx(
        2 * rf - policy.FIT_OVERHEAD, rel=0.01)
    # forests grow with their trees and the features tried per split
    assert policy.fit_seconds(TREES, {**RF, "n_estimators": 100}, size, probe, unit=3.5) == pytest.approx(
        (rf - policy.FIT_OVERHEAD) / 2 + policy.FIT_OVERHEAD, rel=0.01)
    assert policy.fit_seconds(TREES, {**RF, "max_features": 1.0}, size, probe, unit=3.5) > 2 * rf  # sqrt(9) of 9


def test_a_measured_fit_is_priced_by_the_rounds_it_kept_plus_the_patience():
    size = _size(28_800, 7, classes=6)
    slow = {**LGB, "learning_rate": 0.05, "num_leaves": 63, "colsample_bytree": 0.3}
    # itself again: the measured seconds
    assert policy.measured_fit_seconds(BOOSTING, slow, size, 12.0, slow, rounds=341) == pytest.approx(12.0)
    # twice the learning rate: half the rounds kept, the same patience after them
    fast = {**slow, "learning_rate": 0.1}
    patience = policy.EARLY_STOPPING_ROUNDS
    assert policy.measured_fit_seconds(BOOSTING, fast, size, 12.0, slow, rounds=341) == pytest.approx(
        12.0 * (341 / 2 + patience) / (341 + patience))
    # a fit that stopped after 35 rounds ran 85: a configuration expected to keep 70 runs 120
    assert policy.measured_fit_seconds(BOOSTING, slow, size, 3.0, slow, rounds=35) == pytest.approx(3.0)
    assert policy.measured_fit_seconds(BOOSTING, {**slow, "learning_rate": 0.025}, size, 3.0, slow,
                                       rounds=35) == pytest.approx(3.0 * (70 + patience) / (35 + patience))
    # rounds not chosen by early stopping (fixed, or forests): the configurations' work alone
    assert policy.measured_fit_seconds(TREES, {**RF, "n_estimators": 100}, size, 8.0, RF) == pytest.approx(4.0)


@pytest.mark.parametrize("rows, inputs, probe_seconds, rounds, rf_over_lgb", [
    (1_000, 3, 0.2, 100, (0.1, 3)),       # a small table: a forest costs about a LightGBM fit
    (32_000, 9, 2.0, 300, (3, 40)),       # issue 21's worst case: a forest costs many LightGBM trials
])
def test_forests_cost_many_boosting_fits_on_large_tables_only(rows, inputs, probe_seconds, rounds, rf_over_lgb):
    probe = policy.Probe(probe_seconds, rounds, LGB)
    size = _size(rows, inputs)
    rf = policy.fit_seconds(TREES, RF, size, probe, unit=SPECS["random_forest"].cost)
    low, high = rf_over_lgb
    assert low * probe_seconds <= rf <= high * probe_seconds


@pytest.mark.parametrize("rows, leaves_high, first", [
    (1_000, 256, ()),             # small tables keep the small-table portfolio
    (4_999, 256, ()),
    (8_000, 256, (None, 127)),    # medium: one entry of larger trees, after the probe's yardstick
    (40_000, 2048, (127, 7, 255)),  # large: the probe, small trees at a fast rate, and leaves up to rows / 16
    (10_000_000, 2048, (127, 7, 255)),
])
def test_larger_tables_start_from_and_search_larger_trees(rows, leaves_high, first):
    spec = policy.sized_boosting(SPECS["lightgbm"], rows)
    learned = SPECS["lightgbm"].portfolio
    leaves = tuple(p["num_leaves"] for p in spec.portfolio[:len(first)])
    assert leaves == tuple(learned[0]["num_leaves"] if n is None else n for n in first)
    if rows >= policy.LARGE_BOOSTING_ROWS:  # the learned small trees go, the first too: one fast entry instead
        small = [p for p in spec.portfolio if p["num_leaves"] < 15]
        assert small == [policy.LARGE_TREE_ENTRIES[1]] and small[0]["learning_rate"] == 0.1
        assert learned[0] not in spec.portfolio
    else:
        assert spec.portfolio[0] == learned[0]
    assert next(h for h in spec.space if h.name == "num_leaves").high == leaves_high
    names = {h.name: h for h in spec.space}
    for config in spec.portfolio:
        assert all(names[k].low <= v <= names[k].high for k, v in config.items())


def test_linear_is_priced_by_its_encoded_width_and_the_machines_speed():
    narrow, wide = _size(32_000, 4), _size(32_000, 132)
    assert policy.fit_seconds(LINEAR, {}, wide) - policy.FIT_OVERHEAD == pytest.approx(
        33 * (policy.fit_seconds(LINEAR, {}, narrow) - policy.FIT_OVERHEAD))
    # a probe that ran four times slower than this stack's order of magnitude: linear too
    expected = policy.work(BOOSTING, LGB, narrow, policy.Probe(1.0, 300, LGB)) * policy.SECONDS_PER_UNIT
    slow = policy.Probe(policy.FIT_OVERHEAD + 4 * expected, 300, LGB, inputs=4)
    assert policy.machine_speed(wide, slow) == pytest.approx(4.0)  # the probe's own inputs, not linear's
    assert policy.fit_seconds(LINEAR, {}, wide, slow) - policy.FIT_OVERHEAD == pytest.approx(
        4 * (policy.fit_seconds(LINEAR, {}, wide) - policy.FIT_OVERHEAD))


def test_a_wide_one_hot_encoding_is_wide_for_linear_models_only():
    frame = pd.DataFrame({"x": [1.0, 2.0] * 50, "city": [f"c{i % 40}" for i in range(100)]})
    schema = FeatureSchema((Feature("x", "numeric", "float8"), Feature("city", "category", "text")),
                           Target("y", "float8", "regression"))
    plan = preprocess.Plan.from_data(schema, frame)
    assert plan.width(SPECS["lightgbm"].encoding) == 2  # ordinal codes
    assert plan.width(SPECS["linear"].encoding) == 41 == plan.width(SPECS["random_forest"].encoding)


def test_boosting_not_sized_by_leaves_keeps_its_portfolio():
    from dataclasses import replace

    depth_sized = replace(SPECS["lightgbm"], space=tuple(h for h in SPECS["lightgbm"].space if h.name != "num_leaves"))
    assert policy.sized_boosting(depth_sized, 40_000) is depth_sized


@pytest.mark.parametrize("folds, refit_seconds, budget, forced, bag", [
    (1, 100.0, 30.0, None, False),   # a holdout has one fold model: always refit
    (1, 0.0, 30.0, True, False),     # ... even when asked
    (5, 1.0, 30.0, None, False),     # cheap refits: refit on every row
    (5, 9.0, 30.0, None, True),      # refits would take 30% of the call: keep the fold models
    (5, 9.0, 30.0, False, False),    # asked not to
    (3, 0.0, 30.0, True, True),      # asked to
])
def test_bagging_keeps_the_fold_models_when_refits_cost_too_much_or_when_asked(folds, refit_seconds, budget,
                                                                              forced, bag):
    assert policy.finish_by_bagging(folds, refit_seconds, budget, forced) is bag


# --- the search, under a clock the test moves -----------------------------------------------------

class FitClock:
    """Time passes only while models fit: ``tick`` seconds per fit (``first`` for the first, the
    probe), whatever the machine's load."""

    def __init__(self, tick: float, first: float | None = None):
        self.now, self.tick, self.first = 0.0, tick, first

    def __call__(self) -> float:
        return self.now

    def run_fit(self, fit):
        out = fit()
        self.now += self.tick if self.first is None else self.first
        self.first = None
        return out


def _problem(rows: int, seed: int = 0, task: str = "regression", noise: float = 0.3):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({f"x{i}": rng.normal(size=rows).astype(np.float32) for i in range(4)})
    signal = X.x0 * X.x1 + np.sin(2 * X.x2) + X.x3
    y = (signal + rng.normal(scale=noise, size=rows)).to_numpy()
    if task != "regression":
        y = (y > 0).astype(np.int64)
    schema = FeatureSchema(tuple(Feature(c, "numeric", "float8") for c in X.columns), Target("y", "float8", task))
    return Problem(X=X, y=y, task=task, metric="rmse" if task == "regression" else "roc_auc",
                   plan=preprocess.Plan.from_data(schema, X), n_classes=0 if task == "regression" else 2, seed=1)


def _search(rows, tick, budget, task="regression", noise=0.3, first=None,
            algorithms=("lightgbm", "random_forest", "extra_trees"), **kwargs):
    clock = FitClock(tick, first)
    specs = [SPECS[a] for a in algorithms]
    search = Search(_problem(rows, task=task, noise=noise), specs, Budget(budget, clock=clock), run_fit=clock.run_fit,
                    reserve_seconds=1.0, **kwargs)
    search.run()
    return search


class ConfigClock(FitClock):
    """Fits of trees over 200 leaves "take" ``slow`` seconds, the others ``tick``."""

    def __init__(self, tick: float, slow: float):
        super().__init__(tick)
        self.slow = slow

    def run_fit(self, fit):
        out = fit()
        model = out[0].named_steps["model"]
        self.now += self.slow if model.get_params().get("num_leaves", 0) > 200 else self.tick
        return out


def test_a_slow_portfolio_fit_neither_prices_the_next_moves_nor_the_winners_refit():
    # 40,000 rows (one holdout): every fit takes 1 s but the 255-leaf entry's, 9 s (and it does not
    # win). The moves around the winner, and its refit, are priced from the winner's own fit: the
    # search goes on after the slow fit instead of ending with time unused.
    clock = ConfigClock(tick=1.0, slow=9.0)
    problem = _problem(40_000, noise=3.0)
    budget = Budget(40.0, clock=clock)
    search = Search(problem, [SPECS["lightgbm"]], budget, run_fit=clock.run_fit, reserve_seconds=1.0)
    search.run()
    slow = [i for i, t in enumerate(search.trials) if t.params.get("num_leaves", 0) > 200]
    assert slow, [t.params for t in search.trials]
    assert len(search.trials) - slow[0] > 3, [(t.params, t.elapsed) for t in search.trials]
    best = search.best()
    # its kept rounds of the rounds it fitted (patience included), 1 / 0.8 times as many
    kept = best.n_estimators
    assert search.refit_estimate(best) == pytest.approx(best.fit_seconds * kept / (kept + 50) / 0.8)
    assert budget.remaining() < 9.0  # no slow fit's worth of the budget left unused


def test_a_fit_far_slower_than_predicted_is_cut_at_its_deadline_and_scored():
    # 40,000 rows (one holdout): the 255-leaf entry "takes" 20 s, many times its predicted seconds;
    # it is stopped at CUT_FACTOR x its prediction, and the model it has is scored
    clock = ConfigClock(tick=1.0, slow=20.0)
    search = Search(_problem(40_000, noise=3.0), [SPECS["lightgbm"]], Budget(60.0, clock=clock),
                    run_fit=clock.run_fit, reserve_seconds=1.0)
    search.run()
    big = next(t for t in search.trials if t.params.get("num_leaves", 0) > 200)
    assert big.status == "ok" and big.loss is not None and big.predictions is not None
    assert (big.error or "").startswith("cut at its deadline"), big.error
    allowance = float(big.error.split("(")[1].split("s)")[0])  # three times its prediction, under 20 s
    assert allowance < 20.0


@pytest.mark.parametrize("rows, final_rows, holdout, checked", [
    (1000, None, 1000 / 3, 1000 / 3),  # no rows beyond the training part given: a quarter of all, a third of these
    (1000, 1250, 250, 250),            # the holdout: the rows beyond the training part
    (9000, 12000, 3000, 2000),         # ONNX Runtime checks parity.MAX_ROWS of a larger holdout
])
def test_the_finish_is_priced_with_the_holdouts_scoring_as_measured_per_row(rows, final_rows, holdout, checked):
    search = _search(rows, tick=0.2, budget=3.0, algorithms=("lightgbm",), final_rows=final_rows)
    best = search.best()
    assert best.seconds_per_scored_row == 0.0  # scoring takes no time on this clock
    before = search.export_estimate(best)
    best.seconds_per_scored_row = 1e-3
    grow = len(search.problem.y) / len(search.folds[0][0])  # the refit's rounds
    assert search.export_estimate(best) == pytest.approx(before + (holdout + checked) * 1e-3 * grow)


def test_on_a_large_table_forests_never_start_and_boosting_gets_the_search():
    # 40,000 rows, 30 s, a LightGBM fit "takes" 2.5 s: a 200-tree forest is predicted at many times
    # that, a large share of the search for a family unlikely to win there
    search = _search(40_000, tick=2.5, budget=30.0, noise=3.0)  # noisy: early stopping comes soon
    assert search.validation == "holdout"
    algorithms = [t.algorithm for t in search.trials]
    assert set(algorithms) == {"lightgbm"}, algorithms
    assert len(algorithms) >= 5
    assert any(t.params.get("num_leaves", 0) >= 127 for t in search.trials)  # large tables, larger trees


def test_the_first_trials_follow_the_learned_portfolios_greedy_order():
    from sqlml.automl import portfolio

    # the probe is instant (5-fold validation, not kept as a trial) and every fit quick: the whole
    # portfolio runs, the learned order first, then the forests' hand-written entries
    search = _search(600, tick=0.2, first=0.001, budget=25.0,
                     algorithms=("lightgbm", "linear", "random_forest", "extra_trees"))
    order = [(e["algorithm"], e["params"]) for e in portfolio.order()]
    tried = [(t.algorithm, t.params) for t in search.trials if t.origin == "portfolio"]
    assert tried[:len(order)] == order
    assert {a for a, _ in tried[len(order):]} == {"random_forest", "extra_trees"}


def _wide_problem(rows: int, text_columns: int, seed: int = 0):
    """``_problem``'s regression with ``text_columns`` city-like inputs of 200 levels (64 kept, one-hot)."""
    base = _problem(rows, seed=seed, noise=3.0)
    rng = np.random.default_rng(seed)
    X = base.X.copy()
    for i in range(text_columns):
        X[f"t{i}"] = pd.Series(rng.integers(0, 200, size=rows)).map(lambda v: f"c{v}")
    features = tuple(Feature(c, "numeric", "float8") for c in base.X.columns) + tuple(
        Feature(f"t{i}", "category", "text") for i in range(text_columns))
    schema = FeatureSchema(features, Target("y", "float8", "regression"))
    return Problem(X=X, y=base.y, task="regression", metric="rmse", plan=preprocess.Plan.from_data(schema, X), seed=1)


@pytest.mark.parametrize("text_columns, linear_waits", [
    (2, True),   # 132 one-hot inputs: a linear fit is predicted at a large share of the time left
    (0, False),  # 4 numbers: linear is cheap and runs at its learned turn
])
def test_on_a_large_table_an_expensive_linear_fit_waits_behind_large_lightgbm_trees(text_columns, linear_waits):
    clock = FitClock(2.5)
    problem = _wide_problem(40_000, text_columns)
    search = Search(problem, [SPECS["linear"], SPECS["lightgbm"]], Budget(35.0, clock=clock), run_fit=clock.run_fit,
                    reserve_seconds=1.0)
    assert search.validation == "holdout"
    entries = search.portfolio_entries()
    lightgbm = [p.get("num_leaves") for s, p in entries if s.name == "lightgbm"]
    assert lightgbm[:3] == [127, 7, 255]  # the large-table entries take LightGBM's turns
    turn = next(i for i, (s, _) in enumerate(entries) if s.name == "linear")
    predicted = search.predicted_seconds(SPECS["linear"], entries[turn][1])
    search.run()
    algorithms = [t.algorithm for t in search.trials]
    assert search.trials[0].params["num_leaves"] == 127  # the probe, kept as LightGBM's first trial
    assert "linear" in algorithms, (algorithms, predicted)  # it ran, in the end
    waited = algorithms.index("linear") > turn  # later than its learned turn
    assert waited is linear_waits, (algorithms, predicted)
    if linear_waits:
        assert algorithms[:turn + 1] == ["lightgbm"] * (turn + 1)


def test_on_a_small_table_the_same_clock_lets_forests_in():
    # forests come in right after the probe: a short search shows it (every tick is a real fit)
    search = _search(2_000, tick=0.25, budget=8.0)
    assert {"random_forest", "extra_trees"} <= {t.algorithm for t in search.trials}


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_bagging_averages_the_winners_fold_models_into_one_onnx_graph(task):
    from sqlml.data import convert
    from sqlml.onnx import convert as onnx_convert
    from sqlml.onnx import parity

    # the probe is instant (5-fold validation), then every fit "takes" 1 s: a trial costs 5 s
    search = _search(600, tick=1.0, first=0.001, budget=12.0, task=task, algorithms=("lightgbm",), bagging=True)
    assert search.validation == "5-fold cv" and search.bagging
    result = search.finish()
    assert result.bagged == 5 and result.fitted_on == "5 fold models of the training part"
    assert result.params["bagged_folds"] == 5
    folds = result.trial.fold_models
    assert len(folds) == 5 and list(result.model.estimators_) == folds  # no refit: the fold models
    X = search.problem.X.iloc[:50]
    averaged = np.mean([m.predict(X) if task == "regression" else m.predict_proba(X) for m in folds], axis=0)
    got = result.model.predict(X) if task == "regression" else result.model.predict_proba(X)
    np.testing.assert_allclose(got, averaged, rtol=1e-6)
    # one ONNX graph, equal to the fitted ensemble (the parity gate's check)
    schema = FeatureSchema(tuple(Feature(c, "numeric", "float8") for c in X.columns),
                           Target("y", "float8", task, () if task == "regression" else (0, 1)))
    inputs = {c: X[c].to_numpy() for c in X.columns}
    blob = onnx_convert.to_onnx(result.model, schema)
    onnx = onnx_convert.run(onnx_convert.session(blob), convert.as_feeds(schema, inputs), task)
    assert parity.compare(task, got, onnx).ok


@pytest.mark.parametrize("first, bagging, bagged", [
    (0.001, None, 0),    # 5 folds, refits cheap (the probe's measure): refit on every row
    (0.001, False, 0),   # asked not to
    (1.0, True, 0),      # a holdout (the probe is slow): one fold model, nothing to average
])
def test_without_bagging_the_winner_is_refitted_on_every_row(first, bagging, bagged):
    search = _search(600, tick=1.0, first=first, budget=12.0, algorithms=("lightgbm",), bagging=bagging)
    result = search.finish()
    assert result.bagged == bagged and "bagged_folds" not in result.params
    if search.validation == "holdout":  # the holdout's own fold model is what the holdout scores
        assert result.model is result.trial.fold_models[0]
        assert result.fitted_on == "fit part of the validation split"


# --- in the database ------------------------------------------------------------------------------

def test_bagging_in_the_database_registers_the_fold_models_through_the_parity_gate(db):
    # 5-fold validation asked for: what a budget affords would depend on the machine's load; a first
    # training loads the libraries, so that the budget is not spent on imports (a sprint)
    query(db, "SELECT * FROM sqlml.train('warm', 'iris', 'species', algorithms => '{linear,lightgbm}', "
              "time_budget => '2 seconds')")
    query(db, "SELECT * FROM sqlml.train('bagged', 'iris', 'species', algorithms => '{linear,lightgbm}', "
              """time_budget => '10 seconds', options => '{"bagging": true, "folds": 5}')""")
    refit, params, validation, passed = query(
        db, "SELECT metrics ->> 'refit', hyperparameters, metrics -> 'validation' ->> 'method', "
            "(parity ->> 'ok')::bool FROM sqlml.models WHERE project = 'bagged'")[0]
    assert params.get("bagged_folds") == 5, (refit, validation, params)
    assert validation == "5-fold cv" and refit == "5 fold models of the training part" and passed
    # the registered graph is the averaged fold models: it scores rows in SQL like any model
    proba = scalar(db, "SELECT sqlml.predict_proba('bagged', i) FROM iris i ORDER BY id LIMIT 1")
    assert len(proba) == 3 and abs(sum(proba) - 1) < 1e-4
    # refit_all asks for a refit on every row: no bagging then
    query(db, "SELECT * FROM sqlml.train('bagged', 'iris', 'species', algorithms => '{linear}', "
              """time_budget => '4 seconds', options => '{"bagging": true, "refit_all": true, "folds": 3}')""")
    assert query(db, "SELECT metrics ->> 'refit', hyperparameters ? 'bagged_folds' FROM sqlml.models "
                     "WHERE project = 'bagged' AND version = 2")[0] == ("all rows", False)


@pytest.mark.parametrize("metric, family_score, best_score, behind", [
    ("rmse", 1111.9, 571.1, True),  # diamonds: linear at twice LightGBM's RMSE
    ("rmse", 600.0, 571.1, False),
    ("log_loss", 1.30, 1.21, False),
    ("roc_auc", 0.70, 0.80, True),  # errors 0.30 against 0.20
    ("roc_auc", 0.78, 0.80, False),
    ("r2", 0.10, 0.90, True),
    ("accuracy", 1.0, 1.0, False),  # a perfect best: nothing is behind it by a ratio
])
def test_an_estimator_far_behind_the_best_is_judged_on_its_error_ratio(metric, family_score, best_score, behind):
    from sqlml.automl import metrics

    assert policy.far_behind(metrics.error(metric, family_score), metrics.error(metric, best_score)) is behind


def test_local_moves_skip_an_estimator_far_behind_the_best():
    # a product and a sine: linear models stay far behind boosting, and get no moves once behind
    search = _search(2_000, tick=0.5, budget=15.0, algorithms=("lightgbm", "linear"))
    linear = [t for t in search.trials if t.algorithm == "linear" and t.status == "ok"]
    best = search.best()
    assert best.algorithm == "lightgbm" and linear
    assert min(t.score for t in linear) > policy.FAR_BEHIND * best.score
    assert not [t for t in linear if t.origin == "search"], [(t.origin, t.score) for t in linear]
    assert any(t.origin == "search" for t in search.trials if t.algorithm == "lightgbm")


def test_the_winner_is_the_best_trial_that_can_still_finish_in_time(monkeypatch):
    # the best trial's export "takes" longer than the time left: the next best is registered; when no
    # trial can finish in time, the best still is (a training must produce a model)
    search = _search(2_000, tick=0.2, budget=6.0, algorithms=("lightgbm",), use_ensemble=False)
    ranked = sorted(search._scored(), key=lambda t: t.loss)
    assert len(ranked) >= 2
    best, runner_up = ranked[0], ranked[1]
    estimate = search.export_estimate
    monkeypatch.setattr(search, "export_estimate", lambda t: 1e6 if t is best else estimate(t))
    assert search.finish().trial is runner_up
    monkeypatch.setattr(search, "export_estimate", lambda t: 1e6)
    assert search.finish().trial is best


@pytest.mark.parametrize("n_estimators, max_scoring_us, fitted", [
    (100, 1.0, {"linear"}),                       # 100 rounds of 4+ leaves cost over 1 us: LightGBM is never fitted
    (None, 1.0, {"linear", "lightgbm"}),          # early stopping may keep few rounds: LightGBM is fitted
    (100, None, {"linear", "lightgbm"}),          # no scoring budget
])
def test_configurations_over_the_scoring_budget_are_skipped_unfitted(n_estimators, max_scoring_us, fitted):
    search = _search(2_000, tick=0.5, budget=20.0, algorithms=("lightgbm", "linear"),
                     n_estimators=n_estimators, max_scoring_us=max_scoring_us)
    assert {t.algorithm for t in search.trials} == fitted
    assert all(search.may_meet_scoring_budget(SPECS[t.algorithm], t.params) for t in search.trials)


def test_when_nothing_can_meet_the_scoring_budget_the_error_says_so_without_fitting():
    search = _search(2_000, tick=0.5, budget=20.0, algorithms=("lightgbm", "linear"), max_scoring_us=0.1)
    assert search.trials == []
    with pytest.raises(SqlmlError, match=r"within max_scoring_us 0.1 \(the cheapest: ~0.5 us\)"):
        search.finish()


@pytest.mark.parametrize("algorithm, task", [("extra_trees", "regression"), ("random_forest", "binary")])
def test_a_forests_nodes_per_tree_are_those_its_onnx_graph_holds(algorithm, task):
    from skl2onnx import to_onnx

    from sqlml.automl.learners import forest

    problem = _problem(3_000, task=task, noise=1.0)
    est = SPECS[algorithm].build({"n_estimators": 7, "min_samples_leaf": 8}, problem.task, 1, 0)
    X = problem.X.to_numpy(np.float32)
    est.fit(X, problem.y)
    graph = to_onnx(est, X[:1], options={"zipmap": False} if task != "regression" else None).graph
    tree_ids = next(a.ints for n in graph.node for a in n.attribute if a.name == "nodes_treeids")
    assert forest.onnx_nodes_per_tree(est) == len(tree_ids) / 7


def test_a_forests_export_is_priced_by_its_counted_nodes_within_the_leaves_bound():
    search = _search(3_000, tick=0.5, budget=20.0, noise=1.0, algorithms=("extra_trees",))
    spec, rows = SPECS["extra_trees"], len(search.problem.y)
    trials = [t for t in search.trials if t.status == "ok"]
    assert trials
    for trial in trials:
        bound = 2 * spec.leaves(trial.params, rows, search.problem.task) - 1
        assert 0 < trial.nodes_per_tree <= bound  # at the bound: trees of min_samples_leaf 1 reach max_leaf_nodes
        trees = trial.n_estimators or trial.params.get("n_estimators", 100)
        counted = min(trial.nodes_per_tree * rows / len(search.folds[0][0]), bound)
        saved = search.export_estimate(replace(trial, nodes_per_tree=None)) - search.export_estimate(trial)
        assert saved == pytest.approx(trees * (bound - counted) * EXPORT_SECONDS_PER_NODE)
    assert any(t.nodes_per_tree < 2 * spec.leaves(t.params, rows, search.problem.task) - 1 for t in trials)


@pytest.mark.parametrize("bagging, exported", [
    (True, "the 5 fold models"),                   # they are the model registered
    (False, "the refit on every row"),             # the fold models only score the holdout
])
def test_kept_fold_models_are_priced_as_exports_only_when_they_are_the_model(bagging, exported):
    search = _search(3_000, tick=0.5, budget=60.0, algorithms=("lightgbm",), folds=5, bagging=bagging)
    assert search.folds_kept and search.bagging is bagging
    best = search.best()
    best.seconds_per_scored_row = 1e-4
    export, k = search.export_estimate(best), len(search.folds)
    if exported == "the 5 fold models":
        assert search.finish_cost(best) == pytest.approx(export * k)
    else:
        scoring = search.holdout_rows() * 1e-4 * k
        assert search.finish_cost(best) == pytest.approx(scoring + search.final_refit_cost(best))
        assert search.finish_cost(best) < export * k + search.final_refit_cost(best)
