"""``sqlml.explain``, ``sqlml.explain_batch``, ``sqlml.importance``: SPI in, rows out.

The model is resolved as scoring resolves it (``sqlml.server.predicting.resolve``: deployed or
``project@version``, the caller's right to score it checked); its explainer, stored at training,
is loaded once per process and model. The contributions come from ``sqlml.explain``; a tree
model's, from native TreeSHAP code kept beside the compiled scoring code
(``pg_internals.compiled_cache_dir``), so a new backend loads it instead of compiling it again.
"""

from __future__ import annotations

import json

from sqlml.data import values
from sqlml.data.schema import CATEGORY
from sqlml.errors import FEATURE_NOT_SUPPORTED, OBJECT_NOT_IN_PREREQUISITE_STATE, SqlmlError
from sqlml.explain.rows import batch_rows, explanation_rows, header
from sqlml.registry import store
from sqlml.scoring import chunks
from sqlml.server import auditing, interrupts, pg_internals, predicting, privileged, reading

_explainers: dict = {}  # model id -> Explainer


def explainer(m):
    """The explainer of a resolved model (``predicting.Model``), or a clear error for one without."""
    e = _explainers.get(m.ref.id)
    if e is None:
        from sqlml.explain.model import Explainer

        blob, origin = privileged.run(lambda ex: store.explainer_blob(ex, m.ref.id))
        if blob is None:
            why = (
                "was imported: sqlml explains the models it trains (LightGBM, random forests, extra trees, "
                "linear models and their ensembles), whose node covers and training means it keeps; an "
                "imported ONNX graph carries neither"
                if origin == "imported"
                else "was registered before sqlml kept explainers (0.1.0)"
            )
            raise SqlmlError(
                f'version {m.ref.version} of project "{m.ref.project}" {why}',
                sqlstate=FEATURE_NOT_SUPPORTED,
                hint="explain a version sqlml trained (project@version), or retrain: sqlml.train(...)",
            )
        e = Explainer.from_bytes(blob, m.schema)
        if e.has_trees:  # what explains it, at DEBUG2 (plpy.debug), as scoring says what scores it
            import plpy

            origin = native_treeshap()
            plpy.debug(f"sqlml: {m.ref.project} version {m.ref.version} explains with TreeSHAP "
                       + ("compiled (from the cache)" if origin == "cache" else origin or "in numpy"))
        _explainers[m.ref.id] = e
    return e


def native_treeshap() -> str | None:
    """Load the native TreeSHAP code (``sqlml.explain.native``), from the cache where it was kept:
    "cache", "compiled" (and kept), or None (no llvmlite: numpy computes the same)."""
    from sqlml.explain import native
    from sqlml.onnx.compiled import private_directory

    if native.cache["origin"] is None:
        native.use_cache(private_directory(pg_internals.compiled_cache_dir()))
    return native.cache["origin"] if native.function() is not None else None


def explain(project, features, as_array=False):
    from sqlml.data import convert

    m = predicting.resolve(project)
    if as_array:
        cols = values.from_array(m.schema, features, project)
    else:
        cols = values.from_rows(
            m.schema, [json.loads(features) if isinstance(features, str) else (features or {})], project
        )
    e = explainer(m)
    result = e.explain(convert.model_inputs(m.schema, cols), 1)
    return list(explanation_rows(m.schema, e.outputs, result, cols))


def explain_batch(project, relation, id_column):
    """Every row of ``relation`` (read as the caller, columnar), explained in chunks: the header
    row, then one folded row per input row (``sqlml.explain.rows.batch_rows``), which the SQL
    wrapper ``sqlml.explain_batch`` unfolds."""
    from sqlml.data import convert
    from sqlml.server.batch import source

    m, rel, sql, cols = source(project, relation, id_column)
    e = explainer(m)
    n, raw, extras = reading.read(sql, list(m.schema.features), {id_column: CATEGORY})
    ids = extras[id_column]
    out = [header(m.schema, e.outputs)]
    for start in range(0, n, chunks.CHUNK_ROWS):
        part = {k: v[start : start + chunks.CHUNK_ROWS] for k, v in raw.items()}
        part_ids = ids[start : start + chunks.CHUNK_ROWS]
        result = e.explain(convert.model_inputs(m.schema, part), len(part_ids), interrupts.check)
        out.extend(batch_rows(m.schema, result, part, part_ids))
    auditing.record("explain_batch", m.ref.project, m.ref.version, {"relation": relation, "rows": n})
    return out


def importance(project):
    m = predicting.resolve(project)
    imp = privileged.run(lambda ex: store.importance(ex, m.ref.id))
    if not imp or imp.get("method") is None or not imp.get("features"):
        raise SqlmlError(
            f'version {m.ref.version} of project "{m.ref.project}" has no contribution importance',
            sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
            hint="imported models and models registered before sqlml 0.2.0 have none; "
            "sqlml.explain_batch gives the contributions it averages",
        )
    return [(f["feature"], f["importance"]) for f in imp["features"]]
