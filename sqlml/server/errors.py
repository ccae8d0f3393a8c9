"""Turn what goes wrong inside a sqlml function into one clean SQL error.

PL/Python prints an uncaught exception as "<module>.<class>: <message>". An exception class
named ``sqlml`` in module ``builtins`` therefore reads ``ERROR:  sqlml: <message>``, and, being a
``plpy.Error``, carries its SQLSTATE, DETAIL and HINT through to the client.

PL/Python also puts the Python traceback in the error's CONTEXT (plpy_elog.c: whenever the
exception that leaves the function has a traceback, and one that propagates always has: raising
``plpy.Error`` or calling ``plpy.error`` makes no difference). JDBC and BI tools show CONTEXT inside
the message, so a SQL user would read Python frames. No Python-level way removes it; PostgreSQL's
``emit_log_hook``, called with the finished error just before it is logged and sent, can:
``hide_tracebacks`` installs a hook (through ctypes, as ``sqlml_boot.py`` already reaches the
server's symbols) that drops the "Traceback ..." lines from the CONTEXT of sqlml's own errors
(message "sqlml: ..."), unless the setting ``sqlml.traceback`` is on. SQLSTATE, message, DETAIL,
HINT and the rest of CONTEXT are untouched; internal errors still log their full traceback.
"""

import ctypes
import functools
import traceback

import plpy

from sqlml.errors import DATA_EXCEPTION, OUT_OF_MEMORY, SqlmlError


class SqlError(plpy.Error):
    pass


SqlError.__module__ = "builtins"
SqlError.__name__ = SqlError.__qualname__ = "sqlml"


def sql_error(message, *, sqlstate, hint=None, detail=None) -> SqlError:
    e = SqlError(message)
    e.sqlstate, e.hint, e.detail = sqlstate, hint, detail
    return e


def translate(exc: BaseException) -> SqlError:
    """The SQL error a user sees for ``exc``."""
    if isinstance(exc, SqlError):
        return exc
    if isinstance(exc, SqlmlError):
        return sql_error(exc.message, sqlstate=exc.sqlstate, hint=exc.hint, detail=exc.detail)
    if isinstance(exc, plpy.SPIError):  # a PostgreSQL error (permission denied, cancel...): keep its code
        message = str(exc.args[0]) if exc.args else str(exc)
        # sqlml's own SQL functions (sqlml._model_ref...) already say "sqlml: "; say it once
        message = message[len("sqlml: "):] if message.startswith("sqlml: ") else message
        # plpy.SPIError carries DETAIL and HINT only in spidata: (code, detail, hint, query, position, ...);
        # .sqlstate only exists for codes PL/Python has a class for (not for 02000, say): else unpack the code
        spidata = getattr(exc, "spidata", None) or (None, None, None)
        sqlstate = getattr(exc, "sqlstate", None) or (_unpack_sqlstate(spidata[0]) if spidata[0] else "XX000")
        return sql_error(message, sqlstate=sqlstate, hint=spidata[2], detail=spidata[1])
    if isinstance(exc, plpy.Error):  # raised by plpy itself, e.g. a cancel arriving while plpy.notice sends a NOTICE
        return sql_error(str(exc.args[0]) if exc.args else str(exc), sqlstate=getattr(exc, "sqlstate", None) or "XX000",
                         hint=getattr(exc, "hint", None), detail=getattr(exc, "detail", None))
    if isinstance(exc, MemoryError):
        return sql_error("out of memory: the job needed more memory than its cap allows", sqlstate=OUT_OF_MEMORY,
                         hint="train on fewer rows (options => '{\"max_rows\": N}') or raise sqlml.memory_per_job")
    plpy.log("sqlml internal error:\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return sql_error(f"internal error ({type(exc).__name__}: {exc})",
                     sqlstate="XX000" if not isinstance(exc, ValueError) else DATA_EXCEPTION,
                     hint="the server log has the traceback; please report it with `sqlml doctor` output")


