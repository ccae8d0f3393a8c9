"""Operations entry points: ``sqlml.profile``, ``evaluate``, ``monitor``, ``retrain_if_drifted``,
``prediction_counts``, ``job_counts``; and the training hook that computes what monitoring and the
model card need before registering.

Thin: data is read as the caller through ``sqlml.server.reading``; the logic lives in
``sqlml.data.profile`` and ``sqlml.monitor``; the time series are written with the extension
owner's rights through ``sqlml.server.privileged``.
"""

from __future__ import annotations

from sqlml.automl.request import TrainRequest
from sqlml.data import profile as profiling
from sqlml.data.quality import target_kind
from sqlml.data.schema import CATEGORY, Feature, kind_of
from sqlml.errors import (
    DATA_EXCEPTION,
    INVALID_PARAMETER,
    OBJECT_NOT_IN_PREREQUISITE_STATE,
    UNDEFINED_COLUMN,
    SqlmlError,
)
from sqlml.monitor import diagnostics, drift, evaluation, series
from sqlml.server import privileged, reading
from sqlml.server.spi import spi

# --- sqlml.profile ---------------------------------------------------------------------------------

def profile(relation, target):
    source = reading.Source.open(relation)
    rel, sql, hidden, described = source.relation, source.sql, source.hidden, source.columns
    by_name = source.by_name()
    if target is not None and target not in by_name:
        raise SqlmlError(f'column "{target}" not found in {rel.describe()}; columns are: {", ".join(by_name)}',
                         sqlstate=UNDEFINED_COLUMN, hint="pass the name of the column to predict, or NULL")
    # every column is read; a type training cannot use is read as text and profiled as such
    features = [Feature(c.name, kind_of(c.pg_type) or CATEGORY, c.pg_type) for c in described]
    features = reading.with_dims(sql, features, {c.name: c.typmod for c in described})
    n, raw, _ = reading.read(sql, features)
    columns = [profiling.Column(f.name, f.pg_type, kind_of(f.pg_type), raw[f.name]) for f in features]
    task = None
    if target is not None:
        from sqlml.automl.front import infer_task
        from sqlml.data.task import check_target_type

        check_target_type(target, by_name[target].pg_type, None)
        task = infer_task(target, by_name[target].pg_type, raw[target])[0]
    report = profiling.profile(n, columns, target=target, task=task)
    out = [_profile_row(c) for c in report["columns"]]
    out += [(name, None, "hidden", None, None, None, None, None, ["hidden: not readable by the current role"])
            for name in hidden]
    return out


def _profile_row(c: dict) -> tuple:
    def text(v):
        if v is None:
            return None
        if isinstance(v, bool):
            return "true" if v else "false"
        return repr(v) if isinstance(v, float) else str(v)

    return (c["name"], c["type"], c["kind"], c["null_share"], c["distinct"], text(c["min"]), text(c["max"]),
            c["mean"], [f'{w["code"]}: {w["message"]}' for w in c["warnings"]])


# --- reading a relation for a model ---------------------------------------------------------------

def _model(project, version):
    from sqlml.server import predicting

    if version is not None and (not isinstance(version, int) or version < 1):
        raise SqlmlError(f"version {version} is not a model version", sqlstate=INVALID_PARAMETER,
                         hint="pass a positive version number, or NULL for the deployed one")
    m = predicting.resolve(project if version is None else f"{project}@{version}")
    facts = privileged.run(lambda ex: series.model_facts(ex, m.ref.id))
    return m, facts


def _read_for(m, relation: str, extra: dict | None = None):
    """(source, n, raw feature columns, extra columns) of ``relation`` for model ``m``."""
    source = reading.Source.open(relation)
    rel, sql, cols = source.relation, source.sql, source.by_name()
    wanted = [f.name for f in m.schema.features] + list(extra or {})
    missing = [name for name in wanted if name not in cols]
    if missing:
        raise SqlmlError(f'column{"s" if len(missing) > 1 else ""} {", ".join(map(repr, missing))} not found in '
                         f'{rel.describe()}; columns are: {", ".join(cols)}', sqlstate=UNDEFINED_COLUMN,
                         hint=f"the model needs: {', '.join(wanted)}")
    extra_kinds = {name: target_kind(cols[name].pg_type) for name in (extra or {})}
    n, raw, extras = reading.read(sql, list(m.schema.features), extra_kinds)
    if n == 0:
        raise SqlmlError(f"{rel.describe()} has no rows", sqlstate=DATA_EXCEPTION,
                         hint="check the relation and its filter")
    return source, n, raw, extras


def _is_forecast(project) -> bool:
    """Whether ``project`` (as the caller may see it through row-level security) is a forecast project."""
    rows = spi.execute("SELECT task FROM sqlml.projects WHERE name = $1", [str(project)])
    return bool(rows) and rows[0]["task"] == "forecast"


def _caller() -> str:
    return spi.execute("SELECT current_user AS u")[0]["u"]


# --- sqlml.evaluate -------------------------------------------------------------------------------

def evaluate(project, relation, version):
    if _is_forecast(project):
        from sqlml.server import forecasting

        return forecasting.evaluate(project, relation, version)
    m, facts = _model(project, version)
    target = m.schema.target
    source, n, raw, extras = _read_for(m, relation, {target.name: None})
    rel = source.relation
    y, keep, unseen = evaluation.encode(target, extras[target.name])
    skipped = {"null_label": int(n - keep.sum() - unseen), "unseen_label": unseen}
    if not keep.any():
        raise SqlmlError(f'{rel.describe()} has no rows with a usable label in "{target.name}" ({n} rows: '
                         f'{skipped["null_label"]} NULL, {unseen} with labels the model never saw)',
                         sqlstate=DATA_EXCEPTION,
                         hint="evaluate on rows whose outcome is known")
    if unseen:
        spi.notice(f'{unseen} rows have labels version {facts["version"]} never saw; they are not scored')
    out = m.predict_columns({k: v[keep] for k, v in raw.items()})
    values = evaluation.evaluate(target.task, y, out)
    caller = _caller()
    at = privileged.run(lambda ex: series.insert_evaluation(ex, facts, rel.text, int(keep.sum()), skipped, values,
                                                            caller))
    holdout = (facts["metrics"] or {}).get("holdout", {})
    return [(facts["project"], facts["version"], name, value, holdout.get(name), int(keep.sum()), at)
            for name, value in values.items()]


