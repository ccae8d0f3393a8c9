"""The ``sqlml`` command as a user runs it: a subprocess against the test cluster.

Conventions checked: ``--help`` on every command, ``--dsn`` / ``SQLML_DSN`` / libpq ``PG*``
variables, ``--json`` output that parses, exit codes 0 (ok), 1 (failed, one clear message with
the server's hint and SQLSTATE on stderr, no traceback), 2 (bad usage)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from urllib.parse import urlparse

import psycopg2
import pytest

from sqlml import samples
from tests.conftest import wait_until

SQLML = [os.path.join(os.path.dirname(sys.executable), "sqlml")]  # the console script users run
COMMANDS = ["train", "models", "deploy", "jobs", "cancel", "export"]


def run(*args, dsn=None, env=None, timeout=120) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "SQLML_DSN"}
    environ["SQLML_HOME"] = "/nonexistent"  # never fall back to a developer's dev cluster
    environ.update(env or {})
    argv = [*SQLML, *args] + (["--dsn", dsn] if dsn else [])
    return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=timeout)


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.close()
    return dsn


@pytest.fixture(scope="module")
def trained(db):
    r = run("train", "cancer", "breast_cancer", "diagnosis", "--exclude", "id", "--algorithms", "linear,lightgbm",
            "--budget", "3 seconds", "--json", dsn=db)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_everywhere(command):
    r = run(*([command] if command else []), "--help")
    assert r.returncode == 0 and "usage: sqlml" in r.stdout
    if command:
        assert "--dsn" in r.stdout and "--json" in r.stdout


@pytest.mark.parametrize("argv", [
    ["train", "only_a_project"],
    ["deploy", "p", "--strategy", "sideways"],
    ["export", "p"],                       # --out is required
    ["models", "--version", "three"],
    ["no_such_command"],
])
def test_bad_usage_exits_2(argv):
    r = run(*argv)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_train_prints_progress_on_stderr_and_the_result_on_stdout(trained):
    result, stderr = trained
    assert result["project"] == "cancer" and result["version"] == 1 and result["deployed"] is True
    assert "trial 1:" in stderr and "Traceback" not in stderr


def test_models_lists_projects_and_versions(db, trained):
    r = run("models", "--json", dsn=db)
    assert r.returncode == 0
    assert [p["project"] for p in json.loads(r.stdout)] == ["cancer"]
    r = run("models", "cancer", dsn=db)
    assert r.returncode == 0 and "version" in r.stdout.splitlines()[0] and "yes" in r.stdout
    r = run("models", "cancer", "--version", "1", "--json", dsn=db)
    assert json.loads(r.stdout)["feature_schema"]["target"]["name"] == "diagnosis"


def test_deploy_rollback_and_exit_codes(db, trained):
    r = run("train", "cancer", "breast_cancer", "diagnosis", "--exclude", "id", "--algorithms", "linear",
            "--budget", "2", "--no-deploy", "-q", "--json", dsn=db)
    assert r.returncode == 0 and json.loads(r.stdout)["deployed"] is False and r.stderr == ""
    r = run("deploy", "cancer", "--version", "2", "--json", dsn=db)
    assert r.returncode == 0 and json.loads(r.stdout)["version"] == 2
    r = run("deploy", "cancer", "--strategy", "rollback", dsn=db)
    assert r.returncode == 0 and "version 1" in r.stdout and "rollback" in r.stdout
    r = run("deploy", "cancer", "--version", "99", dsn=db)
    assert r.returncode == 1
    assert "has no version 99" in r.stderr and "hint:" in r.stderr and "SQLSTATE 42704" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_export_writes_verified_files(db, trained, tmp_path):
    r = run("export", "cancer", "--out", str(tmp_path / "m"), "--json", dsn=db)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert all(os.path.exists(f) for f in out["files"]) and out["version"] == 1
    r = run("export", "cancer", "--out", str(tmp_path / "t"), "--format", "triton", dsn=db)
    assert r.returncode == 0 and (tmp_path / "t" / "cancer" / "config.pbtxt").exists()


def test_failures_exit_1_with_one_clear_message(db):
    r = run("train", "p", "no_such_table", "y", "--budget", "2", dsn=db)
    assert r.returncode == 1 and "no_such_table" in r.stderr and "Traceback" not in r.stderr
    r = run("models", dsn="postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")
    assert r.returncode == 1 and r.stderr.startswith("sqlml: cannot connect")
    r = run("cancel", "1000000000", dsn=db)
    assert r.returncode == 1 and "job 1000000000 does not exist" in r.stderr and "SQLSTATE 42704" in r.stderr
    r = run("models")  # no --dsn, no environment, no dev cluster
    assert r.returncode == 1 and "no database given" in r.stderr


def test_dsn_from_the_environment(db, trained):
    r = run("models", "--json", env={"SQLML_DSN": db})
    assert r.returncode == 0 and json.loads(r.stdout)[0]["project"] == "cancer"
    u = urlparse(db)
    pg = {"PGHOST": u.hostname, "PGPORT": str(u.port), "PGUSER": u.username, "PGDATABASE": u.path.lstrip("/")}
    r = run("models", "--json", env=pg)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["project"] == "cancer"


LONG_BUDGET = "1 hour"  # a training that cannot end by itself while a test watches or cancels it
WAIT_SECONDS = 180  # for a condition that takes a few seconds on a quiet machine (cold backend, first trial)


def wait_for_trials(ml, project) -> dict:
    """The running job of ``project`` once it has finished a trial (fails after WAIT_SECONDS)."""
    return wait_until(lambda: next((j for j in ml.jobs() if j["project"] == project and j["trials"]), None),
                      f"the training of {project!r} shows a trial", WAIT_SECONDS)


def stop(trainer: subprocess.Popen) -> None:
    """End a `sqlml train` a failed assertion left running, its server-side training included."""
    if trainer.poll() is None:
        trainer.send_signal(signal.SIGINT)  # the CLI cancels the statement in the server
        try:
            trainer.communicate(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            trainer.kill()
            trainer.communicate()


def test_jobs_watch_shows_a_running_training(db, trained):
    """`sqlml jobs --watch` while another process trains: the training appears live with its budget,
    and `sqlml cancel` stops it."""
    import sqlml

    trainer = subprocess.Popen([*SQLML, "train", "watched", "breast_cancer", "diagnosis", "--exclude", "id",
                                "--budget", LONG_BUDGET, "-q", "--dsn", db],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with sqlml.connect(db) as ml:
            job = wait_for_trials(ml, "watched")
        r = run("jobs", "--watch", "--interval", "0.5", "--count", "4", "--json", dsn=db, timeout=WAIT_SECONDS)
        assert r.returncode == 0, r.stderr
        snapshots = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(snapshots) == 4
        watched = [j for s in snapshots for j in s["jobs"] if j["project"] == "watched"]
        assert len(watched) == 4 and all(j["state"] == "running" and j["trials"] for j in watched), snapshots
        elapsed = [j["elapsed_seconds"] for j in watched]
        assert elapsed == sorted(elapsed) and elapsed[-1] > elapsed[0]  # live: time moves between refreshes
        assert watched[-1]["best_score"] > 0.5 and watched[-1]["budget_seconds"] == 3600.0
        text = run("jobs", dsn=db)
        assert text.returncode == 0 and "watched" in text.stdout
        r = run("cancel", str(job["job_id"]), dsn=db, timeout=WAIT_SECONDS)
        assert r.returncode == 0, r.stderr
        _, err = trainer.communicate(timeout=WAIT_SECONDS)
    finally:
        stop(trainer)
    assert trainer.returncode == 1 and "SQLSTATE 57014" in err, err


def test_ctrl_c_cancels_the_training_on_the_server(db, trained):
    """SIGINT to `sqlml train` cancels the statement in the server (not just the client): a training
    whose budget is an hour ends at once, cancelled, and registers nothing."""
    import sqlml

    trainer = subprocess.Popen([*SQLML, "train", "interrupted", "breast_cancer", "diagnosis", "--exclude", "id",
                                "--budget", LONG_BUDGET, "--dsn", db], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    with sqlml.connect(db) as ml:
        try:
            wait_for_trials(ml, "interrupted")
            trainer.send_signal(signal.SIGINT)
            _, err = trainer.communicate(timeout=WAIT_SECONDS)  # far less than the budget: the cancel landed
        finally:
            stop(trainer)
        assert trainer.returncode == 1
        assert "canceling statement due to user request" in err and "SQLSTATE 57014" in err
        job = next(j for j in ml.jobs(include_finished=True) if j["project"] == "interrupted")
        assert job["state"] == "cancelled" and job["budget_seconds"] == 3600.0
        assert ml.sql("SELECT count(*) AS n FROM sqlml.models WHERE project = 'interrupted'")[0]["n"] == 0
