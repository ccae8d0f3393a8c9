"""Learn a portfolio of configurations offline, from the benchmark's tuning part only, and write it
as package data (sqlml/automl/portfolio.json), read by ``sqlml.automl.portfolio``.

A zero-shot portfolio in the manner of TabRepo / auto-sklearn 2: every candidate configuration
(``CANDIDATES``: the estimators' hand-written portfolios plus a grid around them) is
cross-validated on every tuning dataset with sqlml's own pipelines (``fit_pipeline``: the same
preprocessing, early stopping and folds as the search); each dataset's losses are normalised
(0: the best candidate, 1: the median candidate or worse); then configurations are picked greedily,
each the one that most lowers the mean over datasets of the best normalised loss among those picked
so far. The search, which tries the portfolio and keeps the best by validation, is what this
objective models. Ties (within 0.002) go to the cheaper configuration.

Each dataset is the benchmark's training part (seed 0's 75%), at most ``--max-rows`` rows of it
(seeded sample): a portfolio for small budgets is tried on folds of a few thousand rows anyway.

    .sqlml/venv/bin/python bench/learn_portfolio.py                 # about 20 min on 2 busy cores
    .sqlml/venv/bin/python bench/learn_portfolio.py --datasets oj,wage --size 4 --out /tmp/p.json

Deterministic: fixed seeds for the split, the sample, the folds and the models; one thread per fit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import automl_vs_flaml  # noqa: E402
import datasets  # noqa: E402

from sqlml.automl import metrics, preprocess  # noqa: E402
from sqlml.automl.budget import Budget  # noqa: E402
from sqlml.automl.estimators import SPECS  # noqa: E402
from sqlml.automl.search import Problem, fit_pipeline, predict  # noqa: E402
from sqlml.data import convert  # noqa: E402
from sqlml.data.schema import CATEGORY, NUMERIC, REGRESSION, Feature, FeatureSchema, Target  # noqa: E402
from sqlml.data.task import task_of  # noqa: E402

SEED = 0
FOLDS = 3
TIE = 0.002  # normalised loss: picks closer than this are ties, and the cheaper one wins


def _lgb(lr, leaves, mcs, sub, col, lam):
    return {"learning_rate": lr, "num_leaves": leaves, "min_child_samples": mcs, "subsample": sub,
            "colsample_bytree": col, "reg_lambda": lam}


# the estimators' hand-written portfolios before learning (the first is the cost yardstick): the
# learned portfolio replaces them in the package, so they are seeds of the grid here, not a copy
SEEDS = [("lightgbm", p) for p in (
    _lgb(0.1, 31, 20, 1.0, 1.0, 0.001),
    _lgb(0.05, 15, 10, 0.8, 0.5, 1.0),
    _lgb(0.05, 63, 30, 0.8, 0.7, 0.1),
    _lgb(0.03, 7, 50, 0.7, 0.5, 5.0),
)] + [("linear", {"C": c, "alpha": a}) for c, a in ((1.0, 1.0), (0.1, 10.0), (10.0, 0.1))]

CANDIDATES = SEEDS[:4] + [("lightgbm", p) for p in (
    _lgb(0.05, 31, 20, 0.8, 0.8, 1.0),
    _lgb(0.05, 127, 20, 0.8, 0.6, 1.0),
    _lgb(0.03, 255, 40, 0.7, 0.5, 3.0),
    _lgb(0.1, 63, 5, 1.0, 0.8, 0.01),
    _lgb(0.02, 31, 50, 0.7, 0.4, 10.0),
    _lgb(0.08, 15, 100, 0.9, 0.9, 0.1),
    _lgb(0.05, 63, 10, 0.6, 0.3, 0.3),
    _lgb(0.1, 255, 20, 0.8, 0.7, 1.0),
    _lgb(0.03, 4, 20, 0.8, 0.8, 1.0),
)] + [("extra_trees", p) for p in SPECS["extra_trees"].portfolio] + [
    ("extra_trees", {"n_estimators": 200, "min_samples_leaf": 3, "max_features": 0.5}),
] + [("random_forest", p) for p in SPECS["random_forest"].portfolio] + SEEDS[4:]


def problem_for(name: str, max_rows: int) -> Problem:
    """The benchmark's training part of ``name`` (seed 0), sampled to ``max_rows``, as the search sees it."""
    df, target, task = datasets.load(name)
    train, _ = automl_vs_flaml.split(df, target, task, SEED)
    if len(train) > max_rows:
        train = train.sample(max_rows, random_state=SEED)
    feats = [c for c in train.columns if c not in ("id", target)]
    features = tuple(Feature(c, NUMERIC if train[c].dtype.kind in "fi" else CATEGORY,
                             "float8" if train[c].dtype.kind in "fi" else "text") for c in feats)
    numeric_target = task == REGRESSION
    schema = FeatureSchema(features, Target(target, "float8" if numeric_target else "text", task))
    y_raw = train[target].to_numpy(dtype=np.float64 if numeric_target else object)
    kind = task_of(task)
    y, classes, keep = kind.encode_target(target, y_raw, numeric_target)
    inputs = convert.model_inputs(schema, {c: train[c].to_numpy() for c in feats})
    X = convert.as_frame(schema, {k: v[keep] for k, v in inputs.items()})
    return Problem(X=X, y=y[keep], task=kind, metric=kind.check_metric(None),
                   plan=preprocess.Plan.from_data(schema, X), n_classes=len(classes), threads=1, seed=SEED)


