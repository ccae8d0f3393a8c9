"""CatBoost: gradient boosting on oblivious (symmetric) trees, rounds chosen by early stopping.

Text categories are one-hot (NATIVE_MISSING): CatBoost's own ONNX export takes numeric features
only. The model converts with that export (``catboost.utils.convert_to_onnx_object``), whose one
tree-ensemble node is grafted into skl2onnx's graph of the whole pipeline."""

from __future__ import annotations

from sqlml.automl.spec import BOOSTING, EARLY_STOPPING_ROUNDS, NATIVE_MISSING, EstimatorSpec, FitContext, Hyper


def build(params, task, threads, seed):
    import catboost

    cls = catboost.CatBoostClassifier if task.classification else catboost.CatBoostRegressor
    return cls(
        iterations=int(params.get("n_estimators", 1000)),
        learning_rate=params.get("learning_rate", 0.1),
        depth=int(params.get("depth", 6)),
        l2_leaf_reg=params.get("l2_leaf_reg", 3.0),
        random_strength=params.get("random_strength", 1.0),
        loss_function=("MultiClass" if task.name == "multiclass" else "Logloss") if task.classification else "RMSE",
        thread_count=threads,
        random_seed=seed,
        verbose=False,
        allow_writing_files=False,  # no catboost_info/ in the server's working directory
    )


def fit(est, X, y, context: FitContext) -> int:
    """Boost up to ``n_estimators`` rounds, or to the best round on the validation rows (the model
    keeps only those); stop at the deadline (checked every 10 rounds). Returns the rounds kept."""
    budget = context.budget

    class Deadline:
        def after_iteration(self, info) -> bool:  # False stops the training
            if info.iteration % 10:
                return True
            budget.checkpoint()
            return not (budget.expired() and info.iteration > 1)

    kwargs = {"callbacks": [Deadline()]}
    if context.n_estimators:
        est.set_params(iterations=int(context.n_estimators))
    elif context.valid is not None:
        kwargs.update(eval_set=context.valid, early_stopping_rounds=EARLY_STOPPING_ROUNDS, use_best_model=True)
    est.fit(X, y, **kwargs)
    return int(est.tree_count_)


def leaves(params: dict, rows: int, task) -> float:
    return 2.0 ** params.get("depth", 6)


def _parse_classifier(scope, model, inputs, custom_parsers=None):
    """skl2onnx's view of a CatBoost classifier: outputs label and probabilities (no ZipMap: sqlml
    converts with zipmap=False)."""
    from skl2onnx._parse import _get_sklearn_operator_name
    from skl2onnx.common.data_types import Int64TensorType, guess_tensor_type

    operator = scope.declare_local_operator(_get_sklearn_operator_name(type(model)), model)
    operator.inputs = inputs
    operator.outputs.append(scope.declare_local_variable("label", Int64TensorType()))
    operator.outputs.append(scope.declare_local_variable("probabilities", guess_tensor_type(inputs[0].type)))
    return operator.outputs


def _convert(scope, operator, container):
    """CatBoost's own export is a graph of one TreeEnsemble node (and a ZipMap for classifiers):
    that node, added to the pipeline's graph."""
    from catboost.utils import convert_to_onnx_object
    from onnx.helper import get_attribute_value

    onx = convert_to_onnx_object(operator.raw_operator)
    nodes = [n for n in onx.graph.node if n.op_type != "ZipMap"]
    if len(nodes) != 1 or not nodes[0].op_type.startswith("TreeEnsemble") or len(onx.graph.initializer):
        raise NotImplementedError(f"CatBoost's ONNX export has nodes {[n.op_type for n in onx.graph.node]}, "
                                  "not one tree ensemble")
    node = nodes[0]
    opsets = {d.domain: d.version for d in onx.opset_import}
    container.add_node(node.op_type, [operator.inputs[0].full_name], [o.full_name for o in operator.outputs],
                       op_domain=node.domain, op_version=opsets.get(node.domain),
                       **{a.name: get_attribute_value(a) for a in node.attribute})


