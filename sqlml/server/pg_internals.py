"""Every PostgreSQL internal sqlml reads through ctypes, in one place, checked against the server's version.

Each fact below names the PostgreSQL major versions it was checked against (the server headers of
that version: ``/usr/include/postgresql/<major>/server``). Importing this module first reads the
running server's version (the ``server_version_num`` setting, through ``GetConfigOption``: no SPI,
so it works in parallel workers too) and refuses any major version not in
``sqlml.postgres_versions.SUPPORTED_MAJORS``, before anything reads a struct or a global.
Import it only inside a backend (lazily, in functions, from modules that also run elsewhere).

``statement_key()`` changes with every SQL statement (and every command of a function that writes);
``in_parallel_mode()`` is true in parallel workers and in their leader while a parallel plan runs;
``iso_dates()`` says whether DateStyle prints dates as ISO 8601; ``data_directory()`` and
``database_oid()`` locate the files sqlml keeps beside the cluster's (``compiled_cache_dir()``:
compiled models).

``ParallelSpi`` is an Executor over SPI called directly. plpy's SPI opens a subtransaction for every
query, which parallel mode refuses ("cannot start subtransactions during a parallel operation"),
in the workers and in the leader alike; a plain read-only ``SPI_execute_with_args`` is allowed and
runs in the statement's snapshot, which the leader shares with its workers.

The price: an error raised inside PostgreSQL during such a call unwinds with longjmp past the
Python frames, where plpy would have turned it into a Python exception. So the queries sent this
way are written not to raise (callers check privileges with functions that answer true/false
first), interrupts are held off while they run (a cancel is served right after, by PostgreSQL),
and the calls keep the GIL (``PyDLL``), so that a process that does meet an unexpected error
(out of memory) keeps a working interpreter: a worker then ends with the error; the leader
reports it and its session's Python keeps the skipped frames' memory.
"""

from __future__ import annotations

import ctypes
import os
import sys
from decimal import Decimal

from sqlml.postgres_versions import check_major

_pg = ctypes.PyDLL(None)  # the backend's own symbols; calls keep the GIL (see above)

# --- the server's version, read before any other fact --------------------------------------------
# const char *GetConfigOption(const char *name, bool missing_ok, bool restrict_privileged): 15
# (utils/guc.h). missing_ok = true: it returns NULL instead of raising.
try:
    _get_config_option = _pg.GetConfigOption
except AttributeError:
    raise ImportError("sqlml.server.pg_internals runs inside a PostgreSQL backend only") from None
_get_config_option.restype = ctypes.c_char_p
_get_config_option.argtypes = [ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool]
SERVER_VERSION_NUM = int(_get_config_option(b"server_version_num", True, False))
check_major(SERVER_VERSION_NUM)

# --- functions and globals (checked against 15) --------------------------------------------------
# TimestampTz GetCurrentStatementStartTimestamp(void), CommandId GetCurrentCommandId(bool),
# bool IsInParallelMode(void): 15 (access/xact.h). Oid GetUserId(void): 15 (miscadmin.h).
_pg.GetCurrentStatementStartTimestamp.restype = ctypes.c_int64
_pg.GetCurrentCommandId.restype = ctypes.c_uint32
_pg.GetCurrentCommandId.argtypes = [ctypes.c_bool]
_pg.IsInParallelMode.restype = ctypes.c_bool
_pg.GetUserId.restype = ctypes.c_uint32
_statement_start, _command_id, _user_id = _pg.GetCurrentStatementStartTimestamp, _pg.GetCurrentCommandId, _pg.GetUserId
# volatile uint32 InterruptHoldoffCount, HOLD_INTERRUPTS() is its increment: 15 (miscadmin.h)
_holdoff = ctypes.c_uint32.in_dll(_pg, "InterruptHoldoffCount")
# int DateStyle, USE_ISO_DATES = 1: 15 (miscadmin.h)
_date_style = ctypes.c_int.in_dll(_pg, "DateStyle")
USE_ISO_DATES = 1
# char *DataDir, Oid MyDatabaseId: 15 (miscadmin.h)
_data_dir = ctypes.c_char_p.in_dll(_pg, "DataDir")
_database_id = ctypes.c_uint32.in_dll(_pg, "MyDatabaseId")


