"""The governor's pure parts, without a database: settings, queue order, row plans, the job store
(across real processes, one of them killed with SIGKILL), the cost model, the memory cap."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from sqlml.data.schema import CATEGORY, NUMERIC, VECTOR, Feature
from sqlml.errors import SqlmlError
from sqlml.governor import admission, costmodel, limits, settings
from sqlml.governor.store import JobStore

MB = 1024 ** 2


# --- settings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, expected", [
    ("slots", "4", 4),
    ("slots", " 2 ", 2),
    ("queue_timeout", "300", 300.0),
    ("queue_timeout", "30s", 30.0),
    ("queue_timeout", "5min", 300.0),
    ("queue_timeout", "1h", 3600.0),
    ("queue_timeout", "500ms", 0.5),
    ("memory_per_job", "512MB", 512 * MB),
    ("memory_per_job", "2GB", 2048 * MB),
    ("memory_per_job", "2gb", 2048 * MB),
    ("memory_per_job", "1048576kB", 1024 * MB),
])
def test_settings_parse(name, text, expected):
    s, sources = settings.from_config({f"sqlml.{name}": text})
    assert getattr(s, name) == expected
    assert sources[name] == "configuration file"


@pytest.mark.parametrize("name, text, fragment", [
    ("slots", "0", "positive integer"),
    ("slots", "two", "positive integer"),
    ("role_slots", "-1", "positive integer"),
    ("queue_timeout", "soon", "duration"),
    ("memory_per_job", "lots", "size"),
    ("memory_per_job", "1MB", "at least 16MB"),
])
def test_settings_invalid_values_are_clear_errors(name, text, fragment):
    with pytest.raises(SqlmlError) as e:
        settings.from_config({f"sqlml.{name}": text})
    assert f"sqlml.{name}" in e.value.message and fragment in e.value.message
    assert "ALTER SYSTEM" in e.value.hint


@pytest.mark.parametrize("cpus, slots, role_slots, threads", [
    (1, 1, 1, 1), (2, 1, 1, 1), (4, 1, 1, 2), (8, 2, 1, 2), (16, 4, 3, 2), (64, 16, 15, 2),
])
def test_default_settings_leave_half_the_cores_to_queries(cpus, slots, role_slots, threads):
    s = settings.defaults(cpus=cpus, memory=16 * 1024 * MB)
    assert (s.slots, s.role_slots, s.threads_per_job) == (slots, role_slots, threads)
    assert s.slots * s.threads_per_job <= max(cpus // 2, 1)
    assert s.slots * s.memory_per_job <= 8 * 1024 * MB


def test_other_defaults_follow_the_configured_slots():
    s, sources = settings.from_config({"sqlml.slots": "4", "sqlml.unrelated": "x"})
    assert s.slots == 4 and s.role_slots == 3 and sources["role_slots"] == "default"


# --- queue order ------------------------------------------------------------------------------------

@pytest.mark.parametrize("running, queued, slots, role_slots, startable", [
    ([], [(1, "a"), (2, "a"), (3, "a")], 2, 2, {1, 2}),  # FIFO
    (["a"], [(1, "a"), (2, "a")], 2, 2, {1}),
    (["a", "a"], [(1, "a")], 2, 2, set()),  # all slots busy
    (["a"], [(1, "a"), (2, "b")], 3, 1, {2}),  # a at its role limit does not hold up b
    (["a"], [(5, "b"), (3, "a"), (4, "b")], 3, 1, {4}),  # oldest eligible first, whatever the listing order
    ([], [(1, "a"), (2, "a"), (3, "b")], 2, 1, {1, 3}),
])
def test_fifo_with_role_limits(running, queued, slots, role_slots, startable):
    a = admission.assign(running, queued, slots, role_slots)
    assert a.startable == startable
    assert sorted(a.positions.values()) == list(range(1, len(queued) + 1))
    assert [j for j, _ in sorted(queued)] == sorted(a.positions, key=a.positions.get)


# --- row plans --------------------------------------------------------------------------------------

def peak(rows):  # 10 MB plus 1 kB per row
    return 10 * MB + 1024 * rows


def test_rows_that_fit_are_read_whole():
    plan = admission.plan_rows(1000, peak, 64 * MB, None)
    assert plan.rows is None and plan.sampled_because is None


def test_rows_that_do_not_fit_are_sampled_to_the_cap():
    plan = admission.plan_rows(1_000_000, peak, 64 * MB, None, job_id=7)
    assert peak(plan.rows) <= 64 * MB < peak(plan.rows + 1)
    assert "job 7" in plan.sampled_because and "64 MB" in plan.sampled_because


def test_user_max_rows_is_kept_and_bounded_by_the_cap():
    assert admission.plan_rows(1_000_000, peak, 64 * MB, 500).rows == 500
    assert admission.plan_rows(1_000_000, peak, 64 * MB, 900_000).rows < 60_000


def test_a_job_that_would_not_fit_even_sampled_is_refused():
    with pytest.raises(SqlmlError) as e:
        admission.plan_rows(1_000_000, peak, 10 * MB, None, job_id=3)
    assert e.value.sqlstate == "53200" and "job 3" in e.value.message and "sqlml.memory_per_job" in e.value.hint


# --- the job store, across processes ----------------------------------------------------------------

def _hold_a_job(directory, state, ready):
    """Child process: submit (and start, if asked) a job, then wait to be killed."""
    s = JobStore(directory)
    job = s.submit("train", "alice", "db", "p", os.getpid())
    if state == "running":
        assert s.try_start(job, 1, 1)["started"]
    ready.put(job)
    time.sleep(60)


@pytest.fixture
def store(tmp_path):
    return JobStore(str(tmp_path / "jobs"))


def test_job_life_cycle(store):
    job = store.submit("train", "alice", "db", "p", os.getpid())
    assert store.get(job)["state"] == "queued"
    assert store.try_start(job, 1, 1)["started"]
    store.update(job, features=costmodel.Features(rows=10).to_json(), predicted_seconds=2.0)
    store.finish(job, "succeeded", actual_seconds=1.5, actual_peak=3 * MB, rows=10)
    row = store.get(job)
    assert (row["state"], row["rows"], row["actual_peak"]) == ("succeeded", 10, 3 * MB)
    assert os.listdir(store.lock_dir) == []
    assert [h["id"] for h in store.history(("train",))] == [job]
    assert store.history(("score", "predict_batch")) == []


def test_queue_positions_and_slots(store):
    a, b, c = (store.submit("train", r, "db", None, os.getpid()) for r in ("alice", "alice", "bob"))
    first = store.try_start(a, 1, 1)
    assert first["started"]
    snap = store.try_start(b, 1, 1)
    assert not snap["started"] and snap["position"] == 1 and [r["id"] for r in snap["running"]] == [a]
    assert not store.try_start(c, 1, 1)["started"]  # one slot in all
    assert {j["id"]: j["position"] for j in store.jobs(1, 1)} == {a: None, b: 1, c: 2}
    store.finish(a, "succeeded")
    assert not store.try_start(c, 1, 1)["started"]  # b is older
    assert store.try_start(b, 1, 1)["started"]


def test_start_order_is_queue_order_even_when_the_younger_job_polls_first(store):
    a, b = (store.submit("train", "alice", "db", None, os.getpid()) for _ in range(2))
    assert not store.try_start(b, 2, 2)["started"]  # both may run, but a starts first
    assert store.try_start(a, 2, 2)["started"]
    assert store.try_start(b, 2, 2)["started"]


@pytest.mark.parametrize("state", ["queued", "running"])
def test_a_killed_backend_leaves_a_failed_job_and_a_free_slot(store, state):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Queue()
    child = ctx.Process(target=_hold_a_job, args=(store.dir, state, ready))
    child.start()
    job = ready.get(timeout=30)
    assert store.reconcile() == 0 and store.get(job)["state"] == state  # alive: left alone
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert store.reconcile() == 1
    row = store.get(job)
    assert row["state"] == "failed" and f"pid {child.pid}" in row["error"] and row["sqlstate"] == "57P01"
    mine = store.submit("train", "alice", "db", None, os.getpid())
    assert store.try_start(mine, 1, 1)["started"]  # the dead job's slot is free


def test_cancel_flag(store):
    job = store.submit("score", "alice", "db", None, os.getpid())
    assert not store.cancel_requested(job)
    store.request_cancel(job, "bob")
    assert store.cancel_requested(job) and store.get(job)["cancel_requested"] == "bob"
    store.finish(job, "cancelled")
    assert not store.cancel_requested(job)


# --- the cost model ---------------------------------------------------------------------------------

def _history(n, seed=0):
    """Jobs whose true cost is a fixed share of the analytic estimate, with 10% noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        f = costmodel.Features(rows=int(rng.integers(1000, 200_000)), numeric=int(rng.integers(1, 30)),
                               category=int(rng.integers(0, 4)), text_bytes=float(rng.integers(0, 60)),
                               algorithms=int(rng.integers(1, 5)), budget=float(rng.integers(1, 10)))
        sec, mem = costmodel.analytic("train", f)
        noise = rng.normal(1, 0.1, 2)
        out.append({"id": i, "kind": "train", "features": f.to_json(), "actual_seconds": 0.4 * sec * noise[0],
                    "actual_peak": int(0.2 * mem * noise[1])})
    return out


