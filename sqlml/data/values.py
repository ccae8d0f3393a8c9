"""Feature values given at scoring time (a row as jsonb, or a float8[]) -> raw columns.

The same raw layouts as ingest (see ``sqlml.data.convert``), so that scoring and training share
one type conversion. Errors name the feature and what was expected.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timezone
from decimal import Decimal

import numpy as np

from sqlml.data.schema import BOOLEAN, CATEGORY, DATE, FLOAT32_MAX, NUMERIC, TIMESTAMP, VECTOR, FeatureSchema
from sqlml.errors import (
    DATATYPE_MISMATCH,
    INVALID_PARAMETER,
    NUMERIC_VALUE_OUT_OF_RANGE,
    UNDEFINED_COLUMN,
    SqlmlError,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _bad(feature, expected, value) -> SqlmlError:
    shown = f'"{value}"' if isinstance(value, str) else json.dumps(value, default=str)
    return SqlmlError(f'feature "{feature.name}" must be {expected}, got {shown[:60]}', sqlstate=DATATYPE_MISMATCH,
                      hint="pass the value in the type the model was trained on")


def number(feature, value) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, Decimal)):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value)
        except ValueError:
            raise _bad(feature, "a number", value) from None
    else:
        raise _bad(feature, "a number", value)
    if math.isinf(v):
        raise SqlmlError(f'feature "{feature.name}" is {value}; sqlml cannot score infinite values',
                         hint="pass a finite number, or NULL for missing", sqlstate=INVALID_PARAMETER)
    if abs(v) > FLOAT32_MAX:
        raise out_of_range(feature.name, f"is {v:.6g}")
    return v


def out_of_range(name: str, what: str) -> SqlmlError:
    """The error for a number beyond float32, the precision models compute in."""
    return SqlmlError(f'feature "{name}" {what}, beyond ±3.4e38, the float32 range sqlml\'s models compute in',
                      hint="scale the feature (divide it, or take its logarithm) the same way for training and "
                           "scoring", sqlstate=NUMERIC_VALUE_OUT_OF_RANGE)


def boolean(feature, value) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, Decimal)) and value in (0, 1):
        return float(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "t", "f"):
        return 1.0 if value.lower() in ("true", "t") else 0.0
    raise _bad(feature, "a boolean", value)


def epoch_seconds(feature, value) -> float:
    if value is None:
        return math.nan
    if not isinstance(value, str):
        raise _bad(feature, "a date or timestamp (ISO 8601 text)", value)
    try:
        if feature.kind == DATE and len(value) == 10:
            d = date.fromisoformat(value)
            return float((d - date(1970, 1, 1)).days * 86400)
        dt = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        raise _bad(feature, "a date or timestamp (ISO 8601 text)", value) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)  # like extract(epoch FROM timestamp)
    return (dt - _EPOCH).total_seconds()


def vector(feature, value) -> list[float]:
    if value is None:
        return [math.nan] * feature.dim
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _bad(feature, f"a vector of {feature.dim} numbers", value) from None
    if not isinstance(value, list) or len(value) != feature.dim:
        raise _bad(feature, f"a vector of {feature.dim} numbers", value)
    return [number(feature, v) for v in value]


def text(feature, value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value)


def from_rows(schema: FeatureSchema, rows: list[dict], project: str = "") -> dict:
    """Raw columns from feature dicts (``to_jsonb(row)``); keys that are not features are ignored."""
    for r in rows:
        if not isinstance(r, dict):
            example = json.dumps({f.name: None for f in schema.features[:3]})
            raise SqlmlError("features must be a JSON object (feature name -> value), "
                             f"got {json.dumps(r, default=str)[:60]}",
                             hint=f"pass the row itself, or jsonb such as {example}",
                             sqlstate=DATATYPE_MISMATCH)
    columns = {}
    for f in schema.features:
        if rows and f.name not in rows[0]:
            missing = [g.name for g in schema.features if g.name not in rows[0]]
            raise SqlmlError(f'feature column{"s" if len(missing) > 1 else ""} {", ".join(map(repr, missing))} '
                             f'missing{" for project " + repr(project) if project else ""}',
                             hint=f"the model needs: {', '.join(g.name for g in schema.features)}",
                             sqlstate=UNDEFINED_COLUMN)
        vals = [r.get(f.name) for r in rows]
        if f.kind == NUMERIC:
            columns[f.name] = np.array([number(f, v) for v in vals], dtype=np.float64)
        elif f.kind == BOOLEAN:
            columns[f.name] = np.array([boolean(f, v) for v in vals], dtype=np.float64)
        elif f.kind in (DATE, TIMESTAMP):
            columns[f.name] = np.array([epoch_seconds(f, v) for v in vals], dtype=np.float64)
        elif f.kind == VECTOR:
            columns[f.name] = np.array([vector(f, v) for v in vals], dtype=np.float64).reshape(len(vals), f.dim)
        elif f.kind == CATEGORY:
            columns[f.name] = np.array([text(f, v) for v in vals], dtype=object)
    return columns


def from_array(schema: FeatureSchema, values: list, project: str = "") -> dict:
    """Raw columns (one row) from a float8[] in training feature order (numbers, booleans, vectors only)."""
    width = sum(f.dim if f.kind == VECTOR else 1 for f in schema.features)
    unusable = [f.name for f in schema.features if f.kind not in (NUMERIC, BOOLEAN, VECTOR)]
    if unusable:
        raise SqlmlError(f"project {project!r} has non-numeric features ({', '.join(unusable)}); "
                         "a float8[] cannot hold them",
                         hint="pass the row itself or a jsonb object instead", sqlstate=DATATYPE_MISMATCH)
    if values is None or len(values) != width:
        raise SqlmlError(f"project {project!r} needs {width} values in the array, "
                         f"got {0 if values is None else len(values)}",
                         hint="features in training order: " + ", ".join(schema_order(schema)),
                         sqlstate=INVALID_PARAMETER)
    columns, i = {}, 0
    for f in schema.features:
        if f.kind == VECTOR:
            columns[f.name] = np.array([[number(f, v) for v in values[i:i + f.dim]]], dtype=np.float64)
            i += f.dim
        else:
            columns[f.name] = np.array([number(f, values[i])], dtype=np.float64)
            i += 1
    return columns


def schema_order(schema: FeatureSchema) -> list[str]:
    return [f"{f.name}[{f.dim}]" if f.kind == VECTOR else f.name for f in schema.features]
