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
from sqlml.explain import rows
from sqlml.explain.treeshap import NAN, Forest, Tree
from sqlml.onnx import convert as onnx_convert
from tests.test_onnx_export import ids_table, mixed_data

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
def test_target_means_columns_explain_their_id(task):
    """LightGBM on ids given their target means (a column per class for 4 classes): each mean's
    contribution goes to the id, as shap's per column summed; an unseen id gets the overall mean."""
    schema, inputs, y = ids_table(task, rows=4_000, levels=600)
    X = convert.as_frame(schema, inputs)
    plan = preprocess.Plan.from_data(schema, X)
    assert list(plan.means) == ["who"]
    problem = Problem(X, y, task, "rmse" if task == REGRESSION else "log_loss", plan, len(schema.target.classes))
    model, _ = fit_pipeline(SPECS["lightgbm"], {"num_leaves": 15}, problem, X, y, Budget(60), n_estimators=40)
    explainer = explain.build(model, schema, X)
    test = {k: v[:ROWS].copy() for k, v in inputs.items()}
    test["who"][:10] = "nobody"
    Xt = convert.as_frame(schema, test)
    e = explainer.explain(test, ROWS)
    np.testing.assert_allclose(e.output(), raw_output(model, Xt, task), atol=TOLERANCE, rtol=0)
    _, enc, _ = explainer.members[0]
    assert enc.sources() == ["x"] + ["who"] * (4 if task == MULTICLASS else 1)
    want = per_feature(shap_reference(model, Xt, X, task), enc, schema)
    np.testing.assert_allclose(e.contributions, want, atol=TOLERANCE, rtol=0)
    again = explain.Explainer.from_bytes(explainer.to_bytes(), schema).explain(test, ROWS)
    np.testing.assert_allclose(again.contributions, e.contributions, atol=1e-12, rtol=0)


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


# --- the native TreeSHAP against numpy's, on every split rule ------------------------------------------


def random_tree(rng, n_columns, depth, outputs, categorical_columns, chain=None):
    """A random tree of ``depth`` (or, with ``chain``, a path testing those features one after the
    other) with every kind of split: numerical with each missing type and default side, categorical
    sets, features tested twice on a path; leaf values on one output or all."""
    nodes = []  # (feature, threshold, default_left, missing, categories)

    def grow(level, i):
        node = len(nodes)
        nodes.append(None)
        if (chain is None and level == depth) or (chain is not None and i == len(chain)):
            nodes[node] = ("leaf", rng.normal(size=outputs) * (rng.random(outputs) < (1.0 if outputs == 1 else 0.6)))
            return node
        f = int(chain[i]) if chain is not None else int(rng.integers(n_columns))
        cats = sorted(rng.choice(6, size=3, replace=False).tolist()) if f in categorical_columns else None
        spec = (f, float(rng.normal()), bool(rng.random() < 0.5), int(rng.integers(3)), cats)
        left = grow(level + 1, i + 1)
        right = grow(level + 1, i + 1) if chain is None else len(nodes)
        if chain is not None:
            nodes.append(("leaf", rng.normal(size=outputs)))
        nodes[node] = (spec, left, right)
        return node

    grow(0, 0)
    n = len(nodes)
    left, right = np.full(n, -1), np.full(n, -1)
    feature, threshold = np.full(n, -2), np.zeros(n)
    value, cover = np.zeros((n, outputs)), np.zeros(n)
    default_left, missing, categories = np.zeros(n, bool), np.full(n, NAN, np.int8), [None] * n
    for i, node in enumerate(nodes):
        if node[0] == "leaf":
            value[i] = node[1]
            cover[i] = float(rng.integers(1, 20))
            continue
        (f, t, d, m, cats), left[i], right[i] = node
        feature[i], threshold[i], default_left[i], missing[i], categories[i] = f, t, d, m, cats
    for i in reversed(range(n)):  # covers add up
        if left[i] >= 0:
            cover[i] = cover[left[i]] + cover[right[i]]
    return Tree(left, right, feature, threshold, value, cover, default_left, missing, categories)


