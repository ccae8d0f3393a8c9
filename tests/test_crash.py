"""Crash safety: cancel, statement_timeout, kill -9 of the backend and an immediate server restart
during training leave the registry consistent; concurrent trains and deploys of one project never
produce duplicate versions or two live deployments.

These tests crash a server, so they run on a cluster of their own. The most dangerous moment is
caught on purpose: a test holds a lock on sqlml.audit_log, so a training blocks right after it
has inserted its model and trials and before it can commit; then the test strikes.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg2
import pytest

from sqlml.devcluster import throwaway
from tests.conftest import query, reconnect_after_crash, scalar, wait_until

pytestmark = pytest.mark.slow

BUDGET = "2 seconds"


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    c = throwaway("sqlml-crash-")
    dsn = c.create_database("crash")
    conn = connect(dsn)
    query(conn, """CREATE TABLE pts AS
                   SELECT i AS id, (i % 7)::float8 AS a, (i % 5)::float8 AS b, (i % 3)::float8 AS c,
                          ((i % 7) * 2.0 + (i % 5) - (i % 3))::float8 AS y
                   FROM generate_series(1, 2000) AS i""")
    train(conn, "crash")
    conn.close()
    yield c, dsn
    c.destroy()


def connect(dsn, timeout=60.0):
    """A connection, waiting while the server recovers from a crash."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            return conn
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def train(conn, project, budget=BUDGET):
    """Force: every call must really train (the same data and arguments would return the version already trained)."""
    return query(conn, f"SELECT version, deployed FROM sqlml.train(%s, 'pts', 'y', algorithms => '{{linear}}', "
                       f"""time_budget => '{budget}', options => '{{"force": true}}')""", (project,))[0]


def snapshot(conn) -> dict:
    return {t: scalar(conn, f"SELECT count(*) FROM sqlml.{t}")
            for t in ("projects", "models", "deployments", "trials", "audit_log")}


def assert_consistent(conn):
    """The registry's invariants, beyond what its constraints already enforce."""
    # versions unique per project and never above the project's counter
    assert query(conn, """SELECT project, version FROM sqlml.models GROUP BY 1, 2 HAVING count(*) > 1""") == []
    assert query(conn, """SELECT m.project FROM sqlml.models m JOIN sqlml.projects p ON p.name = m.project
                          WHERE m.version > p.last_version""") == []
    # every deployment points at a model of its project, with its version
    assert query(conn, """SELECT d.id FROM sqlml.deployments d LEFT JOIN sqlml.models m ON m.id = d.model_id
                          WHERE m.id IS NULL OR m.project <> d.project OR m.version <> d.version""") == []
    # one live model per project that has deployments
    assert query(conn, "SELECT project FROM sqlml.deployed GROUP BY 1 HAVING count(*) > 1") == []
    assert scalar(conn, "SELECT count(*) FROM sqlml.deployed") == \
        scalar(conn, "SELECT count(DISTINCT project) FROM sqlml.deployments")
    # every stored model is whole: its ONNX matches its sha256 and it scores
    assert query(conn, "SELECT id FROM sqlml.models WHERE encode(sha256(onnx), 'hex') <> sha256") == []
    for (project,) in query(conn, "SELECT DISTINCT project FROM sqlml.deployments"):
        assert scalar(conn, "SELECT sqlml.predict(%s, t) FROM pts t LIMIT 1", (project,)) is not None
    # trials belong to registered versions
    assert query(conn, """SELECT t.id FROM sqlml.trials t LEFT JOIN sqlml.models m
                          ON m.project = t.project AND m.version = t.model_version WHERE m.id IS NULL""") == []


class Training(threading.Thread):
    """``sqlml.train`` in a thread; ``pid`` is its backend, ``error`` what it raised."""

    def __init__(self, dsn, project, budget=BUDGET, setup=None):
        super().__init__(daemon=True)
        self.conn = connect(dsn)
        self.pid = scalar(self.conn, "SELECT pg_backend_pid()")
        if setup:
            query(self.conn, setup)
        self.project, self.budget = project, budget
        self.result = self.error = None

    def run(self):
        try:
            self.result = train(self.conn, self.project, self.budget)
        except psycopg2.Error as e:
            self.error = e
        finally:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass


def wait_for(conn, sql, params=None, timeout=60.0):
    return wait_until(lambda: scalar(conn, sql, params), sql, timeout, interval=0.05)


def blocked_at_registration(dsn):
    """(holder connection, training thread): the training has inserted its model and waits for
    the lock on sqlml.audit_log that the holder keeps."""
    holder = connect(dsn)
    holder.autocommit = False
    query(holder, "LOCK TABLE sqlml.audit_log IN EXCLUSIVE MODE")
    t = Training(dsn, "crash")
    t.start()
    watcher = connect(dsn)
    wait_for(watcher, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (t.pid,))
    watcher.close()
    return holder, t


