"""``sqlml.train``: validate, ingest, search, convert, verify, register, decide deployment.

Orchestration only: each step is a call into data/, automl/, onnx/ or registry/.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np

from sqlml import deferred
from sqlml.automl import meta, metrics
from sqlml.automl.budget import Budget
from sqlml.automl.estimators import SPECS
from sqlml.data import convert
from sqlml.data.columns import check_columns, check_target, choose_features
from sqlml.data.ingest import sample_query
from sqlml.data.relation import parse_relation
from sqlml.data.schema import (
    MAX_SEED,
    TASKS,
    FeatureSchema,
    Target,
    kind_of,
)
from sqlml.data.task import check_target_type
from sqlml.errors import (
    DATA_EXCEPTION,
    INSUFFICIENT_PRIVILEGE,
    INVALID_PARAMETER,
    SqlmlError,
)
from sqlml.governor import limits, priority
from sqlml.registry import access, audit, store
from sqlml.server import deploy, governor, ingest, interrupts, privileged, scoring
from sqlml.server.spi import spi

PROJECT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}")
MIN_BUDGET, MAX_BUDGET = 1.0, 86400.0
MAX_ROWS = 2**63 - 1  # a bigint LIMIT
OPTIONS = {"seed": int, "deploy": str, "ensemble": bool, "max_rows": int, "n_estimators": int, "refit_all": bool,
           "force": bool, "max_scoring_us": float, "bagging": bool, "folds": int}
PROGRESS_SECONDS = 2.0  # at most one NOTICE this often for trials that change nothing


def similar_trainings(caller: str):
    """``similar(meta_features, task)`` for the search: configurations that won on the past trainings
    nearest to this one (pgvector search over sqlml.models.meta_features), among the projects
    ``caller`` may score only: a configuration tuned on data is a fact about that data."""
    def similar(meta_features: list, task: str) -> list[dict]:
        vector = meta.to_vector_literal(meta_features)
        return privileged.run(lambda ex: store.nearest_configurations(ex, caller, task, vector, meta.NEIGHBOURS,
                                                                      meta.MAX_DISTANCE))
    return similar


def finish_reserve(budget_seconds: float) -> float:
    """Seconds the search leaves for ONNX conversion, the parity check and the registry write
    (converting a large boosted model or an ensemble takes seconds; 4% of the budget covers it)."""
    return 1.0 + 0.04 * budget_seconds


def check_common(project, target, budget_seconds) -> None:
    """What every training checks, whatever its task: the project name, the target, the budget."""
    if project is None or not PROJECT_NAME.fullmatch(str(project)):  # fullmatch: "$" would let a final newline by
        raise SqlmlError(f'invalid project name "{project}"',
                         hint="use 1-63 letters, digits, '_', '.' or '-', starting with a letter, digit or '_'",
                         sqlstate=INVALID_PARAMETER)
    if target is None or not str(target).strip():
        raise SqlmlError("target is empty", hint="name the column to predict", sqlstate=INVALID_PARAMETER)
    if budget_seconds is None or not np.isfinite(budget_seconds) or not MIN_BUDGET <= budget_seconds <= MAX_BUDGET:
        raise SqlmlError(f"time_budget of {budget_seconds} seconds is out of range",
                         hint="pass an interval between 1 second and 24 hours, such as '60 seconds'",
                         sqlstate=INVALID_PARAMETER)


def check_arguments(project, target, task, algorithms, budget_seconds, metric, test_size, exclude, options) -> dict:
    """Validate everything that needs no data; returns the parsed options."""
    check_common(project, target, budget_seconds)
    if task is not None and task not in TASKS:
        raise SqlmlError(f'unknown task "{task}"', hint=f"use one of: {', '.join(TASKS)}, forecast, or NULL to infer it",
                         sqlstate=INVALID_PARAMETER)
    for a in algorithms or []:
        if a not in SPECS:
            raise SqlmlError(f'unknown algorithm "{a}"', hint=f"use any of: {', '.join(SPECS)}", sqlstate=INVALID_PARAMETER)
    if algorithms is not None and not algorithms:
        raise SqlmlError("algorithms is empty", hint="pass NULL for the AutoML portfolio, or name some",
                         sqlstate=INVALID_PARAMETER)
    if metric is not None and metric not in metrics.HIGHER_IS_BETTER:
        raise SqlmlError(f'unknown metric "{metric}"', hint=f"use one of: {', '.join(metrics.HIGHER_IS_BETTER)}",
                         sqlstate=INVALID_PARAMETER)
    if test_size is None or not 0.05 <= test_size <= 0.5:
        raise SqlmlError(f"test_size is {test_size}; it must be between 0.05 and 0.5", sqlstate=INVALID_PARAMETER)
    options = options or {}
    if not isinstance(options, dict):
        raise SqlmlError("options must be a JSON object", hint="""for example '{"seed": 7}'""", sqlstate=INVALID_PARAMETER)
    options = {k: _number(k, v) for k, v in options.items()}
    for key, value in options.items():
        if key not in OPTIONS:
            raise SqlmlError(f'unknown option "{key}"', hint=f"options are: {', '.join(OPTIONS)}", sqlstate=INVALID_PARAMETER)
        if OPTIONS[key] is float and isinstance(value, int) and not isinstance(value, bool):
            value = options[key] = float(value)
        if not isinstance(value, OPTIONS[key]) or (OPTIONS[key] is int and isinstance(value, bool)):
            raise SqlmlError(f'option "{key}" must be {OPTIONS[key].__name__}, got {value!r}', sqlstate=INVALID_PARAMETER)
    if not 1 <= options.get("n_estimators", 1) <= 10000:
        raise SqlmlError(f'option "n_estimators" is {options["n_estimators"]}', sqlstate=INVALID_PARAMETER,
                         hint="pass the number of boosting rounds or trees, between 1 and 10000 (omit it to search it)")
    if not 1 <= options.get("folds", 1) <= 10:
        raise SqlmlError(f'option "folds" must be between 1 and 10, got {options["folds"]}', sqlstate=INVALID_PARAMETER,
                         hint="pass the folds of cross-validation (1: one holdout), or omit it to let the search choose")
    if options.get("max_scoring_us", 1.0) <= 0:
        raise SqlmlError(f'option "max_scoring_us" must be positive, got {options["max_scoring_us"]}',
                         sqlstate=INVALID_PARAMETER, hint="pass the most one row may cost to score, in microseconds")
    if not 1 <= options.get("max_rows", 1) <= MAX_ROWS:
        raise SqlmlError(f'option "max_rows" must be between 1 and {MAX_ROWS}, got {options["max_rows"]}',
                         sqlstate=INVALID_PARAMETER, hint="pass the number of rows to sample for training, or omit it")
    if not 0 <= options.get("seed", 0) <= MAX_SEED:
        raise SqlmlError(f'option "seed" must be between 0 and {MAX_SEED}, got {options["seed"]}',
                         sqlstate=INVALID_PARAMETER, hint="pass a small integer such as 7, or omit it (42)")
    if options.get("deploy", "auto") not in ("auto", "never"):
        raise SqlmlError(f'option "deploy" is {options["deploy"]!r}', hint="use 'auto' (through the gate) or 'never'",
                         sqlstate=INVALID_PARAMETER)
    return options


def _number(key: str, value):
    """jsonb numbers arrive as Decimal: integers become int, others float. An integer beyond 64 bits
    (1e400 is one) is no option's value, and would overflow float() or str() further on."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        if value != value.to_integral_value():
            return float(value)
        if abs(value) > MAX_ROWS:
            raise SqlmlError(f'option "{key}" is {value:.3E}, beyond 64 bits', sqlstate=INVALID_PARAMETER,
                             hint="pass a number in the option's range, or omit it")
        return int(value)
    return value


