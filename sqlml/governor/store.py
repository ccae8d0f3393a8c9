"""The cluster-wide job store: one SQLite file plus one lock file per live job, in a directory.

Why not tables: a job's state must be visible to other sessions while its training transaction
is still open, and must survive that transaction's rollback (a cancelled training rolls back);
and slots are shared by every database of the cluster. The server keeps the store under its
data directory (``$PGDATA/sqlml``), which only the server's OS user can write.

Liveness without trust: a job holds an exclusive ``flock`` on its own lock file for as long as
its backend runs it. The kernel releases the lock when the process dies, however it dies
(kill -9 included), so a queued or running job whose lock can be taken belongs to a dead backend:
:meth:`JobStore.reconcile` marks it failed, which frees its slot. Every mutation runs in one
SQLite write transaction (``BEGIN IMMEDIATE``), which serialises admission across backends.

Times are Unix epoch seconds; memory is bytes.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager

from sqlml.errors import OBJECT_NOT_IN_PREREQUISITE_STATE, SqlmlError
from sqlml.governor import workload
from sqlml.governor.admission import assign

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
# a job whose work succeeded but whose transaction (and so its registry writes) is still open, or
# was rolled back: shown so by sqlml.jobs, which resolves it from the transaction's status
UNCOMMITTED, ROLLED_BACK = "uncommitted", "rolled_back"
ROLLED_BACK_ERROR = ("the job succeeded, but its transaction (or savepoint) was rolled back: nothing it wrote "
                     "(a model, a table) was kept")
ACTIVE = (QUEUED, RUNNING)
KEEP_FINISHED = 10_000  # finished jobs kept for sqlml.jobs and the cost model

# The store's own schema version, in SQLite's ``PRAGMA user_version``: the store outlives the sqlml
# that wrote it (it lives under $PGDATA, and an upgrade of sqlml keeps it), so each sqlml migrates
# what it finds, step by step, and refuses a store newer than itself. Version 0 is a new file or a
# store of sqlml 0.1.0, which kept no version. Add a step to _MIGRATIONS for every change.
STORE_VERSION = 2

JOBS_TABLE = """
CREATE TABLE IF NOT EXISTS jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT NOT NULL,        -- train | predict_batch | score | import_model
    state             TEXT NOT NULL,        -- queued | running | succeeded | failed | cancelled
    role              TEXT NOT NULL,
    database          TEXT NOT NULL,
    project           TEXT,
    pid               INTEGER NOT NULL,
    lock              TEXT NOT NULL,        -- lock file name, held while the job is active
    submitted         REAL NOT NULL,
    started           REAL,
    finished          REAL,
    threads           INTEGER,
    rows              INTEGER,
    features          TEXT,                 -- JSON: what the cost model predicts from
    predicted_seconds REAL,
    predicted_peak    INTEGER,
    predicted_by      TEXT,                 -- analytic | learned
    analytic_seconds  REAL,                 -- the analytic estimate, kept to report the learned model's gain
    analytic_peak     INTEGER,
    actual_seconds    REAL,
    actual_peak       INTEGER,
    cancel_requested  TEXT,                 -- the role that asked, once sqlml.cancel was called
    error             TEXT,
    sqlstate          TEXT,
    progress          TEXT                  -- JSON: a running training's trials, best score, budget (sqlml jobs)
)"""


def _to_version_1(db: sqlite3.Connection) -> None:
    """A new store, or one of sqlml 0.1.0 (whose development stores may lack ``progress``)."""
    db.execute(JOBS_TABLE)
    if "progress" not in {r[1] for r in db.execute("PRAGMA table_info(jobs)")}:
        db.execute("ALTER TABLE jobs ADD COLUMN progress TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS jobs_active ON jobs (state) WHERE state IN ('queued', 'running')")


def _to_version_2(db: sqlite3.Connection) -> None:
    """Workload classes: a job's lane, why it waits, and the transaction a succeeded job wrote in."""
    for column in ("lane", "wait_reason", "xid"):  # governed | interactive; text; txid, until resolved
        db.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")


_MIGRATIONS = {0: _to_version_1, 1: _to_version_2}  # the version a store is at -> the step to the next one


