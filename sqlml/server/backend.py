"""The few facts of the running backend that scoring reads through ctypes, and SPI for parallel query.

``statement_key()`` changes with every SQL statement (and every command of a function that writes);
``in_parallel_mode()`` is true in parallel workers and in their leader while a parallel plan runs;
``iso_dates()`` says whether DateStyle prints dates as ISO 8601.

``compiled_cache_dir()`` is where compiled models are kept: in the data directory, which only the
server's OS user can write.

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

_pg = ctypes.PyDLL(None)  # calls keep the GIL (see above)
_pg.GetCurrentStatementStartTimestamp.restype = ctypes.c_int64
_pg.GetCurrentCommandId.restype = ctypes.c_uint32
_pg.GetCurrentCommandId.argtypes = [ctypes.c_bool]
_pg.IsInParallelMode.restype = ctypes.c_bool
_pg.GetUserId.restype = ctypes.c_uint32
_worker_number = ctypes.c_int.in_dll(_pg, "ParallelWorkerNumber")
_holdoff = ctypes.c_uint32.in_dll(_pg, "InterruptHoldoffCount")
_date_style = ctypes.c_int.in_dll(_pg, "DateStyle")
USE_ISO_DATES = 1  # miscadmin.h


def statement_key() -> tuple:
    """Changes with every statement, with every command inside a function that writes, and with the
    current role: a SECURITY DEFINER function's call must not reuse what its caller resolved in the
    same statement, nor the caller what the function resolved (privileges differ)."""
    return _pg.GetCurrentStatementStartTimestamp(), _pg.GetCurrentCommandId(False), _pg.GetUserId()


def in_parallel_worker() -> bool:
    return _worker_number.value >= 0


def in_parallel_mode() -> bool:
    return _pg.IsInParallelMode()


def iso_dates() -> bool:
    return _date_style.value == USE_ISO_DATES


def compiled_cache_dir() -> str:
    return os.path.join(ctypes.c_char_p.in_dll(_pg, "DataDir").value.decode(), "sqlml_compiled")


# --- SPI in parallel mode ------------------------------------------------------------------------

BOOLOID, BYTEAOID, INT8OID, INT2OID, INT4OID, TEXTOID, OIDOID = 16, 17, 20, 21, 23, 25, 26
FLOAT4OID, FLOAT8OID, NUMERICOID = 700, 701, 1700
SPI_OK_SELECT = 5


def _bind(name, restype, *argtypes):
    f = getattr(_pg, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


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
        assert sys.byteorder == "little"  # the 4-byte varlena header layout below
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

