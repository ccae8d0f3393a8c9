"""Readings of the machine's load from ``/proc`` (Linux: the server side of sqlml runs on Linux)."""

from __future__ import annotations

import os


def cpu_ticks() -> tuple[int, int, int]:
    """(busy ticks, all ticks, cores) of the whole machine, from the ``cpu`` lines of /proc/stat.

    Busy is everything but idle and iowait (a core waiting for a disk is free for work)."""
    busy = total = cores = 0
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            if parts[0] == "cpu":
                ticks = [int(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
                total = sum(ticks)
                busy = total - ticks[3] - ticks[4]
            else:
                cores += 1
    return busy, total, cores or (os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes the kernel estimates can be allocated without swapping (MemAvailable)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise LookupError("MemAvailable")
