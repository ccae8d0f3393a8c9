"""sqlml's forecasting (train + forecast, in the database) against statsforecast's AutoETS,
AutoTheta and SeasonalNaive, at the same wall-clock budget.

Protocol, per dataset: the last ``horizon`` points of every series are held out. statsforecast
fits each model on every series' history (client side, one process) and forecasts the horizon
with its 90% interval; its three models' total wall time is sqlml's ``time_budget`` (at least
10 s). sqlml loads the history into a table, runs ``sqlml.train(..., task => 'forecast')`` and
``sqlml.forecast(..., level => 0.9)`` (with the future regressors where the data has some).
Scores: MASE (each series' MAE over the holdout divided by its in-sample seasonal-naive MAE,
averaged over series) and the 90% interval's coverage of the holdout. "best" is the statsforecast
model with the lowest MASE on that dataset (chosen on the holdout itself: a strong baseline).

Data: series bundled with statsmodels (co2 monthly means, sunspots, Nile, El Nino, six macro
series) and a generated retail-like set (daily, weekly and yearly seasonality, promotions known
in advance, holiday peaks, intermittent low-volume items, new items with short histories).

    .sqlml/venv/bin/python bench/forecast.py                        # bundled + 1000 retail series
    .sqlml/venv/bin/python bench/forecast.py --retail-series 200 --datasets retail
    .sqlml/venv/bin/python bench/forecast.py --datasets co2,sunspots,nile,elnino,macro --origins 5

A single holdout of 8 to 12 points of one series is a noisy measure (one unusual year decides the
ratio), so ``--origins N`` repeats the protocol at N forecast origins (the last horizon held out,
then the one before it with the history cut there, ...) and averages each method's MASE over them;
"best" is then the baseline with the lowest mean MASE, and coverage pools every origin's holdout.

statsforecast declares pandas<3 while sqlml pins pandas 3, so it is installed beside without its
dependency check (the models used here take numpy arrays and never touch pandas):
    .sqlml/venv/bin/pip install --no-deps statsforecast==2.1.1 coreforecast==0.0.20 utilsforecast==0.2.17
    .sqlml/venv/bin/pip install statsmodels==0.15.0
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlml.forecast.calendar import holidays  # noqa: E402

LEVEL = 90


# --- data ----------------------------------------------------------------------------------------

def bundled() -> list[dict]:
    """statsmodels' bundled series: {name, freq, season, horizon, series: [(key, dates, values)]}."""
    import statsmodels.api as sm

    out = []
    co2 = sm.datasets.co2.load_pandas().data["co2"]
    monthly = co2.resample("MS").mean().interpolate()
    out.append({"name": "co2", "freq": "month", "season": 12, "horizon": 12,
                "series": [("co2", monthly.index.values.astype("datetime64[D]"), monthly.values)]})
    sun = sm.datasets.sunspots.load_pandas().data
    out.append({"name": "sunspots", "freq": "year", "season": 1, "horizon": 10,
                "series": [("sun", _years(sun["YEAR"].astype(int)), sun["SUNACTIVITY"].values)]})
    nile = sm.datasets.nile.load_pandas().data
    out.append({"name": "nile", "freq": "year", "season": 1, "horizon": 10,
                "series": [("nile", _years(nile["year"].astype(int)), nile["volume"].values)]})
    el = sm.datasets.elnino.load_pandas().data
    values = el.drop(columns="YEAR").values.reshape(-1)
    start = np.datetime64(f"{int(el['YEAR'].iloc[0])}-01", "M")
    dates = (start + np.arange(len(values))).astype("datetime64[D]")
    out.append({"name": "elnino", "freq": "month", "season": 12, "horizon": 12, "series": [("elnino", dates, values)]})
    macro = sm.datasets.macrodata.load_pandas().data
    q = (np.array([f"{int(y)}-01" for y in macro["year"]], dtype="datetime64[M]")
         + (macro["quarter"].astype(int).values - 1) * 3).astype("datetime64[D]")
    out.append({"name": "macro", "freq": "quarter", "season": 4, "horizon": 8,
                "series": [(c, q, macro[c].values) for c in ("realgdp", "realcons", "realinv", "cpi", "unemp", "m1")]})
    return out


def _years(years) -> np.ndarray:
    return np.array([f"{y:04d}-01-01" for y in years], dtype="datetime64[D]")