def fingerprint(n: int, columns: dict, target) -> str:
    import hashlib

    h = hashlib.sha256(str(n).encode())
    for name in sorted(columns):
        h.update(name.encode())
        arr = columns[name]
        h.update(repr(arr.tolist()).encode() if arr.dtype == object else np.ascontiguousarray(arr).tobytes())
    h.update(repr(list(target)).encode() if np.asarray(target).dtype == object else np.asarray(target).tobytes())
    return h.hexdigest()


def training_request(features, target, task, algorithms, budget_seconds, metric, test_size, exclude, opts) -> dict:
    """What decides a training besides its data: two trainings with the same request on data with
    the same fingerprint would search the same space for the same time (``force`` aside)."""
    return {"features": [f.name for f in features], "target": target, "task": task,
            "algorithms": sorted(algorithms) if algorithms else None, "budget_seconds": float(budget_seconds),
            "metric": metric, "test_size": float(test_size), "exclude": sorted(exclude or []),
            "options": {k: v for k, v in sorted(opts.items()) if k != "force"}}


def already_trained(project, data_fingerprint: str, request: dict):
    """The result row of an earlier training with the same data and request, announced by a
    NOTICE, or None. Makes a rerun (every `dbt build`) cheap and keeps the registry from filling
    with identical versions; options => '{"force": true}' trains anyway."""
    found = privileged.run(lambda ex: store.same_training(ex, project, data_fingerprint, request)
                           if store.project(ex, project) else None)
    if found is None:
        return None
    spi.notice(f"version {found['version']} was trained on the same data with the same settings: returning it "
               f"without training ({'deployed' if found['deployed'] else 'not deployed'}); "
               """options => '{"force": true}' trains a new version""")
    return [(project, found["version"], found["algorithm"], found["metric"],
             None if found["score"] is None else float(found["score"]), bool(found["deployed"]))]


