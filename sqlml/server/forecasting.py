"""``sqlml.train(..., task => 'forecast')``, ``sqlml.forecast`` and the forecast side of ``sqlml.evaluate``.

Orchestration only: the relation is parsed and read as for every training (the caller's rights,
read-only), the ML is ``sqlml.forecast``'s pure core, the registry write and the gate are the
registry's. A forecast model row keeps the global model as ONNX (``onnx``; empty, opset 0, when
the forecaster has no global member: there is no graph) and everything else as data
(``forecaster``: per-series statistical state, history tails, interval quantiles).
"""

from __future__ import annotations

import numpy as np

from sqlml.automl.request import TrainRequest, check_common, number
from sqlml.data.schema import BOOLEAN, CATEGORY, NUMERIC, PG_KINDS, TIMESTAMP, Feature
from sqlml.errors import (
    DATA_CORRUPTED,
    DATA_EXCEPTION,
    DATATYPE_MISMATCH,
    FEATURE_NOT_SUPPORTED,
    INVALID_PARAMETER,
    OBJECT_NOT_IN_PREREQUISITE_STATE,
    UNDEFINED_COLUMN,
    SqlmlError,
)
from sqlml.forecast import options as fopts
from sqlml.forecast.model import GLOBAL, ForecastModel
from sqlml.governor import limits, priority
from sqlml.registry import access, audit, gate, store
from sqlml.server import deploy, governing, interrupts, privileged, reading
from sqlml.server.spi import spi

TIME_TYPES = ("date", "timestamp", "timestamptz")


# --- reading -------------------------------------------------------------------------------------

def _columns(source: reading.Source, needed: dict) -> dict:
    """{name: Column} of ``source``; ``needed`` maps a role ('time column', ...) to the names it
    requires, each checked to be readable and to exist."""
    cols = source.by_name()
    for role, names in needed.items():
        for name in names:
            source.check_readable(name)
            if name not in cols:
                raise SqlmlError(f'{role} "{name}" not found in {source.relation.describe()}; columns are: '
                                 f'{", ".join(cols)}', sqlstate=UNDEFINED_COLUMN,
                                 hint="check the name (column names are case-sensitive)")
    return cols


def _check_time_type(name: str, pg_type: str) -> None:
    if pg_type not in TIME_TYPES:
        raise SqlmlError(f'time column "{name}" has type {pg_type}', sqlstate=DATATYPE_MISMATCH,
                         hint="use a date, timestamp or timestamptz column (or cast it in a view or query)")


def _as_datetime(seconds: np.ndarray) -> np.ndarray:
    out = np.full(len(seconds), np.datetime64("NaT"), dtype="datetime64[s]")
    ok = np.isfinite(seconds)
    out[ok] = np.rint(seconds[ok]).astype(np.int64).astype("datetime64[s]")
    return out


def _key_value(text, pg_type: str):
    """A series key read as text, back to the JSON value its column type means."""
    if text is None:
        return None
    kind = PG_KINDS.get(pg_type)
    if kind == BOOLEAN:
        return text in ("true", "t")
    if kind == NUMERIC:
        try:
            return int(text)
        except ValueError:
            return float(text)
    return text


def _read(sql: str, time_column: str, series: list, numeric: list, cols: dict, target: str | None):
    """(n, time as datetime64[s], {series column: key values}, {numeric column: float64}, target or None)."""
    feats = [Feature(time_column, TIMESTAMP, cols[time_column].pg_type)]
    feats += [Feature(s, CATEGORY, cols[s].pg_type) for s in series]
    feats += [Feature(r, NUMERIC if PG_KINDS.get(cols[r].pg_type) == NUMERIC else BOOLEAN, cols[r].pg_type)
              for r in numeric]
    n, raw, extras = reading.read(sql, feats, {target: NUMERIC} if target else None)
    keys = {s: np.array([_key_value(v, cols[s].pg_type) for v in raw[s]], dtype=object) for s in series}
    return n, _as_datetime(raw[time_column]), keys, {r: raw[r] for r in numeric}, (extras[target] if target else None)


# --- training ------------------------------------------------------------------------------------

