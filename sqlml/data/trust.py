"""Which code a relation may make the caller run: the judgement, from catalog rows (pure).

Reading a relation runs more than the functions its text names: operators run their functions,
aggregates their support functions, a cast its function, a domain its CHECK constraints, a view
everything its query does, a table with row-level security its policies. All of it runs as the
caller, with the caller's rights: a role that can create functions, operators, types and views can
plant a function that a more privileged role (an admin, a scheduled retraining) then runs by
training or scoring on a relation the planter suggested. PostgreSQL's advice for this
(CVE-2018-1058, "Usage Patterns" in the schemas chapter) is to run only code owned by roles one
trusts. The server (``sqlml.server.reach``) finds every function a query can reach from
PostgreSQL's own analysis of it (the expression tree of a temporary view over it, followed through
operators, aggregates, domains, views and policies); this module reads those trees and decides.

The rule, for every function reached, and every aggregate, domain, view and table under
row-level security (their owners decide what they run, and could change it between the check and
the read):
- its owner is the caller, or a superuser (built-ins, extensions), or it lives in a schema the
  caller's ``sqlml.trusted_schemas`` setting names; else it is refused with SQLSTATE 42501;
- it is not VOLATILE (a volatile function may change data, take session locks or reach outside
  the database), except the few in ``ALLOWED_VOLATILE`` that only draw random numbers or read the
  clock; else it is refused with SQLSTATE 2F002 (modifying SQL data not permitted), whoever owns it.
A function the caller trusts may still call others: that is its owner's responsibility, as it is
in PostgreSQL. The message names the path by which the function was reached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlml.errors import INSUFFICIENT_PRIVILEGE, MODIFYING_SQL_DATA_NOT_PERMITTED, SqlmlError

# VOLATILE built-ins that change nothing outside the statement: random numbers, the clock.
ALLOWED_VOLATILE = frozenset({
    ("pg_catalog", "random"), ("pg_catalog", "clock_timestamp"), ("pg_catalog", "timeofday"),
    ("pg_catalog", "gen_random_uuid"), ("pg_catalog", "setseed"),
})
# allowed in any schema (where an extension puts it), if a superuser owns it
ALLOWED_VOLATILE_EXTENSION = frozenset({"uuid_generate_v4"})

SETTING = "sqlml.trusted_schemas"

# What a stored expression (pg_node_tree: a view's rule, a policy, a domain's CHECK) refers to, by
# node field. pg_depend is not enough: it never records built-in (pinned) objects, so a view
# calling pg_advisory_lock() or nextval() would show nothing there.
PROC, OPERATOR, TYPE, RELATION = "function", "operator", "type", "relation"
_FIELDS = {
    "funcid": PROC, "hashfuncid": PROC, "negfuncid": PROC, "aggfnoid": PROC, "winfnoid": PROC,
    "opno": OPERATOR, "eqop": OPERATOR, "sortop": OPERATOR,
    "resulttype": TYPE, "consttype": TYPE, "funcresulttype": TYPE, "typeId": TYPE,
    "relid": RELATION,
}
# (an operator's ':opfuncid' is left to its ':opno', so that a path names the operator)
# ' :field 123'; ':opnos (o 1 2)' lists the operators of a row comparison. A name or alias that
# spells a field (its spaces are escaped, but a match costs only a needless check) adds, never hides.
_SCALAR = re.compile(r" :(" + "|".join(_FIELDS) + r") (\d+)")
_OPNOS = re.compile(r" :opnos \(o ([\d ]*)\)")


def references(node_tree: str | None) -> dict[str, set[int]]:
    """{kind: oids} of the functions, operators, types and relations an expression refers to."""
    out = {PROC: set(), OPERATOR: set(), TYPE: set(), RELATION: set()}
    if not node_tree:
        return out
    for field, oid in _SCALAR.findall(node_tree):
        if int(oid):
            out[_FIELDS[field]].add(int(oid))
    for oids in _OPNOS.findall(node_tree):
        out[OPERATOR].update(int(o) for o in oids.split())
    return out


FUNCTION, AGGREGATE, DOMAIN, VIEW, TABLE = "function", "aggregate", "domain", "view", "table"
_VERBS = {DOMAIN: "uses", VIEW: "reads", TABLE: "reads"}  # else "calls"


@dataclass(frozen=True)
class Function:
    """A function (or an aggregate, domain, view, table with policies) a query can run, and how it
    was reached.

    ``path``: labels of what led to it, outermost first (``view public.v``,
    ``operator x.===(integer,integer)``...); empty when the query calls it itself."""

    schema: str
    name: str  # a function's with its argument types: "evil(integer)"
    owner: str
    owner_is_superuser: bool
    volatile: bool
    path: tuple[str, ...] = ()
    kind: str = FUNCTION

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}" if self.kind == FUNCTION else f"{self.kind} {self.schema}.{self.name}"

    def route(self) -> str:
        steps = (*self.path, self.qualified)
        verb = _VERBS.get(self.kind, "calls")
        return " calls ".join(steps) if self.path else f"the relation {verb} {self.qualified}"


def reached(parent: dict, labels: dict, procs: dict, owned: dict) -> list[Function]:
    """What a walk reached that runs code, nearest first, each with its path.

    ``parent``: node -> the node it was reached from (None for the root), in breadth-first order;
    a node is (kind, oid). ``labels``: node -> how a path names it (operators, policies, domain
    constraints); the others are named from their rows. ``procs``: function oid -> its catalog row
    (kind, schema, name, owner, superuser, volatile); ``owned``: node -> (kind: domain, view or
    table; schema, name, owner, superuser) of the domains, views and tables under row-level security."""
    labels = {**labels,
              **{(PROC, oid): f"aggregate {p['schema']}.{p['name']}" for oid, p in procs.items() if p["kind"] == "a"},
              **{node: f"{o['kind']} {o['schema']}.{o['name']}" for node, o in owned.items()}}
    out = []
    for node in parent:
        row = procs.get(node[1]) if node[0] == PROC else owned.get(node)
        if row is None and node[0] == PROC:  # not in the snapshot the walk reads: refused, never skipped
            row = {"kind": "f", "schema": "?", "name": f"function {node[1]} (not in this transaction's snapshot)",
                   "owner": "?", "superuser": False, "volatile": True}
        if row is None:
            continue
        kind = row["kind"] if node[0] != PROC else AGGREGATE if row["kind"] == "a" else FUNCTION
        path, step = [], parent[node]
        while step is not None:
            if step in labels:
                path.append(labels[step])
            step = parent[step]
        out.append(Function(row["schema"], row["name"], row["owner"], bool(row["superuser"]),
                            kind == FUNCTION and bool(row["volatile"]), tuple(reversed(path)), kind))
    return out


def parse_trusted_schemas(setting: str | None) -> frozenset[str]:
    """The schema names of a ``sqlml.trusted_schemas`` value: comma-separated, unquoted names are
    folded to lower case and double-quoted ones kept as written (like search_path)."""
    names = set()
    for part in _split(setting or ""):
        part = part.strip()
        if part.startswith('"') and part.endswith('"') and len(part) >= 2:
            names.add(part[1:-1].replace('""', '"'))
        elif part:
            names.add(part.lower())
    return frozenset(names)


def _split(text: str) -> list[str]:
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _setting_item(schema: str) -> str:
    """``schema`` as written in the setting, inside a SQL string literal."""
    item = schema if schema.isidentifier() and schema == schema.lower() else '"' + schema.replace('"', '""') + '"'
    return item.replace("'", "''")


def trusted(fn: Function, caller: str, trusted_schemas: frozenset[str]) -> bool:
    return fn.owner == caller or fn.owner_is_superuser or fn.schema in trusted_schemas


def volatile_allowed(fn: Function) -> bool:
    if (fn.schema, fn.name.split("(", 1)[0]) in ALLOWED_VOLATILE:
        return True
    return fn.owner_is_superuser and fn.name.split("(", 1)[0] in ALLOWED_VOLATILE_EXTENSION


def judge(functions: list[Function], caller: str, trusted_schemas: frozenset[str]) -> SqlmlError | None:
    """The error for the first function (in the order given: nearest first) that may not run, or None."""
    for fn in functions:
        if not trusted(fn, caller, trusted_schemas):
            return SqlmlError(
                f'{fn.route()}, owned by role "{fn.owner}", which you do not trust: refused before reading any row',
                sqlstate=INSUFFICIENT_PRIVILEGE,
                detail=f'sqlml runs only functions owned by you ("{caller}") or by a superuser, or in a schema '
                       f"listed in {SETTING}",
                hint=f'if the schema "{fn.schema}" is safe, a DBA can trust it: ALTER ROLE "{caller}" SET '
                     f"{SETTING} = '{_setting_item(fn.schema)}'; else leave the function out of the relation")
        if fn.volatile and not volatile_allowed(fn):
            return SqlmlError(
                f"{fn.route()}, which is VOLATILE: refused before reading any row",
                sqlstate=MODIFYING_SQL_DATA_NOT_PERMITTED,
                detail="a volatile function may change data, take session locks or act outside the database; "
                       "a relation may only read (random(), clock_timestamp(), timeofday(), gen_random_uuid(), "
                       "setseed() and uuid_generate_v4() are allowed)",
                hint="mark the function STABLE if it only reads, or leave it out of the relation")
    return None
