"""The governor inside a backend: every training and batch-scoring call runs as a job.

``run(kind, project, fn)`` registers the job (queued, visible at once in ``sqlml.jobs`` of every
database), runs ``fn``, and records how it ended. Before reading data, the training calls
``admit_training`` (a batch scoring: ``admit_scoring``): the cost model predicts the job's
seconds and peak memory, the governor samples or refuses what would not fit under
``sqlml.memory_per_job``, and picks the job's lane (``sqlml.governor.workload``): small scoring
starts at once; everything else waits in the FIFO queue until the slots and the server's load
allow it (cancellable, NOTICE lines and ``wait_reason`` saying why), then caps the backend's
address space and thread pools until the job ends. A job that wrote (a training's model, a
scoring's table) records its transaction, so that ``sqlml.jobs`` never calls succeeded what was
rolled back. Decisions and arithmetic live in ``sqlml.governor`` (a training's cost features, the
queue's estimated wait); which model ``name@version`` means, in ``sqlml.registry``. This module adapts
them to PL/Python, and serves the SQL surface: ``sqlml.jobs``, ``sqlml.cancel``,
``sqlml.governor_report``, ``sqlml.governor_settings``.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import replace

from sqlml.errors import INSUFFICIENT_PRIVILEGE, OUT_OF_MEMORY, QUERY_CANCELED, UNDEFINED_OBJECT, SqlmlError
from sqlml.governor import admission, costmodel, limits, load, priority, workload
from sqlml.governor import settings as gsettings
from sqlml.governor.store import (
    CANCELLED,
    FAILED,
    ROLLED_BACK,
    ROLLED_BACK_ERROR,
    RUNNING,
    SUCCEEDED,
    UNCOMMITTED,
    JobStore,
)
from sqlml.registry import store as registry
from sqlml.server import pg_internals, privileged
from sqlml.server.spi import spi

INSUFFICIENT_RESOURCES = "53000"
POLL_SECONDS = 0.2  # queue polling; also how fast a queued job notices a cancel
SETTINGS_REFRESH = 5.0  # seconds between re-reads of the slot settings while a job waits
CANCEL_GRACE = 1.0  # seconds a running job gets to stop at its own checkpoint before it is signalled
CANCEL_WAIT = 5.0  # seconds sqlml.cancel waits to report the job ended
# Imported once a job holds its slot, before its memory meter and cap start: a backend's first job
# would otherwise count ~200 MB of libraries as its own. (Their loading time, a few seconds, does
# count: the cost model has a feature for it, ``cold``.)
_ML = ("pandas", "sklearn.pipeline", "sklearn.linear_model", "sklearn.ensemble", "sklearn.model_selection",
       "lightgbm", "onnxruntime", "skl2onnx", "onnxmltools", "sqlml.automl.front", "sqlml.onnx.convert",
       "sqlml.onnx.parity")
# batch scoring runs compiled code (ONNX Runtime only for a model the compiler does not take)
WARM_MODULES = {"train": _ML, "predict_batch": ("llvmlite.binding",), "score": ("llvmlite.binding",),
                "import_model": ("onnx", "onnxruntime", "llvmlite.binding", "sqlml.automl.metrics",
                                 "sqlml.onnx.parity", "sqlml.onnx.imported")}
# backends running a statement on the CPU (not waiting for a lock, a sleep, the client), other than
# this one and the governed jobs' (a queued job's backend sleeps between polls): interactive work
ACTIVE_BACKENDS = """SELECT count(*)::int AS n FROM pg_catalog.pg_stat_activity
    WHERE state = 'active' AND backend_type = 'client backend' AND wait_event IS NULL
      AND pid <> pg_backend_pid() AND pid <> ALL($1::int[])"""
INTERACTIVE_SAMPLE = 0.1  # seconds between two looks at pg_stat_activity from a running training
INTERACTIVE_HOLD = 1.0  # seconds a training keeps yielding after it last saw interactive work

_store: JobStore | None = None
_current: Job | None = None
_fitted = costmodel.Refitted()


def store() -> JobStore:
    """The cluster's job store, under the data directory (``$PGDATA/sqlml``)."""
    global _store
    if _store is None:
        _store = JobStore(os.path.join(pg_internals.data_directory(), "sqlml"))
    return _store


