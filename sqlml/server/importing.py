"""``sqlml.import_model``: register an ONNX model trained elsewhere, as training registers its own.

Orchestration only: the caller's ``train`` right on the project first; the blob is checked and
wrapped into sqlml's graph shape against the relation's columns (``sqlml.onnx.imported``) before
any row is read; a sample of the relation (read as the caller) is scored through the same scorer
``sqlml.predict`` uses, checked against the original graph, measured when it holds the target,
and kept as drift baselines; the version is registered (origin ``imported``, the sha256 of the
blob as given and the caller in its lineage) and deployed through the gate.
"""

from __future__ import annotations

import numpy as np

from sqlml.automl import metrics
from sqlml.automl.request import PROJECT_NAME
from sqlml.data import convert
from sqlml.data.ingest import sample_query
from sqlml.data.schema import CATEGORY, REGRESSION, Feature, FeatureSchema, Target, kind_of
from sqlml.data.task import task_of
from sqlml.errors import DATA_EXCEPTION, INVALID_PARAMETER, SqlmlError
from sqlml.monitor import diagnostics, drift
from sqlml.registry import access, audit, gate, store
from sqlml.registry.lineage import fingerprint, library_versions
from sqlml.server import deploy, governing, privileged, reading
from sqlml.server.spi import spi

SAMPLE_ROWS = 10000
OPTIONS = {"deploy": str, "max_rows": int, "seed": int}


def check_arguments(project, onnx, task, relation, options) -> dict:
    if project is None or not PROJECT_NAME.match(str(project)):
        raise SqlmlError(
            f'invalid project name "{project}"',
            sqlstate=INVALID_PARAMETER,
            hint="use 1-63 letters, digits, '_', '.' or '-', starting with a letter, digit or '_'",
        )
    if onnx is None:
        raise SqlmlError("onnx is NULL", hint="pass the model's bytes (bytea)", sqlstate=INVALID_PARAMETER)
    if task is None:
        raise SqlmlError(
            "task is NULL", hint="pass task => 'binary', 'multiclass' or 'regression'", sqlstate=INVALID_PARAMETER
        )
    if relation is None:
        raise SqlmlError(
            "relation is NULL",
            sqlstate=INVALID_PARAMETER,
            hint="name a table, view or SELECT with the model's input columns (and the target, for metrics)",
        )
    options = options or {}
    if not isinstance(options, dict):
        raise SqlmlError("options must be a JSON object", sqlstate=INVALID_PARAMETER)
    out = {}
    for key, value in options.items():
        if key not in OPTIONS:
            raise SqlmlError(
                f'unknown option "{key}"', hint=f"options are: {', '.join(OPTIONS)}", sqlstate=INVALID_PARAMETER
            )
        value = int(value) if OPTIONS[key] is int and not isinstance(value, (bool, str)) else value
        if not isinstance(value, OPTIONS[key]):
            raise SqlmlError(
                f'option "{key}" must be {OPTIONS[key].__name__}, got {value!r}', sqlstate=INVALID_PARAMETER
            )
        out[key] = value
    if out.get("deploy", "auto") not in ("auto", "never"):
        raise SqlmlError(
            f'option "deploy" is {out["deploy"]!r}',
            hint="use 'auto' (through the gate) or 'never'",
            sqlstate=INVALID_PARAMETER,
        )
    if out.get("max_rows", 1) < 1:
        raise SqlmlError('option "max_rows" must be positive', sqlstate=INVALID_PARAMETER)
    return out


def encode_labels(target: str, y_raw, classes: list, numeric: bool):
    """(encoded labels, rows kept): class indices of the target's values; a value the model has no
    class for is an error naming it."""
    keep = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in y_raw], dtype=bool)
    index = {(float(c) if numeric else str(c)): i for i, c in enumerate(classes)}
    y = np.full(len(y_raw), -1, dtype=np.int64)
    for i in np.flatnonzero(keep):
        key = float(y_raw[i]) if numeric else str(y_raw[i])
        if key not in index:
            raise SqlmlError(
                f'target "{target}" holds {y_raw[i]!r}, which is none of the model\'s classes '
                f"({', '.join(map(str, classes))})",
                sqlstate=DATA_EXCEPTION,
                hint="import with a relation whose target uses the model's labels, or map them in a view",
            )
        y[i] = index[key]
    return y, keep


