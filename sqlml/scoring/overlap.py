"""Run the model on one chunk while the caller reads the next and writes the last (pure: no database).

Batch scoring alternates three steps per chunk: PostgreSQL reads it, ONNX Runtime scores it,
PostgreSQL writes the scores. Done one after the other, the backend's SQL work (~40% of the time
for a 100-tree model) adds to ONNX Runtime's. ``overlapped`` moves only the model onto one
background thread, so chunk k is scored while the caller writes chunk k-1 and reads chunk k+1.

The thread never touches PostgreSQL or plpy (they are not thread-safe): it runs ``score`` on
what the caller handed over (Python objects and numpy arrays) and nothing else, with every signal
blocked so that PostgreSQL's handlers (cancel, terminate, timeouts) always run on the backend's own
thread. Python's cyclic garbage collector is off meanwhile: a collection runs on whichever thread
allocates, and the finalizers it would call (a plpy cursor's) call into PostgreSQL. ONNX Runtime
and the compiled models release the GIL while they compute, and so does the backend while it
writes a chunk where it can (``pg_internals.DatumSpi``), so the two threads really run at once: one
core for PostgreSQL, one for the model, as many cores as the client baseline (a client process
and its backend) uses.

Memory: at most two chunks are held beyond the one being read (the one being scored and the one
being written), so it stays flat whatever the table's size.
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor


def _block_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


_off = {"depth": 0, "was_on": False}  # overlapped calls may interleave (two in one SELECT list)


def _collector_off() -> None:
    if _off["depth"] == 0:
        _off["was_on"] = gc.isenabled()
        gc.disable()
    _off["depth"] += 1


def _collector_back() -> None:
    _off["depth"] -= 1
    if _off["depth"] == 0 and _off["was_on"]:
        gc.enable()


def overlapped(score: Callable, chunks: Iterable[tuple]) -> Iterator[tuple]:
    """For each ``(key, payload)`` of ``chunks``, yield ``(key, score(payload))``, in order.

    ``score(payload)`` of chunk k runs on a background thread while ``chunks`` produces chunk k+1
    and the consumer handles chunk k-1. An exception raised by ``score`` is raised here, at its
    chunk; closing the generator early (an error, a LIMIT) waits for the chunk being scored and
    stops the thread, so no thread outlives the call."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlml-score", initializer=_block_signals)
    pending = None
    _collector_off()
    try:
        for key, payload in chunks:
            job = (key, pool.submit(score, payload))
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = job
        if pending is not None:
            key, future = pending
            pending = None
            yield key, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _collector_back()