def current_settings() -> tuple[gsettings.Settings, dict]:
    """(settings, sources) from the configuration files, read as the extension owner."""
    rows = privileged.run(lambda ex: ex.execute(
        "SELECT name, setting FROM pg_catalog.pg_file_settings "
        "WHERE name LIKE 'sqlml.%' AND error IS NULL AND applied ORDER BY seqno"))
    return gsettings.from_config({r["name"]: r["setting"] for r in rows})


class Job:
    def __init__(self, kind: str, project: str | None):
        self.kind = kind
        self.settings = current_settings()[0]
        who = spi.execute("SELECT current_user::text AS r, current_database()::text AS d, pg_backend_pid() AS p")[0]
        self.role = who["r"]
        self.id = store().submit(kind, who["r"], who["d"], project, int(who["p"]))
        self.stack = ExitStack()
        self.features: costmodel.Features | None = None
        self.rows: int | None = None
        self.t0: float | None = None
        self.meter: limits.PeakMeter | None = None
        self.queued = 0.0  # seconds spent waiting for a slot
        self.xid: str | None = None  # the transaction the job wrote in (a model, a table), once it has
        self.progress: dict = {}
        self.load = LoadMeter()

    @property
    def threads(self) -> int:
        return self.settings.threads_per_job

    def cold(self) -> bool:
        """True when this backend has yet to load the libraries the job needs."""
        return any(m not in sys.modules for m in WARM_MODULES[self.kind])

    def model(self) -> costmodel.CostModel:
        return _fitted.model(store(), self.kind)

    def predict(self, features: costmodel.Features, model: costmodel.CostModel) -> costmodel.Prediction:
        p = model.predict(features)
        self.features = features
        store().update(self.id, features=features.to_json(), threads=self.threads, predicted_seconds=p.seconds,
                       predicted_peak=p.peak, predicted_by=p.by, analytic_seconds=p.analytic_seconds,
                       analytic_peak=p.analytic_peak)
        return p

    # --- the queue -------------------------------------------------------------------------------

    def wait_for_slot(self, peak: int) -> None:
        """Wait in the governed lane's queue until the slots and the load let this job (predicted to
        peak at ``peak`` bytes) start."""
        began = refreshed = time.monotonic()
        shown = None
        while True:
            if time.monotonic() - refreshed >= SETTINGS_REFRESH:  # an administrator may add slots meanwhile
                fresh = current_settings()[0]
                self.settings = replace(self.settings, slots=fresh.slots, role_slots=fresh.role_slots,
                                        queue_timeout=fresh.queue_timeout, load_aware=fresh.load_aware)
                refreshed = time.monotonic()
            s = self.settings
            snap = store().try_start(self.id, s.slots, s.role_slots, self.load.read() if s.load_aware else None, peak)
            if snap["started"]:
                break
            waited = time.monotonic() - began
            if waited >= s.queue_timeout:
                raise SqlmlError(
                    f"job {self.id} waited {waited:.0f}s for a slot and gave up (sqlml.queue_timeout is "
                    f"{s.queue_timeout:g}s): {snap['reason']}; position {snap['position']} in the queue",
                    sqlstate=INSUFFICIENT_RESOURCES,
                    hint="try again later (SELECT * FROM sqlml.jobs shows what runs), or ask an administrator "
                         "to raise sqlml.slots or sqlml.queue_timeout")
            if (snap["position"], snap["reason"]) != shown:
                shown = (snap["position"], snap["reason"])
                spi.notice(self._queue_message(snap))
            spi.check_interrupts()  # cancel, statement_timeout
            self.check_cancel()  # sqlml.cancel
            time.sleep(POLL_SECONDS)
        self.queued = time.monotonic() - began
        if shown is not None:
            spi.notice(f"job {self.id} started after {self.queued:.1f}s in the queue")

    def _queue_message(self, snap: dict) -> str:
        return (f"job {self.id} is queued at position {snap['position']} of {snap['queued']}: {snap['reason']}; "
                f"about {self._estimated_wait(snap):.0f}s to wait "
                f"(at most {self.settings.queue_timeout:g}s)")

    def _estimated_wait(self, snap: dict) -> float:
        return admission.estimated_wait([(r["predicted_seconds"], r["started"]) for r in snap["running"]],
                                        [r["predicted_seconds"] for r in snap["ahead"]], self.settings.slots,
                                        time.time())

    # --- running -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Caps on, clocks on: called once the job holds a slot."""
        self.t0 = time.monotonic()  # the job's seconds are its time in the slot, loading libraries included
        for module in WARM_MODULES[self.kind]:  # the libraries' memory belongs to the backend, not to the job
            importlib.import_module(module)
        self.stack.enter_context(limits.thread_limits(self.threads))
        self.meter = limits.PeakMeter()
        self.stack.enter_context(limits.address_space_cap(self.settings.memory_per_job, self.threads))

    def progress_update(self, **values) -> None:
        self.progress.update(values)
        store().update(self.id, progress=self.progress)

    def check_cancel(self) -> None:
        if store().cancel_requested(self.id):
            by = (store().get(self.id) or {}).get("cancel_requested") or "another session"
            raise SqlmlError(f"job {self.id} was cancelled by {by} (sqlml.cancel)", sqlstate=QUERY_CANCELED)

    def end(self, state: str, error: str | None = None, sqlstate: str | None = None, xid: str | None = None) -> None:
        self.stack.close()  # the memory cap goes first: recording the end must be able to allocate
        features = self.features.with_rows(self.rows) if self.features and self.rows is not None else self.features
        store().finish(self.id, state, error=error, sqlstate=sqlstate, rows=self.rows, xid=xid,
                       features=features.to_json() if features else None,
                       actual_seconds=time.monotonic() - self.t0 if self.t0 is not None else None,
                       actual_peak=self.meter.peak() if self.meter else None)


