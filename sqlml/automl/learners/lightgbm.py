"""LightGBM: gradient boosting with native categoricals, rounds chosen by early stopping."""

from __future__ import annotations

import numpy as np

from sqlml.automl import portfolio
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


def _round_thresholds_down(node: dict) -> None:
    """LightGBM splits ``x <= t`` with a float64 ``t``; ONNX stores ``t`` as float32, rounded to
    nearest. When that rounds up onto an input value ``x > t``, ONNX sends the row left and
    LightGBM right (seen: 2 rows in 1729 off by 1%). The largest float32 <= t splits every
    float32 input exactly as ``t`` does, so thresholds are rounded down before conversion."""
    if "split_index" not in node:
        return
    t = node.get("threshold")
    if node.get("decision_type") == "<=" and isinstance(t, float):
        with np.errstate(over="ignore"):  # a threshold beyond float32's range becomes its largest value
            f = np.float32(t)
        # compare as float64: NumPy 2 would turn t into float32 and always keep f
        node["threshold"] = float(f) if float(f) <= t else float(np.nextafter(f, np.float32(-np.inf)))
    _round_thresholds_down(node["left_child"])
    _round_thresholds_down(node["right_child"])


# onnxmltools writes a categorical split of k categories as a chain of k BRANCH_EQ nodes and parses
# the tree recursively: on ids of thousands of levels (32 categories a split, trees 80 deep) that is
# thousands of frames. Python 3.11 keeps them off the C stack; the limit is raised for the conversion.
CONVERSION_RECURSION_LIMIT = 200_000


def _next_node_id(pool: set) -> int:
    """onnxmltools' ``_create_node_id`` in constant time: it hands out the smallest id not in
    ``pool``, and ``pool`` only ever holds the ids it handed out, 0 to len - 1 (its own scan made a
    tree of n nodes cost n² / 2 steps: minutes for such chains)."""
    i = len(pool)
    pool.add(i)
    return i


def register_onnx() -> None:
    """Teach skl2onnx the LightGBM estimators (converters live in onnxmltools), with float32-exact
    thresholds (see ``_round_thresholds_down``) and room for long categorical chains."""
    import sys
    import types

    import lightgbm as lgb
    from onnxmltools.convert.lightgbm.operator_converters import LightGbm
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    dump = LightGbm.dump_booster_model

    def dump_float32_exact(*args, **kwargs):
        model, info = dump(*args, **kwargs)
        for tree in model.get("tree_info", []):
            _round_thresholds_down(tree["tree_structure"])
        return model, info

    def convert_deep(scope, operator, container):
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, CONVERSION_RECURSION_LIMIT))
        try:
            convert_lightgbm(scope, operator, container)
        finally:
            sys.setrecursionlimit(limit)

    # the converter looks these up in its module. Its only deep copies (onnxmltools 1.16) are of flat
    # lists of numbers, one per node: a list copy is the same, and saves ~40% of a large conversion.
    LightGbm.dump_booster_model = dump_float32_exact
    LightGbm._create_node_id = _next_node_id
    LightGbm.copy = types.SimpleNamespace(deepcopy=list)
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(lgb.LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
                                convert_deep, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    update_registered_converter(lgb.LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
                                convert_deep, options={"split": None})


def onnx_nodes_per_tree(est) -> float:
    """Mean nodes per tree of ``est``'s ONNX graph: 2 x leaves - 1, plus, for each categorical split
    of k categories, the k - 1 tests that onnxmltools chains after the first. On ids of thousands of
    levels that is ten times the leaves' count (lme4's InstEval: 2,260 nodes a tree of 127 leaves),
    and the export's time with it. Read from the model's text: each split's categories are the bits
    of its ``cat_threshold`` words."""
    trees = nodes = 0
    for line in est.booster_.model_to_string().splitlines():
        if line.startswith("num_leaves="):
            trees += 1
            nodes += 2 * int(line[len("num_leaves="):]) - 1
        elif line.startswith("num_cat="):
            nodes -= int(line[len("num_cat="):])
        elif line.startswith("cat_threshold="):
            nodes += sum(int(word).bit_count() for word in line[len("cat_threshold="):].split())
    return nodes / max(trees, 1)


def _numbered(root: dict) -> list[dict]:
    """The nodes of a LightGBM dump tree in preorder, each split given ``_left`` / ``_right``: its
    children's positions."""
    nodes, stack = [], [(root, None, None)]
    while stack:
        node, parent, side = stack.pop()
        if parent is not None:
            parent[side] = len(nodes)
        nodes.append(node)
        if "leaf_value" not in node:
            stack.append((node["right_child"], node, "_right"))
            stack.append((node["left_child"], node, "_left"))
    return nodes


def explain_trees(est, outputs: int):
    """LightGBM's trees from its model dump, for TreeSHAP (``sqlml.explain.model``): raw scores (the
    first tree holds the initial score); covers are LightGBM's data counts, as its own TreeSHAP uses them."""
    from sqlml.explain.treeshap import NAN, NONE, ZERO

    missing = {"None": NONE, "Zero": ZERO, "NaN": NAN}
    dump = est.booster_.dump_model()
    per_iteration = int(dump["num_tree_per_iteration"])
    trees = []
    for i, info in enumerate(dump["tree_info"]):
        nodes = _numbered(info["tree_structure"])
        value = np.zeros((len(nodes), outputs))
        out = i % per_iteration if outputs > 1 else 0
        t = {k: [] for k in ("left", "right", "feature", "threshold", "cover", "default_left", "missing", "categories")}
        for j, node in enumerate(nodes):
            leaf = "leaf_value" in node
            value[j, out] = node.get("leaf_value", node.get("internal_value", 0.0))
            t["left"].append(-1 if leaf else node["_left"])
            t["right"].append(-1 if leaf else node["_right"])
            t["feature"].append(-2 if leaf else node["split_feature"])
            categorical = not leaf and node["decision_type"] == "=="
            t["threshold"].append(0.0 if leaf or categorical else float(node["threshold"]))
            t["cover"].append(float(node.get("leaf_count", node.get("internal_count", 0))))
            t["default_left"].append(bool(node.get("default_left", False)))
            t["missing"].append(missing[node.get("missing_type", "None")])
            t["categories"].append([float(c) for c in str(node["threshold"]).split("||")] if categorical else None)
        t["value"] = value
        trees.append(t)
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
