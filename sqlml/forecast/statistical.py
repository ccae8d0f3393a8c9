"""Statistical forecasters per series, fitted for many series at once: seasonal naive, ETS, Theta, ARIMA.

All four are written in numpy and vectorised over series (and over their parameter grids), so a
thousand series fit in about a second, with no JIT to compile in a cold backend. Each takes
``(series, season, horizon)``. Each fitted series is summarised by a :class:`LinearSeasonalState`,
plain numbers from which ``forecast`` recomputes the path for any horizon up to ``horizon``: this
is what the registry stores for them (as JSON, never a pickle)::

    path(h) = level + offset + slope * (phi + phi^2 + ... + phi^h)  (+ or *)  season[(h - 1) % m]

- seasonal naive: level 0, slope 0, season = the last m values (additive);
- ETS (additive errors, optionally damped additive trend, optionally additive seasonality), each
  series' smoothing parameters picked from a grid by AIC on one-step errors;
- Theta (the standard Theta method: simple exponential smoothing with drift equal to half the
  linear trend, on the series deseasonalised by classical decomposition when a seasonality test
  at lag m passes; multiplicative when the series is positive);
- ARIMA(1,d,1)(0,D,1)_m, differencing chosen as auto.arima does (seasonality test, KPSS),
  coefficients from a grid by AIC on conditional sums of squares; its path is not of the form
  above (AR), so its state is the path itself: level 0, slope 0, season = the ``horizon`` values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_HISTORY_SEASONS = 12  # statistical fits look back at most this many seasons (and at least MIN_HISTORY points)
MIN_HISTORY = 120


@dataclass
class LinearSeasonalState:
    """Per-series state of a fitted statistical forecaster; arrays of shape (n_series,) and (n_series, m)."""

    level: np.ndarray
    slope: np.ndarray
    phi: np.ndarray
    offset: np.ndarray
    season: np.ndarray
    multiplicative: np.ndarray  # bool

    def forecast(self, h: int) -> np.ndarray:
        """Paths of shape (n_series, h)."""
        steps = np.arange(1, h + 1)
        damp = np.cumsum(self.phi[:, None] ** steps[None, :], axis=1)
        trend = self.level[:, None] + self.offset[:, None] + self.slope[:, None] * damp
        m = self.season.shape[1]
        season = self.season[:, (steps - 1) % m]
        return np.where(self.multiplicative[:, None], trend * season, trend + season)

    def to_json(self, i: int) -> dict:
        return {"level": float(self.level[i]), "slope": float(self.slope[i]), "phi": float(self.phi[i]),
                "offset": float(self.offset[i]), "season": [float(v) for v in self.season[i]],
                "multiplicative": bool(self.multiplicative[i])}

    @staticmethod
    def from_json(states: list[dict]) -> LinearSeasonalState:
        m = max(len(s["season"]) for s in states)
        season = np.zeros((len(states), m))
        for i, s in enumerate(states):  # a shorter season (a short series' fallback) repeats to m
            season[i] = np.resize(np.asarray(s["season"], dtype=np.float64), m) if s["season"] else 0.0
        return LinearSeasonalState(np.array([s["level"] for s in states]), np.array([s["slope"] for s in states]),
                                   np.array([s["phi"] for s in states]), np.array([s["offset"] for s in states]),
                                   season, np.array([s["multiplicative"] for s in states], dtype=bool))


def right_aligned(series: list[np.ndarray], season: int) -> tuple[np.ndarray, np.ndarray]:
    """Series padded on the left with NaN into one matrix (n_series, T), each ending at column T-1,
    cut to the last ``max(MIN_HISTORY, MAX_HISTORY_SEASONS * season)`` points; and each one's first column."""
    keep = max(MIN_HISTORY, MAX_HISTORY_SEASONS * season)
    width = min(keep, max(len(s) for s in series))
    out = np.full((len(series), width), np.nan)
    start = np.zeros(len(series), dtype=np.int64)
    for i, s in enumerate(series):
        s = s[-width:]
        out[i, width - len(s):] = s
        start[i] = width - len(s)
    return out, start


def seasonal_naive(series: list[np.ndarray], season: int, horizon: int) -> LinearSeasonalState:
    n = len(series)
    last = np.zeros((n, season))
    for i, s in enumerate(series):
        tail = s[-season:]
        last[i] = tail if len(tail) == season else tail[-1]  # shorter than a season: the naive forecast
    zeros = np.zeros(n)
    return LinearSeasonalState(zeros, zeros.copy(), np.ones(n), zeros.copy(), last, np.zeros(n, dtype=bool))


