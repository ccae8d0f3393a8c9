"""Columnar ingest: one aggregate query reads every column of a relation as one value each.

Numbers travel as one ``bytea`` per column (``string_agg(float8send(x))``, decoded with
``np.frombuffer``), text as one ``text[]``, vectors as their binary send format. All aggregates
of one query see the rows in the same order, so position i is row i in every column. Measured on
this stack: 0.06 s for 200k x 5 floats, against 0.28 s for row dicts.

Pure: builds SQL and decodes results; the caller (server) runs the query.
"""

from __future__ import annotations

import numpy as np

from sqlml.data.schema import BOOLEAN, CATEGORY, DATE, NUMERIC, TIMESTAMP, VECTOR, Feature

NAN8 = r"'\x7ff8000000000000'::pg_catalog.bytea"


def quote_ident(name: str) -> str:
    """SQL identifier, always quoted (names come from the catalog or the user)."""
    return '"' + name.replace('"', '""') + '"'


def column_aggregate(kind: str, expr: str, dim: int = 0) -> str:
    """The aggregate that reads column ``expr`` (already quoted) of ``kind`` in row order."""
    if kind == NUMERIC:
        return f"string_agg(coalesce(float8send({expr}::float8), {NAN8}), ''::bytea)"
    if kind == BOOLEAN:
        return f"string_agg(coalesce(float8send({expr}::int::float8), {NAN8}), ''::bytea)"
    if kind in (DATE, TIMESTAMP):
        return f"string_agg(coalesce(float8send(extract(epoch FROM {expr})::float8), {NAN8}), ''::bytea)"
    if kind == VECTOR:
        nan_row = f"decode(repeat('7fc00000', {int(dim)}), 'hex')"
        return f"string_agg(coalesce(substring(vector_send({expr}) FROM 5), {nan_row}), ''::bytea)"
    if kind == CATEGORY:
        return f"array_agg({expr}::text)"
    raise ValueError(f"unknown kind {kind}")


def ingest_query(source_sql: str, features: list[Feature], extra: dict[str, str] | None = None) -> str:
    """``SELECT count(*) AS n, <one aggregate per feature> FROM (<source>) src``.

    Result columns are named c0, c1, ... in ``features`` order; ``extra`` adds name -> kind
    columns (the target, an id) named x_<name>.
    """
    aggs = ["count(*) AS n"]
    for i, f in enumerate(features):
        aggs.append(f"{column_aggregate(f.kind, 'src.' + quote_ident(f.name), f.dim)} AS c{i}")
    for j, (name, kind) in enumerate((extra or {}).items()):
        aggs.append(f"{column_aggregate(kind, 'src.' + quote_ident(name))} AS x{j}")
    return f"SELECT {', '.join(aggs)} FROM ({source_sql}) AS src"


def sample_query(source_sql: str, rows: int, seed: int) -> str:
    """At most ``rows`` rows of ``source_sql``, chosen by a seeded hash of each row's contents.

    Deterministic: the same data and seed give the same sample whatever order the rows are
    stored or returned in (unlike TABLESAMPLE, which also works only on tables). Costs one pass
    over the relation and a top-N sort that keeps ``rows`` rows. The hash is schema-qualified and
    its arguments of its exact types, so no same-named function on the search_path is chosen.
    """
    return (f"SELECT * FROM ({source_sql}) AS sample_src "
            f"ORDER BY pg_catalog.hashtextextended(sample_src::text, {int(seed)}::int8) LIMIT {int(rows)}")


def decode(kind: str, value, n: int, dim: int = 0) -> np.ndarray:
    """One aggregated column back to its raw array (see sqlml.data.convert for the layouts)."""
    if kind == CATEGORY:
        if value is None:
            return np.empty(0, dtype=object)
        return np.array(value, dtype=object)
    if value is None:
        return np.empty((0, dim) if kind == VECTOR else 0, dtype=np.float64)
    if kind == VECTOR:
        return np.frombuffer(value, dtype=">f4").astype(np.float64).reshape(n, dim)
    return np.frombuffer(value, dtype=">f8").astype(np.float64)


def decode_row(row: dict, features: list[Feature], extra: dict[str, str] | None = None):
    """(n, {feature name: raw array}, {extra name: raw array}) from the ingest query's one row."""
    n = int(row["n"])
    columns = {f.name: decode(f.kind, row[f"c{i}"], n, f.dim) for i, f in enumerate(features)}
    extras = {name: decode(kind, row[f"x{j}"], n) for j, (name, kind) in enumerate((extra or {}).items())}
    return n, columns, extras
