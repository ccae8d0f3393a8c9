"""``sqlml.audit_log``: one row per train, import, deploy, rollback, grant, revoke, batch scoring and
batch explanation.

Written with the extension owner's rights (inside ``sqlml.server.privileged``) in the same
transaction as the change it records: a training that is cancelled or crashes leaves neither a
model nor an audit row. ``actor`` is the caller's current_user, captured before elevating.
"""

from __future__ import annotations

from sqlml.executor import to_json

ACTIONS = ("train", "deploy", "rollback", "grant", "revoke", "predict_batch", "score", "explain_batch", "import")


def record(ex, actor: str, action: str, project: str, version: int | None = None, detail: dict | None = None) -> None:
    assert action in ACTIONS, action
    ex.execute("INSERT INTO sqlml.audit_log (actor, action, project, version, detail) "
               "VALUES ($1::name, $2, $3, $4::int, $5::jsonb)",
               [actor, action, project, version, to_json(detail or {})])
