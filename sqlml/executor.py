"""The small SQL interface that registry/ and monitor/ speak.

They never import plpy or psycopg2: the server hands them a :class:`sqlml.server.spi.SpiExecutor`
(or, in parallel mode, :class:`sqlml.server.pg_internals.ParallelSpi`), the client (``sqlml.connect``,
``sqlml report``) a :class:`PsycopgExecutor`. Parameters are ``$1, $2 ...`` placeholders whose types
follow the Python values (str/None -> text, int -> int8, float -> float8, bool -> bool,
bytes -> bytea, dict -> text holding JSON, list -> an array of its elements' type); the SQL
casts where it needs another type (``$3::jsonb``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Protocol


class Executor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        """Run ``sql`` with ``params``; return the rows as dicts."""

    def notice(self, message: str) -> None:
        """Tell the user something (a NOTICE in SQL, stderr on the client)."""


def pg_type(value) -> str:
    if isinstance(value, (list, tuple)):
        first = next((v for v in value if v is not None), "")
        return pg_type(first) + "[]"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int8"
    if isinstance(value, float):
        return "float8"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytea"
    return "text"


def adapt(value):
    """The Python value to bind for ``value`` (JSON text for dicts)."""
    if isinstance(value, dict):
        return json.dumps(value, default=_json_default)
    if isinstance(value, tuple):
        return list(value)
    return value


def to_json(value) -> str:
    """JSON text for a value headed for a jsonb parameter (numpy scalars and arrays allowed)."""
    return json.dumps(value, default=_json_default)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


class PsycopgExecutor:
    """An Executor over a psycopg2 connection (client side: ``sqlml.connect``, ``sqlml report``)."""

    def __init__(self, conn, notice=None):
        self.conn = conn
        self._notice = notice

    def execute(self, sql, params=()):
        from psycopg2.extras import RealDictCursor

        # $n -> %(pn)s; literal % must be doubled for psycopg2
        sql = re.sub(r"\$(\d+)", lambda m: f"%(p{m.group(1)})s", sql.replace("%", "%%"))
        with self.conn.cursor(cursor_factory=RealDictCursor) as cur:
            cur.execute(sql, {f"p{i + 1}": adapt(v) for i, v in enumerate(params)})
            return [dict(r) for r in cur.fetchall()] if cur.description else []

    def notice(self, message):
        if self._notice:
            self._notice(message)
