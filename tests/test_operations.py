"""Operations against the real server: sqlml.profile, the profile at training (NOTICEs, refusal,
stored report), evaluation on new labels, drift monitoring, prediction counters."""

from __future__ import annotations

import json

import psycopg2
import pytest

from sqlml import samples
from tests.conftest import query, scalar, sql_error

BUDGET = "3 seconds"


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.autocommit = True
    query(conn, """
        CREATE TABLE customers AS
        SELECT i AS id,
               'user' || i || '@example.com' AS email,
               '+47 ' || (90000000 + i * 7)::text AS phone,
               20 + i % 50 AS age,
               (i * 7919 % 1000)::float8 AS income,
               (ARRAY['basic', 'plus', 'pro'])[i % 3 + 1] AS plan,
               'EU'::text AS region,
               (i % 7 = 0 OR (i * 7919 % 1000) < 100) AS churned,
               CASE WHEN (i % 7 = 0 OR (i * 7919 % 1000) < 100) THEN 'gone' ELSE 'stays' END AS outcome
        FROM generate_series(1, 600) AS i""")
    yield conn
    conn.close()


def train(conn, project, relation, target, notices=None, **kw):
    args = "".join(f", {k} => %({k})s" for k in kw)
    del conn.notices[:]
    rows = query(conn, f"SELECT * FROM sqlml.train(%(p)s, %(r)s, %(t)s, time_budget => '{BUDGET}'{args})",
                 {"p": project, "r": relation, "t": target, **kw})
    if notices is not None:
        notices.extend(conn.notices)
    return dict(zip(("project", "version", "algorithm", "metric", "score", "deployed"), rows[0]))


def test_profile_reports_types_statistics_and_warnings(db):
    rows = query(db, "SELECT * FROM sqlml.profile('customers', 'churned')")
    by = {r[0]: dict(zip(("column", "type", "kind", "null_share", "distinct", "min", "max", "mean", "warnings"), r))
          for r in rows}
    assert list(by) == ["id", "email", "phone", "age", "income", "plan", "region", "churned", "outcome"]
    assert by["age"]["type"] == "int4" and by["age"]["min"] == "20.0" and by["age"]["max"] == "69.0"
    assert by["age"]["distinct"] == 50 and by["age"]["null_share"] == 0
    assert by["churned"]["kind"] == "boolean" and 0 < by["churned"]["mean"] < 1

    def codes(col):
        return {w.split(":")[0] for w in by[col]["warnings"]}

    assert codes("id") == {"id_like"}
    assert codes("email") == {"id_like", "personal_data"} and "e-mail" in " ".join(by["email"]["warnings"])
    assert "personal_data" in codes("phone")
    assert codes("region") == {"constant"}
    assert codes("outcome") == {"target_copy"}
    assert codes("income") == set() and codes("plan") == set()
    plain = {r[0]: r[8] for r in query(db, "SELECT * FROM sqlml.profile('SELECT age, outcome FROM customers')")}
    assert plain == {"age": [], "outcome": []}  # without a target: no target checks


def test_profile_errors(db):
    err = sql_error(db, "SELECT * FROM sqlml.profile('customers', 'nope')")
    assert err.pgcode == "42703" and "nope" in err.pgerror
    err = sql_error(db, "SELECT * FROM sqlml.profile('no_such_table')")
    assert err.pgcode == "42P01"


def test_training_refuses_a_copy_of_the_target(db):
    err = sql_error(db, f"SELECT * FROM sqlml.train('churn', 'customers', 'churned', time_budget => '{BUDGET}')")
    assert err.pgcode == "22000"
    assert 'column "outcome" is a copy of the target "churned"' in err.pgerror
    assert "sqlml.profile" in err.diag.message_hint
    assert scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'churn'") == 0


