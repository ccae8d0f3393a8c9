"""Every function a query can make the caller run, from PostgreSQL's analysis of it; refuse the
untrusted and the volatile (``sqlml.data.trust``) before the query is planned or read.

The query becomes ``CREATE TEMP VIEW <random> AS SELECT 1 FROM (<query>) AS src`` inside a
subtransaction that is rolled back: parse analysis and the view's definition record in
``pg_depend`` every function, operator, type and relation the query uses, without planning or
running anything (a domain's CHECK becomes a node evaluated at run time, not at analysis). From
there the walk follows operators to their functions (and planner estimators), aggregates to their
support functions, types to domains' CHECK constraints (and base, element and field types), views
to their own query, and tables with row-level security to every policy's expression (whichever
role it names: a view reads as its owner, whose policies are not the caller's). Every catalog
name is schema-qualified and every parameter cast, so a function planted on the search_path
cannot answer in pg_catalog's place.
"""

from __future__ import annotations

import secrets

import plpy

from sqlml.data import trust
from sqlml.errors import INSUFFICIENT_PRIVILEGE, SqlmlError
from sqlml.server.spi import spi

# the objects that (directly or through others) hold code; what each leads to is in _EDGES
_PROC, _OPERATOR, _TYPE, _CLASS, _REWRITE, _POLICY, _CONSTRAINT = (
    "pg_proc", "pg_operator", "pg_type", "pg_class", "pg_rewrite", "pg_policy", "pg_constraint")

_CATALOGS = """SELECT c.relname, c.oid::int8 AS oid FROM pg_catalog.pg_class c
               WHERE c.relnamespace = 'pg_catalog'::pg_catalog.regnamespace
                 AND c.relname OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.name[])"""

# (parent catalog, parent oid, child catalog, child oid) for the parents in $1..$7
_EDGES = """
SELECT d.classid::int8 AS pcls, d.objid::int8 AS poid, d.refclassid::int8 AS ccls, d.refobjid::int8 AS coid
FROM pg_catalog.pg_depend d
WHERE d.deptype OPERATOR(pg_catalog.=) 'n'
  AND (d.classid OPERATOR(pg_catalog.=) $8::pg_catalog.oid AND d.objid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[])
       OR d.classid OPERATOR(pg_catalog.=) $9::pg_catalog.oid AND d.objid OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.oid[])
       OR d.classid OPERATOR(pg_catalog.=) $10::pg_catalog.oid AND d.objid OPERATOR(pg_catalog.=) ANY ($3::pg_catalog.oid[]))
  AND d.refclassid OPERATOR(pg_catalog.=) ANY ($11::pg_catalog.oid[])
UNION ALL  -- a view: its query (the rewrite rule)
SELECT $12::pg_catalog.oid::int8, r.ev_class::int8, $8::pg_catalog.oid::int8, r.oid::int8
FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.ev_class
WHERE r.ev_class OPERATOR(pg_catalog.=) ANY ($4::pg_catalog.oid[]) AND c.relkind OPERATOR(pg_catalog.=) 'v'
UNION ALL  -- a table under row-level security: its policies
SELECT $12::pg_catalog.oid::int8, p.polrelid::int8, $9::pg_catalog.oid::int8, p.oid::int8
FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.polrelid
WHERE p.polrelid OPERATOR(pg_catalog.=) ANY ($4::pg_catalog.oid[]) AND c.relrowsecurity
UNION ALL  -- an operator: its function and the planner's estimators
SELECT $13::pg_catalog.oid::int8, o.oid::int8, $14::pg_catalog.oid::int8, f::int8
FROM pg_catalog.pg_operator o, LATERAL pg_catalog.unnest(ARRAY[o.oprcode::pg_catalog.oid, o.oprrest::pg_catalog.oid,
                                                                 o.oprjoin::pg_catalog.oid]) AS f
WHERE o.oid OPERATOR(pg_catalog.=) ANY ($5::pg_catalog.oid[]) AND f OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
UNION ALL  -- an aggregate: its support functions
SELECT $14::pg_catalog.oid::int8, a.aggfnoid::pg_catalog.oid::int8, $14::pg_catalog.oid::int8, f::int8
FROM pg_catalog.pg_aggregate a, LATERAL pg_catalog.unnest(ARRAY[
        a.aggtransfn::pg_catalog.oid, a.aggfinalfn::pg_catalog.oid, a.aggcombinefn::pg_catalog.oid,
        a.aggserialfn::pg_catalog.oid, a.aggdeserialfn::pg_catalog.oid, a.aggmtransfn::pg_catalog.oid,
        a.aggminvtransfn::pg_catalog.oid, a.aggmfinalfn::pg_catalog.oid]) AS f
WHERE a.aggfnoid::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($6::pg_catalog.oid[]) AND f OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
UNION ALL  -- a domain: its CHECK constraints
SELECT $15::pg_catalog.oid::int8, c.contypid::int8, $10::pg_catalog.oid::int8, c.oid::int8
FROM pg_catalog.pg_constraint c WHERE c.contypid OPERATOR(pg_catalog.=) ANY ($7::pg_catalog.oid[])
UNION ALL  -- a domain's base type, an array's element type
SELECT $15::pg_catalog.oid::int8, t.oid::int8, $15::pg_catalog.oid::int8, u::int8
FROM pg_catalog.pg_type t, LATERAL pg_catalog.unnest(ARRAY[t.typbasetype, t.typelem]) AS u
WHERE t.oid OPERATOR(pg_catalog.=) ANY ($7::pg_catalog.oid[]) AND u OPERATOR(pg_catalog.<>) 0::pg_catalog.oid
UNION ALL  -- a composite type's field types
SELECT $15::pg_catalog.oid::int8, t.oid::int8, $15::pg_catalog.oid::int8, a.atttypid::int8
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) t.typrelid
WHERE t.oid OPERATOR(pg_catalog.=) ANY ($7::pg_catalog.oid[]) AND t.typtype OPERATOR(pg_catalog.=) 'c'
  AND a.attnum OPERATOR(pg_catalog.>) 0::pg_catalog.int2 AND NOT a.attisdropped"""