def test_cost_model_is_analytic_until_enough_history():
    model = costmodel.CostModel("train", _history(costmodel.MIN_HISTORY - 1))
    p = model.predict(costmodel.Features(rows=5000, numeric=5, budget=3))
    assert p.by == "analytic" and (p.seconds, p.peak) == costmodel.analytic("train", costmodel.Features(
        rows=5000, numeric=5, budget=3))


def test_cost_model_learns_from_history():
    model = costmodel.CostModel("train", _history(60))
    test = _history(30, seed=1)
    learned, base = [], []
    for h in test:
        p = model.predict(costmodel.Features.from_json(h["features"]))
        assert p.by == "learned" and p.peak_upper >= p.peak
        learned.append(costmodel.ape(p.seconds, h["actual_seconds"]))
        base.append(costmodel.ape(p.analytic_seconds, h["actual_seconds"]))
    learned.sort(), base.sort()
    assert learned[15] < 20 < base[15]


def test_a_fitted_cost_model_serves_until_its_history_has_grown(store):
    """Every job adds to the history: the model is fitted again once it has grown by REFIT_GROWTH."""
    def succeed(jobs):
        for h in jobs:
            job = store.submit("score", "alice", "db", "p", os.getpid())
            store.update(job, features=h["features"])
            store.finish(job, "succeeded", actual_seconds=h["actual_seconds"], actual_peak=h["actual_peak"])

    succeed(_history(100))
    fitted = costmodel.Refitted(growth=0.05)
    first = fitted.model(store, "score")
    assert first.n == 100 and fitted.model(store, "predict_batch") is not first  # a kind of its own
    succeed(_history(4, seed=1))
    assert fitted.model(store, "score") is first  # 4 < 5% of 100
    succeed(_history(1, seed=2))
    again = fitted.model(store, "score")
    assert again is not first and again.n == 105
    assert fitted.model(JobStore(store.dir + "-other"), "score").n == 0  # another store: its own history


