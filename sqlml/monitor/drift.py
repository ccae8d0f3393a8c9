"""Drift: per-feature baselines stored at training, and the population stability index (PSI).

A *baseline* is a binned distribution, as plain JSON:
  {"type": "bins", "edges": [c1 .. c_{k-1}], "freq": [k bins + NULL], "rows": n}
      numbers with many values: bins (-inf, c1], (c1, c2], ..., (c_{k-1}, inf) at the training
      quantiles, then the NULL share
  {"type": "values", "values": [v1 .. vk], "freq": [k values + other + NULL], "rows": n}
      text, booleans and numbers with few values: the most frequent values, everything else,
      then the NULL share

``frequencies(baseline, values)`` puts new values into the same bins; ``psi(expected, actual)`` is
sum((a - e) * ln(a / e)) over the bins, with empty bins floored at ``EPSILON`` so that a bin that
empties or fills counts heavily but finitely. Common reading: below 0.1 no drift, 0.1-0.25
moderate, above 0.25 major.

Raw layouts are those of ``sqlml.data.convert``: dates and timestamps are numbers (epoch
seconds), a vector is reduced to its Euclidean norm.
"""

from __future__ import annotations

import numpy as np

from sqlml.data.schema import BINARY, CATEGORY, VECTOR
from sqlml.data.task import task_of
from sqlml.errors import INVALID_PARAMETER, SqlmlError

BINS = 10
TOP_VALUES = 20
BASELINE_ROWS = 50_000  # training rows the feature baselines are computed on (seeded sample beyond)
ROWS_PER_BIN = 25  # prediction baselines: at least this many holdout rows per bin (4 bins at least)
FEW_VALUES = 10  # numbers with at most this many distinct values are binned by value
EPSILON = 1e-4
MODERATE, MAJOR = 0.1, 0.25
NONE, MODERATE_DRIFT, MAJOR_DRIFT = "none", "moderate", "major"


def as_values(kind: str | None, raw: np.ndarray) -> np.ndarray:
    """The 1-D array a feature's distribution is measured on: float64 with NaN, or object with None."""
    if kind == CATEGORY:
        return np.asarray(raw, dtype=object)
    raw = np.asarray(raw, dtype=np.float64)
    if kind == VECTOR:
        rows = raw.reshape(len(raw), -1)
        missing = np.isnan(rows).all(axis=1)
        return np.where(missing, np.nan, np.sqrt(np.nansum(rows * rows, axis=1)))
    return raw


def baseline(values: np.ndarray, bins: int = BINS, top: int = TOP_VALUES) -> dict:
    """The baseline of a 1-D array from ``as_values``."""
    n = len(values)
    if values.dtype == object:
        from collections import Counter

        counts = Counter(str(v) for v in values if v is not None)
        kept = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
        return _values_baseline(kept, values, n)
    present = values[~np.isnan(values)]
    distinct = np.unique(present)
    if len(distinct) <= FEW_VALUES:
        return _values_baseline([float(v) for v in distinct], values, n)
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    base = {"type": "bins", "edges": [float(e) for e in edges], "rows": n}
    base["freq"] = frequencies(base, values).tolist()
    return base


def _values_baseline(kept: list, values: np.ndarray, n: int) -> dict:
    base = {"type": "values", "values": kept, "rows": n}
    base["freq"] = frequencies(base, values).tolist()
    return base


