"""Forecasting through SQL against a real PostgreSQL: train with series and regressors, forecast
with horizon / level / relation, the gate on the same backtest windows, evaluate on new actuals,
errors with their SQLSTATEs, and project privileges.

Every training passes an explicit candidate list (``algorithms``) and, for the global model, a
fixed number of boosting rounds: nothing here depends on what a wall-clock budget buys.
"""

from __future__ import annotations

import json

import psycopg2
import pytest

from tests.conftest import niceness, query, scalar, sql_error, wait_until
from tests.roles import create_roles, drop_roles

BUDGET = "600 seconds"  # a ceiling never reached: the work is fixed by the options
OPTS = {"time_column": "day", "series": ["store", "item"], "horizon": 7, "n_estimators": 30}


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    # 2 stores x 3 items, daily for 120 days; item 'C' of store 2 is new (20 days); a promotion
    # lifts sales by half; days 40..42 of store 1 item A are missing and day 50 has a NULL
    query(conn, """
        CREATE TABLE daily_sales AS
        SELECT s AS store, i AS item, date '2024-01-01' + d AS day,
               CASE WHEN s = 1 AND i = 'A' AND d = 50 THEN NULL ELSE
               round(((10 * s + ascii(i) - 60) * (1 + 0.3 * (extract(isodow FROM date '2024-01-01' + d) >= 6)::int)
                      * (1 + 0.5 * ((d * 7 + s) % 9 = 0)::int) + (d * 13 % 5))::numeric, 2)::float8 END AS units,
               ((d * 7 + s) % 9 = 0) AS promo
        FROM generate_series(1, 2) s, unnest(ARRAY['A', 'B', 'C']) i, generate_series(0, 119) d
        WHERE NOT (s = 1 AND i = 'A' AND d BETWEEN 40 AND 42) AND NOT (s = 2 AND i = 'C' AND d < 100)""")
    query(conn, """
        CREATE TABLE future_promos AS
        SELECT s AS store, i AS item, date '2024-01-01' + d AS day, ((d * 7 + s) % 9 = 0) AS promo
        FROM generate_series(1, 2) s, unnest(ARRAY['A', 'B', 'C']) i, generate_series(120, 126) d""")
    query(conn, """
        CREATE TABLE monthly AS
        SELECT (date '2015-01-31' + make_interval(months => m))::date AS month_end,
               100 + m + 20 * sin(m * pi() / 6) AS value
        FROM generate_series(0, 71) m""")
    yield conn
    conn.close()


def train(conn, project, relation, target, options, algorithms=None):
    rows = query(conn, "SELECT * FROM sqlml.train(%s, %s, %s, task => 'forecast', algorithms => %s, "
                       f"time_budget => '{BUDGET}', options => %s::jsonb)",
                 [project, relation, target, algorithms, json.dumps(options)])
    return dict(zip(("project", "version", "algorithm", "metric", "score", "deployed"), rows[0]))


def forecast(conn, sql, params=None):
    return [dict(zip(("series", "ts", "forecast", "lower", "upper"), r)) for r in query(conn, sql, params)]