class LoadMeter:
    """The server's load for ``workload.concurrency``: CPU busy since the previous reading
    (/proc/stat), backends running a statement (pg_stat_activity), memory available (/proc/meminfo)."""

    def __init__(self):
        self.cpus = gsettings.machine_cpus()
        self.last = load.cpu_ticks()

    def read(self) -> workload.Load:
        now = load.cpu_ticks()
        busy = workload.cpu_busy(self.last[:2], now[:2], now[2])
        if busy is None:  # no tick passed yet: the run queue's one-minute average instead
            busy = os.getloadavg()[0]
        self.last = now
        return workload.Load(self.cpus, min(busy, float(self.cpus)), active_backends(), load.available_memory())


def active_backends() -> int:
    """Backends running a statement on the CPU beside the governed jobs (``ACTIVE_BACKENDS``)."""
    pids = [r["pid"] for r in store().active() if r["lane"] != workload.INTERACTIVE]

    def count(ex):
        ex.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")  # else frozen at the transaction's first look
        return ex.execute(ACTIVE_BACKENDS, [pids])[0]["n"]
    return int(privileged.run(count))


class InteractiveWork:
    """A running training's signal to yield (``sqlml.governor.priority``): other backends are
    running statements on the CPU, or were within the last ``INTERACTIVE_HOLD`` seconds."""

    def __init__(self):
        self.sighting = priority.Sighting(INTERACTIVE_HOLD)
        self.looked = float("-inf")
        self.state = False

    def active(self) -> bool:
        now = time.monotonic()
        if now - self.looked >= INTERACTIVE_SAMPLE:
            self.looked = now
            self.state = self.sighting.seen(now, active_backends() > 0)
        return self.state


def check_cancel() -> None:
    """Part of every interrupt check: raises if someone called sqlml.cancel on this backend's job."""
    if _current is not None:
        _current.check_cancel()


def run(kind: str, project: str | None, fn, rows_of=None):
    """``fn()`` as a governed job. ``fn`` admits itself once it knows its data's size: a training
    through :func:`admit_training`, a batch scoring through :func:`admit_scoring`.
    ``rows_of(result)`` tells the rows the job processed."""
    global _current
    if _current is not None:  # a job inside a job (a function scoring inside a training) shares its slot
        return fn()
    job = _current = Job(kind, project)
    try:
        result = fn()
        if rows_of is not None:
            job.rows = rows_of(result)
    except BaseException as exc:
        job.stack.close()
        state, error = outcome(job, exc)
        job.end(state, error.message if isinstance(error, SqlmlError) else _message(error),
                getattr(error, "sqlstate", None))
        if error is exc:
            raise
        raise error from None
    else:
        job.end(SUCCEEDED, xid=job.xid)
        return result
    finally:
        _current = None


OUT_OF_MEMORY_HINTS = {
    "train": """train on fewer rows (options => '{"max_rows": N}') or fewer columns, or ask an """
             "administrator to raise sqlml.memory_per_job",
    "import_model": """validate on fewer rows (options => '{"max_rows": N}'), check that the graph does not """
                    "grow its tensors, or ask an administrator to raise sqlml.memory_per_job",
}