_FUNCTIONS = """
SELECT p.oid::int8 AS oid, p.prokind::text AS kind, n.nspname::text AS schema,
       p.proname::text OPERATOR(pg_catalog.||) '(' OPERATOR(pg_catalog.||)
           pg_catalog.pg_get_function_identity_arguments(p.oid) OPERATOR(pg_catalog.||) ')' AS name,
       r.rolname::text AS owner, r.rolsuper AS superuser, p.provolatile OPERATOR(pg_catalog.=) 'v' AS volatile
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.proowner
WHERE p.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[])"""

_LABELS = {  # catalog -> SELECT oid, label for the oids in $1 (None: nothing to show on a path)
    _OPERATOR: """SELECT o.oid::int8 AS oid, 'operator ' OPERATOR(pg_catalog.||) n.nspname::text OPERATOR(pg_catalog.||) '.'
                         OPERATOR(pg_catalog.||) o.oprname::text OPERATOR(pg_catalog.||) '('
                         OPERATOR(pg_catalog.||) pg_catalog.format_type(o.oprleft, NULL) OPERATOR(pg_catalog.||) ', '
                         OPERATOR(pg_catalog.||) pg_catalog.format_type(o.oprright, NULL) OPERATOR(pg_catalog.||) ')' AS label
                  FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.oprnamespace
                  WHERE o.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[])""",
    _CLASS: """SELECT c.oid::int8 AS oid, 'view ' OPERATOR(pg_catalog.||) n.nspname::text OPERATOR(pg_catalog.||) '.'
                      OPERATOR(pg_catalog.||) c.relname::text AS label
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
               WHERE c.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[]) AND c.relkind OPERATOR(pg_catalog.=) 'v'""",
    _POLICY: """SELECT p.oid::int8 AS oid, 'policy "' OPERATOR(pg_catalog.||) p.polname::text OPERATOR(pg_catalog.||)
                       '" of table ' OPERATOR(pg_catalog.||) n.nspname::text OPERATOR(pg_catalog.||) '.'
                       OPERATOR(pg_catalog.||) c.relname::text AS label
                FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.polrelid
                JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
                WHERE p.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[])""",
    _CONSTRAINT: """SELECT c.oid::int8 AS oid, 'domain ' OPERATOR(pg_catalog.||) n.nspname::text OPERATOR(pg_catalog.||) '.'
                           OPERATOR(pg_catalog.||) t.typname::text OPERATOR(pg_catalog.||) ' (its check "'
                           OPERATOR(pg_catalog.||) c.conname::text OPERATOR(pg_catalog.||) '")' AS label
                    FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) c.contypid
                    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) t.typnamespace
                    WHERE c.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[])""",
}

_catalog_oids: dict[str, int] = {}


