"""Scoring inside the backend: model resolution and caching, row and batch predictions.

Per backend, ONNX Runtime sessions are cached by model id (a model never changes). Which model a
project name means is resolved once per SQL statement: after ``deploy`` or ``rollback``, the next
statement in any session scores with the newly deployed model.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass

import numpy as np

from sqlml.data import convert, values
from sqlml.data.schema import REGRESSION, FeatureSchema
from sqlml.errors import UNDEFINED_OBJECT, SqlmlError
from sqlml.registry import store
from sqlml.server import counters, privileged
from sqlml.server.spi import spi

_pg = ctypes.CDLL(None)
_pg.GetCurrentStatementStartTimestamp.restype = ctypes.c_int64
_pg.GetCurrentCommandId.restype = ctypes.c_uint32
_pg.GetCurrentCommandId.argtypes = [ctypes.c_bool]


def statement_key() -> tuple:
    """Changes with every statement, and with every command inside a function that writes."""
    return _pg.GetCurrentStatementStartTimestamp(), _pg.GetCurrentCommandId(False)


@dataclass
class Loaded:
    ref: store.ModelRef
    schema: FeatureSchema
    session: object

    @property
    def task(self) -> str:
        return self.schema.target.task

    @property
    def classes(self) -> tuple:
        return self.schema.target.classes

    def predict_columns(self, columns: dict) -> np.ndarray:
        """Probabilities (n, k) or values (n,) for raw columns."""
        from sqlml.onnx.convert import run

        feeds = convert.as_feeds(self.schema, convert.model_inputs(self.schema, columns))
        out = run(self.session, feeds, self.task)
        counters.add(self.ref.project, len(out))  # rows scored, for sqlml.prediction_counts (metrics)
        return out

    def value(self, out: np.ndarray) -> np.ndarray:
        """What ``sqlml.predict`` returns: the value, the numeric label, or the class index."""
        if self.task == REGRESSION:
            return out
        idx = out.argmax(axis=1)
        if self.schema.target.numeric_labels:
            return np.asarray(self.classes, dtype=np.float64)[idx]
        return idx.astype(np.float64)

    def labels(self, out: np.ndarray) -> list[str]:
        if self.task == REGRESSION:
            return [repr(float(v)) for v in out]
        return [str(self.classes[i]) for i in out.argmax(axis=1)]


_models: dict[int, Loaded] = {}
_resolved: dict[str, tuple] = {}


def resolve(spec: str) -> Loaded:
    """The model ``spec`` ('churn' = deployed, 'churn@3' = version 3) means in this statement."""
    key = statement_key()
    hit = _resolved.get(spec)
    if hit is not None and hit[0] == key:
        return _models[hit[1]]
    name, version = store.parse_project_spec(spec)
    rows = spi.execute("SELECT id, version, sha256 FROM sqlml._model_ref($1, $2::int)", [name, version])
    if not rows:
        if version is None:
            raise SqlmlError(f'project "{name}" has no deployed model', sqlstate=UNDEFINED_OBJECT,
                             hint="train one (sqlml.train) or deploy a version (sqlml.deploy)")
        raise SqlmlError(f'project "{name}" has no version {version}', sqlstate=UNDEFINED_OBJECT,
                         hint=f"SELECT version FROM sqlml.models WHERE project = '{name}'")
    ref = store.ModelRef(rows[0]["id"], name, rows[0]["version"], rows[0]["sha256"])
    if ref.id not in _models:
        _models[ref.id] = load(ref)
    _resolved[spec] = (key, ref.id)
    return _models[ref.id]


def load(ref: store.ModelRef) -> Loaded:
    from sqlml.onnx.convert import session

    blob, _, schema = privileged.run(lambda ex: store.onnx_blob(ex, ref.id))
    return Loaded(ref, FeatureSchema.from_json(schema), session(blob))


def _as_dict(features):
    return json.loads(features) if isinstance(features, str) else features


def one(project: str, features, as_array: bool = False):
    """(model, model output for one row) from a jsonb row or a float8[]."""
    m = resolve(project)
    cols = values.from_array(m.schema, features, project) if as_array else \
        values.from_rows(m.schema, [_as_dict(features) or {}], project)
    return m, m.predict_columns(cols)


def predict(project, features, as_array=False) -> float:
    m, out = one(project, features, as_array)
    return float(m.value(out)[0])


def predict_proba(project, features, as_array=False) -> list[float]:
    m, out = one(project, features, as_array)
    if m.task == REGRESSION:
        raise SqlmlError(f'project "{project}" is a regression: it has no class probabilities',
                         hint="use sqlml.predict for its values", sqlstate="42809")
    return [float(p) for p in out[0]]


def predict_label(project, features, as_array=False) -> str:
    m, out = one(project, features, as_array)
    return m.labels(out)[0]


def classes(project) -> list[str]:
    m = resolve(project)
    return [str(c) for c in m.classes]
