"""sqlml.spark with PySpark in local mode (local[2], small data), through tests/spark_driver.py in
.sqlml/spark-venv (PySpark and pyarrow stay out of the server's venv). Checked here against the
database: DataFrames read through the JDBC source and scored inside mapInPandas agree with
sqlml.predict_batch; Python workers keep one ONNX Runtime session across partitions; scoring
refuses what it cannot score; training on a governed sample samples to the governor's plan,
stratified, says so, and trains in the database on the sample."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import psycopg2
import pytest

import sqlml
from sqlml import samples
from sqlml.governor import costmodel
from sqlml.install import CHECKOUT
from tests.conftest import query

pytestmark = pytest.mark.slow

SPARK_PYTHON = CHECKOUT / ".sqlml" / "spark-venv" / "bin" / "python"
JDBC_JAR = Path("/usr/share/java/postgresql.jar")


@pytest.fixture(scope="module")
def ml(dsn):
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.autocommit = True
    query(conn, """
        CREATE TABLE tickets AS
        SELECT i AS id,
               (i % 7)::float8 + CASE WHEN i % 13 = 0 THEN NULL ELSE 0 END AS waited_days,
               (i % 3 = 0) AS vip,
               CASE WHEN i % 11 = 0 THEN NULL ELSE (ARRAY['web', 'mail', 'phone'])[i % 3 + 1] END AS channel,
               date '2024-01-01' + (i * 7 % 365) AS opened,
               timestamptz '2024-01-01 00:00+00' + (i * 3607) * interval '1 second' AS opened_at,
               CASE WHEN (i % 7) + (i % 3) * 2 + CASE WHEN i % 3 = 0 THEN 3 ELSE 0 END > 6 THEN 'escalated'
                    ELSE 'solved' END AS outcome
        FROM generate_series(1, 600) AS i""")
    query(conn, """
        CREATE TABLE wide AS
        SELECT i AS id, (i * 7 % 100)::float8 AS a, (i * 13 % 50)::float8 AS b, (i % 10)::float8 AS c,
               (i * 31 % 17)::float8 AS d, CASE WHEN (i * 7 % 100) + (i % 10) * 5 > 70 THEN 'yes' ELSE 'no' END AS y
        FROM generate_series(1, 5000) AS i""")
    conn.close()
    client = sqlml.connect(dsn)
    client.train("tickets", "tickets", "outcome", exclude=["id"], time_budget=3)
    client.train("diab", "diabetes", "progression", exclude=["id"], algorithms=["linear", "lightgbm"], time_budget=3)
    yield client
    client.close()


# A memory cap that fits about 2000 rows of `wide` by the governor's analytic cost model (what
# sqlml.spark.governed_rows computes: 5 numeric columns besides the target, 1 algorithm, 3 s).
GOVERNED_CAP = costmodel.analytic("train", costmodel.Features(rows=2000, numeric=5, algorithms=1, budget=3.0))[1]


@pytest.fixture(scope="module")
def seen(ml, dsn):
    """Everything Spark saw, from one driver run (one JVM for the whole module)."""
    assert SPARK_PYTHON.exists(), f"{SPARK_PYTHON} is missing: `make setup` (scripts/integrations.sh) creates it"
    assert JDBC_JAR.exists(), f"{JDBC_JAR} is missing: scripts/system-deps.sh installs libpostgresql-jdbc-java"
    config = {"dsn": dsn, "scenarios": [
        {"name": "tickets", "kind": "score", "project": "tickets", "relation": "tickets", "partitions": 3},
        {"name": "diab", "kind": "score", "project": "diab", "relation": "diabetes", "partitions": 8},
        {"name": "refusals", "kind": "refusals", "project": "diab"},
        {"name": "governed", "kind": "train", "args": {
            "project": "wide", "relation": "wide", "target": "y", "time_budget": "3 seconds",
            "memory_cap": GOVERNED_CAP, "algorithms": ["linear"]}},
        {"name": "all_rows", "kind": "train", "args": {
            "project": "iris_all", "relation": "iris", "target": "species", "time_budget": 2, "exclude": ["id"],
            "algorithms": ["linear"]}},
    ]}
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_PYTHON"}
    r = subprocess.run([str(SPARK_PYTHON), str(CHECKOUT / "tests" / "spark_driver.py"), json.dumps(config)],
                       capture_output=True, text=True, timeout=600, env=env, cwd=CHECKOUT)
    assert r.returncode == 0, r.stderr[-5000:]
    line = next(li for li in r.stdout.splitlines() if li.startswith("SPARK-RESULT "))
    return json.loads(line[len("SPARK-RESULT "):])


@pytest.mark.parametrize("project, relation, partitions", [("tickets", "tickets", 3), ("diab", "diabetes", 8)])
def test_spark_scoring_matches_the_database(ml, seen, project, relation, partitions):
    got = seen[project]
    assert got["partitions"] == partitions
    want = {b["id"]: b for b in ml.predict(project, relation)}
    assert set(got["rows"]) == set(want)
    ids = sorted(want, key=int)
    np.testing.assert_allclose([got["rows"][i][0] for i in ids], [want[i]["prediction"] for i in ids], rtol=1e-5)
    if want[ids[0]]["probabilities"] is None:
        assert all(got["rows"][i][2] is None for i in ids)
    else:
        assert [got["rows"][i][1] for i in ids] == [want[i]["label"] for i in ids]
        np.testing.assert_allclose([got["rows"][i][2] for i in ids], [want[i]["probabilities"] for i in ids], atol=1e-5)


def test_workers_keep_their_onnx_session_across_partitions(seen):
    assert 1 <= seen["diab"]["sessions"] < seen["diab"]["partitions"] == 8  # one per Python worker, not per partition


def test_scoring_refuses_what_it_cannot_score(seen):
    r = seen["refusals"]
    assert r["missing_feature"]["sqlstate"] == "42703" and "'bmi'" in r["missing_feature"]["message"]
    assert "prediction" in r["clash"]["message"] and r["clash"]["hint"]
    assert r["not_a_select"]["sqlstate"] == "42601"
    assert r["bad_sample_table"]["sqlstate"] == "22023" and "not a plain table name" in r["bad_sample_table"]["message"]


def test_train_on_a_governed_sample(ml, seen):
    """With a memory cap that fits about 2000 rows, the governor's plan samples 5000 rows down,
    stratified on the target, and the training happens in the database on that sample."""
    result, log = seen["governed"]["result"], seen["governed"]["log"]
    assert result["rows_total"] == 5000 and result["sampled"] is True
    assert 1900 <= result["rows_sampled"] <= 2000, result
    assert "sqlml.memory_per_job" in result["sampled_because"]
    assert any(f"sample of {result['rows_sampled']} of 5000 rows" in line for line in log), log
    model = ml.model("wide")
    assert model["rows"] == result["rows_sampled"] and model["relation"] == '"sqlml_sample_wide"'
    shares = {r["y"]: r["n"] for r in ml.sql(f"SELECT y, count(*)::float8 / {result['rows_sampled']} AS n "
                                             f"FROM sqlml_sample_wide GROUP BY y")}
    full = {r["y"]: r["n"] for r in ml.sql("SELECT y, count(*)::float8 / 5000 AS n FROM wide GROUP BY y")}
    assert shares.keys() == full.keys() and all(abs(shares[k] - full[k]) < 0.05 for k in full)


def test_train_on_all_rows_when_they_fit(seen):
    result = seen["all_rows"]["result"]
    assert result["sampled"] is False and result["rows_sampled"] == result["rows_total"] == 150
    assert any("on all 150 rows" in line for line in seen["all_rows"]["log"])
