"""Does the pgvector warm start pay? Time to reach the cold-start final score, cold vs warm.

For each dataset: split its rows in two halves, A and B (same population, different rows).
Cold: in an empty database, train on B with budget T; its final best validation score is the
target, and the moment its search first reached it is the cold time. Warm: in a database that
has trained on A, train on B with the same budget and seed (same validation folds); the warm time
is when its best-so-far first reached the cold target. Printed: both times and their ratio.

    .sqlml/venv/bin/python bench/warm_start.py                        # 4 datasets, 30 s
    .sqlml/venv/bin/python bench/warm_start.py --budget 20 --datasets default,wage
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402
from automl_vs_flaml import load_table, start_cluster  # noqa: E402

HIGHER_IS_BETTER = {"roc_auc": True, "log_loss": False, "rmse": False}


def time_to_reach(trials, metric, target):
    """Seconds into the search when the best-so-far first reached ``target`` (None if never)."""
    better = (lambda s: s >= target - 1e-12) if HIGHER_IS_BETTER[metric] else (lambda s: s <= target + 1e-12)
    for elapsed, score in trials:
        if score is not None and better(score):
            return elapsed
    return None


def train(conn, project, table, target, budget):
    with conn.cursor() as cur:
        cur.execute("SELECT metric FROM sqlml.train(%s, %s, %s, time_budget => %s)",
                    (project, table, target, f"{budget} seconds"))
        metric = cur.fetchone()[0]
        cur.execute("SELECT elapsed, score, origin FROM sqlml.trials WHERE project = %s AND status = 'ok' "
                    "AND model_version = (SELECT max(version) FROM sqlml.models WHERE project = %s) ORDER BY n",
                    (project, project))
        return metric, cur.fetchall()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--datasets", default="default,bikeshare,wage,digits")
    args = ap.parse_args(argv)
    cluster, _ = start_cluster(__import__("os").cpu_count())
    print(f"command: {' '.join(sys.argv)}; budget {args.budget}s", flush=True)
    rows = []
    try:
        for name in args.datasets.split(","):
            df, target, task = datasets.load(name)
            half = len(df) // 2
            a, b = df.iloc[:half], df.iloc[half:]
            cold = psycopg2.connect(cluster.create_database(f"cold_{name}"))
            warm = psycopg2.connect(cluster.create_database(f"warm_{name}"))
            for conn in (cold, warm):
                conn.autocommit = True
                load_table(conn, "half_b", b)
            load_table(warm, "half_a", a)
            train(warm, "history", "half_a", target, args.budget)
            metric, cold_trials = train(cold, "p", "half_b", target, args.budget)
            _, warm_trials = train(warm, "p", "half_b", target, args.budget)
            best = (max if HIGHER_IS_BETTER[metric] else min)(s for _, s, _ in cold_trials)
            t_cold = time_to_reach([(e, s) for e, s, _ in cold_trials], metric, best)
            t_warm = time_to_reach([(e, s) for e, s, _ in warm_trials], metric, best)
            borrowed = sum(1 for *_, o in warm_trials if o == "warm_start")
            rows.append((name, task, len(b), metric, best, t_cold, t_warm, borrowed))
            ratio = f"{t_cold / t_warm:.1f}x faster" if t_warm else "never reached"
            print(f"{name:10} {metric:8} target {best:.4f}: cold {t_cold:.1f}s, warm "
                  f"{'-' if t_warm is None else f'{t_warm:.1f}s'} ({ratio}; {borrowed} warm-start trials)", flush=True)
            cold.close()
            warm.close()
    finally:
        cluster.destroy()
    print("\n| dataset | task | rows | metric | cold final score | cold: time to it | warm: time to it | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name, task, n, metric, best, tc, tw, _ in rows:
        print(f"| {name} | {task} | {n} | {metric} | {best:.4f} | {tc:.1f}s | {'-' if tw is None else f'{tw:.1f}s'} | "
              f"{'-' if not tw else f'{tc / tw:.1f}x'} |")


if __name__ == "__main__":
    main()
