"""The monitoring time series (``sqlml.evaluations``, ``sqlml.drift``) and the model facts they need.

Through an :class:`sqlml.executor.Executor`; on the server, with the extension owner's rights.
"""

from __future__ import annotations

import json

from sqlml.errors import UNDEFINED_OBJECT, SqlmlError
from sqlml.executor import to_json


def model_facts(ex, model_id: int) -> dict:
    """Project, version, task, target, metric, holdout metrics, feature schema and drift baseline of a model."""
    rows = ex.execute("SELECT m.id, m.project, m.version, m.task, m.metric, m.metrics, m.baseline, m.relation, "
                      "m.feature_schema, p.target FROM sqlml.models m JOIN sqlml.projects p ON p.name = m.project "
                      "WHERE m.id = $1", [model_id])
    if not rows:
        raise SqlmlError(f"model {model_id} does not exist", sqlstate=UNDEFINED_OBJECT)
    row = rows[0]
    for key in ("metrics", "baseline", "feature_schema"):
        if isinstance(row[key], str):
            row[key] = json.loads(row[key])
    return row


def insert_evaluation(ex, model: dict, relation: str, rows: int, skipped: dict, metrics: dict, by: str):
    """Append one evaluation; returns its timestamp."""
    return ex.execute(
        "INSERT INTO sqlml.evaluations (project, model_id, version, relation, rows, skipped, metrics, evaluated_by) "
        "VALUES ($1, $2, $3::int, $4, $5, $6::jsonb, $7::jsonb, $8) RETURNING evaluated_at",
        [model["project"], model["id"], model["version"], relation, int(rows), to_json(skipped), to_json(metrics),
         by])[0]["evaluated_at"]


def insert_drift(ex, model: dict, relation: str, results: list[dict], by: str):
    """Append one monitor call's rows (``results``: feature, what, psi, drift, rows, detail); returns
    their common timestamp."""
    rows = ex.execute(
        """INSERT INTO sqlml.drift (project, model_id, version, relation, feature, what, psi, drift, rows, detail,
                                    measured_by)
           SELECT $1, $2, $3::int, $4, r.feature, r.what, r.psi, r.drift, r.rows, r.detail, $6
           FROM jsonb_to_recordset($5::jsonb) AS r(feature text, what text, psi float8, drift text, rows int8,
                                                  detail jsonb)
           RETURNING measured_at""",
        [model["project"], model["id"], model["version"], relation, to_json(results), by])
    return rows[0]["measured_at"] if rows else None
