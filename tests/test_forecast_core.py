"""The forecasting core without a database: frequency, grids, gaps, short series, stored state, coverage."""

import json

import numpy as np
import pytest

from sqlml.errors import SqlmlError
from sqlml.forecast import search, statistical
from sqlml.forecast.calendar import Frequency, calendar_features, holidays, infer_frequency
from sqlml.forecast.model import ForecastModel
from sqlml.forecast.panel import build_panel


def stamps(start, step, n, unit):
    return np.datetime64(start, "s") + np.arange(n) * np.timedelta64(step, unit).astype("timedelta64[s]")


def months(start, step, n):
    return (np.datetime64(start, "M") + np.arange(n) * step).astype("datetime64[D]").astype("datetime64[s]")


FREQUENCY_CASES = [
    ("hourly", stamps("2024-01-01T00", 1, 50, "h"), "hour"),
    ("daily", stamps("2024-01-01", 1, 50, "D"), "day"),
    ("daily with gaps", np.delete(stamps("2024-01-01", 1, 50, "D"), [3, 4, 10, 20, 21]), "day"),
    ("weekly", stamps("2024-01-01", 7, 30, "D"), "week"),
    ("monthly starts", months("2020-01", 1, 30), "month"),
    ("monthly ends", (months("2020-02", 1, 30).astype("datetime64[D]") - 1).astype("datetime64[s]"), "month"),
    ("quarterly", months("2000-01", 3, 20), "quarter"),
    ("yearly", months("1950-01", 12, 20), "year"),
]


@pytest.mark.parametrize("name,ts,expected", FREQUENCY_CASES, ids=[c[0] for c in FREQUENCY_CASES])
def test_infer_frequency(name, ts, expected):
    assert infer_frequency([ts]).name == expected


@pytest.mark.parametrize("ts,fragment", [
    (np.array(["2024-01-01"], dtype="datetime64[s]"), "no series has two distinct timestamps"),
    (stamps("2024-01-01", 10, 20, "D"), "is not an hour, day, week, month"),
])
def test_infer_frequency_refuses(ts, fragment):
    with pytest.raises(SqlmlError, match=fragment) as e:
        infer_frequency([ts])
    assert e.value.sqlstate == "22023"


@pytest.mark.parametrize("freq,start,steps,expected", [
    ("month", "2024-01-31", 1, "2024-02-29"),   # a month end stays a month end
    ("month", "2024-02-29", 1, "2024-03-31"),
    ("month", "2024-01-15T10:00", 2, "2024-03-15T10:00"),
    ("quarter", "2023-11-30", 1, "2024-02-29"),
    ("year", "2020-06-01", 3, "2023-06-01"),
    ("week", "2024-01-01", 2, "2024-01-15"),
    ("hour", "2024-01-01T23:00", 2, "2024-01-02T01:00"),
])
def test_frequency_add(freq, start, steps, expected):
    got = Frequency(freq).add(np.array([start], dtype="datetime64[s]"), [steps])[0]
    assert got == np.datetime64(expected, "s")


def test_holiday_calendar():
    days = set(holidays(2024, 2024).astype(str))
    for d in ("2024-01-01", "2024-03-29", "2024-03-31", "2024-04-01", "2024-05-27", "2024-09-02", "2024-11-28",
              "2024-12-25"):
        assert d in days
    f = calendar_features(np.array(["2024-12-23", "2024-12-25"], dtype="datetime64[s]"), Frequency("day"))
    assert f["holiday"].tolist() == [0.0, 1.0]
    assert f["days_to_holiday"].tolist() == [1.0, 0.0]   # the 24th is a holiday too
    assert f["weekday"].tolist() == [0.0, 2.0]           # Monday, Wednesday


PANEL_CASES = [
    # name, ts offsets (days), y, fill, expected grid
    ("gap interpolated", [0, 1, 3], [1.0, 2.0, 4.0], "interpolate", [1, 2, 3, 4]),
    ("gap as zero", [0, 1, 3], [1.0, 2.0, 4.0], "zero", [1, 2, 0, 4]),
    ("NULL target interpolated", [0, 1, 2, 3], [1.0, np.nan, 3.0, 4.0], "interpolate", [1, 2, 3, 4]),
    ("leading NULLs dropped", [0, 1, 2, 3], [np.nan, np.nan, 3.0, 5.0], "interpolate", [3, 5]),
    ("duplicates summed", [0, 0, 1, 2], [1.0, 1.0, 3.0, 4.0], "interpolate", [2, 3, 4]),
    ("unsorted rows", [2, 0, 1], [3.0, 1.0, 2.0], "interpolate", [1, 2, 3]),
]


