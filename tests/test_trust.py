"""Which reached functions a relation may run (``sqlml.data.trust``): pure, a table of cases."""

from __future__ import annotations

import pytest

from sqlml.data.trust import Function, judge, parse_trusted_schemas, references

CALLER = "alice"


def fn(schema="x", name="f(integer)", owner="mallory", superuser=False, volatile=False, path=()):
    return Function(schema, name, owner, superuser, volatile, tuple(path))


# (case, functions reached (nearest first), trusted schemas, expected SQLSTATE or None, message fragment)
CASES = [
    ("built-in, immutable", [fn("pg_catalog", "abs(integer)", "postgres", True)], "", None, ""),
    ("the caller's own function", [fn(owner=CALLER)], "", None, ""),
    ("a superuser's function in any schema", [fn(owner="dba", superuser=True)], "", None, ""),
    ("an untrusted owner", [fn()], "", "42501", 'the relation calls x.f(integer), owned by role "mallory"'),
    ("an untrusted owner in a trusted schema", [fn()], "x", None, ""),
    ("trusted schemas are a list", [fn()], "a, x ,b", None, ""),
    ("unquoted names fold to lower case", [fn(schema="x")], "X", None, ""),
    ("a quoted name keeps its case", [fn(schema="X")], '"X"', None, ""),
    ("a quoted name with a comma", [fn(schema="a,b")], '"a,b"', None, ""),
    ("a different quoted case is another schema", [fn(schema="x")], '"X"', "42501", "which you do not trust"),
    ("a role named like the caller's prefix", [fn(owner=CALLER + "x")], "", "42501", f'role "{CALLER}x"'),
    ("through an operator", [fn(path=["operator x.===(integer, integer)"])], "", "42501",
     "operator x.===(integer, integer) calls x.f(integer)"),
    ("through a view and a domain", [fn(path=["view public.v", 'domain x.d (its check "c")'])], "", "42501",
     'view public.v calls domain x.d (its check "c") calls x.f(integer)'),
    ("volatile, the caller's own", [fn(owner=CALLER, volatile=True)], "", "2F002", "which is VOLATILE"),
    ("volatile built-in", [fn("pg_catalog", "pg_advisory_lock(bigint)", "postgres", True, True)], "", "2F002",
     "the relation calls pg_catalog.pg_advisory_lock(bigint), which is VOLATILE"),
    ("volatile in a trusted schema", [fn(volatile=True)], "x", "2F002", "VOLATILE"),
    ("random() is allowed", [fn("pg_catalog", "random()", "postgres", True, True)], "", None, ""),
    ("random() elsewhere is not", [fn("x", "random()", CALLER, False, True)], "", "2F002", "x.random()"),
    ("uuid_generate_v4 of an extension", [fn("public", "uuid_generate_v4()", "postgres", True, True)], "", None, ""),
    ("uuid_generate_v4 of a user", [fn("public", "uuid_generate_v4()", CALLER, False, True)], "", "2F002", "VOLATILE"),
    ("the nearest refusal is reported", [fn(owner=CALLER), fn(name="g()", volatile=True, owner=CALLER), fn(name="h()")],
     "", "2F002", "x.g()"),
]


@pytest.mark.parametrize("case, functions, schemas, sqlstate, fragment", CASES, ids=[c[0] for c in CASES])
def test_judge(case, functions, schemas, sqlstate, fragment):
    error = judge(functions, CALLER, parse_trusted_schemas(schemas))
    if sqlstate is None:
        assert error is None, error and error.message
    else:
        assert error is not None and error.sqlstate == sqlstate, error and error.message
        assert fragment in error.message, error.message
        assert "refused before reading any row" in error.message and error.hint


def test_an_untrusted_refusal_says_how_to_trust_the_schema():
    error = judge([fn(schema="lab")], CALLER, frozenset())
    assert "sqlml.trusted_schemas = 'lab'" in error.hint and f'"{CALLER}"' in error.detail


