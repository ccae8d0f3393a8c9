"""Caps inside the running process: address space, threads; and the job's peak memory.

A job runs inside a PostgreSQL backend, so an allocation that fails must become an error, not a
kill by the kernel's OOM killer (which restarts every connection of the server). A soft
``RLIMIT_AS`` a little above the backend's current address space makes an oversized allocation
fail instead: Python raises ``MemoryError``, PostgreSQL's own allocator reports "out of memory".
The old limit is restored when the job ends, and the backend allocates normally again.

Linux only (``/proc/self``): the server side of sqlml runs on Linux.
"""

from __future__ import annotations

import ctypes
import resource
from contextlib import contextmanager

MB = 1024 ** 2
BASE_SLACK = 192 * MB  # libraries a job may still load (converters), PostgreSQL's own work memory
THREAD_SLACK = 80 * MB  # per thread: its stack (8 MB) and its malloc arena's reservation (64 MB)


def _status(field: str) -> int:
    """A ``VmXxx`` line of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def address_space() -> int:
    return _status("VmSize")


def resident() -> int:
    return _status("VmRSS")


@contextmanager
def address_space_cap(job_bytes: int, threads: int = 1):
    """Let the process grow by about ``job_bytes`` (plus slack for threads and late imports)."""
    old = resource.getrlimit(resource.RLIMIT_AS)
    soft = address_space() + job_bytes + BASE_SLACK + THREAD_SLACK * max(threads, 1)
    hard = old[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    if old[0] != resource.RLIM_INFINITY:
        soft = min(soft, old[0])
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    try:
        yield soft
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


class PeakMeter:
    """Peak resident memory a job added to its process, in bytes.

    Resets the kernel's high-water mark (``/proc/self/clear_refs``) at the start where allowed,
    so that an earlier job of the same backend does not count; otherwise compares with it. First
    hands the free memory an earlier job left in the C heap back to the system (``malloc_trim``):
    a job reusing it would otherwise look smaller than the same job in a fresh backend.
    """

    def __init__(self):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except AttributeError:  # not glibc
            pass
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.start = resident()

    def peak(self) -> int:
        return max(_status("VmHWM") - self.start, 0)


_controller: dict = {}  # "objects": shared objects loaded when "controller" looked for thread pools


@contextmanager
def thread_limits(threads: int):
    """BLAS and OpenMP thread pools of this process limited to ``threads`` (threadpoolctl). The
    pools are looked for again only once the process has loaded another shared object (an
    import may bring one): looking took ~1.5 ms of every job."""
    from threadpoolctl import ThreadpoolController

    objects = _loaded_objects()
    if _controller.get("objects") != objects:
        _controller.update(objects=objects, controller=ThreadpoolController())
    with _controller["controller"].limit(limits=max(int(threads), 1)):
        yield


_ON_OBJECT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)


def _loaded_objects() -> int:
    """How many shared objects this process has loaded (dl_iterate_phdr)."""
    count = 0

    def counted(info, size, data) -> int:
        nonlocal count
        count += 1
        return 0

    ctypes.CDLL(None).dl_iterate_phdr(_ON_OBJECT(counted), None)
    return count


def looks_like_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure, whatever library reported it (Python, PostgreSQL, C++ code)."""
    if isinstance(exc, MemoryError):
        return True
    if getattr(exc, "sqlstate", None) == "53200":
        return True
    text = str(exc)
    return any(s in text for s in ("std::bad_alloc", "Unable to allocate", "Failed to allocate memory",
                                   "out of memory"))
