"""Workload classes and load-based concurrency. Pure functions of plain values.

Two lanes, as in Redshift's short query acceleration:

- **interactive**: batch scoring (``predict_batch``, ``score``) whose predicted CPU work is at most
  ``sqlml.interactive_seconds`` starts at once. It takes no slot and never queues, so a dashboard's
  150-row batch never waits behind a training. (Single-row ``predict`` is not a job at all.)
- **governed**: every training, and larger batch scoring, waits in the FIFO queue for a slot.

How many governed jobs run is chosen from the server's live load, with ``sqlml.slots`` as the
ceiling: a job starts only while the cores other work leaves (CPU busy from ``/proc/stat``, and
backends running a statement) hold its threads, and its predicted peak memory fits in what
``/proc/meminfo`` says is available beside the running jobs' predictions. One governed job may
always run when none does (unless memory is short), so steady outside load cannot starve training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INTERACTIVE, GOVERNED = "interactive", "governed"
SCORING = ("predict_batch", "score")
MB = 1024 ** 2


def lane(kind: str, predicted_cpu_seconds: float, interactive_seconds: float) -> str:
    """The lane of a job: training is always governed; scoring is interactive when small.

    ``predicted_cpu_seconds`` is the cost model's prediction for a warm backend: the one-off
    loading of the libraries in a new backend is latency, not work that competes with training.
    """
    if kind in SCORING and predicted_cpu_seconds <= interactive_seconds:
        return INTERACTIVE
    return GOVERNED


@dataclass(frozen=True)
class Load:
    """The server's load as a waiting job sees it."""

    cpus: int  # cores sqlml may use (affinity, cgroup quota)
    busy_cores: float  # cores busy over the last interval, every process of the machine
    active_backends: int  # backends running a statement, other than the governed jobs' own
    available_memory: int  # bytes (MemAvailable)


@dataclass(frozen=True)
class Running:
    """A governed job holding a slot."""

    threads: int
    predicted_peak: int  # bytes (0 when unknown)


@dataclass(frozen=True)
class Concurrency:
    slots: int  # governed jobs that may run at once now
    limited_by: str | None  # "slots" | "cpu" | "memory" when that is what holds the next job back
    reason: str  # what a waiting job is told


def concurrency(ceiling: int, load: Load | None, running: list[Running], threads: int, peak: int) -> Concurrency:
    """Governed jobs that may run at once, given ``running`` and a next job of ``threads`` threads
    predicted to peak at ``peak`` bytes. Without a load reading, the ceiling alone decides."""
    n = len(running)
    slot_reason = f"all {ceiling} slot{'s' if ceiling != 1 else ''} busy (sqlml.slots)"
    if load is None:
        return Concurrency(ceiling, "slots" if n >= ceiling else None, slot_reason)
    ours = sum(r.threads for r in running)
    other = min(max(load.busy_cores - ours, float(load.active_backends), 0.0), float(load.cpus))
    free = load.cpus - other  # cores that other work leaves to governed jobs
    by_cpu = max(math.floor((free + 1e-9) / max(threads, 1)), 1)
    cpu_reason = (f"the server is busy: other work uses {other:.1f} of {load.cpus} cores "
                  f"({load.active_backends} active backend{'s' if load.active_backends != 1 else ''}), "
                  f"{n} job{'s' if n != 1 else ''} of sqlml run{'s' if n == 1 else ''}")
    headroom = load.available_memory - sum(r.predicted_peak for r in running)
    fits = peak <= headroom
    mem_reason = (f"memory: {max(headroom, 0) / MB:.0f} MB available beside the running jobs, "
                  f"this job is predicted to need {peak / MB:.0f} MB")
    slots, limited_by, reason = ceiling, "slots", slot_reason
    if by_cpu < slots:
        slots, limited_by, reason = by_cpu, "cpu", cpu_reason
    if not fits and n < slots:
        slots, limited_by, reason = n, "memory", mem_reason
    return Concurrency(slots, limited_by if n >= slots else None, reason)


def cpu_busy(before: tuple[int, int], after: tuple[int, int], cores: int) -> float | None:
    """Cores busy between two ``/proc/stat`` readings of (busy ticks, all ticks) over ``cores``
    cores; None when no time passed between them."""
    total = after[1] - before[1]
    if total <= 0:
        return None
    return max(min((after[0] - before[0]) / total, 1.0), 0.0) * cores
