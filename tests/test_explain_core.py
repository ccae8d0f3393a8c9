"""Contributions of every model sqlml trains, checked against the ``shap`` library and the outputs.

Pure: no database. The fitted pipelines are the portfolio's own (``fit_pipeline``) on the mixed
data of the ONNX export tests (NULL numbers, NULL and unseen categories, a date). For each:
contributions per raw column agree with shap's (TreeExplainer, LinearExplainer) summed over the
encoded columns of that raw column, within 1e-4; on every row contributions + base equal the raw
output of the fitted estimator; and they survive ``to_bytes`` / ``from_bytes``.
"""

import numpy as np
import pytest

from sqlml.automl import ensemble, preprocess
from sqlml.automl.budget import Budget
from sqlml.automl.estimators import SPECS
from sqlml.automl.search import Problem, fit_pipeline
from sqlml.data import convert
from sqlml.data.schema import BINARY, MULTICLASS, REGRESSION
from sqlml.explain import model as explain
from sqlml.explain.treeshap import Forest, Tree
from sqlml.onnx import convert as onnx_convert
from tests.test_onnx_export import mixed_data

shap = pytest.importorskip("shap")

TOLERANCE = 1e-4
ROWS = 60  # forests of deep trees cost O(leaves x depth^2) per row


def boosted(est) -> bool:
    return type(est).__name__.startswith(("LGBM", "XGB", "CatBoost"))


def raw_output(pipeline, X, task):
    """The estimator's raw output (n, outputs): decision function, boosting's raw score, forest average."""
    pre, est = pipeline.named_steps["pre"], pipeline.named_steps["model"]
    T = pre.transform(X)
    if type(est).__name__.startswith("LGBM"):
        out = est.predict(T, raw_score=True)
    elif type(est).__name__.startswith("XGB"):
        out = est.predict(T.astype(np.float32), output_margin=True)
    elif type(est).__name__.startswith("CatBoost"):
        out = est.predict(T.astype(np.float32), prediction_type="RawFormulaVal")
    elif hasattr(est, "coef_"):
        out = est.decision_function(T) if task != REGRESSION else est.predict(T)
    elif task == REGRESSION:
        out = est.predict(T.astype(np.float32))
    else:
        out = est.predict_proba(T.astype(np.float32))
        out = out[:, 1] if task == BINARY else out
    return np.asarray(out, dtype=np.float64).reshape(len(X), -1)


def shap_reference(pipeline, X, background, task) -> np.ndarray:
    """shap's contributions per encoded column, (n, columns, outputs)."""
    pre, est = pipeline.named_steps["pre"], pipeline.named_steps["model"]
    T = pre.transform(X).astype(np.float64)
    if hasattr(est, "coef_"):
        data = pre.transform(background).astype(np.float64)  # every row: shap's default masker samples 100
        values = shap.LinearExplainer(est, shap.maskers.Independent(data, max_samples=len(data))).shap_values(T)
    elif type(est).__name__.startswith("CatBoost"):
        values = shap.TreeExplainer(catboost_as_shap_trees(est, task)).shap_values(T)
    else:
        values = shap.TreeExplainer(est).shap_values(
            T.astype(np.float32) if not type(est).__name__.startswith("LGBM") else T
        )
    values = np.asarray(values)
    if values.ndim == 2:
        values = values[:, :, None]
    if not hasattr(est, "coef_") and not boosted(est) and task == BINARY:
        values = values[:, :, 1:2]  # forests: the second class's probability
    return values