def test_train_with_series_and_regressors_then_forecast(db):
    r = train(db, "sales", "daily_sales", "units", OPTS, ["ets", "theta", "lightgbm"])
    assert (r["version"], r["metric"], r["deployed"]) == (1, "mase", True)
    assert r["score"] > 0
    model = query(db, "SELECT task, forecaster -> 'regressors', forecaster -> 'frequency', feature_schema ->> 'task', "
                      "octet_length(onnx) > 0, opset > 0, hyperparameters -> 'weights' ? 'lightgbm' "
                      "FROM sqlml.models WHERE project = 'sales'")[0]
    assert model[:4] == ("forecast", ["promo"], "day", "forecast")
    assert model[4] == model[5] == model[6]  # an ONNX graph exactly when the global member is in the forecaster
    leaderboard = {a for (a,) in query(db, "SELECT algorithm FROM sqlml.leaderboard WHERE project = 'sales'")}
    pairs = leaderboard & {"ets+theta", "ets+lightgbm", "theta+lightgbm"}  # the best two, averaged
    assert leaderboard == {"ets", "theta", "lightgbm"} | pairs and len(pairs) == 1
    assert r["algorithm"] in leaderboard

    rows = forecast(db, "SELECT * FROM sqlml.forecast('sales', relation => 'future_promos')")
    assert len(rows) == 6 * 7
    keys = {json.dumps(r["series"], sort_keys=True) for r in rows}
    assert json.dumps({"item": "C", "store": 2}, sort_keys=True) in keys   # numbers stay numbers in the key
    first = [r for r in rows if r["series"] == {"store": 1, "item": "B"}]
    assert [str(r["ts"].date()) for r in first] == [f"2024-04-{d:02d}" for d in range(30, 31)] + \
        [f"2024-05-{d:02d}" for d in range(1, 7)]
    assert all(r["lower"] <= r["forecast"] <= r["upper"] for r in rows)


def test_horizon_and_level(db):
    sql = "SELECT * FROM sqlml.forecast('sales', horizon => 3, level => %s, relation => 'future_promos')"
    rows, wide = forecast(db, sql, [0.8]), forecast(db, sql, [0.95])
    assert len(rows) == 6 * 3
    for a, b in zip(rows, wide):
        assert a["forecast"] == pytest.approx(b["forecast"])
        assert b["upper"] - b["lower"] > a["upper"] - a["lower"]


def test_python_client_forecasts(db, dsn):
    from sqlml.client import Client

    with Client.connect(dsn) as ml:
        rows = ml.forecast("sales", horizon=2, relation="future_promos", level=0.8)
    assert len(rows) == 12 and set(rows[0]) == {"series", "ts", "forecast", "lower", "upper"}
    assert {r["series"]["item"] for r in rows} == {"A", "B", "C"}


def test_single_series_monthly_without_regressors(db):
    r = train(db, "monthly", "monthly", "value", {"time_column": "month_end", "horizon": 12},
              ["seasonal_naive", "ets", "theta"])
    assert r["deployed"]
    rows = forecast(db, "SELECT * FROM sqlml.forecast('monthly')")
    assert len(rows) == 12 and all(r["series"] == {} for r in rows)
    assert str(rows[0]["ts"].date()) == "2021-01-31" and str(rows[1]["ts"].date()) == "2021-02-28"  # month ends
    assert scalar(db, "SELECT forecaster ->> 'frequency' FROM sqlml.models WHERE project = 'monthly'") == "month"


def test_a_forecaster_without_a_global_member_stores_no_graph(db, dsn):
    from sqlml.client import Client
    from sqlml.errors import SqlmlError

    stored = query(db, "SELECT octet_length(onnx), opset, sha256 = encode(sha256(''::bytea), 'hex'), "
                       "parity ->> 'graph' FROM sqlml.models WHERE project = 'monthly'")[0]
    assert stored[:3] == (0, 0, True) and stored[3].startswith("none")
    with Client.connect(dsn) as ml:
        e = pytest.raises(SqlmlError, ml.export, "monthly", "/nonexistent").value
    assert e.sqlstate == "0A000" and "forecast project" in str(e)
    # an empty graph under a forecaster that has a global member is a corrupted row, not a zero forecast
    query(db, "CREATE TABLE corrupt_src AS SELECT * FROM monthly")
    train(db, "corrupt", "corrupt_src", "value", {"time_column": "month_end", "horizon": 6, "n_estimators": 20},
          ["lightgbm"])
    query(db, "UPDATE sqlml.models SET onnx = '', sha256 = encode(sha256(''::bytea), 'hex') WHERE project = 'corrupt'")
    e = sql_error(db, "SELECT * FROM sqlml.forecast('corrupt')")
    assert e.pgcode == "XX001" and "no ONNX graph" in e.diag.message_primary