def test_empty_or_missing_setting_trusts_no_schema():
    assert parse_trusted_schemas(None) == frozenset() == parse_trusted_schemas("") == parse_trusted_schemas(" , ")


def test_references_read_every_kind_from_a_stored_expression():
    tree = (r"({QUERY :rtable ({RANGETBLENTRY :rtekind 0 :relid 16942 :relkind r}) :targetList ({TARGETENTRY :expr "
            r"{FUNCEXPR :funcid 1574 :funcresulttype 20 :args ({CONST :consttype 2205})} :resname n} "
            r"{TARGETENTRY :expr "
            r"{OPEXPR :opno 16929 :opfuncid 16927 :opresulttype 16} :resname o} {TARGETENTRY :expr {COERCETODOMAIN "
            r":resulttype 16931} :resname dd} {AGGREF :aggfnoid 2111} {ROWCOMPAREEXPR :rctype 1 :opnos (o 97 521)} "
            r"{SORTGROUPCLAUSE :tleSortGroupRef 1 :eqop 670 :sortop 672} {WINDOWFUNC :winfnoid 3100}))")
    refs = references(tree)
    assert refs == {"function": {1574, 2111, 3100}, "operator": {16929, 97, 521, 670, 672},
                    "type": {20, 2205, 16931}, "relation": {16942}}


def test_a_name_that_spells_a_field_adds_a_check_and_hides_nothing():
    # a column alias "x :funcid 99" is written with escaped spaces; a match would only add a check
    refs = references(r"{TARGETENTRY :expr {FUNCEXPR :funcid 1574} :resname x\ :funcid\ 99}")
    assert 1574 in refs["function"]
    empty = {"function": set(), "operator": set(), "type": set(), "relation": set()}
    assert references(None) == references("") == empty


def test_reached_names_each_function_by_its_path_nearest_first():
    from sqlml.data.trust import reached

    root = ("root", 0)
    parent = {root: None, ("relation", 10): root, ("function", 1): root, ("rule", 11): ("relation", 10),
              ("operator", 20): ("rule", 11), ("function", 2): ("operator", 20), ("function", 3): ("rule", 11),
              ("function", 4): ("function", 3)}
    labels = {("operator", 20): "operator x.===(integer, integer)"}
    row = {"kind": "f", "schema": "x", "owner": "mallory", "superuser": False, "volatile": False}
    procs = {1: {**row, "name": "direct()"}, 2: {**row, "name": "evil(integer, integer)"},
             3: {**row, "kind": "a", "name": "total(double precision)"}, 4: {**row, "name": "step(double precision)"}}
    parent[("type", 30)] = ("rule", 11)
    parent[("constraint", 31)] = ("type", 30)
    parent[("function", 5)] = ("constraint", 31)
    labels[("constraint", 31)] = 'its check "positive"'
    procs[5] = {**row, "name": "positive(integer)", "owner": "postgres", "superuser": True}
    owned = {("type", 30): {"kind": "domain", "schema": "x", "name": "d", "owner": "postgres", "superuser": True},
             ("relation", 10): {"kind": "view", "schema": "x", "name": "v", "owner": CALLER, "superuser": False}}
    found = reached(parent, labels, procs, owned)
    assert [f.route() for f in found] == [
        "the relation reads view x.v", "the relation calls x.direct()",
        "view x.v calls operator x.===(integer, integer) calls x.evil(integer, integer)",
        "view x.v calls aggregate x.total(double precision)",
        "view x.v calls aggregate x.total(double precision) calls x.step(double precision)",
        "view x.v calls domain x.d",
        'view x.v calls domain x.d calls its check "positive" calls x.positive(integer)']
    assert [f.kind for f in found] == ["view", "function", "function", "aggregate", "function", "domain", "function"]
    error = judge(found[3:4], CALLER, frozenset())  # an untrusted aggregate is refused itself: it can change
    assert error.sqlstate == "42501" and "aggregate x.total(double precision), owned by" in error.message
