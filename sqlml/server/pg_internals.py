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

``DatumSpi`` is SPI with Datums for batch scoring, outside parallel mode: its errors are caught where
PostgreSQL raises them, by a small compiled function that sets a PG_TRY of its own, inside a
subtransaction, as plpy catches them (see its section below), so they may raise freely. Under the
same guard, ``RowCursor`` runs a cursor into a compiled DestReceiver that writes its rows into a
matrix, and ``insert_tuples`` inserts heap tuples formed by sqlml a page at a time.
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
        data = _varlena(tup, desc, j)
        return None if data is None else data[4:]
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



# --- SPI with Datums, its errors caught (checked against 15) --------------------------------------
# PostgreSQL raises an error with siglongjmp to the innermost PG_TRY (``PG_exception_stack``);
# nothing in Python can set one, so a small compiled function does (GUARD_IR): it saves
# PG_exception_stack and error_context_stack, calls sigsetjmp, points PG_exception_stack at its own
# buffer and calls the function it was given; an error lands back in it, it restores both and
# returns 1. Around it, ``_guarded`` does what PL/Python does around every plpy.execute
# (plpy_spi.c: PLy_spi_subtransaction_begin / _commit / _abort): a subtransaction, and on an error
# the memory context restored, the error copied and flushed, the subtransaction rolled back, the
# error raised in Python as plpy's own SPIError for its SQLSTATE. So a cancel, a timeout, a full
# disk or a bad value ends the statement with its own error, exactly as through plpy, and the
# session's Python never loses frames. Signatures: 15 (access/xact.h, utils/elog.h, utils/palloc.h,
# utils/resowner.h, executor/spi.h; sigsetjmp is glibc's __sigsetjmp).
GUARD_IR = r"""
declare i32 @__sigsetjmp(ptr, i32)

; i64 guard(fn, args: 8 x i64, &PG_exception_stack, &error_context_stack, out): *out = fn(args...); 0, or
; 1 when fn raised (both globals restored either way)
define i64 @guard(ptr %fn, ptr %args, ptr %exc, ptr %ctx, ptr %out) #0 {
entry:
  %buf = alloca [64 x i64], align 16              ; sigjmp_buf: 200 bytes on x86-64 glibc
  %saved = alloca [2 x ptr], align 8                ; read back after a longjmp: volatile
  %save_exc = load ptr, ptr %exc
  %save_ctx = load ptr, ptr %ctx
  %saved1 = getelementptr ptr, ptr %saved, i64 1
  store volatile ptr %save_exc, ptr %saved
  store volatile ptr %save_ctx, ptr %saved1
  %r = call i32 @__sigsetjmp(ptr %buf, i32 0) #1
  %first = icmp eq i32 %r, 0
  br i1 %first, label %try, label %catch
try:
  store volatile ptr %buf, ptr %exc
  ARGS
  %v = call i64 %fn(CALL)
  store i64 %v, ptr %out
  store volatile ptr %save_exc, ptr %exc
  store volatile ptr %save_ctx, ptr %ctx
  ret i64 0
catch:
  %e = load volatile ptr, ptr %saved
  %c = load volatile ptr, ptr %saved1
  store volatile ptr %e, ptr %exc
  store volatile ptr %c, ptr %ctx
  ret i64 1
}

attributes #0 = { nounwind }
attributes #1 = { returns_twice }
"""
GUARD_ARGS = 8
GUARD_IR = GUARD_IR.replace("ARGS", "\n  ".join(
    f"%p{i} = getelementptr i64, ptr %args, i64 {i}\n  %a{i} = load i64, ptr %p{i}" for i in range(GUARD_ARGS)))
