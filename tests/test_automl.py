"""The AutoML core: validation choice, search spaces, ensemble selection, meta-features, and
in the database the warm start from similar past trainings."""

import json

import numpy as np
import pytest

from sqlml.automl import ensemble, meta
from sqlml.automl.budget import Budget
from sqlml.automl.estimators import SPECS
from sqlml.automl.search import Trial, n_folds, time_shares
from sqlml.automl.spec import Hyper
from tests.conftest import query, scalar


@pytest.mark.parametrize("rows, probe_seconds, budget, folds", [
    (500, 0.05, 30, 5),      # cheap fits: 5-fold
    (4366, 0.1, 30, 5),      # caravan: 371k cells, but a fit takes 0.1 s
    (3000, 0.15, 30, 3),     # 5 folds: 20 trials of 1.5 s; 3 folds: 33 trials of 0.9 s
    (3000, 0.2, 30, 1),      # 3 folds would leave 25 trials
    (50_000, 2.0, 60, 1),    # big: one holdout
    (50_000, 2.0, 600, 5),   # ... unless the budget is big
    (15, 0.01, 60, 1),       # too few rows to fold
])
def test_validation_follows_what_the_budget_affords(rows, probe_seconds, budget, folds):
    assert n_folds(rows, probe_seconds, budget) == folds


@pytest.mark.parametrize("hyper, value", [
    (Hyper("lr", 0.01, 0.3, log=True), 0.05),
    (Hyper("leaves", 4, 256, log=True, integer=True), 31),
    (Hyper("share", 0.5, 1.0), 0.8),
    (Hyper("kind", choices=("sqrt", 0.5, 1.0)), 0.5),
])
def test_hyperparameter_unit_round_trip(hyper, value):
    assert hyper.from_unit(hyper.to_unit(value)) == pytest.approx(value, rel=0.02)
    assert hyper.clip(hyper.from_unit(1.7)) == hyper.from_unit(1.0)


def test_every_portfolio_entry_lies_in_its_space():
    for spec in SPECS.values():
        names = {h.name: h for h in spec.space}
        for config in spec.portfolio:
            for k, v in config.items():
                h = names[k]
                assert (v in h.choices) if h.choices else (h.low <= v <= h.high), (spec.name, k, v)


def _trial(n, predictions, y):
    from sqlml.automl import metrics

    score = metrics.score("rmse", y, predictions)
    return Trial(n=n, algorithm=f"m{n}", params={}, score=score, loss=score, predictions=predictions)


def test_ensemble_selection_blends_complementary_models_and_not_redundant_ones():
    rng = np.random.default_rng(0)
    y = rng.normal(size=400)
    a = y + rng.normal(scale=0.5, size=400)  # independent errors: the average is better
    b = y + rng.normal(scale=0.5, size=400)
    chosen = ensemble.select([_trial(1, a, y), _trial(2, b, y)], y, "rmse", "regression")
    assert chosen is not None and {t.n for t, _ in chosen} == {1, 2}
    assert ensemble.select([_trial(1, a, y), _trial(2, a.copy(), y)], y, "rmse", "regression") is None


@pytest.mark.parametrize("trial_seconds, time_per_rank", [
    ([1.0, 1.0, 1.0], [1, 0.6, 0.36]),       # equal costs: trials shared like time
    ([0.05, 0.25, 1.1], [1, 0.6, 0.36]),     # OJ: linear, LightGBM, forests
    ([2.0, 0.02], [1, 0.6]),                 # the best is dear: still the most time, far fewer trials
])
def test_estimators_share_the_search_time_by_rank(trial_seconds, time_per_rank):
    odds = time_shares(trial_seconds)
    assert odds.sum() == pytest.approx(1.0)
    time = odds * np.asarray(trial_seconds)
    np.testing.assert_allclose(time / time[0], time_per_rank)
    assert time_shares([0.0, 0.5])[0] > 0.99  # no trial timed yet: counted as a millisecond, tried first


def _blend_case(seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=400)
    return y, [y + rng.normal(scale=0.5, size=400) for _ in range(3)]  # independent errors


@pytest.mark.parametrize("allowance, members", [
    (np.inf, 3),   # time for all three
    (2.5, 2),      # 1 s each: two fit, the third is never added
    (1.5, None),   # one member only: no ensemble
])
def test_ensemble_members_fit_the_time_left(allowance, members):
    y, preds = _blend_case()
    trials = [_trial(i + 1, p, y) for i, p in enumerate(preds)]
    chosen = ensemble.select(trials, y, "rmse", "regression", cost=lambda t: 1.0, allowance=allowance)
    assert (None if chosen is None else len(chosen)) == members


def test_every_algorithm_reaches_the_ensemble_library():
    y, (good, other, _) = _blend_case()
    near = [Trial(n=i, algorithm="linear", params={}, predictions=good + 0.01 * i) for i in range(20)]
    tree = Trial(n=99, algorithm="lightgbm", params={}, predictions=y + 1.5 * (other - y))  # worse, but independent
    from sqlml.automl import metrics

    for t in [*near, tree]:
        t.score = t.loss = metrics.score("rmse", y, t.predictions)
    pool = ensemble.library(sorted([*near, tree], key=lambda t: t.loss))
    assert tree in pool and len(pool) == ensemble.CANDIDATES + 1  # twenty linear trials would crowd it out
    chosen = ensemble.select([*near, tree], y, "rmse", "regression")
    assert chosen is not None and 99 in {t.n for t, _ in chosen}


