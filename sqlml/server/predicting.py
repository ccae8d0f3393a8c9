"""Scoring inside the backend: which model a project means, the model and row-plan caches, predict*.

Which model ``'churn'`` (deployed) or ``'churn@3'`` means is resolved once per SQL statement, by
one query: ``sqlml._model_ref`` (which also checks that the caller may score the project) joined,
when a row is scored, with the row type's columns from the catalog. After a deploy or a rollback
commits, the next statement in any session scores with the new model; one statement never mixes
two models.

In parallel mode (parallel workers, and their leader while the plan runs) plpy's SPI is refused.
There the same answer comes from ``pg_internals.ParallelSpi``, in the snapshot the leader shares with
its workers: first whether the caller may use the registry and score the project (functions that
answer true/false, so that nothing raises inside PostgreSQL), then ``sqlml._model_ref``, which can
no longer raise. Every process of a parallel plan thus resolves a project exactly as a serial plan
does in that statement, right after a deploy or rollback too, and reads the ONNX as the caller
(row-level security shows it the models it may score).

Per process, models are cached by id (a model row never changes; its ONNX is checked against its
sha256 when loaded) and row plans by model and row type (``sqlml.scoring.rows``), each with its
predictor: the generated function from a row to what ``sqlml.predict`` returns, which counts the
row in this process's counters file (``counters.slot``). Compiled code
is cached across processes by the model's sha256 in the data directory
(``pg_internals.compiled_cache_dir``): a new backend loads it instead of compiling again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from sqlml.data import convert, values
from sqlml.data.schema import DATE, REGRESSION, TIMESTAMP, FeatureSchema
from sqlml.errors import (
    DATATYPE_MISMATCH,
    FEATURE_NOT_SUPPORTED,
    INSUFFICIENT_PRIVILEGE,
    UNDEFINED_OBJECT,
    SqlmlError,
)
from sqlml.registry import store
from sqlml.server import counters, pg_internals
from sqlml.server.spi import spi

# the model, and the row type's columns (json arrays) when $3 names one
MAX_ROW_PLANS = 64  # row plans kept per model and backend, oldest dropped first

RESOLVE = """
SELECT r.id, r.version, r.sha256, format_type($3::oid, NULL) AS row_type, cols.names, cols.types
FROM sqlml._model_ref($1, $2::int) AS r
LEFT JOIN LATERAL (
    SELECT json_agg(a.attname ORDER BY a.attnum)::text AS names,
           json_agg(a.atttypid::int8 ORDER BY a.attnum)::text AS types
    FROM pg_catalog.pg_type t
    JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
    JOIN pg_catalog.pg_attribute a ON a.attrelid = b.typrelid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE t.oid = $3::oid) AS cols ON true"""


@dataclass
class Model:
    ref: store.ModelRef
    schema: FeatureSchema
    scorer: object  # sqlml.onnx.scorer.Scorer
    plans: dict = field(default_factory=dict)  # (column names, type oids) of a row type -> (RowPlan, its predictor)
    json_plan: object = None  # sqlml.scoring.rows.JsonPlan, made at the first jsonb row
    json_value: object = None  # its predictor: a jsonb row's text -> what sqlml.predict returns

    @property
    def task(self) -> str:
        return self.schema.target.task

    @property
    def classes(self) -> tuple:
        return self.schema.target.classes

    def __post_init__(self):
        self.has_dates = any(f.kind in (DATE, TIMESTAMP) for f in self.schema.features)
        numeric = self.schema.target.numeric_labels and self.task != REGRESSION
        self._label_values = [float(c) for c in self.classes] if numeric else None
        self._label_names = np.array([str(c) for c in self.classes], dtype=object)
        # what sqlml.predict returns for each class: the numeric label or the index (None: a regression's value)
        self.answers = None if self.task == REGRESSION else \
            (self._label_values or [float(i) for i in range(len(self.classes))])

    def predict_columns(self, columns: dict) -> np.ndarray:
        """Probabilities (n, k) or values (n,) for raw columns (``sqlml.data.convert`` layouts)."""
        out = self.scores(columns)
        counters.add(self.ref.project, len(out))  # rows scored, for sqlml.prediction_counts (metrics)
        return out

    def scores(self, chunk) -> np.ndarray:
        """``predict_columns`` without the count (numpy and ONNX Runtime only: safe off the backend's
        thread); ``chunk`` is raw columns or the core matrix (``Scorer.row_columns`` order)."""
        if isinstance(chunk, np.ndarray):
            return self.scorer.run_matrix(chunk)
        n = len(next(iter(chunk.values()))) if chunk else 0
        return self.scorer.run(convert.model_inputs(self.schema, chunk), n)

    def value(self, out: np.ndarray) -> np.ndarray:
        """What ``sqlml.predict`` returns: the value, the numeric label, or the class index."""
        if self.task == REGRESSION:
            return out
        idx = out.argmax(axis=1)
        if self._label_values is not None:
            return np.asarray(self._label_values, dtype=np.float64)[idx]
        return idx.astype(np.float64)

    def labels(self, out: np.ndarray) -> list[str]:
        if self.task == REGRESSION:
            return [repr(v) for v in out.tolist()]
        return self._label_names[out.argmax(axis=1)].tolist()

    def row_value(self, out) -> float:
        """``value`` of one row's scores, without numpy (as ``RowPlan.predictor`` answers)."""
        answers = self.answers
        if answers is None:
            return float(out[0])
        scores = out.tolist()
        return answers[scores.index(max(scores))]  # the first of equal maxima, as argmax