def import_model(project, onnx, task, relation, target, columns, options):
    from sqlml.onnx import imported, parity
    from sqlml.onnx.convert import opset_of
    from sqlml.onnx.scorer import Scorer

    opts = check_arguments(project, onnx, task, relation, options)
    caller = spi.execute("SELECT current_user AS u")[0]["u"]
    privileged.run(lambda ex: access.require_train(ex, caller, project))  # before reading anything
    governing.admit_import()  # the graph is the user's: it runs under the job's memory cap
    blob = bytes(onnx)
    source = reading.Source.open(relation)
    rel, sql, described = source.relation, source.sql, source.by_name()
    if target is not None:
        source.check_readable(target, "the target column")
    kinds = {name: kind_of(c.pg_type) or c.pg_type for name, c in described.items() if name != target}
    wrapped = imported.wrap(blob, task, kinds, list(columns) if columns is not None else None)
    features = [Feature(name, kinds[name], described[name].pg_type) for name in wrapped.columns]
    has_target = target is not None and target in described
    target_pg = described[target].pg_type if has_target else None
    extra = {target: "numeric" if kind_of(target_pg) == "numeric" else CATEGORY} if has_target else None
    source = sample_query(sql, int(opts.get("max_rows", SAMPLE_ROWS)), int(opts.get("seed", 42)))
    n, raw, extras = reading.read(source, features, extra)
    if n == 0:
        raise SqlmlError(
            f"{rel.describe()} has no rows to validate the model on",
            sqlstate=DATA_EXCEPTION,
            hint="pass a relation with rows like those the model will score",
        )
    y_raw = extras[target] if has_target else None

    classes = ()
    if task != REGRESSION:
        classes = wrapped.classes
        if classes is None and has_target:
            values = sorted({v for v in y_raw if v is not None and not (isinstance(v, float) and np.isnan(v))})
            classes = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
        if classes is None:
            classes = list(range(wrapped.outputs))
        if len(classes) != wrapped.outputs:
            raise SqlmlError(
                f'the model gives {wrapped.outputs} class probabilities; the target "{target}" has '
                f"{len(classes)} classes",
                sqlstate=DATA_EXCEPTION,
                hint="check task and target",
            )
        if target_pg is None:
            target_pg = "text" if any(isinstance(c, str) for c in classes) else "int8"
    schema = FeatureSchema(tuple(features), Target(target or "prediction", target_pg or "float8", task, tuple(classes)))
    inputs = convert.model_inputs(schema, raw)
    pred = Scorer(wrapped.onnx, schema).run(inputs, n)
    if task == REGRESSION and pred.shape != (n,):  # its outputs' declared shapes are only what it says
        raise SqlmlError(f"the model gives {pred.size / max(n, 1):g} values per row; a regression predicts one",
                         sqlstate=INVALID_PARAMETER, hint="pass task => 'multiclass' for class scores")
    check = parity.compare(task, imported.original_output(blob, wrapped, inputs, task), pred)
    if not check.ok:
        raise SqlmlError(
            f"the imported model scores differently inside sqlml than as given: {check.reason}",
            sqlstate=DATA_EXCEPTION,
            hint="report this with the model: the wrapper should not change it",
        )

    metric = task_of(task).default_metric
    score, holdout, rows = None, {}, 0
    if has_target:
        if task == REGRESSION:
            y = np.asarray(y_raw, dtype=np.float64)
            keep = ~np.isnan(y)
        else:
            y, keep = encode_labels(target, y_raw, list(classes), schema.target.numeric_labels)
        rows = int(keep.sum())
        if rows:
            holdout = metrics.all_metrics(task, y[keep], pred[keep])
            score = holdout.get(metric)
    baseline = {
        "features": drift.feature_baselines(features, raw),
        "prediction": drift.prediction_baseline(task, pred, tuple(classes)),
    }
    source_sha = store.sha256(blob)
    split = {"data_fingerprint": fingerprint(n, raw, y_raw if y_raw is not None else []), "imported": True}
    champion_before = privileged.run(lambda ex: store.deployed(ex, project) if store.project(ex, project) else None)
    champion_on_sample = None
    if champion_before is not None and score is not None:
        champion_on_sample = _champion_score(champion_before, schema, raw, y[keep], keep, metric)

    def register(ex):
        access.require_train(ex, caller, project)
        store.ensure_project(ex, project, task, schema.target.name, caller)
        access.require(ex, caller, project, "train")
        champion = store.deployed(ex, project)
        version = store.next_version(ex, project)
        model_id = store.insert_model(
            ex,
            {
                "project": project,
                "version": version,
                "algorithm": "imported",
                "task": task,
                "metric": metric,
                "score": score,
                "metrics": {
                    "holdout": holdout,
                    "holdout_rows": rows,
                    "train_rows": 0,
                    "validation": {"method": f"sample of {rel.text}"},
                    "split": split,
                },
                "hyperparameters": {
                    "imported": {
                        **wrapped.producer,
                        "sha256": source_sha,
                        "bytes": len(blob),
                        "columns": list(wrapped.columns),
                    }
                },
                "feature_schema": schema.to_json(),
                "classes": list(classes),
                "onnx": wrapped.onnx,
                "sha256": store.sha256(wrapped.onnx),
                "opset": opset_of(wrapped.onnx),
                "parity": check.to_json(),
                "relation": rel.text,
                "rows": int(n),
                "data_fingerprint": split["data_fingerprint"],
                "library_versions": library_versions(),
                "created_by": caller,
                "origin": "imported",
                "baseline": diagnostics.jsonable(baseline),
                "diagnostics": diagnostics.summarise(task, y[keep], pred[keep], tuple(classes)) if rows else None,
            },
        )
        audit.record(
            ex,
            caller,
            "import",
            project,
            version,
            {"model_id": model_id, "sha256": source_sha, "relation": rel.text, "rows": int(n), metric: score},
        )
        return champion, version, model_id, access.has(ex, caller, project, "deploy")

    champion, version, model_id, may_deploy = privileged.run(register)
    governing.wrote()
    if score is None and champion is not None:
        decision = {
            "deploy": False,
            "why": f"{rel.text} holds no labels to compare with the deployed version "
            f"{champion['version']}; deploy explicitly",
        }
    else:
        decision = gate.decide(gate.holdout(metric), opts.get("deploy", "auto"), champion, champion_before,
                               champion_on_sample, score)
    decision = deploy.after_training(project, version, model_id, decision, may_deploy, caller, strategy="import")
    measured = f"{metric}={score:.4f} on {rows} rows of {rel.text}" if score is not None else f"no labels in {rel.text}"
    spi.notice(
        f"version {version}: imported model ({wrapped.producer['producer_name'] or 'unknown producer'}), "
        f"{measured}; {'deployed' if decision['deploy'] else 'not deployed'} ({decision['why']})"
    )
    return [(project, version, "imported", metric, score, bool(decision["deploy"]))]


def _champion_score(champion: dict, schema: FeatureSchema, raw: dict, y: np.ndarray, keep: np.ndarray, metric: str):
    """The deployed model's score on the same sample, or None if it cannot score it."""
    from sqlml.onnx.scorer import Scorer

    blob, _, schema_json = privileged.run(lambda ex: store.onnx_blob(ex, champion["id"]))
    theirs = FeatureSchema.from_json(schema_json)
    if theirs.target.classes != schema.target.classes or any(f.name not in raw for f in theirs.features):
        return None
    n = len(keep)
    out = Scorer(blob, theirs).run(convert.model_inputs(theirs, raw), n)
    return metrics.score(metric, y, out[keep])
