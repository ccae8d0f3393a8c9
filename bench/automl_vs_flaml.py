"""sqlml.train (in the database, everything included) against FLAML and AutoGluon (client side)
at equal budgets.

For each dataset and seed: the same train/test split (25% test, stratified for classification);
FLAML's ``AutoML.fit(time_budget=B, n_jobs=cores)`` on a DataFrame of the training rows;
AutoGluon's ``TabularPredictor.fit(time_limit=B, presets=P, num_cpus=cores)`` for each preset P
(default: ``medium_quality``, AutoGluon's default, and ``best_quality``; CPU only, without its
neural models), run in its own venv by bench/autogluon_run.py; and
``sqlml.train(project, train_table, target, time_budget => B)`` on the same rows in a table;
all scored on the test rows (sqlml through ``sqlml.predict`` / ``predict_proba`` in SQL).
Metrics: ROC AUC (binary), log loss (multiclass), RMSE (regression). Each ratio is sqlml's score
relative to the other system's, oriented so that > 1 means sqlml is better; against AutoGluon, the
better of its presets on that dataset and budget.

The datasets are split (bench/datasets.py): the search may be tuned on ``--part tuning``; the
held-out part (the default) is the result.

    make bench-autogluon-venv     # AutoGluon's venv, once (it caps pandas < 2.4; the server pins pandas 3)
    .sqlml/venv/bin/python bench/automl_vs_flaml.py --budgets 30 --seeds 0          # held-out part
    .sqlml/venv/bin/python bench/automl_vs_flaml.py --budgets 10 --seeds 0 --datasets oj,wage --systems flaml
    # sqlml again after a change, FLAML's and AutoGluon's scores taken from an earlier run's rows (same splits)
    .sqlml/venv/bin/python bench/automl_vs_flaml.py --budgets 30 --others-from bench/results/automl_heldout_30s.json \
        --out /tmp/heldout_again.json

Each dataset trains in a database of its own, created for it and dropped after it (on the
throwaway cluster, or on --dsn's server, which then needs CREATEDB): sqlml warm-starts a search
from the winners of earlier trainings in its database, so one shared database would let a dataset
borrow configurations tuned on the datasets before it. The seeds and budgets of one dataset share
its database.

It starts its own throwaway cluster (or uses --dsn) and writes the raw results to --out. The
machine's load average is recorded with every row: the systems run one after another, so a ratio
is only as fair as the load was even.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402
import pgsession  # noqa: E402

from sqlml.data.ingest import quote_ident  # noqa: E402

METRIC = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
HIGHER_IS_BETTER = {"roc_auc": True, "log_loss": False, "rmse": False}
AG_PYTHON = Path(__file__).resolve().parents[1] / ".sqlml" / "ag-venv" / "bin" / "python"
AG_PRESETS = "medium_quality,best_quality"  # AutoGluon's default preset, and its best


def AG_PATIENCE(budget):  # noqa: N802 - a constant of the budget
    """Seconds an AutoGluon run may take (its fit, prediction and start-up) before it counts as failed."""
    return 2 * budget + 60


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


def better(metric, a, b):
    """The better of two scores."""
    return max(a, b) if HIGHER_IS_BETTER[metric] else min(a, b)


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


def run_autogluon(train, test, target, task, budget, presets, cores, python=AG_PYTHON):
    """AutoGluon in its own venv (bench/autogluon_run.py): (score, fit seconds, best model), or
    (None, seconds, "failed" or "timeout") when it trained no model in the budget or ran past
    ``AG_PATIENCE`` (bagged presets on large tables)."""
    columns = {c: "number" if train[c].dtype.kind in "fi" or c == target and task == "regression" else "text"
               for c in train.columns if c != "id"}
    with tempfile.TemporaryDirectory(prefix="sqlml-ag-") as job_dir:
        job = Path(job_dir)
        train.drop(columns=["id"]).to_csv(job / "train.csv", index=False)
        test.drop(columns=["id"]).to_csv(job / "test.csv", index=False)
        (job / "job.json").write_text(json.dumps({"target": target, "task": task, "budget": budget,
                                                  "presets": presets, "cores": cores, "columns": columns}))
        start = time.monotonic()
        try:  # bagged presets can overrun the budget many times over on large tables (churn: 365 s of 30)
            done = subprocess.run([str(python), str(Path(__file__).with_name("autogluon_run.py")), job_dir],
                                  env={**os.environ, "OMP_NUM_THREADS": str(cores)}, timeout=AG_PATIENCE(budget))
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - start, "timeout"
        if done.returncode != 0:
            return None, time.monotonic() - start, "failed"
        out = json.loads((job / "result.json").read_text())
        pred = np.load(job / "pred.npy")
    metric = METRIC[task]
    return score(metric, test[target], pred, out["classes"] or None), out["seconds"], out["best"]


def run_sqlml(conn, project, table, test_table, test, target, task, budget, seed):
    metric = METRIC[task]
    start = time.monotonic()
    (algorithm,), = pgsession.run(conn, "SELECT algorithm FROM sqlml.train(%s, %s, %s, time_budget => %s, "
                                        "options => %s)",
                                  (project, table, target, f"{budget} seconds", json.dumps({"seed": seed})))
    seconds = time.monotonic() - start
    (version,), = pgsession.run(conn, "SELECT max(version) FROM sqlml.models WHERE project = %s", (project,))
    spec = f"{project}@{version}"
    truth = test.sort_values("id")[target]
    if task == "regression":
        pred = [r[0] for r in pgsession.run(conn, f"SELECT sqlml.predict(%s, t) FROM {quote_ident(test_table)} t "
                                                  "ORDER BY id", (spec,))]
        return score(metric, truth, pred), seconds, algorithm
    (classes,), = pgsession.run(conn, "SELECT sqlml.classes(%s)", (spec,))
    proba = [r[0] for r in pgsession.run(conn, f"SELECT sqlml.predict_proba(%s, t) FROM {quote_ident(test_table)} t "
                                               "ORDER BY id", (spec,))]
    return score(metric, truth, proba, classes), seconds, algorithm


def start_cluster(cores: int | None = None):
    """A throwaway cluster whose training jobs get ``cores`` threads (the governor's
    sqlml.threads_per_job, set the only way it can be: in the server's configuration)."""
    from sqlml.devcluster import throwaway

    c = throwaway("sqlml-bench-")
    if cores:
        pgsession.configure(c.dsn("postgres"), threads_per_job=int(cores))
    return c, c.dsn("postgres")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="30,120", help="seconds, comma-separated (default 30,120)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--part", choices=("heldout", "tuning", "all"), default="heldout",
                    help="which part of bench/datasets.py's split (default: the held-out part)")
    ap.add_argument("--datasets", help="comma-separated names (instead of --part)")
    ap.add_argument("--systems", default="flaml,autogluon", help="what sqlml is compared with")
    ap.add_argument("--ag-presets", default=AG_PRESETS, help=f"AutoGluon presets, each run (default {AG_PRESETS})")
    ap.add_argument("--ag-python", default=str(AG_PYTHON), help="the Python of AutoGluon's venv")
    ap.add_argument("--dsn", help="use this server instead of a throwaway cluster (a database of it to "
                                   "connect to; each dataset gets a database of its own there)")
    ap.add_argument("--out", default="bench/results/automl_vs_flaml.json")
    ap.add_argument("--resume", action="store_true", help="keep --out's rows and run only what it lacks")
    ap.add_argument("--report", action="store_true", help="only print the tables of --out's rows")
    ap.add_argument("--others-from", help="take FLAML's and AutoGluon's scores from this earlier run's rows "
                                          "(the same splits) and run sqlml alone; the rows say so")
    ap.add_argument("--cores", type=int, default=2, help="for every system: FLAML's n_jobs, AutoGluon's num_cpus, "
                                                         "sqlml's threads_per_job (default 2)")
    args = ap.parse_args(argv)
    if args.report:
        return summarize(json.loads(Path(args.out).read_text()), args.ag_presets.split(","))
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.datasets.split(",") if args.datasets else datasets.part(args.part)
    systems = args.systems.split(",")
    presets = args.ag_presets.split(",")
    if "autogluon" in systems and not Path(args.ag_python).exists():
        sys.exit(f"{args.ag_python} not found: run `make bench-autogluon-venv` first, or pass --systems flaml")
    cluster = None
    dsn = args.dsn
    if not dsn:
        cluster, dsn = start_cluster(args.cores)
    print(f"command: {' '.join(sys.argv)}\ncores: {args.cores}, budgets: {budgets}, seeds: {seeds}, "
          f"datasets: {names}, load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    results = json.loads(Path(args.out).read_text()) if args.resume and Path(args.out).exists() else []
    done = {(r["dataset"], r["seed"], r["budget"]) for r in results}
    earlier = {(r["dataset"], r["seed"], r["budget"]): r for r in json.loads(Path(args.others_from).read_text())} \
        if args.others_from else {}
    conn, database = None, None
    try:
        for name in names:
            if all((name, seed, b) in done for seed in seeds for b in budgets):
                continue
            df, target, task = datasets.load(name)
            metric = METRIC[task]
            if conn:
                conn.close()
                pgsession.drop_database(dsn, database)
            database = f"bench_{name}"
            conn = pgsession.connect(pgsession.fresh_database(dsn, database))
            for seed in seeds:
                if all((name, seed, b) in done for b in budgets):
                    continue
                train, test = split(df, target, task, seed)
                table, test_table = f"{name}_train_{seed}", f"{name}_test_{seed}"
                load_table(conn, table, train)
                load_table(conn, test_table, test)
                for budget in budgets:
                    if (name, seed, budget) in done:
                        continue
                    row = {"dataset": name, "task": task, "kind": datasets.KIND[name], "rows": len(df),
                           "columns": df.shape[1] - 2, "metric": metric, "budget": budget, "seed": seed,
                           "load_before": os.getloadavg()[0]}
                    s_score, s_sec, s_best = run_sqlml(conn, f"{name}_{seed}_{budget}", table, test_table, test,
                                                       target, task, budget, seed)
                    row.update(sqlml=s_score, sqlml_seconds=s_sec, sqlml_best=s_best,
                               budget_ok=s_sec <= max(1.1 * budget, budget + 5))
                    line = f"{name:16} {metric:8} B={budget:4} seed={seed} sqlml={s_score:.4f} ({s_best}, {s_sec:.1f}s)"
                    if (name, seed, budget) in earlier:  # the others as measured then, sqlml now
                        before = earlier[(name, seed, budget)]
                        row.update({k: v for k, v in before.items() if k.startswith(("flaml", "ag_", "autogluon"))},
                                   others_from=args.others_from)
                        for other in ("flaml", "autogluon"):
                            if other in before:
                                row[f"ratio_{other}"] = ratio(metric, s_score, before[other])
                                line += f" {other}={before[other]:.4f} (earlier) ratio={row[f'ratio_{other}']:.4f}"
                    elif "flaml" in systems:
                        f_score, f_sec, f_best = run_flaml(train.copy(), test.copy(), target, task, budget, seed,
                                                           args.cores)
                        row.update(flaml=f_score, flaml_seconds=f_sec, flaml_best=f_best,
                                   ratio_flaml=ratio(metric, s_score, f_score))
                        line += f" flaml={f_score:.4f} ({f_best}, {f_sec:.1f}s) ratio={row['ratio_flaml']:.4f}"
                    if "autogluon" in systems and (name, seed, budget) not in earlier:
                        for preset in presets:
                            a_score, a_sec, a_best = run_autogluon(train, test, target, task, budget, preset,
                                                                   args.cores, args.ag_python)
                            row.update({f"ag_{preset}": a_score, f"ag_{preset}_seconds": a_sec,
                                        f"ag_{preset}_best": a_best})
                            line += f" ag[{preset}]=" + ("failed" if a_score is None else f"{a_score:.4f}") + \
                                f" ({a_best}, {a_sec:.1f}s)"
                        scored = [row[f"ag_{p}"] for p in presets if row[f"ag_{p}"] is not None]
                        if scored:  # the better preset; a preset that trained nothing does not count
                            row["autogluon"] = a_best_score = scored[0] if len(scored) == 1 else better(metric, *scored)
                            row["ratio_autogluon"] = ratio(metric, s_score, a_best_score)
                            line += f" ratio_ag={row['ratio_autogluon']:.4f}"
                    row["load_after"] = os.getloadavg()[0]
                    results.append(row)
                    print(line + f" load={row['load_before']:.1f}-{row['load_after']:.1f}"
                          + ("" if row["budget_ok"] else "  BUDGET EXCEEDED"), flush=True)
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out).write_text(json.dumps(results, indent=1))  # so far: a long run may be cut
    finally:
        if conn:
            conn.close()
            pgsession.drop_database(dsn, database)
        if cluster:
            cluster.destroy()
    summarize(results, presets)