statement_key = pg_internals.statement_key
_models: dict[int, Model] = {}
_statement: dict = {}  # (spec, row type oid or None) -> (statement key, Model, RowPlan, its predictor) (or Nones)


# parallel mode: whether _model_ref and has_privilege may run, then whether the caller may score
MAY_RESOLVE = """
SELECT coalesce(has_function_privilege(to_regprocedure('sqlml._model_ref(text, integer)'), 'EXECUTE'), false)
   AND coalesce(has_function_privilege(to_regprocedure('sqlml.has_privilege(name, text, text)'), 'EXECUTE'), false)
   AND has_table_privilege('sqlml.models', 'SELECT') AND has_table_privilege('sqlml.deployments', 'SELECT') AS ok"""
MAY_SCORE = "SELECT sqlml.has_privilege(current_user, $1, 'predict') AS ok"


def resolve(spec: str, row_type: int | None = None):
    """The model ``spec`` means in this statement; with ``row_type``, (model, row plan) for that type."""
    key = statement_key()
    hit = _statement.get((spec, row_type))
    if hit is None or hit[0] != key:
        hit = _statement[(spec, row_type)] = (key, *_lookup(spec, row_type))
    return hit[1] if row_type is None else (hit[1], hit[2])


def _lookup(spec: str, row_type: int | None):
    name, version = store.parse_project_spec(spec)
    if version is not None and version > 2**31 - 1:  # would fail the ::int cast inside PostgreSQL
        raise SqlmlError(f'project "{name}" has no version {version}', sqlstate=UNDEFINED_OBJECT)
    parallel = pg_internals.in_parallel_mode()
    ex = pg_internals.ParallelSpi() if parallel else spi
    if parallel:
        _check_parallel(ex, name)
    rows = ex.execute(RESOLVE, [name, version, row_type])
    if not rows:
        if version is None:
            raise SqlmlError(f'project "{name}" has no deployed model', sqlstate=UNDEFINED_OBJECT,
                             hint="train one (sqlml.train) or deploy a version (sqlml.deploy)")
        raise SqlmlError(f'project "{name}" has no version {version}', sqlstate=UNDEFINED_OBJECT,
                         hint=f"SELECT version FROM sqlml.models WHERE project = '{name}'")
    r = rows[0]
    ref = store.ModelRef(r["id"], name, r["version"], r["sha256"])
    m = _models.get(ref.id)
    if m is None:
        m = _models[ref.id] = load(ref, ex if parallel else None)
    if row_type is None:
        return m, None, None
    if r["names"] is None:
        raise SqlmlError("sqlml.predict needs a row, a jsonb object or a float8[], "
                         f"got a value of type {r['row_type']}",
                         hint="pass the row of a table or view: sqlml.predict('project', c) FROM customers c",
                         sqlstate=DATATYPE_MISMATCH)
    names, types = tuple(json.loads(r["names"])), tuple(json.loads(r["types"]))
    planned = m.plans.get((names, types))
    if planned is None:
        from sqlml.scoring import textscan
        from sqlml.scoring.rows import RowPlan

        plan = RowPlan(m.scorer, list(names), list(types), name, textscan.scanner(pg_internals.compiled_cache_dir()))
        if len(m.plans) >= MAX_ROW_PLANS:  # each holds its own category tables: a backend's memory stays bounded
            m.plans.pop(next(iter(m.plans)))  # however many row types a caller makes up
        planned = m.plans[(names, types)] = (plan, plan.predictor(m.answers, counters.slot(m.ref.project)))
    if m.has_dates and not pg_internals.iso_dates():
        raise SqlmlError(f'project "{name}" has date features, which a row carries in the session\'s DateStyle; '
                         "sqlml reads ISO dates only", sqlstate=DATATYPE_MISMATCH,
                         hint="SET DateStyle = 'ISO', or pass to_jsonb(row)")
    return (m, *planned)