def test_meta_features_place_similar_datasets_near_and_different_ones_far():
    import pandas as pd

    rng = np.random.default_rng(0)

    def frame(rows, cols, text=0):
        data = {f"x{i}": rng.normal(size=rows).astype(np.float32) for i in range(cols)}
        data.update({f"t{i}": rng.choice(["a", "b", "c"], rows).astype(object) for i in range(text)})
        return pd.DataFrame(data)

    binary = meta.meta_features(frame(5000, 20, 2), rng.integers(0, 2, 5000), "binary", ["t0", "t1"])
    similar = meta.meta_features(frame(4000, 22, 2), rng.integers(0, 2, 4000), "binary", ["t0", "t1"])
    regression = meta.meta_features(frame(300, 3), rng.normal(size=300), "regression", [])
    assert len(binary) == meta.DIM and all(0.0 <= v <= 1.0 for v in binary)
    near, far = np.linalg.norm(np.subtract(binary, similar)), np.linalg.norm(np.subtract(binary, regression))
    assert near < meta.MAX_DISTANCE < far
    assert meta.to_vector_literal([0.5, 0.25]) == "[0.5,0.25]"


def test_budget_child_never_outlives_its_parent():
    parent = Budget(0.5)
    assert parent.child(10).seconds <= 0.5
    assert Budget(0).expired()


def notices_of(conn):
    return [n.strip() for n in conn.notices]


def test_a_similar_training_starts_from_the_winners_of_the_nearest_one(db):
    db.notices.clear()
    query(db, "SELECT * FROM sqlml.train('cancer_a', 'SELECT * FROM breast_cancer WHERE id % 3 <> 0', 'diagnosis', "
              "time_budget => '4 seconds')")
    assert not any("warm start" in n for n in notices_of(db))
    vector = scalar(db, "SELECT meta_features::text FROM sqlml.models WHERE project = 'cancer_a'")
    assert len(json.loads(vector)) == meta.DIM
    assert scalar(db, "SELECT jsonb_array_length(warm_start) FROM sqlml.models WHERE project = 'cancer_a'") >= 1
    db.notices.clear()
    query(db, "SELECT * FROM sqlml.train('cancer_b', 'SELECT * FROM breast_cancer WHERE id % 3 <> 1', 'diagnosis', "
              "time_budget => '4 seconds')")
    assert any("warm start" in n for n in notices_of(db))
    # the first trials: the probe's fit when it is kept as LightGBM's first (one holdout), then the warm start
    trials = query(db, "SELECT origin, algorithm, params FROM sqlml.trials WHERE project = 'cancer_b' ORDER BY n")
    probe_kept = trials[0][0] == "portfolio" and trials[0][2] == SPECS["lightgbm"].portfolio[0]
    first = trials[1] if probe_kept else trials[0]
    borrowed = scalar(db, "SELECT warm_start -> 0 FROM sqlml.models WHERE project = 'cancer_a'")
    same_as_probe = probe_kept and borrowed["algorithm"] == "lightgbm" and trials[0][2] == {
        k: v for k, v in borrowed["params"].items() if k != "n_estimators"}
    if not same_as_probe:  # a borrowed configuration equal to the probe's (the learned first entry) is not refitted
        assert first[0] == "warm_start" and first[1] == borrowed["algorithm"]
    # a regression is never warm-started from a classification
    db.notices.clear()
    query(db, "SELECT * FROM sqlml.train('prog', 'diabetes', 'progression', time_budget => '3 seconds')")
    assert not any("warm start" in n for n in notices_of(db))


def test_trials_record_when_they_ended_within_the_budget(db):
    query(db, "SELECT * FROM sqlml.train('iris_t', 'iris', 'species', time_budget => '3 seconds')")
    rows = query(db, "SELECT elapsed, fit_seconds, origin FROM sqlml.trials WHERE project = 'iris_t' ORDER BY n")
    elapsed = [e for e, _, _ in rows]
    assert elapsed == sorted(elapsed)
    # every trial but the first (which runs whatever the clock says) started within the budget; how
    # far past it a trial may run depends on the machine's load, not on the search
    started = [e - f for e, f, _ in rows[1:]]
    assert all(0 <= s <= 3.0 + 1e-3 for s in started), started
    assert {o for _, _, o in rows} <= {"portfolio", "search", "warm_start"}


def test_same_data_gives_the_same_fingerprint_even_when_parallel_scans_are_cheap(db):
    query(db, "CREATE TABLE IF NOT EXISTS wide AS SELECT i AS id, (i * 7919 % 1000)::float8 AS x, "
              "(i % 3 = 0) AS y FROM generate_series(1, 60000) i")
    query(db, "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; "
              "SET max_parallel_workers_per_gather = 2")
    try:
        for _ in range(2):
            query(db, "SELECT * FROM sqlml.train('repeat', 'wide', 'y', algorithms => '{linear}', "
                      """time_budget => '3 seconds', options => '{"force": true}')""")  # a new version each time
    finally:
        query(db, "RESET ALL")
    # scores may differ: how much a search does within a wall-clock budget depends on the clock
    prints = query(db, "SELECT data_fingerprint, metrics -> 'holdout_rows' FROM sqlml.models "
                       "WHERE project = 'repeat' ORDER BY version")
    assert prints[0] == prints[1]