def test_cost_model_does_not_extrapolate():
    model = costmodel.CostModel("train", _history(30))  # no forests in this history
    seen = costmodel.Features(rows=50_000, numeric=10, category=1, text_bytes=20, algorithms=2, budget=5)
    assert model.predict(seen).by == "learned"
    assert model.predict(seen.with_rows(10 ** 9)).by == "analytic"
    assert model.predict(costmodel.Features(**{**seen.__dict__, "forests": 2})).by == "analytic"


def test_report_compares_with_the_analytic_estimate():
    jobs = [{"kind": "train", "predicted_by": "learned", "predicted_seconds": 10.0, "analytic_seconds": 20.0,
             "actual_seconds": 10.0 * (1 + i / 100), "predicted_peak": 100 * MB, "analytic_peak": 400 * MB,
             "actual_peak": 100 * MB} for i in range(11)]
    rows = {r["quantity"]: r for r in costmodel.report(jobs)}
    assert rows["seconds"]["jobs"] == 11 and rows["seconds"]["mdape"] == pytest.approx(100 * 0.05 / 1.05)
    assert rows["peak memory"]["mdape"] == 0 and rows["peak memory"]["analytic_mdape"] == 300


def test_features_round_trip():
    f = costmodel.Features(rows=3, numeric=1, category=2, vector=8, text_bytes=1.5, algorithms=2, budget=4, cold=True)
    assert costmodel.Features.from_json(f.to_json()) == f
    assert costmodel.Features.from_json(json.dumps({"rows": 3, "future": 1})).rows == 3


