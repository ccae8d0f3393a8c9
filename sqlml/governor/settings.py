"""The governor's settings: what an administrator configures, never what a user can SET.

The values come from the server's configuration files only (``postgresql.conf``, files it
includes, ``postgresql.auto.conf`` written by ALTER SYSTEM), as ``pg_file_settings`` reports
them. A placeholder parameter such as ``sqlml.slots`` can be SET by any user in a session, or
per role and database; those values are ignored, so no user can give themselves more slots,
memory or threads. Missing settings take defaults derived from the machine's cores and memory.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields

from sqlml.errors import INVALID_PARAMETER, SqlmlError

PREFIX = "sqlml."


@dataclass(frozen=True)
class Settings:
    slots: int  # jobs running at once across the cluster
    role_slots: int  # jobs one role may run at once
    queue_timeout: float  # seconds a job may wait for a slot
    memory_per_job: int  # bytes of memory one job may add to its backend
    threads_per_job: int  # threads of numpy/BLAS, OpenMP, LightGBM, ONNX Runtime per job
    interactive_seconds: float = 2.0  # batch scoring predicted to take at most this long skips the queue
    training_nice: int = 10  # niceness of a training's fits while interactive work runs: 0 (no yielding) to 19
    load_aware: bool = True  # below the slots, start governed jobs only while the load allows


DESCRIPTIONS = {
    "slots": "ceiling on governed jobs (every training, batch scoring above sqlml.interactive_seconds) running at "
             "once across the cluster; below it a job starts only while the cores other work leaves (/proc/stat, "
             "active backends) and the available memory (/proc/meminfo) hold it; one may always run",
    "role_slots": "jobs one role may run at once (so that one role cannot take every slot)",
    "queue_timeout": "how long a job waits for a slot before failing",
    "memory_per_job": "memory one job may use in its backend: larger jobs are sampled, refused or stopped",
    "threads_per_job": "threads each running job uses (BLAS, OpenMP, LightGBM)",
    "interactive_seconds": "batch scoring whose predicted work is at most this long runs at once in the interactive "
                           "lane, which takes no slot and never queues behind training (short query acceleration)",
    "training_nice": "CPU niceness (0-19) of a training's model fits while other backends run statements (predict "
                     "calls, interactive batches, queries): they preempt the fit at once and it uses the CPU they "
                     "leave; at full priority again once they pass; 0 turns yielding off",
    "load_aware": "on: sqlml.slots is a ceiling, and fewer governed jobs run while the server is busy; off: the "
                  "slots alone decide",
}


def machine_cpus() -> int:
    """Cores this process may use: its affinity, bounded by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(cpus, 1)


def machine_memory() -> int:
    """Bytes of memory: physical, bounded by a cgroup v2 memory limit."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit != "max":
            total = min(total, int(limit))
    except (OSError, ValueError):
        pass
    return total


def defaults(cpus: int | None = None, memory: int | None = None, slots: int | None = None) -> Settings:
    """Half the cores and half the memory for sqlml jobs, the other half for ordinary queries.

    Jobs get two threads each where there are cores for it (``slots`` x ``threads_per_job`` <=
    cores / 2); one role may take all slots but one; each job may use its share of the half.
    ``slots``, when an administrator chose it, is what the other defaults divide by.
    """
    cpus = cpus or machine_cpus()
    memory = memory or machine_memory()
    half = max(cpus // 2, 1)
    slots = slots or max(half // 2, 1)
    return Settings(slots=slots, role_slots=max(slots - 1, 1), queue_timeout=300.0,
                    memory_per_job=max(memory // 2 // slots, 256 * MB), threads_per_job=max(half // slots, 1))


KB, MB, GB, TB = 1024, 1024 ** 2, 1024 ** 3, 1024 ** 4
_BYTES = {"": 1, "b": 1, "kb": KB, "mb": MB, "gb": GB, "tb": TB}
_SECONDS = {"": 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_count(name: str, text: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text) or int(text) < 1:
        raise _bad(name, text, "a positive integer")
    return int(text)


def parse_seconds(name: str, text: str) -> float:
    """``300``, ``300s``, ``5min``, ``1h``, ``500ms`` (PostgreSQL's time units)."""
    m = _QUANTITY.match(text)
    if not m or m.group(2).lower() not in _SECONDS:
        raise _bad(name, text, "a duration such as 300s, 5min or 1h")
    return float(m.group(1)) * _SECONDS[m.group(2).lower()]


def parse_bytes(name: str, text: str) -> int:
    """``2GB``, ``512MB``, ``1048576`` (bytes) (PostgreSQL's memory units, case-insensitive)."""
    m = _QUANTITY.match(text)
    if not m or m.group(2).lower() not in _BYTES:
        raise _bad(name, text, "a size such as 512MB or 4GB")
    value = int(float(m.group(1)) * _BYTES[m.group(2).lower()])
    if value < 16 * MB:
        raise _bad(name, text, "at least 16MB")
    return value


def parse_nice(name: str, text: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text) or int(text) > 19:
        raise _bad(name, text, "an integer from 0 (no yielding) to 19")
    return int(text)


def parse_switch(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in ("on", "off", "true", "false", "1", "0"):
        raise _bad(name, text, "on or off")
    return value in ("on", "true", "1")


_PARSERS = {"slots": parse_count, "role_slots": parse_count, "queue_timeout": parse_seconds,
            "memory_per_job": parse_bytes, "threads_per_job": parse_count, "interactive_seconds": parse_seconds,
            "training_nice": parse_nice, "load_aware": parse_switch}


def _bad(name: str, text: str, expected: str) -> SqlmlError:
    return SqlmlError(f"setting {PREFIX}{name} = '{text}' is invalid: expected {expected}",
                      hint=f"an administrator can fix it: ALTER SYSTEM SET {PREFIX}{name} = ... "
                           "(or edit postgresql.conf)",
                      sqlstate=INVALID_PARAMETER)


def from_config(values: dict[str, str], base: Settings | None = None) -> tuple[Settings, dict[str, str]]:
    """(settings, {name: source}) from configuration-file values keyed by full name (``sqlml.slots``).

    Unknown ``sqlml.*`` names are ignored here (other parts of sqlml may define their own).
    """
    if base is None:
        slots = values.get(PREFIX + "slots")
        base = defaults(slots=parse_count("slots", str(slots)) if slots is not None else None)
    chosen, sources = {}, {}
    for f in fields(Settings):
        text = values.get(PREFIX + f.name)
        if text is None:
            chosen[f.name], sources[f.name] = getattr(base, f.name), "default"
        else:
            chosen[f.name], sources[f.name] = _PARSERS[f.name](f.name, str(text)), "configuration file"
    return Settings(**chosen), sources


def describe(value, name: str) -> str:
    """A setting's value as an administrator would write it."""
    if name == "memory_per_job":
        return f"{value / MB:.0f}MB"
    if name in ("queue_timeout", "interactive_seconds"):
        return f"{value:g}s"
    if name == "load_aware":
        return "on" if value else "off"
    return str(value)