def random_rows(rng, n, n_columns, categorical_columns):
    X = rng.normal(size=(n, n_columns))
    X[rng.random(X.shape) < 0.15] = np.nan
    X[rng.random(X.shape) < 0.1] = 0.0
    X[rng.random(X.shape) < 0.05] = 1e-40  # below LightGBM's zero threshold
    for c in categorical_columns:
        X[:, c] = rng.choice([0, 1, 2, 3, 4, 5, 7, -1, 2.5, np.nan], size=n)
    return X


@pytest.mark.parametrize("outputs", [1, 3])
def test_native_treeshap_is_numpys_on_every_split_rule(outputs):
    from sqlml.explain import native

    assert native.function() is not None  # llvmlite is pinned in the server stack
    rng = np.random.default_rng(7)
    n_columns, categorical = 80, {1, 4}
    trees = [random_tree(rng, 8, int(rng.integers(1, 7)), outputs, categorical) for _ in range(12)]
    trees.append(random_tree(rng, n_columns, 0, outputs, categorical, chain=rng.permutation(n_columns)[:70]))
    X = random_rows(rng, 300, n_columns, categorical)
    tabulated = Forest(trees, 0.5, n_columns)
    computed = Forest(trees, 0.5, n_columns, table_cells=0)  # every leaf by quadrature
    want = tabulated.shap_values(X, use_native=False)
    np.testing.assert_allclose(tabulated.shap_values(X), want, atol=1e-10, rtol=0)
    np.testing.assert_allclose(computed.shap_values(X), want, atol=1e-10, rtol=0)
    assert max(tabulated.groups) == 70  # a path longer than a 64-bit pattern


def test_native_treeshap_sums_to_the_trees_output():
    rng = np.random.default_rng(3)
    categorical = {2}
    trees = [random_tree(rng, 6, 4, 1, categorical) for _ in range(5)]
    forest = Forest(trees, 1.0, 6)
    X = random_rows(rng, 200, 6, categorical)
    go = forest.decisions(X.astype(np.float32).astype(np.float64))
    nodes = len(forest.node_feature)
    output, offset = np.zeros(len(X)), 0
    for t in trees:
        for r in range(len(X)):
            i = 0
            while t.left[i] >= 0:
                i = t.left[i] if go[r, offset + i] else t.right[i]
            output[r] += t.value[i, 0]
        offset += len(t.left)
    assert offset == nodes
    np.testing.assert_allclose(forest.shap_values(X)[:, :, 0].sum(axis=1) + forest.base[0], output, atol=1e-10)


NATIVE_IN_A_NEW_PROCESS = """
import json, sys
import numpy as np
from sqlml.explain import native
from sqlml.explain.treeshap import Forest
native.use_cache(sys.argv[1])
native.function()
llvm = "llvmlite" in sys.modules
from tests.test_explain_core import random_rows, random_tree  # imports the ML stack
rng = np.random.default_rng(5)
forest = Forest([random_tree(rng, 6, 4, 2, {2}) for _ in range(4)], 1.0, 6)
X = random_rows(rng, 50, 6, {2})
got = forest.shap_values(X)
print(json.dumps([native.cache["origin"], llvm,
                  float(np.abs(got - forest.shap_values(X, use_native=False)).max())]))
"""


def test_native_treeshap_is_kept_and_a_new_process_loads_it_without_llvm(tmp_path):
    """The first process compiles the code and keeps it; the next loads it (``sqlml.onnx.native``)
    and never imports llvmlite; both compute what numpy does."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    root = Path(__file__).resolve().parents[1]
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", NATIVE_IN_A_NEW_PROCESS, str(cache)], cwd=root,
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    assert runs[0][:2] == ["compiled", True] and runs[1][:2] == ["cache", False]
    assert runs[0][2] < 1e-10 and runs[1][2] < 1e-10
    (entry,) = cache.iterdir()
    assert entry.name.startswith("treeshap-") and entry.stat().st_mode & 0o077 == 0
    entry.write_bytes(b"not an object file")  # unreadable: compiled again, and kept again
    out = subprocess.run([sys.executable, "-c", NATIVE_IN_A_NEW_PROCESS, str(cache)], cwd=root,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)[0] == "compiled" and entry.stat().st_size > 1000


# --- explain_batch's folded rows -----------------------------------------------------------------------


def unpack(p: np.ndarray) -> np.ndarray:
    """What sqlml.explain_batch's SQL does with a packed int8: (p >> 10)::float8 * 2 ^ ((p & 1023) - 512)."""
    return (p >> 10).astype(np.float64) * np.power(2.0, ((p & 1023) - 512).astype(np.float64))