def job_threads() -> int:
    """Threads this training may use: what the governor grants its job (sqlml.threads_per_job)."""
    return governor.threads()


def library_versions() -> dict:
    from importlib import metadata

    from sqlml import __version__, stack

    out = {"sqlml": __version__}
    for dist in stack.SERVER_PACKAGES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def progress(budget: Budget, every: float = PROGRESS_SECONDS):
    """Per trial: the job's live progress (sqlml.jobs), and a NOTICE when the trial is the new best,
    failed, or ``every`` seconds have passed (cheap trials would otherwise flood the client)."""
    last = [-every]

    def on_trial(trial, best):
        governor.progress(trials=trial.n, best_score=best.score if best else None,
                          best_algorithm=best.algorithm if best else None, budget_seconds=budget.seconds)
        if trial is not best and trial.status == "ok" and budget.elapsed() - last[0] < every:
            return
        last[0] = budget.elapsed()
        score = "failed" if trial.status == "failed" else ("timed out" if trial.status == "timeout" else f"{trial.score:.4f}")
        best_s = f"best {best.score:.4f} ({best.algorithm})" if best else "no model yet"
        spi.notice(f"trial {trial.n}: {trial.algorithm} {score}; {best_s}; {budget.elapsed():.1f}s of {budget.seconds:.0f}s")
    return on_trial


def champion_score(champion: dict, trained, raw_holdout: dict, metric: str, split: dict):
    """The deployed model's score on this training's holdout, or None if it cannot be scored on it.

    A champion trained on the same data with the same ``split`` (fingerprint, seed, test_size) held
    out these very rows and may have been refitted on them afterwards: its stored holdout score,
    measured before that refit, is the fair one. Otherwise its ONNX model scores the holdout (if it
    was refitted on rows of it, the comparison leans its way: the gate stays conservative)."""
    from sqlml.onnx import convert as onnx_convert

    stored_split = json.loads(champion["split"]) if isinstance(champion["split"], str) else champion["split"]
    if stored_split == split and champion["metric"] == metric and champion["score"] is not None:
        return float(champion["score"])
    blob, _, schema_json = privileged.run(lambda ex: store.onnx_blob(ex, champion["id"]))
    schema = FeatureSchema.from_json(schema_json)
    if schema.target.classes != trained.schema.target.classes:
        return None
    try:
        inputs = convert.model_inputs(schema, raw_holdout)
    except KeyError:
        return None  # the champion needs a column this relation lacks
    sess = onnx_convert.session(blob)
    pred = onnx_convert.run(sess, convert.as_feeds(schema, inputs), schema.target.task)
    return metrics.score(metric, trained.holdout_y, pred)


