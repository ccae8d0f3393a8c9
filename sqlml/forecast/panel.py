"""Rows in, a panel of regular series out: one grid per series, gaps and NULLs filled, regressors aligned.

A *panel* holds many series. Each series lives on its own regular grid from its first observed
timestamp to its last (series of different lengths keep their own start and end); a timestamp the
data lacks, or a NULL target, is missing on the grid and gets filled (``fill``: linear interpolation
by default, or zero for sales-like data where no row means nothing sold). Rows falling on the same
grid point are summed when ``aggregate`` is 'sum' and averaged otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sqlml.errors import DATA_EXCEPTION, INVALID_PARAMETER, SqlmlError
from sqlml.forecast.calendar import Frequency, infer_frequency

FILLS = ("interpolate", "zero")


@dataclass
class Series:
    key: tuple
    start: np.datetime64          # timestamp of y[0]
    y: np.ndarray                 # float64 on the grid, filled
    observed: np.ndarray          # bool: the grid point had a non-NULL target
    regressors: dict = field(default_factory=dict)  # name -> float64 on the grid, filled

    def __len__(self):
        return len(self.y)


@dataclass
class Panel:
    freq: Frequency
    series_columns: tuple
    regressors: tuple
    series: list

    def end(self, i: int) -> np.datetime64:
        s = self.series[i]
        return self.freq.add(s.start, len(s) - 1)


def _keys(series_values: dict, n: int) -> tuple[list, np.ndarray]:
    """The distinct series keys (in first-seen order of their sorted form) and each row's key index."""
    if not series_values:
        return [()], np.zeros(n, dtype=np.int64)
    codes, uniques = [], []
    for values in series_values.values():
        u, inv = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
        codes.append(inv)
        uniques.append(u)
    combined = np.zeros(n, dtype=np.int64)
    for inv, u in zip(codes, uniques):
        combined = combined * len(u) + inv
    distinct, row_key = np.unique(combined, return_inverse=True)
    first_row = np.zeros(len(distinct), dtype=np.int64)
    first_row[row_key[::-1]] = np.arange(n)[::-1]
    keys = [tuple(series_values[c][r] for c in series_values) for r in first_row]
    return keys, row_key


def build_panel(ts: np.ndarray, y: np.ndarray, series_values: dict, regressors: dict,
                freq: Frequency | None = None, fill: str = "interpolate", aggregate: str = "sum") -> Panel:
    """The panel of the rows given column-wise.

    ts : datetime64 of shape (n,), NaT where NULL; y : float64 of shape (n,), NaN where NULL;
    series_values : column name -> object array of shape (n,) (the series key columns);
    regressors : column name -> float64 array of shape (n,)."""
    if fill not in FILLS:
        raise SqlmlError(f'option "fill" is {fill!r}', hint=f"use one of: {', '.join(FILLS)}",
                         sqlstate=INVALID_PARAMETER)
    ts = np.asarray(ts, dtype="datetime64[s]")
    keep = ~np.isnat(ts)
    if not keep.all():
        ts, y = ts[keep], y[keep]
        series_values = {k: np.asarray(v, dtype=object)[keep] for k, v in series_values.items()}
        regressors = {k: np.asarray(v)[keep] for k, v in regressors.items()}
    if len(ts) == 0:
        raise SqlmlError("no row has a time", sqlstate=DATA_EXCEPTION, hint="the time column is NULL on every row")
    keys, row_key = _keys(series_values, len(ts))
    order = np.lexsort((ts, row_key))
    bounds = np.searchsorted(row_key[order], np.arange(len(keys) + 1))
    if freq is None:
        freq = infer_frequency([ts[order[bounds[i]:bounds[i + 1]]] for i in range(len(keys))])
    out = []
    for i, key in enumerate(keys):
        rows = order[bounds[i]:bounds[i + 1]]
        s = _one_series(key, ts[rows], y[rows],
                        {k: np.asarray(v, dtype=np.float64)[rows] for k, v in regressors.items()},
                        freq, fill, aggregate)
        if s is not None:
            out.append(s)
    if not out:
        raise SqlmlError("every target value is NULL", sqlstate=DATA_EXCEPTION, hint="check the target column")
    return Panel(freq, tuple(series_values), tuple(regressors), out)


def _one_series(key, ts, y, regressors, freq: Frequency, fill: str, aggregate: str) -> Series | None:
    have = ~np.isnan(y)
    if not have.any():
        return None  # no observed value: nothing to learn or forecast from
    start = ts[have][0]
    idx = freq.index(start, ts)
    inside = (idx >= 0) & (idx <= idx[have].max())
    idx, y, have = idx[inside], y[inside], have[inside]
    length = int(idx.max()) + 1
    total = np.zeros(length)
    count = np.zeros(length)
    np.add.at(total, idx[have], y[have])
    np.add.at(count, idx[have], 1)
    observed = count > 0
    values = total if aggregate == "sum" else np.divide(total, np.maximum(count, 1))
    values = values.astype(np.float64)
    values[~observed] = np.nan
    filled = _fill(values, fill)
    regs = {}
    for name, r in regressors.items():
        grid = np.full(length, np.nan)
        r = r[inside]
        ok = ~np.isnan(r)
        grid[idx[ok]] = r[ok]
        regs[name] = _carry_forward(grid)
    return Series(key, start, filled, observed, regs)


def _fill(values: np.ndarray, fill: str) -> np.ndarray:
    missing = np.isnan(values)
    if not missing.any():
        return values
    if fill == "zero":
        return np.where(missing, 0.0, values)
    x = np.arange(len(values))
    return np.interp(x, x[~missing], values[~missing])


def _carry_forward(values: np.ndarray) -> np.ndarray:
    """Missing regressor values take the last known one (0 before the first)."""
    missing = np.isnan(values)
    if not missing.any():
        return values
    idx = np.where(missing, 0, np.arange(len(values)))
    np.maximum.accumulate(idx, out=idx)
    out = values[idx]
    return np.where(np.isnan(out), 0.0, out)