@pytest.mark.parametrize("columns, rows, width, algorithms, expected", [
    # numbers only: no text bytes whatever the width
    ([("a", NUMERIC, 0), ("b", NUMERIC, 0)], 1000, 16, ["linear"],
     dict(numeric=2, algorithms=1)),
    # text: what the width leaves beyond 8 bytes per fixed-size column
    ([("a", NUMERIC, 0), ("t", CATEGORY, 0), ("u", CATEGORY, 0)], 500, 48, ["lightgbm", "random_forest"],
     dict(numeric=1, category=2, text_bytes=40.0, algorithms=2, forests=1, boosting=1)),
    # a vector takes 4 bytes per dimension plus a header
    ([("v", VECTOR, 16), ("t", CATEGORY, 0)], 10, 100, ["extra_trees"],
     dict(vector=16, category=1, text_bytes=100.0 - (4 * 16 + 8), algorithms=1, forests=1)),
    # a width below the fixed columns' never makes negative text
    ([("a", NUMERIC, 0), ("t", CATEGORY, 0)], 10, 4, ["linear"], dict(numeric=1, category=1, algorithms=1)),
    # None: the AutoML portfolio
    ([("a", NUMERIC, 0)], 10, 8, None, dict(numeric=1, algorithms=4, forests=2, boosting=1)),
])
def test_training_features_per_estimator_family(columns, rows, width, algorithms, expected):
    features = [Feature(name, kind, "x", dim) for name, kind, dim in columns]
    got = costmodel.training_features(features, rows, width, algorithms, 30, threads=2, cold=True)
    assert got == costmodel.Features(rows=rows, budget=30.0, threads=2, cold=True, **expected)


def test_scoring_features():
    assert costmodel.scoring_features(100, 24, 5000, 1, False) == costmodel.Features(
        rows=100, text_bytes=24.0, model_bytes=5000, threads=1)


@pytest.mark.parametrize("running, ahead, slots, expected", [
    ([], [], 2, 0.0),  # free slots: no wait
    ([(30.0, 90.0)], [], 1, 20.0),  # started 10 s ago, predicted 30 s
    ([(5.0, 50.0)], [], 1, 0.0),  # past its prediction: about to end
    ([(None, 95.0)], [], 1, 0.0),  # no prediction
    ([(30.0, 90.0), (60.0, 100.0)], [], 2, 20.0),  # the first to end
    ([(30.0, 90.0), (60.0, 100.0)], [15.0], 2, 35.0),  # the job ahead takes the first free slot
    ([(30.0, 90.0), (60.0, 100.0)], [15.0, 50.0], 2, 60.0),
    ([(30.0, 90.0)], [10.0], 2, 10.0),  # one slot free, but the job ahead takes it
    ([], [], 0, 0.0),
])
def test_estimated_wait(running, ahead, slots, expected):
    assert admission.estimated_wait(running, ahead, slots, now=100.0) == pytest.approx(expected)


# --- the memory cap ---------------------------------------------------------------------------------

def test_address_space_cap_turns_an_oversized_allocation_into_memory_error_and_is_restored():
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    with pytest.raises(MemoryError):
        with limits.address_space_cap(64 * MB):
            bytearray(4 * 1024 * MB)
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert len(bytearray(512 * MB)) == 512 * MB  # allocates normally again