GUARD_IR = GUARD_IR.replace("CALL", ", ".join(f"i64 %a{i}" for i in range(GUARD_ARGS)))
_GUARD_ARGTYPES = (ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
# the guard keeps the GIL, as a call into PostgreSQL must when PostgreSQL may call PL/Python (which
# assumes its thread holds it); _FREE lets other threads run Python meanwhile, for statements that cannot
_GUARD, _GUARD_FREE = ctypes.PYFUNCTYPE(*_GUARD_ARGTYPES), ctypes.CFUNCTYPE(*_GUARD_ARGTYPES)

_exception_stack = ctypes.c_void_p.in_dll(_pg, "PG_exception_stack")
_context_stack = ctypes.c_void_p.in_dll(_pg, "error_context_stack")
_memory_context = ctypes.c_void_p.in_dll(_pg, "CurrentMemoryContext")
_resource_owner = ctypes.c_void_p.in_dll(_pg, "CurrentResourceOwner")
_begin_sub = _bind("BeginInternalSubTransaction", None, ctypes.c_char_p)
_rollback_sub = _bind("RollbackAndReleaseCurrentSubTransaction", None)
_copy_error = _bind("CopyErrorData", ctypes.POINTER(ErrorData))
_flush_error = _bind("FlushErrorState", None)
_free_error = _bind("FreeErrorData", None, ctypes.POINTER(ErrorData))
_address = {name: ctypes.cast(getattr(_pg, name), ctypes.c_void_p).value
            for name in ("SPI_execute_with_args", "SPI_cursor_open_with_args", "PortalRunFetch",
                         "ReleaseCurrentSubTransaction")}
_cursor_close = _bind("SPI_cursor_close", None, ctypes.c_void_p)
_cursor_find = _bind("SPI_cursor_find", ctypes.c_void_p, ctypes.c_char_p)
# void PinPortal(Portal), UnpinPortal(Portal): 15 (utils/portal.h); int GetDatabaseEncoding(void),
# PG_UTF8 = 6: 15 (mb/pg_wchar.h)
_pin_portal = _bind("PinPortal", None, ctypes.c_void_p)
_unpin_portal = _bind("UnpinPortal", None, ctypes.c_void_p)
_database_encoding = _bind("GetDatabaseEncoding", ctypes.c_int)
PG_UTF8 = 6
_loaded_guard: list = []


def _guard():
    """The compiled guard: (what keeps it mapped, the call keeping the GIL, the call letting go of it)
    from the compiled cache if it was built on this machine before, else built (LLVM) and kept there;
    None where it cannot be (no LLVM: callers go through plpy)."""
    if not _loaded_guard:
        from sqlml.onnx import compiled

        _loaded_guard.append(compiled.cached_code("pg-guard", GUARD_IR, compiled_cache_dir(), _link_guard))
    return _loaded_guard[0]


def _link_guard(obj: bytes) -> tuple:
    from sqlml.onnx import compiled

    code, address, _ = compiled.link(obj)
    return code, _GUARD(address("guard")), _GUARD_FREE(address("guard"))


def _spi_error(error: ErrorData):
    """plpy's SPIError (the subclass for its SQLSTATE where plpy has one) for a copied ErrorData, as
    plpy.execute raises it: message, and spidata (code, detail, hint, query, position)."""
    import plpy

    text = {name: ctypes.string_at(getattr(error, name)).decode(errors="replace") if getattr(error, name) else None
            for name in ("message", "detail", "hint")}
    code = error.sqlerrcode
    sqlstate = "".join(chr(((code >> (6 * i)) & 0x3F) + ord("0")) for i in range(5))
    cls = next((c for c in vars(plpy.spiexceptions).values()
                if isinstance(c, type) and getattr(c, "sqlstate", None) == sqlstate), plpy.SPIError)
    exc = cls(text["message"])
    exc.spidata = (code, text["detail"], text["hint"], None, 0)
    return exc


def _guarded(function: int, *args, release_gil: bool = False) -> int:
    """``function(*args)`` (the address of a function of PostgreSQL's, or of ``INSERT_IR``'s; ints and
    addresses) inside a subtransaction, its error raised as plpy's SPIError; the function's result
    (an int64: mask narrower types).
    ``release_gil``: other threads run Python meanwhile (see DatumSpi.execute)."""
    _, kept, free = _guard()
    guard = free if release_gil else kept
    values = (ctypes.c_int64 * GUARD_ARGS)(*[int(a) for a in args])
    out = ctypes.c_int64()
    context, owner = _memory_context.value, _resource_owner.value
    _begin_sub(None)
    _memory_context.value = context
    stacks = ctypes.addressof(_exception_stack), ctypes.addressof(_context_stack)
    failed = guard(function, values, *stacks, ctypes.byref(out))
    # the subtransaction's release inside a guard too, as plpy commits it inside its PG_TRY
    released = ctypes.c_int64()
    if not failed and not kept(_address["ReleaseCurrentSubTransaction"], values, *stacks, ctypes.byref(released)):
        _memory_context.value, _resource_owner.value = context, owner
        return out.value
    _memory_context.value = context
    error = _copy_error()
    _flush_error()
    _rollback_sub()
    _memory_context.value, _resource_owner.value = context, owner
    try:
        exc = _spi_error(error.contents)
    finally:
        _free_error(error)
    raise exc


class DatumSpi:
    """SPI with parameters passed as Datums: numbers, or varlenas built in numpy
    (``sqlml.scoring.arrays``), which PostgreSQL takes as they are. For batch scoring, where
    plpy's per-value conversions cost more than PostgreSQL's work. Outside parallel mode only
    (subtransactions). ``available()`` is False where the guard cannot be built: go through plpy."""

    @staticmethod
    def available() -> bool:
        """Outside parallel mode, in a UTF-8 database (texts are handed over as Python's UTF-8: plpy
        converts them to the database's encoding), where the guard can be built."""
        return not in_parallel_mode() and _database_encoding() == PG_UTF8 and _guard() is not None

    @staticmethod
    def _params(params):
        """(argtypes, values, nulls, kept alive) of [(type OID, int Datum or numpy varlena)]."""
        n = len(params)
        types, values = (ctypes.c_uint32 * max(n, 1))(), (ctypes.c_uint64 * max(n, 1))()
        for i, (oid, value) in enumerate(params):
            types[i] = oid
            values[i] = value.ctypes.data if hasattr(value, "ctypes") else int(value) & 0xFFFFFFFFFFFFFFFF
        nulls = ctypes.create_string_buffer(b" " * n, max(n, 1))
        return types, values, nulls, [p for _, p in params]

    def execute(self, sql: str, params=(), read_only: bool = False, release_gil: bool = False) -> int:
        """Run ``sql``; the rows it processed. ``release_gil``: let the process's other threads run
        Python while PostgreSQL works, only for a statement that cannot reach PL/Python (built-in
        code only: see ``sqlml.server.batch._plain``); they must not call into PostgreSQL."""
        types, values, nulls, kept = self._params(params)  # kept: the buffers, alive through the call
        text = ctypes.c_char_p(sql.encode())
        rc = ctypes.c_int32(_guarded(_address["SPI_execute_with_args"], ctypes.cast(text, ctypes.c_void_p).value,
                                     len(params), ctypes.addressof(types), ctypes.addressof(values),
                                     ctypes.cast(nulls, ctypes.c_void_p).value, int(read_only), 0,
                                     release_gil=release_gil)).value
        if rc < 0:
            raise RuntimeError(f"SPI_execute_with_args returned {rc} for {len(kept)} parameters")
        count = _processed.value
        if _tuptable.value:
            _freetuptable(_tuptable.value)
        return count


def _varlena(tup, desc, j) -> bytes | None:
    null = ctypes.c_bool()
    datum = _getbinval(tup, desc, j, ctypes.byref(null))
    if null.value:
        return None
    # a detoasted varlena has a 4-byte header, the total size in its upper 30 bits on a
    # little-endian machine (VARSIZE_4B): 15 (postgres.h)
    assert sys.byteorder == "little"
    p = _detoast(datum)
    data = ctypes.string_at(p, (ctypes.c_uint32.from_address(p).value >> 2) & 0x3FFFFFFF)
    if p != datum:
        _pfree(p)
    return data


# --- heap tuples into a table (checked against 15) -----------------------------------------------
# What COPY FROM does once it has formed a chunk's tuples, with tuples sqlml formed already
# (``sqlml.scoring.heap_tuples``): the table opened, each tuple stored in a heap-tuple slot, and
# heap_multi_insert a page at a time (one WAL record per page), in a memory context of its own
# (the slots' copies of the tuples, heap_multi_insert's arrays) deleted at the end, a child of the
# subtransaction's (``_guarded``'s), which an error's rollback deletes with it. Nothing is
# checked and nothing runs: for a plain heap table with no constraint, index, trigger, rule or
# policy, whose columns are the four the tuples are laid out for (the caller's ``_plain``), and no
# privilege either (the caller checks INSERT). Signatures: 15 (access/table.h: table_open,
# table_close; utils/typcache.h: lookup_rowtype_tupdesc_copy; executor/tuptable.h:
# MakeSingleTupleTableSlot, ExecStoreHeapTuple, TTSOpsHeapTuple; access/heapam.h:
# heap_multi_insert, GetBulkInsertState, FreeBulkInsertState; access/xact.h: GetCurrentCommandId;
# utils/memutils.h: AllocSetContextCreateInternal, MemoryContextDelete, CurTransactionContext;
# utils/palloc.h: CurrentMemoryContext; access/htup.h: HeapTupleData, 24 bytes: t_len at 0, t_self at 4 (6 bytes),
# t_tableOid at 12, t_data at 16; storage/lockdefs.h: NoLock 0, RowExclusiveLock 3).
INSERT_IR = r"""
declare ptr @table_open(i32, i32)
declare void @table_close(ptr, i32)
declare ptr @lookup_rowtype_tupdesc_copy(i32, i32)
declare ptr @MakeSingleTupleTableSlot(ptr, ptr)
declare ptr @ExecStoreHeapTuple(ptr, ptr, i1 zeroext)
declare void @heap_multi_insert(ptr, ptr, i32, i32, i32, ptr)
declare ptr @GetBulkInsertState()
declare void @FreeBulkInsertState(ptr)
declare i32 @GetCurrentCommandId(i1 zeroext)
declare ptr @AllocSetContextCreateInternal(ptr, ptr, i64, i64, i64)
declare void @MemoryContextDelete(ptr)
declare ptr @palloc(i64)

@CurrentMemoryContext = external global ptr
@CurTransactionContext = external global ptr
@TTSOpsHeapTuple = external global i8
@name = private unnamed_addr constant [20 x i8] c"sqlml scored tuples\00"

; i64 insert_tuples(relation OID, its row type's OID, n, tuples' data, places (n x 2: offset in data,
;                   length), 3 unused): the n tuples into the relation; returns n
define i64 @insert_tuples(i64 %relid, i64 %rowtype, i64 %n, i64 %data, i64 %places, i64 %u6, i64 %u7, i64 %u8) {
entry:
  %caller = load ptr, ptr @CurrentMemoryContext
  %subtransaction = load ptr, ptr @CurTransactionContext
  %mcx = call ptr @AllocSetContextCreateInternal(ptr %subtransaction, ptr @name, i64 0, i64 8192, i64 8388608)
  store ptr %mcx, ptr @CurrentMemoryContext
  %oid = trunc i64 %relid to i32
  %rel = call ptr @table_open(i32 %oid, i32 3)
  %typid = trunc i64 %rowtype to i32
  %desc = call ptr @lookup_rowtype_tupdesc_copy(i32 %typid, i32 -1)
  %bistate = call ptr @GetBulkInsertState()
  %cid = call i32 @GetCurrentCommandId(i1 true)
  %slots = call ptr @palloc(i64 8000)
  %headers = call ptr @palloc(i64 24000)
  %base = inttoptr i64 %data to ptr
  %place = inttoptr i64 %places to ptr
  br label %make
make:
  %s = phi i64 [0, %entry], [%s1, %make_one]
  %smore = icmp slt i64 %s, 1000
  br i1 %smore, label %make_one, label %batches
make_one:
  %slot = call ptr @MakeSingleTupleTableSlot(ptr %desc, ptr @TTSOpsHeapTuple)
  %slotp = getelementptr ptr, ptr %slots, i64 %s
  store ptr %slot, ptr %slotp
  %s1 = add i64 %s, 1
  br label %make
batches:
  %start = phi i64 [0, %make], [%next, %insert]
  %bmore = icmp slt i64 %start, %n
  br i1 %bmore, label %batch, label %done
batch:
  %left = sub i64 %n, %start
  %few = icmp slt i64 %left, 1000
  %m = select i1 %few, i64 %left, i64 1000
  br label %store
store:
  %j = phi i64 [0, %batch], [%j1, %store_one]
  %jmore = icmp slt i64 %j, %m
  br i1 %jmore, label %store_one, label %insert
store_one:
  %row = add i64 %start, %j
  %pi = shl i64 %row, 1
  %offp = getelementptr i64, ptr %place, i64 %pi
  %off = load i64, ptr %offp
  %lenp = getelementptr i64, ptr %offp, i64 1
  %len = load i64, ptr %lenp
  %h = getelementptr [24 x i8], ptr %headers, i64 %j
  %len32 = trunc i64 %len to i32
  store i32 %len32, ptr %h
  %self = getelementptr i8, ptr %h, i64 4
  store i32 -1, ptr %self, align 2
  %posid = getelementptr i8, ptr %h, i64 8
  store i16 0, ptr %posid
  %table = getelementptr i8, ptr %h, i64 12
  store i32 %oid, ptr %table
  %tdata = getelementptr i8, ptr %h, i64 16
  %tuple = getelementptr i8, ptr %base, i64 %off
  store ptr %tuple, ptr %tdata
  %jslotp = getelementptr ptr, ptr %slots, i64 %j
  %jslot = load ptr, ptr %jslotp
  %stored = call ptr @ExecStoreHeapTuple(ptr %h, ptr %jslot, i1 false)
  %j1 = add i64 %j, 1
  br label %store
insert:
  %m32 = trunc i64 %m to i32
  call void @heap_multi_insert(ptr %rel, ptr %slots, i32 %m32, i32 %cid, i32 0, ptr %bistate)
  %next = add i64 %start, %m
  br label %batches
done:
  call void @FreeBulkInsertState(ptr %bistate)
  call void @table_close(ptr %rel, i32 0)
  store ptr %caller, ptr @CurrentMemoryContext
  call void @MemoryContextDelete(ptr %mcx)
  ret i64 %n
}
"""
_loaded_insert: list = []


def _insert_code():
    """(what keeps it mapped, insert_tuples' address), or None where it cannot be built (no LLVM)."""
    if not _loaded_insert:
        from sqlml.onnx import compiled

        def link(obj: bytes) -> tuple:
            code, address, _ = compiled.link(obj)
            if not address("insert_tuples"):
                raise RuntimeError("compiled insert code without insert_tuples")
            return code, address("insert_tuples")

        _loaded_insert.append(compiled.cached_code("pg-insert", INSERT_IR, compiled_cache_dir(), link))
    return _loaded_insert[0]


def tuples_available() -> bool:
    """Whether ``insert_tuples`` can run here: DatumSpi's conditions (a UTF-8 database: the tuples'
    texts are UTF-8 as they are) and the insert code built."""
    return DatumSpi.available() and _insert_code() is not None


def insert_tuples(relation_oid: int, rowtype_oid: int, tuples, release_gil: bool = False) -> int:
    """Insert ``tuples`` (``sqlml.scoring.heap_tuples.Tuples``) into the table ``relation_oid`` (its
    row type ``rowtype_oid``), inside a subtransaction, an error raised as plpy's; the rows inserted.
    Nothing is checked: a plain table of the tuples' four columns only, which the caller may insert
    into. ``release_gil``: as ``DatumSpi.execute``'s (a table that runs no PL/Python on insert)."""
    _, insert = _insert_code()
    return _guarded(insert, relation_oid, rowtype_oid, len(tuples), tuples.data.ctypes.data,
                    tuples.places.ctypes.data, release_gil=release_gil)


# --- rows read into a matrix by a compiled DestReceiver (checked against 15) ------------------------
# A cursor's portal run with a DestReceiver of our own (PortalRunFetch, what SPI_cursor_fetch does
# with SPI's): a compiled one (RECEIVER_IR) takes each row's slot as the executor produced it and
# writes its columns straight into a float32 matrix: numbers as they are (float8 Datums), texts
# looked up in their column's hash table (``sqlml.scoring.lookup_tables``), NULL as NaN or the
# table's NULL value. No tuple is copied, no value passes through an aggregate or Python: a chunk's
# read costs about what the scan costs. The query is parsed, planned and given its snapshot once,
# when the cursor opens (the caller checks it first): a cast or an operator created meanwhile by
# another role changes nothing of what it runs. Layouts: 15 (tcop/dest.h DestReceiver:
# receiveSlot 0, rStartup 8, rShutdown 16, rDestroy 24, mydest 32, DestNone = 0; nodes/parsenodes.h
# FETCH_FORWARD = 0; tcop/pquery.h PortalRunFetch; executor/tuptable.h TupleTableSlot: tts_nvalid
# int16 at 6, tts_values 24, tts_isnull 32, slot_getsomeattrs_int; postgres.h varlena headers,
# little-endian: a first byte with bit 0 set is a 1-byte header (size << 1 | 1; exactly 0x01: a
# TOAST pointer), else a 4-byte header (size << 2; low bits 2: compressed); fmgr.h
# pg_detoast_datum_packed; utils/portal.h PinPortal, UnpinPortal, PortalData starting with its name).
#
# The receiver's state, after the DestReceiver's fields (at 40), is int64s (ROW_STATE): attributes
# to deform, capacity (rows), rows, overflowed, width, matrix (float32, row-major), ids (int64),
# the id's attribute, columns (per matrix column 8 int64s: attribute, kind, then for a text its
# table's slots, mask, keys, default bits and NULL bits; for a number its NULL bits at 6), NULL ids.
RECEIVER_IR = r"""
declare void @slot_getsomeattrs_int(ptr, i32)
declare ptr @pg_detoast_datum_packed(ptr)
declare void @pfree(ptr)
declare i32 @memcmp(ptr, ptr, i64)

define void @startup(ptr %self, i32 %operation, ptr %desc) {
  ret void
}

define void @shutdown(ptr %self) {
  ret void
}

; the float32 a text Datum maps to in the column's table (d: its 8 int64s)
define float @lookup(i64 %datum, ptr %d) {
entry:
  %p = inttoptr i64 %datum to ptr
  %b0 = load i8, ptr %p
  %b0i = zext i8 %b0 to i64
  %bit0 = and i64 %b0i, 1
  %is1b = icmp eq i64 %bit0, 1
  br i1 %is1b, label %short, label %long
short:
  %external = icmp eq i64 %b0i, 1
  br i1 %external, label %detoast, label %short_ok
short_ok:
  %ssize = lshr i64 %b0i, 1
  %slen = sub i64 %ssize, 1
  %sdata = getelementptr i8, ptr %p, i64 1
  br label %hash
long:
  %hdr = load i32, ptr %p
  %hdr64 = zext i32 %hdr to i64
  %tag = and i64 %hdr64, 3
  %plain = icmp eq i64 %tag, 0
  br i1 %plain, label %long_ok, label %detoast
long_ok:
  %lsize = lshr i64 %hdr64, 2
  %llen = sub i64 %lsize, 4
  %ldata = getelementptr i8, ptr %p, i64 4
  br label %hash
detoast:
  %q = call ptr @pg_detoast_datum_packed(ptr %p)
  %qi = ptrtoint ptr %q to i64
  %found_q = call float @lookup(i64 %qi, ptr %d)
  call void @pfree(ptr %q)
  ret float %found_q
hash:
  %data = phi ptr [%sdata, %short_ok], [%ldata, %long_ok]
  %len = phi i64 [%slen, %short_ok], [%llen, %long_ok]
  br label %hloop
hloop:
  %i = phi i64 [0, %hash], [%i1, %hbody]
  %h = phi i64 [-3750763034362895579, %hash], [%h1, %hbody]
  %hmore = icmp slt i64 %i, %len
  br i1 %hmore, label %hbody, label %probe0
hbody:
  %bp = getelementptr i8, ptr %data, i64 %i
  %byte = load i8, ptr %bp
  %bz = zext i8 %byte to i64
  %hx = xor i64 %h, %bz
  %h1 = mul i64 %hx, 1099511628211
  %i1 = add i64 %i, 1
  br label %hloop
probe0:
  %table_p = getelementptr i64, ptr %d, i64 2
  %table = load ptr, ptr %table_p
  %mask_p = getelementptr i64, ptr %d, i64 3
  %mask = load i64, ptr %mask_p
  %keys_p = getelementptr i64, ptr %d, i64 4
  %keys = load ptr, ptr %keys_p
  %start = and i64 %h, %mask
  br label %probe
probe:
  %slot = phi i64 [%start, %probe0], [%nextslot, %miss]
  %e0 = mul i64 %slot, 4
  %e = getelementptr i64, ptr %table, i64 %e0
  %elen_p = getelementptr i64, ptr %e, i64 2
  %elen = load i64, ptr %elen_p
  %empty = icmp slt i64 %elen, 0
  br i1 %empty, label %unseen, label %check
check:
  %eh = load i64, ptr %e
  %sameh = icmp eq i64 %eh, %h
  %samel = icmp eq i64 %elen, %len
  %same = and i1 %sameh, %samel
  br i1 %same, label %compare, label %miss
compare:
  %eoff_p = getelementptr i64, ptr %e, i64 1
  %eoff = load i64, ptr %eoff_p
  %kp = getelementptr i8, ptr %keys, i64 %eoff
  %c = call i32 @memcmp(ptr %kp, ptr %data, i64 %len)
  %eq = icmp eq i32 %c, 0
  br i1 %eq, label %found, label %miss
found:
  %cb_p = getelementptr i64, ptr %e, i64 3
  %cb = load i64, ptr %cb_p
  %cb32 = trunc i64 %cb to i32
  %code = bitcast i32 %cb32 to float
  ret float %code
miss:
  %s1 = add i64 %slot, 1
  %nextslot = and i64 %s1, %mask
  br label %probe
unseen:
  %db_p = getelementptr i64, ptr %d, i64 5
  %db = load i64, ptr %db_p
  %db32 = trunc i64 %db to i32
  %dflt = bitcast i32 %db32 to float
  ret float %dflt
}

; DestReceiver.receiveSlot: one row into the matrix; false (stop) once the matrix is full
define zeroext i1 @receive(ptr %slot, ptr %self) {
entry:
  %state_p = getelementptr i8, ptr %self, i64 40
  %state = load ptr, ptr %state_p
  %rows_p = getelementptr i64, ptr %state, i64 2
  %rows = load i64, ptr %rows_p
  %cap_p = getelementptr i64, ptr %state, i64 1
  %cap = load i64, ptr %cap_p
  %full = icmp sge i64 %rows, %cap
  br i1 %full, label %overflow, label %deform
overflow:
  %of_p = getelementptr i64, ptr %state, i64 3
  store i64 1, ptr %of_p
  ret i1 false
deform:
  %natts = load i64, ptr %state
  %nvalid_p = getelementptr i8, ptr %slot, i64 6
  %nvalid16 = load i16, ptr %nvalid_p
  %nvalid = sext i16 %nvalid16 to i64
  %missing = icmp slt i64 %nvalid, %natts
  br i1 %missing, label %getattrs, label %ready
getattrs:
  %natts32 = trunc i64 %natts to i32
  call void @slot_getsomeattrs_int(ptr %slot, i32 %natts32)
  br label %ready
ready:
  %values_p = getelementptr i8, ptr %slot, i64 24
  %values = load ptr, ptr %values_p
  %isnull_p = getelementptr i8, ptr %slot, i64 32
  %isnull = load ptr, ptr %isnull_p
  %ida_p = getelementptr i64, ptr %state, i64 7
  %ida = load i64, ptr %ida_p
  %ids_p = getelementptr i64, ptr %state, i64 6
  %ids = load ptr, ptr %ids_p
  %idv_p = getelementptr i64, ptr %values, i64 %ida
  %idv = load i64, ptr %idv_p
  %id_out = getelementptr i64, ptr %ids, i64 %rows
  store i64 %idv, ptr %id_out
  %idnull_p = getelementptr i8, ptr %isnull, i64 %ida
  %idnull = load i8, ptr %idnull_p
  %id_is_null = icmp ne i8 %idnull, 0
  br i1 %id_is_null, label %null_id, label %columns
null_id:
  %nid_p = getelementptr i64, ptr %state, i64 9
  %nid = load i64, ptr %nid_p
  %nid1 = add i64 %nid, 1
  store i64 %nid1, ptr %nid_p
  br label %columns
columns:
  %width_p = getelementptr i64, ptr %state, i64 4
  %width = load i64, ptr %width_p
  %matrix_p = getelementptr i64, ptr %state, i64 5
  %matrix = load ptr, ptr %matrix_p
  %cols_p = getelementptr i64, ptr %state, i64 8
  %cols = load ptr, ptr %cols_p
  %rowbase = mul i64 %rows, %width
  br label %loop
loop:
  %j = phi i64 [0, %columns], [%j1, %next]
  %more = icmp slt i64 %j, %width
  br i1 %more, label %body, label %done
body:
  %j8 = mul i64 %j, 8
  %d = getelementptr i64, ptr %cols, i64 %j8
  %attr = load i64, ptr %d
  %kind_p = getelementptr i64, ptr %d, i64 1
  %kind = load i64, ptr %kind_p
  %at = add i64 %rowbase, %j
  %out = getelementptr float, ptr %matrix, i64 %at
  %vnull_p = getelementptr i8, ptr %isnull, i64 %attr
  %vnull = load i8, ptr %vnull_p
  %v_p = getelementptr i64, ptr %values, i64 %attr
  %v = load i64, ptr %v_p
  %is_null = icmp ne i8 %vnull, 0
  br i1 %is_null, label %null, label %value
null:
  %nb_p = getelementptr i64, ptr %d, i64 6
  %nb = load i64, ptr %nb_p
  %nb32 = trunc i64 %nb to i32
  %nf = bitcast i32 %nb32 to float
  store float %nf, ptr %out
  br label %next
value:
  %is_text = icmp eq i64 %kind, 1
  br i1 %is_text, label %text, label %number
number:
  %dbl = bitcast i64 %v to double
  %flt = fptrunc double %dbl to float
  store float %flt, ptr %out
  br label %next
text:
  %code = call float @lookup(i64 %v, ptr %d)
  store float %code, ptr %out
  br label %next
next:
  %j1 = add i64 %j, 1
  br label %loop
done:
  %rows1 = add i64 %rows, 1
  store i64 %rows1, ptr %rows_p
  ret i1 true
}
"""
NUMBER_KIND, TEXT_KIND = 0, 1  # a column read as float8, or as text looked up
ROW_STATE = 10
_loaded_receiver: list = []


def _receiver_code():
    """(what keeps it mapped, {receive, startup, shutdown: address}), or None (no LLVM)."""
    if not _loaded_receiver:
        from sqlml.onnx import compiled

        def link(obj: bytes) -> tuple:
            code, address, _ = compiled.link(obj)
            found = {name: address(name) for name in ("receive", "startup", "shutdown")}
            if not all(found.values()):
                raise RuntimeError("compiled receiver without its functions")
            return code, found

        _loaded_receiver.append(compiled.cached_code("pg-receiver", RECEIVER_IR, compiled_cache_dir(), link))
    return _loaded_receiver[0]


def rows_available() -> bool:
    """Whether ``RowCursor`` can run here: DatumSpi's conditions, a little-endian machine (the varlena
    headers above), the receiver built."""
    return DatumSpi.available() and sys.byteorder == "little" and _receiver_code() is not None


FETCH_FORWARD = 0
CURSOR_OPT_NO_SCROLL = 0x0004


class RowCursor:
    """A query's rows read into float32 matrices by the compiled receiver, ``fetch(count)`` rows at a
    time, through one portal opened now: parsed, planned and given a snapshot once (as plpy.cursor's
    in a volatile function: what the statement wrote so far is seen). Attribute 0 of the query is
    the id (int8); ``columns``: per matrix column (attribute, NUMBER_KIND, NULL value) of a float8
    attribute, or (attribute, TEXT_KIND, lookup_tables.LookupTable) of a text one.

    As plpy's cursors: the portal is pinned (no CLOSE from SQL frees it under us) and found again by
    name before each fetch (a rolled-back savepoint or the transaction's end drops it), and must be
    the same portal (a user may DECLARE a cursor of that name once ours is gone): a cursor outliving
    its portal reads nothing. A pinned portal still open at COMMIT fails it, as plpy's do."""

    def __init__(self, sql: str, attributes: int, columns: list):
        import numpy as np

        _, functions = _receiver_code()
        self._attributes, self._width = attributes, len(columns)
        self._described = np.zeros((max(self._width, 1), 8), dtype=np.int64)
        self._tables = []  # the lookup tables' arrays, alive as long as the cursor
        for j, (attribute, kind, how) in enumerate(columns):
            if kind == TEXT_KIND:
                self._tables.append(how)
                self._described[j] = [attribute, kind, how.slots.ctypes.data, how.mask, how.keys.ctypes.data,
                                      how.default, how.null, 0]
            else:
                self._described[j] = [attribute, kind, 0, 0, 0, 0,
                                      int(np.array([how], dtype=np.float32).view(np.int32)[0]), 0]
        self._state = (ctypes.c_int64 * ROW_STATE)()
        self._receiver = (ctypes.c_int64 * 6)(functions["receive"], functions["startup"], functions["shutdown"],
                                              functions["shutdown"], 0, ctypes.addressof(self._state))  # DestNone
        text = ctypes.c_char_p(sql.encode())
        # read forward only (CURSOR_OPT_NO_SCROLL, nodes/parsenodes.h): nothing kept for a scan back
        portal = _guarded(_address["SPI_cursor_open_with_args"], 0, ctypes.cast(text, ctypes.c_void_p).value, 0, 0,
                          0, 0, 0, CURSOR_OPT_NO_SCROLL)
        # PortalData starts with its name: 15 (utils/portal.h)
        self._name, self._address = ctypes.string_at(ctypes.c_void_p.from_address(portal).value), portal
        _pin_portal(portal)

    def _found(self) -> int | None:
        portal = _cursor_find(self._name) if self._name is not None else None
        return portal if portal == self._address else None

    def _portal(self) -> int:
        portal = self._found()
        if not portal:
            from sqlml.errors import SqlmlError

            raise SqlmlError("the batch's cursor is gone: its transaction or savepoint ended while it was read",
                             sqlstate="24000", hint="read sqlml.predict_batch to its end within one savepoint")
        return portal

    def fetch(self, count: int) -> tuple:
        """The next ``count`` rows at most: (rows, matrix (rows, width) float32, int64 ids, rows with
        a NULL id); fewer than ``count`` at the end."""
        import numpy as np

        matrix = np.empty((count, self._width), dtype=np.float32)
        ids = np.empty(count, dtype=np.int64)
        state = self._state
        state[:] = [self._attributes, count, 0, 0, self._width, matrix.ctypes.data, ids.ctypes.data, 0,
                    self._described.ctypes.data, 0]
        _guarded(_address["PortalRunFetch"], self._portal(), FETCH_FORWARD, count, ctypes.addressof(self._receiver))
        if state[3]:  # the executor stops at count rows: the receiver is never full
            raise RuntimeError(f"the row receiver overflowed {count} rows")
        n = state[2]
        return n, matrix[:n], ids[:n], state[9]

    def close(self) -> None:
        """Close the portal if it is still there; once only, even if closing it fails."""
        portal, self._name = self._found(), None
        if portal:
            _unpin_portal(portal)
            _cursor_close(portal)
