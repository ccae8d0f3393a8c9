"""Explaining against scoring: 10,000 rows in one query each, on a throwaway cluster.

The table of bench/scoring.py (15 numbers with NULLs, 5 text categories). For each line, a model
trained by sqlml on 20,000 rows; then, on 10,000 other rows, side by side in the same run:

    scoring     SELECT count(*) FROM sqlml.predict_batch(project, table, 'id')
    explaining  SELECT count(*) FROM sqlml.explain_batch(project, table, 'id')   (21 rows out per row in)

Lines: ``default`` is what ``sqlml.train`` picks by itself (no ``algorithms``, its default options
and search, a 60 s budget: the model an analyst gets); the others are one algorithm each, not
ensembled. A model whose explanation of 10,000 rows would take longer than --max-seconds (a random
forest of unpruned trees: ~50 ms per row) is measured on fewer rows, the first N of the same table,
both sides on the same N (printed: "rows in").

Printed: each one's median wall seconds over --repeats runs (after one warm-up each), the ratio,
the same for the backend's CPU seconds (its /proc stat: what a loaded machine changes least), and
the model's size (the search chooses it; TreeSHAP's cost grows with leaves x path length). The
machine's load average is printed before and after: a busy machine stretches both sides.

    .sqlml/venv/bin/python bench/explain.py
    .sqlml/venv/bin/python bench/explain.py --algorithms lightgbm --repeats 3
    .sqlml/venv/bin/python bench/explain.py --algorithms default,lightgbm,linear,random_forest --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scoring import TRAIN_ROWS, connect, make_table, run, start_cluster, timed  # noqa: E402


def backend_cpu(pid: int) -> float:
    """User + system CPU seconds of a backend so far (every thread of it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def measured(conn, pid: int, sql: str) -> tuple[float, float, object]:
    """(wall seconds, backend CPU seconds, first value) of one run of ``sql``."""
    cpu = backend_cpu(pid)
    wall, rows = timed(lambda: run(conn, sql))
    return wall, backend_cpu(pid) - cpu, rows[0][0]


ROWS = 10000
PROBE_ROWS = 200  # explained once to estimate the cost per row before choosing how many to measure
DEFAULT = "default"  # the line of sqlml.train's own choice
SETTINGS = {
    "lightgbm": {"n_estimators": 100},
    "linear": {},
    "random_forest": {"n_estimators": 50},
    "extra_trees": {"n_estimators": 50},
}


def train(conn, project: str, algorithm: str) -> None:
    if algorithm == DEFAULT:
        run(conn, "SELECT * FROM sqlml.train(%s, 'train_rows', 'churned', exclude => '{id}')", (project,))
        return
    options = {"ensemble": False, "refit_all": False, **SETTINGS[algorithm]}
    run(
        conn,
        "SELECT * FROM sqlml.train(%s, 'train_rows', 'churned', algorithms => %s, "
        "time_budget => '20 seconds', exclude => '{id}', options => %s)",
        (project, [algorithm], json.dumps(options)),
    )


def rows_to_measure(conn, project: str, max_seconds: float) -> int:
    """ROWS, or fewer (whole hundreds) when explaining ROWS would take longer than ``max_seconds``
    at the cost per row of explaining PROBE_ROWS, once warm (the model, the explainer, the libraries)."""
    probe = f"SELECT count(*) FROM sqlml.explain_batch('{project}', 'probe_rows', 'id')"
    run(conn, probe)
    wall, _ = timed(lambda: run(conn, probe))
    per_row = wall / PROBE_ROWS
    if per_row * ROWS <= max_seconds:
        return ROWS
    return max(PROBE_ROWS, int(max_seconds / per_row) // 100 * 100)


def model_shown(conn, project: str) -> str:
    algorithm, params = run(conn, "SELECT algorithm, hyperparameters FROM sqlml.models WHERE project = %s",
                            (project,))[0]
    keys = ("num_leaves", "n_estimators", "min_samples_leaf", "max_features", "members")
    return f"{algorithm} {json.dumps({k: params[k] for k in keys if k in params})}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algorithms", default="default,lightgbm,linear")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=60.0,
                    help="explain fewer rows than 10,000 when 10,000 would take longer (estimated)")
    args = ap.parse_args(argv)
    cluster, dsn = start_cluster()
    print(f"command: {' '.join(sys.argv)}", flush=True)
    print(f"load average (1, 5, 15 min): {load()} on {os.cpu_count()} cores", flush=True)
    try:
        conn = connect(dsn)
        pid = run(conn, "SELECT pg_backend_pid()")[0][0]
        make_table(conn, "train_rows", TRAIN_ROWS)
        make_table(conn, "new_rows", ROWS)
        run(conn, "ALTER TABLE new_rows DROP COLUMN churned")
        run(conn, f"CREATE TABLE probe_rows AS SELECT * FROM new_rows ORDER BY id LIMIT {PROBE_ROWS}")
        print(f"{'line':<14} {'rows in':>8} {'scoring s':>10} {'explaining s':>13} {'ratio':>7} {'cpu: scoring':>13} "
              f"{'explaining':>11} {'ratio':>7} {'rows out':>9}  model")
        for algorithm in args.algorithms.split(","):
            project = f"b_{algorithm}"
            train(conn, project, algorithm)
            rows = rows_to_measure(conn, project, args.max_seconds)
            table = "new_rows"
            if rows < ROWS:
                table = f"new_rows_{rows}"
                run(conn, f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM new_rows ORDER BY id LIMIT {rows}")
            score_sql = f"SELECT count(*) FROM sqlml.predict_batch('{project}', '{table}', 'id')"
            explain_sql = f"SELECT count(*) FROM sqlml.explain_batch('{project}', '{table}', 'id')"
            run(conn, score_sql)  # warm (explaining was, by the probe)
            scoring, explaining = [], []
            for _ in range(args.repeats):  # alternately, so that a change of load falls on both
                scoring.append(measured(conn, pid, score_sql))
                explaining.append(measured(conn, pid, explain_sql))
            wall = [statistics.median(r[0] for r in runs) for runs in (scoring, explaining)]
            cpu = [statistics.median(r[1] for r in runs) for runs in (scoring, explaining)]
            print(
                f"{algorithm:<14} {rows:>8} {wall[0]:>10.3f} {wall[1]:>13.3f} {wall[1] / wall[0]:>6.1f}x "
                f"{cpu[0]:>13.2f} {cpu[1]:>11.2f} {cpu[1] / max(cpu[0], 0.01):>6.1f}x {explaining[-1][2]:>9}  "
                f"{model_shown(conn, project)}",
                flush=True,
            )
        print(f"load average (1, 5, 15 min): {load()}", flush=True)
        conn.close()
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
