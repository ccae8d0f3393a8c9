"""A registry model scored outside the database, with the database's answers.

``OfflineModel(blob, row)`` takes a model's ONNX and its registry row (``Client.onnx``, which
verified the sha256) and scores pandas DataFrames: the same type conversion as the server
(``sqlml.data.convert``), the same ONNX graph, and the same three outputs as
``sqlml.predict_batch``: prediction (the value, the numeric label or the class index), label
(text) and probabilities (classification). Used by ``sqlml.spark`` on executors, and by
benchmarks; it needs numpy, pandas and onnxruntime, never a database.
"""

from __future__ import annotations

import numpy as np

from sqlml.data import convert
from sqlml.data.schema import BOOLEAN, CATEGORY, DATE, NUMERIC, TIMESTAMP, VECTOR, FeatureSchema
from sqlml.data.task import task_of
from sqlml.errors import UNDEFINED_COLUMN, SqlmlError


def raw_column(kind: str, series, dim: int = 0) -> np.ndarray:
    """One pandas column as the raw layout of ``sqlml.data.convert`` (NaN / None for missing).

    Dates and naive timestamps are read as UTC (like ``extract(epoch FROM timestamp)``); give
    Spark ``spark.sql.session.timeZone=UTC`` so that timestamps arrive unshifted.
    """
    import pandas as pd

    if kind in (NUMERIC, BOOLEAN):
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            return series.to_numpy(np.float64, na_value=np.nan)
        # object columns: Decimal (numeric), nullable booleans, None
        return np.array([np.nan if v is None or v is pd.NA else float(v) for v in series], dtype=np.float64)
    if kind == CATEGORY:
        values = series.astype(object).where(series.notna(), None).to_numpy(object)
        for i, v in enumerate(values):
            if v is not None and not isinstance(v, str):
                values[i] = ("true" if v else "false") if isinstance(v, (bool, np.bool_)) else str(v)
        return values
    if kind in (DATE, TIMESTAMP):
        stamps = pd.to_datetime(series, utc=True)
        seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        return seconds.to_numpy(np.float64, na_value=np.nan)
    if kind == VECTOR:
        out = np.full((len(series), dim), np.nan)
        for i, v in enumerate(series):
            if v is not None and not (isinstance(v, float) and np.isnan(v)):
                out[i] = np.asarray(v, dtype=np.float64)
        return out
    raise ValueError(f"unknown feature kind {kind}")


class OfflineModel:
    def __init__(self, blob: bytes, row: dict, threads: int = 1):
        from sqlml.onnx.convert import session

        self.row = row
        self.project, self.version, self.sha256 = row["project"], row["version"], row["sha256"]
        self.schema = FeatureSchema.from_json(row["feature_schema"])
        self.task = self.schema.target.task
        self.classes = [str(c) for c in self.schema.target.classes]
        self.session = session(blob, threads)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.schema.features]

    def outputs(self, frame) -> dict:
        """Model outputs for the rows of pandas DataFrame ``frame`` (other columns are ignored):
        {"prediction": float64 (n,), "label": list of str, "probabilities": float64 (n, k) or None}."""
        from sqlml.onnx.convert import run

        missing = [f for f in self.feature_names if f not in frame.columns]
        if missing:
            raise SqlmlError(f"feature column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} missing "
                             f"for project {self.project!r}", sqlstate=UNDEFINED_COLUMN,
                             hint=f"the model needs: {', '.join(self.feature_names)}")
        columns = {f.name: raw_column(f.kind, frame[f.name], f.dim) for f in self.schema.features}
        out = run(self.session, convert.as_feeds(self.schema, convert.model_inputs(self.schema, columns)), self.task)
        if not task_of(self.task).classification:
            return {"prediction": out, "label": [repr(float(v)) for v in out], "probabilities": None}
        idx = out.argmax(axis=1)
        if self.schema.target.numeric_labels:
            prediction = np.asarray(self.schema.target.classes, dtype=np.float64)[idx]
        else:
            prediction = idx.astype(np.float64)
        return {"prediction": prediction, "label": [self.classes[i] for i in idx], "probabilities": out}
