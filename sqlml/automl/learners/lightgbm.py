"""LightGBM: gradient boosting with native categoricals, rounds chosen by early stopping."""

from __future__ import annotations

import numpy as np

from sqlml.automl import portfolio
from sqlml.automl.learners import lightgbm_trees
from sqlml.automl.spec import (
    BOOSTING,
    DEFAULT_LEAVES,
    EARLY_STOPPING_ROUNDS,
    NATIVE_CATEGORIES,
    EstimatorSpec,
    FitContext,
    Hyper,
)


def build(params, task, threads, seed):
    import lightgbm as lgb

    cls = lgb.LGBMClassifier if task.classification else lgb.LGBMRegressor
    return cls(
        n_estimators=int(params.get("n_estimators", 1000)),
        learning_rate=params.get("learning_rate", 0.05),
        num_leaves=int(params.get("num_leaves", DEFAULT_LEAVES)),
        min_child_samples=int(params.get("min_child_samples", 20)),
        subsample=params.get("subsample", 1.0),
        subsample_freq=1 if params.get("subsample", 1.0) < 1.0 else 0,
        colsample_bytree=params.get("colsample_bytree", 1.0),
        reg_lambda=params.get("reg_lambda", 0.0),
        reg_alpha=params.get("reg_alpha", 0.0),
        min_split_gain=0.0,
        max_bin=255,
        cat_smooth=params.get("cat_smooth", 10.0),
        n_jobs=threads,
        random_state=seed,
        verbose=-1,
    )


def fit(est, X, y, context: FitContext) -> int:
    """Boost up to ``n_estimators`` rounds, or to the best round on the validation rows; stop at the
    deadline (checked every 10 rounds). Returns the rounds kept."""
    import lightgbm as lgb

    budget = context.budget

    def guard(env):
        if env.iteration % 10 == 0:
            budget.checkpoint()
            if budget.expired() and env.iteration > 0:
                raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list or [])

    guard.order = 5
    kwargs = {"categorical_feature": context.categorical or "auto", "callbacks": [guard]}
    if context.n_estimators:
        est.set_params(n_estimators=int(context.n_estimators))
    elif context.valid is not None:
        kwargs["eval_X"], kwargs["eval_y"] = context.valid
        kwargs["callbacks"].append(lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False))
    est.fit(X, y, **kwargs)
    best = getattr(est, "best_iteration_", None)
    return int(best) if best else int(est.n_estimators)


def leaves(params: dict, rows: int, task) -> float:
    return params.get("num_leaves", DEFAULT_LEAVES)


def register_onnx() -> None:
    """Teach skl2onnx the LightGBM estimators (``lightgbm_trees.convert``)."""
    import lightgbm as lgb
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(lgb.LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
                                lightgbm_trees.convert, options={"nocl": [True, False], "zipmap": [True, False]})
    update_registered_converter(lgb.LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
                                lightgbm_trees.convert)


def onnx_nodes_per_tree(est) -> float:
    """Mean nodes per tree of ``est``'s ONNX graph (``TreeArrays.onnx_nodes``): on ids of thousands
    of levels ten times the leaves' count (lme4's InstEval: 2,260 nodes a tree of 127 leaves), and
    the export's time with it."""
    trees = lightgbm_trees.read(est.booster_).trees
    return sum(t.onnx_nodes() for t in trees) / max(len(trees), 1)


def explain_trees(est, outputs: int):
    """LightGBM's trees for TreeSHAP (``sqlml.explain.model``), numbered as ``lightgbm_trees``
    reads them (splits, then leaves): raw scores (the first trees hold the initial score); covers
    are LightGBM's data counts, as its own TreeSHAP uses them."""
    from sqlml.explain.treeshap import NAN, NONE, ZERO

    missing = np.array([NONE, ZERO, NAN], dtype=np.int8)  # by LightGBM's missing type: None, Zero, NaN
    model = lightgbm_trees.read(est.booster_)
    trees = []
    for i, tree in enumerate(model.trees):
        splits, leaves = len(tree.feature), tree.leaves
        child = tree.children()
        none = np.full(leaves, -1, np.int64)
        value = np.zeros((splits + leaves, outputs))
        value[splits:, i % model.trees_per_round if outputs > 1 else 0] = tree.leaf_value
        threshold = tree.threshold.copy()
        threshold[list(tree.categories)] = 0.0
        categories = [None] * (splits + leaves)
        for j, cats in tree.categories.items():
            categories[j] = cats.astype(float).tolist()
        trees.append({
            "left": np.concatenate([child[0], none]), "right": np.concatenate([child[1], none]),
            "feature": np.concatenate([tree.feature, np.full(leaves, -2, np.int64)]),
            "threshold": np.concatenate([threshold, np.zeros(leaves)]),
            "cover": np.concatenate([tree.count, tree.leaf_count]),
            "default_left": np.concatenate([tree.default_left(), np.zeros(leaves, bool)]),
            "missing": np.concatenate([missing[tree.missing()], np.full(leaves, NONE, np.int8)]),
            "categories": categories, "value": value,
        })
    return trees, 1.0


SPECS = (
    EstimatorSpec(
        name="lightgbm", family=BOOSTING, encoding=NATIVE_CATEGORIES, build=build, fit=fit, leaves=leaves,
        cost=1.0, early_stopping=True, library="lightgbm", register_onnx=register_onnx, explain_trees=explain_trees,
        onnx_nodes_per_tree=onnx_nodes_per_tree,
        space=(
            Hyper("learning_rate", 0.01, 0.3, log=True),
            Hyper("num_leaves", 4, 256, log=True, integer=True),
            Hyper("min_child_samples", 2, 100, log=True, integer=True),
            Hyper("subsample", 0.5, 1.0),
            Hyper("colsample_bytree", 0.3, 1.0),
            Hyper("reg_lambda", 1e-3, 10.0, log=True),
        ),
        portfolio=portfolio.learned()["lightgbm"],
    ),
)