def test_gate_compares_on_the_same_windows(db):
    r = train(db, "sales", "daily_sales", "units", OPTS, ["seasonal_naive"])
    assert r["version"] == 2 and not r["deployed"]   # seasonal naive alone does not beat the ensemble
    reason = scalar(db, "SELECT reason FROM sqlml.deployments WHERE project = 'sales' ORDER BY id DESC LIMIT 1")
    assert reason["why"] == "first model of the project"
    why = scalar(db, "SELECT detail FROM sqlml.audit_log WHERE project = 'sales' AND action = 'train' "
                     "ORDER BY id DESC LIMIT 1")
    assert why["algorithm"] == "seasonal_naive"
    assert scalar(db, "SELECT version FROM sqlml.deployed WHERE project = 'sales'") == 1
    assert query(db, "SELECT version FROM sqlml.deploy('sales', version => 2)") == [(2,)]
    assert query(db, "SELECT version FROM sqlml.deploy('sales', 'best_score')") == [(1,)]   # the lower MASE


def test_evaluate_against_new_actuals(db):
    query(db, """CREATE TABLE actuals AS
                 SELECT f.store, f.item, f.day, f.promo, 20.0 + f.store AS units FROM future_promos f""")
    rows = query(db, "SELECT metric, value, holdout_value, rows FROM sqlml.evaluate('sales', 'actuals')")
    by = {m: (v, h, n) for m, v, h, n in rows}
    assert set(by) == {"mase", "mae", "rmse", "smape", "coverage_90"}
    assert by["mase"][0] > 0 and by["mase"][1] == pytest.approx(
        scalar(db, "SELECT score FROM sqlml.models WHERE project = 'sales' AND version = 1"))
    assert by["mae"][2] == 42 and by["mae"][1] is None
    assert 0 <= by["coverage_90"][0] <= 1
    assert scalar(db, "SELECT count(*) FROM sqlml.evaluations WHERE project = 'sales'") == 1
    # the first 3 days have arrived: only their regressors are needed
    partial = query(db, "SELECT rows FROM sqlml.evaluate('sales', %s)",
                    ["SELECT * FROM actuals WHERE day < '2024-05-03'"])
    assert {r for (r,) in partial} == {18}


def test_drift_of_target_regressors_and_errors(db):
    same = query(db, "SELECT feature, what, psi, drift, rows FROM sqlml.monitor('sales', 'daily_sales')")
    assert {(f, w) for f, w, *_ in same} == {("units", "feature"), ("promo", "feature")}  # no forecast step in it
    assert all(psi < 0.1 and drift == "none" for _, _, psi, drift, _ in same)
    # actuals that moved: every unit sells 20 + store, far from each series' scale at training
    moved = {f: (psi, drift, rows) for f, _, psi, drift, rows in
             query(db, "SELECT feature, what, psi, drift, rows FROM sqlml.monitor('sales', 'actuals')")}
    assert set(moved) == {"units", "promo", "prediction"} and moved["prediction"][2] == 42
    assert moved["units"][1] == "major" and moved["prediction"][1] == "major"
    assert scalar(db, "SELECT count(*) FROM sqlml.drift WHERE project = 'sales'") == 5