def statement_key() -> tuple:
    """Changes with every statement, with every command inside a function that writes, and with the
    current role: a SECURITY DEFINER function's call must not reuse what its caller resolved in the
    same statement, nor the caller what the function resolved (privileges differ)."""
    return _statement_start(), _command_id(False), _user_id()  # (called per row scored: no lookups)


def in_parallel_mode() -> bool:
    return _pg.IsInParallelMode()


def iso_dates() -> bool:
    return _date_style.value == USE_ISO_DATES


def data_directory() -> str:
    """The cluster's data directory (``$PGDATA``)."""
    return _data_dir.value.decode()


def database_oid() -> int:
    """The OID of the database this backend is connected to."""
    return _database_id.value


def compiled_cache_dir() -> str:
    """Where compiled models are kept: in the data directory, which only the server's OS user can write."""
    return os.path.join(data_directory(), "sqlml_compiled")


# --- error reports (checked against 15) ---------------------------------------------------------
# The head of struct ErrorData up to ``context``, and emit_log_hook_type emit_log_hook, called with
# the finished error just before it is logged and sent: 15 (utils/elog.h).
class ErrorData(ctypes.Structure):
    _fields_ = [("elevel", ctypes.c_int), ("output_to_server", ctypes.c_bool), ("output_to_client", ctypes.c_bool),
                ("hide_stmt", ctypes.c_bool), ("hide_ctx", ctypes.c_bool), ("filename", ctypes.c_void_p),
                ("lineno", ctypes.c_int), ("funcname", ctypes.c_void_p), ("domain", ctypes.c_void_p),
                ("context_domain", ctypes.c_void_p), ("sqlerrcode", ctypes.c_int), ("message", ctypes.c_void_p),
                ("detail", ctypes.c_void_p), ("detail_log", ctypes.c_void_p), ("hint", ctypes.c_void_p),
                ("context", ctypes.c_void_p)]


EmitLogHook = ctypes.CFUNCTYPE(None, ctypes.POINTER(ErrorData))
_emit_log_hook = ctypes.c_void_p.in_dll(_pg, "emit_log_hook")
_installed_hooks: list = []  # referenced for the backend's life: PostgreSQL keeps calling them


def setting(name: str) -> str | None:
    """A configuration setting's current value (a custom ``sqlml.*`` one included), None if unset."""
    value = _get_config_option(name.encode(), True, False)
    return None if value is None else value.decode()


def add_emit_log_hook(hook) -> None:
    """Call ``hook(error: ErrorData)`` for every error report of this backend, then the hook that was
    installed before it. ``hook`` may rewrite the report's strings in place (they are the error's)."""
    previous = EmitLogHook(_emit_log_hook.value) if _emit_log_hook.value else None

    def chained(edata):
        try:
            hook(edata.contents)
        finally:
            if previous is not None:
                previous(edata)

    _installed_hooks.append(EmitLogHook(chained))
    _emit_log_hook.value = ctypes.cast(_installed_hooks[-1], ctypes.c_void_p).value


# --- SPI in parallel mode ------------------------------------------------------------------------

# type OIDs: 15 (catalog/pg_type_d.h; fixed since the types were created). SPI_OK_SELECT = 5: 15 (executor/spi.h)
BOOLOID, BYTEAOID, INT8OID, INT2OID, INT4OID, TEXTOID, OIDOID = 16, 17, 20, 21, 23, 25, 26
FLOAT4OID, FLOAT8OID, NUMERICOID = 700, 701, 1700
SPI_OK_SELECT = 5


