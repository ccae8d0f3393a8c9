"""Set-at-a-time scoring: ``sqlml.predict_batch`` (rows out) and ``sqlml.score`` (into a table).

A table (or materialized view) is read as the caller in chunks of ~16k rows, all in one snapshot
(``sqlml.scoring.chunks``). The chunks overlap: a background thread decodes and
scores chunk k while the backend writes chunk k-1 and reads chunk k+1 (``sqlml.scoring.overlap``),
so at most three chunks are held at once and memory stays flat whatever the table's size. A view
or a query is read like training data, whole and columnar in one read-only statement (a view may
hide a function with side effects, and only a single statement can be made read-only from
PL/Python), then scored in chunks: its memory grows with it.

Chunks go through the model's core graph (``sqlml.onnx.core``) as one float32 matrix. For a table
with integer ids, outside parallel mode, in a UTF-8 database where the compiled helpers can be
built (``pg_internals``), no value passes through Python:

- the rows are read through one cursor by a compiled DestReceiver straight into the matrix, a chunk
  at a time (``pg_internals.RowCursor``: numbers as float8 Datums, categories looked up in hash
  tables, ``sqlml.scoring.lookup_tables``): about what the scan costs;
- ``score`` writes into the table it created heap tuples formed by compiled code on the scoring
  thread (``sqlml.scoring.heap_tuples``), a page at a time (``pg_internals.insert_tuples``), while
  that table is plain and insertable; otherwise by an INSERT from arrays built in numpy
  (``sqlml.scoring.arrays``) through SPI with Datums (``pg_internals.DatumSpi``). See
  ``_DatumWriter``.

100k rows of 20 columns and a 100-tree model: 0.39 s through plpy's per-value conversions, 0.10 s
so. Otherwise (text ids, a view, no LLVM) plpy carries the chunk query's float8 bytes and texts,
and the scores as exact ints (``chunks.pack_float32``).
"""

from __future__ import annotations

from contextlib import closing
from functools import partial

import numpy as np
import plpy

from sqlml.data.ingest import quote_ident
from sqlml.data.relation import Relation, parse_relation
from sqlml.data.schema import CATEGORY, NULL_CATEGORY, REGRESSION
from sqlml.errors import UNDEFINED_COLUMN, SqlmlError
from sqlml.scoring import arrays, chunks, heap_tuples, lookup_tables, overlap
from sqlml.server import auditing, counters, governing, pg_internals, predicting, reach, reading
from sqlml.server.spi import spi

# a table's size in pages and its rows per page (NULL when never analyzed); no row unless it is a
# plain table or a materialized view (whose pages ctid ranges can split)
TABLE_INFO = """
SELECT pg_catalog.pg_relation_size(c.oid::pg_catalog.regclass)
           OPERATOR(pg_catalog./) pg_catalog.current_setting('block_size')::pg_catalog.int8 AS blocks,
       CASE WHEN c.relpages OPERATOR(pg_catalog.>) 0 AND c.reltuples OPERATOR(pg_catalog.>) 0::pg_catalog.float4
            THEN c.reltuples::pg_catalog.float8 OPERATOR(pg_catalog./) c.relpages::pg_catalog.float8
       END AS rows_per_page
FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)
  AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,m}'::pg_catalog."char"[])"""


def source(project, relation, id_column):
    """(model, relation, its SQL, its columns) after the governor admitted the job and checking the
    relation has what the model needs. The relation is opened once, by the admission."""
    src = governing.admit_scoring(project, relation)
    if id_column is None:
        raise SqlmlError("id_column is NULL", hint="name the column that identifies rows (for joining back)")
    m = predicting.resolve(project)
    rel, sql, cols = src.relation, src.sql, src.by_name()
    missing = [f.name for f in m.schema.features if f.name not in cols]
    if id_column not in cols:
        missing.insert(0, id_column)
    if missing:
        raise SqlmlError(f'column{"s" if len(missing) > 1 else ""} {", ".join(map(repr, missing))} not found in '
                         f'{rel.describe()}; columns are: {", ".join(cols)}', sqlstate=UNDEFINED_COLUMN,
                         hint=f"project {project!r} needs: {', '.join(f.name for f in m.schema.features)}")
    return m, rel, sql, cols


