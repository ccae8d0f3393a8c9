"""The global model's rows: one per (series, origin, step), features known at the origin plus the
target time's calendar and regressors.

Every value of the series is divided by the series' scale at the origin (its mean absolute value
over the last 4 seasons), so that one model learns from series of any size; the model predicts
the scaled target, and the forecast multiplies it back. Forecasting is *direct*: the step is a
feature, so the whole horizon is one model call, with no recursion through earlier predictions.
"""

from __future__ import annotations

import numpy as np

from sqlml.forecast.calendar import Frequency, calendar_features


def n_lags(season: int) -> int:
    return int(min(max(season, 4), 14))


def tail_length(season: int, horizon: int) -> int:
    """How much history the features of any step up to ``horizon`` read back from an origin."""
    return int(max(4 * season, n_lags(season), season * (int(np.ceil(horizon / season)) + 3)) + 1)


def names(freq: Frequency, regressors: tuple) -> list[str]:
    m = freq.season
    cal = list(calendar_features(np.array(["2020-01-01"], dtype="datetime64[s]"), freq))
    return (["step", "log_scale", "age", "zeros_share", "mean_season", "mean_4_seasons", "std_season",
             "seasonal_lag", "seasonal_mean"] + [f"lag_{k}" for k in range(1, n_lags(m) + 1)] + cal
            + [f"regressor_{r}" for r in regressors])


def scale_at(y: np.ndarray, origins: np.ndarray, season: int) -> np.ndarray:
    """Mean |y| over the 4 seasons up to each origin (inclusive); 1 where that is 0."""
    window = 4 * season
    c = np.concatenate([[0.0], np.cumsum(np.abs(y))])
    lo = np.maximum(origins + 1 - window, 0)
    s = (c[origins + 1] - c[lo]) / (origins + 1 - lo)
    return np.where(s > 0, s, 1.0)


def rows(y: np.ndarray, origins: np.ndarray, steps: np.ndarray, target_ts: np.ndarray, freq: Frequency,
         regressors: dict, age_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features of one series at each (origin, step) pair (flat arrays of equal length).

    y : the series up to at least the largest origin (filled, float64); origins : index of the last
    known point; steps : 1..H; target_ts : timestamp of origin + step; regressors : name -> value at
    the target time. ``age_offset``: points of the series before y[0] (when y is a stored tail).
    Returns (features of shape (n, n_features) float32, scale of shape (n,))."""
    m = freq.season
    scale = scale_at(y, origins, m)
    c1 = np.concatenate([[0.0], np.cumsum(y)])
    c2 = np.concatenate([[0.0], np.cumsum(y * y)])
    cz = np.concatenate([[0.0], np.cumsum(y == 0)])

    def window_mean(c, width):
        lo = np.maximum(origins + 1 - width, 0)
        return (c[origins + 1] - c[lo]) / (origins + 1 - lo)

    mean_m = window_mean(c1, m)
    std_m = np.sqrt(np.maximum(window_mean(c2, m) - mean_m ** 2, 0))
    cols = [steps.astype(np.float64), np.log1p(scale), np.log1p(origins + 1 + age_offset),
            window_mean(cz, 4 * m), mean_m / scale, window_mean(c1, 4 * m) / scale, std_m / scale]
    # the most recent value of the same season before the origin, and the mean of the last four
    back = m * np.ceil(steps / m).astype(np.int64)
    same = [_at(y, origins + steps - back - k * m) for k in range(4)]
    cols.append(same[0] / scale)
    stacked = np.stack(same)
    known = np.isfinite(stacked).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # no same-season value yet: NaN, as LightGBM expects
        cols.append(np.where(known > 0, np.nansum(stacked, axis=0) / np.maximum(known, 1), np.nan) / scale)
    for k in range(1, n_lags(m) + 1):
        cols.append(_at(y, origins - k + 1) / scale)
    cols += list(calendar_features(target_ts, freq).values())
    cols += [np.asarray(v, dtype=np.float64) for v in regressors.values()]
    return np.column_stack(cols).astype(np.float32) if cols else np.zeros((0, 0), np.float32), scale


def _at(y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    ok = (idx >= 0) & (idx < len(y))
    return np.where(ok, y[np.clip(idx, 0, max(len(y) - 1, 0))], np.nan)
