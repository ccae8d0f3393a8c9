"""Every function a query can make the caller run, from PostgreSQL's analysis of it; refuse the
untrusted and the volatile (``sqlml.data.trust``) before the query is planned or read.

The query becomes ``CREATE TEMP VIEW <random> AS SELECT * FROM (<query>) AS src``, read in its
place and dropped once the read is open (``checked``): its stored definition is PostgreSQL's parse
analysis of the query, taken without planning, and the analysis' ACCESS SHARE locks on the
relations the query names stay until the caller's (sub)transaction ends. Its expression tree names
every function, operator, type and relation the query uses (``trust.references``; pg_depend would
miss the built-in ones). From there the walk follows operators to their functions (and planner
estimators), aggregates to their support functions, types to domains' CHECK constraints (and base,
element, field and range subtypes), views to their own query, and tables with row-level security
to every policy's expressions (whichever role it names: a view reads as its owner, whose policies
are not the caller's); and tables to what the planner evaluates on them (index expressions and
predicates, statistics' expressions, CHECK constraints) and to the tables that inherit from them.
Every catalog name is schema-qualified and every comparison an explicit pg_catalog operator, so
nothing planted on the search_path answers in pg_catalog's place.

Analysis does run one thing: the input function of each string constant's type, and for an array,
range or row that reads every element with the element type's own, a domain's CHECK included. So a
query with string constants is first analysed and judged with NULLs in their place
(``sqlml.data.blank_strings``: the same types, nothing read), and only then as written.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import plpy

from sqlml.data import blank_strings, trust
from sqlml.errors import (
    DUPLICATE_COLUMN,
    FEATURE_NOT_SUPPORTED,
    INSUFFICIENT_PRIVILEGE,
    INVALID_TABLE_DEFINITION,
    OBJECT_IN_USE,
    READ_ONLY_SQL_TRANSACTION,
    SqlmlError,
)
from sqlml.server.spi import spi

Q = "OPERATOR(pg_catalog.=)"  # every comparison: no operator on the caller's search_path answers for it

# per kind, what the objects whose oids are in $1 lead to: (oid, kind of the next, its oid, and for
# a rule, policy or domain constraint its expression, whose references come next)
_NEXT = {
    trust.PROC: f"""  -- an aggregate: its support functions
        SELECT a.aggfnoid::pg_catalog.oid::int8 AS oid, 'function' AS kind, f::int8 AS next, NULL::text AS expr
        FROM pg_catalog.pg_aggregate a, LATERAL pg_catalog.unnest(ARRAY[
            a.aggtransfn::pg_catalog.oid, a.aggfinalfn::pg_catalog.oid, a.aggcombinefn::pg_catalog.oid,
            a.aggserialfn::pg_catalog.oid, a.aggdeserialfn::pg_catalog.oid, a.aggmtransfn::pg_catalog.oid,
            a.aggminvtransfn::pg_catalog.oid, a.aggmfinalfn::pg_catalog.oid]) AS f
        WHERE a.aggfnoid::pg_catalog.oid {Q} ANY ($1::pg_catalog.oid[])
          AND f OPERATOR(pg_catalog.<>) 0::pg_catalog.oid""",
    trust.OPERATOR: f"""  -- an operator: its function and the planner's estimators
        SELECT o.oid::int8 AS oid, 'function' AS kind, f::int8 AS next, NULL::text AS expr
        FROM pg_catalog.pg_operator o, LATERAL pg_catalog.unnest(ARRAY[
            o.oprcode::pg_catalog.oid, o.oprrest::pg_catalog.oid, o.oprjoin::pg_catalog.oid]) AS f
        WHERE o.oid {Q} ANY ($1::pg_catalog.oid[]) AND f OPERATOR(pg_catalog.<>) 0::pg_catalog.oid""",
    trust.TYPE: f"""  -- a domain: its CHECK constraints and base type; an array: its element; a row: its fields
        SELECT c.contypid::int8 AS oid, 'constraint' AS kind, c.oid::int8 AS next, c.conbin::text AS expr
        FROM pg_catalog.pg_constraint c WHERE c.contypid {Q} ANY ($1::pg_catalog.oid[]) AND c.conbin IS NOT NULL
        UNION ALL
        SELECT t.oid::int8, 'type', u::int8, NULL FROM pg_catalog.pg_type t,
               LATERAL pg_catalog.unnest(ARRAY[t.typbasetype, t.typelem]) AS u
        WHERE t.oid {Q} ANY ($1::pg_catalog.oid[]) AND u OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
        UNION ALL
        SELECT t.oid::int8, 'type', a.atttypid::int8, NULL
        FROM pg_catalog.pg_type t JOIN pg_catalog.pg_attribute a ON a.attrelid {Q} t.typrelid
        WHERE t.oid {Q} ANY ($1::pg_catalog.oid[]) AND t.typtype {Q} 'c' AND a.attnum OPERATOR(pg_catalog.>) 0::int2
          AND NOT a.attisdropped
        UNION ALL  -- a range: its subtype (whose input a range's runs)
        SELECT r.rngtypid::int8, 'type', r.rngsubtype::int8, NULL FROM pg_catalog.pg_range r
        WHERE r.rngtypid {Q} ANY ($1::pg_catalog.oid[])
        UNION ALL  -- and its canonical and subtype_diff functions (the planner's estimates call the latter)
        SELECT r.rngtypid::int8, 'function', f::int8, NULL FROM pg_catalog.pg_range r,
               LATERAL pg_catalog.unnest(ARRAY[r.rngcanonical::pg_catalog.oid, r.rngsubdiff::pg_catalog.oid]) AS f
        WHERE r.rngtypid {Q} ANY ($1::pg_catalog.oid[]) AND f OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
        UNION ALL  -- a multirange: its range
        SELECT r.rngmultitypid::int8, 'type', r.rngtypid::int8, NULL FROM pg_catalog.pg_range r
        WHERE r.rngmultitypid {Q} ANY ($1::pg_catalog.oid[])""",
    trust.RELATION: f"""  -- a view: its query; a table under row-level security: every policy's expressions
        SELECT r.ev_class::int8 AS oid, 'rule' AS kind, r.oid::int8 AS next, r.ev_action::text AS expr
        FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid {Q} r.ev_class
        WHERE r.ev_class {Q} ANY ($1::pg_catalog.oid[]) AND c.relkind {Q} 'v' AND r.ev_type {Q} '1'
        UNION ALL
        SELECT p.polrelid::int8, 'policy', p.oid::int8,
               pg_catalog.concat(p.polqual::text, ' ', p.polwithcheck::text)
        FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid {Q} p.polrelid
        WHERE p.polrelid {Q} ANY ($1::pg_catalog.oid[]) AND c.relrowsecurity
        UNION ALL  -- what the planner evaluates: index expressions and predicates, statistics' expressions,
        -- CHECK constraints (constraint exclusion), and the tables that inherit (read with their parent)
        SELECT i.indrelid::int8, 'index', i.indexrelid::int8,
               pg_catalog.concat(i.indexprs::text, ' ', i.indpred::text)
        FROM pg_catalog.pg_index i WHERE i.indrelid {Q} ANY ($1::pg_catalog.oid[])
          AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
        UNION ALL
        SELECT s.stxrelid::int8, 'statistics', s.oid::int8, s.stxexprs::text
        FROM pg_catalog.pg_statistic_ext s WHERE s.stxrelid {Q} ANY ($1::pg_catalog.oid[]) AND s.stxexprs IS NOT NULL
        UNION ALL
        SELECT c.conrelid::int8, 'table check', c.oid::int8, c.conbin::text
        FROM pg_catalog.pg_constraint c WHERE c.conrelid {Q} ANY ($1::pg_catalog.oid[]) AND c.contype {Q} 'c'
        UNION ALL
        SELECT h.inhparent::int8, 'relation', h.inhrelid::int8, NULL
        FROM pg_catalog.pg_inherits h WHERE h.inhparent {Q} ANY ($1::pg_catalog.oid[])""",
}

_FUNCTIONS = f"""
SELECT p.oid::int8 AS oid, p.prokind::text AS kind, n.nspname::text AS schema,
       pg_catalog.concat(p.proname, '(', pg_catalog.pg_get_function_identity_arguments(p.oid), ')') AS name,
       r.rolname::text AS owner, r.rolsuper AS superuser, p.provolatile {Q} 'v' AS volatile
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid {Q} p.pronamespace
JOIN pg_catalog.pg_roles r ON r.oid {Q} p.proowner
WHERE p.oid {Q} ANY ($1::pg_catalog.oid[])"""

_LABELS = {  # kind -> (oid, label) of the objects in $1 that a path names
    trust.OPERATOR: f"""SELECT o.oid::int8 AS oid, pg_catalog.concat('operator ', n.nspname, '.', o.oprname, '(',
                               pg_catalog.format_type(o.oprleft, NULL), ', ',
                               pg_catalog.format_type(o.oprright, NULL), ')') AS label
                        FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid {Q} o.oprnamespace
                        WHERE o.oid {Q} ANY ($1::pg_catalog.oid[])""",
    "policy": f"""SELECT p.oid::int8 AS oid, pg_catalog.concat('policy "', p.polname, '"') AS label
                  FROM pg_catalog.pg_policy p WHERE p.oid {Q} ANY ($1::pg_catalog.oid[])""",
    "table check": f"""SELECT c.oid::int8 AS oid, pg_catalog.concat('its check "', c.conname, '"') AS label
                       FROM pg_catalog.pg_constraint c WHERE c.oid {Q} ANY ($1::pg_catalog.oid[])""",
    "index": f"""SELECT c.oid::int8 AS oid, pg_catalog.concat('index ', n.nspname, '.', c.relname) AS label
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid {Q} c.relnamespace
                 WHERE c.oid {Q} ANY ($1::pg_catalog.oid[])""",
    "statistics": f"""SELECT s.oid::int8 AS oid, pg_catalog.concat('statistics ', n.nspname, '.', s.stxname) AS label
                      FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid {Q} s.stxnamespace
                      WHERE s.oid {Q} ANY ($1::pg_catalog.oid[])""",
    "constraint": f"""SELECT c.oid::int8 AS oid, pg_catalog.concat('its check "', c.conname, '"') AS label
                      FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_type t ON t.oid {Q} c.contypid
                      JOIN pg_catalog.pg_namespace n ON n.oid {Q} t.typnamespace
                      WHERE c.oid {Q} ANY ($1::pg_catalog.oid[])""",
}
_DOMAINS = f"""
SELECT t.oid::int8 AS oid, n.nspname::text AS schema, t.typname::text AS name, r.rolname::text AS owner,
       r.rolsuper AS superuser
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid {Q} t.typnamespace
JOIN pg_catalog.pg_roles r ON r.oid {Q} t.typowner
WHERE t.oid {Q} ANY ($1::pg_catalog.oid[]) AND t.typtype {Q} 'd'"""
_RELATIONS = f"""
SELECT c.oid::int8 AS oid, CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END AS kind, n.nspname::text AS schema,
       c.relname::text AS name, r.rolname::text AS owner, r.rolsuper AS superuser
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid {Q} c.relnamespace
JOIN pg_catalog.pg_roles r ON r.oid {Q} c.relowner
WHERE c.oid {Q} ANY ($1::pg_catalog.oid[]) AND (c.relkind {Q} 'v' OR c.relrowsecurity)
  AND c.oid OPERATOR(pg_catalog.<>) $2::pg_catalog.oid"""
# the relations this backend holds a lock on, and how to name relations by oid for a query that locks them
_LOCKED = f"""SELECT l.relation::pg_catalog.oid::int8 AS oid FROM pg_catalog.pg_locks l
              WHERE l.pid {Q} pg_catalog.pg_backend_pid() AND l.locktype {Q} 'relation' AND l.granted"""
_NAMES = f"""SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS name
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid {Q} c.relnamespace
             WHERE c.oid {Q} ANY ($1::pg_catalog.oid[])"""
_LOCK_ROUNDS = 10  # each round waits for a relation someone holds; past this many, they keep changing
_ROOT = f"""SELECT r.ev_class::int8 AS view, r.ev_action::text AS expr FROM pg_catalog.pg_rewrite r
            WHERE r.ev_class {Q} pg_catalog.to_regclass($1::pg_catalog.text)::pg_catalog.oid"""


@contextmanager
def checked(sql: str) -> Iterator[str]:
    """Yield a query that reads what ``sql`` reads, once nothing ``sql`` can run is refused
    (``sqlml.data.trust.judge``); plans and reads nothing. Open or run it inside the block.

    The query reads ``sql``'s analysis as it was checked: a temporary view of it, dropped when the
    block ends, whose stored tree names every function, operator and cast by OID. Parsing ``sql``
    again for the read would look them up again, and a cast or operator created in between (by a
    role that owns one of the column types, from another session) would run unchecked. Every
    relation the walk reaches (those ``sql`` names, the tables under its views and in policies) is
    locked (ACCESS SHARE) before the judge and stays locked until the caller's (sub)transaction
    ends: nobody can replace a view or change a table's policies either (``_locked_walk``)."""
    caller = spi.execute("SELECT current_user::text AS u")[0]["u"]
    _require_settings()
    setting = spi.execute("SELECT pg_catalog.current_setting($1::pg_catalog.text, true) AS s", [trust.SETTING])[0]["s"]
    trusted = trust.parse_trusted_schemas(setting)
    blank = blank_strings.blanked(sql)
    if blank != sql:  # the constants' types judged first: analysing ``sql`` reads each with its type's input
        with _judged(blank, caller, trusted):
            pass
    with _judged(sql, caller, trusted) as view:
        yield f"SELECT * FROM pg_temp.{view}"


def _require_settings() -> None:
    """The walk reads the catalogs in the transaction's snapshot, while analysis and planning read
    the latest: under REPEATABLE READ or SERIALIZABLE, a function or policy committed since the
    transaction began would run unseen. ``blank_strings`` lexes as PostgreSQL does with
    standard_conforming_strings on."""
    row = spi.execute("SELECT pg_catalog.current_setting('transaction_isolation') AS isolation, "
                      "pg_catalog.current_setting('standard_conforming_strings') AS strings")[0]
    if row["isolation"] != "read committed":
        raise SqlmlError(f"sqlml checks what a query runs from the latest catalogs, which a {row['isolation']} "
                         "transaction does not see", sqlstate=FEATURE_NOT_SUPPORTED,
                         hint="call it in a READ COMMITTED transaction (PostgreSQL's default)")
    if row["strings"] != "on":
        raise SqlmlError("sqlml reads queries with standard_conforming_strings on", sqlstate=FEATURE_NOT_SUPPORTED,
                         hint="SET standard_conforming_strings = on (PostgreSQL's default)")


@contextmanager
def _judged(sql: str, caller: str, trusted: frozenset[str]) -> Iterator[str]:
    """The name of a temporary view of ``sql`` once nothing it runs is refused; dropped at the end."""
    view, unreadable = _analysed(sql)
    try:
        root = spi.execute(_ROOT, [f"pg_temp.{view}"])[0]
        error = trust.judge(_locked_walk(root["expr"], int(root["view"])), caller, trusted)
        if error is not None or unreadable is not None:
            raise error or unreadable
        yield view
    finally:
        plpy.execute(f"DROP VIEW IF EXISTS pg_temp.{view}")


def _analysed(sql: str) -> tuple[str, SqlmlError | None]:
    """(name of a new temporary view of ``sql`` in pg_temp: PostgreSQL's parse analysis of it, the
    error reading it would raise). A select list no view can hold (two columns of one name, a
    void) is analysed as ``SELECT 1 FROM (sql)``: what it runs is still judged first."""
    view = f"sqlml_reach_{secrets.token_hex(8)}"
    unreadable = None
    with plpy.subtransaction():  # on an error, no view is left behind; else the analysis' locks stay
        try:
            try:
                with plpy.subtransaction():
                    plpy.execute(f"CREATE TEMPORARY VIEW {view} AS SELECT * FROM ({sql}) AS src")
            except plpy.SPIError as e:
                if getattr(e, "sqlstate", None) not in (DUPLICATE_COLUMN, INVALID_TABLE_DEFINITION):
                    raise
                unreadable = SqlmlError(f"{e}: sqlml reads the columns of a query as a view's",
                                        sqlstate=e.sqlstate, hint="give each column its own name and a type a "
                                                                  "table can hold (not void or record)")
                plpy.execute(f"CREATE TEMPORARY VIEW {view} AS SELECT 1 AS one FROM ({sql}) AS src")
        except plpy.SPIError as e:
            state = getattr(e, "sqlstate", None)
            if state == INSUFFICIENT_PRIVILEGE and "temporary" in str(e):
                raise SqlmlError("sqlml checks what a relation runs through a temporary view, and this role may "
                                 "not create temporary objects", sqlstate=INSUFFICIENT_PRIVILEGE,
                                 hint="GRANT TEMPORARY ON DATABASE to the role") from None
            if state == READ_ONLY_SQL_TRANSACTION:
                raise SqlmlError("sqlml checks what a relation runs through a temporary view, which a read-only "
                                 "transaction cannot create", sqlstate=READ_ONLY_SQL_TRANSACTION,
                                 hint="run it in a read-write transaction, on the primary") from None
            raise
    return view, unreadable


def _locked_walk(tree: str, view: int) -> list[trust.Function]:
    """``_walk`` once every relation it reaches is locked (ACCESS SHARE) and was walked since.

    The analysis locks only the relations the query names; the tables under a view it names, or in
    a policy's subquery, are locked when the read is planned, after the judge. Whoever holds one
    meanwhile (ALTER TABLE ... ENABLE ROW LEVEL SECURITY, CREATE POLICY, CREATE OR REPLACE VIEW
    take an ACCESS EXCLUSIVE lock) could change what it runs between the two. So each relation
    reached is locked, waiting for such a change to commit, and the walk is taken again."""
    for _ in range(_LOCK_ROUNDS):
        functions, relations = _walk(tree, view)
        held = {int(r["oid"]) for r in spi.execute(_LOCKED)}
        missing = sorted(relations - held)
        if not missing:
            return functions
        names = [r["name"] for r in _rows(_NAMES, missing)]
        lock_view = f"sqlml_reach_{secrets.token_hex(8)}"
        with plpy.subtransaction():  # its analysis locks them, without reading or checking privileges
            plpy.execute(f"CREATE TEMPORARY VIEW {lock_view} AS SELECT 1 AS one FROM {', '.join(names)}"
                         if names else "SELECT 1")
            plpy.execute(f"DROP VIEW IF EXISTS pg_temp.{lock_view}")
    raise SqlmlError(f"the relations the query reads kept changing while sqlml checked it ({_LOCK_ROUNDS} rounds)",
                     sqlstate=OBJECT_IN_USE, hint="run it again once the views and policies it reads are settled")


def _walk(tree: str, view: int) -> tuple[list[trust.Function], set[int]]:
    """(what runs, the relations reached): breadth first from the references of ``tree``, each
    object once, reached by its shortest path."""
    root = ("root", 0)
    parent = {root: None}
    level = []
    _add_references(tree, root, parent, level)
    while level:
        nxt = []
        for kind, sql in _NEXT.items():
            oids = [o for k, o in level if k == kind]
            for r in _rows(sql, oids):
                child, here = (r["kind"], int(r["next"])), (kind, int(r["oid"]))
                if child not in parent:
                    parent[child] = here
                    nxt.append(child)
                if r["expr"] is not None:
                    _add_references(r["expr"], child, parent, nxt)
        level = nxt
    procs = {int(r["oid"]): r for r in _rows(_FUNCTIONS, [o for k, o in parent if k == trust.PROC])}
    labels = {}
    for kind, sql in _LABELS.items():
        labels.update({(kind, int(r["oid"])): r["label"] for r in _rows(sql, [o for k, o in parent if k == kind])})
    owned = {(trust.TYPE, int(r["oid"])): {**r, "kind": trust.DOMAIN}
             for r in _rows(_DOMAINS, [o for k, o in parent if k == trust.TYPE])}
    relations = [o for k, o in parent if k == trust.RELATION]
    owned.update({(trust.RELATION, int(r["oid"])): r for r in spi.execute(_RELATIONS, [relations, view])}
                 if relations else {})
    return trust.reached(parent, labels, procs, owned), set(relations)


def _add_references(expr: str, holder: tuple, parent: dict, level: list) -> None:
    for kind, oids in trust.references(expr).items():
        for oid in sorted(oids):
            node = (kind, oid)
            if node not in parent:
                parent[node] = holder
                level.append(node)


def _rows(sql: str, oids: list[int]) -> list[dict]:
    return spi.execute(sql, [oids]) if oids else []
