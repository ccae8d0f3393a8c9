"""AutoML over forecasters: rolling-origin backtests, selection of a member or an equal-weight
ensemble of members, conformal intervals from the backtest errors, final fit on all history.

Backtests: ``windows`` consecutive, non-overlapping windows of ``horizon`` steps at the end of each
series (window 1 is the last). A series takes part in a window when it has at least
``MIN_TRAIN`` points and half its history before it (an origin with a few points of history
says little about a model fitted at the end of the series, and favours the naive ones).
Statistical candidates are refitted at every window's origin; the global model is fitted once on
the rows whose targets lie before the first window (cheaper, and never optimistic for it), then
predicts each window from its origin. Scores are MASE (scaled by each series' in-sample
seasonal-naive MAE), averaged over series.

Selection: the best candidate alone, or the equal-weight mean of the best two, whichever has the
lower mean MASE: a mean of two forecasters with different errors often beats each of them, and
two options (rather than every subset of the candidates) keep the choice from fitting the noise
of a few windows, which measurably forecast worse on the bundled series (bench/forecast.py).
Intervals: the winner's backtest errors, divided by the series' scale, give per step the
quantiles of |error| (split conformal); ``forecast`` scales them back per series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the estimators' registry registers their ONNX converters: the global model's export needs LightGBM's
from sqlml.automl import estimators  # noqa: F401
from sqlml.data.task import FORECAST, TASKS
from sqlml.forecast import features, statistical
from sqlml.forecast.model import GLOBAL, QUANTILE_GRID, ForecastModel
from sqlml.forecast.panel import Panel

CANDIDATES = ("seasonal_naive", "ets", "theta", "arima", GLOBAL)
MIN_TRAIN = 3
MAX_GLOBAL_ROWS = 100_000
PER_STEP_MIN = 100  # errors per step below which steps pool their errors (normalised by sqrt(step))


@dataclass
class Trained:
    model: ForecastModel
    global_model: object          # the fitted LightGBM regressor, or None
    n_features: int
    trials: list                  # per candidate and chosen ensemble: {"algorithm", "score", "fit_seconds", ...}
    backtest_x: np.ndarray        # some global-model feature rows, for the ONNX parity check
    backtest_pred: np.ndarray
    score_of: object = None       # members -> mean MASE of their equal-weight mean on these windows, or None
    diagnostics: dict = None      # the last backtest window of a few series, for the model card
    drift_values: dict = None     # what drift baselines are made of: scaled target, regressors, scaled errors


FORECASTING = TASKS[FORECAST]


def mase_scale(y: np.ndarray, season: int) -> float:
    """In-sample MAE of the seasonal naive forecast (naive if the series is shorter than two seasons)."""
    m = season if len(y) > 2 * season else 1
    if len(y) <= m:
        return float(np.mean(np.abs(y))) or 1.0
    d = np.abs(y[m:] - y[:-m]).mean()
    if d > 0:
        return float(d)
    return float(np.mean(np.abs(y))) or 1.0


def default_windows(n_series: int, horizon: int) -> int:
    """Enough windows for ~1000 backtest errors (intervals, and a selection that is not luck), between
    2 and 8 (a series takes part in as many as its length allows)."""
    return int(np.clip(np.ceil(1000 / max(n_series * horizon, 1)), 2, 8))


def fit(panel: Panel, horizon: int, candidates=None, windows: int | None = None, budget=None, seed: int = 42,
        n_estimators: int | None = None, threads: int = 1, note=lambda msg: None, clock=None,
        run_fit=None) -> Trained:
    """``run_fit(fit)`` runs each fit (a candidate's backtests, a boosted model, the final
    statistical fits) and returns its result: the server runs them on a helper thread that yields
    the CPU to interactive work (``sqlml.governor.priority``); ``note`` is only called between fits."""
    import time

    clock = clock or time.perf_counter
    run_fit = run_fit or (lambda fit: fit())
    candidates = tuple(candidates or CANDIDATES)
    m = panel.freq.season
    ys = [s.y for s in panel.series]
    obs = [s.observed for s in panel.series]
    n_series = len(ys)
    windows = windows or default_windows(n_series, horizon)
    scale = np.array([mase_scale(y, m) for y in ys])
    lengths = np.array([len(y) for y in ys])

    # errors[c] : (n_series, windows, horizon) forecast - actual, NaN where not evaluated
    preds = {c: np.full((n_series, windows, horizon), np.nan) for c in candidates}
    actual = np.full((n_series, windows, horizon), np.nan)
    cutoffs = FORECASTING.backtest_origins(lengths, horizon, windows)  # (series, window)
    taking = cutoffs + 1 >= np.maximum(MIN_TRAIN, lengths[:, None] // 2)  # at least half its history before it
    for w in range(windows):
        for i in np.flatnonzero(taking[:, w]):
            c = cutoffs[i, w]
            a = ys[i][c + 1:c + 1 + horizon].copy()
            a[~obs[i][c + 1:c + 1 + horizon]] = np.nan  # filled points are not scored
            actual[i, w, :len(a)] = a
    seconds = {}

    def backtest(name):
        for w in range(windows):
            idx = np.flatnonzero(taking[:, w])
            if len(idx) == 0:
                continue
            state = statistical.FORECASTERS[name]([ys[i][:cutoffs[i, w] + 1] for i in idx], m, horizon)
            preds[name][idx, w] = state.forecast(horizon)
            if budget is not None:
                budget.checkpoint()

    for name in candidates:
        if name == GLOBAL:
            continue
        t0 = clock()
        run_fit(lambda name=name: backtest(name))
        seconds[name] = clock() - t0
        note(f"{name}: backtested {int(taking.sum())} series-windows in {seconds[name]:.1f}s")

    global_model, backtest_x, backtest_pred, n_features = None, np.zeros((0, 0), np.float32), np.zeros(0), 0
    reserve = 1.0 + 0.04 * budget.seconds if budget is not None else 0.0  # conversion, registry, forecasting
    if GLOBAL in candidates and budget is not None and budget.remaining() < 2 * reserve:
        note(f"{GLOBAL}: left out: {max(budget.remaining(), 0):.1f}s of the budget left")
        candidates = tuple(c for c in candidates if c != GLOBAL)
    if GLOBAL in candidates:
        t0 = clock()
        limits = lengths - 1 - windows * horizon  # the backtest model sees targets up to here
        x, target, _ = _global_rows(panel, horizon, limits, seed)
        if len(target) >= 50:
            bt_reserve = budget.remaining() / 2 + reserve if budget is not None else 0.0
            bt_model = run_fit(lambda: _fit_global(x, target, n_estimators, threads, seed, budget, bt_reserve))
            for w in range(windows):
                idx = np.flatnonzero(taking[:, w])
                if len(idx) == 0:
                    continue
                xw, sw = _origin_rows(panel, idx, cutoffs[idx, w], horizon)
                p = bt_model.predict(xw) * sw
                preds[GLOBAL][idx, w] = p.reshape(len(idx), horizon)
                if w == 0:
                    backtest_x, backtest_pred = xw, bt_model.predict(xw)
            fit_seconds = clock() - t0
            if budget is None or budget.remaining() > 1.5 * fit_seconds:
                x, target, _ = _global_rows(panel, horizon, lengths - 1, seed)
                global_model = run_fit(lambda: _fit_global(x, target, n_estimators, threads, seed, budget, reserve))
            else:  # no time to refit on the last windows' rows: the backtested model is a fine final one
                note(f"{GLOBAL}: kept the backtest fit (no time left in the budget to refit on all rows)")
                global_model = bt_model
            n_features = x.shape[1]
            backtest_x, backtest_pred = backtest_x[:2000], global_model.predict(backtest_x[:2000])
        else:
            note("lightgbm: too few rows for a global model; left out")
            candidates = tuple(c for c in candidates if c != GLOBAL)
        seconds[GLOBAL] = clock() - t0
        note(f"{GLOBAL}: fitted and backtested in {seconds.get(GLOBAL, 0):.1f}s")

    scored = np.isfinite(actual)
    if not scored.any():
        raise_short(horizon, windows)

    def score(combo) -> float:
        p = np.mean([preds[c] for c in combo], axis=0)
        err = np.where(scored, np.abs(p - actual) / scale[:, None, None], 0.0).reshape(n_series, -1)
        counted = scored.reshape(n_series, -1).sum(axis=1)
        return float(np.mean(err.sum(axis=1)[counted > 0] / counted[counted > 0]))

    trials = [{"algorithm": c, "score": score((c,)), "fit_seconds": seconds.get(c), "status": "ok"} for c in candidates]
    ranked = sorted(candidates, key=lambda c: score((c,)))
    options = [(ranked[0],)]
    if len(ranked) > 1:
        pair = tuple(c for c in candidates if c in ranked[:2])  # in the candidates' order, as the gate names it
        options.append(pair)
        trials.append({"algorithm": "+".join(pair), "score": score(pair), "fit_seconds": None, "status": "ok"})
    best = min(options, key=score)
    best_score = score(best)
    note(f"chosen: {' + '.join(best)} (backtest MASE {best_score:.4f} over {windows} windows)")

    p = np.mean([preds[c] for c in best], axis=0)
    errors = (np.abs(p - actual) / scale[:, None, None]).transpose(1, 0, 2).reshape(-1, horizon)  # (rows, horizon)
    quantiles = interval_quantiles(errors, horizon)

    states = run_fit(lambda: {c: statistical.FORECASTERS[c](ys, m, horizon) for c in best if c != GLOBAL})
    tl = features.tail_length(m, horizon)
    model = ForecastModel(
        freq=panel.freq, horizon=horizon, series_columns=panel.series_columns, regressors=panel.regressors,
        keys=[s.key for s in panel.series],
        last_ts=np.array([panel.end(i) for i in range(n_series)], dtype="datetime64[s]"),
        scale=scale, tails=[y[-tl:] for y in ys], ages=np.maximum(lengths - tl, 0),
        weights={c: 1.0 / len(best) for c in best}, states=states, quantiles=quantiles,
        coverage_rows=int(np.isfinite(errors).sum()),
        backtest={"windows": windows, "metric": FORECASTING.default_metric, "chosen": "+".join(best),
                  "score": best_score,
                  "candidates": {t["algorithm"]: t["score"] for t in trials}})
    if GLOBAL not in best:
        global_model = None

    def score_of(members) -> float | None:
        return score(tuple(members)) if members and all(c in candidates for c in members) else None

    diagnostics = backtest_sample(panel, p, actual, cutoffs, taking, model, horizon)
    signed = ((actual - p) / scale[:, None, None])[scored]
    drift_values = {"target": np.concatenate([s.y[s.observed] / scale[i] for i, s in enumerate(panel.series)]),
                    "regressors": {r: np.concatenate([s.regressors[r] for s in panel.series])
                                   for r in panel.regressors},
                    "errors": signed}
    return Trained(model, global_model, n_features, trials, backtest_x, backtest_pred, score_of, diagnostics,
                   drift_values)


def backtest_sample(panel: Panel, pred, actual, cutoffs, taking, model: ForecastModel, horizon: int,
                    n_series: int = 3, level: float = 0.9) -> dict:
    """For the model card: the last backtest window of the ``n_series`` largest series (by scale)
    that took part in it: history before the window, the chosen forecaster's forecast and
    interval at ``level``, and what happened."""
    ids = [i for i in np.argsort(-model.scale) if taking[i, 0]][:n_series]
    half = model.half_width(horizon, level)
    out = []
    for i in ids:
        s, c = panel.series[i], int(cutoffs[i, 0])
        first = max(c + 1 - 3 * horizon, 0)
        ts = panel.freq.add(np.repeat(s.start, c + 1 + horizon - first), np.arange(first, c + 1 + horizon))
        out.append({"series": dict(zip(panel.series_columns, _jsonable(s.key))),
                    "history_ts": [str(t) for t in ts[:c + 1 - first]], "history": s.y[first:c + 1].tolist(),
                    "ts": [str(t) for t in ts[c + 1 - first:]], "forecast": pred[i, 0].tolist(),
                    "lower": (pred[i, 0] - half[i]).tolist(), "upper": (pred[i, 0] + half[i]).tolist(),
                    "actual": [None if np.isnan(v) else float(v) for v in actual[i, 0]]})
    return {"source": f"the last of {actual.shape[1]} backtest windows", "level": level, "series": out}


def _jsonable(key: tuple) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in key]


def raise_short(horizon: int, windows: int):
    from sqlml.errors import DATA_EXCEPTION, SqlmlError

    raise SqlmlError(f"no series is long enough to backtest a horizon of {horizon} ({windows} windows of {horizon} "
                     f"steps after at least {MIN_TRAIN} points)", sqlstate=DATA_EXCEPTION,
                     hint="forecast a shorter horizon, or pass fewer backtest windows (options.backtest_windows)")


def interval_quantiles(errors: np.ndarray, horizon: int) -> np.ndarray:
    """(horizon, len(QUANTILE_GRID)) conformal quantiles of scaled |errors| (rows, horizon), NaN-free.

    With at least PER_STEP_MIN errors a step uses its own; otherwise all steps pool their errors
    divided by sqrt(step) and each step scales the pooled quantile back (errors grow with the step).
    The finite-sample correction ceil((n + 1) q) / n keeps the coverage at least q."""
    out = np.zeros((horizon, len(QUANTILE_GRID)))
    steps = np.arange(1, horizon + 1)
    pooled = (errors / np.sqrt(steps)[None, :])[np.isfinite(errors)]
    for h in range(horizon):
        e = errors[:, h][np.isfinite(errors[:, h])]
        if len(e) >= PER_STEP_MIN:
            out[h] = _conformal(e, QUANTILE_GRID)
        elif len(pooled):
            out[h] = _conformal(pooled, QUANTILE_GRID) * np.sqrt(h + 1)
    return np.maximum.accumulate(out, axis=1)


def _conformal(e: np.ndarray, levels: np.ndarray) -> np.ndarray:
    n = len(e)
    q = np.minimum(np.ceil((n + 1) * levels) / n, 1.0)
    return np.quantile(e, q, method="higher")


def _global_rows(panel: Panel, horizon: int, limits: np.ndarray, seed: int):
    """Training rows of the global model: origins spread over each series' history, every step
    whose target index is at most the series' ``limits`` entry; at most MAX_GLOBAL_ROWS rows."""
    total = sum(max(int(lim), 0) for lim in limits) * horizon
    stride = max(int(np.ceil(total / MAX_GLOBAL_ROWS)), 1)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i, s in enumerate(panel.series):
        lim = int(limits[i])
        if lim < 1:
            continue
        origins = np.arange(lim - 1 - rng.integers(stride), -1, -stride)[::-1]
        if len(origins) == 0:
            continue
        o = np.repeat(origins, horizon)
        h = np.tile(np.arange(1, horizon + 1), len(origins))
        keep = (o + h <= lim) & s.observed[np.minimum(o + h, len(s.y) - 1)]
        o, h = o[keep], h[keep]
        if len(o) == 0:
            continue
        t = o + h
        ts = panel.freq.add(np.repeat(s.start, len(t)), t)
        x, sc = features.rows(s.y, o, h, ts, panel.freq, {r: s.regressors[r][t] for r in panel.regressors})
        xs.append(x)
        ys.append(s.y[t] / sc)
    if not xs:
        return np.zeros((0, 0), np.float32), np.zeros(0), None
    return np.concatenate(xs), np.concatenate(ys), None


