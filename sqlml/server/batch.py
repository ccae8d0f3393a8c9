"""Set-at-a-time scoring: ``sqlml.predict_batch`` (rows out) and ``sqlml.score`` (into a table).

The relation is read columnar, as the caller, in a read-only subtransaction (like training data),
and scored in chunks through ONNX Runtime.
"""

from __future__ import annotations


from sqlml.data.ingest import quote_ident
from sqlml.data.relation import parse_relation
from sqlml.data.schema import CATEGORY, REGRESSION
from sqlml.errors import UNDEFINED_COLUMN, SqlmlError
from sqlml.server import audit, ingest, scoring
from sqlml.server.spi import spi

CHUNK = 65536


def _read(project, relation, id_column):
    if id_column is None:
        raise SqlmlError("id_column is NULL", hint="name the column that identifies rows (for joining back)")
    m = scoring.resolve(project)
    rel = parse_relation(relation)
    sql, _ = ingest.source_sql(rel)
    cols = {c.name: c for c in ingest.describe(sql)}
    missing = [f.name for f in m.schema.features if f.name not in cols]
    if id_column not in cols:
        missing.insert(0, id_column)
    if missing:
        raise SqlmlError(f'column{"s" if len(missing) > 1 else ""} {", ".join(map(repr, missing))} not found in '
                         f'{rel.describe()}; columns are: {", ".join(cols)}', sqlstate=UNDEFINED_COLUMN,
                         hint=f"project {project!r} needs: {', '.join(f.name for f in m.schema.features)}")
    n, raw, extras = ingest.read(sql, list(m.schema.features), {id_column: CATEGORY})
    return m, n, raw, extras[id_column], cols[id_column]


def _outputs(m, n, raw):
    """Yield (prediction, label, probabilities) per row, scoring CHUNK rows at a time."""
    for start in range(0, n, CHUNK):
        part = {k: v[start:start + CHUNK] for k, v in raw.items()}
        out = m.predict_columns(part)
        preds, labels = m.value(out), m.labels(out)
        probas = [None] * len(preds) if m.task == REGRESSION else out.tolist()
        yield from zip(preds.tolist(), labels, probas)


def predict_batch(project, relation, id_column):
    m, n, raw, ids, _ = _read(project, relation, id_column)
    audit.record("predict_batch", m.ref.project, m.ref.version, {"relation": relation, "rows": n})
    for row_id, (pred, label, proba) in zip(ids, _outputs(m, n, raw)):
        yield (row_id, pred, label, proba)


def score(project, relation, into_table, id_column) -> int:
    """Create ``into_table`` (id, prediction, label, probabilities) and fill it; returns the row count."""
    m, n, raw, ids, id_col = _read(project, relation, id_column)
    target = parse_relation(into_table)
    if not target.name:
        raise SqlmlError(f"into_table {into_table!r} is not a table name", hint="pass a (schema-qualified) table name")
    id_type = spi.execute("SELECT format_type($1::oid, $2::int) AS t",
                          [_type_oid(id_col.pg_type), id_col.typmod])[0]["t"]
    spi.execute(f"CREATE TABLE {target.qualified} ({quote_ident(id_column)} {id_type}, prediction float8, "
                f"label text, probabilities float8[])")
    k = 0 if m.task == REGRESSION else len(m.classes)
    insert = (f"INSERT INTO {target.qualified} SELECT u.i::{id_type}, u.p, u.l, "
              f"CASE WHEN $5::int = 0 THEN NULL ELSE ($4::float8[])[(u.o - 1) * $5 + 1 : u.o * $5] END "
              f"FROM unnest($1::text[], $2::float8[], $3::text[]) WITH ORDINALITY AS u(i, p, l, o)")
    for start in range(0, n, CHUNK):
        part = {key: v[start:start + CHUNK] for key, v in raw.items()}
        out = m.predict_columns(part)
        spi.execute(insert, [list(ids[start:start + CHUNK]), m.value(out).tolist(), m.labels(out),
                             [] if k == 0 else out.ravel().tolist(), k])
    spi.notice(f"scored {n} rows of {relation} with {project} version {m.ref.version} into {into_table}")
    audit.record("score", m.ref.project, m.ref.version, {"relation": relation, "rows": n, "into_table": into_table})
    return n


def _type_oid(typname: str) -> int:
    return spi.execute("SELECT $1::regtype::oid::int8 AS o", [typname])[0]["o"]