def _scored(m, rel, sql, id_column, id_type, datums, writer=None):
    """Yield (rows, scores, ids, packed) per chunk; ids int64 for integer id columns of tables. Each
    chunk is decoded and scored on a background thread, one chunk ahead of the caller's writes
    (``sqlml.scoring.overlap``). ``datums``: ``_datum_spi(id_type)``. ``writer``: a
    ``_DatumWriter``, told when the chunk query is checked, whose ``pack`` of a table's chunk (int64
    ids) runs on that thread too (packed: None otherwise)."""
    chunk_reader = _chunks(m, rel, sql, id_column, id_type, datums, writer.decide if writer is not None else None)
    # both closed here, whatever stops them (the scoring thread's error too): the cursor is closed
    # while its portal is still there, not by a collection after the statement ended
    with closing(chunk_reader), closing(overlap.overlapped(_decode_and_score(m, writer), chunk_reader)) as scored:
        for _, (n, ids, out, packed) in scored:
            if n:
                counters.add(m.ref.project, n)  # rows scored, for sqlml.prediction_counts
                yield n, out, ids, packed


def _decode_and_score(m, writer):
    """The background thread's work on a chunk: ``decode()`` -> (rows, payload, ids) (Python and
    numpy on what PostgreSQL handed over, nothing of plpy), then the model, then ``writer.pack``."""
    def run(decode):
        n, payload, ids = decode()
        if not n:
            return n, ids, None, None
        out = m.scores(payload)
        return n, ids, out, (writer.pack(ids, out) if writer is not None and ids.dtype == np.int64 else None)
    return run


def _chunks(m, rel, sql, id_column, id_type, datums, checked=None):
    """Yield (None, decode) per chunk, ``decode()`` -> (rows, payload, ids): the payload is the core
    matrix for a table whose model takes one, else raw columns (``sqlml.data.convert`` layouts).
    ``checked()`` runs once the chunk query is checked, before the first chunk is read."""
    features = list(m.schema.features)
    info = spi.execute(TABLE_INFO, [rel.qualified]) if rel.name else []
    if not info:
        n, raw, extras = reading.read(sql, features, {id_column: CATEGORY})
        for start in range(0, n, chunks.CHUNK_ROWS):
            ids = extras[id_column][start:start + chunks.CHUNK_ROWS]
            payload = {k: v[start:start + chunks.CHUNK_ROWS] for k, v in raw.items()}
            yield None, partial(_checked, len(ids), payload, ids, [])
        return
    blocks = int(info[0]["blocks"])
    step = chunks.pages_per_chunk(info[0]["rows_per_page"], blocks)
    columns = m.scorer.row_columns
    names = [c.source for c in columns] if columns is not None else []
    rows = chunks.rows_query(rel.qualified, features, columns, id_column) \
        if columns is not None and datums is not None and pg_internals.rows_available() else None
    if rows is not None:  # each chunk's rows read straight into the core matrix by compiled code
        yield from _read_rows(rows, columns, names, chunks.rows_per_chunk(info[0]["rows_per_page"], blocks), checked)
        return
    query = chunks.matrix_query(rel.qualified, features, columns, id_column, id_type, blocks, step) \
        if columns is not None else None  # None too when the core matrix cannot be read in SQL
    matrix = query is not None
    query = query or chunks.table_query(rel.qualified, features, id_column, id_type, blocks, step)
    with reach.checked(query) as read:  # what it runs, casts of the table's column types included
        if checked is not None:
            checked()
        cursor = plpy.cursor(read)  # planned from what was checked
    while rows := cursor.fetch(1):
        if matrix:  # the core matrix itself: numbers and looked-up categories
            yield None, partial(_decoded, chunks.decode_matrix, (rows[0], columns, id_type), names)
        else:
            yield None, partial(_decoded, chunks.decode_chunk, (rows[0], features, id_type), [])


# the first chunk read, small: nothing overlaps its scoring, which the backend waits for before it
# writes (a full chunk of a 100-tree model: ~10 ms of the ~100 a 100k-row table takes)
FIRST_CHUNK_ROWS = 2048


