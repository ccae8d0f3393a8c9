"""``sqlml.train``: validate, ingest, search, convert, verify, register, decide deployment.

Orchestration only: each step is a call into data/, automl/, onnx/ or registry/.
"""

from __future__ import annotations

import json
import time

from sqlml import deferred
from sqlml.automl import meta, metrics
from sqlml.automl.budget import Budget
from sqlml.automl.request import TrainRequest
from sqlml.data import convert, quality
from sqlml.data.columns import check_columns, check_target, choose_features
from sqlml.data.ingest import sample_query
from sqlml.data.schema import FeatureSchema, Target, kind_of
from sqlml.data.task import check_target_type
from sqlml.errors import DATA_EXCEPTION, SqlmlError
from sqlml.governor import limits, priority
from sqlml.registry import access, audit, gate, store
from sqlml.registry.lineage import fingerprint, library_versions
from sqlml.server import deploy, explaining, governing, interrupts, predicting, privileged, reading
from sqlml.server.spi import spi

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
    return governing.threads()


def progress(budget: Budget, every: float = PROGRESS_SECONDS):
    """Per trial: the job's live progress (sqlml.jobs), and a NOTICE when the trial is the new best,
    failed, or ``every`` seconds have passed (cheap trials would otherwise flood the client)."""
    last = [-every]

    def on_trial(trial, best):
        governing.progress(trials=trial.n, best_score=best.score if best else None,
                          best_algorithm=best.algorithm if best else None, budget_seconds=budget.seconds)
        if trial is not best and trial.status == "ok" and budget.elapsed() - last[0] < every:
            return
        last[0] = budget.elapsed()
        score = ("failed" if trial.status == "failed" else
                 "timed out" if trial.status == "timeout" else f"{trial.score:.4f}")
        best_s = f"best {best.score:.4f} ({best.algorithm})" if best else "no model yet"
        spi.notice(f"trial {trial.n}: {trial.algorithm} {score}; {best_s}; "
                   f"{budget.elapsed():.1f}s of {budget.seconds:.0f}s")
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


