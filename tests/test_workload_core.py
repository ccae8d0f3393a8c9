"""Workload management without a database: lanes, load-based concurrency, the interactive lane in
the job store, wait reasons, rolled-back jobs, the niced search thread, and a budget whose clock
started before the search (an injected clock, never the wall clock)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from sqlml.automl import front
from sqlml.automl.budget import Budget
from sqlml.data.schema import Feature, FeatureSchema, Target
from sqlml.governor import priority, settings, workload
from sqlml.governor.store import JobStore
from sqlml.governor.workload import GOVERNED, INTERACTIVE, Load, Running

MB, GB = 1024 ** 2, 1024 ** 3


# --- lanes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, seconds, threshold, lane", [
    ("predict_batch", 0.03, 2.0, INTERACTIVE),
    ("predict_batch", 2.0, 2.0, INTERACTIVE),
    ("predict_batch", 2.01, 2.0, GOVERNED),
    ("score", 0.5, 2.0, INTERACTIVE),
    ("score", 40.0, 2.0, GOVERNED),
    ("train", 0.01, 2.0, GOVERNED),  # training is never interactive, however small
    ("predict_batch", 0.03, 0.0, GOVERNED),  # interactive_seconds = 0: every scoring job queues
])
def test_small_scoring_is_interactive_and_training_is_always_governed(kind, seconds, threshold, lane):
    assert workload.lane(kind, seconds, threshold) == lane


# --- load-based concurrency -------------------------------------------------------------------------

def load(busy=0.0, active=0, memory=16 * GB, cpus=2):
    return Load(cpus=cpus, busy_cores=busy, active_backends=active, available_memory=memory)


def running(*threads, peak=200 * MB):
    return [Running(t, peak) for t in threads]


@pytest.mark.parametrize("ceiling, the_load, jobs, threads, peak, slots, limited_by", [
    # no reading: the ceiling alone
    (1, None, running(), 1, 0, 1, None),
    (1, None, running(1), 1, 0, 1, "slots"),
    # idle 2 cores, ceiling 4: the running training's own core does not count as other work
    (4, load(busy=1.0), running(1), 1, 200 * MB, 2, None),
    (4, load(busy=2.0), running(1, 1), 1, 200 * MB, 2, "cpu"),
    # other work takes a core: one job at most
    (4, load(busy=2.0), running(1), 1, 200 * MB, 1, "cpu"),
    # active backends count as other work even when the CPU reading lags
    (4, load(busy=1.0, active=1), running(1), 1, 200 * MB, 1, "cpu"),
    # busy machine, nothing of ours runs: one job may always run
    (4, load(busy=2.0, active=6), running(), 1, 200 * MB, 1, None),
    # threads per job: 8 free cores hold two 4-thread jobs
    (8, load(busy=0.0, cpus=8), running(), 4, 200 * MB, 2, None),
    (8, load(busy=5.0, cpus=8), running(4), 4, 200 * MB, 1, "cpu"),
    # the ceiling stays a ceiling on an idle machine
    (1, load(), running(1), 1, 200 * MB, 1, "slots"),
    # memory: the next job must fit beside the running jobs' predictions
    (4, load(memory=1 * GB), running(1, peak=700 * MB), 1, 500 * MB, 1, "memory"),
    (4, load(memory=1 * GB), running(1, peak=300 * MB), 1, 500 * MB, 2, None),
    (4, load(memory=100 * MB), running(), 1, 500 * MB, 0, "memory"),
])
def test_concurrency_follows_the_load_under_the_ceiling(ceiling, the_load, jobs, threads, peak, slots, limited_by):
    got = workload.concurrency(ceiling, the_load, jobs, threads, peak)
    assert (got.slots, got.limited_by) == (slots, limited_by)


def test_wait_reasons_name_the_binding_limit():
    cpu = workload.concurrency(4, load(busy=2.0, active=3), running(1), 1, 0)
    assert "server is busy" in cpu.reason and "3 active backends" in cpu.reason
    mem = workload.concurrency(4, load(memory=1 * GB), running(1, peak=900 * MB), 1, 500 * MB)
    assert mem.reason.startswith("memory: 124 MB available") and "500 MB" in mem.reason
    assert "sqlml.slots" in workload.concurrency(1, load(), running(1), 1, 0).reason


@pytest.mark.parametrize("before, after, cores, busy", [
    ((100, 1000), (150, 1100), 2, 1.0),
    ((100, 1000), (100, 1100), 2, 0.0),
    ((100, 1000), (200, 1100), 4, 4.0),
    ((100, 1000), (100, 1000), 2, None),  # no tick passed
])
def test_cpu_busy_from_two_readings(before, after, cores, busy):
    assert workload.cpu_busy(before, after, cores) == busy


@pytest.mark.parametrize("name, text, expected", [
    ("interactive_seconds", "2s", 2.0),
    ("interactive_seconds", "500ms", 0.5),
    ("interactive_seconds", "0", 0.0),
    ("training_nice", "0", 0),
    ("training_nice", "19", 19),
    ("load_aware", "off", False),
    ("load_aware", "on", True),
])
def test_workload_settings_parse(name, text, expected):
    assert getattr(settings.from_config({f"sqlml.{name}": text})[0], name) == expected


@pytest.mark.parametrize("name, text, fragment", [
    ("training_nice", "20", "0 (no yielding) to 19"),
    ("training_nice", "-5", "0 (no yielding) to 19"),
    ("load_aware", "maybe", "on or off"),
    ("interactive_seconds", "fast", "duration"),
])
def test_workload_settings_invalid(name, text, fragment):
    with pytest.raises(Exception) as e:
        settings.from_config({f"sqlml.{name}": text})
    assert fragment in e.value.message


# --- the job store: lanes, wait reasons, rolled-back jobs ----------------------------------------------

@pytest.fixture
def store(tmp_path):
    return JobStore(str(tmp_path / "jobs"))


def test_interactive_jobs_take_no_slot_and_never_queue(store):
    training = store.submit("train", "alice", "db", "p", os.getpid())
    assert store.try_start(training, 1, 1)["started"]
    batch = store.submit("predict_batch", "bob", "db", "p", os.getpid())
    store.start_interactive(batch)  # while the only slot is busy
    assert (store.get(batch)["state"], store.get(batch)["lane"]) == ("running", INTERACTIVE)
    big = store.submit("score", "bob", "db", "p", os.getpid())
    snap = store.try_start(big, 1, 1)
    assert not snap["started"] and [r["id"] for r in snap["running"]] == [training]  # the batch holds no slot
    store.finish(training, "succeeded")
    assert store.try_start(big, 1, 1)["started"]  # the interactive job still runs: it does not count
    assert {j["id"]: j["position"] for j in store.jobs(1, 1)} == {training: None, batch: None, big: None}


def test_a_waiting_job_records_why(store):
    a = store.submit("train", "alice", "db", None, os.getpid())
    store.update(a, threads=1, predicted_peak=100 * MB)
    assert store.try_start(a, 2, 2)["started"]
    b = store.submit("train", "alice", "db", None, os.getpid())
    c = store.submit("train", "bob", "db", None, os.getpid())
    snap = store.try_start(b, 2, 1)
    assert snap["reason"] == "role alice runs 1 of at most 1 jobs (sqlml.role_slots)"
    assert store.get(b)["wait_reason"] == snap["reason"]
    assert store.try_start(c, 1, 2)["reason"] == f"all 1 slot busy (sqlml.slots); running: job {a}"
    busy = store.try_start(c, 4, 4, load(busy=2.0, active=2), 100 * MB)
    assert not busy["started"] and busy["reason"].startswith("the server is busy")
    assert store.try_start(c, 4, 4, load(busy=1.0), 100 * MB)["reason"] == f"behind job {b}, queued earlier"
    store.finish(b, "cancelled")
    assert store.try_start(c, 4, 4, load(busy=1.0), 100 * MB)["started"]  # only our own training's core is busy
    assert store.get(c)["wait_reason"] is None


def test_a_succeeded_job_whose_transaction_rolled_back_is_not_succeeded(store):
    jobs = [store.submit("train", "alice", "db", "p", os.getpid()) for _ in range(3)]
    for j, xid in zip(jobs, ("700", "701", "702")):
        assert store.try_start(j, 3, 3)["started"]
        store.finish(j, "succeeded", xid=xid)
    store.resolve_transactions({jobs[0]: "committed", jobs[1]: "aborted", jobs[2]: None})
    rows = [store.get(j) for j in jobs]
    assert [(r["state"], r["xid"]) for r in rows] == [("succeeded", None), ("rolled_back", None), ("succeeded", None)]
    assert "rolled back" in rows[1]["error"]
    assert [h["id"] for h in store.history(("train",))] == []  # no actual costs were recorded here


# --- training yields: fits on a helper thread, niced while interactive work is active --------------------

def test_fits_run_on_a_helper_and_call_back_on_the_backend_thread():
    y = priority.Yielding(7)
    me, seen = threading.get_ident(), {}

    def on_backend(x):
        seen["backend"] = threading.get_ident()
        return x * 2

    def fit():
        seen["helper"], seen["nice"] = threading.get_ident(), priority.niceness()
        return y.call(on_backend, 21)

    before = priority.niceness()
    try:
        assert y.run(fit) == 42
    finally:
        y.close()
    assert seen["backend"] == me and seen["helper"] != me
    assert seen["nice"] == before  # nothing interactive was active: full priority


def test_interactive_work_raises_the_helper_s_niceness_and_the_next_fit_runs_at_full_priority():
    y = priority.Yielding(7)
    before = priority.niceness()
    seen = []

    def fit(signal=None):
        if signal is not None:
            y.call(y.interactive, signal)  # the server's check at a checkpoint, on the backend's thread
        seen.append((threading.get_native_id(), priority.niceness()))

    try:
        y.run(lambda: fit(True))  # interactive work appears during the fit: it yields at once
        y.run(fit)  # still active: the same niced helper
        y.interactive(False)
        y.run(fit)  # passed: a new helper at the backend's priority
        y.interactive(True)
        y.run(fit)  # active before the fit starts: niced from its start
    finally:
        y.close()
    (a, na), (b, nb), (c, nc), (d, nd) = seen
    assert (na, nb, nc, nd) == (max(before, 7), max(before, 7), before, max(before, 7))
    assert a == b and c != a and d == c
    assert priority.niceness() == before  # the backend's own thread is never niced


def test_threads_a_fit_started_yield_too_and_threads_from_before_do_not():
    y = priority.Yielding(7)
    before = priority.niceness()
    seen, release = {}, threading.Event()
    older = threading.Thread(target=lambda: (seen.update(older=threading.get_native_id()), release.wait()))
    older.start()  # a thread of the backend from before the training (ONNX Runtime's, say)

    def fit():
        pool = threading.Thread(target=lambda: (seen.update(pool=threading.get_native_id()), release.wait()))
        pool.start()  # an OpenMP or joblib worker the fit starts, at the helper's full priority
        while "pool" not in seen:
            pass
        y.call(y.interactive, True)
        seen["pool_nice"] = priority.niceness(seen["pool"])
        seen["older_nice"] = priority.niceness(seen["older"])
        release.set()
        pool.join()

    try:
        y.run(fit)
    finally:
        y.close()
        release.set()
        older.join()
    assert (seen["pool_nice"], seen["older_nice"]) == (max(before, 7), before)


def test_errors_cross_both_ways_and_the_helper_stops():
    y = priority.Yielding(5)

    class Cancelled(Exception):
        pass

    def interrupt():
        raise Cancelled("canceling statement due to user request")

    try:
        with pytest.raises(Cancelled, match="user request"):  # the backend's interrupt check stops the fit
            y.run(lambda: y.wrap(interrupt)())
        with pytest.raises(ZeroDivisionError):  # the fit's own error reaches the backend's thread
            y.run(lambda: 1 / 0)
        assert y.run(lambda: "after") == "after"
    finally:
        y.close()
    assert not any(t.name == "sqlml-fit" for t in threading.enumerate())


def test_nice_zero_runs_fits_inline():
    assert priority.Yielding(0).run(threading.get_ident) == threading.get_ident()


@pytest.mark.parametrize("events, expected", [
    ([(0.0, True)], [True]),
    ([(0.0, False)], [False]),
    ([(0.0, True), (0.5, False), (1.0, False), (1.01, False)], [True, True, True, False]),
    ([(0.0, True), (0.9, True), (1.5, False), (2.0, False)], [True, True, True, False]),
])
def test_interactive_work_is_held_for_a_moment_after_it_was_seen(events, expected):
    s = priority.Sighting(1.0)
    assert [s.seen(t, present) for t, present in events] == expected


# --- a budget whose clock started before the search -------------------------------------------------

class Ticking:
    """A clock that moves 20 ms each time it is read: the search's planning sees time pass
    deterministically, whatever the machine's load."""

    def __init__(self, at: float):
        self.now = at

    def __call__(self) -> float:
        self.now += 0.02
        return self.now