def outcome(job: Job, exc: BaseException) -> tuple[str, BaseException]:
    """(final state, the error to raise) for a job that raised ``exc``."""
    if getattr(exc, "sqlstate", None) == QUERY_CANCELED:
        if store().cancel_requested(job.id) and not isinstance(exc, SqlmlError):
            try:  # sqlml.cancel signalled a long SQL step: say who cancelled, not "user request"
                job.check_cancel()
            except SqlmlError as ours:
                return CANCELLED, ours
        return CANCELLED, exc
    if limits.looks_like_out_of_memory(exc) and job.t0 is not None \
            and not (isinstance(exc, SqlmlError) and exc.sqlstate == OUT_OF_MEMORY):
        mb = job.settings.memory_per_job / 1024 ** 2
        return FAILED, SqlmlError(
            f"job {job.id} ran out of memory: it needed more than the {mb:.0f} MB each job may use "
            f"(sqlml.memory_per_job); the job was stopped and nothing was saved",
            detail=_message(exc), sqlstate=OUT_OF_MEMORY,
            hint=OUT_OF_MEMORY_HINTS.get(job.kind, OUT_OF_MEMORY_HINTS["train"]))
    return FAILED, exc


def _message(exc: BaseException) -> str:
    if isinstance(exc, SqlmlError):
        return exc.message
    text = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
    return text or type(exc).__name__


# --- admission ------------------------------------------------------------------------------------

def admit_training(sql: str, features: list, budget_seconds: float, algorithms, max_rows: int | None) -> int | None:
    """Predict, plan rows (all, a sample, or refuse), wait for a slot, start the caps.

    ``features``: the training's ``sqlml.data.schema.Feature`` list. Returns the rows to read
    (None: all).
    """
    from sqlml.server import reading

    job = _current
    if job is None or job.t0 is not None:  # no job, or a job inside a job: it holds its slot already
        return max_rows
    est_rows, width = reading.estimate(sql)
    base = costmodel.training_features(features, est_rows, width, algorithms, budget_seconds, job.threads, job.cold())
    model = job.model()
    plan = admission.plan_rows(est_rows, lambda n: model.predict(base.with_rows(n)).peak_upper,
                               job.settings.memory_per_job, max_rows, job.id)
    p = job.predict(base.with_rows(plan.rows if plan.rows is not None else est_rows), model)
    if plan.sampled_because:
        spi.notice(f"{plan.sampled_because}: training on a sample of {plan.rows} of about {est_rows} rows")
    elif plan.rows is not None and plan.rows < est_rows:
        spi.notice(f"training on a sample of {plan.rows} of about {est_rows} rows (options.max_rows)")
    job.wait_for_slot(p.peak_upper)
    job.start()
    return plan.rows


def train_as_caller(project: str, train):
    """A training another entry point starts (``retrain_if_drifted``), without going back through
    SQL: refused unless the caller may execute ``sqlml.train`` (the training then checks the
    caller's rights on the project, as always), and run as one governed job. ``train(called)`` runs
    it, ``called`` being ``time.monotonic()`` now, where its time_budget starts counting."""
    called = time.monotonic()
    may = spi.execute("SELECT pg_catalog.has_function_privilege("
                      "'sqlml.train(text, text, text, text, text[], interval, text, float8, text[], jsonb)', "
                      "'EXECUTE') AND pg_catalog.has_function_privilege("
                      "'sqlml._train(text, text, text, text, text[], float8, text, float8, text[], jsonb)', "
                      "'EXECUTE') AS ok")[0]["ok"]
    if not may:
        raise SqlmlError("permission denied for function train", sqlstate=INSUFFICIENT_PRIVILEGE,
                         hint="retraining trains as the calling role: grant it EXECUTE on sqlml.train")
    return run("train", project, lambda: train(called))


def record_rows(n: int) -> None:
    """The rows the current job actually read (what the cost model learns from)."""
    if _current is not None:
        _current.rows = int(n)


def admit_scoring(project: str, relation):
    """Open ``relation`` (``reading.Source``) for a batch scoring and admit the job: all rows are
    scored, so nothing is sampled. Returns the source, which the scoring reads."""
    from sqlml.server import reading

    source = reading.Source.open(relation)
    job = _current
    if job is None or job.t0 is not None:  # no job, or a job inside a job: it holds its slot already
        return source
    rows, width = reading.estimate(source.sql)
    # the job's predicted memory must not tell the size of a model its role may not score
    size = privileged.run(lambda ex: registry.model_bytes(ex, project, job.role))
    features = costmodel.scoring_features(rows, width, size, job.threads, job.cold())
    model = job.model()
    p = job.predict(features, model)
    warm = p if not features.cold else model.predict(replace(features, cold=False))
    if workload.lane(job.kind, warm.seconds, job.settings.interactive_seconds) == workload.INTERACTIVE:
        store().start_interactive(job.id)  # short query acceleration: no slot, no queue
    else:
        job.wait_for_slot(p.peak_upper)
    job.start()
    return source