def test_retrain_if_drifted_retrains_a_forecaster_with_its_options(db):
    """No drift: nothing happens. Drift: a new version trained with the deployed one's time column,
    series, horizon and regressors (its other columns left out), deployed only through the gate."""
    query(db, "CREATE TABLE sales_wide AS SELECT *, 1 AS batch FROM daily_sales")
    none = query(db, "SELECT drifted, version, deployed FROM sqlml.retrain_if_drifted('sales', 'daily_sales', "
                     "time_budget => '600 seconds')")
    assert none == [(False, 1, False)]
    moved = query(db, "SELECT drifted, worst, version, decision FROM sqlml.retrain_if_drifted('sales', 'actuals', "
                      "'sales_wide', time_budget => '600 seconds')")
    (drifted, worst, version, decision), = moved
    assert drifted and worst in ("units (feature)", "prediction") and version == 3
    assert f"version {version}" in decision
    new = query(db, "SELECT forecaster -> 'regressors', feature_schema -> 'horizon', feature_schema ->> 'time_column', "
                    "hyperparameters -> 'n_estimators', relation FROM sqlml.models WHERE project = 'sales' "
                    "AND version = 3")[0]
    assert new == (["promo"], 7, "day", 30, "sales_wide")


def test_model_card_plots_history_forecast_and_interval(db, dsn, tmp_path):
    import subprocess
    import sys

    diag = scalar(db, "SELECT diagnostics FROM sqlml.models WHERE project = 'sales' AND version = 1")
    assert len(diag["series"]) == 3 and diag["level"] == 0.9
    first = diag["series"][0]
    assert len(first["ts"]) == len(first["forecast"]) == len(first["lower"]) == len(first["actual"]) == 7
    assert all(lo <= f <= hi for lo, f, hi in zip(first["lower"], first["forecast"], first["upper"]))
    out = tmp_path / "sales.html"
    done = subprocess.run([sys.executable, "-m", "sqlml.cli", "report", "sales", "--out", str(out), "--dsn", dsn],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert 'alt="History, forecast and interval"' in page and "Forecasts on the backtest" in page
    assert "coverage_90" in page   # the evaluation on new actuals


def test_predict_on_a_forecast_project_says_to_forecast(db):
    e = sql_error(db, "SELECT sqlml.predict('sales', '{}'::jsonb)")
    assert e.pgcode == "0A000" and "sqlml.forecast" in e.diag.message_hint


BAD_TRAIN = [
    # options, algorithms, relation, target, SQLSTATE, message fragment
    ({"series": ["store"], "horizon": 7}, None, "daily_sales", "units", "22023", "needs options.time_column"),
    ({"time_column": "day"}, None, "daily_sales", "units", "22023", "needs options.horizon"),
    ({"time_column": "day", "horizon": 0}, None, "daily_sales", "units", "22023", "horizon must be a positive"),
    ({"time_column": "nope", "horizon": 7}, None, "daily_sales", "units", "42703", 'time column "nope" not found'),
    ({"time_column": "store", "horizon": 7}, None, "daily_sales", "units", "42804",
     "time column \"store\" has type int4"),
    ({"time_column": "day", "series": ["store"], "horizon": 7}, None, "daily_sales", "item", "42804",
     "needs a numeric target"),
    ({"time_column": "day", "horizon": 7}, None, "daily_sales", "units", "42804",
     'column "item" (text) would be a regressor'),
    ({"time_column": "day", "horizon": 7, "colour": 1}, None, "daily_sales", "units", "22023",
     'unknown option "colour"'),
    ({"time_column": "day", "series": ["store", "item"], "horizon": 7}, ["prophet"], "daily_sales", "units", "22023",
     'unknown forecasting algorithm "prophet"'),
    ({"time_column": "day", "series": ["store", "item"], "horizon": 500}, ["ets"], "daily_sales", "units", "22000",
     "no series is long enough"),
    ({"time_column": "day", "horizon": 7}, ["ets"], "SELECT day, CASE WHEN day = date '2024-01-05' THEN 'Infinity' "
     "ELSE units END AS units FROM daily_sales WHERE store = 1 AND item = 'B'", "units", "22023",
     'column "units" is Infinity in 1 row'),
    ({"time_column": "day", "horizon": 7}, None, "daily_sales; DROP TABLE daily_sales", "units", "42601", "statements"),
]


@pytest.mark.parametrize("options,algorithms,relation,target,sqlstate,fragment", BAD_TRAIN)
def test_bad_training_input(db, options, algorithms, relation, target, sqlstate, fragment):
    e = sql_error(db, "SELECT * FROM sqlml.train('bad', %s, %s, task => 'forecast', algorithms => %s, "
                      "options => %s::jsonb)",
                  [relation, target, algorithms, json.dumps(options)])
    assert (e.pgcode, fragment) == (sqlstate, fragment) and fragment in e.diag.message_primary
    assert scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'bad'") == 0


BAD_FORECAST = [
    ("SELECT * FROM sqlml.forecast('sales', horizon => 0, relation => 'future_promos')", "22023",
     "horizon must be a positive"),
    ("SELECT * FROM sqlml.forecast('sales', horizon => 8, relation => 'future_promos')", "22023", "longer than 7"),
    ("SELECT * FROM sqlml.forecast('sales', level => 1.5, relation => 'future_promos')", "22023",
     "level 1.5 is out of range"),
    ("SELECT * FROM sqlml.forecast('sales')", "22023", "uses regressors (promo): pass their future values"),
    ("SELECT * FROM sqlml.forecast('sales', relation => 'SELECT store, item, day FROM future_promos')", "42703",
     'regressor "promo" not found'),
    ("SELECT * FROM sqlml.forecast('sales', relation => 'SELECT * FROM future_promos WHERE store = 1')", "22000",
     "lacks the regressors of 21 series-steps"),
    ("SELECT * FROM sqlml.forecast('nosuch')", "42704", 'project "nosuch" does not exist'),
    ("SELECT * FROM sqlml.forecast('sales@9', relation => 'future_promos')", "42704", "has no version 9"),
    ("SELECT * FROM sqlml.monitor('sales', 'future_promos')", "42703", 'target column "units" not found'),
]


@pytest.mark.parametrize("sql,sqlstate,fragment", BAD_FORECAST)
def test_bad_forecast_input(db, sql, sqlstate, fragment):
    e = sql_error(db, sql)
    assert (e.pgcode, fragment) == (sqlstate, fragment) and fragment in e.diag.message_primary


def test_privileges(db, dsn):
    roles = create_roles(db, dsn)
    try:
        query(db, f'GRANT SELECT ON daily_sales, future_promos TO "{roles["dev"]}", "{roles["usr"]}"')
        usr = roles.connect("usr")
        e = sql_error(usr, "SELECT * FROM sqlml.forecast('sales', relation => 'future_promos')")
        assert e.pgcode == "42501"
        query(db, f"""SELECT sqlml.grant('sales', '{roles["usr"]}', 'predict')""")
        assert len(query(usr, "SELECT * FROM sqlml.forecast('sales', relation => 'future_promos')")) == 42
        e = sql_error(usr, "SELECT * FROM sqlml.train('sales', 'daily_sales', 'units', task => 'forecast', "
                           "options => %s::jsonb)", [json.dumps(OPTS)])
        assert e.pgcode == "42501"
        dev = roles.connect("dev")
        r = query(dev, "SELECT project, version, deployed FROM sqlml.train('dev_sales', 'daily_sales', 'units', "
                       "task => 'forecast', algorithms => '{theta}', options => %s::jsonb)", [json.dumps(OPTS)])
        assert r == [("dev_sales", 1, True)]
        assert scalar(dev, "SELECT state FROM sqlml.jobs WHERE project = 'dev_sales' AND kind = 'train'") == "succeeded"
    finally:
        drop_roles(db, roles)


def test_upgrade_from_0_1_0_brings_forecasting(cluster, dsn):
    """A 0.1.0 database updated to this version accepts forecast projects and has the same
    forecasting schema as a fresh install."""
    old = psycopg2.connect(cluster.create_database("fc_upgrade", extension=False))
    old.autocommit = True
    fresh = psycopg2.connect(dsn)
    fresh.autocommit = True
    try:
        query(old, "CREATE EXTENSION sqlml VERSION '0.1.0' CASCADE")
        query(old, "ALTER EXTENSION sqlml UPDATE")
        for q in ["SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                  "WHERE conrelid = 'sqlml.projects'::regclass ORDER BY 1",
                  "SELECT attnum, attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                  "WHERE attrelid = 'sqlml.models'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY 1",
                  "SELECT p.oid::regprocedure::text, pg_get_function_result(p.oid), proacl::text FROM pg_proc p "
                  "WHERE pronamespace = 'sqlml'::regnamespace AND proname = 'forecast'"]:
            assert query(old, q) == query(fresh, q)
        query(old, "CREATE TABLE s AS SELECT date '2024-01-01' + d AS day, (d % 7)::float8 AS y "
                   "FROM generate_series(0, 59) d")
        r = query(old, "SELECT version, deployed FROM sqlml.train('up', 's', 'y', task => 'forecast', "
                       "algorithms => '{seasonal_naive}', options => '{\"time_column\": \"day\", \"horizon\": 7}')")
        assert r == [(1, True)]
        assert [round(v) for (v,) in query(old, "SELECT forecast FROM sqlml.forecast('up')")] == [4, 5, 6, 0, 1, 2, 3]
    finally:
        old.close()
        fresh.close()


def test_forecast_training_yields_to_interactive_work_and_stops_on_cancel(db, dsn):
    """Like a tabular training: while another backend runs a statement, the forecaster's fits run
    niced on a helper thread (the backend's own thread keeps its priority); sqlml.cancel stops it
    within a boosting round and registers nothing."""
    import threading

    query(db, """CREATE TABLE many_series AS SELECT s, date '2020-01-01' + d AS day,
                 (s % 10 + 3 * sin(d / 7.0) + (d * s % 11) / 5.0)::float8 AS y
                 FROM generate_series(1, 200) s, generate_series(0, 399) d""")
    opts = {"time_column": "day", "series": ["s"], "horizon": 14, "n_estimators": 10000}
    training = psycopg2.connect(dsn)
    training.autocommit = True
    outcome = {}

    def run():
        try:
            query(training, "SELECT * FROM sqlml.train('long_fc', 'many_series', 'y', task => 'forecast', "
                            "algorithms => '{lightgbm}', time_budget => '1 hour', options => %s::jsonb)",
                  [json.dumps(opts)])
        except psycopg2.Error as e:
            outcome["error"] = e

    busy = psycopg2.connect(dsn)
    busy.autocommit = True
    burner = threading.Thread(target=lambda: pytest.raises(
        psycopg2.Error, query, busy, "DO $$BEGIN FOR i IN 1..2000000000 LOOP END LOOP; END$$"), daemon=True)
    trainer = threading.Thread(target=run, daemon=True)
    pid = training.get_backend_pid()
    try:
        burner.start()
        trainer.start()
        wait_until(lambda: 10 in niceness(pid).values(), "a fit niced while a statement runs beside it", 120)
        assert niceness(pid)[pid] == 0
    finally:
        query(db, "SELECT pg_cancel_backend(%s)", (busy.get_backend_pid(),))
        burner.join(60)
        busy.close()
    job = scalar(db, "SELECT job_id FROM sqlml.jobs WHERE project = 'long_fc' AND state = 'running'")
    assert scalar(db, "SELECT sqlml.cancel(%s)", (job,)) is True
    trainer.join(120)
    assert not trainer.is_alive()
    e = outcome["error"]
    assert e.pgcode == "57014" and "cancelled by postgres" in e.diag.message_primary
    assert scalar(db, "SELECT state FROM sqlml.jobs WHERE job_id = %s", (job,)) == "cancelled"
    assert scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'long_fc'") == 0
    assert scalar(training, "SELECT 1") == 1  # the session goes on
    training.close()