def train(request: TrainRequest, called: float, source: reading.Source | None = None):
    """``request``: a forecast's (its ``test_size`` is unused: backtests split by time); ``called``:
    ``time.monotonic()`` at the SQL entry, where ``time_budget`` starts counting; ``source``: the relation,
    when the caller has opened it already (``retrain_if_drifted``)."""
    from sqlml.automl.budget import Budget
    from sqlml.forecast.panel import build_panel
    from sqlml.forecast.search import CANDIDATES, fit

    project, target, algorithms, options = request.project, request.target, request.algorithms, request.options
    budget_seconds = request.budget_seconds
    check_common(project, target, budget_seconds)
    opts = fopts.check_options({k: number(k, v) for k, v in (options or {}).items()} if isinstance(options, dict)
                               else options, algorithms, request.metric)
    time_column, series = opts["time_column"], list(opts.get("series", []))
    if target in series or target == time_column or time_column in series:
        raise SqlmlError("the target, the time column and the series columns must be different columns",
                         sqlstate=INVALID_PARAMETER, hint=f"for example {fopts.EXAMPLE}")
    caller = spi.execute("SELECT current_user AS u")[0]["u"]
    privileged.run(lambda ex: access.require_train(ex, caller, project))  # before reading any data
    source = source or reading.Source.open(request.relation)
    rel, sql, hidden = source.relation, source.sql, source.hidden
    cols = _columns(source, {"target column": [target], "time column": [time_column], "series column": series})
    _check_time_type(time_column, cols[time_column].pg_type)
    if PG_KINDS.get(cols[target].pg_type) != NUMERIC:
        raise SqlmlError(f'target column "{target}" has type {cols[target].pg_type}: a forecast needs a numeric target',
                         sqlstate=DATATYPE_MISMATCH, hint="forecast a number (cast it, or aggregate it with count/sum)")
    excluded = set(request.exclude or [])
    regressors = [c for c in cols if c not in excluded and c not in (target, time_column, *series)]
    for r in regressors:
        if PG_KINDS.get(cols[r].pg_type) not in (NUMERIC, BOOLEAN):
            raise SqlmlError(f'column "{r}" ({cols[r].pg_type}) would be a regressor, but regressors must be numeric '
                             "or boolean", sqlstate=DATATYPE_MISMATCH,
                             hint=f"leave it out with exclude => ARRAY['{r}'], or add it to options.series if it "
                                  "identifies a series")
    for h in hidden:
        spi.notice(f'column "{h}" is not used: not readable by the current role')
    candidates = tuple(algorithms or CANDIDATES)
    features = [Feature(c, NUMERIC, cols[c].pg_type) for c in [time_column, target, *regressors]]
    features += [Feature(s, CATEGORY, cols[s].pg_type) for s in series]
    rows = governing.admit_training(sql, features, float(budget_seconds), ["lightgbm"] if GLOBAL in candidates else
                                   ["linear"], None)
    if rows is not None:  # a sample of rows would cut holes in every series
        raise SqlmlError(f"{rel.describe()} is too large to forecast within the memory each job may use",
                         sqlstate="53400", hint="forecast fewer series per project (filter the relation by series), "
                                                "or ask an administrator to raise sqlml.memory_per_job")
    # time_budget is the wall clock of the whole call, cold imports included, but not the time queued.
    # The fits run on a helper thread that yields the CPU while interactive work is active, and every
    # checkpoint of a fit checks for a cancel (sqlml.cancel, pg_cancel_backend, statement_timeout),
    # as in tabular training (sqlml/server/training.py)
    yielding = priority.Yielding(governing.training_nice(), setup=lambda: limits.thread_limits(governing.threads()))
    interactive = governing.InteractiveWork()

    def checkpoint():  # on the backend's thread
        interrupts.check()
        yielding.interactive(interactive.active())

    budget = Budget(float(budget_seconds), interrupt=yielding.wrap(checkpoint),
                    started=called + governing.queued_seconds())
    n, ts, keys, regs, y = _read(sql, time_column, series, regressors, cols, target)
    governing.record_rows(n)
    if n == 0:
        raise SqlmlError(f"{rel.describe()} has no rows", sqlstate=DATA_EXCEPTION,
                         hint="check the relation and its filter")
    for name, values in [(target, y), *regs.items()]:
        bad = int(np.isinf(values).sum())
        if bad:
            raise SqlmlError(f'column "{name}" is Infinity in {bad} row{"s" if bad > 1 else ""}',
                             sqlstate=INVALID_PARAMETER,
                             hint="filter those rows out or replace them with NULL (a missing value is filled)")
    from sqlml.forecast.calendar import frequency

    panel = build_panel(ts, y, keys, regs, freq=frequency(opts["frequency"]) if opts.get("frequency") else None,
                        fill=opts.get("fill", "interpolate"))
    spi.notice(f"{len(panel.series)} series, frequency {panel.freq.name}, horizon {opts['horizon']}"
               + (f", regressors: {', '.join(regressors)}" if regressors else ""))
    try:
        trained = fit(panel, int(opts["horizon"]), candidates=candidates, windows=opts.get("backtest_windows"),
                      budget=budget, seed=int(opts.get("seed", 42)), n_estimators=opts.get("n_estimators"),
                      threads=governing.threads(), note=spi.notice, run_fit=yielding.run)
    finally:
        yielding.close()
    return _register(project, rel, target, time_column, series, cols, trained, n, ts, y, caller, budget, opts)