def cross_validate(problem: Problem, algorithm: str, params: dict) -> tuple[float, float]:
    """(loss of the out-of-fold predictions, seconds of the fits)."""
    spec = SPECS[algorithm]
    folds, _ = problem.task.folds(problem.y, FOLDS, problem.seed)
    shape = (len(problem.y), problem.n_classes) if problem.task.classification else (len(problem.y),)
    oof = np.full(shape, np.nan)
    start = time.monotonic()
    for fit, valid in folds:
        Xv, yv = problem.X.iloc[valid], problem.y[valid]
        model, _ = fit_pipeline(spec, params, problem, problem.X.iloc[fit], problem.y[fit], Budget(math.inf),
                                valid=(Xv, yv))
        oof[valid] = predict(model, Xv, problem.task, problem.n_classes)
    seconds = time.monotonic() - start
    return metrics.loss(problem.metric, metrics.score(problem.metric, problem.y, oof, problem.n_classes)), seconds


def normalise(losses: np.ndarray) -> np.ndarray:
    """Per dataset (rows): 0 for the best candidate, 1 for the median one, capped at 1."""
    best = losses.min(axis=1, keepdims=True)
    median = np.median(losses, axis=1, keepdims=True)
    return np.clip((losses - best) / np.maximum(median - best, 1e-12), 0, 1)


