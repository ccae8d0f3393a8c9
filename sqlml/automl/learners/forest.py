"""Random forests and extra trees (scikit-learn), grown in chunks up to the deadline."""

from __future__ import annotations

from sqlml.automl.spec import ONE_HOT, TREES, EstimatorSpec, FitContext, Hyper

# Leaves per forest tree. Unbounded regression trees grow to one leaf per sample: 200 of them on
# 7,000 rows are 1.7M nodes, a 60 MB ONNX model that takes 25 s to convert and seconds to load.
FOREST_MAX_LEAVES = 1024
CHUNK = 25  # trees added between checkpoints
CLASSIFICATION_PURITY = 0.3  # classification trees stop at pure nodes: leaves per row, against regression's 1


def builder(extra: bool):
    def build(params, task, threads, seed):
        from sklearn import ensemble

        cls = {(False, True): ensemble.RandomForestClassifier, (False, False): ensemble.RandomForestRegressor,
               (True, True): ensemble.ExtraTreesClassifier,
               (True, False): ensemble.ExtraTreesRegressor}[(extra, task.classification)]
        return cls(n_estimators=int(params.get("n_estimators", 100)),
                   max_features=params.get("max_features", "sqrt" if task.classification else 1.0),
                   min_samples_leaf=int(params.get("min_samples_leaf", 1)),
                   max_leaf_nodes=params.get("max_leaf_nodes", FOREST_MAX_LEAVES),
                   n_jobs=threads, random_state=seed)

    return build


def fit(est, X, y, context: FitContext) -> int:
    """Grow ``CHUNK`` trees at a time until ``n_estimators`` or the deadline; returns the trees grown."""
    total = int(est.n_estimators)
    est.set_params(warm_start=True, n_estimators=0)
    grown = 0
    while grown < total:
        grown = min(grown + CHUNK, total)
        est.set_params(n_estimators=grown)
        est.fit(X, y)
        context.budget.checkpoint()
        if context.budget.expired():
            break
    est.set_params(warm_start=False)
    return grown


def leaves(params: dict, rows: int, task) -> float:
    """Regression trees grow to purity (a leaf per min_samples_leaf + 1 rows); classification trees stop sooner."""
    purity = CLASSIFICATION_PURITY if task.classification else 1.0
    return min(rows / (params.get("min_samples_leaf", 1) + 1) * purity, FOREST_MAX_LEAVES)


def onnx_nodes_per_tree(est) -> float:
    """Nodes per tree of a fitted forest, as its ONNX export writes them (a node per tree node).
    Counted, because ``leaves`` is a bound: on 9,600 rows of a noisy regression, extra trees of
    min_samples_leaf 8 had 410 leaves, not 1,024. Priced by the bound, a 5-fold extra-trees winner
    on randhie reserved 40 s of a 120 s search for its finish, and the search stopped at 71 s."""
    return sum(tree.tree_.node_count for tree in est.estimators_) / max(len(est.estimators_), 1)


SPACE = (Hyper("n_estimators", 50, 500, log=True, integer=True),
         Hyper("min_samples_leaf", 1, 20, log=True, integer=True),
         Hyper("max_features", choices=("sqrt", 0.5, 1.0)))

SPECS = (
    EstimatorSpec(
        name="random_forest", family=TREES, encoding=ONE_HOT, build=builder(extra=False), fit=fit, leaves=leaves,
        onnx_nodes_per_tree=onnx_nodes_per_tree, cost=3.5, library="sklearn", space=SPACE,
        portfolio=({"n_estimators": 200, "min_samples_leaf": 1, "max_features": "sqrt"},
                   {"n_estimators": 200, "min_samples_leaf": 5, "max_features": 0.5}),
    ),
    EstimatorSpec(
        name="extra_trees", family=TREES, encoding=ONE_HOT, build=builder(extra=True), fit=fit, leaves=leaves,
        onnx_nodes_per_tree=onnx_nodes_per_tree, cost=1.0, library="sklearn", space=SPACE,
        portfolio=({"n_estimators": 200, "min_samples_leaf": 1, "max_features": 0.5},
                   {"n_estimators": 200, "min_samples_leaf": 8, "max_features": "sqrt"},  # noisy targets
                   {"n_estimators": 200, "min_samples_leaf": 2, "max_features": 1.0}),
    ),
)
