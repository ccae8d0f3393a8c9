"""Turn what goes wrong inside a sqlml function into one clean SQL error.

PL/Python prints an uncaught exception as "<module>.<class>: <message>". An exception class
named ``sqlml`` in module ``builtins`` therefore reads ``ERROR:  sqlml: <message>``, and, being a
``plpy.Error``, carries its SQLSTATE, DETAIL and HINT through to the client.
"""

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
    return sql_error(f"internal error ({type(exc).__name__}: {exc})", sqlstate="XX000" if not isinstance(exc, ValueError) else DATA_EXCEPTION,
                     hint="the server log has the traceback; please report it with `sqlml doctor` output")


def _unpack_sqlstate(code: int) -> str:
    """PostgreSQL's packed error code (MAKE_SQLSTATE: five 6-bit characters) back to its five characters."""
    return "".join(chr(((code >> (6 * i)) & 0x3F) + ord("0")) for i in range(5))


def entry(fn):
    """Decorator for every function the SQL wrappers call: errors leave as clean SQL errors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the boundary: everything becomes a SQL error
            raise translate(exc).with_traceback(None) from None

    return wrapper