def train(request: TrainRequest, called: float | None = None, source: reading.Source | None = None):
    """``called``: ``time.monotonic()`` at the SQL entry, where ``time_budget`` starts counting;
    ``source``: the relation, when the caller has opened it already (``retrain_if_drifted``)."""
    called = time.monotonic() if called is None else called
    deferred.defer_scipy_stats()  # before scikit-learn's first import: half of a cold backend's import time
    r = request
    if r.forecast:  # many time series, chosen by backtests: its own orchestration
        from sqlml.server import forecasting

        return forecasting.train(r, called, source)
    opts = r.checked_options()
    project, target, task = r.project, r.target, r.task
    caller = spi.execute("SELECT current_user AS u")[0]["u"]
    privileged.run(lambda ex: access.require_train(ex, caller, project))  # before reading any data
    source = source or reading.Source.open(r.relation)
    rel, sql = source.relation, source.sql
    source.check_readable(target, "the target column")
    features, target_col, dropped = choose_features(source.columns, target, list(r.exclude or []), rel.describe())
    for h in source.hidden:
        dropped[h] = "not readable by the current role"
    check_target_type(target, target_col.pg_type, task)
    features = reading.with_dims(sql, features, {c.name: c.typmod for c in source.columns})
    target_kind = "numeric" if kind_of(target_col.pg_type) in ("numeric", "boolean") else "category"
    if target_col.pg_type == "bool":
        target_kind = "category"
    # the governor predicts the job's cost, samples or refuses what would not fit, waits for a slot
    rows = governing.admit_training(sql, features, float(r.budget_seconds), r.algorithms, opts.get("max_rows"))
    # time_budget is the wall clock of the whole call, cold imports included; only the time queued
    # for a slot (bounded by sqlml.queue_timeout, shown in sqlml.jobs) does not count
    # model fits run on a helper thread that yields the CPU while interactive work is active
    yielding = priority.Yielding(governing.training_nice(), setup=lambda: limits.thread_limits(job_threads()))
    interactive = governing.InteractiveWork()

    def checkpoint():  # on the backend's thread, at every checkpoint of a fit (at most every 50 ms)
        interrupts.check()
        yielding.interactive(interactive.active())

    budget = Budget(float(r.budget_seconds), interrupt=yielding.wrap(checkpoint),
                    started=called + governing.queued_seconds())
    read_sql = sql if rows is None else sample_query(sql, rows, int(opts.get("seed", 42)))
    n, raw, extras = reading.read(read_sql, features, {target: target_kind})
    governing.record_rows(n)
    y_raw = extras[target]
    if n == 0:
        raise SqlmlError(f"{rel.describe()} has no rows", sqlstate=DATA_EXCEPTION,
                         hint="check the relation and its filter")
    check_target(target, y_raw)
    data_profile = check_data(features, raw, n, target, target_col.pg_type, y_raw, task)
    features = check_columns(features, raw, n, dropped)
    for col, why in dropped.items():
        spi.notice(f'column "{col}" is not used: {why}')
    fingerprinted = r.fingerprint(features, opts)
    data_fingerprint = fingerprint(n, raw, y_raw)
    if not opts.get("force"):
        earlier = already_trained(project, data_fingerprint, fingerprinted)
        if earlier is not None:
            return earlier
    schema = FeatureSchema(tuple(features), Target(target, target_col.pg_type, task or ""), dropped)
    from sqlml.automl import front

    governing.progress(startup_seconds=round(budget.elapsed(), 3), budget_seconds=budget.seconds)
    try:
        trained = front.train(schema, raw, y_raw, task=task, metric=r.metric, algorithms=r.algorithms,
                              test_size=float(r.test_size), seed=int(opts.get("seed", 42)), budget=budget,
                              on_trial=progress(budget), reserve_seconds=finish_reserve(budget.seconds),
                              note=spi.notice,
                              ensemble=opts.get("ensemble", True), threads=job_threads(),
                              n_estimators=opts.get("n_estimators"), similar=similar_trainings(caller),
                              refit_all=opts.get("refit_all"), run_fit=yielding.run,
                              max_scoring_us=opts.get("max_scoring_us"), bagging=opts.get("bagging"),
                              folds=opts.get("folds"))
    finally:
        yielding.close()
    return finish(project, rel, trained, raw, n, caller, budget, opts, data_profile, data_fingerprint, fingerprinted)


def check_data(features, raw, n, target, target_pg_type, y_raw, task) -> dict:
    """The data checks before the search (``sqlml.data.quality``): a NOTICE per warning, an error on a
    blocking problem; returns the data profile stored with the model."""
    from sqlml.automl.front import infer_task

    task = task or infer_task(target, target_pg_type, y_raw)[0]
    verdict = quality.check_training_data(features, raw, n, target, target_pg_type, y_raw, task)
    for message in verdict.notices:
        spi.notice(message)
    if verdict.error is not None:
        raise verdict.error
    return verdict.report