@pytest.mark.parametrize("name,offsets,y,fill,expected", PANEL_CASES, ids=[c[0] for c in PANEL_CASES])
def test_panel_grid(name, offsets, y, fill, expected):
    ts = np.datetime64("2024-01-01", "s") + np.array(offsets) * np.timedelta64(86400, "s")
    p = build_panel(ts, np.array(y), {}, {}, freq=Frequency("day"), fill=fill)
    assert p.series[0].y.tolist() == expected


def test_panel_series_of_different_lengths_and_an_empty_one():
    ts = np.concatenate([stamps("2024-01-01", 1, 10, "D"), stamps("2024-01-05", 1, 3, "D"),
                         stamps("2024-01-01", 1, 2, "D")])
    y = np.concatenate([np.arange(10.0), [5.0, 6.0, 7.0], [np.nan, np.nan]])
    key = np.array(["a"] * 10 + ["b"] * 3 + ["c"] * 2, dtype=object)
    p = build_panel(ts, y, {"item": key}, {"promo": np.ones(15)})
    assert p.freq.name == "day"
    assert [s.key for s in p.series] == [("a",), ("b",)]   # c has no value: nothing to forecast
    assert [len(s) for s in p.series] == [10, 3]
    assert p.end(1) == np.datetime64("2024-01-07", "s")
    assert p.series[1].regressors["promo"].tolist() == [1.0, 1.0, 1.0]


def synthetic(n_series=60, length=200, seed=7, short=5):
    """Daily series with a weekly pattern, noise proportional to their level, some of them short."""
    rng = np.random.default_rng(seed)
    ts, y, keys = [], [], []
    for k in range(n_series):
        n = length if k >= short else int(rng.integers(2, 12))
        level = rng.uniform(10, 200)
        pattern = rng.uniform(0.7, 1.3, 7)
        t = np.arange(n)
        ts.append(stamps("2024-01-01", 1, length, "D")[-n:])
        y.append(level * pattern[(length - n + t) % 7] * (1 + 0.001 * t) + rng.normal(0, 0.1 * level, n))
        keys += [k] * n
    return np.concatenate(ts), np.concatenate(y), np.array(keys, dtype=object)


def split(ts, y, keys, horizon):
    end = ts.max() - np.timedelta64(horizon * 86400, "s")
    return ts <= end


def test_short_series_get_finite_forecasts():
    ts, y, keys = synthetic(n_series=12, length=80, short=4)
    p = build_panel(ts, y, {"k": keys}, {})
    trained = search.fit(p, 7, candidates=("seasonal_naive", "ets", "theta", "arima"), windows=2)
    point = trained.model.point(7)
    assert point.shape == (12, 7) and np.isfinite(point).all()
    assert np.isfinite(trained.model.half_width(7, 0.9)).all()


def test_stored_state_forecasts_the_same():
    ts, y, keys = synthetic(n_series=10, length=120)
    p = build_panel(ts, y, {"k": keys}, {})
    trained = search.fit(p, 14, candidates=("ets", "theta", "arima", "lightgbm"), windows=2, n_estimators=30)
    model = trained.model
    again = ForecastModel.from_json(json.loads(json.dumps(model.to_json())))
    predict = trained.global_model.predict if trained.global_model is not None else None
    np.testing.assert_allclose(again.point(14, predict), model.point(14, predict), rtol=1e-7)
    np.testing.assert_allclose(again.point(5, predict), model.point(14, predict)[:, :5], rtol=1e-7)
    np.testing.assert_allclose(again.half_width(14, 0.8), model.half_width(14, 0.8), rtol=1e-6)
    assert [list(k) for k in again.keys] == [list(k) for k in model.keys]


def test_statistical_models_recover_a_clean_pattern():
    t = np.arange(140)
    y = 100 + 10 * np.sin(2 * np.pi * t / 7)
    future = 100 + 10 * np.sin(2 * np.pi * np.arange(140, 154) / 7)
    for name, fit in statistical.FORECASTERS.items():
        path = fit([y], 7, 14).forecast(14)[0]
        np.testing.assert_allclose(path, future, atol=0.5, err_msg=name)


