"""LightGBM's model text read as arrays (``sqlml.automl.learners.lightgbm_trees``): the same trees
as LightGBM's JSON dump, and an ONNX export that predicts what LightGBM predicts, NaN and unseen
categories included. Pure: no database."""

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from sqlml.automl.learners import lightgbm as learner
from sqlml.automl.learners import lightgbm_trees

N = 3000


def data(seed=0, nan_in_training=True):
    """Three numbers (x1 with NaN in training or not), a categorical code of 40 levels."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.normal(size=N), rng.normal(size=N), rng.integers(0, 40, N).astype(float), rng.random(N)]
    if nan_in_training:
        X[rng.random(N) < 0.1, 0] = np.nan
    signal = np.nan_to_num(X[:, 0]) + X[:, 1] + np.isin(X[:, 2], [0, 3, 5, 17, 22]) * 1.5 + (X[:, 3] > 0.7)
    return X, signal + rng.normal(scale=0.3, size=N)


def scoring_rows(X):
    """Rows LightGBM never saw: NaN in every column (x1 NaN, where training had none, reads as 0),
    unseen and negative category codes, category 0 (in the sets that go left)."""
    T = X[:400].copy()
    T[:50, 0] = np.nan
    T[50:100, 1] = np.nan
    T[100:150, 2] = np.nan
    T[150:200, 2] = 77.0
    T[200:250, 2] = -1.0
    T[250:300, 2] = 0.0
    T[300:350, 0] = 0.0
    return T


def onnx_predict(est, T):
    learner.register_onnx()
    options = {id(est): {"zipmap": False}} if hasattr(est, "classes_") else {}
    onx = convert_sklearn(est, initial_types=[("X", FloatTensorType([None, T.shape[1]]))], options=options,
                          target_opset={"": 17, "ai.onnx.ml": 3})
    out = ort.InferenceSession(onx.SerializeToString()).run(None, {"X": T.astype(np.float32)})
    return onx, out


def y_for(task, y):
    if task == "binary":
        return (y > np.median(y)).astype(int)
    if task == "multiclass":
        return np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75]))
    if task == "poisson":
        return np.random.default_rng(1).poisson(np.exp(y / 3))
    return y


# (case, estimator keyword arguments, task, NaN in training)
CASES = [
    ("regression", {}, "regression", True),
    ("regression, x1 never NaN in training (missing type None)", {}, "regression", False),
    ("binary", {}, "binary", True),
    ("binary, sigmoid 0.5", {"sigmoid": 0.5}, "binary", True),
    ("multiclass", {}, "multiclass", True),
    ("multiclass, x1 never NaN in training", {}, "multiclass", False),
    ("poisson: the exp of the raw score", {"objective": "poisson"}, "poisson", True),
    ("single-leaf trees", {"min_child_samples": 5000}, "regression", True),
    ("many categories a split", {"max_cat_threshold": 64, "cat_smooth": 1, "min_data_per_group": 5}, "binary", True),
]


@pytest.mark.parametrize("case, kwargs, task, nan_in_training", CASES, ids=[c[0] for c in CASES])
def test_onnx_predicts_what_lightgbm_predicts(case, kwargs, task, nan_in_training):
    X, y = data(nan_in_training=nan_in_training)
    cls = lgb.LGBMClassifier if task in ("binary", "multiclass") else lgb.LGBMRegressor
    est = cls(n_estimators=30, num_leaves=15, verbose=-1, n_jobs=1, **kwargs)
    est.fit(X, y_for(task, y), categorical_feature=[2])
    T = scoring_rows(X)
    _, out = onnx_predict(est, T)
    if cls is lgb.LGBMClassifier:
        np.testing.assert_allclose(out[1], est.predict_proba(T), atol=1e-5)
        np.testing.assert_array_equal(out[0], est.predict(T))
    else:
        want = est.predict(T)
        np.testing.assert_allclose(out[0].ravel(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_the_arrays_are_the_trees_of_lightgbms_json_dump():
    X, y = data()
    est = lgb.LGBMClassifier(n_estimators=8, num_leaves=15, verbose=-1, n_jobs=1, max_cat_threshold=64,
                             cat_smooth=1, min_data_per_group=5)
    est.fit(X, y_for("multiclass", y), categorical_feature=[2])
    model = lightgbm_trees.read(est.booster_)
    dump = est.booster_.dump_model()
    assert model.trees_per_round == 4 and model.objective_name == "multiclass"
    assert len(model.trees) == len(dump["tree_info"])
    categorical_splits = 0
    for tree, info in zip(model.trees, dump["tree_info"]):
        splits, leaves = [], []
        stack = [info["tree_structure"]]
        while stack:
            node = stack.pop()
            (leaves if "leaf_index" in node else splits).append(node)
            stack.extend(node[k] for k in ("left_child", "right_child") if k in node)
        splits.sort(key=lambda n: n["split_index"])
        leaves.sort(key=lambda n: n["leaf_index"])
        np.testing.assert_array_equal(tree.leaf_value, [n["leaf_value"] for n in leaves])  # exactly
        np.testing.assert_array_equal(tree.leaf_count, [n["leaf_count"] for n in leaves])
        np.testing.assert_array_equal(tree.feature, [n["split_feature"] for n in splits])
        np.testing.assert_array_equal(tree.count, [n["internal_count"] for n in splits])
        np.testing.assert_array_equal(tree.default_left(), [n["default_left"] for n in splits])
        for i, node in enumerate(splits):
            if node["decision_type"] == "==":
                categorical_splits += 1
                assert tree.categories[i].tolist() == sorted(int(c) for c in node["threshold"].split("||"))
            else:
                assert tree.threshold[i] == node["threshold"]
                assert ("None", "Zero", "NaN")[tree.missing()[i]] == node["missing_type"]
    assert categorical_splits > 0


def test_a_split_on_k_categories_is_a_chain_of_k_nodes_counted_as_the_graph_holds_them():
    X, y = data()
    est = lgb.LGBMRegressor(n_estimators=5, num_leaves=31, verbose=-1, n_jobs=1, max_cat_threshold=64, cat_smooth=1,
                            min_data_per_group=5).fit(X, y, categorical_feature=[2])
    onx, _ = onnx_predict(est, X[:10])
    node = next(n for n in onx.graph.node if n.op_type == "TreeEnsembleRegressor")
    attrs = {a.name: a for a in node.attribute}
    modes = [m.decode() for m in attrs["nodes_modes"].strings]
    model = lightgbm_trees.read(est.booster_)
    chains = sum(len(c) for t in model.trees for c in t.categories.values())
    assert modes.count("BRANCH_EQ") == chains > len([c for t in model.trees for c in t.categories])
    assert len(modes) == sum(t.onnx_nodes() for t in model.trees)
    assert learner.onnx_nodes_per_tree(est) == len(modes) / 5


@pytest.mark.parametrize("kwargs, refused", [
    ({"boosting_type": "rf", "subsample": 0.5, "subsample_freq": 1}, "random forests"),
    ({"linear_tree": True}, "linear trees"),
    ({"objective": "multiclassova", "num_class": 4}, "objective"),
])
def test_models_sqlml_does_not_train_are_refused_by_name(kwargs, refused):
    X, y = data()
    multi = kwargs.get("objective") == "multiclassova"
    cls = lgb.LGBMClassifier if multi else lgb.LGBMRegressor
    target = y_for("multiclass", y) if multi else y
    est = cls(n_estimators=3, verbose=-1, n_jobs=1, **kwargs).fit(np.nan_to_num(X), target)
    with pytest.raises(ValueError, match=refused):
        lightgbm_trees.ensemble_attributes(lightgbm_trees.read(est.booster_))
