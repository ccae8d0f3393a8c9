"""The options of ``sqlml.train(..., task => 'forecast')`` and the arguments of ``sqlml.forecast``,
checked before any data is read."""

from __future__ import annotations

from sqlml.automl.request import check_algorithms, check_metric
from sqlml.data.schema import MAX_SEED
from sqlml.data.task import FORECAST, TASKS
from sqlml.errors import INVALID_PARAMETER, SqlmlError
from sqlml.forecast.calendar import FREQUENCIES
from sqlml.forecast.model import QUANTILE_GRID
from sqlml.forecast.panel import FILLS
from sqlml.forecast.search import CANDIDATES

MAX_HORIZON = 10_000
OPTIONS = {"time_column": str, "series": list, "horizon": int, "frequency": str, "fill": str, "seed": int,
           "deploy": str, "n_estimators": int, "backtest_windows": int}
EXAMPLE = """options => '{"time_column": "day", "series": ["store"], "horizon": 28}'"""


def check_options(options: dict, algorithms, metric) -> dict:
    """The validated forecasting options (``options`` with jsonb numbers already made int/float)."""
    if not isinstance(options, dict):
        raise SqlmlError("options must be a JSON object", hint=f"for example {EXAMPLE}", sqlstate=INVALID_PARAMETER)
    for key, value in options.items():
        if key not in OPTIONS:
            raise SqlmlError(f'unknown option "{key}" for a forecast', hint=f"options are: {', '.join(OPTIONS)}",
                             sqlstate=INVALID_PARAMETER)
        if not isinstance(value, OPTIONS[key]) or (OPTIONS[key] is int and isinstance(value, bool)):
            raise SqlmlError(f'option "{key}" must be {OPTIONS[key].__name__}, got {value!r}',
                             sqlstate=INVALID_PARAMETER,
                             hint=f"for example {EXAMPLE}")
    if not options.get("time_column"):
        raise SqlmlError("a forecast needs options.time_column", sqlstate=INVALID_PARAMETER,
                         hint=f"name the date or timestamp column: {EXAMPLE}")
    if "horizon" not in options:
        raise SqlmlError("a forecast needs options.horizon", sqlstate=INVALID_PARAMETER,
                         hint=f"pass how many steps ahead to forecast: {EXAMPLE}")
    check_horizon(options["horizon"], MAX_HORIZON)
    series = options.get("series", [])
    if not all(isinstance(s, str) and s for s in series) or len(set(series)) != len(series):
        raise SqlmlError(f"options.series must list distinct column names, got {series!r}", sqlstate=INVALID_PARAMETER,
                         hint='for example "series": ["store", "item"], or leave it out for a single series')
    if options.get("frequency") is not None and options["frequency"] not in FREQUENCIES:
        raise SqlmlError(f'unknown frequency "{options["frequency"]}"', sqlstate=INVALID_PARAMETER,
                         hint=f"use one of: {', '.join(FREQUENCIES)}, or leave it out to infer it")
    if options.get("fill", "interpolate") not in FILLS:
        raise SqlmlError(f'option "fill" is {options["fill"]!r}', sqlstate=INVALID_PARAMETER,
                         hint="use 'interpolate' (missing points between their neighbours) or 'zero' (no row means 0)")
    if options.get("deploy", "auto") not in ("auto", "never"):
        raise SqlmlError(f'option "deploy" is {options["deploy"]!r}', hint="use 'auto' (through the gate) or 'never'",
                         sqlstate=INVALID_PARAMETER)
    if not 1 <= options.get("n_estimators", 1) <= 10000:
        raise SqlmlError(f'option "n_estimators" is {options["n_estimators"]}', sqlstate=INVALID_PARAMETER,
                         hint="pass the global model's boosting rounds, between 1 and 10000")
    if not 0 <= options.get("seed", 0) <= MAX_SEED:
        raise SqlmlError(f'option "seed" must be between 0 and {MAX_SEED}, got {options["seed"]}',
                         sqlstate=INVALID_PARAMETER, hint="pass a small integer such as 7, or omit it")
    if not 1 <= options.get("backtest_windows", 2) <= 20:
        raise SqlmlError(f'option "backtest_windows" is {options["backtest_windows"]}', sqlstate=INVALID_PARAMETER,
                         hint="pass between 1 and 20 windows, or leave it out")
    check_algorithms(algorithms, CANDIDATES, "forecasting algorithm", "every forecaster")
    check_metric(metric, TASKS[FORECAST].metrics, "forecasting",
                 hint="forecasts are chosen by MASE on rolling-origin backtests: pass NULL or 'mase'")
    return options


def check_horizon(horizon, most: int) -> int:
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon <= 0:
        raise SqlmlError(f"horizon must be a positive number of steps, got {horizon!r}", sqlstate=INVALID_PARAMETER,
                         hint="pass for example horizon => 7")
    if horizon > most:
        raise SqlmlError(f"horizon {horizon} is longer than {most}", sqlstate=INVALID_PARAMETER,
                         hint="the model forecasts up to the horizon it was trained for: retrain with a longer "
                              "options.horizon, or ask for fewer steps" if most < MAX_HORIZON else None)
    return horizon


def check_level(level) -> float:
    lo, hi = float(QUANTILE_GRID[0]), float(QUANTILE_GRID[-1])
    if level is None or not lo <= float(level) <= hi:
        raise SqlmlError(f"level {level} is out of range", sqlstate=INVALID_PARAMETER,
                         hint=f"pass the interval's coverage between {lo} and {hi}, such as 0.9")
    return float(level)
