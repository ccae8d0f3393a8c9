"""Read a relation into columns, as the calling role, in a read-only subtransaction.

Everything runs with the caller's privileges (the public functions are SECURITY INVOKER), so
grants, column grants and row-level security apply. Before a query over the relation is planned,
``sqlml.server.reach`` refuses it if it can run a function the caller does not trust or a
volatile one, however it is reached (operator, cast, domain, aggregate, view, policy). The data
is then read inside a subtransaction that is set read-only and rolled back: a trusted function
that writes still cannot change anything (effects outside the database are what the first check
is for).
"""

from __future__ import annotations

from dataclasses import dataclass

import plpy

from sqlml.data import ingest
from sqlml.data.relation import Relation, parse_relation
from sqlml.data.schema import VECTOR, Feature
from sqlml.errors import INSUFFICIENT_PRIVILEGE, UNDEFINED_TABLE, SqlmlError
from sqlml.server import reach
from sqlml.server.spi import spi


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str  # typname (domains resolved to their base type, enums as "text")
    typmod: int


@dataclass(frozen=True)
class Source:
    """A relation as a use case reads it: parsed once, checked to exist and to be readable by the
    caller, its columns described. Every query over it is still checked by ``reach.checked`` when it runs
    (``read_only``): what a query can run is PostgreSQL's analysis of that query, at that moment."""

    relation: Relation
    sql: str  # reads the columns the caller may read
    hidden: list[str]  # columns the caller may not read
    columns: list[Column]  # of ``sql``, in its order

    @classmethod
    def open(cls, text) -> Source:
        relation = parse_relation(text)
        if relation.name:
            return cls(relation, *named_source(relation))
        return cls(relation, relation.query, [], describe(relation.query))

    def by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    def check_readable(self, column: str, what: str = "it") -> None:
        """An error if the caller may not read ``column`` of the relation (``what``: it, in the hint)."""
        if column in self.hidden:
            raise SqlmlError(f'permission denied for column "{column}" of {self.relation.text}',
                             sqlstate=INSUFFICIENT_PRIVILEGE, hint=f"ask the table's owner for SELECT on {what}")


class _Rollback(Exception):
    pass


def read_only(sql: str, prefix: str = ""):
    """The result of ``prefix + sql`` (``prefix``: SET LOCAL statements, or EXPLAIN), ``sql``
    as checked by ``reach.checked``, run read-only inside a subtransaction that is rolled back.

    The SET and the query go to the server in one call: PL/Python runs every ``plpy.execute`` in a
    subtransaction of its own, and a read-only setting made in a subtransaction ends with it
    (measured: a separate ``SET LOCAL transaction_read_only`` left the next query read-write, and
    a volatile function hidden in a view could write).
    """
    result = None
    try:
        with plpy.subtransaction():
            with reach.checked(sql) as checked:  # in the same subtransaction: what it read stays locked
                result = plpy.execute("SET LOCAL transaction_read_only = on; " + prefix + checked)
            raise _Rollback
    except _Rollback:
        pass
    return result


def named_source(relation: Relation) -> tuple[str, list[str], list[Column]]:
    """(SQL to read, column names not readable by the caller, the readable columns) of a named
    relation after checking it exists and the caller may read it, from the catalogs: nothing is
    planned or run (what the SQL runs is checked when it is read: ``read_only``)."""
    oid = spi.execute("SELECT to_regclass($1)::oid AS oid", [relation.qualified])[0]["oid"]
    if oid is None:
        raise SqlmlError(f'relation "{relation.text}" does not exist', sqlstate=UNDEFINED_TABLE,
                         hint="check the name and the search_path, or schema-qualify it (schema.table)")
    cols = spi.execute(
        """SELECT a.attname::pg_catalog.text AS name, a.atttypid::pg_catalog.int8 AS type, a.atttypmod AS typmod,
                  pg_catalog.has_column_privilege($1::pg_catalog.oid, a.attnum, 'SELECT') AS readable
           FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid
             AND a.attnum OPERATOR(pg_catalog.>) 0::pg_catalog.int2 AND NOT a.attisdropped
           ORDER BY a.attnum""", [oid])
    readable = [c for c in cols if c["readable"]]
    hidden = [c["name"] for c in cols if not c["readable"]]
    if not readable:
        raise SqlmlError(f'permission denied for relation "{relation.text}"', sqlstate=INSUFFICIENT_PRIVILEGE,
                         hint="ask its owner for SELECT on the table or on the columns to train on")
    select = ", ".join(ingest.quote_ident(c["name"]) for c in readable)
    return f"SELECT {select} FROM {relation.qualified}", hidden, \
        _columns([c["name"] for c in readable], [c["type"] for c in readable], [c["typmod"] for c in readable])


