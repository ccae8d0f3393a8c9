"""AutoML weighs the cost of scoring: equal candidates go to the cheaper one, and the option
max_scoring_us bounds what a row may cost (decided by the size estimate, not by timing)."""

from __future__ import annotations

import json

import psycopg2
import pytest

from sqlml.automl import scoring_cost
from sqlml.automl.search import Trial
from tests.conftest import query, sql_error


def trial(n, loss, cost):
    t = Trial(n=n, algorithm="lightgbm", params={}, loss=loss)
    t.cost = cost
    return t


@pytest.mark.parametrize("losses_costs, winner", [
    ([(0.1000, 5.0), (0.1001, 1.0)], 2),   # within noise: the cheaper
    ([(0.1000, 5.0), (0.1100, 1.0)], 1),   # clearly worse: the better
    ([(0.1000, 1.0), (0.1001, 1.0)], 1),   # as cheap: the better
    ([(0.1000, 5.0), (0.1001, 2.0), (0.1002, 1.0)], 3),
])
def test_equal_candidates_go_to_the_cheaper(losses_costs, winner):
    trials = [trial(i + 1, loss, cost) for i, (loss, cost) in enumerate(losses_costs)]
    best = min(trials, key=lambda t: t.loss)
    assert scoring_cost.cheapest_within_noise(trials, best, lambda t: t.cost).n == winner


def test_cost_grows_with_trees_and_depth():
    assert scoring_cost.tree_us(1000, 4) < scoring_cost.tree_us(1000, 31)
    assert scoring_cost.tree_us(100, 31) < scoring_cost.tree_us(1000, 31)
    assert scoring_cost.tree_us(0, 1) == scoring_cost.CALL_US


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, """CREATE TABLE buyers AS SELECT i AS id, (i * 37 % 100)::float8 AS spend, (i % 7)::float8 AS visits,
                          ((i * 37 % 100) + (i % 7) * 9 > 75)::int AS bought FROM generate_series(1, 1500) AS i""")
    yield conn
    conn.close()


def train(conn, project, options):
    return query(conn, "SELECT algorithm FROM sqlml.train(%s, 'SELECT spend, visits, bought FROM buyers', 'bought', "
                       "algorithms => '{lightgbm,linear}', time_budget => '4 seconds', options => %s)",
                 (project, json.dumps(options)))[0][0]


def test_max_scoring_us_keeps_the_model_within_the_budget(db):
    # 100 LightGBM trees of 4 leaves or more are estimated at over 1 us a row, the linear model at the
    # call's 0.5 us: with the rounds fixed, LightGBM's configurations are skipped unfitted, whatever the clock
    assert train(db, "cheap", {"ensemble": False, "n_estimators": 100, "max_scoring_us": 1.0}) == "linear"
    fitted = query(db, "SELECT DISTINCT algorithm FROM sqlml.trials WHERE project = 'cheap'")
    assert fitted == [("linear",)]
    assert train(db, "any", {"ensemble": False, "n_estimators": 100, "max_scoring_us": 20}) in ("lightgbm", "linear")


@pytest.mark.parametrize("options, fragment", [
    ({"max_scoring_us": 0.1}, "no candidate scores a row within max_scoring_us 0.1"),
    ({"max_scoring_us": -1}, 'option "max_scoring_us" must be positive'),
    ({"max_scoring_us": "fast"}, 'option "max_scoring_us" must be float'),
])
def test_max_scoring_us_errors(db, options, fragment):
    err = sql_error(db, "SELECT * FROM sqlml.train('bad', 'SELECT spend, visits, bought FROM buyers', 'bought', "
                        "algorithms => '{lightgbm,linear}', time_budget => '3 seconds', options => %s)",
                    (json.dumps({"ensemble": False, **options}),))
    assert err.pgcode == "22023" and fragment in err.diag.message_primary