def test_peak_meter_sees_a_job_s_allocation():
    meter = limits.PeakMeter()
    block = bytearray(96 * MB)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so that it is resident
    assert meter.peak() >= 90 * MB
    del block


def test_out_of_memory_is_recognised_whoever_reports_it():
    class SPIError(Exception):
        sqlstate = "53200"

    assert limits.looks_like_out_of_memory(MemoryError())
    assert limits.looks_like_out_of_memory(SPIError("out of memory"))
    assert limits.looks_like_out_of_memory(RuntimeError("std::bad_alloc"))
    assert not limits.looks_like_out_of_memory(ValueError("bad input"))


# --- the store's schema version ---------------------------------------------------------------------

def test_a_store_without_a_version_is_migrated_and_keeps_its_jobs(tmp_path):
    """An unversioned store from before the progress column (sqlml 0.1.0's development stores):
    opened, it gains the column and the current version, and its jobs are still there."""
    import sqlite3

    from sqlml.governor import store as store_module

    directory = tmp_path / "jobs"
    directory.mkdir()
    old = sqlite3.connect(directory / "jobs.db")
    old.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
                "state TEXT NOT NULL, role TEXT NOT NULL, database TEXT NOT NULL, project TEXT, pid INTEGER NOT NULL, "
                "lock TEXT NOT NULL, submitted REAL NOT NULL, started REAL, finished REAL, threads INTEGER, "
                "rows INTEGER, features TEXT, predicted_seconds REAL, predicted_peak INTEGER, predicted_by TEXT, "
                "analytic_seconds REAL, analytic_peak INTEGER, actual_seconds REAL, actual_peak INTEGER, "
                "cancel_requested TEXT, error TEXT, sqlstate TEXT)")
    old.execute("INSERT INTO jobs (kind, state, role, database, project, pid, lock, submitted, finished) "
                "VALUES ('train', 'succeeded', 'alice', 'db', 'p', 1, 'x', 1.0, 2.0)")
    old.commit()
    old.close()
    s = JobStore(str(directory))
    assert [(j["project"], j["state"], j["progress"]) for j in s.jobs(1, 1)] == [("p", "succeeded", None)]
    version = sqlite3.connect(directory / "jobs.db").execute("PRAGMA user_version").fetchone()[0]
    assert version == store_module.STORE_VERSION
    job = s.submit("train", "bob", "db", "q", os.getpid())
    s.update(job, progress={"trials": 1})
    assert s.get(job)["progress"] == '{"trials": 1}'


def test_a_store_from_a_newer_sqlml_is_refused(tmp_path):
    import sqlite3

    from sqlml.governor.store import STORE_VERSION

    directory = tmp_path / "jobs"
    directory.mkdir()
    newer = sqlite3.connect(directory / "jobs.db")
    newer.execute(f"PRAGMA user_version = {STORE_VERSION + 1}")
    newer.close()
    with pytest.raises(SqlmlError) as e:
        JobStore(str(directory)).get(1)
    assert e.value.sqlstate == "55000" and "newer than this sqlml's" in e.value.message


LIMITED_AFTER_IMPORT = """
import json
import sys
from threadpoolctl import threadpool_info
from sqlml.governor import limits
assert "numpy" not in sys.modules
with limits.thread_limits(1):  # looks for thread pools: none loaded yet
    pass
import numpy  # loads OpenBLAS and its pool
with limits.thread_limits(1):
    inside = [p["num_threads"] for p in threadpool_info()]
print(json.dumps([inside, [p["num_threads"] for p in threadpool_info()]]))
"""


def test_thread_limits_find_a_pool_loaded_after_they_last_looked():
    out = subprocess.run([sys.executable, "-c", LIMITED_AFTER_IMPORT], capture_output=True, text=True,
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "2"}, check=True).stdout
    inside, outside = json.loads(out)
    assert inside and set(inside) == {1} and set(outside) == {2}
