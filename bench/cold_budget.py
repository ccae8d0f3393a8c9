"""Honest budgets: a 5-second training, each call in a new connection (as the CLI, dbt and pooled
connections make them), so every call pays for importing the ML stack in a fresh backend.

``time_budget`` counts from the SQL entry of ``sqlml.train``, before the imports; the search plans
with what is left. Printed per call: the wall clock of the call as the client sees it (execute to
result; the connection's own setup apart), the seconds of the budget spent before the search
(imports, reading the data: ``progress->>'startup_seconds'`` in ``sqlml.jobs``), and the trials.
The first call of the run meets cold OS caches as well; the tenth shows the steady state. A fresh
Python's import of the stacks, timed at the start and the end, shows the machine's load.

    .sqlml/venv/bin/python bench/cold_budget.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgsession import run  # noqa: E402

# what a sprint imports (see sqlml.automl.search), then what a full search adds
SPRINT_STACK = ("pandas", "sqlglot", "sklearn.linear_model", "sklearn.pipeline", "sklearn.compose", "sklearn.impute",
                "sklearn.preprocessing", "sklearn.metrics", "sklearn.model_selection", "skl2onnx", "onnxruntime")
SEARCH_STACK = ("lightgbm", "onnxmltools.convert.lightgbm.operator_converters.LightGbm", "sklearn.ensemble")


def import_seconds() -> dict:
    """Seconds a fresh Python takes to import the stacks, measured now: the machine's load, seen
    through the cost a cold backend pays before its first trial; and the sprint's stack again with
    scipy.stats deferred to its first use, as a training does (``sqlml.deferred``)."""
    code = ("import time; t = time.monotonic(); import {}; s = time.monotonic() - t; import {}; "
            "print(s, time.monotonic() - t)").format(", ".join(SPRINT_STACK), ", ".join(SEARCH_STACK))
    sprint, full = map(float, subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                             text=True).stdout.split())
    code = ("import time; t = time.monotonic(); from sqlml import deferred; deferred.defer_scipy_stats(); "
            "import {}; print(time.monotonic() - t)").format(", ".join(SPRINT_STACK))
    deferred = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                    cwd=Path(__file__).resolve().parents[1]).stdout)
    return {"sprint_stack": sprint, "full_stack": full, "sprint_stack_deferred": deferred}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--budget", type=float, default=5.0)
    ap.add_argument("--out", default="bench/results/cold_budget.json")
    args = ap.parse_args(argv)
    from sqlml.devcluster import throwaway

    cluster = throwaway("sqlml-bench-cold-")
    dsn = cluster.create_database("bench")
    load = os.getloadavg()
    print(f"command: {' '.join(sys.argv)}; {os.cpu_count()} cores; load average at start "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    imports = import_seconds()
    print(f"a fresh Python imports the sprint's stack in {imports['sprint_stack']:.2f}s "
          f"({imports['sprint_stack_deferred']:.2f}s with scipy.stats deferred), "
          f"the full search's in {imports['full_stack']:.2f}s", flush=True)
    calls = []
    try:
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        cols = ", ".join(f"((i * {7919 + 13 * k}) % 1000) / 100.0 + random() AS x{k}" for k in range(10))
        run(conn, f"""CREATE TABLE t AS SELECT i AS id, {cols}, (i % 3)::text AS k,
                      ((i * 7919) % 1000) / 100.0 + random() * 3 > 6.5 AS label FROM generate_series(1, 20000) AS i""")
        run(conn, "ANALYZE t")
        conn.close()
        for n in range(1, args.calls + 1):
            c = psycopg2.connect(dsn)  # a new backend: nothing of the ML stack is loaded yet
            c.autocommit = True
            t = time.monotonic()
            run(c, "SELECT * FROM sqlml.train(%s, 't', 'label', time_budget => make_interval(secs => %s), "
                   "exclude => '{id}')", (f"cold{n}", args.budget))
            wall = time.monotonic() - t
            startup, trials = run(c, "SELECT (progress->>'startup_seconds')::float8, (progress->>'trials')::int "
                                     "FROM sqlml.jobs WHERE project = %s", (f"cold{n}",))[0]
            c.close()
            calls.append({"call": n, "seconds": wall, "startup_seconds": startup, "trials": trials})
            print(f"call {n:2}: {wall:5.2f}s for a {args.budget:g}s budget ({wall / args.budget:.2f}x); "
                  f"{startup:.2f}s before the search, {trials} trials", flush=True)
    finally:
        cluster.destroy()
    over = [c["seconds"] for c in calls]
    print(f"first call {over[0]:.2f}s, tenth {over[min(9, len(over) - 1)]:.2f}s, worst {max(over):.2f}s "
          f"(budget {args.budget:g}s)")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    after = import_seconds()
    print(f"at the end: the sprint's stack in {after['sprint_stack']:.2f}s "
          f"({after['sprint_stack_deferred']:.2f}s with scipy.stats deferred), "
          f"the full search's in {after['full_stack']:.2f}s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "cores": os.cpu_count(), "budget": args.budget,
                               "imports": {"start": imports, "end": after}, "calls": calls}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
