"""A query's string constants as NULLs, for an analysis that runs no input function (pure).

PostgreSQL's parse analysis turns a string constant into a value of the type the context gives it
by calling that type's input function. For an array, a range, a multirange or a row, the input
function reads each element with the element type's own: a domain's CHECK runs right there,
during analysis, before anything could judge it (``'{1}'::their_domain[]``, or a literal compared
with a column whose type is a range over such a domain). A NULL constant gets the same type by the
same rules (both are constants of type unknown until the context decides) and calls nothing
(written ``NULL::pg_catalog.unknown``: a bare NULL is SQL's, which some forms treat apart). So the
server analyses the blanked query first, judges what that analysis reaches (every constant's type,
followed to its elements and domains), and analyses the query itself only then.

Lexing follows PostgreSQL's (standard_conforming_strings on): comments, quoted identifiers,
``'...'`` with ``''``, ``E'...'`` with backslash escapes, ``U&'...'``, ``N'...'`` and dollar quotes
are blanked; bit strings (``B'...'``, ``X'...'``: typed, read by bit's own input) are kept, and so
is ``INTERVAL '...'``. A constant after a type name (``mytype '...'``, ``char(3) '...'``) cannot
become NULL there: it is refused, with the CAST form to use instead.
"""

from __future__ import annotations

import re

from sqlml.errors import FEATURE_NOT_SUPPORTED, SYNTAX_ERROR, SqlmlError

_WORD = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_DOLLAR = re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
# words after which a string constant is an expression's operand, not a typed literal's text
_BEFORE_OPERAND = frozenset("""
    select where and or not when then else case like ilike to escape by on having distinct between symmetric
    asymmetric limit offset zone placing from for leading trailing both overlaps in is all any some values
    returning using with as interval uescape first next similar document content version
""".split())
_KEPT_AFTER = frozenset({"interval", "uescape"})  # builtin readers, no element type: left as they are


def blanked(sql: str) -> str:
    """``sql`` with each string constant replaced by ``NULL`` and its comments by a space.

    >>> blanked("SELECT a FROM t WHERE b = 'x''y' AND c = INTERVAL '1 day'")
    "SELECT a FROM t WHERE b = NULL::pg_catalog.unknown AND c = INTERVAL '1 day'"
    """
    out, i, n = [], 0, len(sql)
    last = ""  # the previous significant token: a word in lower case, or one of the markers below
    opened = []  # per open parenthesis, the token before it (")" after OPERATOR(...) ends an operator)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif sql.startswith("/*", i):
            i = _comment_end(sql, i)
            out.append(" ")  # a comment separates tokens
        elif c == '"':
            end = _quoted_end(sql, i, '"')
            out.append(sql[i:end])
            i, last = end, _IDENT
        elif c == "'" or c == "$" and _DOLLAR.match(sql, i) or _prefixed(sql, i):
            end = _constant_end(sql, i)
            if sql[i] in "uU" and (escape := _UESCAPE.match(sql, end)):  # U&'...' UESCAPE '!': one constant
                end = escape.end()
            field = last == "(" and opened and opened[-1] == "extract"  # EXTRACT('year' FROM ...): a field name
            out.append(sql[i:end] if _bits(sql, i) or field else _operand(sql[i:end], last))
            i, last = end, _CONSTANT
        elif (word := _WORD.match(sql, i) or _PARAM.match(sql, i)) is not None:
            out.append(word.group())
            qualified = last == "."  # s.interval is a name, not the keyword
            i, last = word.end(), word.group().lower() if c != "$" else _PARAM_MARK
            if qualified and last in _KEPT_AFTER:
                last = _IDENT
        else:
            if c == "(":
                opened.append(last)
                last = c
            elif c == ")":
                last = _OPERATOR_END if opened and opened.pop() == "operator" else _CLOSE
            elif not c.isspace():
                last = c
            out.append(c)
            i += 1
    return "".join(out)


# a constant NULL of type unknown, as a string constant is: a bare NULL would be taken for SQL's NULL
# (x IS DISTINCT FROM NULL becomes x IS NOT NULL, and no constant of x's type is left to judge)
NULL = "NULL::pg_catalog.unknown"
_IDENT, _CONSTANT, _PARAM_MARK, _CLOSE, _OPERATOR_END = "<ident>", "<constant>", "<param>", "<)>", "<operator)>"
_PARAM = re.compile(r"\$\d+")
_UESCAPE = re.compile(r"\s*uescape\s*'[^']'", re.IGNORECASE)


def _prefixed(sql: str, i: int) -> bool:
    """Whether a prefixed constant (E'', N'', B'', X'', U&'') starts at ``i``."""
    if i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$"):
        return False
    head = sql[i:i + 3].lower()
    return head[:2] in ("e'", "n'", "b'", "x'") or head == "u&'"


def _bits(sql: str, i: int) -> bool:
    return sql[i:i + 2].lower() in ("b'", "x'")


def _constant_end(sql: str, i: int) -> int:
    if sql[i] == "$":
        tag = _DOLLAR.match(sql, i).group()
        close = sql.find(tag, i + len(tag))
        if close < 0:
            raise _unterminated()
        return close + len(tag)
    quote = sql.index("'", i)
    return _quoted_end(sql, quote, "'", backslashes=sql[i] in "eE")


def _operand(literal: str, before: str) -> str:
    """NULL in place of ``literal``, unless the token before it makes it a typed literal's text."""
    if before in _KEPT_AFTER:
        return literal
    if before == _CONSTANT:  # 'a'<newline>'b' is one constant: its NULL is already there
        return ""
    typed = before in (_IDENT, _CLOSE, _PARAM_MARK) or (before[:1].isalpha() and before not in _BEFORE_OPERAND)
    if typed:
        raise SqlmlError(f"sqlml cannot check a constant written after its type's name ({literal[:40]})",
                         sqlstate=FEATURE_NOT_SUPPORTED, hint="write it as CAST('...' AS type) or '...'::type")
    return NULL


def _quoted_end(sql: str, start: int, quote: str, backslashes: bool = False) -> int:
    """The index after the constant or identifier opened by ``sql[start]`` (a doubled quote stays inside)."""
    i, n = start + 1, len(sql)
    while i < n:
        if backslashes and sql[i] == "\\":
            i += 2
            continue
        if sql[i] == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise _unterminated()


def _comment_end(sql: str, start: int) -> int:
    depth, i, n = 0, start, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise _unterminated()


def _unterminated() -> SqlmlError:
    return SqlmlError("the query has an unterminated quoted string, identifier or comment", sqlstate=SYNTAX_ERROR,
                      hint="close every quote and comment")
