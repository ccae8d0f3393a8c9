"""The dbt package for real: the example project (integrations/dbt/example) against the test
cluster with dbt-postgres from .sqlml/dbt-venv (made by scripts/integrations.sh, run by `make
setup`). `dbt deps` installs the package from its local path, `dbt run` trains through a post-hook
(outside the view's transaction, its result in dbt's log) and scores with the macros, `dbt test`
checks the predictions, and a failing check fails. A second `dbt run` on unchanged data reuses
the version; a reader with a short lock_timeout reads the view while a training runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import urlparse

import psycopg2
import pytest

from sqlml import samples
from sqlml.install import CHECKOUT
from tests.conftest import new_database, query, wait_until

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
    path, env = project[0], project[1]
    return subprocess.run([str(DBT), *args], cwd=path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(project):
    for step in (["deps"], ["run"]):
        r = dbt(project, *step)
        assert r.returncode == 0, f"dbt {step[0]} failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    return (*project, r.stdout)


@pytest.mark.slow
def test_dbt_run_trains_and_scores(built):
    _, _, dsn, log = built
    conn = psycopg2.connect(dsn)
    try:
        model = query(conn, "SELECT version, relation, rows, algorithm FROM sqlml.models WHERE project = 'dbt_cancer'")
        # the post-hook trained on the view
        assert [m[:3] for m in model] == [(1, '"analytics"."cancer_training"', 456)]
        assert f"sqlml: dbt_cancer version 1: {model[0][3]} roc_auc=" in log and ", deployed" in log, log[-3000:]
        scored = query(conn, """SELECT count(*),
                                       count(*) FILTER (WHERE s.predicted = sqlml.predict_label('dbt_cancer', b)),
                                       array_agg(DISTINCT s.model_version)
                                FROM analytics.cancer_scored s JOIN public.breast_cancer b USING (id)""")
        assert scored == [(113, 113, [1])]  # every row says which version scored it
    finally:
        conn.close()


@pytest.mark.slow
def test_dbt_infers_that_scoring_needs_the_training(built):
    assert "depends_on" not in (built[0] / "models" / "cancer_scored.sql").read_text()
    r = dbt(built, "ls", "--select", "+cancer_scored", "--resource-type", "model", "--output", "name")
    assert r.returncode == 0 and "cancer_training" in r.stdout.split(), r.stdout


@pytest.mark.slow
def test_rerun_on_unchanged_data_returns_the_same_version(built):
    r = dbt(built, "run", "--select", "cancer_training")
    assert r.returncode == 0 and "sqlml: dbt_cancer version 1: " in r.stdout, r.stdout[-3000:]
    conn = psycopg2.connect(built[2])
    try:
        assert query(conn, "SELECT count(*) FROM sqlml.models WHERE project = 'dbt_cancer'") == [(1,)]
    finally:
        conn.close()


@pytest.mark.slow
def test_readers_are_not_locked_while_the_hook_trains(built):
    """A new budget is a new training; while it runs, a reader with a 2 s lock_timeout reads the view."""
    path, env, dsn, _ = built
    reader = psycopg2.connect(dsn)
    reader.autocommit = True
    known = query(reader, "SELECT coalesce(max(job_id), 0) FROM sqlml.jobs")[0][0]
    run = subprocess.Popen([str(DBT), "run", "--select", "cancer_training", "--vars", "{training_budget: 10 seconds}"],
                           cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def running():
            assert run.poll() is None, "the training never started: dbt ended"
            return query(reader, "SELECT 1 FROM sqlml.jobs WHERE project = 'dbt_cancer' AND kind = 'train' "
                                 "AND state = 'running' AND job_id > %s", (known,))

        wait_until(running, "the training starts", 120)
        query(reader, "SET lock_timeout = '2s'")
        assert query(reader, "SELECT count(*) FROM analytics.cancer_training") == [(456,)]
        assert query(reader, "SELECT state FROM sqlml.jobs WHERE job_id > %s", (known,)) == [("running",)]  # during it
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0 and "sqlml: dbt_cancer version 2: " in out, out[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        reader.close()


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
            "{project: dbt_iris, relation: iris, target: species, exclude: [id], algorithms: [linear], "
            "time_budget: 2 seconds}")
    assert r.returncode == 0 and "sqlml: dbt_iris version 1: linear" in r.stdout, r.stdout[-3000:]
    r = dbt(built, "run-operation", "sqlml_deploy_model", "--args", "{project: dbt_iris, strategy: most_recent}")
    assert r.returncode == 0 and "dbt_iris version 1 (linear) deployed by most_recent" in r.stdout
    r = dbt(built, "run-operation", "sqlml_deploy_model", "--args", "{project: dbt_iris, strategy: rollback}")
    assert r.returncode == 1 and "no previous deployment" in r.stdout