# --- sqlml.monitor --------------------------------------------------------------------------------

def measure(project, relation, version, moderate, major):
    """(model facts, rows as dicts, the relation's source) of one monitor call, stored in sqlml.drift."""
    drift.check_thresholds(moderate, major)
    m, facts = _model(project, version)
    base = facts["baseline"]
    if not base:
        raise SqlmlError(f'version {facts["version"]} of "{facts["project"]}" has no drift baseline',
                         sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
                         hint="train a new version: baselines are stored at training")
    source, n, raw, _ = _read_for(m, relation)
    results = []
    for f in m.schema.features:
        res = drift.compare(base["features"][f.name], drift.as_values(f.kind, raw[f.name]))
        results.append(drift.row(f.name, "feature", res, n, moderate, major))
    out = m.predict_columns(raw)
    pred = drift.prediction_values(m.task, out, m.classes)
    results.append(drift.row("prediction", "prediction", drift.compare(base["prediction"], pred), n, moderate, major))
    caller = _caller()
    at = privileged.run(lambda ex: series.insert_drift(ex, facts, source.relation.text, diagnostics.jsonable(results),
                                                       caller))
    return facts, [{**r, "measured_at": at} for r in results], source


def monitor(project, relation, version, moderate, major):
    if _is_forecast(project):
        from sqlml.server import forecasting

        return forecasting.monitor(project, relation, version, moderate, major)
    facts, rows, _ = measure(project, relation, version, moderate, major)
    return [(facts["project"], facts["version"], r["feature"], r["what"], r["psi"], r["drift"], r["rows"],
             r["measured_at"]) for r in rows]


# --- sqlml.retrain_if_drifted ---------------------------------------------------------------------

def retrain_if_drifted(project, relation, training_relation, threshold, budget_seconds):
    if threshold is None or not threshold > 0:
        raise SqlmlError(f"threshold {threshold} must be positive", sqlstate=INVALID_PARAMETER,
                         hint="0.25 (major drift) is the usual choice")
    if _is_forecast(project):
        from sqlml.server import forecasting

        return forecasting.retrain_if_drifted(project, relation, training_relation, threshold, budget_seconds)
    facts, rows, measured = measure(project, relation, None, min(drift.MODERATE, threshold),
                                    max(drift.MAJOR, threshold))
    worst = max(rows, key=lambda r: r["psi"])
    label = f'{worst["feature"]} ({worst["what"]})' if worst["what"] == "feature" else "prediction"
    if worst["psi"] < threshold:
        return [(facts["project"], False, worst["psi"], label, facts["version"], False,
                 f'no retraining: the largest PSI, {worst["psi"]:.3f} ({label}), is below {threshold}')]
    source = measured if training_relation is None else reading.Source.open(training_relation)
    spi.notice(f'drift: PSI {worst["psi"]:.3f} on {label} reaches {threshold}; '
               f'training "{facts["project"]}" on {source.relation.text}')
    from sqlml.server import governing, training

    request = TrainRequest(facts["project"], source.relation.text, facts["target"], task=facts["task"],
                           budget_seconds=float(budget_seconds), metric=facts["metric"],
                           exclude=_same_features(facts, source), options={})
    trained = governing.train_as_caller(request.project, lambda called: training.train(request, called, source))[0]
    _, version, _, _, _, deployed = trained
    decision = (f'version {version} deployed through the gate' if deployed else
                f'version {version} registered; version {facts["version"]} stays deployed (the gate kept it)')
    return [(facts["project"], True, worst["psi"], label, version, bool(deployed), decision)]


def _same_features(facts: dict, source: reading.Source) -> list[str]:
    """Columns of ``source`` to exclude so that the new version uses the deployed one's features."""
    schema = facts["feature_schema"]
    keep = {f["name"] for f in schema["features"]} | {schema["target"]["name"]}
    return [c.name for c in source.columns if c.name not in keep]


# --- metrics ----------------------------------------------------------------------------------------

def prediction_counts():
    """Rows scored per project, for the projects the caller may score (a name and a count are
    facts about a project too): a monitoring role sees what it was granted, an admin everything."""
    from sqlml.server import counters

    counts = counters.read()
    visible = {r["p"] for r in spi.execute(
        "SELECT p FROM pg_catalog.unnest($1::text[]) AS p WHERE sqlml.has_privilege(current_user, p, 'predict')",
        [sorted(counts)])} if counts else set()
    return sorted((p, n) for p, n in counts.items() if p in visible)


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "uncommitted", "rolled_back")


def job_counts():
    """Jobs per state, every state listed (0 when none; all 0 where sqlml.jobs does not exist)."""
    counts = dict.fromkeys(JOB_STATES, 0)
    if spi.execute("SELECT to_regclass('sqlml.jobs') IS NOT NULL AS ok")[0]["ok"]:
        for r in spi.execute("SELECT state::text AS state, count(*) AS jobs FROM sqlml.jobs GROUP BY 1"):
            counts[r["state"]] = r["jobs"]
    return list(counts.items())