def _read_rows(rows, columns, names, chunk_rows, checked):
    """``_chunks`` of a table read by a ``pg_internals.RowCursor``, ``chunk_rows`` at a time."""
    readers = [(attribute, pg_internals.TEXT_KIND,
                lookup_tables.build(c.lut, c.default, c.lut.get(NULL_CATEGORY, c.default))) if text
               else (attribute, pg_internals.NUMBER_KIND, float("nan"))
               for (attribute, text), c in zip(rows.columns, columns)]
    with reach.checked(rows.sql) as read:  # what it runs, casts of the table's column types included
        if checked is not None:
            checked()
        cursor = pg_internals.RowCursor(read, len(rows.items), readers)  # planned from what was checked, once
    size = min(FIRST_CHUNK_ROWS, chunk_rows)
    try:
        while True:
            n, matrix, ids, null_ids = cursor.fetch(size)
            if null_ids:
                raise chunks.null_ids()
            if n:
                yield None, partial(_checked, n, matrix, ids, names)
            if n < size:
                return
            size = chunk_rows
    finally:
        cursor.close()


def _decoded(decode, args, names):
    """``decode(*args)`` -> (rows, payload, ids), the payload checked for numbers float32 cannot hold."""
    n, payload, ids = decode(*args)
    return _checked(n, payload, ids, names)


def _checked(n, payload, ids, names):
    if n:
        chunks.check_float32(payload, names)
    return n, payload, ids


def predict_batch(project, relation, id_column):
    """Yield one row of arrays per chunk, which ``sqlml.predict_batch`` (SQL) unnests into a row per
    scored row: per-row Python tuples and PL/Python's per-value conversions were most of its time.

    (rows, integer ids, text ids, predictions as ``chunks.pack_float32`` int8s, the same as floats
    where they cannot be packed, the class as a 1-based index into the classes' values and labels,
    regression labels, the classes' values, the classes' labels, k, probabilities row after row)."""
    m, rel, sql, cols = source(project, relation, id_column)
    id_type = cols[id_column].pg_type
    total = 0
    if m.task != REGRESSION:  # the class of each row as an index into its value and label: two constants
        k = len(m.classes)
        class_values, class_labels = _classes(m)
        class_values = class_values.tolist()
    with closing(_scored(m, rel, sql, id_column, id_type, _datum_spi(id_type))) as scored:
        for n, out, ids, _ in scored:
            integer = ids.dtype != object  # int64 ids of an integer id column of a table; else text
            int_ids, text_ids = (ids.tolist(), None) if integer else (None, list(map(str, ids.tolist())))
            if m.task == REGRESSION:
                packed = chunks.pack_float32(out)
                yield (n, int_ids, text_ids, packed, out.tolist() if packed is None else None, None, m.labels(out),
                       None, None, None, None)
            else:
                yield (n, int_ids, text_ids, None, None, (out.argmax(axis=1) + 1).tolist(), None, class_values,
                       class_labels, k, out.reshape(-1).tolist())
            total += n
    auditing.record("predict_batch", m.ref.project, m.ref.version, {"relation": relation, "rows": total})


def score(project, relation, into_table, id_column) -> int:
    """Create ``into_table`` (id, prediction, label, probabilities) and fill it; returns the row count."""
    m, rel, sql, cols = source(project, relation, id_column)
    target = parse_relation(into_table)
    if not target.name:
        raise SqlmlError(f"into_table {into_table!r} is not a table name", hint="pass a (schema-qualified) table name")
    if target.name[0] is None:  # named by the schema CREATE TABLE puts it in: a name alone finds pg_temp's first
        schema = spi.execute("SELECT pg_catalog.current_schema()::pg_catalog.text AS s")[0]["s"]
        target = Relation(target.text, (schema, target.name[1])) if schema is not None else target
    id_col = cols[id_column]
    # integer ids by schema (a type name is looked up in pg_temp first); others as the source spells them
    id_type = f"pg_catalog.{id_col.pg_type}" if id_col.pg_type in chunks.INTEGER_IDS else \
        spi.execute("SELECT format_type($1::regtype::oid, $2::int) AS t", [id_col.pg_type, id_col.typmod])[0]["t"]
    spi.execute(f"CREATE TABLE {target.qualified} ({quote_ident(id_column)} {id_type}, prediction pg_catalog.float8, "
                f"label pg_catalog.text, probabilities pg_catalog.float8[])")
    governing.wrote()  # sqlml.jobs calls the job succeeded only once this transaction commits
    total = 0
    datums = _datum_spi(id_col.pg_type)
    # the table this CREATE made, before any code of the caller's runs (an event trigger is a superuser's)
    created = spi.execute("SELECT pg_catalog.to_regclass($1)::pg_catalog.oid::pg_catalog.int8 AS oid",
                          [target.qualified])[0]["oid"]
    writer = _DatumWriter(m, target.qualified, created, INTEGER_OIDS[id_col.pg_type], datums) \
        if datums is not None else None
    if m.task != REGRESSION:  # for plpy's way (a view's chunks, or no guard)
        class_values, class_labels = _classes(m)
        class_values = class_values.tolist()
    # closed here, not when the error's traceback lets go of it: the scoring thread ends with the statement
    with closing(_scored(m, rel, sql, id_column, id_col.pg_type, datums, writer)) as scored:
        for n, out, ids, ready in scored:
            if ready is not None:  # a table's integer ids (a view's are text): packed on the scoring thread
                writer.write(ready, ids, out)
                total += n
                continue
            columns = [out] if m.task == REGRESSION else [out[:, j] for j in range(out.shape[1])]
            packed = [chunks.pack_float32(c) for c in columns]
            if all(p is not None for p in packed):
                columns, insert = packed, _insert_sql(m, target.qualified, id_type, True)
            else:
                columns, insert = [c.tolist() for c in columns], _insert_sql(m, target.qualified, id_type, False)
            if m.task == REGRESSION:
                spi.execute(insert, [ids.tolist(), m.labels(out), *columns])
            else:  # the class as a 1-based index into the classes' values and labels
                spi.execute(insert, [ids.tolist(), (out.argmax(axis=1) + 1).tolist(), class_values, class_labels,
                                     *columns])
            total += n
    spi.notice(f"scored {total} rows of {relation} with {project} version {m.ref.version} into {into_table}")
    auditing.record("score", m.ref.project, m.ref.version,
                    {"relation": relation, "rows": total, "into_table": into_table})
    return total


