"""Rows scored per project: counted in each backend's memory, flushed to a file now and then.

Scoring must stay cheap and may run where nothing can be written (a STABLE function, a read-only
transaction, a parallel worker), so the count is not a table: each process adds to a dict and,
at most every ``FLUSH_SECONDS`` and once more when it exits, writes its totals to its own file,
``<data directory>/sqlml_counters/<database oid>/<pid>-<random>.json``, replaced atomically. A
count is never rolled back with its transaction: it counts work done. ``read`` sums the files of
the current database and folds those of processes that have exited into ``archive.json``, so the
directory stays small and the totals only grow (Prometheus counters).

No plpy: the process's data directory and database come from the server binary's globals.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import secrets
import time

FLUSH_SECONDS = 2.0
ARCHIVE = "archive.json"

_pg = ctypes.CDLL(None)
_counts: dict[str, int] = {}
_state = {"flushed": 0.0, "dirty": False, "registered": False, "file": None}
_EXIT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_size_t)


def database_dir(database_oid: int | None = None) -> str:
    data = ctypes.c_char_p.in_dll(_pg, "DataDir").value.decode()
    oid = ctypes.c_uint32.in_dll(_pg, "MyDatabaseId").value if database_oid is None else database_oid
    return os.path.join(data, "sqlml_counters", str(oid))


def add(project: str, rows: int) -> None:
    """Count ``rows`` scored with ``project`` (called on every scoring call: keep it cheap)."""
    _counts[project] = _counts.get(project, 0) + rows
    _state["dirty"] = True
    if not _state["registered"]:
        _register_exit()
    if time.monotonic() - _state["flushed"] >= FLUSH_SECONDS:
        flush()


def flush() -> None:
    """Write this process's totals; a failure (disk full, permissions) never fails scoring."""
    if not _state["dirty"]:
        return
    _state["flushed"] = time.monotonic()
    try:
        if _state["file"] is None:
            directory = database_dir()
            os.makedirs(directory, exist_ok=True)
            _state["file"] = os.path.join(directory, f"{os.getpid()}-{secrets.token_hex(4)}.json")
        _write(_state["file"], _counts)
        _state["dirty"] = False
    except OSError:
        pass


def _register_exit() -> None:
    """Flush once more when the backend (or parallel worker) exits, through PostgreSQL's on_proc_exit."""
    _state["registered"] = True
    callback = _EXIT_CALLBACK(lambda code, arg: flush())
    _state["callback"] = callback  # must outlive the process's Python objects: keep a reference
    _pg.on_proc_exit(callback, ctypes.c_size_t(0))


def _write(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _load(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
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
    flush()
    directory = database_dir(database_oid)
    if not os.path.isdir(directory):
        return dict(_counts)
    with open(os.path.join(directory, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        archive_path = os.path.join(directory, ARCHIVE)
        archive = _load(archive_path) or {"counts": {}, "folded": []}
        for name in archive["folded"]:  # folded last time, not yet deleted
            _unlink(os.path.join(directory, name))
        live, dead = {}, []
        for name in os.listdir(directory):
            if not name.endswith(".json") or name == ARCHIVE:
                continue
            pid = int(name.split("-", 1)[0])
            counts = _load(os.path.join(directory, name))
            if _alive(pid) or pid == os.getpid():
                _merge(live, counts)
            else:
                _merge(archive["counts"], counts)
                dead.append(name)
        archive["folded"] = dead
        if dead:
            _write(archive_path, archive)
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
