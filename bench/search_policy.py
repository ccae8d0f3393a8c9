"""The search's policy against a baseline checkout and FLAML, side by side in one run, without a database.

For each dataset and seed: the same 75/25 split as ``automl_vs_flaml.py``; FLAML
``AutoML.fit(time_budget=B, n_jobs=cores)``; then ``sqlml.automl.front.train`` with the same budget
and threads, once from this tree and once from each ``--baseline`` checkout (e.g. ``/work/main``),
each in its own process with the ML libraries already imported (a warm backend); all scored on the
same held-out 25%. It isolates the search (no ingest, ONNX export or registry write: those are the
same for both trees), so that the policy's effect is measured against a baseline of the same run.
Ratios > 1: better than FLAML (its RMSE or log loss over ours; our AUC over its).

``diamonds_like`` is a generated diamonds-shaped table (53,940 rows: carat, ordered text cut,
color and clarity, dimensions; regression on a log-linear price with interactions): the largest
table of issue 21's held-back set had this shape, and there forests took most of a 30 s search.

    .sqlml/venv/bin/python bench/search_policy.py --budget 30 --datasets diamonds_like,bikeshare,oj \
        --baseline /work/main --variant 'bagged={"bagging": true}'
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import automl_vs_flaml as avf  # noqa: E402
import datasets  # noqa: E402


def diamonds_like(n: int = 53_940, seed: int = 0):
    rng = np.random.default_rng(seed)
    carat = np.clip(rng.lognormal(-0.4, 0.55, n), 0.2, 5.0)
    cuts, colors = ["Fair", "Good", "Very Good", "Premium", "Ideal"], list("DEFGHIJ")
    clarities = ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"]
    cut = rng.choice(5, n, p=[.03, .09, .22, .26, .40])
    color = rng.choice(7, n, p=[.12, .18, .18, .21, .15, .10, .06])
    clarity = rng.choice(8, n, p=[.014, .17, .24, .23, .15, .09, .07, .036])
    depth = rng.normal(61.7, 1.4, n) - 0.3 * (cut - 2)
    table = rng.normal(57.4, 2.2, n) - 0.5 * (cut - 2)
    x = 6.5 * carat ** (1 / 3) * rng.normal(1, 0.01, n)
    log_price = (8.4 + 1.75 * np.log(carat) + 0.05 * cut - 0.09 * color + 0.12 * clarity
                 - 0.01 * color * clarity * np.log1p(carat) + 0.02 * cut * (carat > 1)
                 - 0.15 * np.log(carat) ** 2 * (carat > 2) + 0.03 * np.sin(depth) + rng.normal(0, 0.12, n))
    df = pd.DataFrame({"carat": carat.round(2), "cut": [cuts[i] for i in cut], "color": [colors[i] for i in color],
                       "clarity": [clarities[i] for i in clarity], "depth": depth.round(1), "table": table.round(0),
                       "x": x.round(2), "y": (x * rng.normal(1, 0.01, n)).round(2), "z": (x * depth / 100).round(2),
                       "price": np.exp(log_price).round(0)})
    df.insert(0, "id", np.arange(1, n + 1))
    return df, "price", "regression"


def load(name: str):
    return diamonds_like() if name == "diamonds_like" else datasets.load(name)


def worker(root: str, job: str, options: str) -> None:
    """Train with the sqlml of ``root`` on the pickled job (``options``: JSON keyword arguments of
    ``front.train``); print one JSON line."""
    sys.path.insert(0, root)
    import lightgbm  # noqa: F401 - a warm backend has its libraries loaded
    import sklearn.ensemble  # noqa: F401

    from sqlml.automl import front
    from sqlml.automl.budget import Budget
    from sqlml.automl.search import predict
    from sqlml.data import convert
    from sqlml.data.schema import Feature, FeatureSchema, Target

    train, test, target, task, budget, seed, cores = pickle.loads(Path(job).read_bytes())
    features = [c for c in train.columns if c not in (target, "id")]
    kinds = {c: ("numeric", "float8") if train[c].dtype.kind in "fi" else ("category", "text") for c in features}
    schema = FeatureSchema(tuple(Feature(c, *kinds[c]) for c in features),
                           Target(target, "float8" if task == "regression" else "text", task))

    def columns(df):
        return {c: (df[c].to_numpy(dtype=np.float64) if kinds[c][0] == "numeric"
                    else np.asarray(df[c].astype(object).where(df[c].notna(), None), dtype=object)) for c in features}

    y_raw = train[target].to_numpy(dtype=np.float64) if task == "regression" else \
        np.asarray(train[target].astype(str), dtype=object)
    start = time.monotonic()
    trained = front.train(schema, columns(train), y_raw, task=task, metric=None, algorithms=None, test_size=0.2,
                          seed=seed, budget=Budget(float(budget)), threads=cores, **json.loads(options))
    seconds = time.monotonic() - start
    model = trained.final_model if trained.final_model is not None else trained.result.model
    frame = convert.as_frame(trained.schema, convert.model_inputs(trained.schema, columns(test)))
    classes = trained.schema.target.classes
    pred = predict(model, frame, task, len(classes))
    metric = avf.METRIC[task]
    trials = trained.result.trials
    spent = {}
    for t in trials:
        spent[t.algorithm] = spent.get(t.algorithm, 0.0) + t.fit_seconds
    best_lgb = min((t for t in trials if t.algorithm == "lightgbm" and t.loss is not None), key=lambda t: t.loss,
                   default=None)
    print(json.dumps({"score": avf.score(metric, test[target], pred, classes), "seconds": seconds,
                      "algorithm": trained.result.algorithm, "trials": len(trials),
                      "validation": trained.result.validation, "bagged": getattr(trained.result, "bagged", 0),
                      "seconds_by_algorithm": {k: round(v, 1) for k, v in spent.items()},
                      "lightgbm_trials": sum(t.algorithm == "lightgbm" for t in trials),
                      "best_lightgbm_leaves": best_lgb.params.get("num_leaves") if best_lgb else None}))


def run_tree(root, options, train, test, target, task, budget, seed, cores):
    with tempfile.NamedTemporaryFile(suffix=".pkl") as f:
        f.write(pickle.dumps((train, test, target, task, budget, seed, cores)))
        f.flush()
        env = {**os.environ, "OMP_NUM_THREADS": str(cores), "OPENBLAS_NUM_THREADS": str(cores)}
        out = subprocess.run([sys.executable, "-W", "ignore", __file__, "--worker", root, f.name, options], env=env,
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--datasets", default="diamonds_like,bikeshare,oj")
    ap.add_argument("--baseline", action="append", default=[], help="another checkout's root, e.g. /work/main")
    ap.add_argument("--variant", action="append", default=[],
                    help='this tree with front.train keyword arguments: LABEL=JSON, e.g. bag={"bagging": true}')
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the raw rows here (JSON)")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    trees = {"this": (str(HERE.parent), "{}"), **{f"baseline{i or ''}": (b, "{}") for i, b in enumerate(args.baseline)},
             **{v.split("=", 1)[0]: (str(HERE.parent), v.split("=", 1)[1]) for v in args.variant}}
    print(f"command: {' '.join(sys.argv)}\ncores {args.cores}, budget {args.budget}s, trees {trees}", flush=True)
    rows = []
    for name in args.datasets.split(","):
        df, target, task = load(name)
        metric = avf.METRIC[task]
        for seed in (int(s) for s in args.seeds.split(",")):
            train, test = avf.split(df, target, task, seed)
            f_score, f_sec, f_best = avf.run_flaml(train.copy(), test.copy(), target, task, args.budget, seed,
                                                   args.cores)
            row = {"dataset": name, "rows": len(df), "seed": seed, "flaml": f_score, "flaml_best": f_best}
            line = f"{name:15} seed={seed} flaml={f_score:.4f} ({f_best}, {f_sec:.0f}s)"
            for label, (root, options) in trees.items():
                r = run_tree(root, options, train, test, target, task, args.budget, seed, args.cores)
                r["ratio"] = avf.ratio(metric, r["score"], f_score)
                row[label] = r
                line += (f" | {label}: {r['ratio']:.4f} {r['algorithm']} {r['seconds']:.0f}s {r['trials']} trials"
                         f" lgb={r['lightgbm_trials']}/{r['best_lightgbm_leaves']} leaves {r['seconds_by_algorithm']}")
            print(line, flush=True)
            rows.append(row)
    for label in trees:
        ratios = [r[label]["ratio"] for r in rows]
        print(f"{label}: mean ratio to FLAML {np.mean(ratios):.4f}, worst {min(ratios):.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