def _check_parallel(ex, name: str) -> None:
    """Raise (in Python) what ``sqlml._model_ref`` would raise (in PostgreSQL) for this caller."""
    if not ex.execute(MAY_RESOLVE)[0]["ok"]:
        raise SqlmlError("permission denied to read the sqlml registry", sqlstate=INSUFFICIENT_PRIVILEGE,
                         hint="scoring needs membership in sqlml_user (GRANT sqlml_user TO ...)")
    ok = ex.execute(MAY_SCORE, [name])[0]["ok"]
    if ok is None:
        raise SqlmlError(f'project "{name}" does not exist', sqlstate=UNDEFINED_OBJECT,
                         hint="SELECT name FROM sqlml.projects lists the projects you may use")
    if not ok:
        raise SqlmlError(f'permission denied to score project "{name}"', sqlstate=INSUFFICIENT_PRIVILEGE,
                         hint="its owner or a sqlml_admin can allow it: SELECT sqlml.grant(project, role, 'predict')")


def load(ref: store.ModelRef, parallel_spi=None) -> Model:
    """The model behind ``ref``, its ONNX checked against its sha256, ready to score.

    In parallel mode (``parallel_spi``) the ONNX is read as the caller, whom ``_check_parallel``
    has just found allowed to score the project (and row-level security agrees); elsewhere as the
    extension owner, like every registry read."""
    from sqlml.onnx.scorer import Scorer
    from sqlml.server import privileged

    if parallel_spi is not None:
        blob, _, schema = store.onnx_blob(parallel_spi, ref.id)
    else:
        blob, _, schema = privileged.run(lambda owner: store.onnx_blob(owner, ref.id))
    if schema.get("task") == "forecast":
        raise SqlmlError(f'project "{ref.project}" is a forecast project', sqlstate=FEATURE_NOT_SUPPORTED,
                         hint=f"forecast it: SELECT * FROM sqlml.forecast('{ref.project}')")
    schema = FeatureSchema.from_json(schema)
    scorer = Scorer(blob, schema, sha256=ref.sha256, cache_dir=pg_internals.compiled_cache_dir())
    if parallel_spi is None:  # what scores it, at DEBUG2 (plpy.debug) (a worker has no client to tell)
        import plpy

        plpy.debug(f"sqlml: {ref.project} version {ref.version} scores with {scorer.engine}"
                   + (" (from the cache)" if scorer.cached else "")
                   + (f" ({scorer.fallback})" if scorer.fallback else ""))
    return Model(ref, schema, scorer)