NO_GRAPH = b""  # the onnx of a forecaster without a global member: it runs no ONNX at all


def _onnx(trained) -> tuple[bytes, int, dict]:
    """(ONNX bytes, opset, parity) of the forecaster. The global member is the forecaster's only
    ONNX graph, checked against the fitted LightGBM on backtest rows. A forecaster of statistical
    members alone has none: its ``onnx`` is empty (opset 0) and everything it computes is the data
    in ``forecaster``, so the registry never holds a graph that is not the model."""
    from sqlml.onnx import convert

    if trained.global_model is None:
        return NO_GRAPH, 0, {"ok": True, "rows": 0, "graph": "none: statistical members only, stored as data"}
    blob = convert.matrix_regressor_to_onnx(trained.global_model, trained.n_features)
    got = convert.session(blob).run(["variable"], {"features": trained.backtest_x})[0].reshape(-1)
    diff = float(np.max(np.abs(got - trained.backtest_pred))) if len(got) else 0.0
    ok = diff <= 1e-3 * max(1.0, float(np.max(np.abs(trained.backtest_pred))) if len(got) else 1.0)
    if not ok:
        raise SqlmlError(f"the global model's ONNX export disagrees with the fitted model (max difference {diff:.3g})",
                         sqlstate="22000", hint="train without it: algorithms => '{ets,theta,arima,seasonal_naive}'")
    return blob, convert.opset_of(blob), {"ok": True, "rows": int(len(got)), "max_abs_diff": diff,
                                          "graph": "the global member (lightgbm)"}


def _register(project, rel, target, time_column, series, cols, trained, n, ts, y, caller, budget, opts):
    from sqlml.registry.lineage import fingerprint, library_versions

    interrupts.check()
    model = trained.model
    blob, opset, parity = _onnx(trained)
    chosen = model.backtest["chosen"]
    score = float(model.backtest["score"])
    schema = {"task": fopts.FORECAST, "time_column": time_column, "time_type": cols[time_column].pg_type,
              "series": [{"name": s, "pg_type": cols[s].pg_type} for s in series],
              "regressors": [{"name": r, "pg_type": cols[r].pg_type} for r in model.regressors],
              "target": {"name": target, "pg_type": cols[target].pg_type}, "frequency": model.freq.name,
              "horizon": model.horizon}
    data_fingerprint = fingerprint(n, {"ts": ts.astype(np.int64)}, np.nan_to_num(y, nan=-1e300))
    split = {"data_fingerprint": data_fingerprint, "horizon": model.horizon, "windows": model.backtest["windows"]}
    trials = [{"n": i + 1, "algorithm": t["algorithm"], "params": {}, "status": t["status"], "score": t["score"],
               "fit_seconds": t["fit_seconds"], "origin": "backtest"} for i, t in enumerate(trained.trials)]

    def register(ex):
        access.require_train(ex, caller, project)
        store.ensure_project(ex, project, fopts.FORECAST, target, caller)
        access.require(ex, caller, project, "train")
        champion = store.deployed(ex, project)
        version = store.next_version(ex, project)
        model_id = store.insert_model(ex, {
            "project": project, "version": version, "algorithm": chosen, "task": fopts.FORECAST, "metric": "mase",
            "score": score, "metrics": {"backtest": model.backtest, "split": split,
                                        "interval_errors": model.coverage_rows},
            "hyperparameters": {"members": sorted(model.weights), "weights": model.weights,
                                "n_estimators": opts.get("n_estimators"), "fill": opts.get("fill", "interpolate")},
            "feature_schema": schema, "classes": None, "onnx": blob, "sha256": store.sha256(blob),
            "opset": opset, "parity": parity, "relation": rel.text, "rows": int(n),
            "data_fingerprint": data_fingerprint, "library_versions": library_versions(), "created_by": caller,
            "train_seconds": float(budget.elapsed()), "job_id": governing.job_id(), "forecaster": model.to_json(),
            "diagnostics": trained.diagnostics, "baseline": drift_baseline(trained, target)})
        store.insert_trials(ex, project, governing.job_id(), version, "mase", trials)
        audit.record(ex, caller, "train", project, version, {"model_id": model_id, "algorithm": chosen, "mase": score,
                                                              "relation": rel.text, "rows": int(n)})
        return champion, version, model_id, access.has(ex, caller, project, "deploy")

    champion_before = privileged.run(lambda ex: store.deployed(ex, project) if store.project(ex, project) else None)
    champion_score = _champion_on_windows(champion_before, trained)
    champion, version, model_id, may_deploy = privileged.run(register)
    governing.wrote()  # sqlml.jobs calls the job succeeded only once this transaction commits
    decision = gate.decide(gate.BACKTEST, opts.get("deploy", "auto"), champion, champion_before, champion_score, score)
    decision = deploy.after_training(project, version, model_id, decision, may_deploy, caller)
    spi.notice(f"version {version}: {chosen} backtest MASE={score:.4f}; "
               f"{'deployed' if decision['deploy'] else 'not deployed'} ({decision['why']})")
    return [(project, version, chosen, "mase", score, bool(decision["deploy"]))]