def describe(sql: str) -> list[Column]:
    """Name, type and typmod of each column of the query ``sql``, without reading rows (it is
    analysed and planned, once what it runs is checked)."""
    res = read_only(f"SELECT * FROM ({sql}) AS src LIMIT 0")
    return _columns(res.colnames(), res.coltypes(), res.coltypmods())


def _columns(names: list[str], oids: list[int], typmods: list[int]) -> list[Column]:
    """Columns of these names, type OIDs and typmods: a domain as its base type, an enum as text, a
    type that is not built in by its schema-qualified name."""
    types = {r["oid"]: r for r in spi.execute(
        """SELECT t.oid::int8 AS oid, t.typname::text AS typname, t.typtype::text AS typtype, b.typname::text AS base,
                  n.nspname::text AS schema, r.rolsuper AS builtin
           FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_type b ON b.oid OPERATOR(pg_catalog.=) t.typbasetype
           JOIN pg_catalog.pg_type k ON k.oid OPERATOR(pg_catalog.=) coalesce(b.oid, t.oid)
           JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.typnamespace
           JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) k.typowner
           WHERE t.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[])""", [list(oids)])}
    cols = []
    for name, oid, typmod in zip(names, oids, typmods):
        t = types[int(oid)]
        typname = t["base"] if t["typtype"] == "d" else ("text" if t["typtype"] == "e" else t["typname"])
        if not t["builtin"] and t["typtype"] != "e":  # a user's type named like a built-in one is not that one
            typname = f"{t['schema']}.{typname}"
        cols.append(Column(name, typname, int(typmod)))
    return cols


def estimate(sql: str) -> tuple[int, int]:
    """(rows, bytes per row) the planner expects ``sql`` to return, without reading it.

    For a table this is its statistics (reltuples scaled to its current size, average widths);
    for a view or query, the plan's estimate.
    """
    import json

    plan = read_only(f"SELECT * FROM ({sql}) AS src", "EXPLAIN (FORMAT JSON) ")
    top = json.loads(plan[0]["QUERY PLAN"])[0]["Plan"]
    return max(int(top["Plan Rows"]), 1), int(top["Plan Width"])


def vector_dim(sql: str, column: str, typmod: int) -> int:
    """Dimensions of a vector column: from its typmod, else from its first non-NULL value."""
    if typmod > 0:
        return typmod
    q = ingest.quote_ident(column)
    rows = read_only(f"SELECT vector_dims(src.{q}) AS d FROM ({sql}) AS src WHERE src.{q} IS NOT NULL LIMIT 1")
    return int(rows[0]["d"]) if rows else 0


def read(sql: str, features: list[Feature], extra: dict[str, str] | None = None):
    """(n, {feature: raw array}, {extra column: raw array}) for the rows of ``sql``.

    Rows come in a repeatable order (no parallel workers, no synchronised scans that start
    mid-table), so that the same data gives the same holdout split and data fingerprint."""
    rows = read_only(ingest.ingest_query(sql, features, extra),
                     "SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL synchronize_seqscans = off; ")
    return ingest.decode_row(rows[0], features, extra)


def with_dims(sql: str, features: list[Feature], typmods: dict) -> list[Feature]:
    from dataclasses import replace

    return [replace(f, dim=vector_dim(sql, f.name, typmods.get(f.name, -1))) if f.kind == VECTOR else f
            for f in features]
