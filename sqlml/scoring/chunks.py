"""SQL that reads a relation for batch scoring a chunk of rows at a time (pure: builds and decodes).

Tables (and materialized views) are read a chunk (~16k rows) at a time, so memory holds one chunk
whatever the table's size. Two forms:

- ``rows_query``: the rows as they are (the id, then a float8 per number, a text per category),
  for ``pg_internals.RowCursor``'s compiled receiver: one cursor, so one plan and one snapshot, read
  ``rows_per_chunk`` rows at a time;
- ``table_query`` / ``matrix_query``: a chunk per range of pages (a TID range scan, the last one
  open-ended), every chunk in one statement, so one snapshot, fetched one row (= one chunk) at a
  time through a cursor, its columns aggregated (numbers as one float8 bytea per column, decoded
  by ``np.frombuffer``)::

    SELECT agg.* FROM generate_series(0, <blocks - 1>, <step>) AS c(lo)
    CROSS JOIN LATERAL (SELECT count(*) AS n, <one aggregate per column> FROM
        (SELECT <columns> FROM <table> WHERE ctid >= '(lo,0)' AND ctid < '(lo + step,0)') AS src) AS agg

Anything else (a view, a query, a partitioned or foreign table) is read whole, columnar, like
training data (``sqlml.server.batch``), and only scored in chunks of CHUNK_ROWS.

``pack_float32`` / ``unpack_sql`` carry the scores back to PostgreSQL as exact int8s.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np

from sqlml.data.ingest import NAN8, column_aggregate, decode, quote_ident
from sqlml.data.schema import BOOLEAN, CATEGORY, FLOAT32_MAX, NULL_CATEGORY, NUMERIC, Feature
from sqlml.data.values import out_of_range
from sqlml.errors import NOT_NULL_VIOLATION, SqlmlError

# Rows a chunk holds: small enough that the overlap fills and drains fast (score of 100k rows, best of
# 5: 0.195 s at 32768 rows a chunk, 0.182 s at 16384, 0.177 s at 8192). Each chunk's write is a
# subtransaction with an XID, and beyond 64 of them in one transaction every snapshot taken
# meanwhile, in any session, reads pg_subtrans: a large table's chunks grow to stay under SUBXIDS of
# them, up to MAX_CHUNK_ROWS (three chunks are held at once, within sqlml.memory_per_job's 256 MB
# floor: past ~3M rows the snapshots overflow, as they did past 2M with 32,768 rows a chunk).
CHUNK_ROWS = 16384
MAX_CHUNK_ROWS = 65536
SUBXIDS = 48
LAST_BLOCK = 4294967294  # the largest block number a tid can hold


def rows_per_chunk(rows_per_page: float | None, pages: int) -> int:
    """A chunk's rows for a table of ``pages`` pages (``rows_per_page`` from the statistics, or a
    guess): CHUNK_ROWS, more for a large table (see SUBXIDS)."""
    per_page = max(rows_per_page or 60.0, 1.0)
    return int(min(MAX_CHUNK_ROWS, max(CHUNK_ROWS, per_page * pages / SUBXIDS)))


def pages_per_chunk(rows_per_page: float | None, pages: int = 0) -> int:
    """Pages that hold ``rows_per_chunk``'s rows."""
    return max(1, int(rows_per_chunk(rows_per_page, pages) / max(rows_per_page or 60.0, 1.0)))


INTEGER_IDS = {"int2", "int4", "int8"}


def table_query(table: str, features: list[Feature], id_column: str, id_type: str, blocks: int, step: int) -> str:
    """The chunked read of ``table`` (already quoted and qualified).

    Result columns per chunk: n, c0.. (features, as ``sqlml.data.ingest`` aggregates them), id (int8
    big-endian bytes when ``id_type`` is an integer type, else a text[])."""
    columns = [f"{column_aggregate(f.kind, 'src.' + quote_ident(f.name), f.dim)} AS c{i}"
               for i, f in enumerate(features)]
    aggs = ["pg_catalog.count(*) AS n", *columns, f"{_ids_aggregate(id_column, id_type)} AS id"]
    return _by_ranges(table, [f.name for f in features] + [id_column], aggs, blocks, step)


def _by_ranges(table: str, names: list[str], aggs: list[str], blocks: int, step: int) -> str:
    """A row per range of ``step`` pages of ``table``: ``aggs`` over its rows' columns ``names``. Every
    type, function and operator named is pg_catalog's (a same-named one on the search_path, or a
    pg_temp type, would come first)."""
    tid = "pg_catalog.tid"
    lo = f"pg_catalog.format('(%s,0)', c.lo)::{tid}"
    end = f"c.lo OPERATOR(pg_catalog.+) {int(step)}"
    hi = f"CASE WHEN {end} OPERATOR(pg_catalog.>=) {int(blocks)} THEN '({LAST_BLOCK},0)'::{tid} " \
         f"ELSE pg_catalog.format('(%s,0)', {end})::{tid} END"
    columns = ", ".join(quote_ident(n) for n in dict.fromkeys(names))
    inner = f"SELECT {columns} FROM {table} WHERE ctid OPERATOR(pg_catalog.>=) {lo} " \
            f"AND ctid OPERATOR(pg_catalog.<) {hi}"
    return (f"SELECT agg.* FROM pg_catalog.generate_series(0, {max(int(blocks) - 1, 0)}, {int(step)}) AS c(lo) "
            f"CROSS JOIN LATERAL (SELECT {', '.join(aggs)} FROM ({inner}) AS src) AS agg")


