"""``sqlml.scoring.overlap`` without a database: order, real overlap, errors, early close, signals."""

from __future__ import annotations

import signal
import threading

import pytest

from sqlml.scoring.overlap import overlapped


def _score_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sqlml-score")]


@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_every_chunk_in_order(n):
    assert list(overlapped(lambda x: x * 10, ((i, i) for i in range(n)))) == [(i, i * 10) for i in range(n)]
    assert _score_threads() == []


def test_chunk_k_is_scored_while_chunk_k_plus_1_is_read():
    read = [threading.Event() for _ in range(4)]

    def chunks():
        for i in range(4):
            read[i].set()
            yield i, i

    def score(i):
        # scoring chunk i waits for chunk i + 1 to be read: done one after the other, this times out
        if i + 1 < len(read):
            assert read[i + 1].wait(timeout=10), f"chunk {i + 1} was not read while chunk {i} was scored"
        return threading.current_thread().name

    out = list(overlapped(score, chunks()))
    assert [k for k, _ in out] == [0, 1, 2, 3]
    assert all(name.startswith("sqlml-score") for _, name in out)  # never the caller's thread


def test_an_error_surfaces_at_its_chunk_and_stops_the_thread():
    def score(i):
        if i == 2:
            raise ValueError("bad chunk")
        return i

    got = []
    with pytest.raises(ValueError, match="bad chunk"):
        for _key, out in overlapped(score, ((i, i) for i in range(5))):
            got.append(out)
    assert got == [0, 1]
    assert _score_threads() == []


def test_an_error_while_reading_stops_the_thread():
    def chunks():
        yield 0, 0
        raise RuntimeError("canceling statement due to user request")

    with pytest.raises(RuntimeError, match="canceling"):
        list(overlapped(lambda x: x, chunks()))
    assert _score_threads() == []


def test_closing_early_waits_for_the_chunk_in_flight():
    finished = []

    def score(i):
        finished.append(i)
        return i

    gen = overlapped(score, ((i, i) for i in range(100)))
    assert next(gen) == (0, 0)  # like a LIMIT: the consumer stops here
    gen.close()
    assert _score_threads() == []
    assert finished in ([0], [0, 1])  # chunk 1 was submitted (run or cancelled); nothing after it


def test_the_thread_blocks_every_signal():
    [(_, blocked)] = list(overlapped(lambda _: signal.pthread_sigmask(signal.SIG_BLOCK, []), [(0, None)]))
    assert blocked == signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}  # the two no thread can block


def test_the_garbage_collector_is_off_while_any_overlap_runs():
    """A collection runs on whichever thread allocates, and its finalizers (a plpy cursor's) would
    call PostgreSQL from the scoring thread: off until the last of interleaved overlaps ends."""
    import gc

    assert gc.isenabled()
    first = overlapped(lambda x: gc.isenabled(), ((i, i) for i in range(3)))
    second = overlapped(lambda x: gc.isenabled(), ((i, i) for i in range(3)))
    assert next(first) == (0, False) and next(second) == (0, False)
    assert list(first) == [(1, False), (2, False)]
    assert not gc.isenabled()  # the second is still running
    assert list(second) == [(1, False), (2, False)]
    assert gc.isenabled()