def warm(ref: store.ModelRef, blob: bytes, schema: FeatureSchema) -> None:
    """Compile a model just deployed into the cross-process cache (and this backend's), so that no
    backend's first predict pays the compile: new connections then load the native code in
    milliseconds. Never fails the caller: when it cannot, the first predict compiles, as before."""
    from sqlml.onnx.scorer import Scorer

    try:
        scorer = Scorer(blob, schema, sha256=ref.sha256, cache_dir=pg_internals.compiled_cache_dir())
    except Exception as e:  # noqa: BLE001 - a model that cannot be compiled here is scored as it was
        import plpy

        plpy.debug(f"sqlml: {ref.project} version {ref.version} not compiled ahead ({type(e).__name__}: {e})")
        return
    _models.setdefault(ref.id, Model(ref, schema, scorer))


# --- entry points: a row (its text and type), jsonb, or float8[] -----------------------------------

def _row(project, text, row_type):
    m, plan = resolve(project, row_type)
    out = plan.scores(text)
    counters.add(m.ref.project, 1)
    return m, out


def _other(project, features, as_array):
    """(model, scores of one row) for a jsonb object or a float8[]."""
    m = resolve(project)
    if not as_array:
        out = _json_plan(m).scores(json.loads(features) if isinstance(features, str) else (features or {}))
        counters.add(m.ref.project, 1)
        return m, out
    out = m.predict_columns(values.from_array(m.schema, features, project))
    return m, out[0] if out.ndim == 2 else out[:1]  # as RowPlan.scores: (k,) or (1,)


def predict_row(project, text, row_type) -> float | None:
    """``resolve`` inlined (this runs once per row of a scan); the plan's predictor does the rest:
    the row's text to the answer, counted (``RowPlan.predictor``)."""
    if text is None:
        return None
    hit = _statement.get((project, row_type))
    if hit is None or hit[0] != statement_key():
        hit = _statement[(project, row_type)] = (statement_key(), *_lookup(project, row_type))
    return hit[3](text)


def predict_proba_row(project, text, row_type) -> list[float] | None:
    if text is None:
        return None
    m, out = _row(project, text, row_type)
    return _proba(m, project, out)


def predict_label_row(project, text, row_type) -> str | None:
    if text is None:
        return None
    m, out = _row(project, text, row_type)
    return _label(m, out)


def _json_plan(m: Model):
    if m.json_plan is None:
        from sqlml.scoring import textscan
        from sqlml.scoring.rows import JsonPlan

        m.json_plan = JsonPlan(m.scorer, m.ref.project, textscan.scanner(pg_internals.compiled_cache_dir()))
        m.json_value = m.json_plan.predictor(m.answers, counters.slot(m.ref.project))
    return m.json_plan


def predict(project, features, as_array=False) -> float:
    """``features``: jsonb's text (``sqlml._predict_jsonb`` takes no transform: ``JsonPlan.predictor``
    reads the text), or a float8[] (``as_array``)."""
    if not as_array:  # ``resolve`` inlined, as in ``predict_row``: this too runs once per row of a scan
        hit = _statement.get((project, None))
        if hit is None or hit[0] != statement_key():
            hit = _statement[(project, None)] = (statement_key(), *_lookup(project, None))
        m = hit[1]
        if m.json_value is None:
            _json_plan(m)
        return m.json_value("{}" if features is None else features)
    m, out = _other(project, features, as_array)
    return m.row_value(out)


def predict_proba(project, features, as_array=False) -> list[float]:
    m, out = _other(project, features, as_array)
    return _proba(m, project, out)


def predict_label(project, features, as_array=False) -> str:
    m, out = _other(project, features, as_array)
    return _label(m, out)


def _proba(m: Model, project, out) -> list[float]:
    if m.task == REGRESSION:
        raise SqlmlError(f'project "{project}" is a regression: it has no class probabilities',
                         hint="use sqlml.predict for its values", sqlstate="42809")
    return out.tolist()


def _label(m: Model, out) -> str:
    if m.task == REGRESSION:
        return repr(float(out[0]))
    scores = out.tolist()
    return str(m.classes[scores.index(max(scores))])


def classes(project) -> list[str]:
    m = resolve(project)
    return [str(c) for c in m.classes]