def test_arima_chooses_its_differencing():
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.normal(0.5, 1.0, 300))           # a random walk with drift: differenced, with drift
    noise = 50 + rng.normal(0, 1.0, 300)                  # stationary around 50: not differenced, its mean
    assert statistical._kpss_says_difference(walk) and not statistical._kpss_says_difference(noise)
    path = statistical.arima([walk, noise], 1, 20).forecast(20)
    assert 0.3 < (path[0, -1] - path[0, 0]) / 19 < 0.7   # the drift goes on
    assert np.all(np.abs(path[1] - 50) < 1.0)             # back to the mean
    ar2 = np.zeros(400)                                   # a cycle (AR on the level) is not lost to a flat line
    for t in range(2, 400):
        ar2[t] = 1.5 * ar2[t - 1] - 0.8 * ar2[t - 2] + rng.normal()
    assert np.std(statistical.arima([100 + ar2], 1, 10).forecast(10)[0]) > 0.1


def test_selection_is_the_best_candidate_or_the_mean_of_the_best_two():
    ts, y, keys = synthetic(n_series=30, length=150)
    p = build_panel(ts, y, {"k": keys}, {})
    trained = search.fit(p, 7, candidates=("seasonal_naive", "ets", "theta", "arima"), windows=3)
    scores = {t["algorithm"]: t["score"] for t in trained.trials}
    singles = ["seasonal_naive", "ets", "theta", "arima"]
    top2 = sorted(singles, key=scores.get)[:2]
    pair = "+".join(c for c in singles if c in top2)
    assert set(scores) == {*singles, pair}
    chosen = trained.model.backtest["chosen"]
    assert chosen in (top2[0], pair) and scores[chosen] == min(scores[top2[0]], scores[pair])


def test_a_window_needs_half_of_a_series_history_before_it():
    ts, y, keys = synthetic(n_series=8, length=60, short=0)
    long_ts, long_y = stamps("2024-01-01", 1, 60, "D"), np.arange(60.0)
    cut = 20  # a series of 20 points: windows of 7 start after 19 and 12 points; only the first keeps half
    p = build_panel(np.concatenate([ts, long_ts[-cut:]]), np.concatenate([y, long_y[-cut:]]),
                    {"k": np.concatenate([keys, np.array(["short"] * cut, dtype=object)])}, {})
    trained = search.fit(p, 7, candidates=("seasonal_naive",), windows=3)
    assert trained.model.coverage_rows == 8 * 3 * 7 + 1 * 7  # the 8 long series in 3 windows, the short one in 1


@pytest.mark.parametrize("level", [0.8, 0.9])
def test_interval_coverage_on_a_holdout(level):
    """Conformal intervals from the backtests cover the holdout at their level, within 5 points."""
    horizon = 14
    ts, y, keys = synthetic(n_series=150, length=210, seed=11)
    train = split(ts, y, keys, horizon)
    p = build_panel(ts[train], y[train], {"k": keys[train]}, {})
    model = search.fit(p, horizon, candidates=("seasonal_naive", "ets", "theta"), windows=3).model
    point, half = model.point(horizon), model.half_width(horizon, level)
    hits = []
    for i, key in enumerate(model.keys):
        actual = y[~train & (keys == key[0])]
        hits.append(np.abs(actual - point[i, :len(actual)]) <= half[i, :len(actual)])
    coverage = float(np.mean(np.concatenate(hits)))
    assert abs(coverage - level) <= 0.05, coverage


def test_global_model_onnx_matches_lightgbm():
    from sqlml.onnx import convert

    ts, y, keys = synthetic(n_series=20, length=150)
    p = build_panel(ts, y, {"k": keys}, {"promo": (np.arange(len(y)) % 5 == 0).astype(float)})
    trained = search.fit(p, 7, candidates=("lightgbm",), windows=2, n_estimators=40)
    blob = convert.matrix_regressor_to_onnx(trained.global_model, trained.n_features)
    sess = convert.session(blob)
    got = sess.run(["variable"], {"features": trained.backtest_x})[0].reshape(-1)
    np.testing.assert_allclose(got, trained.backtest_pred, rtol=1e-4, atol=1e-4)