def frequencies(base: dict, values: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the bins of ``base`` (they sum to 1; all zero for no rows)."""
    n = len(values)
    if base["type"] == "bins":
        values = np.asarray(values, dtype=np.float64)
        missing = np.isnan(values)
        idx = np.searchsorted(np.asarray(base["edges"], dtype=np.float64), values[~missing], side="left")
        counts = np.bincount(idx, minlength=len(base["edges"]) + 1).astype(np.float64)
        counts = np.append(counts, missing.sum())
    else:
        k = len(base["values"])
        if values.dtype == object:
            index = {v: i for i, v in enumerate(base["values"])}
            idx = [k + 1 if v is None else index.get(str(v), k) for v in values]
        else:
            values = np.asarray(values, dtype=np.float64)
            known = np.asarray(base["values"], dtype=np.float64)  # sorted (np.unique)
            pos = np.clip(np.searchsorted(known, values), 0, max(k - 1, 0))
            found = (known[pos] == values) if k else np.zeros(len(values), dtype=bool)
            idx = np.where(np.isnan(values), k + 1, np.where(found, pos, k))
        counts = np.bincount(np.asarray(idx, dtype=np.int64), minlength=k + 2).astype(np.float64)
    return counts / n if n else counts


def psi(expected, actual, epsilon: float = EPSILON) -> float:
    """Population stability index of ``actual`` against ``expected`` (two arrays of bin shares)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def level(value: float, moderate: float = MODERATE, major: float = MAJOR) -> str:
    if value >= major:
        return MAJOR_DRIFT
    if value >= moderate:
        return MODERATE_DRIFT
    return NONE


# --- predictions ---------------------------------------------------------------------------------

def prediction_values(task: str, out: np.ndarray, classes: tuple) -> np.ndarray:
    """What the prediction distribution is measured on: values (regression), P(second class)
    (binary), the predicted label (multiclass)."""
    if not task_of(task).classification:
        return np.asarray(out, dtype=np.float64).ravel()
    if task == BINARY:
        return np.asarray(out, dtype=np.float64)[:, 1]
    return np.asarray([str(classes[i]) for i in np.asarray(out).argmax(axis=1)], dtype=object)


def prediction_baseline(task: str, out: np.ndarray, classes: tuple) -> dict:
    """Baseline of the predictions on the holdout (unseen rows, like the rows scored later). The
    holdout can be small: fewer bins keep the PSI of an unchanged population near zero
    (its expected value grows with bins / rows)."""
    bins = int(np.clip(len(out) // ROWS_PER_BIN, 4, BINS))
    return {**baseline(prediction_values(task, out, classes), bins=bins, top=max(TOP_VALUES, len(classes))),
            "task": task}


def feature_baselines(features, columns: dict, max_rows: int = BASELINE_ROWS) -> dict:
    """``{feature name: baseline}`` for ``features`` (``sqlml.data.schema.Feature``) over raw
    ``columns``: on all rows, or a seeded sample of ``max_rows`` (bin shares to about 0.5%)."""
    n = len(next(iter(columns.values()))) if columns else 0
    rows = np.sort(np.random.default_rng(0).choice(n, size=max_rows, replace=False)) if n > max_rows else slice(None)
    return {f.name: {**baseline(as_values(f.kind, columns[f.name][rows])), "kind": f.kind} for f in features}


def compare(base: dict, values: np.ndarray) -> dict:
    """PSI of ``values`` against ``base``, with both distributions for the record."""
    actual = frequencies(base, values)
    return {"psi": psi(base["freq"], actual), "expected": list(base["freq"]), "actual": actual.tolist()}


def check_thresholds(moderate, major) -> None:
    """A monitor call's PSI thresholds: 0 < moderate <= major."""
    if moderate is None or major is None or not 0 < moderate <= major:
        raise SqlmlError(f"thresholds moderate={moderate}, major={major} are not ordered",
                         sqlstate=INVALID_PARAMETER, hint="pass 0 < moderate <= major, such as 0.1 and 0.25")


def row(feature: str, what: str, res: dict, n: int, moderate: float, major: float) -> dict:
    """One row of ``sqlml.drift``: ``res`` is :func:`compare`'s result for ``feature`` (``what``:
    'feature' or 'prediction') over ``n`` rows, leveled by the thresholds."""
    return {"feature": feature, "what": what, "psi": res["psi"], "drift": level(res["psi"], moderate, major),
            "rows": int(n), "detail": {**res, "moderate": moderate, "major": major}}