def catboost_as_shap_trees(est, task) -> dict:
    """CatBoost's trees as read for sqlml, in shap's own tree format: shap's TreeSHAP is the reference.
    (CatBoost's own ShapValues treat its symmetric trees differently: up to 0.2 apart from TreeSHAP
    on the equivalent full trees, though both sum to the raw score.) The reading itself is checked by
    the sum to CatBoost's raw output."""
    from sqlml.automl.learners.catboost import explain_trees

    trees, scale = explain_trees(est, 4 if task == MULTICLASS else 1)
    return {"trees": [{"children_left": np.array(t["left"]), "children_right": np.array(t["right"]),
                       "children_default": np.where(t["default_left"], t["left"], t["right"]),
                       "features": np.maximum(np.array(t["feature"]), -2), "thresholds": np.array(t["threshold"]),
                       "values": np.asarray(t["value"]) * scale, "node_sample_weight": np.array(t["cover"])}
                      for t in trees]}


def per_feature(values, encoding: explain.Encoding, schema) -> np.ndarray:
    of_input = {i: k for k, f in enumerate(schema.features) for i in f.inputs}
    out = np.zeros((values.shape[0], len(schema.features), values.shape[2]))
    for j, source in enumerate(encoding.sources()):
        out[:, of_input[source]] += values[:, j]
    return out


def fitted(algorithm, task, seed=0):
    schema, inputs, y = mixed_data(task, seed)
    X = convert.as_frame(schema, inputs)
    plan = preprocess.Plan.from_data(schema, X)
    problem = Problem(X, y, task, "rmse" if task == REGRESSION else "log_loss", plan, len(schema.target.classes))
    spec = SPECS[algorithm]
    params = {**spec.portfolio[0], **({"n_estimators": 12} if algorithm in ("random_forest", "extra_trees") else {})}
    model, _ = fit_pipeline(spec, params, problem, X, y, Budget(60), n_estimators=60 if spec.early_stopping else None)
    return schema, inputs, X, model


def unseen(inputs):
    test = {k: v[:ROWS].copy() for k, v in inputs.items()}
    test["city"][:20] = "reykjavik"
    return test


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
@pytest.mark.parametrize("algorithm", sorted(SPECS))
def test_contributions_match_shap_and_sum_to_the_raw_output(algorithm, task):
    schema, inputs, X, model = fitted(algorithm, task)
    explainer = explain.build(model, schema, X)
    test = unseen(inputs)
    Xt = convert.as_frame(schema, test)
    e = explainer.explain(test, ROWS)
    assert e.contributions.shape == (
        ROWS,
        len(schema.features),
        len(schema.target.classes) if task == MULTICLASS else 1,
    )
    # XGBoost sums its trees in float32: 1.3e-4 apart on values near 700
    rtol = 1e-6 if algorithm == "xgboost" else 0
    np.testing.assert_allclose(e.output(), raw_output(model, Xt, task), atol=TOLERANCE, rtol=rtol)
    _, enc, _ = explainer.members[0]
    want = per_feature(shap_reference(model, Xt, X, task), enc, schema)
    np.testing.assert_allclose(e.contributions, want, atol=TOLERANCE, rtol=0)
    again = explain.Explainer.from_bytes(explainer.to_bytes(), schema).explain(test, ROWS)
    np.testing.assert_allclose(again.contributions, e.contributions, atol=1e-12, rtol=0)
    np.testing.assert_allclose(again.base, e.base, atol=1e-12, rtol=0)


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
def test_contributions_explain_what_the_onnx_model_predicts(task):
    """Single models: the link of the raw output is the prediction sqlml serves (ONNX Runtime)."""
    schema, inputs, X, model = fitted("lightgbm", task)
    test = unseen(inputs)
    raw = explain.build(model, schema, X).explain(test, ROWS).output()
    got = onnx_convert.run(
        onnx_convert.session(onnx_convert.to_onnx(model, schema)), convert.as_feeds(schema, test), task
    )
    if task == BINARY:
        np.testing.assert_allclose(1 / (1 + np.exp(-raw[:, 0])), got[:, 1], atol=1e-5)
    elif task == MULTICLASS:
        soft = np.exp(raw - raw.max(axis=1, keepdims=True))
        np.testing.assert_allclose(soft / soft.sum(axis=1, keepdims=True), got, atol=1e-5)
    else:
        np.testing.assert_allclose(raw[:, 0], got, rtol=1e-5)


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
def test_ensemble_is_the_weighted_average_of_its_members(task):
    members = [fitted(a, task, seed=1) for a in ("lightgbm", "linear", "extra_trees")]
    schema, inputs, X, _ = members[0]
    weights = [3.0, 1.0, 2.0]
    voting = ensemble.voting([(m[3], w) for m, w in zip(members, weights)], task)
    explainer = explain.build(voting, schema, X)
    test = unseen(inputs)
    Xt = convert.as_frame(schema, test)
    e = explainer.explain(test, ROWS)
    w = np.asarray(weights) / sum(weights)
    want = sum(wi * raw_output(m[3], Xt, task) for wi, m in zip(w, members))
    np.testing.assert_allclose(e.output(), want, atol=TOLERANCE, rtol=0)
    parts = [explain.build(m[3], schema, X).explain(test, ROWS) for m in members]
    np.testing.assert_allclose(e.contributions, sum(wi * p.contributions for wi, p in zip(w, parts)), atol=1e-9)
    again = explain.Explainer.from_bytes(explainer.to_bytes(), schema).explain(test, ROWS)
    np.testing.assert_allclose(again.contributions, e.contributions, atol=1e-12)