def greedy(norm: np.ndarray, cost: np.ndarray, size: int) -> list[tuple[int, float]]:
    """[(candidate index, mean normalised loss of the portfolio so far)], greedily: each pick lowers
    the mean over datasets of the best normalised loss among the picks the most. Of picks within
    TIE of that, those at most twice the cheapest's cost, and of those the best on average alone
    (which also decides once the portfolio is best everywhere)."""
    picked: list[tuple[int, float]] = []
    current = np.ones(norm.shape[0])
    alone = norm.mean(axis=0)
    for _ in range(min(size, norm.shape[1])):
        chosen = [i for i, _ in picked]
        gains = np.array([np.inf if j in chosen else np.minimum(current, norm[:, j]).mean()
                          for j in range(norm.shape[1])])
        close = np.flatnonzero(gains <= gains.min() + TIE)
        close = close[cost[close] <= 2 * cost[close].min()]
        j = int(close[np.argmin(alone[close])])
        current = np.minimum(current, norm[:, j])
        picked.append((j, float(current.mean())))
    return picked


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(datasets.part("tuning")),
                    help="default: the tuning part of bench/datasets.py (never the held-out part)")
    ap.add_argument("--max-rows", type=int, default=2000)
    ap.add_argument("--size", type=int, default=8, help="configurations in the portfolio")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sqlml" / "automl" / "portfolio.json"))
    ap.add_argument("--evaluations", default="bench/results/portfolio_evaluations.json",
                    help="every candidate's loss and seconds per dataset; datasets already in it are reused")
    args = ap.parse_args(argv)
    names = args.datasets.split(",")
    leaked = set(names) & set(datasets.part("heldout"))
    if leaked:
        sys.exit(f"{sorted(leaked)} are in the held-out part: the portfolio learns from the tuning part only")
    evaluations = Path(args.evaluations)
    candidates = [{"algorithm": a, "params": p} for a, p in CANDIDATES]
    done = json.loads(evaluations.read_text()) if evaluations.exists() else {}
    if done.get("candidates") != candidates or done.get("max_rows") != args.max_rows:
        done = {"candidates": candidates, "max_rows": args.max_rows, "datasets": {}}
    for name in names:
        if name in done["datasets"]:  # evaluated by an earlier run with the same candidates: reused
            continue
        problem = problem_for(name, args.max_rows)
        row = [cross_validate(problem, a, p) if problem.task.name in SPECS[a].tasks else (None, None)
               for a, p in CANDIDATES]
        done["datasets"][name] = {"rows": len(problem.y), "loss": [r[0] for r in row], "seconds": [r[1] for r in row]}
        evaluations.parent.mkdir(parents=True, exist_ok=True)
        evaluations.write_text(json.dumps(done, indent=1))
        best = int(np.nanargmin(np.array([r[0] for r in row], dtype=float)))
        print(f"{name:16} {len(problem.y):6} rows  best {CANDIDATES[best][0]} {row[best][0]:.5f}  "
              f"{sum(r[1] or 0 for r in row):.0f}s", flush=True)
    losses = np.array([done["datasets"][n]["loss"] for n in names], dtype=float)
    seconds = np.array([done["datasets"][n]["seconds"] for n in names], dtype=float)
    # a candidate that does not apply to a task (none today) ranks as the median there
    losses = np.where(np.isnan(losses), np.nanmedian(losses, axis=1, keepdims=True), losses)
    # cost: seconds relative to the dataset's first LightGBM entry, geometric mean over datasets
    cost = np.exp(np.nanmean(np.log(np.maximum(seconds, 1e-3) / np.maximum(seconds[:, :1], 1e-3)), axis=0))
    norm = normalise(losses)
    picks = greedy(norm, cost, args.size)
    order = [{"algorithm": CANDIDATES[j][0], "params": CANDIDATES[j][1], "relative_cost": round(float(cost[j]), 3),
              "mean_normalised_loss": round(score, 4)} for j, score in picks]
    portfolio: dict[str, list] = {}
    for entry in order:
        portfolio.setdefault(entry["algorithm"], []).append(entry["params"])
    out = {"learned_from": names, "max_rows": args.max_rows, "folds": FOLDS, "seed": SEED,
           "command": " ".join(["python bench/learn_portfolio.py", *(sys.argv[1:] if argv is None else argv)]),
           "portfolio": portfolio, "order": order}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("\npick | algorithm | params | relative cost | mean normalised loss")
    for i, entry in enumerate(order, 1):
        print(f"{i} | {entry['algorithm']} | {entry['params']} | {entry['relative_cost']} | "
              f"{entry['mean_normalised_loss']}")
    single = norm.mean(axis=0)
    learned = {a for a, _ in SEEDS}
    hand = np.array([(a, p) in SEEDS or (a not in learned and p in SPECS[a].portfolio) for a, p in CANDIDATES])
    print(f"best single configuration: {CANDIDATES[int(single.argmin())]} {single.min():.4f}; "
          f"the hand-written portfolio ({hand.sum()} entries): {norm[:, hand].min(axis=1).mean():.4f}; "
          f"learned ({len(order)}): {order[-1]['mean_normalised_loss']}")


if __name__ == "__main__":
    main()