def finish(project, rel, trained, raw, n, caller, budget, opts, data_profile, data_fingerprint, request_json):
    """Convert, verify, compare with the champion, register, deploy through the gate."""
    from sqlml.onnx import compiled, parity
    from sqlml.onnx import convert as onnx_convert

    task = trained.schema.target.task
    metric = trained.metric
    rejected = []
    checked = parity.rows(len(trained.holdout_y))
    feeds = convert.as_feeds(trained.schema, {k: v[checked] for k, v in trained.holdout_inputs.items()})
    for candidate in trained.candidates():
        interrupts.check()  # converting a large forest takes seconds: a cancel must not wait for every candidate
        blob = onnx_convert.to_onnx(candidate.model, trained.schema)
        sess = onnx_convert.session(blob)
        got = onnx_convert.run(sess, feeds, task)
        check = parity.compare(task, candidate.holdout_pred[checked], got)
        if check.ok:
            break
        rejected.append({"algorithm": candidate.algorithm, "reason": check.reason})
        spi.notice(f"{candidate.algorithm} not registered: its ONNX export disagrees with the fitted model "
                   f"({check.reason})")
    else:
        raise SqlmlError("no model passed the ONNX parity check: " + "; ".join(r["reason"] for r in rejected),
                         sqlstate=DATA_EXCEPTION, hint="train with other algorithms (algorithms => '{...}')")
    score = candidate.holdout_metrics[metric]
    raw_holdout = {k: v[trained.holdout_index] for k, v in raw.items()}
    split = {"data_fingerprint": data_fingerprint, "seed": int(opts.get("seed", 42)), "test_size": trained.test_size}

    champion_before = privileged.run(lambda ex: store.deployed(ex, project) if store.project(ex, project) else None)
    champion_on_holdout = (champion_score(champion_before, trained, raw_holdout, metric, split)
                           if champion_before else None)
    from sqlml.explain import model as explain
    from sqlml.monitor.artifacts import training_artifacts  # profile, drift baselines, diagnostics, importance

    explainer = explain.build(candidate.model, trained.schema, trained.fitted_on(candidate))
    if explainer.has_trees:  # its importance runs TreeSHAP: compiled here once, kept for every backend
        explaining.native_treeshap()
    operations = {**training_artifacts(trained, candidate, raw, budget, data_profile, explainer),
                  "explainer": explainer.to_bytes()}

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
                "refit": candidate.refit, "split": split, "request": request_json},
            "hyperparameters": candidate.params, "feature_schema": trained.schema.to_json(),
            "classes": list(trained.schema.target.classes), "onnx": blob, "sha256": store.sha256(blob),
            "opset": onnx_convert.opset_of(blob), "parity": {**check.to_json(), "rejected": rejected},
            "relation": rel.text, "rows": int(n), "data_fingerprint": data_fingerprint,
            "library_versions": library_versions(), "created_by": caller,
            "train_seconds": float(budget.elapsed()), "job_id": governing.job_id(), **operations,
            "meta_features": meta.to_vector_literal(trained.meta_features),
            "warm_start": trained.best_configurations(),
        })
        trials = [t.to_json() for t in trained.result.trials]
        trials += [{"n": len(trials) + i + 1, "algorithm": r["algorithm"], "params": {}, "status": "parity_failed",
                    "error": r["reason"]} for i, r in enumerate(rejected)]
        store.insert_trials(ex, project, governing.job_id(), version, metric, trials)
        audit.record(ex, caller, "train", project, version, {
            "model_id": model_id, "algorithm": candidate.algorithm, metric: float(score), "relation": rel.text,
            "rows": int(n)})
        return champion, version, model_id, access.has(ex, caller, project, "deploy")

    champion, version, model_id, may_deploy = privileged.run(register)
    governing.wrote()  # sqlml.jobs calls the job succeeded only once this transaction commits

    decision = gate.decide(gate.holdout(metric), opts.get("deploy", "auto"), champion, champion_before,
                           champion_on_holdout, float(score))
    decision = deploy.after_training(project, version, model_id, decision, may_deploy, caller)
    if decision["deploy"] and budget.remaining() > compiled.compile_seconds(blob):  # else the first predict compiles
        predicting.warm(store.ModelRef(model_id, project, version, store.sha256(blob)), blob,
                     FeatureSchema.from_json(trained.schema.to_json()))  # as a backend loading it reads it
    spi.notice(f"version {version}: {candidate.algorithm} {metric}={score:.4f} on {len(trained.holdout_y)} "
               "holdout rows; "
               f"{'deployed' if decision['deploy'] else 'not deployed'} ({decision['why']})")
    return [(project, version, candidate.algorithm, metric, float(score), bool(decision["deploy"]))]