def migrate(db: sqlite3.Connection) -> None:
    """Bring the store in ``db`` to STORE_VERSION, in one write transaction (backends opening it at
    once migrate it once)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > STORE_VERSION:
            raise SqlmlError(f"the job store is at version {version}, newer than this sqlml's {STORE_VERSION}",
                             detail="a newer sqlml wrote it, and this one cannot read it",
                             hint="install that newer sqlml on the server again (sqlml install)",
                             sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE)
        while version < STORE_VERSION:
            _MIGRATIONS[version](db)
            version += 1
        db.execute(f"PRAGMA user_version = {STORE_VERSION}")  # in the transaction: all steps or none
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


UPDATABLE = {"project", "threads", "rows", "features", "predicted_seconds", "predicted_peak", "predicted_by",
             "analytic_seconds", "analytic_peak", "actual_seconds", "actual_peak", "error", "sqlstate", "progress",
             "xid"}


class JobStore:
    """One store per directory; one instance per process (it holds the locks of its own jobs)."""

    def __init__(self, directory: str):
        self.dir = directory
        self.lock_dir = os.path.join(directory, "locks")
        self.cancel_dir = os.path.join(directory, "cancel")
        for d in (directory, self.lock_dir, self.cancel_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self._db: sqlite3.Connection | None = None
        self._held: dict[int, tuple[int, str]] = {}  # job id -> (fd holding its lock, lock name)

    # --- plumbing --------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(os.path.join(self.dir, "jobs.db"), timeout=30.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
            db.execute("PRAGMA synchronous = NORMAL")
            if db.execute("PRAGMA user_version").fetchone()[0] != STORE_VERSION:
                migrate(db)
            self._db = db
        return self._db

    @contextmanager
    def _write(self):
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _lock_path(self, token: str) -> str:
        return os.path.join(self.lock_dir, token)

    def _alive(self, token: str) -> bool:
        """True while some process holds the lock ``token`` (or this process holds it)."""
        try:
            fd = os.open(self._lock_path(token), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases the lock if we took it
        return False

    # --- the life of a job -----------------------------------------------------------------------

    def submit(self, kind: str, role: str, database: str, project: str | None, pid: int) -> int:
        """A new queued job, held alive by this process; returns its id."""
        token = f"{pid}-{secrets.token_hex(8)}"
        fd = os.open(self._lock_path(token), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # before the row exists, so the row is never seen unlocked
        try:
            with self._write() as db:
                job_id = db.execute(
                    "INSERT INTO jobs (kind, state, role, database, project, pid, lock, submitted) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (kind, QUEUED, role, database, project, pid, token, time.time())).lastrowid
        except BaseException:
            os.close(fd)
            os.unlink(self._lock_path(token))
            raise
        self._held[job_id] = (fd, token)
        return job_id

    def update(self, job_id: int, **values) -> None:
        bad = set(values) - UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        for key in ("features", "progress"):
            if key in values and not isinstance(values[key], str):
                values[key] = json.dumps(values[key])
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._write() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values.values(), job_id))

    def try_start(self, job_id: int, slots: int, role_slots: int, load: workload.Load | None = None,
                  peak: int = 0) -> dict:
        """Start ``job_id`` in the governed lane if the queue, the limits and the load allow it now.

        ``slots`` is the ceiling; with a ``load`` reading, fewer may run (``workload.concurrency``,
        for a job predicted to peak at ``peak`` bytes). Returns {"started": bool, "position": int
        (0 once started), "queued": n, "running": [rows], "ahead": [rows], "reason": why it waits}.
        """
        with self._write() as db:
            self._reconcile(db)
            active = db.execute("SELECT * FROM jobs WHERE state IN ('queued', 'running') "
                                "AND coalesce(lane, 'governed') = 'governed' ORDER BY id").fetchall()
            running = [r for r in active if r["state"] == RUNNING]
            queued = [r for r in active if r["state"] == QUEUED]
            mine = next((r for r in queued if r["id"] == job_id), None)
            if mine is None:
                raise LookupError(f"job {job_id} is not queued")
            room = workload.concurrency(slots, load, [workload.Running(r["threads"] or 1, r["predicted_peak"] or 0)
                                                      for r in running], mine["threads"] or 1, peak)
            a = assign([r["role"] for r in running], [(r["id"], r["role"]) for r in queued], room.slots, role_slots)
            # the oldest startable job goes first: start order is queue order, not polling order
            started = job_id in a.startable and job_id == min(a.startable)
            ahead = [r for r in queued if a.positions[r["id"]] < a.positions[job_id]]
            reason = None if started else self._wait_reason(mine, running, ahead, room, role_slots)
            if started:
                db.execute("UPDATE jobs SET state = ?, started = ?, lane = ?, wait_reason = NULL WHERE id = ?",
                           (RUNNING, time.time(), workload.GOVERNED, job_id))
            elif reason != mine["wait_reason"]:
                db.execute("UPDATE jobs SET wait_reason = ?, lane = ? WHERE id = ?",
                           (reason, workload.GOVERNED, job_id))
            return {"started": started, "position": 0 if started else a.positions[job_id], "queued": len(queued),
                    "running": [dict(r) for r in running], "ahead": [dict(r) for r in ahead], "reason": reason}

    @staticmethod
    def _wait_reason(mine, running, ahead, room: workload.Concurrency, role_slots: int) -> str:
        if len(running) >= room.slots:
            busy = ", ".join(str(r["id"]) for r in running)
            return f"{room.reason}; running: job{'s' if len(running) != 1 else ''} {busy or 'none'}"
        same_role = sum(1 for r in running if r["role"] == mine["role"])
        if same_role >= role_slots:
            return f"role {mine['role']} runs {same_role} of at most {role_slots} jobs (sqlml.role_slots)"
        return f"behind job {ahead[0]['id']}, queued earlier" if ahead else "starting"

    def start_interactive(self, job_id: int) -> None:
        """Run ``job_id`` at once in the interactive lane: no slot, no queue."""
        with self._write() as db:
            db.execute("UPDATE jobs SET state = ?, started = ?, lane = ? WHERE id = ? AND state = ?",
                       (RUNNING, time.time(), workload.INTERACTIVE, job_id, QUEUED))

    def finish(self, job_id: int, state: str, **values) -> None:
        """Record the end of a job this process runs, then let go of its lock."""
        assert state not in ACTIVE
        values = {k: v for k, v in values.items() if v is not None}
        bad = set(values) - UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        sets = "".join(f", {k} = ?" for k in values)
        try:
            with self._write() as db:
                db.execute(f"UPDATE jobs SET state = ?, finished = ?{sets} WHERE id = ?",
                           (state, time.time(), *values.values(), job_id))
                self._prune(db)
        finally:
            held = self._held.pop(job_id, None)
            if held is not None:
                fd, token = held
                os.unlink(self._lock_path(token))
                os.close(fd)
            self._clear_cancel(job_id)

    def resolve_transactions(self, outcomes: dict[int, str | None]) -> None:
        """Record what became of succeeded jobs' transactions, ``{job id: status}`` with PostgreSQL's
        ``txid_status``: 'committed' (the job stays succeeded), 'aborted' (its writes were rolled
        back: the job is ``rolled_back``), None (too old to tell: it stays succeeded)."""
        with self._write() as db:
            for job_id, status in outcomes.items():
                if status == "aborted":
                    db.execute("UPDATE jobs SET state = ?, xid = NULL, error = ? WHERE id = ? AND state = ?",
                               (ROLLED_BACK, ROLLED_BACK_ERROR, job_id, SUCCEEDED))
                elif status != "in progress":
                    db.execute("UPDATE jobs SET xid = NULL WHERE id = ?", (job_id,))

    # --- cancellation ----------------------------------------------------------------------------

    def request_cancel(self, job_id: int, by: str) -> None:
        """Flag an active job for cancellation; its backend sees the flag at its next check."""
        with self._write() as db:
            db.execute("UPDATE jobs SET cancel_requested = ? WHERE id = ? AND state IN ('queued', 'running')",
                       (by, job_id))
        open(os.path.join(self.cancel_dir, str(int(job_id))), "w").close()

    def cancel_requested(self, job_id: int) -> bool:
        """Cheap (one stat): called at every interrupt check of a running job."""
        return os.path.exists(os.path.join(self.cancel_dir, str(int(job_id))))

    def _clear_cancel(self, job_id: int) -> None:
        try:
            os.unlink(os.path.join(self.cancel_dir, str(int(job_id))))
        except FileNotFoundError:
            pass

    # --- reading ---------------------------------------------------------------------------------

    def get(self, job_id: int) -> dict | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def active(self) -> list[dict]:
        """Queued and running jobs (no reconciliation: a cheap read)."""
        return [dict(r) for r in self._conn().execute("SELECT * FROM jobs WHERE state IN ('queued', 'running')")]

    def jobs(self, slots: int, role_slots: int, limit: int = KEEP_FINISHED) -> list[dict]:
        """Every job, newest first, with ``position`` (1-based) for queued jobs; dead ones reconciled."""
        with self._write() as db:
            self._reconcile(db)
        rows = [dict(r) for r in self._conn().execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))]
        running = [r["role"] for r in rows if r["state"] == RUNNING and r["lane"] != workload.INTERACTIVE]
        queued = [(r["id"], r["role"]) for r in rows if r["state"] == QUEUED]
        positions = assign(running, queued, slots, role_slots).positions
        for r in rows:
            r["position"] = positions.get(r["id"])
        return rows

    def succeeded_since(self, kinds: tuple[str, ...], last_id: int) -> int:
        """How many jobs of ``kinds`` after job ``last_id`` have joined ``history(kinds)``."""
        marks = ", ".join("?" for _ in kinds)
        return self._conn().execute(
            f"SELECT count(*) FROM jobs WHERE kind IN ({marks}) AND state = 'succeeded' AND id > ? "
            "AND features IS NOT NULL AND actual_seconds IS NOT NULL AND actual_peak IS NOT NULL",
            (*kinds, last_id)).fetchone()[0]

    def history(self, kinds: tuple[str, ...], limit: int = 500) -> list[dict]:
        """The newest succeeded jobs of ``kinds`` with their features and actual cost, oldest first."""
        marks = ", ".join("?" for _ in kinds)
        rows = self._conn().execute(
            f"SELECT * FROM jobs WHERE kind IN ({marks}) AND state = 'succeeded' AND features IS NOT NULL "
            "AND actual_seconds IS NOT NULL AND actual_peak IS NOT NULL ORDER BY id DESC LIMIT ?", (*kinds, limit))
        return [dict(r) for r in reversed(rows.fetchall())]

    def finished(self, limit: int = KEEP_FINISHED) -> list[dict]:
        """Finished jobs that had predictions and actual costs (the cost model's report card)."""
        rows = self._conn().execute(
            "SELECT * FROM jobs WHERE state = 'succeeded' AND predicted_seconds IS NOT NULL "
            "AND actual_seconds IS NOT NULL ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    # --- housekeeping ----------------------------------------------------------------------------

    def reconcile(self) -> int:
        with self._write() as db:
            return self._reconcile(db)

    def _reconcile(self, db) -> int:
        """Mark active jobs whose backend is gone as failed; returns how many."""
        dead = [r for r in db.execute("SELECT id, state, pid, lock FROM jobs WHERE state IN ('queued', 'running')")
                if r["id"] not in self._held and not self._alive(r["lock"])]
        for r in dead:
            db.execute("UPDATE jobs SET state = ?, finished = ?, error = ?, sqlstate = ? WHERE id = ?",
                       (FAILED, time.time(),
                        f"the backend (pid {r['pid']}) ended while the job was {r['state']}: "
                        "it was terminated or crashed", "57P01", r["id"]))
            for path in (self._lock_path(r["lock"]), os.path.join(self.cancel_dir, str(r["id"]))):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        return len(dead)

    def _prune(self, db) -> None:
        db.execute("DELETE FROM jobs WHERE state NOT IN ('queued', 'running') AND id <= "
                   "(SELECT id FROM jobs ORDER BY id DESC LIMIT 1 OFFSET ?)", (KEEP_FINISHED,))