def test_importance_is_mean_absolute_contribution():
    schema, inputs, X, model = fitted("lightgbm", REGRESSION)
    explainer = explain.build(model, schema, X)
    imp = explainer.importance(inputs, len(X))
    e = explainer.explain(inputs, len(X))
    assert [d["feature"] for d in imp][0] == "x1"  # 3 * x1 * 100 dominates the target
    for d in imp:
        k = explainer.features.index(d["feature"])
        assert d["importance"] == pytest.approx(np.abs(e.contributions[:, k, 0]).mean())


# --- TreeSHAP on hand-made trees: a table of cases with known Shapley values ---------------------------


def stump(feature, threshold, left, right, cover=(4.0, 1.0, 3.0)):
    return Tree(
        np.array([1, -1, -1]),
        np.array([2, -1, -1]),
        np.array([feature, -2, -2]),
        np.array([threshold, -2.0, -2.0]),
        np.array([[0.0], [left], [right]]),
        np.array(cover),
    )


@pytest.mark.parametrize(
    "x, want",
    [
        ([0.0, 0.0], [(10 - 7.75), 0.0]),  # goes left: 10 - E = 10 - (10*1 + 7*3)/4
        ([1.0, 5.0], [(7 - 7.75), 0.0]),  # goes right
    ],
)
def test_stump_contribution_is_leaf_minus_expectation(x, want):
    f = Forest([stump(0, 0.5, 10.0, 7.0)], 1.0, 2)
    assert f.base[0] == pytest.approx(7.75)
    np.testing.assert_allclose(f.shap_values(np.array([x]))[0, :, 0], want)


def test_two_features_share_an_interaction_equally():
    """f = 1 iff x0 > 0 and x1 > 0, uniform covers (E f = 1/4): at (1, 1) each feature gets 3/8; at
    (-1, 1) x0 takes -3/8 and x1 still adds 1/8 (knowing x1 > 0 alone raises E f to 1/2)."""
    t = Tree(
        left=np.array([1, -1, 3, -1, -1]),
        right=np.array([2, -1, 4, -1, -1]),
        feature=np.array([0, -2, 1, -2, -2]),
        threshold=np.array([0.0, -2, 0.0, -2, -2]),
        value=np.array([[0.0], [0.0], [0.0], [0.0], [1.0]]),
        cover=np.array([4.0, 2.0, 2.0, 1.0, 1.0]),
    )
    f = Forest([t], 1.0, 2)
    np.testing.assert_allclose(f.shap_values(np.array([[1.0, 1.0]]))[0, :, 0], [0.375, 0.375])
    np.testing.assert_allclose(f.shap_values(np.array([[-1.0, 1.0]]))[0, :, 0], [-0.375, 0.125])