def _unpack_sqlstate(code: int) -> str:
    """PostgreSQL's packed error code (MAKE_SQLSTATE: five 6-bit characters) back to its five characters."""
    return "".join(chr(((code >> (6 * i)) & 0x3F) + ord("0")) for i in range(5))


class _ErrorData(ctypes.Structure):
    """The head of PostgreSQL's ErrorData (utils/elog.h of PostgreSQL 15) up to ``context``."""

    _fields_ = [("elevel", ctypes.c_int), ("output_to_server", ctypes.c_bool), ("output_to_client", ctypes.c_bool),
                ("hide_stmt", ctypes.c_bool), ("hide_ctx", ctypes.c_bool), ("filename", ctypes.c_void_p),
                ("lineno", ctypes.c_int), ("funcname", ctypes.c_void_p), ("domain", ctypes.c_void_p),
                ("context_domain", ctypes.c_void_p), ("sqlerrcode", ctypes.c_int), ("message", ctypes.c_void_p),
                ("detail", ctypes.c_void_p), ("detail_log", ctypes.c_void_p), ("hint", ctypes.c_void_p),
                ("context", ctypes.c_void_p)]


TRACEBACK_HEAD = b"Traceback (most recent call last):"
TRACEBACK_SETTING = b"sqlml.traceback"
KNOWN_LAYOUT = range(150000, 160000)  # server_version_num of the major whose ErrorData _ErrorData copies
_HOOK = ctypes.CFUNCTYPE(None, ctypes.POINTER(_ErrorData))


def without_traceback(context: bytes) -> bytes:
    """CONTEXT without PL/Python's traceback block: its head line and the indented frame lines
    after it (the other context lines, "PL/Python function ..." or "SQL function ...", stay)."""
    lines = context.split(b"\n")
    if lines[0] != TRACEBACK_HEAD:
        return context
    rest = 1
    while rest < len(lines) and lines[rest].startswith(b"  "):
        rest += 1
    return b"\n".join(lines[rest:])


def hide_tracebacks() -> None:
    """Install the emit_log_hook described above, once per backend, chained to any hook before it."""
    server = ctypes.PyDLL(None)  # keeps the GIL while it reads a setting (as sqlml.server.pg_internals does)
    get_option = server.GetConfigOption
    get_option.restype, get_option.argtypes = ctypes.c_char_p, [ctypes.c_char_p, ctypes.c_bool, ctypes.c_bool]
    strncmp = server.strncmp
    strncmp.restype, strncmp.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    if int(get_option(b"server_version_num", False, False)) not in KNOWN_LAYOUT:
        return  # another ErrorData layout: keep PL/Python's CONTEXT rather than guess
    slot = ctypes.c_void_p.in_dll(server, "emit_log_hook")
    if getattr(hide_tracebacks, "hook", None) is not None:
        return
    previous = _HOOK(slot.value) if slot.value else None

    def hook(edata):
        try:
            e = edata.contents
            if e.context and e.message and strncmp(e.message, b"sqlml: ", 7) == 0:
                setting = get_option(TRACEBACK_SETTING, True, False)
                if (setting or b"off").lower() not in (b"on", b"true", b"yes", b"1"):
                    context = ctypes.string_at(e.context)
                    kept = without_traceback(context)
                    if kept != context:  # shorter: rewrite in place (the buffer belongs to the error)
                        ctypes.memmove(e.context, kept + b"\0", len(kept) + 1)
                        if not kept:
                            e.context = None
        finally:
            if previous is not None:
                previous(edata)

    hide_tracebacks.hook = _HOOK(hook)  # referenced for the backend's life: PostgreSQL keeps calling it
    slot.value = ctypes.cast(hide_tracebacks.hook, ctypes.c_void_p).value


def entry(fn):
    """Decorator for every function the SQL wrappers call: errors leave as clean SQL errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the boundary: everything becomes a SQL error
            raise translate(exc).with_traceback(None) from None

    return wrapper