def test_packed_floats_come_back_exactly_or_not_at_all():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=1000) * 10.0 ** rng.integers(-30, 30, 1000), [0.0, -0.0, 1.0, -2.5]])
    values = np.concatenate([values, [2.0**-460, -(2.0**563) * 1.5, np.nextafter(1.0, 2.0)]])
    packed = rows.pack_float64(values)
    assert packed is not None and packed.dtype == np.int64
    assert np.array_equal(unpack(packed), values)
    for bad in (np.inf, np.nan, 1e-300, 2.0**564):
        assert rows.pack_float64(np.array([1.0, bad])) is None


def test_value_texts_by_column_kind():
    assert rows.value_texts("numeric", np.array([3.0, 0.1, np.nan, -2.0, 1e16, 2.0**53 - 1, 1.5e-7])) == [
        "3",
        "0.1",
        None,
        "-2",
        "1e+16",
        "9007199254740991",
        "1.5e-07",
    ]
    assert rows.value_texts("category", np.array(["a", None], dtype=object)) == ["a", None]
    assert rows.value_texts("date", np.array([86400.0 * 365, np.nan])) == ["1971-01-01", None]
    assert rows.value_texts("timestamp", np.array([3600.0 * 25 + 61])) == ["1970-01-02 01:01:01"]
    assert rows.value_texts("vector", np.array([[1.0, 0.5], [np.nan, np.nan]])) == ["[1.0,0.5]", None]


def test_batch_rows_fold_what_explain_rows_unfold():
    schema, inputs, X, model = fitted("linear", MULTICLASS)
    explainer = explain.build(model, schema, X)
    raw = {"x1": np.array([0.5, np.nan]), "x2": np.array([1.0, 2.0]), "flag": np.array([1.0, 0.0]),
           "city": np.array(["oslo", None], dtype=object), "built": np.array([0.0, 86400.0])}
    e = explainer.explain(convert.model_inputs(schema, raw), 2)
    head = rows.header(schema, explainer.outputs)
    folded = rows.batch_rows(schema, e, raw, ["a", "b"])
    for i, (row_id, values, packed, floats, *_) in enumerate(folded):
        assert floats is None and row_id == "ab"[i]
        one = explain.Explanation(e.contributions[i : i + 1], e.base)
        want = list(rows.explanation_rows(schema, explainer.outputs, one, {k: v[i : i + 1] for k, v in raw.items()}))
        width = len(values) + 1
        contributions = unpack(np.array(packed))
        got = [(head[4][o], ([None] + values)[o % width], c, head[5][o]) for o, c in enumerate(contributions)]
        assert got == want
    e.contributions[0, 0, 0] = np.inf  # cannot be packed: the chunk travels as floats
    assert all(p is None and len(f) == len(head[4]) for _, _, p, f, *_ in rows.batch_rows(schema, e, raw, ["a", "b"]))


def test_long_explanations_check_for_interrupts_between_slices(monkeypatch):
    """Native code does not see a cancel: the rows go through in slices, interrupt() before each
    (the server's checks a cancel through SPI), and whatever it raises stops the explanation."""
    from sqlml.explain import native

    rng = np.random.default_rng(5)
    forest = Forest([random_tree(rng, 6, 5, 1, set()) for _ in range(4)], 1.0, 6)
    X = random_rows(rng, 1000, 6, set())
    calls = []
    whole = forest.shap_values(X, interrupt=lambda: calls.append(1))
    assert len(calls) == 1  # a small forest: one slice
    monkeypatch.setattr(native, "SLICE_WORK", 1)  # a slice per block of rows
    calls.clear()
    np.testing.assert_allclose(forest.shap_values(X, interrupt=lambda: calls.append(1)), whole, atol=1e-12)
    assert len(calls) > 1

    class Cancelled(Exception):
        pass

    def cancel():
        if len(calls) > 2:
            raise Cancelled
        calls.append(1)

    calls.clear()
    with pytest.raises(Cancelled):
        forest.shap_values(X, interrupt=cancel)
