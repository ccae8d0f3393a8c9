"""Where ``sqlml jobs`` and ``Client.jobs`` get their rows: the one data source of the jobs view.

Each job is a dict with these keys (None where the source does not know):
  job_id, pid, role, database, project, kind ('train' | 'score' | ...), state ('queued' |
  'running' | 'succeeded' | 'failed' | 'cancelled'), queue_position, started_at,
  elapsed_seconds, budget_seconds, trials, best_score, best_algorithm, metric, error.

Until the governor's ``sqlml.jobs`` view exists, running trainings are found in
``pg_stat_activity`` (the backends executing ``sqlml.train``): that shows who, which project,
elapsed and budget, but not trials or best score, which the training reports only in its own
session's NOTICEs.
"""

from __future__ import annotations

import re

FIELDS = ("job_id", "pid", "role", "database", "project", "kind", "state", "queue_position", "started_at",
          "elapsed_seconds", "budget_seconds", "trials", "best_score", "best_algorithm", "metric", "error")

_TRAIN_CALL = re.compile(r"sqlml\s*\.\s*train\s*\(\s*'((?:[^']|'')*)'", re.IGNORECASE)
_BUDGET = re.compile(r"time_budget\s*=>\s*'((?:[^']|'')*)'", re.IGNORECASE)
DEFAULT_BUDGET = "60 seconds"  # sqlml.train's default


def fetch(ex, include_finished: bool = False) -> list[dict]:
    """The jobs to show, running and queued first, through executor ``ex``."""
    return from_activity(ex)


def from_activity(ex) -> list[dict]:
    """Running ``sqlml.train`` calls of every database, read from pg_stat_activity."""
    rows = ex.execute(
        """SELECT pid, usename::text AS role, datname::text AS database, query, query_start AS started_at,
                  extract(epoch FROM clock_timestamp() - query_start)::float8 AS elapsed_seconds
           FROM pg_stat_activity
           WHERE state = 'active' AND pid <> pg_backend_pid() AND query ~* 'sqlml\\s*\\.\\s*train\\s*\\('
           ORDER BY query_start""")
    jobs = []
    for r in rows:
        project = _TRAIN_CALL.search(r["query"] or "")
        budget = _BUDGET.search(r["query"] or "")
        jobs.append({**dict.fromkeys(FIELDS), "pid": r["pid"], "role": r["role"], "database": r["database"],
                     "project": project.group(1).replace("''", "'") if project else None, "kind": "train",
                     "state": "running", "started_at": r["started_at"], "elapsed_seconds": r["elapsed_seconds"],
                     "budget_seconds": _seconds(ex, budget.group(1).replace("''", "'") if budget else DEFAULT_BUDGET)})
    return jobs


def _seconds(ex, interval: str) -> float | None:
    try:
        return ex.execute("SELECT extract(epoch FROM $1::interval)::float8 AS s", [interval])[0]["s"]
    except Exception:  # noqa: BLE001 - a budget we cannot read is shown as unknown
        return None
