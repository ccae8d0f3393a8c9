"""The Python client (``sqlml.connect``) against a real database: training with live progress,
predictions from dicts and relations that agree with SQL, the registry, deployment, jobs seen
from another session, and server errors as exceptions with SQLSTATE and hint."""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timezone

import psycopg2
import pytest

import sqlml
from sqlml import samples
from sqlml.client import ServerError
from sqlml.errors import SqlmlError
from tests.conftest import query, wait_until

WAIT_SECONDS = 180  # for what takes a few seconds on a quiet machine (a cold backend's first trial)
IRIS_ROW = {"sepal_length": 6.3, "sepal_width": 2.8, "petal_length": 5.1, "petal_width": 1.5}


@pytest.fixture(scope="module")
def ml(dsn):
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.close()
    client = sqlml.connect(dsn)
    yield client
    client.close()


@pytest.fixture(scope="module")
def iris(ml):
    """Train 'iris' once for the module, collecting the progress lines as they arrive."""
    lines = []
    result = ml.train("iris", "iris", "species", exclude=["id"], time_budget=3,
                      on_progress=lambda line: lines.append((datetime.now(timezone.utc), line)))
    return result, lines


def test_train_returns_the_registered_model_and_streams_progress(ml, iris):
    result, lines = iris
    assert result["project"] == "iris" and result["version"] == 1 and result["deployed"] is True
    assert result["metric"] == "log_loss" and result["score"] > 0
    trials = [line for _, line in lines if "trial " in line]
    assert trials, lines
    # live: the first trial line arrived while the server was still at work (it then converts the
    # model, checks its parity and registers it), not with the result
    job = next(j for j in ml.jobs(include_finished=True) if j["project"] == "iris" and j["kind"] == "train")
    assert next(t for t, line in lines if "trial " in line) < job["finished_at"]


def test_predict_a_dict_a_list_and_a_relation_agree_with_sql(ml, iris, conn):
    one = ml.predict("iris", IRIS_ROW)
    assert set(one) == {"prediction", "label", "probabilities"}
    assert one["label"] in ml.classes("iris") and len(one["probabilities"]) == 3
    assert abs(sum(one["probabilities"]) - 1) < 1e-5
    assert one["probabilities"] == pytest.approx(ml.predict_proba("iris", IRIS_ROW))

    rows = query(conn, "SELECT to_jsonb(i) - 'id' - 'species', sqlml.predict_label('iris', i), "
                       "sqlml.predict_proba('iris', i) FROM iris i WHERE id % 10 = 0 ORDER BY id")
    many = ml.predict("iris", [r[0] for r in rows])
    assert [m["label"] for m in many] == [r[1] for r in rows]
    for m, r in zip(many, rows):
        assert m["probabilities"] == pytest.approx(r[2], abs=1e-6)

    import pandas as pd

    frame = pd.DataFrame([r[0] for r in rows])
    frame.loc[0, "sepal_width"] = float("nan")  # NaN is NULL, as in SQL
    from_frame = ml.predict("iris", frame)
    assert [m["label"] for m in from_frame[1:]] == [r[1] for r in rows[1:]]
    assert from_frame[0]["label"] == ml.predict("iris", {**rows[0][0], "sepal_width": None})["label"]

    batch = ml.predict("iris", "SELECT * FROM iris WHERE id % 10 = 0", id_column="id")
    assert [b["label"] for b in sorted(batch, key=lambda b: int(b["id"]))] == [r[1] for r in rows]
    assert ml.predict("iris", []) == []


def test_regression_predictions_have_no_probabilities(ml, conn):
    ml.train("diab", "diabetes", "progression", exclude=["id"], algorithms=["linear"], time_budget=3)
    row = query(conn,
                "SELECT to_jsonb(d) - 'id' - 'progression', sqlml.predict('diab', d) FROM diabetes d WHERE id = 7")[0]
    got = ml.predict("diab", row[0])
    assert got["probabilities"] is None and got["prediction"] == pytest.approx(row[1], rel=1e-6)
    assert float(got["label"]) == pytest.approx(row[1], rel=1e-6)


def test_registry_views(ml, iris):
    projects = {p["project"]: p for p in ml.projects()}
    assert projects["iris"]["task"] == "multiclass" and projects["iris"]["deployed_version"] == 1
    models = ml.models("iris")
    assert [m["version"] for m in models] == [1] and models[0]["deployed"] is True
    full = ml.model("iris")
    assert full["feature_schema"]["target"]["name"] == "species" and full["relation"] == "iris"
    assert "onnx" not in full
    board = ml.leaderboard("iris")
    assert board and all(b["version"] == 1 for b in board)
    assert ml.version() == sqlml.__version__


def test_deploy_and_rollback(ml, iris):
    second = ml.train("iris", "iris", "species", exclude=["id"], algorithms=["linear"], time_budget=2,
                      options={"deploy": "never"})
    assert second["version"] == 2 and second["deployed"] is False
    assert ml.deploy("iris", version=2)["version"] == 2
    assert ml.predict("iris@1", IRIS_ROW)["label"]  # any version stays addressable
    back = ml.deploy("iris", "rollback")
    assert back["version"] == 1 and back["strategy"] == "rollback"
    assert [m["version"] for m in ml.models("iris") if m["deployed"]] == [1]


