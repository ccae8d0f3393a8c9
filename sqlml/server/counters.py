"""Rows scored per project, counted in shared memory-mapped files: cheap and non-transactional.

Scoring must stay cheap and may run where nothing can be written to a table (a STABLE function, a
read-only transaction, a parallel worker), and a count must not be rolled back with its
transaction: it counts work done. So each process maps a small file of its own,
``<data directory>/sqlml_counters/<database oid>/<pid>-<random>.cnt``, and adds to a slot in it:
one memory write per scoring call (an increment through a memoryview of the mapping: the per-row
path counts each row this way, in ~50 ns), no system call, visible at once to any process that
reads the file. ``read`` sums the files of a database and folds those of processes that have exited into
``archive.json``, so the directory stays small and the totals only grow (Prometheus counters).

File layout (little-endian): ``MAGIC`` (8 bytes), used slots (int64), then ``SLOTS`` slots of
``SLOT`` bytes: the count (int64) and the project name (UTF-8, NUL-padded). A slot's name is
written before the used-slot count that makes it visible; only its own process writes a file.

No plpy: the data directory and the database come from the server's globals (``pg_internals``).
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import secrets
import struct
import sys

MAGIC = b"SQLMLC01"
HEADER, SLOT, SLOTS = 16, 128, 256
NAME_BYTES = SLOT - 8
ARCHIVE = "archive.json"
I64 = struct.Struct("<q")
assert sys.byteorder == "little"  # slots are counted through a native int64 view of the file

_slots: dict[str, tuple] = {}  # project -> (int64 view of its file, index of its count)
_file: dict = {"map": None, "view": None, "used": SLOTS, "broken": False}


def database_dir(database_oid: int | None = None) -> str:
    from sqlml.server import pg_internals  # here: the module's pure parts are tested outside a backend

    oid = pg_internals.database_oid() if database_oid is None else database_oid
    return os.path.join(pg_internals.data_directory(), "sqlml_counters", str(oid))


def add(project: str, rows: int) -> None:
    """Count ``rows`` scored with ``project`` (called on every scoring call: keep it cheap)."""
    view, i = slot(project)
    view[i] += rows


def slot(project: str) -> tuple:
    """(view, index): ``view[index] += n`` counts n rows of ``project``. Where counting is impossible
    (the directory cannot be written) a slot that counts nowhere: scoring never fails for a counter."""
    hit = _slots.get(project)
    if hit is None:
        hit = _new_slot(project) or (memoryview(bytearray(8)).cast("q"), 0)
    return hit


def _new_slot(project: str):
    """A slot for ``project`` in this process's file (a new file when full); None if counting is
    impossible here."""
    if _file["broken"]:
        return None
    try:
        if _file["used"] >= SLOTS:
            _file["map"], _file["used"] = _new_file(), 0
            _file["view"] = memoryview(_file["map"]).cast("q")  # native order: little-endian, as asserted
    except OSError:
        _file["broken"] = True
        return None
    mm, i = _file["map"], _file["used"]
    offset = HEADER + i * SLOT
    mm[offset + 8:offset + SLOT] = project.encode()[:NAME_BYTES].ljust(NAME_BYTES, b"\0")
    I64.pack_into(mm, offset, 0)
    _file["used"] = i + 1
    I64.pack_into(mm, 8, i + 1)  # publish the slot after its name
    _slots[project] = (_file["view"], offset // 8)
    return _slots[project]


def _new_file() -> mmap.mmap:
    directory = database_dir()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{os.getpid()}-{secrets.token_hex(4)}.cnt")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, HEADER + SLOTS * SLOT)
        mm = mmap.mmap(fd, HEADER + SLOTS * SLOT)
    finally:
        os.close(fd)
    mm[0:8] = MAGIC
    return mm


def parse(data: bytes) -> dict[str, int]:
    """Project -> count from a counters file's bytes (empty for a file that is not one)."""
    if len(data) < HEADER or data[:8] != MAGIC:
        return {}
    used = min(I64.unpack_from(data, 8)[0], (len(data) - HEADER) // SLOT)
    out = {}
    for i in range(used):
        offset = HEADER + i * SLOT
        name = data[offset + 8:offset + SLOT].rstrip(b"\0").decode(errors="replace")
        out[name] = out.get(name, 0) + I64.unpack_from(data, offset)[0]
    return out


def _load(path: str, binary: bool) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
        return parse(data) if binary else json.loads(data)
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(database_oid: int | None = None) -> dict[str, int]:
    """Rows scored per project in a database (default: the current one), across all processes.

    Files of exited processes are folded into the archive under a lock. The archive lists what it
    folded until the files are gone, so a crash between its write and the deletes counts nothing twice.
    """
    directory = database_dir(database_oid)
    if not os.path.isdir(directory):
        return {}
    with open(os.path.join(directory, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        archive_path = os.path.join(directory, ARCHIVE)
        archive = _load(archive_path, binary=False) or {"counts": {}, "folded": []}
        for name in archive["folded"]:  # folded last time, not yet deleted
            _unlink(os.path.join(directory, name))
        live, dead = {}, []
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".cnt"):
                continue
            counts = _load(os.path.join(directory, name), binary=True)
            if _alive(int(name.split("-", 1)[0])):
                _merge(live, counts)
            else:
                _merge(archive["counts"], counts)
                dead.append(name)
        archive["folded"] = dead
        if dead:
            tmp = f"{archive_path}.tmp"
            with open(tmp, "w") as f:
                json.dump(archive, f)
            os.replace(tmp, archive_path)
            for name in dead:
                _unlink(os.path.join(directory, name))
        totals = dict(archive["counts"])
        _merge(totals, live)
        return totals


def _merge(into: dict, counts: dict) -> None:
    for project, n in counts.items():
        into[project] = into.get(project, 0) + int(n)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