def _champion_on_windows(champion: dict | None, trained) -> float | None:
    """The deployed forecaster's recipe (its members, equally weighted) scored on this training's
    backtest windows, or None when it is not a forecaster or one of its members was not backtested."""
    if champion is None:
        return None
    members = privileged.run(lambda ex: ex.execute(
        "SELECT hyperparameters -> 'members' AS m FROM sqlml.models WHERE id = $1", [champion["id"]]))[0]["m"]
    import json

    members = json.loads(members) if isinstance(members, str) else members
    return trained.score_of(tuple(members)) if members else None


def drift_baseline(trained, target: str) -> dict:
    """Drift baselines of a forecaster: the target divided by each series' scale, every regressor,
    and (as its "prediction") the backtest errors divided by the series' scale."""
    from sqlml.monitor import diagnostics, drift

    v = trained.drift_values
    return diagnostics.jsonable({
        "features": {target: drift.baseline(v["target"]), **{r: drift.baseline(x) for r, x in v["regressors"].items()}},
        "prediction": drift.baseline(v["errors"])})


# --- forecasting ---------------------------------------------------------------------------------

class Loaded:
    """A forecast model ready to forecast: its stored state and, with a global member, its ONNX session."""

    def __init__(self, ref: dict, schema: dict, model: ForecastModel, blob: bytes):
        from sqlml.onnx import convert

        self.ref, self.schema, self.model = ref, schema, model
        if model.uses_global and blob == NO_GRAPH:
            raise SqlmlError(f'model "{ref["name"]}" version {ref["version"]} has a global member but no ONNX graph',
                             sqlstate=DATA_CORRUPTED, hint="the models table was modified outside sqlml; deploy "
                                                           "another version or retrain")
        self.session = convert.session(blob) if model.uses_global else None

    def global_predict(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["variable"], {"features": x})[0].reshape(-1).astype(np.float64)


_cache: dict = {}


def load(project) -> Loaded:
    """The deployed (or ``project@version``) forecaster, after the caller's predict privilege check."""
    import json

    name, version = store.parse_project_spec(project)
    if version is not None and version > 2**31 - 1:
        raise SqlmlError(f'project "{name}" has no version {version}', sqlstate="42704")
    # sqlml._model_ref checks the caller's privileges
    rows = spi.execute("SELECT id, version, sha256 FROM sqlml._model_ref($1::text, $2::int)", [name, version])
    if not rows:
        missing = "no deployed model" if version is None else f"no version {version}"
        raise SqlmlError(f'project "{name}" has {missing}', sqlstate="42704",
                         hint="train one (sqlml.train) or deploy a version (sqlml.deploy)")
    ref = rows[0]
    hit = _cache.get(ref["id"])
    if hit is not None and hit.ref["sha256"] == ref["sha256"]:
        return hit
    blob, _, schema = privileged.run(lambda ex: store.onnx_blob(ex, ref["id"]))
    if schema.get("task") != fopts.FORECAST:
        raise SqlmlError(f'project "{name}" is not a forecast project', sqlstate=FEATURE_NOT_SUPPORTED,
                         hint="score it with sqlml.predict; sqlml.forecast is for projects trained with "
                              "task => 'forecast'")
    state = privileged.run(lambda ex: ex.execute("SELECT forecaster FROM sqlml.models WHERE id = $1", [ref["id"]]))[0]
    state = state["forecaster"]
    model = ForecastModel.from_json(json.loads(state) if isinstance(state, str) else state)
    loaded = _cache[ref["id"]] = Loaded({"name": name, **ref}, schema, model, blob)
    return loaded