def train(project, relation, target, task, algorithms, budget_seconds, metric, test_size, exclude, options,
          called: float | None = None):
    """``called``: ``time.monotonic()`` at the SQL entry, where ``time_budget`` starts counting."""
    called = time.monotonic() if called is None else called
    deferred.defer_scipy_stats()  # before scikit-learn's first import: half of a cold backend's import time
    if task == "forecast":  # many time series, chosen by backtests: its own orchestration
        from sqlml.server import forecast

        return forecast.train(project, relation, target, algorithms, budget_seconds, metric, exclude, options,
                              check_common, called)
    opts = check_arguments(project, target, task, algorithms, budget_seconds, metric, test_size, exclude, options)
    caller = spi.execute("SELECT current_user AS u")[0]["u"]
    privileged.run(lambda ex: access.require_train(ex, caller, project))  # before reading any data
    rel = parse_relation(relation)
    sql, hidden = ingest.source_sql(rel)
    if target in hidden:
        raise SqlmlError(f'permission denied for column "{target}" of {rel.text}', sqlstate=INSUFFICIENT_PRIVILEGE,
                         hint="ask the table's owner for SELECT on the target column")
    columns = ingest.describe(sql)
    features, target_col, dropped = choose_features(columns, target, list(exclude or []), rel.describe())
    for h in hidden:
        dropped[h] = "not readable by the current role"
    check_target_type(target, target_col.pg_type, task)
    features = ingest.with_dims(sql, features, {c.name: c.typmod for c in columns})
    target_kind = "numeric" if kind_of(target_col.pg_type) in ("numeric", "boolean") else "category"
    if target_col.pg_type == "bool":
        target_kind = "category"
    # the governor predicts the job's cost, samples or refuses what would not fit, waits for a slot
    rows = governor.admit_training(sql, features, float(budget_seconds), algorithms, opts.get("max_rows"))
    # time_budget is the wall clock of the whole call, cold imports included; only the time queued
    # for a slot (bounded by sqlml.queue_timeout, shown in sqlml.jobs) does not count
    # model fits run on a helper thread that yields the CPU while interactive work is active
    yielding = priority.Yielding(governor.training_nice(), setup=lambda: limits.thread_limits(job_threads()))
    interactive = governor.InteractiveWork()

    def checkpoint():  # on the backend's thread, at every checkpoint of a fit (at most every 50 ms)
        interrupts.check()
        yielding.interactive(interactive.active())

    budget = Budget(float(budget_seconds), interrupt=yielding.wrap(checkpoint),
                    started=called + governor.queued_seconds())
    source = sql if rows is None else sample_query(sql, rows, int(opts.get("seed", 42)))
    n, raw, extras = ingest.read(source, features, {target: target_kind})
    governor.record_rows(n)
    y_raw = extras[target]
    if n == 0:
        raise SqlmlError(f"{rel.describe()} has no rows", sqlstate=DATA_EXCEPTION, hint="check the relation and its filter")
    check_target(target, y_raw)
    from sqlml.server import monitor  # data quality: a NOTICE per warning, refuses on a blocking problem

    data_profile = monitor.check_training_data(features, raw, n, target, target_col.pg_type, y_raw, task)
    features = check_columns(features, raw, n, dropped)
    for col, why in dropped.items():
        spi.notice(f'column "{col}" is not used: {why}')
    request = training_request(features, target, task, algorithms, budget_seconds, metric, test_size, exclude, opts)
    data_fingerprint = fingerprint(n, raw, y_raw)
    if not opts.get("force"):
        earlier = already_trained(project, data_fingerprint, request)
        if earlier is not None:
            return earlier
    schema = FeatureSchema(tuple(features), Target(target, target_col.pg_type, task or ""), dropped)
    from sqlml.automl import front

    governor.progress(startup_seconds=round(budget.elapsed(), 3), budget_seconds=budget.seconds)
    try:
        trained = front.train(schema, raw, y_raw, task=task, metric=metric, algorithms=algorithms,
                              test_size=float(test_size), seed=int(opts.get("seed", 42)), budget=budget,
                              on_trial=progress(budget), reserve_seconds=finish_reserve(budget.seconds), note=spi.notice,
                              ensemble=opts.get("ensemble", True), threads=job_threads(),
                              n_estimators=opts.get("n_estimators"), similar=similar_trainings(caller),
                              refit_all=opts.get("refit_all"), run_fit=yielding.run,
                              max_scoring_us=opts.get("max_scoring_us"), bagging=opts.get("bagging"), folds=opts.get("folds"))
    finally:
        yielding.close()
    return finish(project, rel, trained, raw, n, caller, budget, opts, data_profile, data_fingerprint, request)


