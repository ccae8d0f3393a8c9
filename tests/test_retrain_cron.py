"""Retraining when drift is flagged, scheduled for real with pg_cron, deploying only through the gate.

pg_cron (preloaded by the test cluster) keeps its job table in the database named by
``cron.database_name`` ('sqlml'); ``cron.schedule_in_database`` runs a job in another database.
pg_cron 1.4 schedules by the minute, so the scheduled run starts at the next minute boundary:
this test waits up to a minute for it (bounded), hence ``slow``.
"""

from __future__ import annotations

import psycopg2
import pytest

from tests.conftest import query, scalar, wait_until

BUDGET = "3 seconds"
WAIT_SECONDS = 240  # next minute boundary (<= 60 s) + the retraining itself (longer on a busy machine)


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, """
        CREATE TABLE sales AS
        SELECT i AS id, (i * 37 % 100)::float8 AS price, (i % 7)::float8 AS promo,
               (3 * (i * 37 % 100) + 10 * (i % 7) + (i * 7919 % 13))::float8 AS units
        FROM generate_series(1, 400) AS i""")
    # later data: prices moved up (drift), labelled with the same relationship
    query(conn, """
        CREATE TABLE sales_new AS
        SELECT i AS id, (100 + i * 37 % 100)::float8 AS price, (i % 7)::float8 AS promo,
               (3 * (100 + i * 37 % 100) + 10 * (i % 7) + (i * 7919 % 13))::float8 AS units
        FROM generate_series(1, 400) AS i""")
    query(conn, f"SELECT * FROM sqlml.train('sales', 'sales', 'units', time_budget => '{BUDGET}')")
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def cron(cluster):
    conn = psycopg2.connect(cluster.create_database("sqlml", extension=False))
    conn.autocommit = True
    if scalar(conn, "SHOW shared_preload_libraries") != "pg_cron":
        pytest.fail("the test cluster does not preload pg_cron "
                    "(postgresql-15-cron missing? run scripts/system-deps.sh)")
    query(conn, "CREATE EXTENSION IF NOT EXISTS pg_cron")
    yield conn
    conn.close()


def test_no_drift_no_training(db):
    row = query(db, "SELECT * FROM sqlml.retrain_if_drifted('sales', 'sales', time_budget => %s)", (BUDGET,))[0]
    project, drifted, max_psi, worst, version, deployed, decision = row
    assert (project, drifted, version, deployed) == ("sales", False, 1, False)
    assert max_psi < 0.25 and decision.startswith("no retraining")
    assert scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'sales'") == 1


@pytest.mark.slow
def test_pg_cron_retrains_on_drift_through_the_gate(db, cron):
    database = scalar(db, "SELECT current_database()")
    command = f"SELECT * FROM sqlml.retrain_if_drifted('sales', 'sales_new', time_budget => '{BUDGET}')"
    job = scalar(cron, "SELECT cron.schedule_in_database(%s, '* * * * *', %s, %s)",
                 (f"retrain-sales-{database}", command, database))
    try:
        status = wait_until(lambda: query(cron, "SELECT status, return_message FROM cron.job_run_details "
                                                "WHERE jobid = %s AND status IN ('succeeded', 'failed') "
                                                "ORDER BY runid LIMIT 1", (job,)),
                            "pg_cron runs the job", WAIT_SECONDS, interval=1)
    finally:
        query(cron, "SELECT cron.unschedule(%s)", (job,))
    assert status[0][0] == "succeeded", status[0][1]
    # the drift was measured and stored, a new version was trained on the new data ...
    assert scalar(db, "SELECT max(psi) FROM sqlml.drift WHERE project = 'sales' AND relation = 'sales_new' "
                      "AND feature = 'price'") >= 0.25
    v2 = query(db,
               "SELECT relation, feature_schema->'features' FROM sqlml.models WHERE project = 'sales' AND version = 2")
    assert v2 and v2[0][0] == "sales_new"
    assert [f["name"] for f in v2[0][1]] == ["price", "promo"]  # the deployed version's features (id: a row key)
    # ... and deployed only if it beat version 1 on the same holdout (the gate's decision is recorded)
    live = query(db, "SELECT version, strategy, reason FROM sqlml.deployments WHERE project = 'sales' "
                     "ORDER BY id DESC LIMIT 1")[0]
    if live[0] == 2:
        assert live[1] == "train" and live[2]["challenger_score"] < live[2]["champion_score"]  # rmse: lower wins
    else:
        assert live[0] == 1


def test_retraining_needs_the_right_to_call_sqlml_train(db):
    """retrain_if_drifted trains without going back through SQL, under the same checks as a call of
    sqlml.train by its caller: a role that may monitor the project but not execute sqlml.train is
    refused (42501), and nothing is trained."""
    query(db, "CREATE ROLE no_train")
    query(db, "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA sqlml TO no_train")
    query(db, "GRANT SELECT ON ALL TABLES IN SCHEMA sqlml TO no_train")
    query(db, "REVOKE EXECUTE ON FUNCTION sqlml.train(text, text, text, text, text[], interval, text, float8, text[], "
              "jsonb) FROM no_train")
    query(db, "GRANT SELECT ON sales, sales_new TO no_train")
    for privilege in ("predict", "train"):
        query(db, "SELECT sqlml.grant('sales', 'no_train', %s)", (privilege,))
    versions = scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'sales'")
    try:
        query(db, "SET ROLE no_train")
        with pytest.raises(psycopg2.Error) as e:
            query(db, "SELECT * FROM sqlml.retrain_if_drifted('sales', 'sales_new', threshold => 0.000001, "
                      "time_budget => %s)", (BUDGET,))  # whatever version is deployed, this drift reaches it
        assert e.value.pgcode == "42501" and "permission denied for function train" in e.value.diag.message_primary
    finally:
        query(db, "RESET ROLE")
    assert scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'sales'") == versions