# --- ETS -----------------------------------------------------------------------------------------

ALPHAS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.6, 0.85, 0.99)
TRENDS = ((0.0, 1.0), (0.01, 1.0), (0.05, 1.0), (0.02, 0.9), (0.05, 0.98), (0.1, 0.95))  # (beta, phi); beta 0: no trend
GAMMAS = (0.0, 0.01, 0.05, 0.1, 0.25)                                                     # 0: no seasonality


def _grid(season: int):
    grid = [(a, b, p, g) for a in ALPHAS for b, p in TRENDS for g in (GAMMAS if season > 1 else (0.0,))
            if b <= a and g <= 1 - a]
    a, b, p, g = (np.array(v) for v in zip(*grid))
    return a, b, p, g


def ets(series: list[np.ndarray], season: int, horizon: int) -> LinearSeasonalState:
    """Additive ETS per series, parameters from a grid by AIC (trend and seasonality count as parameters)."""
    y, start = right_aligned(series, season)
    n_series, width = y.shape
    alpha, beta, phi, gamma = _grid(season)
    length = width - start
    seasonal_ok = length >= 2 * season  # two full seasons to estimate a seasonal pattern
    allowed = np.ones((n_series, len(alpha)), dtype=bool)
    allowed &= ~((gamma[None, :] > 0) & ~seasonal_ok[:, None])
    allowed &= ~((beta[None, :] > 0) & (length < 6)[:, None])

    # initial states from each series' first season
    m = season
    first = np.array([y[i, start[i]:start[i] + m] for i in range(n_series)], dtype=object)
    level0 = np.array([np.mean(f) for f in first])
    season0 = np.zeros((n_series, m))
    for i in range(n_series):
        if seasonal_ok[i]:  # the mean pattern of up to the first 4 seasons, each centred on its own mean
            k = int(min(4, length[i] // m))
            block = y[i, start[i]:start[i] + k * m].reshape(k, m)
            season0[i] = (block - block.mean(axis=1, keepdims=True)).mean(axis=0)
    level = np.repeat(level0[:, None], len(alpha), axis=1)
    slope = np.zeros_like(level)
    seas = np.repeat(season0[:, None, :], len(alpha), axis=1)  # (S, G, m)
    sse = np.zeros_like(level)
    rows = np.arange(n_series)
    for t in range(width):
        active = t >= start
        if not active.any():
            continue
        j = (t - start) % m
        s_j = seas[rows, :, j]
        fitted = level + phi * slope + s_j
        err = np.where(active[:, None], y[:, t][:, None] - fitted, 0.0)
        warm = (t - start) >= min(m, 3)
        sse += np.where(warm[:, None], err * err, 0.0)
        level = np.where(active[:, None], level + phi * slope + alpha * err, level)
        slope = np.where(active[:, None], phi * slope + beta * err, slope)
        seas[rows, :, j] = np.where(active[:, None], s_j + gamma * err, s_j)
    n_eff = np.maximum(length - min(m, 3), 1).astype(np.float64)
    k = 2 + 2 * (beta > 0) + (gamma > 0) * m
    aic = n_eff[:, None] * np.log(sse / n_eff[:, None] + 1e-12) + 2 * k[None, :]
    aic = np.where(allowed, aic, np.inf)
    best = np.argmin(aic, axis=1)
    lv, sl, se = level[rows, best], slope[rows, best], seas[rows, best]
    # rotate the seasonal states so that index 0 is the first step after the end
    nxt = (width - start) % m
    season_out = np.stack([np.roll(se[i], -nxt[i]) for i in range(n_series)]) if n_series else se
    return LinearSeasonalState(lv, sl, phi[best], np.zeros(n_series), season_out, np.zeros(n_series, dtype=bool))


# --- Theta ---------------------------------------------------------------------------------------

THETA_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def _seasonal_test(x: np.ndarray, m: int) -> bool:
    """Whether the autocorrelation at lag m is significant at 90% (the classical Theta test)."""
    n = len(x)
    if m <= 1 or n < 3 * m:
        return False
    x = x - x.mean()
    denom = float(x @ x)
    if denom <= 0:
        return False
    acf = np.array([float(x[k:] @ x[:-k]) / denom for k in range(1, m + 1)])
    limit = 1.645 * np.sqrt((1 + 2 * np.sum(acf[:-1] ** 2)) / n)
    return abs(acf[-1]) > limit


def _decompose(x: np.ndarray, m: int, multiplicative: bool) -> np.ndarray:
    """Seasonal indices (length m, index 0 = the series' first point) by classical decomposition."""
    kernel = np.ones(m + 1) / m if m % 2 == 0 else np.ones(m) / m
    if m % 2 == 0:
        kernel[0] = kernel[-1] = 0.5 / m
    trend = np.convolve(x, kernel, mode="valid")
    offset = (len(kernel) - 1) // 2
    detr = x[offset:offset + len(trend)] / trend if multiplicative else x[offset:offset + len(trend)] - trend
    idx = (np.arange(len(detr)) + offset) % m
    seasonal = np.array([detr[idx == j].mean() for j in range(m)])
    return seasonal / seasonal.mean() if multiplicative else seasonal - seasonal.mean()


def theta(series: list[np.ndarray], season: int, horizon: int) -> LinearSeasonalState:
    n_series = len(series)
    width_keep = max(MIN_HISTORY, MAX_HISTORY_SEASONS * season)
    deseason, seasons, mult = [], np.ones((n_series, max(season, 1))), np.zeros(n_series, dtype=bool)
    for i, s in enumerate(series):
        x = np.asarray(s[-width_keep:], dtype=np.float64)
        if _seasonal_test(x, season):
            mult[i] = bool((x > 0).all())
            ind = _decompose(x, season, mult[i])
            rel = ind[np.arange(len(x)) % season]
            x = x / rel if mult[i] else x - rel
            seasons[i] = np.roll(ind, -(len(x) % season))
        else:
            seasons[i] = 1.0
            mult[i] = True  # a multiplicative season of ones leaves the path as it is
        deseason.append(x)
    y, start = right_aligned(deseason, 1)
    width = y.shape[1]
    alpha = np.array(THETA_ALPHAS)
    level = np.repeat(np.array([y[i, start[i]] for i in range(n_series)])[:, None], len(alpha), axis=1)
    sse = np.zeros_like(level)
    for t in range(width):
        active = (t > start)[:, None]
        err = np.where(active, y[:, t][:, None] - level, 0.0)
        sse += err * err
        level = np.where(active, level + alpha * err, level)
    rows = np.arange(n_series)
    best = np.argmin(sse, axis=1)
    a = alpha[best]
    lv = level[rows, best]
    n = (width - start).astype(np.float64)
    slope = np.zeros(n_series)
    for i in range(n_series):
        x = y[i, start[i]:]
        if len(x) >= 3:
            slope[i] = np.polyfit(np.arange(len(x)), x, 1)[0]
    drift = slope / 2
    # SES with drift: path(h) = level + drift * (h - 1 + 1/a - (1 - a)^n / a)
    offset = drift * (1 / a - (1 - a) ** n / a) - drift
    return LinearSeasonalState(lv, drift, np.ones(n_series), offset, seasons, mult)


# --- ARIMA ---------------------------------------------------------------------------------------

AR_PHIS = (0.0, 0.5, 0.9)                            # AR(1) of the differenced series
MA_THETAS = (-0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4)  # MA(1)
SMA_THETAS = (0.0, -0.3, -0.6, -0.9)                 # seasonal MA(1), when seasonally differenced
KPSS_CRITICAL = 0.463                                # 5% critical value of the KPSS level-stationarity test


def _kpss_says_difference(x: np.ndarray) -> bool:
    """Whether the KPSS test rejects level stationarity at 5% (then difference once; as auto.arima)."""
    n = len(x)
    if n < 8:
        return True
    e = x - x.mean()
    lags = int(3 * np.sqrt(n) / 13)
    var = float(e @ e) / n
    for k in range(1, lags + 1):
        var += 2 * (1 - k / (lags + 1)) * float(e[k:] @ e[:-k]) / n
    if var <= 0:
        return False
    return float(np.sum(np.cumsum(e) ** 2)) / (n * n * var) > KPSS_CRITICAL


def arima(series: list[np.ndarray], season: int, horizon: int) -> LinearSeasonalState:
    """ARIMA(1,d,1)(0,D,1)_m per series, the differencing chosen as auto.arima does: D = 1 when the
    seasonality test at lag m passes, d = 1 when the KPSS test rejects stationarity of what is left;
    a constant (the mean of the differenced series) is a choice when d + D <= 1. Each series' AR,
    MA and seasonal MA coefficients come from a grid by AIC on conditional sums of squares. The
    path is not linear-seasonal (AR), so the state holds the path itself, one value per step up to
    ``horizon`` (level 0, slope 0, season = the path)."""
    keep = max(MIN_HISTORY, MAX_HISTORY_SEASONS * season)
    xs = [np.asarray(s[-keep:], dtype=np.float64) for s in series]
    paths = np.zeros((len(xs), horizon))
    seasonal = np.array([season > 1 and _seasonal_test(x, season) for x in xs], dtype=bool)
    diff = np.array([_kpss_says_difference(x[season:] - x[:-season] if seasonal[i] else x) for i, x in enumerate(xs)])
    for d in (0, 1):
        for flag in (False, True):
            ids = np.flatnonzero((seasonal == flag) & (diff == bool(d)))
            if len(ids):
                paths[ids] = _arima_paths([xs[i] for i in ids], d, season if flag else 0, horizon)
    zeros = np.zeros(len(xs))
    return LinearSeasonalState(zeros, zeros.copy(), np.ones(len(xs)), zeros.copy(), paths,
                               np.zeros(len(xs), dtype=bool))


def _arima_paths(xs: list[np.ndarray], d: int, m: int, horizon: int) -> np.ndarray:
    """Paths (n, horizon) of series ``xs`` differenced ``d`` times and, when ``m`` > 0, at lag m."""
    n = len(xs)
    diffs = [np.diff(x) if d else x for x in xs]
    if m:
        diffs = [w[m:] - w[:-m] for w in diffs]
    w, start = right_aligned([v if len(v) else np.zeros(1) for v in diffs], 1)
    grid = [(p, q, s, c) for p in AR_PHIS for q in MA_THETAS for s in (SMA_THETAS if m else (0.0,))
            for c in ((0.0, 1.0) if d + (m > 0) <= 1 else (0.0,))]
    phi, theta, stheta, const = (np.array(v) for v in zip(*grid))
    c = np.nan_to_num(np.nanmean(w, axis=1))[:, None] * const[None, :]
    width, ring = w.shape[1], m + 2  # errors kept: e[t-1] .. e[t-m-1]
    errs = np.zeros((n, len(phi), ring))
    prev = np.zeros((n, len(phi)))  # w[t-1] - c
    sse = np.zeros_like(prev)
    for t in range(width):
        active = (t >= start)[:, None]
        fitted = phi * prev + theta * errs[..., (t - 1) % ring]
        if m:
            fitted += stheta * errs[..., (t - m) % ring] + theta * stheta * errs[..., (t - m - 1) % ring]
        cur = w[:, t][:, None] - c
        e = np.where(active, cur - fitted, 0.0)
        sse += np.where(active & (t - start >= m + 1)[:, None], e * e, 0.0)
        errs[..., t % ring] = e
        prev = np.where(active, cur, prev)
    n_eff = np.maximum(width - start - m - 1, 1).astype(np.float64)
    k = 1 + (phi != 0) + (theta != 0) + (stheta != 0) + (const != 0)
    best = np.argmin(n_eff[:, None] * np.log(sse / n_eff[:, None] + 1e-12) + 2 * k[None, :], axis=1)
    rows = np.arange(n)
    ph, th, sth, cc, last = phi[best], theta[best], stheta[best], c[rows, best], prev[rows, best]

    def error(step):  # the error at T + step: 0 in the future
        return errs[rows, best, (width - 1 + step) % ring] if step <= 0 else 0.0

    out = np.zeros((n, horizon))
    for h in range(1, horizon + 1):
        last = ph * last + th * error(h - 1) + (sth * error(h - m) + th * sth * error(h - m - 1) if m else 0.0)
        out[:, h - 1] = last + cc
    for i, x in enumerate(xs):  # undo the differencing: y_t = w_t (+ y_{t-1}) (+ y_{t-m} (- y_{t-m-1}))
        if len(x) < d + m + 3:
            out[i] = x[-1]
            continue
        ext = list(x)
        for h in range(horizon):
            v = out[i, h] + (ext[-1] if d else 0.0)
            if m:
                v += ext[-m] - (ext[-m - 1] if d else 0.0)
            ext.append(v)
        out[i] = ext[len(x):]
    return out


FORECASTERS = {"seasonal_naive": seasonal_naive, "ets": ets, "theta": theta, "arima": arima}
