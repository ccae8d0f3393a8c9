"""XGBoost: gradient boosting on histograms, leaf-wise like LightGBM, rounds chosen by early stopping.

Text categories are one-hot (NATIVE_MISSING): onnxmltools' converter cannot express XGBoost's
categorical splits. Missing numbers stay NaN, which XGBoost and its ONNX graph route alike."""

from __future__ import annotations

from sqlml.automl.spec import (
    BOOSTING,
    DEFAULT_LEAVES,
    EARLY_STOPPING_ROUNDS,
    NATIVE_MISSING,
    EstimatorSpec,
    FitContext,
    Hyper,
)


def build(params, task, threads, seed):
    import xgboost as xgb

    cls = xgb.XGBClassifier if task.classification else xgb.XGBRegressor
    return cls(
        n_estimators=int(params.get("n_estimators", 1000)),
        learning_rate=params.get("learning_rate", 0.1),
        tree_method="hist",
        grow_policy="lossguide",
        max_depth=0,
        max_leaves=int(params.get("max_leaves", DEFAULT_LEAVES)),
        min_child_weight=params.get("min_child_weight", 1.0),
        subsample=params.get("subsample", 1.0),
        colsample_bytree=params.get("colsample_bytree", 1.0),
        reg_lambda=params.get("reg_lambda", 1.0),
        reg_alpha=params.get("reg_alpha", 0.0),
        n_jobs=threads,
        random_state=seed,
        verbosity=0,
    )


def fit(est, X, y, context: FitContext) -> int:
    """Boost up to ``n_estimators`` rounds, or to the best round on the validation rows (the model
    keeps only those, so that ONNX converts what predicts); stop at the deadline (checked every 10
    rounds). Returns the rounds kept."""
    import xgboost as xgb

    budget = context.budget

    class Deadline(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            if epoch % 10:
                return False
            budget.checkpoint()
            return budget.expired() and epoch > 0

    callbacks = [Deadline()]
    kwargs = {"verbose": False}
    if context.n_estimators:
        est.set_params(n_estimators=int(context.n_estimators))
    elif context.valid is not None:
        kwargs["eval_set"] = [context.valid]
        callbacks.append(xgb.callback.EarlyStopping(rounds=EARLY_STOPPING_ROUNDS, save_best=True))
    est.set_params(callbacks=callbacks)
    est.fit(X, y, **kwargs)
    est.set_params(callbacks=None)  # a fitted model holds no closure over this fit's budget
    return int(est.get_booster().num_boosted_rounds())


def leaves(params: dict, rows: int, task) -> float:
    return params.get("max_leaves", DEFAULT_LEAVES)


def register_onnx() -> None:
    """Teach skl2onnx the XGBoost estimators (the converter lives in onnxmltools)."""
    import xgboost as xgb
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(xgb.XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                convert_xgboost, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    update_registered_converter(xgb.XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                convert_xgboost)


def explain_trees(est, outputs: int):
    """XGBoost's trees from its JSON dump, for TreeSHAP (``sqlml.explain.model``): ``x < t`` goes to
    ``yes`` (here: left when ``x <=`` the largest float32 below ``t``, the same split for every
    float32 input), NaN to ``missing``; covers are XGBoost's hessian sums, as its own SHAP uses. The
    initial score is what the margin has beyond the leaves, on a probe row."""
    import json

    import numpy as np
    import xgboost as xgb

    from sqlml.explain.treeshap import NAN

    booster = est.get_booster()
    dumps = [json.loads(d) for d in booster.get_dump(dump_format="json", with_stats=True)]
    probe = xgb.DMatrix(np.zeros((1, booster.num_features()), dtype=np.float32))
    margin = booster.predict(probe, output_margin=True).reshape(-1)
    leaf_of = booster.predict(probe, pred_leaf=True).reshape(-1).astype(int)
    trees, leaf_sums = [], np.zeros(outputs)
    for i, root in enumerate(dumps):
        order, stack = [], [root]
        while stack:  # preorder
            node = stack.pop()
            order.append(node)
            stack.extend(reversed(node.get("children", [])))
        position = {node["nodeid"]: j for j, node in enumerate(order)}
        value = np.zeros((len(order), outputs))
        out = i % outputs
        t = {k: [] for k in ("left", "right", "feature", "threshold", "cover", "default_left", "missing", "categories")}
        for j, node in enumerate(order):
            leaf = "leaf" in node
            value[j, out] = node["leaf"] if leaf else 0.0
            t["left"].append(-1 if leaf else position[node["yes"]])
            t["right"].append(-1 if leaf else position[node["no"]])
            t["feature"].append(-2 if leaf else int(node["split"].lstrip("f")))
            below = np.nextafter(np.float32(node.get("split_condition", 0.0)), np.float32(-np.inf))
            t["threshold"].append(0.0 if leaf else float(below))
            t["cover"].append(float(node["cover"]))
            t["default_left"].append(not leaf and node["missing"] == node["yes"])
            t["missing"].append(NAN)
            t["categories"].append(None)
            if leaf and node["nodeid"] == leaf_of[i]:
                leaf_sums[out] += node["leaf"]
        t["value"] = value
        trees.append(t)
    base = margin - leaf_sums
    for out in range(min(outputs, len(trees))):
        trees[out]["value"][:, out] += base[out]  # every node of the output's first tree
    return trees, 1.0


SPECS = (
    EstimatorSpec(
        name="xgboost", family=BOOSTING, encoding=NATIVE_MISSING, build=build, fit=fit, leaves=leaves,
        cost=1.5, early_stopping=True, library="xgboost", register_onnx=register_onnx, explain_trees=explain_trees,
        space=(
            Hyper("learning_rate", 0.01, 0.3, log=True),
            Hyper("max_leaves", 4, 256, log=True, integer=True),
            Hyper("min_child_weight", 0.01, 20.0, log=True),
            Hyper("subsample", 0.5, 1.0),
            Hyper("colsample_bytree", 0.3, 1.0),
            Hyper("reg_lambda", 1e-3, 10.0, log=True),
        ),
        portfolio=(
            {"learning_rate": 0.1, "max_leaves": 31, "min_child_weight": 1.0, "subsample": 1.0,
             "colsample_bytree": 1.0, "reg_lambda": 1.0},
            {"learning_rate": 0.05, "max_leaves": 15, "min_child_weight": 3.0, "subsample": 0.8,
             "colsample_bytree": 0.6, "reg_lambda": 1.0},
        ),
    ),
)
