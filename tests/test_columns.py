"""``sqlml.data.columns`` without a database: which columns a training learns from, as tables of cases."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

from sqlml.data.columns import check_columns, check_target, choose_features, identifier
from sqlml.data.schema import CATEGORY, NUMERIC, Feature
from sqlml.errors import SqlmlError

N = 100
Column = namedtuple("Column", "name pg_type")
rng = np.random.default_rng(0)
SPARSE = rng.choice(10_000, N, replace=False).astype(np.float64)  # unique, far from consecutive


@pytest.mark.parametrize("name, pg_type, values, expected", [
    ("id", "int4", np.arange(N, dtype=float), True),               # the usual key
    ("customer_id", "int8", SPARSE, True),                         # named like a key
    ("row_no", "int4", np.arange(N, dtype=float) + 500, True),     # a serial run, whatever its name
    ("amount", "int4", SPARSE, False),                             # unique integers, but measurements
    ("id", "float8", np.arange(N, dtype=float), False),            # not an integer column
    ("id", "int4", np.r_[np.arange(N - 1), 0].astype(float), False),  # a repeated value
    ("id", "int4", np.r_[np.arange(N - 1), np.nan], False),        # a NULL
    ("id", "int4", np.arange(20, dtype=float), False),             # too few rows to tell
])
def test_identifier(name, pg_type, values, expected):
    assert identifier(Feature(name, NUMERIC, pg_type), values, len(values)) is expected


def _check(columns: dict):
    features = [Feature(k, CATEGORY if v.dtype == object else NUMERIC, "text" if v.dtype == object else "float8")
                for k, v in columns.items()]
    dropped = {}
    kept = check_columns(features, columns, N, dropped)
    return [f.name for f in kept], dropped


def test_check_columns_keeps_features_and_drops_identifiers():
    kept, dropped = _check({
        "x": rng.normal(size=N),
        "city": np.array([["a", "b", None][i % 3] for i in range(N)], dtype=object),
        "email": np.array([f"u{i}@example.com" for i in range(N)], dtype=object),  # one value per row
    })
    assert kept == ["x", "city"]
    assert dropped == {"email": f"identifier-like text ({N} distinct values in {N} rows)"}


@pytest.mark.parametrize("columns, message, hint", [
    ({"x": np.full(N, np.nan)}, 'column "x" is NULL in every row', "exclude => '{x}'"),
    ({"t": np.array([None] * N, dtype=object)}, 'column "t" is NULL in every row', "exclude => '{t}'"),
    ({"x": np.r_[np.inf, -np.inf, np.ones(N - 2)]}, 'column "x" contains Infinity in 2 rows', "filter those rows"),
    ({"x": np.r_[1e300, -3.5e38, 3.4e38, np.ones(N - 3)]}, 'column "x" holds values beyond ±3.4e38, the float32 range '
     "sqlml's models compute in, in 2 rows", "scale it in a view"),
    ({"email": np.array([f"u{i}" for i in range(N)], dtype=object)}, "no usable feature columns remain",
     "email: identifier-like text"),
])
def test_check_columns_refuses_what_cannot_be_learned(columns, message, hint):
    with pytest.raises(SqlmlError) as e:
        _check(columns)
    assert message in str(e.value) and hint in (e.value.hint or "")


COLUMNS = [Column("age", "int4"), Column("city", "text"), Column("shape", "polygon"), Column("churned", "bool")]


@pytest.mark.parametrize("target, exclude, message", [
    ("churn", [], 'column "churn" not found in customers; columns are: age, city, shape, churned'),
    ("churned", ["cty"], 'excluded column "cty" not found in customers; columns are: age, city, shape, churned'),
    ("churned", ["age", "city"], "customers has no feature columns besides the target"),
])
def test_choose_features_errors_name_the_columns(target, exclude, message):
    with pytest.raises(SqlmlError, match=message):
        choose_features(COLUMNS, target, exclude, "customers")


def test_choose_features_drops_unsupported_types_with_the_fix():
    features, target, dropped = choose_features(COLUMNS, "churned", [], "customers")
    assert [f.name for f in features] == ["age", "city"] and target.name == "churned"
    assert dropped == {"shape": "type polygon is not supported (cast it in a view to use it)"}


@pytest.mark.parametrize("y_raw", [[None, None], [float("nan"), None]])
def test_check_target_refuses_a_target_with_no_value(y_raw):
    with pytest.raises(SqlmlError, match='target "y" is NULL in every row'):
        check_target("y", y_raw)
    check_target("y", [None, 1.0])  # one known value is enough here (the search needs more, and says so)