def finish(project, rel, trained, raw, n, caller, budget, opts, data_profile, data_fingerprint, request):
    """Convert, verify, compare with the champion, register, deploy through the gate."""
    from sqlml.onnx import convert as onnx_convert
    from sqlml.onnx import parity

    task = trained.schema.target.task
    metric = trained.metric
    rejected = []
    for candidate in trained.candidates():
        interrupts.check()  # converting a large forest takes seconds: a cancel must not wait for every candidate
        blob = onnx_convert.to_onnx(candidate.model, trained.schema)
        sess = onnx_convert.session(blob)
        got = onnx_convert.run(sess, convert.as_feeds(trained.schema, trained.holdout_inputs), task)
        check = parity.compare(task, candidate.holdout_pred, got)
        if check.ok:
            break
        rejected.append({"algorithm": candidate.algorithm, "reason": check.reason})
        spi.notice(f"{candidate.algorithm} not registered: its ONNX export disagrees with the fitted model ({check.reason})")
    else:
        raise SqlmlError("no model passed the ONNX parity check: " + "; ".join(r["reason"] for r in rejected),
                         sqlstate=DATA_EXCEPTION, hint="train with other algorithms (algorithms => '{...}')")
    score = candidate.holdout_metrics[metric]
    raw_holdout = {k: v[trained.holdout_index] for k, v in raw.items()}
    split = {"data_fingerprint": data_fingerprint, "seed": int(opts.get("seed", 42)), "test_size": trained.test_size}

    def register(ex):
        access.require_train(ex, caller, project)
        store.ensure_project(ex, project, task, trained.schema.target.name, caller)
        access.require(ex, caller, project, "train")  # under the project's lock: it may have been created meanwhile
        champion = store.deployed(ex, project)
        version = store.next_version(ex, project)
        model_id = store.insert_model(ex, {
            "project": project, "version": version, "algorithm": candidate.algorithm, "task": task,
            "metric": metric, "score": float(score), "metrics": {
                "holdout": candidate.holdout_metrics, "validation": {metric: trained.result.validation_score,
                                                                     "method": trained.result.validation},
                "holdout_rows": len(trained.holdout_y), "train_rows": trained.train_rows,
                "refit": candidate.refit, "split": split, "request": request},
            "hyperparameters": candidate.params, "feature_schema": trained.schema.to_json(),
            "classes": list(trained.schema.target.classes), "onnx": blob, "sha256": store.sha256(blob),
            "opset": onnx_convert.opset_of(blob), "parity": {**check.to_json(), "rejected": rejected},
            "relation": rel.text, "rows": int(n), "data_fingerprint": data_fingerprint,
            "library_versions": library_versions(), "created_by": caller,
            "train_seconds": float(budget.elapsed()), "job_id": governor.job_id(), **operations,
            "meta_features": meta.to_vector_literal(trained.meta_features),
            "warm_start": trained.best_configurations(),
        })
        store.insert_trials(ex, project, governor.job_id(), version, metric, [t.to_json() for t in trained.result.trials]
                            + [{"n": len(trained.result.trials) + i + 1, "algorithm": r["algorithm"], "params": {},
                                "status": "parity_failed", "error": r["reason"]} for i, r in enumerate(rejected)])
        audit.record(ex, caller, "train", project, version, {"model_id": model_id, "algorithm": candidate.algorithm,
                                                              metric: float(score), "relation": rel.text, "rows": int(n)})
        return champion, version, model_id, access.has(ex, caller, project, "deploy")

    champion_before = privileged.run(lambda ex: store.deployed(ex, project) if store.project(ex, project) else None)
    champion_on_holdout = champion_score(champion_before, trained, raw_holdout, metric, split) if champion_before else None
    from sqlml.explain import model as explain
    from sqlml.server import monitor  # for operations: profile, drift baselines, diagnostics, importance

    explainer = explain.build(candidate.model, trained.schema, trained.fitted_on(candidate))
    operations = {**monitor.training_artifacts(trained, candidate, raw, budget, data_profile, explainer),
                  "explainer": explainer.to_bytes()}
    champion, version, model_id, may_deploy = privileged.run(register)
    governor.wrote()  # sqlml.jobs calls the job succeeded only once this transaction commits

    decision = gate(champion, champion_before, champion_on_holdout, metric, float(score), opts.get("deploy", "auto"))
    decision = deploy.after_training(project, version, model_id, decision, may_deploy, caller)
    if decision["deploy"] and budget.remaining() > scoring.compile_seconds(blob):  # else the first predict compiles
        scoring.warm(store.ModelRef(model_id, project, version, store.sha256(blob)), blob,
                     FeatureSchema.from_json(trained.schema.to_json()))  # as a backend loading it reads it
    spi.notice(f"version {version}: {candidate.algorithm} {metric}={score:.4f} on {len(trained.holdout_y)} holdout rows; "
               f"{'deployed' if decision['deploy'] else 'not deployed'} ({decision['why']})")
    return [(project, version, candidate.algorithm, metric, float(score), bool(decision["deploy"]))]


def gate(champion, champion_before, champion_on_holdout, metric, score, mode) -> dict:
    """Deploy the challenger only if there is no champion or it beats the champion on the same holdout."""
    if mode == "never":
        return {"deploy": False, "why": "options.deploy is 'never'"}
    if champion is None:
        return {"deploy": True, "why": "first model of the project"}
    if champion_before is None or champion["id"] != champion_before["id"]:
        return {"deploy": False, "why": "another model was deployed while this one trained", "champion_version": champion["version"]}
    if champion_on_holdout is None:
        return {"deploy": False, "champion_version": champion["version"],
                "why": f"the deployed version {champion['version']} cannot be scored on this holdout (other classes or columns); deploy explicitly"}
    won = metrics.better(metric, score, champion_on_holdout)
    return {"deploy": bool(won), "champion_version": champion["version"], "champion_score": champion_on_holdout,
            "challenger_score": score,
            "why": f"{metric} {score:.4f} vs deployed version {champion['version']}'s {champion_on_holdout:.4f} on the same holdout"
                   + ("" if won else ": not better")}
