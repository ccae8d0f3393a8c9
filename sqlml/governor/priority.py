"""Training yields the CPU to interactive work (pure: no database).

A training's model fits run on a helper thread of its backend. While interactive work is active
beside it (the server's signal: other backends running a statement on the CPU, such as
``sqlml.predict`` calls, a dashboard's batch, ordinary queries), the helper's niceness is raised
to ``sqlml.training_nice``: the kernel then lets that work preempt the fit at once, at every
scheduler tick, and the fit uses the CPU it leaves. When the work has passed, the next fit runs on
a fresh helper at normal priority, so that a training on a server busy with batch work alone (or
with nothing) keeps its fair share and its budget buys what it should.

Why threads: Linux keeps a nice value per thread, and an unprivileged process may raise its
niceness but never lower it again. Raised on the backend's own thread it would stay with the
backend (a pooled connection) forever; on a helper it ends with the helper.

The helper never touches PostgreSQL (plpy is not thread-safe): whatever a fit must run on the
backend's thread (the interrupt check at every checkpoint) goes through :meth:`Yielding.call`,
which hands the call to the backend's thread, waiting in :meth:`Yielding.run`, and returns its
result or raises its exception on the helper. Every signal is blocked on the helper, so
PostgreSQL's handlers (cancel, terminate, timeouts) run on the backend's thread as before.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar

T = TypeVar("T")


class _Call:
    def __init__(self, fn: Callable, args: tuple, kwargs: dict):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.done = threading.Event()
        self.value = self.error = None


class _Done:
    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error


class Yielding:
    """Created on the backend's thread, which then calls :meth:`run` for each fit.

    ``nice``: the helper's niceness while interactive work is active (0: fits run inline, as
    before). ``setup()``: a context manager held on each helper for its life (per-thread
    settings, such as OpenMP's thread count)."""

    def __init__(self, nice: int, setup: Callable[[], object] | None = None):
        self.nice, self.setup = nice, setup
        self.active = False  # interactive work was active at the last check
        self._owner = threading.get_ident()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()  # helper -> backend thread: _Call or _Done
        self._tasks: queue.SimpleQueue | None = None  # backend thread -> helper: fits, None to stop
        self._thread: threading.Thread | None = None
        self._tid: int | None = None
        self._before: set[int] = set()  # the process's threads before the helper: never reniced
        self._reniced = False

    # --- on any thread -------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """``fn(*args, **kwargs)`` on the backend's thread: at once from it, else handed to it."""
        if threading.get_ident() == self._owner:
            return fn(*args, **kwargs)
        call = _Call(fn, args, kwargs)
        self._calls.put(call)
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.value

    def wrap(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` made to run on the backend's thread whoever calls it."""
        return lambda *args, **kwargs: self.call(fn, *args, **kwargs)

    # --- on the backend's thread ---------------------------------------------------------------

    def interactive(self, active: bool) -> None:
        """The server's signal: is interactive work active now? Raises the niceness of the running
        helper, and of the threads it started (OpenMP's, joblib's: they inherited full priority),
        at once when it is. A nice value can only go up: a later fit gets a new helper."""
        self.active = active
        if active and self._thread is not None and not self._reniced:
            for tid in {self._tid} | (_threads() - self._before):
                try:
                    os.setpriority(os.PRIO_PROCESS, tid, max(self.nice, os.getpriority(os.PRIO_PROCESS, tid)))
                except (ProcessLookupError, PermissionError):  # the thread ended meanwhile
                    pass
            self._reniced = True

    def run(self, fit: Callable[[], T]) -> T:
        """``fit()`` on the helper, serving :meth:`call` meanwhile; its result, or its exception."""
        if self.nice <= 0:
            return fit()
        if self._reniced and not self.active:
            self.close()  # the interactive work has passed: the next fit runs at normal priority
        if self._thread is None:
            self._start()
        self.interactive(self.active)
        self._tasks.put(fit)
        while not isinstance(item := self._calls.get(), _Done):
            try:
                item.value = item.fn(*item.args, **item.kwargs)
            except BaseException as e:  # noqa: BLE001 - raised on the helper, where the call came from
                item.error = e
            item.done.set()
        if item.error is not None:
            raise item.error
        return item.value

    def close(self) -> None:
        """Stop the helper (between fits); the next :meth:`run` starts a new one."""
        if self._thread is not None:
            self._tasks.put(None)
            self._thread.join()
            self._thread = self._tasks = self._tid = None
            self._reniced = False

    def _start(self) -> None:
        self._before = _threads()
        tasks: queue.SimpleQueue = queue.SimpleQueue()
        started = threading.Event()
        ids = {}

        def helper():
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            ids["tid"] = threading.get_native_id()
            started.set()
            try:
                context = self.setup() if self.setup else nullcontext()
                context.__enter__()
            except BaseException as e:  # noqa: BLE001 - every fit sent here fails with it
                failed, context = e, None
            else:
                failed = None
            try:
                while (fit := tasks.get()) is not None:
                    if failed is not None:
                        self._calls.put(_Done(error=failed))
                        continue
                    try:
                        self._calls.put(_Done(fit()))
                    except BaseException as e:  # noqa: BLE001 - handed to the backend's thread, raised there
                        self._calls.put(_Done(error=e))
            finally:
                if context is not None:
                    context.__exit__(None, None, None)

        self._tasks = tasks
        self._thread = threading.Thread(target=helper, name="sqlml-fit", daemon=True)
        self._thread.start()
        started.wait()
        self._tid = ids["tid"]


class Sighting:
    """Whether something was seen within the last ``hold`` seconds: the interactive signal is
    sampled, and a fit should not flap back to full priority between two calls of a client."""

    def __init__(self, hold: float):
        self.hold = hold
        self.last: float | None = None

    def seen(self, now: float, present: bool) -> bool:
        if present:
            self.last = now
        return self.last is not None and now - self.last <= self.hold


def _threads() -> set[int]:
    """Native ids of this process's threads (Linux)."""
    return {int(t) for t in os.listdir("/proc/self/task")}


def niceness(thread_id: int | None = None) -> int:
    """The nice value of a thread (native id; this one by default)."""
    return os.getpriority(os.PRIO_PROCESS, thread_id or threading.get_native_id())
