"""sqlml.train (in the database, everything included) against FLAML (client side) at equal budgets.

For each dataset and seed: the same train/test split (25% test, stratified for classification);
FLAML's ``AutoML.fit(time_budget=B, n_jobs=cores)`` on a DataFrame of the training rows, and
``sqlml.train(project, train_table, target, time_budget => B)`` on the same rows in a table;
both scored on the held-out rows (sqlml through ``sqlml.predict`` / ``predict_proba`` in SQL).
Metrics: ROC AUC (binary), log loss (multiclass), RMSE (regression). The ratio is sqlml's score
relative to FLAML's, oriented so that > 1 means sqlml is better.

    .sqlml/venv/bin/python bench/automl_vs_flaml.py                       # 8 datasets, 30 s and 120 s, 3 seeds
    .sqlml/venv/bin/python bench/automl_vs_flaml.py --budgets 10 --seeds 0 --datasets oj,wage

It starts its own throwaway cluster (or uses --dsn) and writes the raw results to --out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402

from sqlml.data.ingest import quote_ident  # noqa: E402

METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
HIGHER_IS_BETTER = {"roc_auc": True, "log_loss": False, "rmse": False}


def score(metric, y_true, pred, classes=None):
    from sklearn.metrics import log_loss, roc_auc_score

    if metric == "rmse":
        return float(np.sqrt(np.mean((np.asarray(y_true, float) - np.asarray(pred, float)) ** 2)))
    proba = np.clip(np.asarray(pred, float), 1e-15, 1)
    proba = proba / proba.sum(axis=1, keepdims=True)
    if metric == "roc_auc":
        return float(roc_auc_score([str(v) == str(classes[1]) for v in y_true], proba[:, 1]))
    return float(log_loss([str(v) for v in y_true], proba, labels=[str(c) for c in classes]))


def ratio(metric, ours, theirs):
    return ours / theirs if HIGHER_IS_BETTER[metric] else theirs / ours


def split(df, target, task, seed):
    from sklearn.model_selection import train_test_split

    strat = df[target].astype(str) if task != "regression" else None
    return train_test_split(df, test_size=0.25, random_state=seed, stratify=strat)


def pg_type(series: pd.Series) -> str:
    return "float8" if series.dtype.kind in "fi" else "text"


def load_table(conn, name, df):
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")
        cols = ", ".join(f"{quote_ident(c)} {'int' if c == 'id' else pg_type(df[c])}" for c in df.columns)
        cur.execute(f"CREATE TABLE {quote_ident(name)} ({cols})")
        buf = io.StringIO()
        df.to_csv(buf, sep="\t", header=False, index=False, na_rep="\\N")
        buf.seek(0)
        cur.copy_expert(f"COPY {quote_ident(name)} FROM STDIN", buf)
        cur.execute(f"ANALYZE {quote_ident(name)}")


def run_flaml(train, test, target, task, budget, seed, cores):
    from flaml import AutoML

    X, y = train.drop(columns=[target, "id"]), train[target]
    Xt = test.drop(columns=[target, "id"])
    for c in X.columns:
        if X[c].dtype == object:
            cats = pd.Categorical(pd.concat([X[c], Xt[c]]).dropna().unique())
            X[c] = pd.Categorical(X[c], categories=cats.categories)
            Xt[c] = pd.Categorical(Xt[c], categories=cats.categories)
    automl = AutoML()
    metric = METRIC[task]
    start = time.monotonic()
    automl.fit(X, y if task == "regression" else y.astype(str),
               task="regression" if task == "regression" else "classification",
               time_budget=budget, metric={"rmse": "rmse", "roc_auc": "roc_auc", "log_loss": "log_loss"}[metric],
               n_jobs=cores, seed=seed, verbose=0)
    seconds = time.monotonic() - start
    if task == "regression":
        return score(metric, test[target], automl.predict(Xt)), seconds, automl.best_estimator
    classes = [str(c) for c in automl.classes_]
    return score(metric, test[target], automl.predict_proba(Xt), classes), seconds, automl.best_estimator


def run_sqlml(conn, project, table, test_table, test, target, task, budget, seed):
    metric = METRIC[task]
    with conn.cursor() as cur:
        start = time.monotonic()
        cur.execute("SELECT algorithm FROM sqlml.train(%s, %s, %s, time_budget => %s, options => %s)",
                    (project, table, target, f"{budget} seconds", json.dumps({"seed": seed})))
        algorithm = cur.fetchone()[0]
        seconds = time.monotonic() - start
        spec = f"{project}@{_version(cur, project)}"
        if task == "regression":
            cur.execute(f"SELECT sqlml.predict(%s, t) FROM {quote_ident(test_table)} t ORDER BY id", (spec,))
            pred = [r[0] for r in cur.fetchall()]
            return score(metric, test.sort_values("id")[target], pred), seconds, algorithm
        cur.execute("SELECT sqlml.classes(%s)", (spec,))
        classes = cur.fetchone()[0]
        cur.execute(f"SELECT sqlml.predict_proba(%s, t) FROM {quote_ident(test_table)} t ORDER BY id", (spec,))
        proba = [r[0] for r in cur.fetchall()]
    return score(metric, test.sort_values("id")[target], proba, classes), seconds, algorithm


def _version(cur, project):
    cur.execute("SELECT max(version) FROM sqlml.models WHERE project = %s", (project,))
    return cur.fetchone()[0]


def start_cluster(cores: int | None = None):
    """A throwaway cluster whose training jobs get ``cores`` threads (the governor's
    sqlml.threads_per_job, set the only way it can be: in the server's configuration)."""
    from sqlml.devcluster import throwaway

    c = throwaway("sqlml-bench-")
    if cores:
        admin = psycopg2.connect(c.dsn("postgres"))
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"SET sqlml.threads_per_job = '{int(cores)}'")  # PostgreSQL 15 needs the placeholder first
            cur.execute(f"ALTER SYSTEM SET sqlml.threads_per_job = '{int(cores)}'")
            cur.execute("SELECT pg_reload_conf()")
        admin.close()
    return c, c.create_database("bench")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="30,120", help="seconds, comma-separated (default 30,120)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--datasets", default=",".join(datasets.DATASETS))
    ap.add_argument("--dsn", help="use this database instead of a throwaway cluster")
    ap.add_argument("--out", default="bench/results/automl_vs_flaml.json")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                    help="for both: FLAML's n_jobs, sqlml's threads_per_job")
    args = ap.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.datasets.split(",")
    cluster = None
    dsn = args.dsn
    if not dsn:
        cluster, dsn = start_cluster(args.cores)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    print(f"command: {' '.join(sys.argv)}\ncores: {args.cores}, budgets: {budgets}, seeds: {seeds}", flush=True)
    results = []
    try:
        for name in names:
            df, target, task = datasets.load(name)
            metric = METRIC[task]
            for seed in seeds:
                train, test = split(df, target, task, seed)
                table, test_table = f"{name}_train_{seed}", f"{name}_test_{seed}"
                load_table(conn, table, train)
                load_table(conn, test_table, test)
                for budget in budgets:
                    f_score, f_sec, f_best = run_flaml(train.copy(), test.copy(), target, task, budget, seed,
                                                       args.cores)
                    s_score, s_sec, s_best = run_sqlml(conn, f"{name}_{seed}_{budget}", table, test_table, test,
                                                       target, task, budget, seed)
                    row = {"dataset": name, "task": task, "rows": len(df), "metric": metric, "budget": budget,
                           "seed": seed, "flaml": f_score, "sqlml": s_score, "ratio": ratio(metric, s_score, f_score),
                           "flaml_seconds": f_sec, "sqlml_seconds": s_sec, "flaml_best": f_best, "sqlml_best": s_best,
                           "budget_ok": s_sec <= max(1.1 * budget, budget + 5)}
                    results.append(row)
                    print(f"{name:15} {metric:8} B={budget:4} seed={seed} flaml={f_score:.4f} ({f_best}, {f_sec:.1f}s) "
                          f"sqlml={s_score:.4f} ({s_best}, {s_sec:.1f}s) ratio={row['ratio']:.4f}"
                          f"{'' if row['budget_ok'] else '  BUDGET EXCEEDED'}", flush=True)
    finally:
        conn.close()
        if cluster:
            cluster.destroy()
    summarize(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


def summarize(results):
    df = pd.DataFrame(results)
    if df.empty:
        return
    print("\n| dataset | task | rows | metric | budget | FLAML | sqlml | ratio (>1: sqlml better) |")
    print("|---|---|---|---|---|---|---|---|")
    per = df.groupby(["dataset", "task", "rows", "metric", "budget"], sort=False).agg(
        flaml=("flaml", "mean"), sqlml=("sqlml", "mean"), ratio=("ratio", "mean")).reset_index()
    for r in per.itertuples():
        print(f"| {r.dataset} | {r.task} | {r.rows} | {r.metric} | {r.budget}s | "
              f"{r.flaml:.4f} | {r.sqlml:.4f} | {r.ratio:.4f} |")
    for budget, g in per.groupby("budget"):
        print(f"budget {budget}s: mean ratio {g.ratio.mean():.4f}, worst dataset {g.loc[g.ratio.idxmin(), 'dataset']} "
              f"{g.ratio.min():.4f}")
    late = df[~df.budget_ok]
    print(f"budget respected on {len(df) - len(late)}/{len(df)} sqlml runs "
          f"(max {df.sqlml_seconds.max():.1f}s; limit max(1.1 B, B + 5 s))")


if __name__ == "__main__":
    main()
