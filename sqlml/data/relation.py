"""What a user may pass as ``relation``: a table/view name, or exactly one read-only SELECT.

Parsed here, never pasted: a name becomes a quoted identifier, a query is parsed with sqlglot
and refused if it is anything but one plain query (no DML or DDL, no SELECT INTO, no row locks,
no data-modifying CTE, no second statement). What it may run (functions, however reached) is
judged by the server from PostgreSQL's own analysis of it (``sqlml.server.reach``), and the data
is read in a read-only subtransaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from sqlml.data.ingest import quote_ident
from sqlml.errors import SYNTAX_ERROR, SqlmlError

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_NAME = re.compile(rf"^\s*({_IDENT})(?:\s*\.\s*({_IDENT}))?\s*$")
MAX_LENGTH = 100_000

_FORBIDDEN = (
    exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command,
    exp.Into, exp.Lock, exp.Set, exp.Transaction, exp.Commit, exp.Rollback, exp.Copy, exp.Grant,
    exp.TruncateTable, exp.Use, exp.LoadData, exp.Pragma,
)


@dataclass(frozen=True)
class Relation:
    """A validated relation: either ``name`` (schema or None, relation) or ``query``."""

    text: str
    name: tuple | None = None
    query: str | None = None

    @property
    def sql(self) -> str:
        """SQL usable as ``FROM (<sql>) AS src``."""
        if self.name:
            schema, rel = self.name
            target = quote_ident(rel) if schema is None else f"{quote_ident(schema)}.{quote_ident(rel)}"
            return f"SELECT * FROM {target}"
        return self.query

    @property
    def qualified(self) -> str | None:
        """The quoted name for regclass lookups, or None for a query."""
        if not self.name:
            return None
        schema, rel = self.name
        return quote_ident(rel) if schema is None else f"{quote_ident(schema)}.{quote_ident(rel)}"

    def describe(self) -> str:
        return self.text if self.name else "the query"


def _unquote(ident: str) -> str:
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()  # PostgreSQL folds unquoted names to lower case


def parse_relation(text) -> Relation:
    if text is None or not str(text).strip():
        raise SqlmlError("relation is empty", hint="pass a table or view name, or one SELECT query",
                         sqlstate=SYNTAX_ERROR)
    text = str(text)
    if len(text) > MAX_LENGTH:
        raise SqlmlError(f"relation is {len(text)} characters long; the limit is {MAX_LENGTH}",
                         hint="create a view and pass its name", sqlstate=SYNTAX_ERROR)
    m = _NAME.match(text)
    if m and m.group(1).lower() not in ("select", "with", "values", "table"):
        first, second = m.group(1), m.group(2)
        name = (_unquote(first), _unquote(second)) if second else (None, _unquote(first))
        return Relation(text=text, name=name)
    return _parse_query(text)


def _parse_query(text: str) -> Relation:
    try:
        statements = [s for s in sqlglot.parse(text, read="postgres") if s is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as e:
        raise SqlmlError(f"relation is neither a table name nor a valid SELECT: {str(e).splitlines()[0]}",
                         hint="pass a table or view name, or one SELECT query", sqlstate=SYNTAX_ERROR) from None
    if len(statements) != 1:
        raise SqlmlError(f"relation holds {len(statements)} statements; exactly one SELECT is allowed",
                         hint="remove the extra statements (and any ';' inside the relation)", sqlstate=SYNTAX_ERROR)
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise SqlmlError(f"relation must be a SELECT query, not {tree.key.upper()}",
                         hint="pass a table or view name, or one read-only SELECT", sqlstate=SYNTAX_ERROR)
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise SqlmlError(f"relation may only read data, but it contains {node.key.upper()}",
                             hint="pass one read-only SELECT (no INSERT/UPDATE/DELETE, DDL, INTO or locking)",
                             sqlstate=SYNTAX_ERROR)
        if isinstance(node, exp.Select) and node.args.get("locks"):
            raise SqlmlError("relation may only read data, but it locks rows (FOR UPDATE/SHARE)",
                             hint="remove the locking clause", sqlstate=SYNTAX_ERROR)
    return Relation(text=text, query=tree.sql(dialect="postgres"))

