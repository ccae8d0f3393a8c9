"""Projects, models, deployments and trials: the persistence of the model lifecycle.

Everything goes through an :class:`sqlml.executor.Executor`. On the server these functions run
with the extension owner's rights (see ``sqlml.server.privileged``); callers check the user's
privileges first (``sqlml.registry.access``).

Invariants: versions count up per project and never repeat (``projects.last_version``, bumped
under the project's row lock); a deployment always points at an existing model of its project
(foreign keys); the project row lock serialises concurrent registrations and deployments.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlml.errors import INVALID_PARAMETER, OBJECT_NOT_IN_PREREQUISITE_STATE, UNDEFINED_OBJECT, SqlmlError
from sqlml.executor import to_json


@dataclass(frozen=True)
class ModelRef:
    """What scoring needs to find and verify a model."""

    id: int
    project: str
    version: int
    sha256: str


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def parse_project_spec(spec: str) -> tuple[str, int | None]:
    """``'churn'`` -> ('churn', None); ``'churn@3'`` -> ('churn', 3)."""
    if spec is None:
        raise SqlmlError("project is NULL", hint="pass a project name such as 'churn' or 'churn@3'")
    name, sep, version = str(spec).rpartition("@")
    if sep and version.isdigit():
        return name, int(version)
    return str(spec), None


def model_bytes(ex, spec: str, who: str) -> int:
    """Size of the ONNX model ``spec`` (``name``: the deployed one, or ``name@version``) means; 0 if
    there is none or role ``who`` may not score it (the size of a model is a fact about it too)."""
    name, version = parse_project_spec(spec)
    rows = ex.execute(
        "SELECT octet_length(m.onnx) AS n FROM sqlml.models m WHERE m.project = $1 AND "
        "m.id = CASE WHEN $2 = '' THEN (SELECT d.model_id FROM sqlml.deployments d WHERE d.project = $1 "
        "ORDER BY d.id DESC LIMIT 1) ELSE (SELECT m2.id FROM sqlml.models m2 WHERE m2.project = $1 "
        "AND m2.version::text = $2) END AND sqlml.has_privilege($3::name, m.project, 'predict')",
        [name, "" if version is None else str(version), who])
    return int(rows[0]["n"]) if rows else 0


def project(ex, name: str, lock: bool = False) -> dict | None:
    rows = ex.execute("SELECT * FROM sqlml.projects WHERE name = $1" + (" FOR UPDATE" if lock else ""), [name])
    return rows[0] if rows else None


def require_project(ex, name: str, lock: bool = False) -> dict:
    row = project(ex, name, lock)
    if row is None:
        known = [r["name"] for r in ex.execute("SELECT name FROM sqlml.projects ORDER BY name LIMIT 20")]
        raise SqlmlError(f'project "{name}" does not exist',
                         hint=("projects are: " + ", ".join(known)) if known
                         else "train one first: SELECT * FROM sqlml.train('name', 'table', 'target')",
                         sqlstate=UNDEFINED_OBJECT)
    return row


def ensure_project(ex, name: str, task: str, target: str, owner: str) -> dict:
    """The project, created on first training; a later training must predict the same target."""
    ex.execute("INSERT INTO sqlml.projects (name, task, target, owner) VALUES ($1, $2, $3, $4) "
               "ON CONFLICT (name) DO NOTHING", [name, task, target, owner])
    row = project(ex, name, lock=True)
    if row["task"] != task or row["target"] != target:
        raise SqlmlError(f'project "{name}" predicts "{row["target"]}" ({row["task"]}); this training predicts '
                         f'"{target}" ({task})', hint="use another project name for a different target or task",
                         sqlstate=INVALID_PARAMETER)
    return row


def next_version(ex, name: str) -> int:
    return ex.execute("UPDATE sqlml.projects SET last_version = last_version + 1 WHERE name = $1 "
                      "RETURNING last_version", [name])[0]["last_version"]


def insert_model(ex, model: dict) -> int:
    """Insert a model row (``model`` holds the column values); returns its id."""
    cols = list(model)
    casts = {"metrics": "jsonb", "hyperparameters": "jsonb", "feature_schema": "jsonb", "parity": "jsonb",
             "library_versions": "jsonb", "classes": "jsonb", "profile": "jsonb", "baseline": "jsonb",
             "importance": "jsonb", "diagnostics": "jsonb", "warm_start": "jsonb", "forecaster": "jsonb",
             "version": "int", "opset": "int", "rows": "int8", "job_id": "int8", "score": "float8",
             "explainer": "bytea"}
    if "meta_features" in cols:
        casts["meta_features"] = f"{vector_schema(ex)}.vector"
    values = ", ".join(f"${i + 1}" + (f"::{casts[c]}" if c in casts else "") for i, c in enumerate(cols))
    params = [to_json(model[c]) if casts.get(c) == "jsonb" else model[c] for c in cols]
    return ex.execute(f"INSERT INTO sqlml.models ({', '.join(cols)}) VALUES ({values}) RETURNING id", params)[0]["id"]


def insert_trials(ex, project_name: str, job_id, version, metric: str, trials: list[dict]) -> None:
    if not trials:
        return
    ex.execute(
        """INSERT INTO sqlml.trials (project, job_id, model_version, n, algorithm, params, status, metric, score,
                                     fit_seconds, elapsed, origin, n_estimators, error)
           SELECT $1, $2::int8, $3::int, t.n, t.algorithm, t.params, t.status, $4, t.score, t.fit_seconds,
                  t.elapsed, t.origin, t.n_estimators, t.error
           FROM jsonb_to_recordset($5::jsonb) AS t(n int, algorithm text, params jsonb, status text, score float8,
                                                  fit_seconds float8, elapsed float8, origin text, n_estimators int,
                                                  error text)""",
        [project_name, job_id, version, metric, to_json(trials)])


def vector_schema(ex) -> str:
    """The quoted schema of pgvector's type and operators (registry functions run with a fixed
    search_path that does not include it)."""
    from sqlml.data.ingest import quote_ident

    return quote_ident(ex.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                                  "WHERE e.extname = 'vector'")[0]["nspname"])


def nearest_configurations(ex, who: str, task: str, meta_vector: str, k: int, max_distance: float) -> list[dict]:
    """Best configurations of the ``k`` past trainings of ``task`` whose meta-features are nearest
    to ``meta_vector`` (pgvector text form) within ``max_distance``, nearest first, among the
    projects role ``who`` may score (the others' configurations are facts about data it may not read)."""
    v = vector_schema(ex)
    distance = f"meta_features OPERATOR({v}.<->) $2::{v}.vector"
    rows = ex.execute(
        f"""SELECT warm_start FROM sqlml.models
            WHERE task = $1 AND meta_features IS NOT NULL AND warm_start IS NOT NULL AND {distance} <= $4
              AND sqlml.has_privilege($5::name, project, 'predict')
            ORDER BY {distance}, id DESC LIMIT $3""", [task, meta_vector, k, max_distance, who])
    out = []
    for r in rows:
        configs = r["warm_start"]
        out.extend(json.loads(configs) if isinstance(configs, str) else configs)
    return out


def deployed(ex, name: str) -> dict | None:
    """The currently deployed model row (without its ONNX blob), or None."""
    rows = ex.execute(
        """SELECT m.id, m.project, m.version, m.algorithm, m.metric, m.score, m.sha256, m.feature_schema,
                  m.metrics -> 'split' AS split, d.id AS deployment_id
           FROM sqlml.deployments d JOIN sqlml.models m ON m.id = d.model_id
           WHERE d.project = $1 ORDER BY d.id DESC LIMIT 1""", [name])
    return rows[0] if rows else None


def same_training(ex, name: str, data_fingerprint: str, request: dict) -> dict | None:
    """The latest model of ``name`` trained on the same data (fingerprint) with the same request
    (metrics -> 'request': features, target, task, algorithms, budget, metric, test_size, options),
    and whether it is the deployed one; None if there is none."""
    rows = ex.execute(
        """SELECT m.version, m.algorithm, m.metric, m.score,
                  coalesce((SELECT d.model_id = m.id FROM sqlml.deployments d WHERE d.project = m.project
                            ORDER BY d.id DESC LIMIT 1), false) AS deployed
           FROM sqlml.models m
           WHERE m.project = $1 AND m.data_fingerprint = $2 AND m.metrics -> 'request' = $3::jsonb
           ORDER BY m.version DESC LIMIT 1""", [name, data_fingerprint, to_json(request)])
    return rows[0] if rows else None


def model_row(ex, name: str, version: int) -> dict:
    rows = ex.execute("SELECT id, project, version, algorithm, metric, score, sha256, feature_schema "
                      "FROM sqlml.models WHERE project = $1 AND version = $2", [name, version])
    if not rows:
        versions = [str(r["version"]) for r in ex.execute(
            "SELECT version FROM sqlml.models WHERE project = $1 ORDER BY version", [name])]
        raise SqlmlError(f'project "{name}" has no version {version}',
                         hint=f"versions are: {', '.join(versions)}" if versions else "the project has no models yet",
                         sqlstate=UNDEFINED_OBJECT)
    return rows[0]


def record_deployment(ex, name: str, model_id: int, version: int, strategy: str, reason: dict, by: str) -> dict:
    return ex.execute(
        "INSERT INTO sqlml.deployments (project, model_id, version, strategy, reason, deployed_by) "
        "VALUES ($1, $2, $3::int, $4, $5::jsonb, $6) RETURNING id, deployed_at",
        [name, model_id, version, strategy, to_json(reason), by])[0]


def choose_deployment(ex, name: str, strategy: str, version: int | None) -> dict:
    """The model row that ``strategy`` selects for project ``name`` (locked by the caller)."""
    current = deployed(ex, name)
    if version is not None:
        return model_row(ex, name, version)
    if strategy == "most_recent":
        rows = ex.execute("SELECT id, project, version, algorithm, metric, score, sha256 FROM sqlml.models "
                          "WHERE project = $1 ORDER BY version DESC LIMIT 1", [name])
    elif strategy == "best_score":
        metric = ex.execute("SELECT metric FROM sqlml.models WHERE project = $1 ORDER BY version DESC LIMIT 1", [name])
        if not metric:
            rows = []
        else:
            from sqlml.automl.metrics import HIGHER_IS_BETTER

            # forecasts are scored by MASE (sqlml.forecast), lower is better, like the losses
            higher = HIGHER_IS_BETTER.get(metric[0]["metric"], metric[0]["metric"] != "mase")
            order = "DESC" if higher else "ASC"
            rows = ex.execute(f"SELECT id, project, version, algorithm, metric, score, sha256 FROM sqlml.models "
                              f"WHERE project = $1 AND metric = $2 AND score IS NOT NULL "
                              f"ORDER BY score {order}, version DESC LIMIT 1", [name, metric[0]["metric"]])
    elif strategy == "rollback":
        if current is None:
            raise SqlmlError(f'project "{name}" has no deployed model to roll back',
                             sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
                             hint="deploy one first: SELECT * FROM sqlml.deploy('name', 'most_recent')")
        rows = ex.execute(
            """SELECT m.id, m.project, m.version, m.algorithm, m.metric, m.score, m.sha256
               FROM sqlml.deployments d JOIN sqlml.models m ON m.id = d.model_id
               WHERE d.project = $1 AND d.id < (SELECT max(id) FROM sqlml.deployments WHERE project = $1)
                 AND d.model_id <> $2
               ORDER BY d.id DESC LIMIT 1""", [name, current["id"]])
        if not rows:
            raise SqlmlError(f'project "{name}" has no previous deployment to roll back to (version '
                             f'{current["version"]} is the only one deployed so far)',
                             sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
                             hint="deploy a chosen version instead: SELECT * FROM sqlml.deploy('name', version => N)")
    else:
        raise SqlmlError(f'unknown deployment strategy "{strategy}"',
                         hint="use best_score, most_recent or rollback, or pass version => N",
                         sqlstate=INVALID_PARAMETER)
    if not rows:
        raise SqlmlError(f'project "{name}" has no models to deploy', sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE,
                         hint="train one first: SELECT * FROM sqlml.train(...)")
    return rows[0]


def onnx_blob(ex, model_id: int) -> tuple[bytes, str, dict]:
    """(ONNX bytes, stored sha256, feature schema) of a model, verified against its sha256."""
    rows = ex.execute("SELECT project, version, onnx, sha256, feature_schema FROM sqlml.models WHERE id = $1",
                      [model_id])
    if not rows:
        raise SqlmlError(f"model {model_id} does not exist", sqlstate=UNDEFINED_OBJECT)
    row = rows[0]
    blob = bytes(row["onnx"])
    if sha256(blob) != row["sha256"]:
        from sqlml.errors import DATA_CORRUPTED

        raise SqlmlError(f'model "{row["project"]}" version {row["version"]} fails its integrity check: the stored '
                         f"ONNX does not match its sha256", sqlstate=DATA_CORRUPTED,
                         hint="the models table was modified outside sqlml; deploy another version or retrain")
    schema = row["feature_schema"]
    return blob, row["sha256"], json.loads(schema) if isinstance(schema, str) else schema


def explainer_blob(ex, model_id: int) -> tuple[bytes | None, str]:
    """(explainer bytes or None, origin) of a model."""
    rows = ex.execute("SELECT explainer, origin FROM sqlml.models WHERE id = $1", [model_id])
    if not rows:
        raise SqlmlError(f"model {model_id} does not exist", sqlstate=UNDEFINED_OBJECT)
    blob = rows[0]["explainer"]
    return (bytes(blob) if blob is not None else None), rows[0]["origin"]


def importance(ex, model_id: int):
    """The stored importance of a model (jsonb as a dict), or None."""
    value = ex.execute("SELECT importance FROM sqlml.models WHERE id = $1", [model_id])[0]["importance"]
    return json.loads(value) if isinstance(value, str) else value
