"""The governor's cost model and its effect on scoring latency, on a throwaway cluster.

1. Cost model. A few dozen jobs of varied sizes run one after another (trainings on generated
   tables of 1k-60k rows, 3-25 numeric and 0-2 text columns, with varied budgets and algorithm
   sets; plus batch-scoring jobs), some of them a backend's first job. Each job is predicted
   before it runs, from the jobs before it: analytically for the first ones, then by the learned
   model. Printed: the median absolute percentage error (MdAPE) of the learned predictions of
   runtime and peak memory, and of the analytic estimate on the same jobs (the baseline).
2. Latency. p99 of single-row ``sqlml.predict`` round trips from a client while two trainings
   run (two slots) with the governor's thread bound (threads_per_job = 1), the same without the
   bound (threads_per_job = all cores, what LightGBM takes by default), and with this machine's
   default settings (which may queue the second training). Idle and loaded measurements
   alternate for a few rounds (other load on the machine comes and goes); printed: the median
   loaded p99 of each configuration as a ratio to the median idle p99.

    make bench-governor
    .sqlml/venv/bin/python bench/governor.py --jobs 24 --calls 1000     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgsession import configure, connect, run  # noqa: E402

SHAPES = [  # rows, numeric columns, text columns
    (1000, 3, 0), (1000, 10, 2), (5000, 5, 0), (5000, 25, 1), (20000, 10, 0), (20000, 3, 2), (60000, 8, 1),
    (60000, 25, 0),
]
ALGORITHMS = [["linear"], ["lightgbm"], ["lightgbm", "linear"], ["extra_trees"], None]
BUDGETS = [1, 2, 4]


def start_cluster():
    from sqlml.devcluster import throwaway

    c = throwaway("sqlml-bench-governor-")
    return c, c.create_database("bench")


def make_table(conn, rows, numeric, text):
    """``t_<rows>_<numeric>_<text>``: numeric columns, text columns, a binary label that depends on them."""
    name = f"t_{rows}_{numeric}_{text}"
    cols = [f"((i * {7919 + 13 * k}) % 1000) / 100.0 + random() AS x{k}" for k in range(numeric)]
    cols += [f"(ARRAY['red', 'green', 'blue', 'amber'])[(i * {31 + k}) % 4 + 1] AS s{k}" for k in range(text)]
    run(conn, f"""CREATE TABLE {name} AS SELECT i AS id, {', '.join(cols)},
                  ((i * 7919) % 1000) / 100.0 + random() * 3 > 6.5 AS label FROM generate_series(1, {rows}) AS i""")
    run(conn, f"ANALYZE {name}")
    return name


def cost_model_phase(dsn, n_jobs, seed):
    rng = np.random.default_rng(seed)
    conn = connect(dsn)
    tables = [make_table(conn, *shape) for shape in SHAPES]
    print(f"{len(tables)} tables of {', '.join(f'{r}x{n + t}' for r, n, t in SHAPES)} (rows x columns)", flush=True)
    trained = []
    for i in range(n_jobs):
        if i % 6 == 5:  # a fresh backend now and then: its first job loads the ML libraries
            conn.close()
            conn = connect(dsn)
        try:
            if trained and i % 3 == 2:
                project, table = trained[rng.integers(len(trained))]
                if rng.random() < 0.5:
                    run(conn, "SELECT count(*) FROM sqlml.predict_batch(%s, %s, 'id')", (project, table))
                else:
                    run(conn, f"DROP TABLE IF EXISTS scored_{i}")
                    run(conn, "SELECT sqlml.score(%s, %s, %s, 'id')", (project, table, f"scored_{i}"))
            else:
                table = tables[rng.integers(len(tables))]
                algos = ALGORITHMS[rng.integers(len(ALGORITHMS))]
                budget = BUDGETS[rng.integers(len(BUDGETS))]
                project = f"p{i}"
                run(conn, "SELECT * FROM sqlml.train(%s, %s, 'label', time_budget => make_interval(secs => %s), "
                          "algorithms => %s, exclude => '{id}')", (project, table, budget, algos))
                trained.append((project, table))
        except psycopg2.Error as e:  # a failed job teaches the cost model nothing; the run goes on
            print(f"  job failed: {e.diag.message_primary}", flush=True)
            continue
        job = run(conn, "SELECT job_id, kind, cost_model, predicted_seconds, actual_seconds, predicted_peak_bytes, "
                        "actual_peak_bytes, rows FROM sqlml.jobs ORDER BY job_id DESC LIMIT 1")[0]
        print(f"  job {job[0]:3} {job[1]:13} {job[2]:8} rows {job[7]:6}: predicted {job[3]:6.1f}s "
              f"{job[5] / 2**20:7.0f}MB, actual {job[4]:6.1f}s {job[6] / 2**20:7.0f}MB", flush=True)
    report = run(conn, "SELECT kind, quantity, predicted_by, jobs, mdape, p90_ape, analytic_mdape "
                       "FROM sqlml.governor_report() ORDER BY 1, 2, 3")
    conn.close()
    return [dict(zip(("kind", "quantity", "predicted_by", "jobs", "mdape", "p90_ape", "analytic_mdape"), r))
            for r in report]


def latencies(dsn, calls, row):
    conn = connect(dsn)
    out = []
    with conn.cursor() as cur:
        for _ in range(calls):
            t = time.perf_counter()
            cur.execute("SELECT sqlml.predict('lat', %s::float8[])", (row,))
            cur.fetchone()
            out.append(time.perf_counter() - t)
    conn.close()
    return out


def p99s(measurements):
    return ", ".join(f"{m['p99_ms']:.2f}" for m in measurements)


def summary(values):
    ms = sorted(v * 1000 for v in values)
    return {"p50_ms": statistics.median(ms), "p99_ms": float(np.quantile(ms, 0.99))}


def latency_phase(dsn, calls, cores, rounds):
    """p99 of single-row predicts under two trainings in three configurations, each as a ratio to
    an idle measurement taken just before; ``rounds`` alternations, the median ratio reported (other
    load on the machine comes and goes)."""
    from sqlml.governor.settings import defaults

    conn = connect(dsn)
    big = make_table(conn, 60000, 10, 0)
    run(conn, "SELECT * FROM sqlml.train('lat', %s, 'label', time_budget => '3 seconds', "
              "algorithms => '{lightgbm}', exclude => '{id}')", (big,))
    row = [float(v) for v in run(conn, f"SELECT {', '.join(f'x{k}' for k in range(10))} FROM {big} LIMIT 1")[0]]
    latencies(dsn, 200, row)  # warm the scoring backend's session
    results, idles = {}, []
    machine = defaults()
    scenarios = [  # label, slots, threads per job, what it shows
        ("two running, 1 thread each", 2, 1, "the headline: two trainings run, each bounded to one thread"),
        (f"two running, {cores} threads each", 2, cores, "without the thread bound (LightGBM's default: every core)"),
        (f"defaults: {machine.slots} slot(s), {machine.threads_per_job} thread(s)", machine.slots,
         machine.threads_per_job, "this machine's default settings: a second training may wait in the queue"),
    ]
    for label, slots, threads, why in scenarios:
        configure(dsn, slots=slots, role_slots=slots, threads_per_job=threads)
        loaded = []
        for _ in range(rounds):
            idles.append(summary(latencies(dsn, calls, row)))
            loaded.append(summary(under_two_trainings(conn, dsn, big, slots, lambda: latencies(dsn, calls, row))))
        results[label] = {"slots": slots, "threads_per_job": threads, "why": why, "loaded": loaded,
                          "p99_ms": statistics.median(r["p99_ms"] for r in loaded),
                          "p50_ms": statistics.median(r["p50_ms"] for r in loaded)}
    idle_p99 = statistics.median(r["p99_ms"] for r in idles)
    results["idle"] = {"rounds": idles, "p99_ms": idle_p99, "p50_ms": statistics.median(r["p50_ms"] for r in idles)}
    print(f"idle: p99 {idle_p99:.2f} ms, p50 {results['idle']['p50_ms']:.2f} ms "
          f"(median of {len(idles)} measurements, p99s {p99s(idles)})")
    for label, *_ in scenarios:
        r = results[label]
        r["p99_ratio"] = r["p99_ms"] / idle_p99
        print(f"{label}: p99 {r['p99_ms']:.2f} ms = {r['p99_ratio']:.1f}x idle, p50 {r['p50_ms']:.2f} ms "
              f"(p99s {p99s(r['loaded'])}); {r['why']}")
    conn.close()
    return results


def under_two_trainings(conn, dsn, table, slots, measure):
    """``measure()`` while two LightGBM trainings are submitted (and ``min(slots, 2)`` run), then cancel them."""
    trainers = [threading.Thread(target=run_quietly, args=(dsn, "SELECT * FROM sqlml.train(%s, %s, 'label', "
                "time_budget => '60 seconds', algorithms => '{lightgbm}', exclude => '{id}')", (f"load{k}", table)))
                for k in range(2)]
    for t in trainers:
        t.start()
    deadline = time.monotonic() + 60
    while True:
        states = [s for (s,) in run(conn, "SELECT state FROM sqlml.jobs WHERE project LIKE 'load%%' "
                                          "AND state IN ('queued', 'running')")]
        if len(states) == 2 and states.count("running") >= min(slots, 2):
            break
        assert time.monotonic() < deadline, "the trainings did not start"
        time.sleep(0.2)
    time.sleep(3)  # past the libraries' loading, into the search
    out = measure()
    for (job,) in run(conn, "SELECT job_id FROM sqlml.jobs WHERE project LIKE 'load%' AND state IN "
                            "('queued', 'running')"):
        run(conn, "SELECT sqlml.cancel(%s)", (job,))  # the measurement is done: stop them
    for t in trainers:
        t.join(60)
    return out


def run_quietly(dsn, sql, params):
    """A load training: cancelling it at the end of a measurement is expected."""
    conn = connect(dsn)
    try:
        run(conn, sql, params)
    except psycopg2.errors.QueryCanceled:
        pass
    conn.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=54, help="jobs for the cost model (default 54)")
    ap.add_argument("--calls", type=int, default=3000, help="predict calls per latency measurement (default 3000)")
    ap.add_argument("--rounds", type=int, default=3, help="idle/loaded alternations per configuration (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/governor.json")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    cluster, dsn = start_cluster()
    print(f"command: {' '.join(sys.argv)}; {cores} cores", flush=True)
    try:
        configure(dsn, slots=2, role_slots=2, threads_per_job=1)
        report = cost_model_phase(dsn, args.jobs, args.seed)
        print("\ncost model (sqlml.governor_report()):")
        for r in report:
            base = f"{r['analytic_mdape']:.0f}%" if r["analytic_mdape"] is not None else "-"
            print(f"  {r['kind']:13} {r['quantity']:11} by {r['predicted_by']:8} over {r['jobs']:2} jobs: "
                  f"MdAPE {r['mdape']:5.1f}% (p90 {r['p90_ape']:5.0f}%), analytic estimate on the same jobs {base}")
        print("\nsingle-row predict latency:")
        latency = latency_phase(dsn, args.calls, cores, args.rounds)
    finally:
        cluster.destroy()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "cores": cores, "cost_model": report,
                               "latency": latency}, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