def _bind(name, restype, *argtypes):
    f = getattr(_pg, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


# Signatures: 15 (executor/spi.h: SPI_*, and uint64 SPI_processed, SPITupleTable *SPI_tuptable;
# fmgr.h: pg_detoast_datum; utils/builtins.h: cstring_to_text; utils/palloc.h: pfree).
_execute = _bind("SPI_execute_with_args", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                 ctypes.c_void_p, ctypes.c_char_p, ctypes.c_bool, ctypes.c_long)
_getvalue = _bind("SPI_getvalue", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
_getbinval = _bind("SPI_getbinval", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                   ctypes.POINTER(ctypes.c_bool))
_fname = _bind("SPI_fname", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
_gettypeid = _bind("SPI_gettypeid", ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int)
_freetuptable = _bind("SPI_freetuptable", None, ctypes.c_void_p)
_detoast = _bind("pg_detoast_datum", ctypes.c_void_p, ctypes.c_void_p)
_text = _bind("cstring_to_text", ctypes.c_void_p, ctypes.c_char_p)
_pfree = _bind("pfree", None, ctypes.c_void_p)
_processed = ctypes.c_uint64.in_dll(_pg, "SPI_processed")
_tuptable = ctypes.c_void_p.in_dll(_pg, "SPI_tuptable")


class ParallelSpi:
    """Read-only queries that cannot raise, with $1..$n parameters (str/None -> text, int -> int8,
    bool -> bool); rows as dicts of str, int, float, Decimal, bool or bytes (bytea)."""

    def execute(self, sql: str, params=()) -> list[dict]:
        if not in_parallel_mode():
            raise RuntimeError("ParallelSpi is for parallel mode only: elsewhere plpy raises errors safely")
        n = len(params)
        types, values = (ctypes.c_uint32 * max(n, 1))(), (ctypes.c_uint64 * max(n, 1))()
        nulls = ctypes.create_string_buffer(b" " * n, max(n, 1))
        for i, v in enumerate(params):
            if v is None:
                types[i], nulls[i] = TEXTOID, b"n"
            elif isinstance(v, bool):
                types[i], values[i] = BOOLOID, int(v)
            elif isinstance(v, int):
                types[i], values[i] = INT8OID, v & 0xFFFFFFFFFFFFFFFF
            else:
                types[i], values[i] = TEXTOID, _text(str(v).encode())
        _holdoff.value += 1  # HOLD_INTERRUPTS(): no cancel inside; an ERROR resets the count itself
        try:
            rc = _execute(sql.encode(), n, types, values, nulls, True, 0)
        finally:
            _holdoff.value -= 1
        if rc != SPI_OK_SELECT:
            raise RuntimeError(f"SPI_execute_with_args returned {rc}")
        table = _tuptable.value
        try:
            return _rows(table, _processed.value)
        finally:
            _freetuptable(table)

    def notice(self, message: str) -> None:  # workers have no client to tell
        pass


def _rows(table: int, count: int) -> list[dict]:
    # SPITupleTable starts with TupleDesc tupdesc, then HeapTuple *vals; TupleDescData starts with
    # int natts: 15 (executor/spi.h, access/tupdesc.h)
    desc = ctypes.c_void_p.from_address(table).value  # SPITupleTable.tupdesc
    tuples = ctypes.c_void_p.from_address(table + ctypes.sizeof(ctypes.c_void_p)).value  # .vals
    width = ctypes.c_int.from_address(desc).value  # TupleDesc.natts
    cols = []
    for j in range(1, width + 1):
        p = _fname(desc, j)
        cols.append((j, ctypes.string_at(p).decode(), _gettypeid(desc, j)))
        _pfree(p)
    out = []
    for r in range(count):
        tup = ctypes.c_void_p.from_address(tuples + r * ctypes.sizeof(ctypes.c_void_p)).value
        out.append({name: _value(tup, desc, j, typ) for j, name, typ in cols})
    return out


def _value(tup, desc, j, typ):
    if typ == BYTEAOID:
        null = ctypes.c_bool()
        datum = _getbinval(tup, desc, j, ctypes.byref(null))
        if null.value:
            return None
        # a detoasted varlena has a 4-byte header, the total size in its upper 30 bits on a
        # little-endian machine (VARSIZE_4B): 15 (postgres.h)
        assert sys.byteorder == "little"
        p = _detoast(datum)
        size = (ctypes.c_uint32.from_address(p).value >> 2) & 0x3FFFFFFF
        return ctypes.string_at(p + 4, size - 4)
    p = _getvalue(tup, desc, j)
    if not p:
        return None
    text = ctypes.string_at(p).decode()
    _pfree(p)
    if typ in (INT2OID, INT4OID, INT8OID, OIDOID):
        return int(text)
    if typ in (FLOAT4OID, FLOAT8OID):
        return float(text)
    if typ == NUMERICOID:
        return Decimal(text)
    if typ == BOOLOID:
        return text == "t"
    return text

