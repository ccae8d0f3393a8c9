"""PostgreSQL's text form of a row (``record_out``: what ``t::text`` gives) split into its fields.

``sqlml.predict('p', t)`` hands the row to Python as this text, not as jsonb: building jsonb and
turning it into a dict of Decimals cost ~18 us per 20-column row, the text ~3 us (measured).

The format: ``(f1,f2,...)``; a NULL field is empty; a value is double-quoted when it is empty or
contains a quote, a backslash, a comma, a parenthesis or white space, and inside quotes ``"`` and
``\\`` are doubled. Values are each column type's text output (numbers exactly as ``float()``
reads them, booleans ``t``/``f``, dates in the session's DateStyle).
"""

from __future__ import annotations

from sqlml.errors import INVALID_TEXT_REPRESENTATION, SqlmlError


def split(text: str) -> list:
    """The fields of a row's text, None for NULL."""
    body = text[1:-1]
    if '"' not in body:  # nothing quoted: commas only separate
        return [f if f else None for f in body.split(",")]
    return _split_quoted(body)


def _split_quoted(body: str) -> list:
    fields, i, n = [], 0, len(body)
    while True:
        if i < n and body[i] == '"':
            chars, i = [], i + 1
            while True:
                if i >= n or (body[i] == "\\" and i + 1 >= n):  # written by hand: PostgreSQL closes its quotes
                    raise SqlmlError("a row's text has a quoted field that does not end",
                                     sqlstate=INVALID_TEXT_REPRESENTATION,
                                     hint="pass the row itself: sqlml.predict('project', t) FROM t")
                c = body[i]
                if c == "\\" or (c == '"' and i + 1 < n and body[i + 1] == '"'):
                    chars.append(body[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            fields.append("".join(chars))
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            fields.append(body[i:j] or None)
            i = j
        if i >= n:
            return fields
        i += 1  # the comma
        if i == n:
            fields.append(None)
            return fields