def _datum_spi(id_type: str):
    """``pg_internals.DatumSpi`` for a table of integer ids where it can be built, else None (plpy's way)."""
    if id_type not in chunks.INTEGER_IDS or not pg_internals.DatumSpi.available():
        return None
    return pg_internals.DatumSpi()


# what writing the table score created can run: its own fields and its columns', by OID (every
# operator pg_catalog's: a same-named one on the search_path would come first); judged in Python
TABLE_FIELDS = """
SELECT c.relkind::pg_catalog.text AS kind, c.relam::pg_catalog.int8 AS am, c.relchecks::pg_catalog.int8 AS checks,
       c.relhasindex AS indexes, c.relhastriggers AS triggers, c.relhasrules AS rules, c.relrowsecurity AS rls,
       c.relforcerowsecurity AS force_rls, c.relispartition AS partition, c.oid::pg_catalog.int8 AS oid,
       c.reltype::pg_catalog.int8 AS rowtype, c.relnatts::pg_catalog.int8 AS attributes,
       pg_catalog.has_table_privilege(c.oid, 'INSERT') AS may_insert,
       pg_catalog.to_regclass($2::pg_catalog.text) OPERATOR(pg_catalog.=) c.oid AS named,
       pg_catalog.current_setting('transaction_read_only') OPERATOR(pg_catalog.=) 'on' AS read_only,
       (SELECT pg_catalog.array_agg(a.atttypid::pg_catalog.int8 ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
        WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.>) 0::pg_catalog.int2
          AND NOT a.attisdropped) AS types,
       (SELECT pg_catalog.bool_or(a.atthasdef OR a.attgenerated::pg_catalog.text OPERATOR(pg_catalog.<>) '')
        FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid) AS computed,
       (SELECT pg_catalog.bool_or(a.attnotnull) FROM pg_catalog.pg_attribute a  -- system columns are NOT NULL
        WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid
          AND a.attnum OPERATOR(pg_catalog.>) 0::pg_catalog.int2) AS not_null
FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid"""
HEAP_AM = 2  # pg_am's heap: 15 (catalog/pg_am.dat)


def _table_fields(oid: int | None, name: str) -> dict | None:
    """``TABLE_FIELDS`` of the table ``oid`` (``named``: whether ``name`` is it), None if it is gone."""
    found = spi.execute(TABLE_FIELDS, [oid, name]) if oid is not None else []
    return found[0] if found else None


def _plain(fields: dict, id_oid: int) -> bool:
    """Whether writing a table of ``TABLE_FIELDS`` (created by ``score``) runs nothing but
    PostgreSQL's own code, so the backend may let go of the GIL meanwhile (PL/Python needs it):
    still a plain heap table of the four column types score gave it (by OID: no domain), no default
    or generated column, no constraint, index, policy, trigger or rule, not a partition (whose key is
    checked on insert). An event trigger may have added any of them."""
    t = fields
    return (t["kind"] == "r" and t["am"] == HEAP_AM and t["checks"] == 0 and not t["computed"]
            and not any(t[k] for k in ("indexes", "triggers", "rules", "rls", "force_rls", "partition"))
            and list(t["types"] or []) == [id_oid, arrays.FLOAT8OID, arrays.TEXTOID, arrays.ARRAY_OF[arrays.FLOAT8OID]])