def test_training_notices_and_stores_what_operations_need(db):
    notices = []
    out = train(db, "churn", "customers", "churned", notices, exclude=["outcome"])
    text = "".join(notices)
    assert 'data quality: column "region": a single value' in text
    assert 'data quality: column "phone": likely personal data' in text
    profile, baseline, importance, diag = query(
        db, "SELECT profile, baseline, importance, diagnostics FROM sqlml.models "
            "WHERE project = 'churn' AND version = %s",
        (out["version"],))[0]
    assert profile["rows"] == 600 and profile["target"] == "churned" and profile["task"] == "binary"
    assert {c["name"] for c in profile["columns"]} >= {"age", "income", "churned"}
    assert set(baseline["features"]) == {"age", "income", "plan", "region"}  # id, e-mail, phone: row keys, id-like text
    assert baseline["prediction"]["type"] == "bins" and abs(sum(baseline["prediction"]["freq"]) - 1) < 1e-9
    assert importance["method"] == "mean |contribution| on the holdout" and importance["rows"] > 0
    assert {f["feature"] for f in importance["features"]} == set(baseline["features"])
    assert all(f["importance"] >= 0 for f in importance["features"])
    assert diag["roc"]["auc"] == pytest.approx(scalar(
        db, "SELECT (metrics->'holdout'->>'roc_auc')::float8 FROM sqlml.models WHERE project = 'churn'"), abs=1e-4)
    assert sum(map(sum, diag["confusion"]["matrix"])) == diag["rows"]


def test_evaluate_on_new_labels_is_a_time_series(db):
    if not scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'bc'"):
        train(db, "bc", "breast_cancer", "diagnosis")
    rows = query(db, "SELECT * FROM sqlml.evaluate('bc', 'SELECT * FROM breast_cancer WHERE id % 2 = 0')")
    got = {r[2]: r for r in rows}
    assert set(got) == {"roc_auc", "log_loss", "accuracy", "f1"}
    project, version, _, value, holdout, n, at = got["accuracy"]
    assert project == "bc" and version == 1 and 0.8 < value <= 1 and 0 < holdout <= 1 and n == 284
    # labels arrive with NULLs and a class the model never saw: those rows are skipped, and said so
    query(db, "CREATE TABLE bc_late AS SELECT * FROM breast_cancer WHERE id <= 100")
    query(db, "UPDATE bc_late SET diagnosis = NULL WHERE id <= 10")
    query(db, "UPDATE bc_late SET diagnosis = 'unsure' WHERE id BETWEEN 11 AND 15")
    del db.notices[:]
    again = query(db, "SELECT metric, rows FROM sqlml.evaluate('bc', 'bc_late', 1)")
    assert {n for _, n in again} == {85} and any("never saw" in m for m in db.notices)
    series = query(db, "SELECT version, rows, skipped, metrics ? 'roc_auc', relation FROM sqlml.evaluations "
                       "WHERE project = 'bc' ORDER BY id")
    assert [(v, n) for v, n, *_ in series] == [(1, 284), (1, 85)]
    assert series[1][2] == {"null_label": 10, "unseen_label": 5} and series[1][3] is True and series[1][4] == "bc_late"
    assert sql_error(db, "SELECT * FROM sqlml.evaluate('bc', 'SELECT * FROM bc_late WHERE id <= 10')").pgcode == "22000"
    assert sql_error(db, "SELECT * FROM sqlml.evaluate('bc', 'iris')").pgcode == "42703"