def retail(n_series: int, days: int = 730, seed: int = 0) -> dict:
    """Daily unit sales: level x weekly pattern x yearly wave x promotion lift x holiday peak, Poisson
    noise; a fifth of the items sell a unit or less a day (intermittent); a tenth are new (3 to 12
    weeks of history). Promotions are planned, so their future is known (regressor ``promo``)."""
    rng = np.random.default_rng(seed)
    end = np.datetime64("2025-12-31")
    all_days = end - np.arange(days + 28)[::-1]
    weekday = (all_days.astype(np.int64) + 3) % 7
    yearday = (all_days - all_days.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)
    hol = np.isin(all_days, holidays(2023, 2026))
    pre_hol = np.isin(all_days + 1, holidays(2023, 2026)) | np.isin(all_days + 2, holidays(2023, 2026))
    series, promos = [], []
    for k in range(n_series):
        kind = "intermittent" if k % 5 == 0 else "regular"
        level = rng.uniform(0.2, 1.5) if kind == "intermittent" else rng.lognormal(2.5, 0.8)
        week = rng.uniform(0.6, 1.5, 7)
        week /= week.mean()
        amp, phase = rng.uniform(0.0, 0.4), rng.uniform(0, 2 * np.pi)
        lift = rng.uniform(0.3, 1.2)
        promo = (rng.random(len(all_days)) < rng.uniform(0.03, 0.12)).astype(float)
        mean = (level * week[weekday] * (1 + amp * np.sin(2 * np.pi * yearday / 365.25 + phase))
                * (1 + lift * promo) * np.where(hol, 0.3, 1.0) * np.where(pre_hol, 1.6, 1.0))
        y = rng.poisson(mean).astype(float)
        n = days + 28 if k % 10 != 3 else int(rng.integers(21, 85)) + 28
        series.append((f"item{k:04d}", all_days[-n:], y[-n:]))
        promos.append(promo[-n:])
    return {"name": "retail", "freq": "day", "season": 7, "horizon": 28, "series": series, "promo": promos}


# --- scoring -------------------------------------------------------------------------------------

def mase_scale(y: np.ndarray, m: int) -> float:
    m = m if len(y) > m else 1
    d = np.mean(np.abs(y[m:] - y[:-m])) if len(y) > m else 0.0
    return float(d) if d > 0 else float(np.mean(np.abs(y)) or 1.0)


def score(ds: dict, forecasts: dict) -> dict:
    """MASE and 90% coverage of ``forecasts`` (key -> (mean, lo, hi)) on the holdout."""
    h, m = ds["horizon"], ds["season"]
    mase, hits = [], []
    for key, _, y in ds["series"]:
        train, test = y[:-h], y[-h:]
        mean, lo, hi = forecasts[key]
        mase.append(np.mean(np.abs(test - mean)) / mase_scale(train, m))
        hits.append((test >= lo) & (test <= hi))
    return {"mase": float(np.mean(mase)), "coverage": float(np.mean(np.concatenate(hits)))}


def cut(ds: dict, origin: int) -> dict:
    """``ds`` with the last ``origin`` horizons of every series removed (origin 0: as it is)."""
    if origin == 0:
        return ds
    drop = origin * ds["horizon"]
    out = {**ds, "origin": origin, "series": [(k, d[:-drop], y[:-drop]) for k, d, y in ds["series"]]}
    if "promo" in ds:
        out["promo"] = [p[:-drop] for p in ds["promo"]]
    return out


def averaged(runs: list[dict]) -> dict:
    """Mean MASE and coverage over origins (every origin holds out the same number of points), total seconds."""
    return {"mase": float(np.mean([r["mase"] for r in runs])),
            "coverage": float(np.mean([r["coverage"] for r in runs])),
            "seconds": float(np.sum([r["seconds"] for r in runs]))}


# --- statsforecast -------------------------------------------------------------------------------

def run_statsforecast(ds: dict) -> dict:
    from statsforecast.models import AutoETS, AutoTheta, Naive, SeasonalNaive

    h, m = ds["horizon"], ds["season"]
    models = {"AutoETS": lambda: AutoETS(season_length=m), "AutoTheta": lambda: AutoTheta(season_length=m),
              "SeasonalNaive": lambda: SeasonalNaive(season_length=m)}
    out = {}
    for name, make in models.items():
        t0 = time.perf_counter()
        forecasts, fallbacks = {}, 0
        for key, _, y in ds["series"]:
            train = np.asarray(y[:-h], dtype=np.float64)
            try:
                f = make().forecast(y=train, h=h, level=[LEVEL])
            except Exception:  # noqa: BLE001 - too short for the model: the naive forecast, as users do
                fallbacks += 1
                f = Naive().forecast(y=train, h=h, level=[LEVEL])
            forecasts[key] = (f["mean"], f[f"lo-{LEVEL}"], f[f"hi-{LEVEL}"])
        out[name] = {**score(ds, forecasts), "seconds": time.perf_counter() - t0, "fallbacks": fallbacks}
    return out


# --- sqlml ---------------------------------------------------------------------------------------