class _DatumWriter:
    """Writes ``score``'s chunks of a table with integer ids, handed over as Datums.

    Into the table score created (by OID: no other session can change it before this transaction
    commits, whatever its isolation level), while it is plain (``_plain``), of exactly the four
    columns score created and no other, and the caller may insert into it: as heap tuples formed on
    the scoring thread (``sqlml.scoring.heap_tuples``), inserted a page at a time
    (``pg_internals.insert_tuples``) while the backend lets go of the GIL. Otherwise by an INSERT
    from arrays (``_insert_datums``), which runs what the table has (triggers, checks, policies) and
    checks the INSERT privilege, keeping the GIL unless the table is plain and its name still the
    created table's.

    The table is judged again just before each write, with nothing run in between: the reads of the
    chunks in between may run the caller's own code (a trusted function may call another that
    changes the table), and a table that runs PL/Python on insert while the backend has let go of
    the GIL crashes it. ``decide()`` once the chunk query is checked picks what the scoring thread
    packs (``pack(ids, scores)``: tuples, or the INSERT's parameters); ``write(packed, ids,
    scores)`` on the backend's thread writes it, or the INSERT's parameters built from the scores
    when the table no longer takes tuples (and the chunks after it are packed for the INSERT)."""

    def __init__(self, m, table: str, created: int | None, id_oid: int, datums):
        self.m, self.table, self.created, self.id_oid, self.datums = m, table, created, id_oid, datums
        self.insert, self.constants = _insert_datums_sql(m, table), _class_constants(m)
        self.packer = None
        self.tuples = False

    def decide(self) -> None:
        self.packer = heap_tuples.packer(pg_internals.compiled_cache_dir())
        self.tuples = self._takes_tuples(_table_fields(self.created, self.table))

    def _takes_tuples(self, fields: dict | None) -> bool:
        """Whether a table of ``fields`` takes tuples laid out as ``heap_tuples`` lays them out: plain,
        its four columns and no dropped one (a column dropped and added again moves to a new
        attribute), and no NOT NULL, in a transaction that may write (nothing is checked on the way in)."""
        return (fields is not None and _plain(fields, self.id_oid) and fields["may_insert"]
                and fields["attributes"] == 4 and not fields["not_null"] and not fields["read_only"]
                and self.packer is not None and pg_internals.tuples_available())

    def pack(self, ids: np.ndarray, out: np.ndarray):
        """A chunk's scores as written: ``heap_tuples.Tuples``, or the INSERT's parameters (a list)."""
        m = self.m
        if not self.tuples:
            return _insert_datums(m, ids, out, self.constants)
        if m.task == REGRESSION:
            return self.packer.scored_rows(ids, ID_WIDTHS[self.id_oid], out, m.labels(out), np.arange(len(ids)), None)
        values, labels = _classes(m)
        classes = out.argmax(axis=1)
        return self.packer.scored_rows(ids, ID_WIDTHS[self.id_oid], values[classes], labels, classes, out)

    def write(self, packed, ids: np.ndarray, out: np.ndarray) -> None:
        fields = _table_fields(self.created, self.table)  # then nothing runs before PostgreSQL writes
        if isinstance(packed, heap_tuples.Tuples) and self._takes_tuples(fields):
            pg_internals.insert_tuples(fields["oid"], fields["rowtype"], packed, release_gil=True)
            return
        self.tuples = False
        params = packed if isinstance(packed, list) else _insert_datums(self.m, ids, out, self.constants)
        # the INSERT names the table: the GIL let go only if the name is still the plain table created
        release = fields is not None and fields["named"] and _plain(fields, self.id_oid)
        self.datums.execute(self.insert, params, release_gil=release)


INTEGER_OIDS = {"int2": 21, "int4": arrays.INT4OID, "int8": arrays.INT8OID}
ID_WIDTHS = {21: 2, arrays.INT4OID: 4, arrays.INT8OID: 8}  # bytes of each in a tuple