def _ids_aggregate(id_column: str, id_type: str) -> str:
    """Integer ids as int8 big-endian bytes, others as a text[]."""
    key = "src." + quote_ident(id_column)
    if id_type in INTEGER_IDS:
        return f"pg_catalog.string_agg(pg_catalog.int8send({key}::pg_catalog.int8), ''::pg_catalog.bytea)"
    return f"pg_catalog.array_agg({key}::pg_catalog.text)"


SEPARATOR = "\x01"  # between a chunk's category values in one text: a character categories hardly ever hold


def matrix_query(table: str, features: list[Feature], columns: tuple, id_column: str, id_type: str, blocks: int,
                 step: int) -> str | None:
    """Like ``table_query``, but the chunks arrive ready for the model's core matrix: numbers as one
    float8 bytea per core column (``columns``: ``Scorer.row_columns``), and each category read as
    one text per chunk (its values joined by SEPARATOR, NULL as NULL_CATEGORY) for
    ``decode_matrix`` to look up in Python: a dictionary lookup there costs a fraction of a jsonb
    lookup per value in SQL. A value holding SEPARATOR arrives as a token no lookup table holds (so
    it scores as an unseen category, as it would have: SEPARATOR is in no known category). Result
    columns: n, m<j> (numbers, per core column), k<i> (categories, per feature read), id. None when
    some core column is not a number, a boolean or a looked-up category of the table, or a known
    category holds SEPARATOR."""
    kinds = {f.name: f.kind for f in features}
    numbers, texts, categories = [], {}, []
    for j, c in enumerate(columns):
        x = "src." + quote_ident(c.source)
        kind = kinds.get(c.source)
        if kind in (NUMERIC, BOOLEAN) and c.lut is None:
            # types named by schema: a pg_temp domain called float8 would come first
            numbers.append((j, f"{x}::pg_catalog.float8" if kind == NUMERIC
                            else f"{x}::pg_catalog.int4::pg_catalog.float8"))
        elif kind == CATEGORY and c.lut is not None:
            if any(SEPARATOR in k for k in c.lut):
                return None
            if c.source not in texts:
                texts[c.source] = len(texts)
                value = f"coalesce({x}::pg_catalog.text, {_literal(NULL_CATEGORY)})"
                categories.append(f"pg_catalog.string_agg(CASE WHEN pg_catalog.strpos({value}, pg_catalog.chr(1)) "
                                  f"OPERATOR(pg_catalog.>) 0 THEN {_literal(unseen(columns))} "
                                  f"ELSE {value} END, pg_catalog.chr(1)) AS k{texts[c.source]}")
        else:
            return None
    aggs = ["pg_catalog.count(*) AS n",
            *(f"pg_catalog.string_agg(coalesce(pg_catalog.float8send({x}), {NAN8}), ''::pg_catalog.bytea) AS m{j}"
              for j, x in numbers), *categories, f"{_ids_aggregate(id_column, id_type)} AS id"]
    return _by_ranges(table, [f.name for f in features] + [id_column], aggs, blocks, step)


@dataclass(frozen=True)
class RowsQuery:
    """A table's rows as ``pg_internals.RowCursor`` reads them. ``items``: the select list, attribute
    0 the id (int8), then one per feature read: a number or boolean as float8, a category as text.
    ``columns``: per core column, (its attribute, whether it is a looked-up text)."""

    table: str
    items: tuple
    columns: tuple

    @property
    def sql(self) -> str:
        return f"SELECT {', '.join(self.items)} FROM {self.table} AS src"


def rows_query(table: str, features: list[Feature], columns: tuple, id_column: str) -> RowsQuery | None:
    """The ``RowsQuery`` of ``table`` (quoted and qualified) for the core ``columns``; None when some
    core column is not a number, a boolean or a looked-up category of the table (as
    ``matrix_query``). Every type named is pg_catalog's: the casts fix the Datums' types the
    compiled reader takes them for (a no-op where the column has that type already)."""
    kinds = {f.name: f.kind for f in features}
    items, attribute, found = [f"src.{quote_ident(id_column)}::pg_catalog.int8"], {}, []
    for c in columns:
        x = "src." + quote_ident(c.source)
        kind = kinds.get(c.source)
        if kind in (NUMERIC, BOOLEAN) and c.lut is None:
            item = f"{x}::pg_catalog.float8" if kind == NUMERIC else f"{x}::pg_catalog.int4::pg_catalog.float8"
        elif kind == CATEGORY and c.lut is not None:
            item = f"{x}::pg_catalog.text"
        else:
            return None
        if c.source not in attribute:
            attribute[c.source] = len(items)
            items.append(item)
        found.append((attribute[c.source], c.lut is not None))
    return RowsQuery(table, tuple(items), tuple(found))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def unseen(columns: tuple) -> str:
    """A string no lookup table of ``columns`` holds (stands for a value holding SEPARATOR)."""
    token = "\x02"
    while any(c.lut is not None and token in c.lut for c in columns):
        token += "\x02"
    return token