def _future(loaded: Loaded, relation, horizon: int) -> tuple[dict | None, object]:
    """Regressors' values at every series' forecast steps (name -> (n_series, horizon)) from ``relation``
    (its text, or the ``reading.Source`` the caller has opened already)."""
    m, schema = loaded.model, loaded.schema
    if not m.regressors or not m.uses_global:
        if relation is not None and m.regressors:
            spi.notice("the deployed forecaster does not use its regressors; relation is not read")
        return None, None
    regs = list(m.regressors)
    if relation is None:
        raise SqlmlError(f"this forecaster uses regressors ({', '.join(regs)}): pass their future values",
                         sqlstate=INVALID_PARAMETER,
                         hint="relation => a table or query with "
                              f"{', '.join([schema['time_column'], *m.series_columns, *regs])} "
                              "for every series and forecast step")
    source = relation if isinstance(relation, reading.Source) else reading.Source.open(relation)
    rel = source.relation
    cols = _columns(source, {"time column": [schema["time_column"]], "series column": list(m.series_columns),
                             "regressor": regs})
    n, ts, keys, values, _ = _read(source.sql, schema["time_column"], list(m.series_columns), regs, cols, None)
    index = {}
    key_cols = [keys[s] for s in m.series_columns]
    for r in range(n):
        index[(tuple(str(k[r]) for k in key_cols), ts[r])] = r
    out = {name: np.full((len(m.keys), horizon), np.nan) for name in regs}
    missing = []
    for i, key in enumerate(m.keys):
        skey = tuple(str(k) for k in key)
        for j, t in enumerate(m.steps_ts(i, horizon)):
            r = index.get((skey, t))
            if r is None:
                missing.append((key, t))
                continue
            for name in regs:
                out[name][i, j] = values[name][r]
    if missing:
        key, t = missing[0]
        raise SqlmlError(f"{rel.describe()} lacks the regressors of {len(missing)} series-steps, the first: series "
                         f"{dict(zip(m.series_columns, key))} at {str(t).replace('T', ' ')}", sqlstate=DATA_EXCEPTION,
                         hint="give one row per series and forecast step, with every regressor")
    for name in regs:
        if np.isnan(out[name]).any():
            raise SqlmlError(f'regressor "{name}" is NULL at some forecast steps in {rel.describe()}',
                             sqlstate=DATA_EXCEPTION, hint="give every regressor a value at every forecast step")
    return out, rel


def paths(loaded: Loaded, horizon, relation, level):
    """(point (n_series, h), half widths, h) for ``sqlml.forecast`` and ``sqlml.evaluate``."""
    m = loaded.model
    h = fopts.check_horizon(m.horizon if horizon is None else horizon, m.horizon)
    level = fopts.check_level(level)
    future, _ = _future(loaded, relation, h)
    point = m.point(h, loaded.global_predict if m.uses_global else None, future)
    return point, m.half_width(h, level), h


def forecast(project, horizon, relation, level):
    loaded = load(project)
    m = loaded.model
    point, half, h = paths(loaded, horizon, relation, level)
    out = []
    for i, key in enumerate(m.keys):
        series = dict(zip(m.series_columns, key))
        for j, t in enumerate(m.steps_ts(i, h)):
            out.append((series, str(t).replace("T", " "), float(point[i, j]), float(point[i, j] - half[i, j]),
                        float(point[i, j] + half[i, j])))
    return out


# --- evaluation against newly arrived actuals -------------------------------------------------------

