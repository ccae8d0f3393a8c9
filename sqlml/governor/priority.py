"""Run CPU-heavy work at a lower CPU priority than the rest of the server (pure: no database).

A training's search runs on a helper thread whose niceness is raised (``sqlml.training_nice``):
the kernel then lets any ordinary process, such as a backend answering ``sqlml.predict`` or a
dashboard's batch, preempt it at once, and gives the search whatever CPU they leave. This yields
between every scheduler tick, not only between trials, and needs no signal from the scoring side
(single-row predict calls are not jobs and must stay a few microseconds of overhead).

Why a thread: Linux keeps a nice value per thread, and an unprivileged process may raise its
niceness but never lower it again. Niceness raised on the backend's own thread would stay with
the backend (a pooled connection) after the training; on a helper thread it ends with the thread.

The helper never touches PostgreSQL (plpy is not thread-safe): whatever must run on the backend's
thread (interrupt checks, NOTICEs, queries) goes through ``Niced.call``, which hands the call to
the waiting backend thread and returns its result or raises its exception. Every signal is
blocked on the helper, so PostgreSQL's handlers (cancel, terminate, timeouts) run on the backend's
thread, as without it.

Use: ``niced = Niced()`` on the backend's thread; pass ``niced.wrap(f)`` (or calls through
``niced.call``) wherever ``work`` reaches PostgreSQL; then ``niced.run(work, nice)``.
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


class Niced:
    """Created on the backend's thread, which :meth:`run` then serves while the helper works."""

    def __init__(self):
        self._owner = threading.get_ident()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()

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

    def wrap(self, fn: Callable[..., T] | None) -> Callable[..., T] | None:
        """``fn`` made to run on the backend's thread whoever calls it."""
        return None if fn is None else (lambda *args, **kwargs: self.call(fn, *args, **kwargs))

    def run(self, work: Callable[[], T], nice: int, setup: Callable[[], object] | None = None) -> T:
        """``work()`` on a helper thread at niceness ``nice`` (0: on this thread, as is), serving
        :meth:`call` meanwhile. ``setup()``, if given, returns a context manager held around
        ``work`` on the thread that runs it (per-thread settings such as OpenMP's thread count).
        The helper has ended when this returns or raises; ``work``'s exception is raised here."""
        if nice <= 0:
            with setup() if setup else nullcontext():
                return work()
        outcome: dict = {}

        def helper():
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
                me = threading.get_native_id()  # this thread only (Linux); never below the backend's own
                os.setpriority(os.PRIO_PROCESS, me, max(nice, os.getpriority(os.PRIO_PROCESS, me)))
                with setup() if setup else nullcontext():
                    outcome["value"] = work()
            except BaseException as e:  # noqa: BLE001 - handed to the backend's thread, raised there
                outcome["error"] = e
            finally:
                self._calls.put(None)

        thread = threading.Thread(target=helper, name="sqlml-niced", daemon=True)
        thread.start()
        while (call := self._calls.get()) is not None:
            try:
                call.value = call.fn(*call.args, **call.kwargs)
            except BaseException as e:  # noqa: BLE001 - raised on the helper, where the call came from
                call.error = e
            call.done.set()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def niceness(thread_id: int | None = None) -> int:
    """The nice value of a thread (native id; this one by default)."""
    return os.getpriority(os.PRIO_PROCESS, thread_id or threading.get_native_id())
