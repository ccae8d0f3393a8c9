"""The dbt package for real: the example project (integrations/dbt/example) against the test
cluster with dbt-postgres from .sqlml/dbt-venv (made by scripts/integrations.sh, run by `make
setup`). `dbt deps` installs the package from its local path, `dbt run` trains through a post-hook
and scores with the macros, `dbt test` checks the predictions, and a failing check fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import urlparse

import psycopg2
import pytest

from sqlml import samples
from sqlml.install import CHECKOUT
from tests.conftest import new_database, query

DBT = CHECKOUT / ".sqlml" / "dbt-venv" / "bin" / "dbt"


@pytest.fixture(scope="module")
def project(cluster, tmp_path_factory):
    """A copy of integrations/dbt (package + example) and the environment that points it at a fresh database."""
    assert DBT.exists(), f"{DBT} is missing: `make setup` (scripts/integrations.sh) creates it"
    dsn = new_database(cluster, "dbt")
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.close()
    root = tmp_path_factory.mktemp("dbt")
    shutil.copytree(CHECKOUT / "integrations" / "dbt", root / "dbt",
                    ignore=shutil.ignore_patterns("target", "dbt_packages", "logs", "package-lock.yml"))
    u = urlparse(dsn)
    env = {**os.environ, "SQLML_DBT_HOST": u.hostname, "SQLML_DBT_PORT": str(u.port), "SQLML_DBT_USER": u.username,
           "SQLML_DBT_DBNAME": u.path.lstrip("/"), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "DBT_PROFILES_DIR": str(root / "dbt" / "example"), "DBT_USE_COLORS": "false"}
    return root / "dbt" / "example", env, dsn


def dbt(project, *args, timeout=300) -> subprocess.CompletedProcess:
    path, env, _ = project
    return subprocess.run([str(DBT), *args], cwd=path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(project):
    for step in (["deps"], ["run"]):
        r = dbt(project, *step)
        assert r.returncode == 0, f"dbt {step[0]} failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    return project


@pytest.mark.slow
def test_dbt_run_trains_and_scores(built):
    _, _, dsn = built
    conn = psycopg2.connect(dsn)
    try:
        model = query(conn, "SELECT version, relation, rows FROM sqlml.models WHERE project = 'dbt_cancer'")
        assert model == [(1, '"analytics"."cancer_training"', 456)]  # the post-hook trained on the view
        scored = query(conn, """SELECT count(*), count(*) FILTER (WHERE s.predicted = sqlml.predict_label('dbt_cancer', b))
                                FROM analytics.cancer_scored s JOIN public.breast_cancer b USING (id)""")
        assert scored == [(113, 113)]
    finally:
        conn.close()


@pytest.mark.slow
def test_dbt_test_checks_the_predictions(built):
    r = dbt(built, "test")
    assert r.returncode == 0, r.stdout[-4000:]
    assert "PASS=9" in r.stdout and "sqlml_accuracy" in r.stdout
    r = dbt(built, "test", "--select", "cancer_scored", "--vars", "{min_accuracy: 1.01}")
    assert r.returncode == 1 and "FAIL 1 sqlml_sqlml_accuracy" in r.stdout, r.stdout[-3000:]


@pytest.mark.slow
def test_run_operations_train_and_deploy(built):
    r = dbt(built, "run-operation", "sqlml_train_model", "--args",
            "{project: dbt_iris, relation: iris, target: species, exclude: [id], algorithms: [linear], time_budget: 2 seconds}")
    assert r.returncode == 0 and "sqlml: dbt_iris version 1: linear" in r.stdout, r.stdout[-3000:]
    r = dbt(built, "run-operation", "sqlml_deploy_model", "--args", "{project: dbt_iris, strategy: most_recent}")
    assert r.returncode == 0 and "dbt_iris version 1 (linear) deployed by most_recent" in r.stdout
    r = dbt(built, "run-operation", "sqlml_deploy_model", "--args", "{project: dbt_iris, strategy: rollback}")
    assert r.returncode == 1 and "no previous deployment" in r.stdout
