"""Which columns of a relation a training learns from (pure: arrays in, features out).

``choose_features`` picks the columns whose types sqlml can learn from; once their values are
read, ``check_columns`` refuses columns that cannot be learned from (every value NULL, Infinity,
numbers beyond float32)
and drops those that identify rows instead of describing them: text with a distinct value in
(almost) every row, and ``identifier`` integers. ``check_target`` refuses a target with no value.
Errors name the column and the fix.
"""

from __future__ import annotations

import numpy as np

from sqlml.data.profile import ID_LIKE_MIN_ROWS, ID_LIKE_SHARE
from sqlml.data.schema import CATEGORY, FLOAT32_MAX, Feature, kind_of
from sqlml.errors import DATA_EXCEPTION, NUMERIC_VALUE_OUT_OF_RANGE, UNDEFINED_COLUMN, SqlmlError


def choose_features(columns, target: str, exclude: list[str], relation_text: str):
    """(features, target column, dropped {column: reason}) from the relation's columns."""
    names = [c.name for c in columns]
    by_name = {c.name: c for c in columns}
    if target not in by_name:
        raise SqlmlError(f'column "{target}" not found in {relation_text}; columns are: {", ".join(names)}',
                         hint="pass the name of the column to predict (names are case-sensitive)",
                         sqlstate=UNDEFINED_COLUMN)
    for e in exclude:
        if e not in by_name:
            raise SqlmlError(f'excluded column "{e}" not found in {relation_text}; columns are: {", ".join(names)}',
                             sqlstate=UNDEFINED_COLUMN)
    features, dropped = [], {}
    for c in columns:
        if c.name == target or c.name in exclude:
            continue
        kind = kind_of(c.pg_type)
        if kind is None:
            dropped[c.name] = f"type {c.pg_type} is not supported (cast it in a view to use it)"
            continue
        features.append(Feature(c.name, kind, c.pg_type))
    if not features:
        raise SqlmlError(f"{relation_text} has no feature columns besides the target", sqlstate=DATA_EXCEPTION,
                         hint="train on a relation with at least one numeric, boolean, text, date or vector column")
    return features, by_name[target], dropped


def identifier(f: Feature, values: np.ndarray, n: int) -> bool:
    """An integer column that names rows rather than describes them: unique in every row, and
    either called id / ..._id or a run of consecutive numbers (a serial key). As a feature it
    learns the row order, which is often sorted by the target (iris is)."""
    if f.pg_type not in ("int2", "int4", "int8") or n < ID_LIKE_MIN_ROWS or np.isnan(values).any():
        return False
    if len(np.unique(values)) != n:
        return False
    name = f.name.lower()
    return bool(name == "id" or name.endswith("_id") or values.max() - values.min() + 1 == n)


def check_columns(features: list[Feature], columns: dict, n: int, dropped: dict) -> list[Feature]:
    """Refuse all-NULL and infinite columns; drop identifier-like columns."""
    kept = []
    for f in features:
        raw = columns[f.name]
        if f.kind == CATEGORY:
            present = [v for v in raw if v is not None]
            if not present:
                raise _all_null(f)
            if n >= ID_LIKE_MIN_ROWS and len(set(present)) > ID_LIKE_SHARE * n:
                dropped[f.name] = f"identifier-like text ({len(set(present))} distinct values in {n} rows)"
                continue
        else:
            values = raw if raw.ndim == 1 else raw.reshape(len(raw), -1)
            if np.isnan(values).all():
                raise _all_null(f)
            infinite = np.isinf(values).reshape(n, -1).any(axis=1)  # per row (a vector is one row)
            if infinite.any():
                k = int(infinite.sum())
                raise SqlmlError(f'column "{f.name}" contains Infinity in {k} row{"s" if k > 1 else ""}',
                                 hint=f'filter those rows or exclude the column (exclude => \'{{{f.name}}}\')',
                                 sqlstate=DATA_EXCEPTION)
            huge = (np.abs(values) > FLOAT32_MAX).reshape(n, -1).any(axis=1)
            if huge.any():
                k = int(huge.sum())
                raise SqlmlError(f'column "{f.name}" holds values beyond ±3.4e38, the float32 range sqlml\'s models '
                                 f'compute in, in {k} row{"s" if k > 1 else ""}', sqlstate=NUMERIC_VALUE_OUT_OF_RANGE,
                                 hint="scale it in a view (divide it, or take its logarithm), or exclude it")
            if identifier(f, values, n):
                dropped[f.name] = (f"it identifies rows ({n} unique integers), so sqlml left it out; "
                                   "to use it as a feature, cast it to float8 in a view")
                continue
        kept.append(f)
    if not kept:
        raise SqlmlError("no usable feature columns remain", sqlstate=DATA_EXCEPTION,
                         hint="; ".join(f"{k}: {v}" for k, v in dropped.items()))
    return kept


def check_target(name: str, y_raw) -> None:
    """Refuse a target with no value at all (NULL, or NaN, which sqlml treats as missing)."""
    present = [v for v in y_raw if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if not present:
        raise SqlmlError(f'target "{name}" is NULL in every row', sqlstate=DATA_EXCEPTION,
                         hint="train on rows where the target is known (NULL and NaN targets are not used)")


def _all_null(f: Feature) -> SqlmlError:
    return SqlmlError(f'column "{f.name}" is NULL in every row', sqlstate=DATA_EXCEPTION,
                      hint=f"exclude it (exclude => '{{{f.name}}}') or fill it")
