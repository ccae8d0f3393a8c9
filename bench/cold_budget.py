"""Honest budgets: a 5-second training, each call in a new connection (as the CLI, dbt and pooled
connections make them), so every call pays for importing the ML stack in a fresh backend.

``time_budget`` counts from the SQL entry of ``sqlml.train``, before the imports; the search plans
with what is left. Printed per call: the wall clock of the call as the client sees it (execute to
result; the connection's own setup apart), the seconds of the budget spent before the search
(imports, reading the data: ``progress->>'startup_seconds'`` in ``sqlml.jobs``), and the trials.
The first call of the run meets cold OS caches as well; the tenth shows the steady state.

    .sqlml/venv/bin/python bench/cold_budget.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "cores": os.cpu_count(), "budget": args.budget,
                               "calls": calls}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
