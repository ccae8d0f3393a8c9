"""Type conversion from raw column values to model inputs: the one step outside the ONNX graph.

Raw columns, as ingest or a predict call delivers them (``columns[name]``):
  numeric, boolean      float64 array of shape (n,), NaN for NULL
  category              object array of shape (n,) holding str or None
  date, timestamp       float64 array of shape (n,): seconds since 1970-01-01 UTC, NaN for NULL
  vector                float64 array of shape (n, dim), a row of NaN for NULL

Model inputs (``model_inputs``): name -> 1-D array of shape (n,), float32 for numbers (NaN for
missing) and object (str) for text, NULL text mapped to ``NULL_CATEGORY``. Imputation, encoding
and scaling happen inside the ONNX graph, not here.
"""

from __future__ import annotations

import numpy as np

from sqlml.data.schema import (
    BOOLEAN,
    CATEGORY,
    DATE,
    NULL_CATEGORY,
    NUMERIC,
    TIMESTAMP,
    VECTOR,
    Feature,
    FeatureSchema,
)

SECONDS_PER_DAY = 86400.0


def date_parts(seconds: np.ndarray, with_time: bool) -> list[np.ndarray]:
    """Calendar parts of epoch seconds (UTC), NaN where the input is NaN.

    Order: year, month, day, weekday (0 = Monday), yearday (1-366), epoch_days[, hour, minute].
    """
    seconds = np.asarray(seconds, dtype=np.float64)
    missing = np.isnan(seconds)
    safe = np.where(missing, 0.0, seconds)
    days = np.floor(safe / SECONDS_PER_DAY).astype("int64")
    d = days.astype("datetime64[D]")
    year = d.astype("datetime64[Y]")
    month = d.astype("datetime64[M]")
    parts = [
        year.astype("int64") + 1970,
        (month - year).astype("int64") + 1,
        (d - month).astype("int64") + 1,
        (days + 3) % 7,  # 1970-01-01 was a Thursday
        (d - year).astype("int64") + 1,
        safe / SECONDS_PER_DAY,
    ]
    if with_time:
        in_day = safe - days * SECONDS_PER_DAY
        parts += [np.floor(in_day / 3600.0), np.floor((in_day % 3600.0) / 60.0)]
    return [np.where(missing, np.nan, p.astype(np.float64)) for p in parts]


def feature_inputs(feature: Feature, raw: np.ndarray) -> list[np.ndarray]:
    """The model inputs of one feature column, in ``feature.inputs`` order."""
    if feature.kind in (NUMERIC, BOOLEAN):
        return [np.asarray(raw, dtype=np.float32)]
    if feature.kind == CATEGORY:
        out = np.asarray(raw, dtype=object).copy()
        out[np.equal(out, None)] = NULL_CATEGORY
        return [out]
    if feature.kind in (DATE, TIMESTAMP):
        return [p.astype(np.float32) for p in date_parts(raw, feature.kind == TIMESTAMP)]
    if feature.kind == VECTOR:
        raw = np.asarray(raw, dtype=np.float32).reshape(-1, feature.dim)
        return [np.ascontiguousarray(raw[:, i]) for i in range(feature.dim)]
    raise ValueError(f"unknown feature kind {feature.kind}")


def model_inputs(schema: FeatureSchema, columns: dict) -> dict[str, np.ndarray]:
    """Model input name -> 1-D array, for every input of ``schema``."""
    out = {}
    for f in schema.features:
        out.update(zip(f.inputs, feature_inputs(f, columns[f.name])))
    return out


def as_frame(schema: FeatureSchema, inputs: dict):
    """A pandas DataFrame of the model inputs in graph order (what the sklearn pipeline fits)."""
    import pandas as pd

    return pd.DataFrame({name: inputs[name] for name, _ in schema.inputs}, copy=False)


def as_feeds(schema: FeatureSchema, inputs: dict) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds: each input as a column of shape (n, 1)."""
    return {name: inputs[name].reshape(-1, 1) for name, _ in schema.inputs}