def admit_import() -> None:
    """Admit an ``import_model`` job before it runs the user's graph: a governed job (a slot, the
    queue) under the memory cap, whatever the graph asks of ONNX Runtime. Nothing predicts its
    cost (a graph trained elsewhere), so it counts as a job of the whole ``sqlml.memory_per_job``."""
    job = _current
    if job is None or job.t0 is not None:  # no job, or a job inside a job: it holds its slot already
        return
    job.wait_for_slot(job.settings.memory_per_job)
    job.start()


def wrote() -> None:
    """The current job has written (a training its model, a scoring its table): its success is
    real only once this transaction commits, which ``sqlml.jobs`` checks (``resolve_transactions``)."""
    if _current is not None:
        _current.xid = spi.execute("SELECT txid_current()::text AS x")[0]["x"]


def job_id() -> int | None:
    """The id of the job this backend runs (sqlml.jobs.job_id), for lineage in the registry."""
    return _current.id if _current is not None else None


def progress(**values) -> None:
    """Publish the current job's progress (trials, best_score, best_algorithm, budget_seconds,
    startup_seconds) for ``sqlml.jobs`` / ``sqlml jobs``: other sessions see it while this job's
    transaction is open."""
    if _current is not None:
        _current.progress_update(**values)


def threads() -> int:
    """Threads the current job may use (1 outside a job)."""
    return _current.threads if _current is not None else 1


def training_nice() -> int:
    """Niceness of the current training's fits while interactive work is active (sqlml.training_nice;
    0 outside a job)."""
    return _current.settings.training_nice if _current is not None else 0


def queued_seconds() -> float:
    """Seconds the current job waited for a slot (0 outside a job)."""
    return _current.queued if _current is not None else 0.0


# --- the SQL surface ------------------------------------------------------------------------------

# The caller administers sqlml: a superuser, or a member of sqlml_admin (see the security section).
IS_ADMIN = ("(coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) "
            "OR coalesce(pg_has_role(current_user, to_regrole('sqlml_admin'), 'MEMBER'), false))")


def jobs() -> list[tuple]:
    """Rows of ``sqlml.jobs`` (times as epoch seconds; the view converts them). Like
    pg_stat_activity, the project, error and progress of other roles' jobs are hidden unless the
    viewer is an admin (superuser, sqlml_admin) or a member of pg_read_all_stats."""
    s = current_settings()[0]
    me = spi.execute(
        f"SELECT {IS_ADMIN} OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') AS all_, "
        "array(SELECT rolname::text FROM pg_roles WHERE pg_has_role(current_user, oid, 'MEMBER')) AS roles")[0]
    mine = set(me["roles"] or [])
    rows = store().jobs(s.slots, s.role_slots)
    open_ = resolve_transactions(rows)
    # as many columns as the installed sqlml._jobs declares: 0.1.0's, until ALTER EXTENSION sqlml
    # UPDATE, lacks lane and wait_reason
    width = spi.execute("SELECT cardinality(proallargtypes) AS n FROM pg_catalog.pg_proc "
                        "WHERE oid = 'sqlml._jobs()'::pg_catalog.regprocedure")[0]["n"]
    out = []
    for j in rows:
        visible = me["all_"] or j["role"] in mine
        state = UNCOMMITTED if j["id"] in open_ else j["state"]
        out.append((j["id"], j["kind"], state, j["position"], j["role"], j["database"],
                    j["project"] if visible else None, j["pid"], j["submitted"], j["started"], j["finished"],
                    j["predicted_seconds"], j["actual_seconds"], j["predicted_peak"], j["actual_peak"],
                    j["predicted_by"], j["rows"], j["threads"], j["error"] if visible else None,
                    j["sqlstate"], j.get("progress") if visible else None, j["lane"],
                    j["wait_reason"] if j["state"] == "queued" else None)[:width])
    return out


