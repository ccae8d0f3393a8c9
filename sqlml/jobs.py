"""Where ``sqlml jobs`` and ``Client.jobs`` get their rows: the governor's ``sqlml.jobs`` view.

Each job is a dict with these keys (None where unknown, or hidden from the viewer: like
pg_stat_activity, other roles' projects are hidden unless the viewer is a superuser or a member
of pg_read_all_stats):
  job_id, pid, role, database, project, kind ('train' | 'predict_batch' | 'score'),
  state ('queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'uncommitted' | 'rolled_back':
  a job whose transaction is still open, or was rolled back), queue_position, wait_reason (why a
  queued job waits: slots, role limit, the server's load), lane ('governed' | 'interactive'),
  submitted_at, started_at, finished_at, elapsed_seconds (in the slot so far, or in all),
  predicted_seconds, budget_seconds, trials, best_score, best_algorithm (a training's live
  progress; startup_seconds: the budget spent before the search, imports and reading), rows,
  threads, error.
"""

from __future__ import annotations

FIELDS = ("job_id", "pid", "role", "database", "project", "kind", "state", "queue_position", "submitted_at",
          "started_at", "finished_at", "elapsed_seconds", "predicted_seconds", "budget_seconds", "trials",
          "best_score", "best_algorithm", "startup_seconds", "lane", "wait_reason", "rows", "threads", "error")
PROGRESS = ("trials", "best_score", "best_algorithm", "budget_seconds", "startup_seconds")


def fetch(ex, include_finished: bool = False, limit: int = 50) -> list[dict]:
    """Queued and running jobs (and the newest ``limit`` finished ones with ``include_finished``):
    running first, then the queue in order, then finished jobs newest first."""
    rows = ex.execute(
        """SELECT job_id, pid, role::text AS role, database::text AS database, project, kind, state, queue_position,
                  submitted_at, started_at, finished_at, predicted_seconds, rows, threads, error, progress, lane,
                  wait_reason,
                  CASE WHEN state = 'running' THEN extract(epoch FROM clock_timestamp() - started_at)::float8
                       ELSE actual_seconds END AS elapsed_seconds
           FROM sqlml.jobs
           WHERE state IN ('queued', 'running') OR $1::bool
           ORDER BY CASE state WHEN 'running' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END, queue_position, job_id DESC
           LIMIT $2::int""", [include_finished, limit])
    jobs = []
    for r in rows:
        progress = r.pop("progress") or {}
        jobs.append({**{k: r.get(k) for k in FIELDS}, **{k: progress.get(k) for k in PROGRESS}})
    return jobs