def _oids() -> dict[str, int]:
    if not _catalog_oids:
        names = [_PROC, _OPERATOR, _TYPE, _CLASS, _REWRITE, _POLICY, _CONSTRAINT]
        _catalog_oids.update({r["relname"]: int(r["oid"]) for r in spi.execute(_CATALOGS, [names])})
    return _catalog_oids


class _Rollback(Exception):
    pass


def check(sql: str) -> None:
    """Raise (``sqlml.data.trust.judge``) if ``sql`` can run a function the caller may not run
    from a relation; plans and reads nothing."""
    caller = spi.execute("SELECT current_user::text AS u")[0]["u"]
    setting = spi.execute("SELECT pg_catalog.current_setting($1::pg_catalog.text, true) AS s", [trust.SETTING])[0]["s"]
    error = trust.judge(functions(sql), caller, trust.parse_trusted_schemas(setting))
    if error is not None:
        raise error


def functions(sql: str) -> list[trust.Function]:
    """The functions ``sql`` can run, nearest first, each with the path that reaches it."""
    view = f"sqlml_reach_{secrets.token_hex(8)}"
    found = None
    try:
        with plpy.subtransaction():
            try:
                plpy.execute(f"CREATE TEMPORARY VIEW {view} AS SELECT 1 AS one FROM ({sql}) AS src")
            except plpy.SPIError as e:
                if getattr(e, "sqlstate", None) == INSUFFICIENT_PRIVILEGE and "temporary" in str(e):
                    raise SqlmlError("sqlml checks what a relation runs through a temporary view, and this role may "
                                     "not create temporary objects", sqlstate=INSUFFICIENT_PRIVILEGE,
                                     hint="GRANT TEMPORARY ON DATABASE to the role") from None
                raise
            found = _walk(view)
            raise _Rollback
    except _Rollback:
        pass
    return found


def _walk(view: str) -> list[trust.Function]:
    cat = _oids()
    by_oid = {v: k for k, v in cat.items()}
    rule = spi.execute("SELECT r.oid::int8 AS oid FROM pg_catalog.pg_rewrite r WHERE r.ev_class OPERATOR(pg_catalog.=) "
                       "pg_catalog.to_regclass($1::pg_catalog.text)::pg_catalog.oid", [f"pg_temp.{view}"])[0]["oid"]
    root = (_REWRITE, int(rule))
    parent = {root: None}
    level = [root]
    while level:
        batch = {name: [o for c, o in level if c == name] for name in (_REWRITE, _POLICY, _CONSTRAINT, _CLASS, _OPERATOR, _PROC, _TYPE)}
        rows = spi.execute(_EDGES, [
            batch[_REWRITE], batch[_POLICY], batch[_CONSTRAINT], batch[_CLASS], batch[_OPERATOR], batch[_PROC], batch[_TYPE],
            cat[_REWRITE], cat[_POLICY], cat[_CONSTRAINT], [cat[_PROC], cat[_OPERATOR], cat[_TYPE], cat[_CLASS]],
            cat[_CLASS], cat[_OPERATOR], cat[_PROC], cat[_TYPE]])
        nxt = []
        for r in rows:
            child = (by_oid.get(int(r["ccls"])), int(r["coid"]))
            if child[0] is None or child in parent:
                continue
            parent[child] = (by_oid[int(r["pcls"])], int(r["poid"]))
            nxt.append(child)
        level = nxt
    procs = {int(r["oid"]): r for r in spi.execute(_FUNCTIONS, [[o for c, o in parent if c == _PROC]])}
    labels = {}
    for catalog, sql in _LABELS.items():
        oids = [o for c, o in parent if c == catalog]
        if oids:
            labels.update({(catalog, int(r["oid"])): r["label"] for r in spi.execute(sql, [oids])})
    for oid, p in procs.items():
        if p["kind"] == "a":
            labels[(_PROC, oid)] = f"aggregate {p['schema']}.{p['name']}"
    out = []
    for node in parent:  # insertion order: breadth first, so nearest first
        p = procs.get(node[1]) if node[0] == _PROC else None
        if p is None or p["kind"] == "a":
            continue
        path, step = [], parent[node]
        while step is not None and step != root:
            if step in labels:
                path.append(labels[step])
            step = parent[step]
        out.append(trust.Function(p["schema"], p["name"], p["owner"], bool(p["superuser"]), bool(p["volatile"]),
                                  tuple(reversed(path))))
    return out

