"""Prometheus metrics: prometheus-postgres-exporter (Debian's package) run with sqlml's queries
file against the test cluster, on loopback, and its /metrics read; the Grafana dashboard only
asks for metrics the exporter serves."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import psycopg2
import pytest

from sqlml import samples
from sqlml.devcluster import free_port
from tests.conftest import query

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "integrations" / "prometheus" / "sqlml-queries.yaml"
DASHBOARD = ROOT / "integrations" / "grafana" / "sqlml-dashboard.json"
START_SECONDS = 60  # for the exporter to listen: a second when the machine is quiet


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.autocommit = True
    query(conn, "SELECT * FROM sqlml.train('iris', 'iris', 'species', time_budget => '3 seconds')")
    query(conn, "SELECT sqlml.predict('iris', t) FROM iris t")  # 150 rows
    query(conn, "SELECT * FROM sqlml.evaluate('iris', 'iris')")  # 150 more
    query(conn, "SELECT * FROM sqlml.monitor('iris', 'SELECT * FROM iris WHERE id <= 100')")  # 100 more
    yield conn
    conn.close()


def scrape(dsn: str) -> str:
    """Start the exporter on a free loopback port, read /metrics once, stop it."""
    exe = shutil.which("prometheus-postgres-exporter")
    assert exe, "prometheus-postgres-exporter is not installed (scripts/system-deps.sh installs it)"
    port = free_port()
    env = {**os.environ, "DATA_SOURCE_NAME": f"{dsn}?sslmode=disable"}
    proc = subprocess.Popen([exe, f"--extend.query-path={QUERIES}", f"--web.listen-address=127.0.0.1:{port}",
                             "--disable-default-metrics", "--disable-settings-metrics", "--log.level=warn"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        try:
            log = proc.communicate(timeout=10)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0].decode()
        if "error" in log.lower():
            print(log)


def samples_of(text: str) -> dict:
    """{(metric name, frozenset of labels other than server): value}"""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m:
            continue
        labels = frozenset((k, v) for k, v in re.findall(r'(\w+)="([^"]*)"', m.group(2) or "") if k != "server")
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def test_exporter_serves_sqlml_metrics(db, dsn):
    model = "FROM sqlml.models WHERE project = 'iris' AND version = 1"
    age_before = query(db, f"SELECT extract(epoch FROM now() - created_at)::float8 {model}")[0][0]
    text = scrape(dsn)
    age_after = query(db, f"SELECT extract(epoch FROM now() - created_at)::float8 {model}")[0][0]
    train_seconds = query(db, f"SELECT train_seconds {model}")[0][0]
    got = samples_of(text)
    assert got[("pg_exporter_last_scrape_error", frozenset())] == 0
    load_errors = [v for (name, _), v in got.items() if name == "pg_exporter_user_queries_load_error"]
    assert load_errors == [0.0]
    assert got[("sqlml_scoring_predictions_total", frozenset({("project", "iris")}))] == 400
    assert {dict(k)["state"] for (name, k) in got if name == "sqlml_jobs_count"} >= \
        {"queued", "running", "succeeded", "failed", "cancelled"}
    assert got[("sqlml_training_versions", frozenset({("project", "iris")}))] == 1
    last_seconds = got[("sqlml_training_last_seconds", frozenset({("project", "iris")}))]
    assert last_seconds > 0 and last_seconds == pytest.approx(train_seconds)
    age = got[("sqlml_model_age_seconds", frozenset({("project", "iris"), ("version", "1"), ("metric", "log_loss")}))]
    assert age_before <= age <= age_after
    psi = {dict(k)["feature"]: v for (name, k), v in got.items() if name == "sqlml_drift_psi"}
    assert set(psi) == {"sepal_length", "sepal_width", "petal_length", "petal_width", "prediction"}
    assert psi["petal_length"] > 0.25  # the first 100 rows lack one species: major drift
    accuracy = got[("sqlml_evaluation_value",
                    frozenset({("project", "iris"), ("version", "1"), ("metric", "accuracy")}))]
    assert 0.9 <= accuracy <= 1


def test_grafana_dashboard_asks_only_for_served_metrics(db, dsn):
    dashboard = json.loads(DASHBOARD.read_text())
    served = {name for name, _ in samples_of(scrape(dsn))}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    wanted = {m for e in exprs for m in re.findall(r"\b(sqlml_[a-z_]+)\b", e)}
    assert wanted and wanted <= served, wanted - served
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
