"""sqlml.data.blank_strings: a query's string constants as NULLs of type unknown (pure, no database).

Whether PostgreSQL then types them as it typed the constants is tested against a real server in
test_hostile (test_a_domain_inside_a_range_row_or_array_is_judged)."""

from __future__ import annotations

import pytest

from sqlml.data.blank_strings import NULL, blanked
from sqlml.errors import SqlmlError

N = NULL

CASES = [
    # (query, blanked)
    ("SELECT 1 AS a", "SELECT 1 AS a"),
    ("SELECT a FROM t WHERE b = 'x'", f"SELECT a FROM t WHERE b = {N}"),
    ("SELECT 'it''s', ''", f"SELECT {N}, {N}"),
    (r"SELECT E'it\'s', e'\\', 'a\'", f"SELECT {N}, {N}, {N}"),  # backslashes escape in E'' only
    ("SELECT U&'d\\0061t', N'x'", f"SELECT {N}, {N}"),
    ("SELECT U&'d!0061t' UESCAPE '!' AS a", f"SELECT {N} AS a"),
    ("SELECT XMLPARSE(DOCUMENT '<a/>')", f"SELECT XMLPARSE(DOCUMENT {N})"),
    ("SELECT $$it's$$, $q$a$$b$q$", f"SELECT {N}, {N}"),
    ("SELECT $1, a$b FROM t", "SELECT $1, a$b FROM t"),  # a parameter, a name with a dollar
    ("SELECT B'101', x'1f'", "SELECT B'101', x'1f'"),  # bit strings: typed, read by bit's input
    ("SELECT INTERVAL '1 day'", "SELECT INTERVAL '1 day'"),
    ("SELECT EXTRACT('year' FROM d), f('year')", f"SELECT EXTRACT('year' FROM d), f({N})"),
    ("SELECT '{1}'::s.d[], CAST('[1,2]' AS s.r)", f"SELECT {N}::s.d[], CAST({N} AS s.r)"),
    ("SELECT x OPERATOR(pg_catalog.=) 'v'", f"SELECT x OPERATOR(pg_catalog.=) {N}"),
    ("SELECT a FROM t WHERE b LIKE 'x%' ESCAPE '!' AND c AT TIME ZONE 'UTC' IS NOT NULL",
     f"SELECT a FROM t WHERE b LIKE {N} ESCAPE {N} AND c AT TIME ZONE {N} IS NOT NULL"),
    ("SELECT CASE WHEN a THEN 'y' ELSE 'n' END, b IN ('p', 'q'), c IS DISTINCT FROM 'r'",
     f"SELECT CASE WHEN a THEN {N} ELSE {N} END, b IN ({N}, {N}), c IS DISTINCT FROM {N}"),
    ("SELECT 'a'\n'b'", f"SELECT {N}\n"),  # one constant continued on the next line
    ("SELECT \"it's\" FROM t -- it's\nWHERE a = 'q' /* it's /* nested */ */",
     f"SELECT \"it's\" FROM t \nWHERE a = {N}  "),
    ("SELECT a/**/b", "SELECT a b"),
]


@pytest.mark.parametrize("sql, expected", CASES)
def test_blanked(sql, expected):
    assert blanked(sql) == expected


REFUSED = [
    # (query, what the error says)
    ("SELECT mytype 'x'", "after its type's name"),  # a type named before its constant
    ("SELECT s.r '[1,2]'", "after its type's name"),
    ("SELECT char(3) 'ab'", "after its type's name"),
    ("SELECT s.interval '(7)'", "after its type's name"),  # a type named interval, not the keyword
    ("SELECT s.uescape '(8)'", "after its type's name"),
    ('SELECT "my type" \'x\'', "after its type's name"),
    ("SELECT 'x", "unterminated"),
    ("SELECT $a$x", "unterminated"),
    ("SELECT 1 /* open", "unterminated"),
]


@pytest.mark.parametrize("sql, message", REFUSED)
def test_refused(sql, message):
    with pytest.raises(SqlmlError, match=message) as e:
        blanked(sql)
    assert e.value.sqlstate in ("0A000", "42601")