def evaluate(project, relation, version, level=0.9):
    """MASE (with each series' training scale), MAE, RMSE, sMAPE and interval coverage of the
    forecaster's forecasts against the actuals in ``relation`` (rows at its forecast steps; other
    rows are ignored). Regressors, when the model uses them, are read from the same rows."""
    from sqlml.monitor import series as stored

    loaded = load(project if version is None else f"{project}@{version}")
    m, schema = loaded.model, loaded.schema
    source = reading.Source.open(relation)
    rel = source.relation
    target = schema["target"]["name"]
    cols = _columns(source, {"time column": [schema["time_column"]], "series column": list(m.series_columns),
                             "target column": [target]})
    n, ts, keys, _, y = _read(source.sql, schema["time_column"], list(m.series_columns), [], cols, target)
    i, j, actual, point, half = _at_forecast_steps(loaded, source, n, ts, keys, y, level)
    if len(i) == 0:
        raise SqlmlError(f"{rel.describe()} has no actuals at the forecast steps of version {loaded.ref['version']}",
                         sqlstate=DATA_EXCEPTION, hint="evaluate once the forecast period's values have arrived")
    pred, err = point[i, j], actual - point[i, j]
    values = {"mase": float(np.mean(np.abs(err) / m.scale[i])), "mae": float(np.mean(np.abs(err))),
              "rmse": float(np.sqrt(np.mean(err ** 2))),
              "smape": float(np.mean(2 * np.abs(err) / np.maximum(np.abs(actual) + np.abs(pred), 1e-12))),
              f"coverage_{int(round(level * 100))}": float(np.mean(np.abs(err) <= half[i, j]))}
    caller = spi.execute("SELECT current_user AS u")[0]["u"]
    facts = privileged.run(lambda ex: stored.model_facts(ex, loaded.ref["id"]))
    skipped = {"not_a_forecast_step": n - len(i)}
    at = privileged.run(lambda ex: stored.insert_evaluation(ex, facts, rel.text, len(i), skipped, values, caller))
    backtest = {"mase": m.backtest.get("score")}
    return [(facts["project"], facts["version"], k, v, backtest.get(k), len(i), at) for k, v in values.items()]


def _at_forecast_steps(loaded: Loaded, source: reading.Source, n, ts, keys, y, level):
    """The rows of a relation that fall on the forecaster's steps with a known value: their series
    index i, step index j, actual value, and the point forecasts and half widths (n_series, h) for
    h = the furthest step present (the regressors are read from ``source`` up to that step)."""
    m = loaded.model
    index = {(tuple(str(k) for k in key), t): (i, j) for i, key in enumerate(m.keys)
             for j, t in enumerate(m.steps_ts(i, m.horizon))}
    hits = [(index.get((tuple(str(keys[s][r]) for s in m.series_columns), ts[r])), y[r]) for r in range(n)]
    hits = [(ij, v) for ij, v in hits if ij is not None and np.isfinite(v)]
    if not hits:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), None, None
    i, j = (np.array(v) for v in zip(*[ij for ij, _ in hits]))
    point, half, _ = paths(loaded, int(j.max()) + 1, source if m.uses_global and m.regressors else None, level)
    return i, j, np.array([v for _, v in hits]), point, half


# --- drift ------------------------------------------------------------------------------------------