def test_monitor_flags_drift_per_feature_and_in_predictions(db):
    if not scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'diab'"):
        train(db, "diab", "diabetes", "progression")
    same = query(db, "SELECT feature, what, psi, drift, rows FROM sqlml.monitor('diab', 'diabetes')")
    assert {r[0] for r in same} == {"age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "prediction"}
    assert all(r[3] == "none" and r[4] == 442 for r in same)
    assert all(r[2] < 1e-9 for r in same if r[1] == "feature")  # the training data itself: nothing moved
    query(db, "CREATE VIEW diabetes_later AS SELECT id, age, sex, bmi * 1.3 AS bmi, bp, s1, s2, s3, s4, s5, "
              "CASE WHEN id % 2 = 0 THEN NULL ELSE s6 END AS s6, progression FROM diabetes")
    shifted = {r[0]: r for r in query(db,
                                      "SELECT feature, what, psi, drift FROM sqlml.monitor('diab', 'diabetes_later')")}
    assert shifted["bmi"][3] == "major" and shifted["s6"][3] == "major" and shifted["age"][3] == "none"
    assert shifted["prediction"][1] == "prediction" and shifted["prediction"][2] > 0.1
    stored = query(db, "SELECT count(DISTINCT measured_at), count(*), max(psi) FILTER (WHERE feature = 'bmi') "
                       "FROM sqlml.drift WHERE project = 'diab'")[0]
    assert stored[0] == 2 and stored[1] == 22 and stored[2] == pytest.approx(shifted["bmi"][2])
    detail = scalar(db, "SELECT detail FROM sqlml.drift WHERE project = 'diab' AND feature = 'bmi' "
                        "ORDER BY id DESC LIMIT 1")
    assert abs(sum(detail["actual"]) - 1) < 1e-9 and detail["major"] == 0.25
    err = sql_error(db, "SELECT * FROM sqlml.monitor('diab', 'diabetes', moderate => 0.5, major => 0.1)")
    assert err.pgcode == "22023"


def test_prediction_counts_are_immediate_and_survive_the_backend(db, dsn):
    if not scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'diab'"):
        train(db, "diab", "diabetes", "progression")
    before = dict(query(db, "SELECT * FROM sqlml.prediction_counts()")).get("diab", 0)
    other = psycopg2.connect(dsn)
    other.autocommit = True
    pid = scalar(other, "SELECT pg_backend_pid()")
    # scoring in a read-only transaction still counts, and is not rolled back
    query(other, "BEGIN READ ONLY")
    query(other, "SELECT sqlml.predict('diab', d) FROM diabetes d WHERE id <= 150")
    query(other, "ROLLBACK")
    query(other, "SELECT count(*) FROM sqlml.predict_batch('diab', 'diabetes', 'id')")
    assert dict(query(db, "SELECT * FROM sqlml.prediction_counts()"))["diab"] - before == 150 + 442
    other.close()
    for _ in range(100):  # the backend exits asynchronously after the client closes
        if not scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)):
            break
        query(db, "SELECT pg_sleep(0.05)")
    for _ in range(2):  # the first read folds the exited backend's file into the archive; nothing lost or doubled
        assert dict(query(db, "SELECT * FROM sqlml.prediction_counts()"))["diab"] - before == 150 + 442


def test_prediction_counts_include_parallel_workers(db):
    if not scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'diab'"):
        train(db, "diab", "diabetes", "progression")
    query(db, "CREATE TABLE IF NOT EXISTS diabetes_big AS SELECT d.* FROM diabetes d, generate_series(1, 20)")
    query(db, "ANALYZE diabetes_big")
    before = dict(query(db, "SELECT * FROM sqlml.prediction_counts()")).get("diab", 0)
    query(db, "BEGIN")
    for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
                    "max_parallel_workers_per_gather = 2"):
        query(db, f"SET LOCAL {setting}")
    plan = "\n".join(r[0] for r in query(db, "EXPLAIN (ANALYZE, COSTS OFF) SELECT sum(sqlml.predict('diab', d)) "
                                              "FROM diabetes_big d"))
    query(db, "COMMIT")
    assert "Workers Launched: 2" in plan or "Workers Launched: 1" in plan, plan
    # every row counted once, whichever process scored it (the workers have exited: their files are folded)
    assert dict(query(db, "SELECT * FROM sqlml.prediction_counts()"))["diab"] - before == 442 * 20


def test_job_counts_list_every_state(db):
    counts = dict(query(db, "SELECT * FROM sqlml.job_counts()"))
    assert set(counts) >= {"queued", "running", "succeeded", "failed", "cancelled"}
    if scalar(db, "SELECT to_regclass('sqlml.jobs') IS NOT NULL"):
        assert sum(counts.values()) == scalar(db, "SELECT count(*) FROM sqlml.jobs")
    else:
        assert sum(counts.values()) == 0


def test_store_is_json(db):
    # every stored report is valid jsonb (no NaN): round-trips through the client's JSON parser
    for col in ("profile", "baseline", "importance", "diagnostics"):
        for (value,) in query(db, f"SELECT {col}::text FROM sqlml.models WHERE {col} IS NOT NULL"):
            json.loads(value)
