"""A trained forecaster as data: what the registry stores and how ``forecast`` recomputes from it.

A forecast is a weighted mean of members: statistical forecasters (their per-series
:class:`~sqlml.forecast.statistical.LinearSeasonalState`) and the global boosted model (ONNX,
fed by features built from each series' stored tail of history, the calendar and the future
regressors). Intervals add to the point forecast ± the conformal quantile of the backtests'
scaled absolute errors at the step, times the series' MASE scale.

``ForecastModel.to_json()`` is everything but the ONNX bytes; nothing is pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sqlml.forecast import features
from sqlml.forecast.calendar import Frequency
from sqlml.forecast.statistical import LinearSeasonalState

GLOBAL = "lightgbm"
QUANTILE_GRID = np.round(np.arange(0.50, 0.995, 0.01), 2)  # the levels intervals are stored for


@dataclass
class ForecastModel:
    freq: Frequency
    horizon: int
    series_columns: tuple
    regressors: tuple
    keys: list                      # per series: its key values, in series_columns order
    last_ts: np.ndarray             # datetime64[s] per series: its last timestamp
    scale: np.ndarray               # per series: in-sample MASE scale (seasonal naive MAE)
    tails: list                     # per series: the last features.tail_length points
    ages: np.ndarray                # per series: points before its tail
    weights: dict                   # member -> weight (sums to 1)
    states: dict = field(default_factory=dict)  # statistical member -> LinearSeasonalState
    quantiles: np.ndarray = None    # (horizon, len(QUANTILE_GRID)): scaled |error| quantiles per step
    coverage_rows: int = 0          # backtest errors the quantiles come from
    backtest: dict = field(default_factory=dict)  # per-candidate and chosen MASE on the backtest windows

    @property
    def uses_global(self) -> bool:
        return self.weights.get(GLOBAL, 0) > 0

    def steps_ts(self, i: int, h: int) -> np.ndarray:
        return self.freq.add(np.repeat(self.last_ts[i], h), np.arange(1, h + 1))

    def global_features(self, h: int, future: dict | None) -> tuple[np.ndarray, np.ndarray]:
        """Features of every series' steps 1..h (series-major) and the scale they were divided by.
        ``future``: regressor -> array (n_series, h) of their values at the forecast steps."""
        blocks, scales = [], []
        for i, tail in enumerate(self.tails):
            steps = np.arange(1, h + 1)
            origins = np.full(h, len(tail) - 1)
            regs = {r: future[r][i] for r in self.regressors} if self.regressors else {}
            x, s = features.rows(tail, origins, steps, self.steps_ts(i, h), self.freq, regs, int(self.ages[i]))
            blocks.append(x)
            scales.append(s)
        return np.concatenate(blocks), np.concatenate(scales)

    def point(self, h: int, global_predict=None, future: dict | None = None) -> np.ndarray:
        """Point forecasts (n_series, h). ``global_predict``: features (n, f) float32 -> scaled predictions (n,)."""
        out = np.zeros((len(self.keys), h))
        for name, w in self.weights.items():
            if w <= 0:
                continue
            if name == GLOBAL:
                x, s = self.global_features(h, future)
                out += w * (np.asarray(global_predict(x), dtype=np.float64) * s).reshape(len(self.keys), h)
            else:
                out += w * self.states[name].forecast(h)
        return out

    def half_width(self, h: int, level: float) -> np.ndarray:
        """Interval half-widths (n_series, h) at ``level``."""
        col = np.interp(level, QUANTILE_GRID, np.arange(len(QUANTILE_GRID)))
        lo, frac = int(np.floor(col)), col - np.floor(col)
        hi = min(lo + 1, len(QUANTILE_GRID) - 1)
        q = self.quantiles[:h, lo] * (1 - frac) + self.quantiles[:h, hi] * frac
        return self.scale[:, None] * q[None, :]

    def to_json(self) -> dict:
        return {
            "frequency": self.freq.name, "horizon": self.horizon, "series_columns": list(self.series_columns),
            "regressors": list(self.regressors), "weights": self.weights,
            "quantile_levels": QUANTILE_GRID.tolist(), "quantiles": np.round(self.quantiles, 6).tolist(),
            "coverage_rows": int(self.coverage_rows), "backtest": self.backtest,
            "series": [{"key": _plain(k), "last": str(self.last_ts[i]), "scale": float(self.scale[i]),
                        "age": int(self.ages[i]), "tail": np.round(self.tails[i], 9).tolist(),
                        "states": {n: s.to_json(i) for n, s in self.states.items()}}
                       for i, k in enumerate(self.keys)],
        }

    @staticmethod
    def from_json(d: dict) -> ForecastModel:
        series = d["series"]
        states = {}
        for name in d["weights"]:
            if name != GLOBAL:
                states[name] = LinearSeasonalState.from_json([s["states"][name] for s in series])
        return ForecastModel(
            freq=Frequency(d["frequency"]), horizon=int(d["horizon"]), series_columns=tuple(d["series_columns"]),
            regressors=tuple(d["regressors"]), keys=[tuple(s["key"]) for s in series],
            last_ts=np.array([s["last"] for s in series], dtype="datetime64[s]"),
            scale=np.array([s["scale"] for s in series]),
                             tails=[np.asarray(s["tail"], dtype=np.float64) for s in series],
            ages=np.array([s["age"] for s in series], dtype=np.int64), weights=d["weights"], states=states,
            quantiles=np.asarray(d["quantiles"], dtype=np.float64), coverage_rows=int(d["coverage_rows"]),
            backtest=d.get("backtest", {}))


def _plain(key: tuple) -> list:
    """Key values as JSON-able Python values (numpy scalars become int/float/str)."""
    out = []
    for v in key:
        if isinstance(v, np.generic):
            v = v.item()
        out.append(v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
    return out