def decode_matrix(row: dict, columns: tuple, id_type: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, core matrix float32 (n, len(columns)), ids) from one row of ``matrix_query`` for ``columns``."""
    n = int(row["n"])
    matrix = np.empty((n, len(columns)), dtype=np.float32)
    for j, c in enumerate(columns):
        if c.lut is None:
            matrix[:, j] = np.frombuffer(row[f"m{j}"] or b"", dtype=">f8")
    _look_up(matrix, columns, lambda i: row[f"k{i}"])
    return n, matrix, _ids(row, n, id_type)


def _ids(row: dict, n: int, id_type: str) -> np.ndarray:
    """A chunk's ids: int64 from the int8 bytes of an integer id column (which skip NULLs), else object."""
    if id_type not in INTEGER_IDS:
        return np.array(row["id"] or [], dtype=object)
    ids = np.frombuffer(row["id"] or b"", dtype=">i8").astype(np.int64)
    if len(ids) != n:
        raise null_ids()
    return ids


def null_ids() -> SqlmlError:
    return SqlmlError("the id column holds NULL in some rows: their scores could not be joined back to them",
                      sqlstate=NOT_NULL_VIOLATION, hint="score by a column that identifies every row (a primary key)")


def _look_up(matrix: np.ndarray, columns: tuple, text) -> None:
    """Write each looked-up category column of ``matrix``: ``text(i)`` is the i-th category read's
    values joined by SEPARATOR (``matrix_query``'s k<i>)."""
    n, texts, values = len(matrix), {}, {}
    for j, c in enumerate(columns):
        if c.lut is None:
            continue
        if c.source not in texts:
            texts[c.source] = len(texts)
            values[c.source] = text(texts[c.source]).split(SEPARATOR) if n else []
        matrix[:, j] = np.fromiter(map(c.lut.get, values[c.source], repeat(c.default)), dtype=np.float64, count=n)


def check_float32(payload, names: list[str]) -> None:
    """Refuse a chunk with a number float32 cannot hold (Infinity, or beyond ±3.4e38): the model
    computes in float32 and would answer NaN. ``payload``: the core matrix (float32, a column per
    name in ``names``), or raw columns {feature: array} (``names`` unused)."""
    if isinstance(payload, np.ndarray):
        bad = {name: int(k) for name, k in zip(names, np.isinf(payload).sum(axis=0)) if k}
    else:
        bad = {name: int(np.count_nonzero(np.abs(v) > FLOAT32_MAX)) for name, v in payload.items() if v.dtype != object}
    for name, k in bad.items():
        if k:
            raise out_of_range(name, f"holds Infinity or a number in {k} row{'s' if k > 1 else ''}")


def decode_chunk(row: dict, features: list[Feature], id_type: str) -> tuple[int, dict, np.ndarray]:
    """(n, {feature: raw array}, ids) from one row of ``table_query``: ids int64, or object (str)."""
    n = int(row["n"])
    raw = {f.name: decode(f.kind, row[f"c{i}"], n, f.dim) for i, f in enumerate(features)}
    return n, raw, _ids(row, n, id_type)


def pack_float32(values: np.ndarray) -> list[int] | None:
    """Float32 values (held as float64) as int8s that ``unpack_sql`` turns back into the same float8.

    PL/Python hands a Python float to PostgreSQL through its shortest decimal text (~0.5 us each);
    an int costs a fifth of that. A float32 is m * 2**e with a 24-bit integer m, so it travels as
    m * 1024 + (e + 512). None when a value cannot travel this way (not finite, -0.0, or not a
    float32): the caller sends floats then.
    """
    values = np.asarray(values, dtype=np.float64)
    mantissa, exponent = np.frexp(values)
    m = np.ldexp(mantissa, 24)
    ok = np.isfinite(values) & (m == np.round(m)) & ~((values == 0) & np.signbit(values))
    if not ok.all():
        return None
    return (m.astype(np.int64) * 1024 + (exponent.astype(np.int64) - 24 + 512)).tolist()


def unpack_sql(expr: str) -> str:
    """The float8 that ``pack_float32`` packed into the int8 ``expr`` (exact: a power of two times an integer)."""
    return (f"(({expr} OPERATOR(pg_catalog.>>) 10)::pg_catalog.float8 OPERATOR(pg_catalog.*) "
            f"pg_catalog.power(2::pg_catalog.float8, (({expr} OPERATOR(pg_catalog.&) 1023) "
            f"OPERATOR(pg_catalog.-) 512)::pg_catalog.float8))")