def run_sqlml(conn, ds: dict, budget: float) -> dict:
    h = ds["horizon"]
    has_promo = "promo" in ds
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS history, future")
    cur.execute("CREATE TABLE history (key text, ts date, y float8" + (", promo float8" if has_promo else "") + ")")
    cur.execute("CREATE TABLE future (key text, ts date" + (", promo float8" if has_promo else "") + ")")
    hist, fut = io.StringIO(), io.StringIO()
    for s, (key, dates, y) in enumerate(ds["series"]):
        promo = ds["promo"][s] if has_promo else None
        for i in range(len(y)):
            extra = f"\t{float(promo[i])!r}" if has_promo else ""
            if i < len(y) - h:
                hist.write(f"{key}\t{dates[i]}\t{float(y[i])!r}{extra}\n")
            else:
                fut.write(f"{key}\t{dates[i]}{extra}\n")
    hist.seek(0)
    fut.seek(0)
    cur.copy_from(hist, "history")
    cur.copy_from(fut, "future")
    cur.execute("ANALYZE history")
    project = f"bench_{ds['name']}_{ds.get('origin', 0)}"
    options = {"time_column": "ts", "series": ["key"], "horizon": h}
    t0 = time.perf_counter()
    cur.execute("SELECT algorithm, score FROM sqlml.train(%s, 'history', 'y', task => 'forecast', "
                "time_budget => make_interval(secs => %s), options => %s::jsonb)",
                [project, budget, json.dumps(options)])
    algorithm, backtest = cur.fetchone()
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    cur.execute("SELECT series ->> 'key', forecast, lower, upper FROM sqlml.forecast(%s, level => 0.9, relation => %s) "
                "ORDER BY 1, ts", [project, "future" if has_promo else None])
    rows = cur.fetchall()
    forecast_seconds = time.perf_counter() - t1
    forecasts = {}
    for key, _, _ in ds["series"]:
        forecasts[key] = ([], [], [])
    for key, f, lo, hi in rows:
        for part, v in zip(forecasts[key], (f, lo, hi)):
            part.append(v)
    forecasts = {k: tuple(np.array(p) for p in v) for k, v in forecasts.items()}
    return {**score(ds, forecasts), "seconds": train_seconds + forecast_seconds, "train_seconds": train_seconds,
            "algorithm": algorithm, "backtest_mase": backtest}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="co2,sunspots,nile,elnino,macro,retail")
    ap.add_argument("--retail-series", type=int, default=1000)
    ap.add_argument("--origins", type=int, default=1, help="forecast origins per dataset (1: the last horizon only)")
    ap.add_argument("--dsn", help="a database with sqlml (default: a throwaway cluster)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "forecast.json"))
    args = ap.parse_args(argv)
    wanted = args.datasets.split(",")
    data = [d for d in bundled() if d["name"] in wanted]
    if "retail" in wanted:
        data.append(retail(args.retail_series))
    cluster = None
    if args.dsn:
        dsn = args.dsn
    else:
        from sqlml.devcluster import throwaway

        cluster = throwaway("sqlml-bench-forecast-")
        dsn = cluster.create_database("bench")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    results = []
    try:
        for ds in data:
            runs = []
            for origin in range(args.origins):
                dso = cut(ds, origin)
                base = run_statsforecast(dso)
                budget = max(10.0, float(np.ceil(sum(b["seconds"] for b in base.values()))))
                runs.append((budget, base, run_sqlml(conn, dso, budget)))
            base = {k: averaged([r[1][k] for r in runs]) for k in runs[0][1]}
            ours = {**averaged([r[2] for r in runs]), "algorithm": [r[2]["algorithm"] for r in runs]}
            best = min(base, key=lambda k: base[k]["mase"])
            results.append({"dataset": ds["name"], "series": len(ds["series"]), "horizon": ds["horizon"],
                            "origins": args.origins, "budget": [r[0] for r in runs], "statsforecast": base,
                            "best": best, "sqlml": ours, "ratio_to_best": ours["mase"] / base[best]["mase"]})
            r = results[-1]
            print(f"{ds['name']:>9} {len(ds['series']):>5} series  "
                  f"sqlml MASE {ours['mase']:.3f} cov {ours['coverage']:.3f} "
                  f"({','.join(ours['algorithm'])}, {ours['seconds']:.1f}s)  " + "  ".join(
                      f"{k} {v['mase']:.3f} cov {v['coverage']:.3f} {v['seconds']:.1f}s" for k, v in base.items())
                  + f"  ratio to best ({best}) {r['ratio_to_best']:.3f}", flush=True)
    finally:
        conn.close()
        if cluster is not None:
            cluster.destroy()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
