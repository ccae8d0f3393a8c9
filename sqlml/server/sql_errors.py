"""Turn what goes wrong inside a sqlml function into one clean SQL error.

PL/Python prints an uncaught exception as "<module>.<class>: <message>". An exception class
named ``sqlml`` in module ``builtins`` therefore reads ``ERROR:  sqlml: <message>``, and, being a
``plpy.Error``, carries its SQLSTATE, DETAIL and HINT through to the client.

PL/Python also puts the Python traceback in the error's CONTEXT (plpy_elog.c: whenever the
exception that leaves the function has a traceback, and one that propagates always has: raising
``plpy.Error`` or calling ``plpy.error`` makes no difference). JDBC and BI tools show CONTEXT inside
the message, so a SQL user would read Python frames. No Python-level way removes it; PostgreSQL's
``emit_log_hook``, called with the finished error just before it is logged and sent, can:
``hide_tracebacks`` installs a hook (through ``sqlml.server.pg_internals``) that drops the
"Traceback ..." lines from the CONTEXT of sqlml's own errors (message "sqlml: ..."), unless the
setting ``sqlml.traceback`` is on. SQLSTATE, message, DETAIL, HINT and the rest of CONTEXT are
untouched; internal errors still log their full traceback.
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


TRACEBACK_HEAD = b"Traceback (most recent call last):"
SQLML_MESSAGE = b"sqlml: "


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


def _drop_traceback(error) -> None:
    """The emit_log_hook: sqlml's own errors lose the traceback from their CONTEXT, unless
    ``sqlml.traceback`` is on. The shorter text is written over the old in place."""
    if not (error.context and error.message and ctypes.string_at(error.message).startswith(SQLML_MESSAGE)):
        return
    from sqlml.server import pg_internals

    if (pg_internals.setting("sqlml.traceback") or "off").lower() in ("on", "true", "yes", "1"):
        return
    context = ctypes.string_at(error.context)
    kept = without_traceback(context)
    if kept != context:
        ctypes.memmove(error.context, kept + b"\0", len(kept) + 1)
        if not kept:
            error.context = None


_hidden = False


def hide_tracebacks() -> None:
    """Install ``_drop_traceback`` as an emit_log_hook, once per backend."""
    global _hidden
    if not _hidden:
        from sqlml.server import pg_internals

        pg_internals.add_emit_log_hook(_drop_traceback)
        _hidden = True


def entry(fn):
    """Decorator for every function the SQL wrappers call: errors leave as clean SQL errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the boundary: everything becomes a SQL error
            raise translate(exc).with_traceback(None) from None

    return wrapper