def _train(budget, algorithms=("linear",)):
    rng = np.random.default_rng(0)
    n = 600
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (a + b + rng.normal(scale=0.3, size=n) > 0).astype(np.int64)
    schema = FeatureSchema((Feature("a", "numeric", "float8"), Feature("b", "numeric", "float8")),
                           Target("y", "int4", "binary"))
    notes = []
    trained = front.train(schema, {"a": a, "b": b}, y, task="binary", metric=None, algorithms=list(algorithms),
                          test_size=0.2, seed=1, budget=budget, reserve_seconds=1.2, note=notes.append, ensemble=False)
    return trained, notes


def test_the_search_plans_with_the_time_left_after_a_cold_start():
    # a 5 s budget of which the backend's imports took 4.6 s (started at 0, the clock now at 4.6):
    # a sprint, whatever the algorithms asked for: one holdout, one trial of the cheapest, no refit
    late, notes = _train(Budget(5.0, started=0.0, clock=Ticking(4.6)),
                         algorithms=("lightgbm", "random_forest", "linear"))
    assert [t.algorithm for t in late.result.trials] == ["linear"]
    assert late.result.validation == "holdout" and late.final_model is None
    assert any("one trial of linear" in n for n in notes) and not any("no time left to refit" in n for n in notes)
    candidate = next(late.candidates())
    assert candidate.model is late.result.trials[0].model and candidate.refit == "fit part of the validation split"
    assert candidate.holdout_metrics["roc_auc"] > 0.8  # scored on the holdout the search never saw
    # 3.6 s in: 0.2 s left beyond the reserve is a search (no model kept on its trials); 3.9 s in, a sprint
    assert _train(Budget(5.0, started=0.0, clock=Ticking(3.6)))[0].result.trials[0].model is None
    assert _train(Budget(5.0, started=0.0, clock=Ticking(3.9)))[0].result.trials[0].model is not None
    fresh, _ = _train(Budget(5.0, started=0.0, clock=Ticking(0.0)))
    assert len(fresh.result.trials) > 1
