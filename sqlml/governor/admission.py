"""Who runs next, and how many rows a job may read. Pure functions of plain values.

Queue order is FIFO by job id (ids count up in submission order, cluster-wide), with one
exception for the per-role limit: a job whose role already runs ``role_slots`` jobs waits without
holding up jobs of other roles behind it. Among the jobs that may run, the oldest goes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlml.errors import OUT_OF_MEMORY, SqlmlError

MIN_SAMPLE_ROWS = 1000  # below this a sample is too small to be worth training on: refuse instead


@dataclass(frozen=True)
class Assignment:
    startable: frozenset[int]  # queued job ids that may take a slot now
    positions: dict[int, int]  # queued job id -> 1-based place in the queue


def assign(running_roles: list[str], queued: list[tuple[int, str]], slots: int, role_slots: int) -> Assignment:
    """FIFO with per-role limits.

    ``running_roles``: the role of each running job; ``queued``: (job id, role) of each queued job.
    """
    free = slots - len(running_roles)
    per_role: dict[str, int] = {}
    for r in running_roles:
        per_role[r] = per_role.get(r, 0) + 1
    startable, positions = set(), {}
    for place, (job_id, role) in enumerate(sorted(queued), start=1):
        positions[job_id] = place
        if free > 0 and per_role.get(role, 0) < role_slots:
            startable.add(job_id)
            free -= 1
            per_role[role] = per_role.get(role, 0) + 1
    return Assignment(frozenset(startable), positions)


@dataclass(frozen=True)
class RowPlan:
    rows: int | None  # rows to read: None means all of them
    estimated_rows: int  # rows the relation is estimated to have
    predicted_peak: int  # bytes the job is predicted to need reading ``rows`` (or all) rows
    sampled_because: str | None = None  # set when the governor, not the user, limited the rows


def plan_rows(estimated_rows: int, peak_for: Callable[[int], int], cap: int, max_rows: int | None,
              job_id: int | None = None) -> RowPlan:
    """Read everything, sample down to what fits under ``cap`` bytes, or refuse.

    ``peak_for(rows)`` is the (conservative) predicted peak memory of the job reading ``rows``
    rows; it must grow with ``rows``. ``max_rows`` is the user's own limit, if any.
    """
    wanted = estimated_rows if max_rows is None else min(estimated_rows, max_rows)
    wanted = max(wanted, 1)
    peak = peak_for(wanted)
    if peak <= cap:
        return RowPlan(None if max_rows is None else max_rows, estimated_rows, peak)
    lo, hi = 0, wanted  # largest row count whose predicted peak fits: peak_for(lo) <= cap < peak_for(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if peak_for(mid) <= cap:
            lo = mid
        else:
            hi = mid
    mb = 1024 ** 2
    job = f"job {job_id}" if job_id is not None else "the job"
    if lo < min(MIN_SAMPLE_ROWS, wanted):
        raise SqlmlError(
            f"{job} would need about {peak / mb:.0f} MB for {wanted} rows, more than the {cap / mb:.0f} MB "
            f"each job may use, and even {min(MIN_SAMPLE_ROWS, wanted)} rows would not fit",
            hint="train on fewer or narrower columns (exclude => '{...}', or a view), or ask an administrator "
                 "to raise sqlml.memory_per_job", sqlstate=OUT_OF_MEMORY)
    why = (f"{job} would need about {peak / mb:.0f} MB for {wanted} rows, more than the "
           f"{cap / mb:.0f} MB each job may use (sqlml.memory_per_job)")
    return RowPlan(lo, estimated_rows, peak_for(lo), why)


def estimated_wait(running: list[tuple[float | None, float | None]], ahead: list[float | None], slots: int,
                   now: float) -> float:
    """Seconds until a slot frees for a queued job.

    ``running``: (predicted seconds, start time) of each running job; ``ahead``: the predicted
    seconds of each job queued before this one, which take the first slots to free, in order;
    ``slots``: the ceiling; ``now``: the time on the clock of the start times. Unknown
    predictions count as 0, a job past its prediction as about to end.
    """
    free_at = sorted(max((predicted or 0.0) - (now - (started or now)), 0.0) for predicted, started in running)
    free_at += [0.0] * max(slots - len(free_at), 0)
    for predicted in ahead:
        free_at.sort()
        free_at[0] += predicted or 0.0
    return min(free_at) if free_at else 0.0