def _insert_datums_sql(m, table: str) -> str:
    """The INSERT of one chunk from arrays passed as Datums (``_insert_datums``): ids (int8, cast to
    the id column's integer type on assignment); for a regressor, labels and values; for a
    classifier, the class as an index into the classes' values and labels and a column of
    probabilities per class. Every type named is pg_catalog's (a pg_temp type comes first)."""
    int4, int8, float8, text = (f"pg_catalog.{t}[]" for t in ("int4", "int8", "float8", "text"))
    if m.task == REGRESSION:
        return (f"INSERT INTO {table} SELECT u.i, u.p, u.l, NULL "
                f"FROM {_unnest(f'$1::{int8}', f'$2::{text}', f'$3::{float8}')} AS u(i, l, p)")
    k = len(m.classes)
    q = [f"q{j}" for j in range(k)]
    return (f"INSERT INTO {table} SELECT u.i, ($3::{float8})[u.k], ($4::{text})[u.k], "
            f"ARRAY[{', '.join('u.' + c for c in q)}] "
            f"FROM {_unnest(f'$1::{int8}', f'$2::{int4}', *(f'${j + 5}::{float8}' for j in range(k)))} "
            f"AS u(i, k, {', '.join(q)})")


def _unnest(*arrays_sql: str) -> str:
    """Arrays side by side as rows. Not ``unnest(a, b)``, whose parts resolve through the search_path,
    where a function of exact argument types (``unnest(bigint[])``) would beat pg_catalog's."""
    return f"ROWS FROM ({', '.join(f'pg_catalog.unnest({a})' for a in arrays_sql)})"


def _classes(m) -> tuple:
    """A classifier's classes' values and labels (what a row of each class predicts), in class order:
    the rows written carry the class as a 1-based index into them."""
    eye = np.eye(len(m.classes))
    return m.value(eye), m.labels(eye)


def _class_constants(m) -> list:
    """A classifier's classes' values and labels as array Datums (``$3``, ``$4``)."""
    if m.task == REGRESSION:
        return []
    values, labels = _classes(m)
    return [(arrays.ARRAY_OF[arrays.FLOAT8OID], arrays.build(values, arrays.FLOAT8OID)),
            (arrays.ARRAY_OF[arrays.TEXTOID], arrays.build_text(labels))]


def _insert_datums(m, ids: np.ndarray, out: np.ndarray, constants: list) -> list:
    """The parameters of ``_insert_datums_sql`` for one chunk: (type OID, array varlena)."""
    def array(values, oid):
        return arrays.ARRAY_OF[oid], arrays.build(values, oid)

    if m.task == REGRESSION:
        return [array(ids, arrays.INT8OID), (arrays.ARRAY_OF[arrays.TEXTOID], arrays.build_text(m.labels(out))),
                array(out, arrays.FLOAT8OID)]
    return [array(ids, arrays.INT8OID), array(out.argmax(axis=1) + 1, arrays.INT4OID), *constants,
            *(array(out[:, j], arrays.FLOAT8OID) for j in range(out.shape[1]))]


def _insert_sql(m, table: str, id_type: str, packed: bool) -> str:
    """The INSERT of one chunk. Parameters travel as one array per column, and numbers as ints
    where they can (PL/Python converts each value through its text, and a float's shortest text
    is five times dearer than an int's): ids; for a regressor, labels and values; for a classifier,
    the class as an index into the classes' values and labels (two constants) and k columns of
    probabilities. ``packed``: values and probabilities are ``chunks.pack_float32`` int8s."""
    typ = "pg_catalog.int8[]" if packed else "pg_catalog.float8[]"
    if m.task == REGRESSION:
        p = chunks.unpack_sql("u.p") if packed else "u.p"
        return (f"INSERT INTO {table} SELECT u.i::{id_type}, {p}, u.l, NULL "
                f"FROM {_unnest('$1', '$2::pg_catalog.text[]', f'$3::{typ}')} AS u(i, l, p)")
    k = len(m.classes)
    q = [chunks.unpack_sql(f"u.q{j}") if packed else f"u.q{j}" for j in range(k)]
    return (f"INSERT INTO {table} SELECT u.i::{id_type}, ($3::pg_catalog.float8[])[u.k], "
            f"($4::pg_catalog.text[])[u.k], ARRAY[{', '.join(q)}] "
            f"FROM {_unnest('$1', '$2::pg_catalog.int8[]', *(f'${j + 5}::{typ}' for j in range(k)))} "
            f"AS u(i, k, {', '.join(f'q{j}' for j in range(k))})")