def _origin_rows(panel: Panel, idx: np.ndarray, origins: np.ndarray, horizon: int):
    """Global-model rows for steps 1..horizon from one origin per listed series (series-major).
    Regressors beyond a series' data (never, in backtests) would be carried forward."""
    xs, scs = [], []
    h = np.arange(1, horizon + 1)
    for i, o in zip(idx, origins):
        s = panel.series[i]
        t = o + h
        ts = panel.freq.add(np.repeat(s.start, horizon), t)
        tc = np.minimum(t, len(s.y) - 1)
        x, sc = features.rows(s.y[:o + 1], np.full(horizon, o), h, ts, panel.freq,
                              {r: s.regressors[r][tc] for r in panel.regressors})
        xs.append(x)
        scs.append(sc)
    return np.concatenate(xs), np.concatenate(scs)


def _fit_global(x, target, n_estimators, threads, seed, budget, reserve: float = 0.0):
    """LightGBM on the rows; boosting stops early (keeping the rounds so far) when only ``reserve``
    seconds of the budget are left, so that a training ends within its budget."""
    import lightgbm as lgb

    model = lgb.LGBMRegressor(n_estimators=int(n_estimators or 200), learning_rate=0.07, num_leaves=31,
                              min_child_samples=20, subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
                              objective="l2", n_jobs=max(int(threads), 1), random_state=seed, verbose=-1)

    def on_round(env):
        if budget is None:
            return
        budget.checkpoint()
        if budget.remaining() <= reserve and env.iteration >= 10:
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list or [])

    model.fit(x, target, callbacks=[on_round])
    return model