@pytest.mark.parametrize("call, sqlstate, fragment", [
    (lambda ml: ml.predict("no_such_project", IRIS_ROW), "42704", 'project "no_such_project"'),
    (lambda ml: ml.train("x", "iris", "no_such_column", time_budget=2), "42703", "no_such_column"),
    (lambda ml: ml.train("x", "iris", "species", time_budget=0), "22023", "time_budget"),
    (lambda ml: ml.deploy("iris", "sideways"), "22023", "sideways"),
    (lambda ml: ml.models("no_such_project"), "42704", "does not exist"),
    (lambda ml: ml.predict("iris", {"sepal_length": "tall"}), None, "sepal"),
])
def test_errors_carry_sqlstate_and_hint(ml, iris, call, sqlstate, fragment):
    with pytest.raises(SqlmlError) as info:
        call(ml)
    e = info.value
    assert fragment in e.message and not e.message.startswith("sqlml:")
    assert "Traceback" not in e.message
    if sqlstate:
        assert e.sqlstate == sqlstate
    assert e.hint, f"no hint for {e.message}"


def test_server_error_is_a_sqlml_error_with_the_servers_fields(ml):
    with pytest.raises(ServerError) as info:
        ml.sql("SELECT sqlml.classes('no_such_project')")
    assert isinstance(info.value, SqlmlError) and info.value.sqlstate == "42704"
    assert str(info.value).startswith('project "no_such_project"')


def test_connect_errors_are_server_errors():
    with pytest.raises(ServerError) as info:
        sqlml.connect("postgresql://nobody@127.0.0.1:1/nothing", connect_timeout=2)
    assert "connect" in info.value.message or "refused" in info.value.message


def test_jobs_shows_a_training_running_in_another_session_and_cancel_stops_it(ml, dsn):
    """While another session trains, jobs() lists it live: trials so far, best score, elapsed and
    budget; cancel() stops it. Its budget is an hour: it cannot end by itself meanwhile."""
    other = sqlml.connect(dsn)
    failure = {}

    def train():
        try:
            other.train("jobs_demo", "breast_cancer", "diagnosis", exclude=["id"], time_budget=3600)
        except ServerError as e:
            failure["e"] = e

    worker = threading.Thread(target=train)
    worker.start()
    try:
        seen = wait_until(lambda: next((j for j in ml.jobs() if j["project"] == "jobs_demo" and j["trials"]), None),
                          "the running training shows progress in jobs()", WAIT_SECONDS)
        assert seen["state"] == "running" and seen["kind"] == "train" and seen["job_id"] > 0
        assert seen["budget_seconds"] == pytest.approx(3600.0) and seen["trials"] >= 1
        assert seen["best_score"] > 0.5 and seen["best_algorithm"]
        later = next(j for j in ml.jobs() if j["job_id"] == seen["job_id"])
        assert 0 <= seen["elapsed_seconds"] < later["elapsed_seconds"] and later["trials"] >= seen["trials"]
        assert ml.cancel(seen["job_id"]) is True
    finally:
        if worker.is_alive() and "e" not in failure:
            other.conn.cancel()  # a failed assertion above must not leave an hour-long training behind
        worker.join(timeout=WAIT_SECONDS)
        other.close()
    assert not worker.is_alive()
    assert failure["e"].sqlstate == "57014" and f"job {seen['job_id']} was cancelled" in failure["e"].message
    assert not [j for j in ml.jobs() if j["project"] == "jobs_demo"]
    finished = [j for j in ml.jobs(include_finished=True) if j["job_id"] == seen["job_id"]]
    assert finished and finished[0]["state"] == "cancelled" and finished[0]["trials"] >= seen["trials"]
    assert ml.cancel(seen["job_id"]) is False  # already ended
    with pytest.raises(ServerError) as info:
        ml.cancel(10 ** 9)
    assert info.value.sqlstate == "42704"


def test_a_ctrl_c_while_psycopg2_reads_notices_still_cancels_the_statement():
    """A SIGINT that arrives while psycopg2 reads from the server used to raise KeyboardInterrupt
    in the notice callback, which psycopg2 calls from C and whose exception it discards: the
    training ran on. While a statement runs with live notices, Ctrl-C is counted and the wait loop
    cancels the statement on the server."""
    import os
    import signal

    import psycopg2.extensions as ext

    from sqlml.client import _CtrlC, _LiveNotices, _wait_interruptibly

    class Connection:  # the part of a psycopg2 connection the wait loop uses, as psycopg2 drives it
        def __init__(self):
            self.notices, self.cancelled, self.polls = _LiveNotices(lambda line: None), 0, 0

        def poll(self):
            self.polls += 1
            if self.polls == 1:
                try:  # psycopg2 hands a NOTICE to notices.append from C, and clears what it raises
                    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, while the notice is handled
                    self.notices.append("NOTICE:  trial 3: lightgbm 0.9871")
                except BaseException:  # noqa: BLE001 - what psycopg2's C code does: PyErr_Clear()
                    pass
                return ext.POLL_READ
            assert self.polls < 5, "the Ctrl-C was lost: the statement was never cancelled"
            return ext.POLL_OK if self.cancelled else ext.POLL_READ

        def fileno(self):
            return sys.stdin.fileno()

        def cancel(self):
            self.cancelled += 1

    before = signal.getsignal(signal.SIGINT)
    conn = Connection()
    with _CtrlC():
        _wait_interruptibly(conn)
    assert conn.cancelled == 1 and signal.getsignal(signal.SIGINT) is before