def finish(t):
    t.join(timeout=120)
    assert not t.is_alive()


def test_cancel_during_the_search(own):
    _, dsn = own
    conn = connect(dsn)
    before = snapshot(conn)
    t = Training(dsn, "crash", budget="1 hour")  # only the cancel can end it
    t.start()
    wait_for(conn, "SELECT count(*) FROM sqlml.jobs WHERE project = 'crash' AND state = 'running' "
                   "AND (progress ->> 'trials')::int > 0", timeout=120)  # in the search
    assert scalar(conn, "SELECT pg_cancel_backend(%s)", (t.pid,))
    finish(t)
    assert t.error is not None and t.error.pgcode == "57014", t.error
    assert snapshot(conn) == before
    assert_consistent(conn)


def test_cancel_after_the_model_is_inserted(own):
    _, dsn = own
    conn = connect(dsn)
    before = snapshot(conn)
    holder, t = blocked_at_registration(dsn)
    assert scalar(conn, "SELECT pg_cancel_backend(%s)", (t.pid,))
    finish(t)
    holder.rollback()
    holder.close()
    assert t.error is not None and t.error.pgcode == "57014", t.error
    assert snapshot(conn) == before  # no model, no trials, no audit row
    assert_consistent(conn)


def test_statement_timeout_after_the_model_is_inserted(own):
    _, dsn = own
    conn = connect(dsn)
    before = snapshot(conn)
    holder = connect(dsn)
    holder.autocommit = False
    query(holder, "LOCK TABLE sqlml.audit_log IN EXCLUSIVE MODE")
    t = Training(dsn, "crash", setup="SET statement_timeout = '8s'")
    t.start()
    finish(t)
    holder.rollback()
    holder.close()
    assert t.error is not None and t.error.pgcode == "57014" and "statement timeout" in t.error.pgerror, t.error
    assert snapshot(conn) == before
    assert_consistent(conn)


def test_kill_9_of_the_backend_after_the_model_is_inserted(own):
    _, dsn = own
    conn = connect(dsn)
    before = snapshot(conn)
    conn.close()
    holder, t = blocked_at_registration(dsn)
    os.kill(t.pid, signal.SIGKILL)  # the postmaster resets every backend and recovers
    finish(t)
    assert isinstance(t.error, psycopg2.OperationalError), t.error
    conn = reconnect_after_crash(holder, dsn)  # not before the reset has reached the other backends
    assert snapshot(conn) == before
    assert_consistent(conn)
    version, _ = train(conn, "crash")  # and training goes on, with the next version
    assert version == scalar(conn, "SELECT max(version) FROM sqlml.models WHERE project = 'crash'")
    assert_consistent(conn)


def test_immediate_restart_during_registration(own):
    cluster, dsn = own
    conn = connect(dsn)
    before = snapshot(conn)
    conn.close()
    holder, t = blocked_at_registration(dsn)
    cluster.restart("immediate")
    finish(t)
    assert isinstance(t.error, psycopg2.OperationalError), t.error
    conn = connect(dsn)
    assert snapshot(conn) == before
    assert_consistent(conn)


def test_concurrent_trains_and_deploys_of_one_project(own):
    _, dsn = own
    conn = connect(dsn)
    start = scalar(conn, "SELECT last_version FROM sqlml.projects WHERE name = 'crash'")
    trainings = [Training(dsn, "crash") for _ in range(3)]
    stop = threading.Event()
    deploy_errors = []

    def deploy_loop(strategy):
        c = connect(dsn)
        try:
            while not stop.is_set():
                try:
                    query(c, "SELECT * FROM sqlml.deploy('crash', %s)", (strategy,))
                except psycopg2.Error as e:
                    if e.pgcode != "55000":  # 'nothing to roll back to' is an answer, not a failure
                        deploy_errors.append(e)
        finally:
            c.close()

    deployers = [threading.Thread(target=deploy_loop, args=(s,), daemon=True)
                 for s in ("most_recent", "rollback", "best_score")]
    for th in trainings + deployers:
        th.start()
    for t in trainings:
        finish(t)
    stop.set()
    for d in deployers:
        d.join(timeout=60)
    assert [t.error for t in trainings] == [None, None, None]
    assert deploy_errors == []
    versions = sorted(t.result[0] for t in trainings)
    assert versions == [start + 1, start + 2, start + 3]
    assert scalar(conn, "SELECT last_version FROM sqlml.projects WHERE name = 'crash'") == start + 3
    assert scalar(conn, "SELECT count(*) FROM sqlml.deployed WHERE project = 'crash'") == 1
    assert_consistent(conn)
