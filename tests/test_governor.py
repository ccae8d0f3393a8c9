"""The governor against a real PostgreSQL: slots and the FIFO queue under concurrent trainings,
settings users cannot override, memory sampling/refusal/cap, cancellation by sqlml.cancel,
pg_cancel_backend, statement_timeout and kill -9, and the jobs view.

These tests reconfigure the server and kill backends, so they run on a cluster of their own
(the session cluster of conftest stays untouched). Trainings use tiny tables and budgets.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg2
import pytest

from sqlml.devcluster import throwaway
from tests.conftest import niceness, query, reconnect_after_crash, scalar, wait_until
from tests.test_import_core import doubling_graph

MB = 1024 ** 2
LONG = "1 hour"  # a training that cannot end by itself while a test queues behind it or stops it
# A backend that has loaded sqlml's training module, so that a short statement_timeout set after
# these fires while the job waits or runs, not while a busy machine imports it
WARM = ["SELECT sqlml.version()", "DO $$ import sqlml.server.training $$ LANGUAGE plpython3u"]
CONCURRENT = 5  # trainings at once against two slots


@pytest.fixture(scope="module")
def gov(cluster):  # `cluster` installs this checkout's extension files
    c = throwaway("sqlml-gov-")
    dsn = c.create_database("gov")
    conn = connect(dsn)
    query(conn, """CREATE TABLE small AS
        SELECT i AS id, (i % 7)::float8 AS a, (i % 13)::float8 AS b, (i * 7919 % 101)::float8 AS c,
               ((i % 7) * 2 + (i % 13) + (i * 7919 % 101) / 20.0 > 14) AS label
        FROM generate_series(1, 2000) AS i""")
    query(conn, "ANALYZE small")
    conn.close()
    yield c, dsn
    c.destroy()


def connect(dsn, **kw):
    conn = psycopg2.connect(dsn, **kw)
    conn.autocommit = True
    return conn


def configure(dsn, **values):
    """ALTER SYSTEM for sqlml settings (PostgreSQL 15 needs the placeholder SET first); None resets."""
    conn = connect(dsn)
    for name, value in values.items():
        if value is None:
            query(conn, f"ALTER SYSTEM RESET sqlml.{name}")
        else:
            query(conn, f"SET sqlml.{name} = '{value}'")
            query(conn, f"ALTER SYSTEM SET sqlml.{name} = '{value}'")
    conn.close()


@pytest.fixture
def db(gov):
    _, dsn = gov
    configure(dsn, slots=1, role_slots=1, queue_timeout="60s", memory_per_job="2GB", load_aware="on",
              interactive_seconds="2s")
    conn = connect(dsn)
    yield conn
    conn.close()
    # a test that failed half-way must not leave an hour-long training holding the slot (a new
    # connection: a test may have crashed the server, ending this one)
    cleanup = connect(dsn)
    query(cleanup, "SELECT sqlml.cancel(job_id) FROM sqlml.jobs WHERE state IN ('queued', 'running')")
    cleanup.close()


class Training(threading.Thread):
    """``sqlml.train`` in its own connection; ``.error`` or ``.rows`` once joined."""

    def __init__(self, dsn, project, relation="small", budget="1 second", setup=(), **kw):
        super().__init__(daemon=True)
        self.conn = connect(dsn)
        self.pid = self.conn.get_backend_pid()
        self.sql = (f"SELECT * FROM sqlml.train(%(p)s, %(r)s, 'label', time_budget => '{budget}', exclude => '{{id}}'"
                    + "".join(f", {k} => %({k})s" for k in kw) + ")")
        self.args = {"p": project, "r": relation, **kw}
        self.setup, self.project = setup, project
        self.rows = self.error = self.ended = None

    def run(self):
        try:
            for s in self.setup:
                query(self.conn, s)
            self.rows = query(self.conn, self.sql, self.args)
        except psycopg2.Error as e:
            self.error = e
        self.ended = time.monotonic()

    def finish(self, timeout=120):
        self.join(timeout)
        assert not self.is_alive(), f"training {self.project} did not end within {timeout}s"
        return self


def job_of(conn, project, timeout=60, state=None):
    """The newest job of ``project`` (in ``state``, if given), waiting for it to appear."""
    def newest():
        rows = query(conn, "SELECT job_id, state, queue_position, error, sqlstate, rows FROM sqlml.jobs "
                           "WHERE project = %s ORDER BY job_id DESC LIMIT 1", (project,))
        if rows and (state is None or rows[0][1] == state):
            return dict(zip(("job_id", "state", "queue_position", "error", "sqlstate", "rows"), rows[0]))
    return wait_until(newest, f"a {state or ''} job of {project}", timeout)


def searching(conn, project, timeout=120):
    """The running job of ``project`` once it has finished a trial: inside the search."""
    return wait_until(lambda: scalar(conn, "SELECT job_id FROM sqlml.jobs WHERE project = %s AND state = 'running' "
                                           "AND (progress ->> 'trials')::int > 0", (project,)),
                      f"the training of {project} shows a trial", timeout)


def registry_is_clean(conn, project):
    """Nothing of a training that did not finish: no project, model or trial rows."""
    return [scalar(conn, f"SELECT count(*) FROM sqlml.{t} WHERE {c} = %s", (project,))
            for t, c in (("projects", "name"), ("models", "project"), ("trials", "project"))] == [0, 0, 0]


# --- settings ---------------------------------------------------------------------------------------

def test_settings_come_from_the_configuration_only(db):
    query(db, "SET sqlml.slots = 64")
    query(db, "SET sqlml.memory_per_job = '1TB'")
    rows = {r[0]: r[1:] for r in query(db, "SELECT name, setting, source FROM sqlml.governor_settings()")}
    assert rows["sqlml.slots"] == ("1", "configuration file")
    assert rows["sqlml.memory_per_job"] == ("2048MB", "configuration file")
    assert set(rows) == {"sqlml.slots", "sqlml.role_slots", "sqlml.queue_timeout", "sqlml.memory_per_job",
                         "sqlml.threads_per_job", "sqlml.interactive_seconds", "sqlml.training_nice",
                         "sqlml.load_aware"}


def test_an_invalid_setting_is_a_clear_error(gov, db):
    configure(gov[1], slots="many")
    try:
        e = pytest.raises(psycopg2.Error, query, db, "SELECT * FROM sqlml.train('bad', 'small', 'label')").value
        assert e.pgcode == "22023" and "sqlml.slots = 'many'" in e.diag.message_primary
    finally:
        configure(gov[1], slots=1)


# --- slots and the queue ----------------------------------------------------------------------------

@pytest.mark.slow
def test_concurrent_trainings_share_two_slots_in_fifo_order(gov, db):
    dsn = gov[1]
    # the slots alone decide here: on a busy machine the load would (rightly) hold the second job back
    configure(dsn, slots=2, role_slots=2, queue_timeout="120s", load_aware="off")
    started_at = scalar(db, "SELECT pg_postmaster_start_time()")
    watcher = connect(dsn)  # a crash-restart of the server would end this connection
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(query(watcher, "SELECT job_id, state FROM sqlml.jobs WHERE project LIKE 'conc%%'"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # two slots and three jobs queued behind them (positions 1 to 3): each backend imports the ML
    # stack, so every training more costs CPU seconds the invariants do not need
    trainings = [Training(dsn, f"conc{i}", algorithms=["linear"]) for i in range(CONCURRENT)]
    for t in trainings:
        t.start()
    for t in trainings:
        t.finish(timeout=120)
    stop.set()
    sampler.join(10)

    running = [sum(1 for _, s in snap if s == "running") for snap in samples]
    assert max(running) == 2, f"at most 2 jobs may run (saw {max(running)})"
    for t in trainings:  # success, or the clean queue-timeout error
        assert t.error is None or (t.error.pgcode == "53000" and "gave up" in t.error.diag.message_primary), t.error
    assert sum(t.error is None for t in trainings) >= 2
    jobs = query(db, "SELECT job_id, started_at, state FROM sqlml.jobs WHERE project LIKE 'conc%' ORDER BY job_id")
    assert len(jobs) == CONCURRENT
    starts = [s for _, s, state in jobs if state == "succeeded"]
    assert starts == sorted(starts), "jobs must start in the order they were queued"
    assert any("is queued at position" in n for t in trainings for n in t.conn.notices)
    assert scalar(watcher, "SELECT pg_postmaster_start_time()") == started_at
    watcher.close()


@pytest.mark.slow
def test_queue_timeout_is_a_clean_error(gov, db):
    dsn = gov[1]
    configure(dsn, queue_timeout="1s")
    first = Training(dsn, "qt_long", budget=LONG)  # cannot end while the second waits
    first.start()
    job_of(db, "qt_long", state="running")
    second = Training(dsn, "qt_waiting")
    second.start()
    second.finish(30)
    assert second.error.pgcode == "53000"
    assert "gave up (sqlml.queue_timeout is 1s)" in second.error.diag.message_primary
    assert "sqlml.slots" in second.error.diag.message_hint
    assert job_of(db, "qt_waiting")["state"] == "failed"
    assert registry_is_clean(db, "qt_waiting")
    assert scalar(db, "SELECT sqlml.cancel(job_id) FROM sqlml.jobs WHERE project = 'qt_long'")
    _stopped(first, "qt_long", db, "cancelled by postgres")


@pytest.mark.slow
def test_more_slots_apply_to_jobs_already_waiting(gov, db):
    dsn = gov[1]
    first = Training(dsn, "grow_first", budget=LONG)
    first.start()
    job_of(db, "grow_first", state="running")
    second = Training(dsn, "grow_second", budget=LONG)
    second.start()
    job_of(db, "grow_second", state="queued")
    configure(dsn, slots=2, role_slots=2, load_aware="off")  # the slots alone decide (see above)
    job_of(db, "grow_second", state="running", timeout=120)  # not when first ends: it cannot end by itself
    for t in (first, second):
        assert scalar(db, "SELECT sqlml.cancel(job_id) FROM sqlml.jobs WHERE project = %s", (t.project,))
        _stopped(t, t.project, db, "cancelled by postgres")


# --- memory -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_data_over_the_memory_cap_is_sampled_with_a_notice(gov, db):
    configure(gov[1], memory_per_job="200MB")
    query(db, """CREATE TABLE wide AS SELECT i AS id, random() a, random() b, random() c, random() d, random() e,
                 random() f, random() g, random() h, (i % 3)::text AS k, (i % 2 = 0) AS label
                 FROM generate_series(1, 200000) i""")
    query(db, "ANALYZE wide")
    query(db, "SELECT * FROM sqlml.train('wide', 'wide', 'label', time_budget => '1 second', "
              "algorithms => '{linear}', exclude => '{id}')")
    notice = next(n for n in db.notices if "training on a sample of" in n)
    assert "200 MB each job may use" in notice
    job = job_of(db, "wide")
    assert job["state"] == "succeeded" and 1000 <= job["rows"] < 200000
    assert scalar(db, "SELECT rows FROM sqlml.models WHERE project = 'wide'") == job["rows"]


@pytest.mark.slow
def test_a_sample_is_deterministic_and_max_rows_is_honoured(db):
    for _ in range(2):
        query(db, "SELECT * FROM sqlml.train('cap', 'small', 'label', time_budget => '1 second', "
                  """algorithms => '{linear}', exclude => '{id}', """  # force: the same data trains again
                  """options => '{"max_rows": 500, "deploy": "never", "force": true}')""")
    rows = query(db, "SELECT rows, data_fingerprint FROM sqlml.models WHERE project = 'cap'")
    assert [r[0] for r in rows] == [500, 500] and rows[0][1] == rows[1][1]
    assert any("training on a sample of 500 of about 2000 rows (options.max_rows)" in n for n in db.notices)


def test_a_job_that_cannot_fit_is_refused(gov, db):
    # 2000 rows of 4000 floats: 1000 rows alone take 32 MB as numbers, whatever the cost model learned
    query(db, "CREATE TABLE vecs AS SELECT i AS id, array_fill(0.5::real, ARRAY[4000])::vector(4000) AS v, "
              "i % 2 = 0 AS label FROM generate_series(1, 2000) AS i")
    query(db, "ANALYZE vecs")
    configure(gov[1], memory_per_job="16MB")
    e = pytest.raises(psycopg2.Error, query, db, "SELECT * FROM sqlml.train('toobig', 'vecs', 'label')").value
    assert e.pgcode == "53200"
    assert "more than the 16 MB each job may use" in e.diag.message_primary
    assert "sqlml.memory_per_job" in e.diag.message_hint
    assert job_of(db, "toobig")["state"] == "failed" and registry_is_clean(db, "toobig")


@pytest.mark.slow
def test_exceeding_the_cap_at_run_time_fails_cleanly_and_the_backend_lives_on(gov, db):
    # The statistics see 48 kB of table: the 400 MB of text live compressed in TOAST, so the
    # estimate admits the job, and the cap must stop it while it reads. One algorithm without
    # forests: the analytic estimate (what a first job gets, whatever ran before) stays below the cap.
    query(db, "CREATE TABLE blobs (id int, doc text, label bool) WITH (autovacuum_enabled = off)")
    query(db, "INSERT INTO blobs SELECT i, repeat(md5(i::text), 16000), i % 2 = 0 FROM generate_series(1, 800) i")
    query(db, "ANALYZE blobs")
    configure(gov[1], memory_per_job="200MB")
    pid = db.get_backend_pid()
    e = pytest.raises(psycopg2.Error, query, db,
                      "SELECT * FROM sqlml.train('blobs', 'blobs', 'label', time_budget => '1 second', "
                      "algorithms => '{linear}')").value
    assert e.pgcode == "53200"
    assert "ran out of memory" in e.diag.message_primary and "200 MB" in e.diag.message_primary
    assert "Traceback" not in e.diag.message_primary
    assert scalar(db, "SELECT pg_backend_pid()") == pid  # the same backend answers
    query(db, """DO $$ import resource; assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY
                 $$ LANGUAGE plpython3u""")  # the cap is gone
    job = job_of(db, "blobs")
    assert job["state"] == "failed" and job["sqlstate"] == "53200" and registry_is_clean(db, "blobs")
    query(db, "SELECT * FROM sqlml.train('after_oom', 'small', 'label', time_budget => '1 second', "
              "algorithms => '{linear}', exclude => '{id}')")
    assert job_of(db, "after_oom")["state"] == "succeeded"


def test_an_imported_graph_over_the_memory_cap_fails_cleanly_and_registers_nothing(gov, db):
    # Abs first: core.split folds nothing of the growth, ONNX Runtime meets it. 200 rows of 2**20
    # columns: 800 MB for the last tensor alone, far over the cap, yet harmless to this machine
    # should the cap ever stop applying to imports.
    configure(gov[1], memory_per_job="64MB")
    pid = db.get_backend_pid()
    e = pytest.raises(psycopg2.Error, query, db,
                      "SELECT * FROM sqlml.import_model('oom_import', %s, 'regression', 'small', target => 'b', "
                      """options => '{"max_rows": 200}')""", (doubling_graph(20, first="Abs"),)).value
    assert e.pgcode == "53200", e.diag.message_primary
    assert "ran out of memory" in e.diag.message_primary and "64 MB" in e.diag.message_primary
    assert "sqlml.memory_per_job" in e.diag.message_hint and "max_rows" in e.diag.message_hint
    assert scalar(db, "SELECT 1") == 1 and scalar(db, "SELECT pg_backend_pid()") == pid  # the same backend lives
    query(db, """DO $$ import resource; assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY
                 $$ LANGUAGE plpython3u""")  # the cap is gone
    job = job_of(db, "oom_import")
    assert job["state"] == "failed" and job["sqlstate"] == "53200" and registry_is_clean(db, "oom_import")
    assert scalar(db, "SELECT kind FROM sqlml.jobs WHERE job_id = %s", (job["job_id"],)) == "import_model"


def test_the_denial_of_service_graph_is_refused_before_it_runs(gov, db):
    # The reported graph: 24 Concat doublings (16 million columns a row), then a Gather. Four rows
    # and a low cap keep it harmless should both defences ever regress.
    configure(gov[1], memory_per_job="64MB")
    blob = doubling_graph(24)
    assert len(blob) < 2000
    pid = db.get_backend_pid()
    e = pytest.raises(psycopg2.Error, query, db,
                      "SELECT * FROM sqlml.import_model('dos_import', %s, 'regression', 'small', target => 'b', "
                      """options => '{"max_rows": 4}')""", (blob,)).value
    assert e.pgcode == "0A000", e.diag.message_primary
    assert "columns; sqlml scores rows of at most" in e.diag.message_primary and "Concat" in e.diag.message_primary
    assert scalar(db, "SELECT 1") == 1 and scalar(db, "SELECT pg_backend_pid()") == pid
    job = job_of(db, "dos_import")
    assert job["state"] == "failed" and job["sqlstate"] == "0A000" and registry_is_clean(db, "dos_import")


# --- cancellation -----------------------------------------------------------------------------------

def _stopped(training, project, conn, why):
    training.finish(120)  # far less than LONG: the cancel or the timeout stopped it
    assert training.error is not None and training.error.pgcode == "57014", training.error
    assert why in training.error.diag.message_primary
    job = job_of(conn, project)
    assert job["state"] == "cancelled" and why in job["error"]
    assert registry_is_clean(conn, project)
    assert scalar(training.conn, "SELECT 1") == 1  # the session goes on


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sqlml.cancel", "pg_cancel_backend"])
def test_cancel_a_running_training(gov, db, how):
    t = Training(gov[1], f"cancel_{how}", budget=LONG)
    t.start()
    job_id = searching(db, t.project)
    if how == "sqlml.cancel":
        assert scalar(db, "SELECT sqlml.cancel(%s)", (job_id,)) is True
        _stopped(t, t.project, db, "cancelled by postgres")
        assert scalar(db, "SELECT sqlml.cancel(%s)", (job_id,)) is False  # already ended
    else:
        assert scalar(db, "SELECT pg_cancel_backend(%s)", (t.pid,))
        _stopped(t, t.project, db, "canceling statement due to user request")


@pytest.mark.slow
def test_cancel_says_requested_while_the_job_still_runs(gov, db):
    """sqlml.cancel's true means the cancel was requested, not that the job has ended: a backend that
    cannot reach its next interrupt check (stopped with SIGSTOP) is still running when the call
    returns, and a NOTICE says so; it stops, cancelled, once it runs again."""
    t = Training(gov[1], "cancel_stopped", budget=LONG)
    t.start()
    job_id = searching(db, t.project)
    os.kill(t.pid, signal.SIGSTOP)
    try:
        del db.notices[:]
        assert scalar(db, "SELECT sqlml.cancel(%s)", (job_id,)) is True
        assert any(f"job {job_id} was asked to stop but is still running" in n for n in db.notices), db.notices
        assert job_of(db, t.project)["state"] == "running"
    finally:
        os.kill(t.pid, signal.SIGCONT)
    _stopped(t, t.project, db, "cancelled by postgres")


@pytest.mark.slow
def test_statement_timeout_and_cancel_while_queued(gov, db):
    dsn = gov[1]
    runner = Training(dsn, "st_running", budget=LONG)  # holds the only slot until cancelled
    runner.start()
    job_of(db, "st_running", state="running")
    timed = Training(dsn, "st_queued", setup=[*WARM, "SET statement_timeout = '1s'"])
    timed.start()
    _stopped(timed, "st_queued", db, "statement timeout")
    queued = Training(dsn, "cancel_queued")
    queued.start()
    job = job_of(db, "cancel_queued", state="queued")
    assert job["queue_position"] == 1
    assert scalar(db, "SELECT sqlml.cancel(%s)", (job["job_id"],)) is True
    _stopped(queued, "cancel_queued", db, "cancelled by postgres")
    assert scalar(db, "SELECT sqlml.cancel(job_id) FROM sqlml.jobs WHERE project = 'st_running'")
    _stopped(runner, "st_running", db, "cancelled by postgres")
    # and a running training: its budget is an hour, so only the timeout can end it
    timed = Training(dsn, "st_timed_out", budget=LONG, setup=[*WARM, "SET statement_timeout = '3s'"])
    timed.start()
    _stopped(timed, "st_timed_out", db, "statement timeout")


def test_cancel_is_for_the_job_s_own_role(gov, db):
    query(db, "DO $$ BEGIN CREATE ROLE gov_other LOGIN IN ROLE sqlml_user; "
              "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    query(db, "SELECT * FROM sqlml.train('mine', 'small', 'label', time_budget => '1 second', "
              "algorithms => '{linear}', exclude => '{id}')")
    job = job_of(db, "mine")
    other = connect(gov[1].replace("postgres@", "gov_other@"))
    e = pytest.raises(psycopg2.Error, query, other, "SELECT sqlml.cancel(%s)", (job["job_id"],)).value
    assert e.pgcode == "42501" and "role postgres" in e.diag.message_primary
    e = pytest.raises(psycopg2.Error, query, other, "SELECT sqlml.cancel(424242)").value
    assert e.pgcode == "42704"
    seen = query(other, "SELECT role, state, project, error FROM sqlml.jobs WHERE job_id = %s", (job["job_id"],))
    assert seen == [("postgres", "succeeded", None, None)]  # like pg_stat_activity: others' details hidden
    query(db, "GRANT sqlml_admin TO gov_other")
    try:
        assert query(other, "SELECT project FROM sqlml.jobs WHERE job_id = %s", (job["job_id"],)) == [("mine",)]
        assert scalar(other, "SELECT sqlml.cancel(%s)", (job["job_id"],)) is False  # allowed; it had ended
    finally:
        query(db, "REVOKE sqlml_admin FROM gov_other")
    other.close()


@pytest.mark.slow
def test_kill_9_leaves_a_failed_job_and_a_free_slot(gov, db):
    cluster, dsn = gov
    t = Training(dsn, "killed", budget=LONG)
    t.start()
    job = {"job_id": searching(db, "killed")}
    os.kill(t.pid, signal.SIGKILL)  # the postmaster restarts every backend (crash recovery)
    t.finish(60)
    assert t.error is not None
    conn = reconnect_after_crash(db, dsn)
    row = job_of(conn, "killed")
    assert row["job_id"] == job["job_id"] and row["state"] == "failed"
    assert f"pid {t.pid}" in row["error"] and row["sqlstate"] == "57P01"
    assert registry_is_clean(conn, "killed")
    query(conn, "SELECT * FROM sqlml.train('after_kill', 'small', 'label', time_budget => '1 second', "
                "algorithms => '{linear}', exclude => '{id}')")  # the only slot is free
    assert not any("queued" in n for n in conn.notices)
    conn.close()


# --- jobs of every kind, the report ----------------------------------------------------------------

@pytest.mark.slow
def test_scoring_runs_as_a_job_and_the_registry_links_the_training_job(db):
    query(db, "SELECT * FROM sqlml.train('scored', 'small', 'label', time_budget => '1 second', "
              "algorithms => '{linear}', exclude => '{id}')")
    train_job = job_of(db, "scored")
    assert scalar(db, "SELECT job_id FROM sqlml.models WHERE project = 'scored'") == train_job["job_id"]
    assert scalar(db, "SELECT count(*) FROM sqlml.predict_batch('scored', 'small', 'id')") == 2000
    query(db, "SELECT sqlml.score('scored', 'small', 'scored_out', 'id')")
    kinds = query(db, "SELECT kind, state, rows, threads, predicted_seconds > 0, predicted_peak_bytes > 0, "
                      "actual_seconds > 0, submitted_at <= started_at AND started_at <= finished_at "
                      "FROM sqlml.jobs WHERE project = 'scored' ORDER BY job_id")
    assert kinds == [("train", "succeeded", 2000, 1, True, True, True, True),
                     ("predict_batch", "succeeded", 2000, 1, True, True, True, True),
                     ("score", "succeeded", 2000, 1, True, True, True, True)]
    report = query(db, "SELECT kind, quantity, jobs > 0, mdape >= 0 FROM sqlml.governor_report()")
    assert ("train", "seconds", True, True) in [(k, q, j, m) for k, q, j, m in report]


# --- workload management: lanes, yielding, honest budgets and states ----------------------------------

def _progress(conn, job_id):
    return scalar(conn, "SELECT progress FROM sqlml.jobs WHERE job_id = %s", (job_id,)) or {}


@pytest.mark.slow
def test_small_batch_scoring_never_waits_behind_training_and_training_yields(gov, db):
    dsn = gov[1]
    query(db, "SELECT * FROM sqlml.train('lane', 'small', 'label', time_budget => '1 second', "
              "algorithms => '{linear}', exclude => '{id}')")
    long = Training(dsn, "lane_long", budget=LONG)  # it must still run after the checks, however slow the machine
    long.start()
    training = job_of(db, "lane_long", state="running")
    wait_until(lambda: _progress(db, training["job_id"]).get("trials"), "lane_long in its search", 120)
    # interactive work beside it (a statement busy on the CPU): the fits move to niceness 10
    # (sqlml.training_nice) on a helper thread; the backend's own thread (pid) keeps its priority,
    # so the pooled connection is not slowed after the training; once the work has passed, the
    # next fit runs at full priority again
    busy = connect(dsn)
    busy_pid = busy.get_backend_pid()
    burner = threading.Thread(target=lambda: pytest.raises(
        psycopg2.Error, query, busy, "DO $$BEGIN FOR i IN 1..2000000000 LOOP END LOOP; END$$"), daemon=True)
    burner.start()
    # the statement runs before the cancel is sent (a cancel of an idle backend is lost, and the loop
    # would then run to its end)
    wait_until(lambda: scalar(db, "SELECT state FROM pg_stat_activity WHERE pid = %s", (busy_pid,)) == "active",
              "the busy statement running")
    wait_until(lambda: 10 in niceness(long.pid).values(), "a fit niced while a statement runs beside it")
    assert niceness(long.pid)[long.pid] == 0
    query(db, "SELECT pg_cancel_backend(%s)", (busy_pid,))
    burner.join(30)
    assert not burner.is_alive(), "the busy statement was not cancelled"
    busy.close()
    wait_until(lambda: set(niceness(long.pid).values()) == {0}, "full priority once the statement ended")

    # the only slot is busy: a small predict_batch runs at once in the interactive lane
    assert scalar(db, "SELECT count(*) FROM sqlml.predict_batch('lane', 'small', 'id')") == 2000
    batch = query(db, "SELECT state, lane FROM sqlml.jobs WHERE kind = 'predict_batch' ORDER BY job_id DESC LIMIT 1")
    assert batch == [("succeeded", "interactive")]
    assert job_of(db, "lane_long")["state"] == "running"  # it did not wait for the training to end
    assert not any("queued" in n for n in db.notices)

    # a scoring job predicted above sqlml.interactive_seconds is governed: it waits, and says why
    configure(dsn, interactive_seconds="0")
    big = connect(dsn)
    batch_sql = "SELECT count(*) FROM sqlml.predict_batch('lane', 'small', 'id')"
    waiting = threading.Thread(target=lambda: pytest.raises(psycopg2.Error, query, big, batch_sql), daemon=True)
    waiting.start()
    queued = job_of(db, "lane", state="queued")
    sql = "SELECT lane, wait_reason FROM sqlml.jobs WHERE job_id = %s"
    seen = wait_until(lambda: (row := query(db, sql, (queued["job_id"],))[0])[1] is not None and row,
                      "the queued job's wait reason (set at its first poll)", 60)
    assert seen == ("governed", f"all 1 slot busy (sqlml.slots); running: job {training['job_id']}")
    assert scalar(db, "SELECT sqlml.cancel(%s)", (queued["job_id"],)) is True
    waiting.join(30)
    big.close()
    assert scalar(db, "SELECT sqlml.cancel(%s)", (training["job_id"],)) is True  # through the helper thread too
    _stopped(long, "lane_long", db, "cancelled by postgres")


def test_a_rolled_back_training_is_not_shown_as_succeeded(gov, db):
    tx = psycopg2.connect(gov[1])  # not autocommit: the training runs inside BEGIN ... ROLLBACK
    for project, end in (("rolled", tx.rollback), ("kept", tx.commit)):
        query(tx, "SELECT * FROM sqlml.train(%s, 'small', 'label', time_budget => '1 second', "
                  "algorithms => '{linear}', exclude => '{id}')", (project,))
        job = job_of(db, project)
        assert job["state"] == "uncommitted"  # done, but its model exists only in the open transaction
        end()
        job = job_of(db, project)
        assert job["state"] == ("rolled_back" if project == "rolled" else "succeeded"), job
        assert scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = %s", (project,)) == \
            (0 if project == "rolled" else 1)
    assert "rolled back" in job_of(db, "rolled")["error"]
    # a rerun that returns the earlier version writes nothing: it succeeded, whatever its transaction
    query(db, "SELECT * FROM sqlml.train('kept', 'small', 'label', time_budget => '1 second', "
              "algorithms => '{linear}', exclude => '{id}')")
    assert any("trained on the same data with the same settings" in n for n in db.notices)
    assert job_of(db, "kept")["state"] == "succeeded"
    # the transaction commits, but the training's savepoint was rolled back: no model, not succeeded
    query(tx, "SAVEPOINT before_training")
    query(tx, "SELECT * FROM sqlml.train('saved', 'small', 'label', time_budget => '1 second', "
              "algorithms => '{linear}', exclude => '{id}')")
    query(tx, "ROLLBACK TO SAVEPOINT before_training")
    tx.commit()
    assert job_of(db, "saved")["state"] == "rolled_back"
    tx.close()
    counts = dict(query(db, "SELECT * FROM sqlml.job_counts()"))
    assert counts["rolled_back"] >= 1 and counts["uncommitted"] == 0


def test_the_budget_counts_from_the_sql_entry_cold_imports_included(gov):
    fresh = connect(gov[1])  # a new backend: the ML stack is imported inside the call
    # every algorithm asked for; a 1 s budget is shorter than the finish's reserve (1.04 s), so
    # whatever the clock says, the search is a sprint: one linear trial, registered without a refit
    query(fresh, "SELECT * FROM sqlml.train('cold', 'small', 'label', time_budget => '1 second', "
                 "exclude => '{id}')")
    job = job_of(fresh, "cold")
    progress = _progress(fresh, job["job_id"])
    assert progress["budget_seconds"] == 1.0
    # the seconds of the budget spent before the search (importing scikit-learn, LightGBM, ONNX
    # Runtime takes far more than 50 ms): the clock started at the call, not at the search
    assert progress["startup_seconds"] > 0.05
    spent = scalar(fresh, "SELECT train_seconds FROM sqlml.models WHERE project = 'cold'")
    assert spent >= progress["startup_seconds"]
    trials = query(fresh, "SELECT algorithm, origin FROM sqlml.trials WHERE project = 'cold'")
    assert trials == [("linear", "portfolio")]
    assert scalar(fresh, "SELECT metrics->>'refit' FROM sqlml.models WHERE project = 'cold'") == \
        "fit part of the validation split"
    fresh.close()