def monitor(project, relation, version, moderate, major):
    """PSI of the relation's target (scaled by each series' training scale) and regressors against
    the training baselines, and of the forecast errors at the forecast steps present in it
    against the backtest errors; stored in sqlml.drift like every project's."""
    from sqlml.monitor import diagnostics, drift
    from sqlml.monitor import series as stored
    from sqlml.monitor.drift import check_thresholds
    from sqlml.monitor.drift import row as drift_row

    check_thresholds(moderate, major)
    loaded = load(project if version is None else f"{project}@{version}")
    m, schema = loaded.model, loaded.schema
    facts = privileged.run(lambda ex: stored.model_facts(ex, loaded.ref["id"]))
    base = facts["baseline"]
    if not base:
        raise SqlmlError(f'version {facts["version"]} of "{facts["project"]}" has no drift baseline',
                         sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
                         hint="train a new version: baselines are stored at training")
    source = reading.Source.open(relation)
    rel = source.relation
    target = schema["target"]["name"]
    cols = _columns(source, {"time column": [schema["time_column"]], "series column": list(m.series_columns),
                             "target column": [target], "regressor": list(m.regressors)})
    n, ts, keys, regs, y = _read(source.sql, schema["time_column"], list(m.series_columns), list(m.regressors), cols,
                                 target)
    if n == 0:
        raise SqlmlError(f"{rel.describe()} has no rows", sqlstate=DATA_EXCEPTION,
                         hint="check the relation and its filter")
    which = {tuple(str(k) for k in key): i for i, key in enumerate(m.keys)}
    row_series = np.array([which.get(tuple(str(keys[s][r]) for s in m.series_columns), -1) for r in range(n)])
    known = row_series >= 0
    scaled = np.where(known, y / m.scale[np.maximum(row_series, 0)], np.nan)
    results = [drift_row(target, "feature", drift.compare(base["features"][target], scaled[known]), int(known.sum()),
                          moderate, major)]
    for r in m.regressors:
        results.append(drift_row(r, "feature", drift.compare(base["features"][r], regs[r]), n, moderate, major))
    i, j, actual, point, _ = _at_forecast_steps(loaded, source, n, ts, keys, y, 0.9)
    errors = (actual - point[i, j]) / m.scale[i] if len(i) else []
    if len(errors):
        results.append(drift_row("prediction", "prediction", drift.compare(base["prediction"], errors),
                                  len(errors), moderate, major))
    caller = spi.execute("SELECT current_user AS u")[0]["u"]
    at = privileged.run(lambda ex: stored.insert_drift(ex, facts, rel.text, diagnostics.jsonable(results), caller))
    return [(facts["project"], facts["version"], r["feature"], r["what"], r["psi"], r["drift"], r["rows"], at)
            for r in results]



# --- retraining on drift ----------------------------------------------------------------------------

def retrain_if_drifted(project, relation, training_relation, threshold, budget_seconds):
    """``sqlml.retrain_if_drifted`` of a forecast project: :func:`monitor` on ``relation`` (the
    scaled target, the regressors and, at the forecast steps present, the forecast errors); when
    the largest PSI reaches ``threshold``, a new version is trained on ``training_relation``
    (default ``relation``) with the deployed version's time column, series, horizon, frequency,
    fill and regressors, and deployed only through the gate (its recipe on the same windows)."""
    import json

    from sqlml.monitor import drift

    rows = monitor(project, relation, None, min(drift.MODERATE, threshold), max(drift.MAJOR, threshold))
    name, version = rows[0][0], rows[0][1]
    worst = max(rows, key=lambda r: r[4])
    label = f"{worst[2]} ({worst[3]})" if worst[3] == "feature" else "prediction"
    if worst[4] < threshold:
        return [(name, False, worst[4], label, version, False,
                 f"no retraining: the largest PSI, {worst[4]:.3f} ({label}), is below {threshold}")]
    loaded = load(name)
    schema, m = loaded.schema, loaded.model
    params = privileged.run(lambda ex: ex.execute("SELECT hyperparameters AS h FROM sqlml.models WHERE id = $1",
                                                  [loaded.ref["id"]]))[0]["h"]
    params = json.loads(params) if isinstance(params, str) else params
    options = {"time_column": schema["time_column"], "series": list(m.series_columns), "horizon": m.horizon,
               "frequency": m.freq.name, "fill": params.get("fill", "interpolate")}
    if params.get("n_estimators"):
        options["n_estimators"] = params["n_estimators"]
    text = training_relation or relation
    source = reading.Source.open(text)
    cols = _columns(source, {"time column": [schema["time_column"]], "series column": list(m.series_columns),
                             "target column": [schema["target"]["name"]], "regressor": list(m.regressors)})
    keep = {schema["time_column"], schema["target"]["name"], *m.series_columns, *m.regressors}
    request = TrainRequest(name, text, schema["target"]["name"], task=fopts.FORECAST,
                           budget_seconds=float(budget_seconds), exclude=[c for c in cols if c not in keep],
                           options=options)
    spi.notice(f"drift: PSI {worst[4]:.3f} on {label} reaches {threshold}; training \"{name}\" on {text}")
    _, new_version, _, _, _, deployed = governing.train_as_caller(name, lambda called: train(request, called,
                                                                                             source))[0]
    decision = (f"version {new_version} deployed through the gate" if deployed else
                f"version {new_version} registered; version {version} stays deployed (the gate kept it)")
    return [(name, True, worst[4], label, new_version, bool(deployed), decision)]