def register_onnx() -> None:
    import catboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(catboost.CatBoostClassifier, "CatBoostCatBoostClassifier",
                                calculate_linear_classifier_output_shapes, _convert, parser=_parse_classifier,
                                options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    update_registered_converter(catboost.CatBoostRegressor, "CatBoostCatBoostRegressor",
                                calculate_linear_regressor_output_shapes, _convert)


def explain_trees(est, outputs: int):
    """CatBoost's oblivious trees from its JSON model, for TreeSHAP (``sqlml.explain.model``): level
    ``i`` of a tree tests its ``i``-th split, ``x > border`` going right (bit ``i`` of the leaf's
    index); NaN goes where the feature's ``nan_value_treatment`` says. Covers are the leaves'
    training weights; the model's scale and bias apply to the sum of the trees."""
    import json
    import os
    import tempfile

    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.json")
        est.save_model(path, format="json")
        with open(path) as f:
            model = json.load(f)
    floats = model["features_info"].get("float_features", [])
    flat = {f["feature_index"]: f["flat_feature_index"] for f in floats}  # a split's index counts used features
    nan_right = {f["feature_index"]: f.get("nan_value_treatment") == "AsTrue" for f in floats}
    scale, bias = model.get("scale_and_bias", [1.0, [0.0]])
    trees = [_oblivious(tree, flat, nan_right, outputs) for tree in model["oblivious_trees"]]
    # the trees' sum is scaled, the bias is not
    trees[0]["value"] += np.resize(np.asarray(bias, dtype=np.float64), outputs) / scale
    return trees, float(scale)


def _oblivious(tree: dict, flat: dict, nan_right: dict, outputs: int) -> dict:
    """One oblivious tree as a full binary tree of node lists, in preorder."""
    import numpy as np

    from sqlml.explain.treeshap import NAN

    splits = tree.get("splits", [])
    depth = len(splits)
    leaf_values = np.asarray(tree["leaf_values"], dtype=np.float64).reshape(2 ** depth, outputs)
    # a leaf no training row reached weighs 0; TreeSHAP divides by covers, so it gets a negligible one
    leaf_weights = np.maximum(np.asarray(tree["leaf_weights"], dtype=np.float64), 1e-9)
    t = {k: [] for k in ("left", "right", "feature", "threshold", "cover", "default_left", "missing", "categories",
                         "value")}

    def grow(level: int, index: int) -> tuple:  # (value, cover) of the subtree
        j = len(t["left"])
        for column in t.values():
            column.append(None)
        t["missing"][j], t["categories"][j] = NAN, None
        if level == depth:
            value, cover = leaf_values[index], leaf_weights[index]
            t["left"][j], t["right"][j], t["feature"][j], t["threshold"][j] = -1, -1, -2, 0.0
            t["default_left"][j] = False
        else:
            feature = splits[level]["float_feature_index"]
            t["feature"][j], t["threshold"][j] = flat[feature], float(splits[level]["border"])
            t["default_left"][j] = not nan_right.get(feature, False)
            t["left"][j] = j + 1
            v_left, c_left = grow(level + 1, index)
            t["right"][j] = len(t["left"])
            v_right, c_right = grow(level + 1, index | 1 << level)
            cover = c_left + c_right
            value = (v_left * c_left + v_right * c_right) / cover if cover > 0 else (v_left + v_right) / 2
        t["value"][j], t["cover"][j] = value, float(cover)
        return value, cover

    grow(0, 0)
    t["value"] = np.asarray(t["value"], dtype=np.float64).reshape(-1, outputs)
    return t


SPECS = (
    EstimatorSpec(
        name="catboost", family=BOOSTING, encoding=NATIVE_MISSING, build=build, fit=fit, leaves=leaves,
        cost=3.0, early_stopping=True, library="catboost", register_onnx=register_onnx, explain_trees=explain_trees,
        space=(
            Hyper("learning_rate", 0.01, 0.3, log=True),
            Hyper("depth", 4, 10, integer=True),
            Hyper("l2_leaf_reg", 0.1, 30.0, log=True),
            Hyper("random_strength", 0.1, 10.0, log=True),
        ),
        portfolio=(
            {"learning_rate": 0.1, "depth": 6, "l2_leaf_reg": 3.0, "random_strength": 1.0},
            {"learning_rate": 0.05, "depth": 8, "l2_leaf_reg": 10.0, "random_strength": 1.0},
        ),
    ),
)