def resolve_transactions(rows: list[dict]) -> set[int]:
    """Ids of succeeded jobs whose transaction is still open; jobs whose transaction has ended are
    settled in the store (rolled back: state rolled_back) and in ``rows``."""
    pending = {j["id"]: j["xid"] for j in rows if j["state"] == SUCCEEDED and j.get("xid")}
    if not pending:
        return set()
    status = {r["x"]: r["s"] for r in spi.execute(
        "SELECT x, txid_status(x::bigint)::text AS s FROM unnest($1::text[]) AS x", [sorted(set(pending.values()))])}
    outcomes = {job_id: status.get(xid) for job_id, xid in pending.items()}
    # a committed transaction may still have rolled back the training's savepoint: its model row
    # tells (in this database; sqlml.models of others cannot be read from here)
    here = spi.execute("SELECT current_database()::text AS d")[0]["d"]
    trainings = [j["id"] for j in rows if outcomes.get(j["id"]) == "committed" and j["kind"] == "train"
                 and j["database"] == here]
    if trainings:
        kept = {r["job_id"] for r in privileged.run(lambda ex: ex.execute(
            "SELECT job_id FROM sqlml.models WHERE job_id = ANY($1::bigint[])", [trainings]))}
        outcomes.update({j: "aborted" for j in trainings if j not in kept})
    store().resolve_transactions({k: v for k, v in outcomes.items() if v != "in progress"})
    for j in rows:
        if outcomes.get(j["id"]) == "aborted":
            j.update(state=ROLLED_BACK, error=ROLLED_BACK_ERROR)
    return {k for k, v in outcomes.items() if v == "in progress"}


def cancel(job_id: int) -> bool:
    """Request the cancel of a queued or running job of the caller's role (any job for an admin:
    superuser, sqlml_admin).

    Returns true when the cancel was requested (the job was queued or running), false when the
    job had already ended. It then waits up to ``CANCEL_WAIT`` seconds for the job to stop, and says
    in a NOTICE when it has not stopped yet: true does not mean the job has ended (``sqlml.jobs``
    tells). A queued job leaves the queue at its next poll; a running one stops at its next
    interrupt check, and is sent pg_cancel_backend if it has not stopped within ``CANCEL_GRACE``
    seconds (a long SQL step).
    """
    if job_id is None:
        raise SqlmlError("job_id is NULL", hint="SELECT job_id, state FROM sqlml.jobs shows the jobs")
    j = store().get(int(job_id))
    if j is None:
        raise SqlmlError(f"job {job_id} does not exist", sqlstate=UNDEFINED_OBJECT,
                         hint="SELECT job_id, state FROM sqlml.jobs shows the jobs")
    who = spi.execute(
        f"SELECT current_user::text AS me, {IS_ADMIN} "
        "OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = $1 AND pg_has_role(current_user, r.oid, 'MEMBER')) "
        "AS ok",
        [j["role"]])[0]
    if not who["ok"]:
        raise SqlmlError(f"permission denied to cancel job {job_id} of role {j['role']}",
                         sqlstate=INSUFFICIENT_PRIVILEGE,
                         hint="a role may cancel its own jobs; a superuser or a member of sqlml_admin any job")
    if j["state"] not in ("queued", "running"):
        spi.notice(f"job {job_id} has already ended ({j['state']})")
        return False
    store().request_cancel(int(job_id), who["me"])
    began, signalled = time.monotonic(), False
    while time.monotonic() - began < CANCEL_WAIT:
        store().reconcile()
        j = store().get(int(job_id))
        if j["state"] not in ("queued", "running"):
            return True
        if not signalled and j["state"] == RUNNING and time.monotonic() - began >= CANCEL_GRACE:
            privileged.run(lambda ex, pid: ex.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = $1::int AND state = 'active'", [pid]),
                j["pid"])
            signalled = True
        spi.check_interrupts()
        check_cancel()
        time.sleep(0.1)
    spi.notice(f"job {job_id} was asked to stop but is still {j['state']}; it stops at its next interrupt check")
    return True


def report() -> list[tuple]:
    return [(r["kind"], r["quantity"], r["predicted_by"], r["jobs"], r["mdape"], r["p90_ape"], r["analytic_mdape"])
            for r in costmodel.report(store().finished())]


def settings_rows() -> list[tuple]:
    s, sources = current_settings()
    return [(gsettings.PREFIX + name, gsettings.describe(getattr(s, name), name), sources[name], desc)
            for name, desc in gsettings.DESCRIPTIONS.items()]