def summarize(results, presets=None):
    """The per-dataset table (means over seeds), then mean and worst ratios per budget and task."""
    df = pd.DataFrame(results)
    if df.empty:
        return
    presets = presets or AG_PRESETS.split(",")
    others = [s for s in ("flaml", "autogluon") if f"ratio_{s}" in df]
    ag = [f"ag_{p}" for p in presets if f"ag_{p}" in df]
    keys = ["dataset", "task", "kind", "rows", "metric", "budget"]
    mean = {c: (c, "mean") for c in ["sqlml", "sqlml_seconds", *ag, *others, *(f"ratio_{s}" for s in others)]
            if c in df}
    per = df.groupby(keys, sort=False).agg(**mean, sqlml_best=("sqlml_best", "first")).reset_index()
    columns = ["sqlml", "sqlml s", "sqlml model"] + (["FLAML", "ratio vs FLAML"] if "flaml" in others else []) + \
        [f"AG {p}" for p in presets if f"ag_{p}" in df] + (["ratio vs AG"] if "autogluon" in others else [])
    print("\n| dataset | kind | task | rows | metric | budget | " + " | ".join(columns) + " |")
    print("|---|---|---|---:|---|---:|" + "---:|" * len(columns))

    def cell(v):
        return "failed" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4g}"

    for r in per.to_dict("records"):
        cells = [cell(r["sqlml"]), f"{r['sqlml_seconds']:.0f}", r["sqlml_best"]]
        if "flaml" in others:
            cells += [cell(r["flaml"]), f"{r['ratio_flaml']:.4f}"]
        cells += [cell(r[c]) for c in ag]
        if "autogluon" in others:
            cells.append(f"{r['ratio_autogluon']:.4f}" if r["ratio_autogluon"] == r["ratio_autogluon"] else "-")
        print(f"| {r['dataset']} | {r['kind']} | {r['task']} | {r['rows']} | {r['metric']} | {r['budget']}s | "
              + " | ".join(cells) + " |")
    print("\nratios > 1: sqlml better")
    for budget, g in per.groupby("budget"):
        for s in others:
            col = f"ratio_{s}"
            parts = [f"all: mean {g[col].mean():.4f}, worst {g[col].min():.4f} ({g.loc[g[col].idxmin(), 'dataset']}), "
                     f"behind on {(g[col] < 1).sum()}/{g[col].notna().sum()}"]
            for task, t in g.groupby("task"):
                if t[col].isna().all():  # a task whose rows lack this system (an --others-from run without it)
                    continue
                parts.append(f"{task}: mean {t[col].mean():.4f}, worst {t[col].min():.4f} "
                             f"({t.loc[t[col].idxmin(), 'dataset']})")
            print(f"budget {budget}s vs {s}: " + "; ".join(parts))
    late = df[~df.budget_ok]
    print(f"budget respected on {len(df) - len(late)}/{len(df)} sqlml runs "
          f"(max {df.sqlml_seconds.max():.1f}s; limit max(1.1 B, B + 5 s)); "
          f"load average {df.load_before.min():.1f}-{df.load_after.max():.1f}")


if __name__ == "__main__":
    main()
