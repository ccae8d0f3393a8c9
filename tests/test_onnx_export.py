"""Every algorithm's ONNX export matches its fitted pipeline, for every task, on mixed data.

Pure: no database. The data has NULL numbers, NULL and unseen text categories, integer-coded
columns whose split thresholds fall between float32 values, and a date; the checks are the
registration gate's (``sqlml.onnx.parity``), applied to every estimator in the portfolio and to
a voting ensemble of them.
"""

import numpy as np
import pytest

from sqlml.automl import ensemble, preprocess
from sqlml.automl.budget import Budget
from sqlml.automl.estimators import SPECS
from sqlml.automl.search import Problem, fit_pipeline, predict
from sqlml.automl.spec import NATIVE_CATEGORIES
from sqlml.data import convert
from sqlml.data.schema import BINARY, MULTICLASS, REGRESSION, Feature, FeatureSchema, Target
from sqlml.onnx import convert as onnx_convert
from sqlml.onnx import parity

N = 1500


def mixed_data(task, seed=0):
    rng = np.random.default_rng(seed)
    x1 = np.round(rng.random(N) * 100) / 100  # two decimals: thresholds land next to float32 values
    x2 = rng.normal(size=N)
    x2[rng.random(N) < 0.1] = np.nan
    flag = (rng.random(N) < 0.3).astype(float)
    city = np.array(rng.choice(["oslo", "bergen", "tromso", "bodo", None], N), dtype=object)
    built = (rng.integers(0, 20000, N) * 86400).astype(float)
    signal = 3 * x1 + np.nan_to_num(x2) + 2 * (city == "oslo") + flag
    if task == REGRESSION:
        y = signal * 100 + rng.normal(size=N)
        classes = ()
    elif task == BINARY:
        y = (signal + rng.normal(scale=0.5, size=N) > 2.5).astype(np.int64)
        classes = (0, 1)
    else:
        y = np.digitize(signal + rng.normal(scale=0.5, size=N), [1.5, 2.5, 3.5]).astype(np.int64)
        classes = (0, 1, 2, 3)
    features = (Feature("x1", "numeric", "float8"), Feature("x2", "numeric", "float8"),
                Feature("flag", "boolean", "bool"), Feature("city", "category", "text"),
                Feature("built", "date", "date"))
    schema = FeatureSchema(features, Target("y", "float8" if task == REGRESSION else "int4", task, classes))
    columns = {"x1": x1, "x2": x2, "flag": flag, "city": city, "built": built}
    return schema, convert.model_inputs(schema, columns), y


def check(model, schema, inputs, X, task, n_classes):
    test = {k: v.copy() for k, v in inputs.items()}
    for name in ("city", "who"):
        if name in test:
            test[name][:20] = "reykjavik"  # unseen at training
    blob = onnx_convert.to_onnx(model, schema)
    got = onnx_convert.run(onnx_convert.session(blob), convert.as_feeds(schema, test), task)
    expected = predict(model, convert.as_frame(schema, test), task, n_classes)
    result = parity.compare(task, expected, got)
    assert result.ok, result.reason


# XGBoost and CatBoost sum their trees in float32 (XGBoost natively, CatBoost in its ONNX export): on
# this target, spread over -200..750, rows near zero differ by 2e-4..6e-4 absolute, which the gate
# accepts because regression errors are measured against the target's spread (sqlml/onnx/parity.py).
FLOAT32_SUMS = {"xgboost", "catboost"}


@pytest.mark.parametrize("algorithm, task", [
    (a, t) for a in sorted(SPECS) for t in (BINARY, MULTICLASS, REGRESSION)])
def test_every_algorithm_exports_with_parity(algorithm, task):
    spec = SPECS[algorithm]
    schema, inputs, y = mixed_data(task)
    X = convert.as_frame(schema, inputs)
    plan = preprocess.Plan.from_data(schema, X)
    n_classes = len(schema.target.classes)
    problem = Problem(X, y, task, "rmse" if task == REGRESSION else "log_loss", plan, n_classes)
    for params in spec.portfolio:  # forests kept small: tree count does not change how they convert
        params = {**params, "n_estimators": 40} if "n_estimators" in params else params
        model, _ = fit_pipeline(spec, params, problem, X, y, Budget(60),
                                n_estimators=150 if spec.early_stopping else None)
        check(model, schema, inputs, X, task, n_classes)


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
def test_voting_ensemble_of_all_families_exports_with_parity(task):
    schema, inputs, y = mixed_data(task, seed=1)
    X = convert.as_frame(schema, inputs)
    plan = preprocess.Plan.from_data(schema, X)
    n_classes = len(schema.target.classes)
    problem = Problem(X, y, task, "rmse", plan, n_classes)
    members = []
    for i, name in enumerate(sorted(SPECS)):
        spec = SPECS[name]
        params = {**spec.portfolio[0], "n_estimators": 40} if "n_estimators" in spec.portfolio[0] else spec.portfolio[0]
        model, _ = fit_pipeline(spec, params, problem, X, y, Budget(60),
                                n_estimators=100 if spec.early_stopping else None)
        members.append((model, float(i + 1)))
    check(ensemble.voting(members, task), schema, inputs, X, task, n_classes)


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
@pytest.mark.parametrize("algorithm", sorted(FLOAT32_SUMS))
def test_xgboost_and_catboost_match_their_native_models(algorithm, task):
    """As the search fits them (early stopping on a validation part, the model cut to its best round)
    and as the refit does (a fixed number of rounds), on a target of unit scale."""
    spec = SPECS[algorithm]
    schema, inputs, y = mixed_data(task, seed=2)
    y = y / 100 if task == REGRESSION else y
    X = convert.as_frame(schema, inputs)
    plan = preprocess.Plan.from_data(schema, X)
    n_classes = len(schema.target.classes)
    problem = Problem(X, y, task, "rmse" if task == REGRESSION else "log_loss", plan, n_classes)
    fit, valid = np.arange(1200), np.arange(1200, N)
    for params in spec.portfolio:
        stopped, rounds = fit_pipeline(spec, params, problem, X.iloc[fit], y[fit], Budget(60),
                                       valid=(X.iloc[valid], y[valid]))
        assert 0 < rounds <= 1000
        check(stopped, schema, inputs, X, task, n_classes)
        refit, used = fit_pipeline(spec, params, problem, X, y, Budget(60), n_estimators=rounds + 7)
        assert used == rounds + 7
        check(refit, schema, inputs, X, task, n_classes)


def test_lightgbm_thresholds_are_rounded_down_to_float32():
    from sqlml.automl.learners.lightgbm_trees import float32_below

    cases = [  # (float64 threshold, the float32 threshold that splits float32 inputs the same way)
        (0.8499999940395356, np.float32(0.84999996)),  # float32(t) rounds up onto 0.85f > t: step down
        (0.8550000190734864, np.float32(0.855)),  # float32(t) <= t: kept
        (1.0000000180025095e-35, np.float32(1e-35)),
        (1e300, np.finfo(np.float32).max),
        (-1e300, np.float32(-np.inf)),  # no float32 but -inf is <= t
    ]
    got = float32_below(np.array([t for t, _ in cases]))
    assert got.dtype == np.float32
    for (t, expected), f in zip(cases, got):
        assert f == expected
        assert float(f) <= t


@pytest.mark.parametrize("task, expected, actual, ok", [
    # probabilities: 1e-4 absolute
    (BINARY, [[0.2, 0.8]], [[0.2, 0.8 + 5e-5]], True),
    (BINARY, [[0.2, 0.8]], [[0.2 - 2e-4, 0.8 + 2e-4]], False),
    # values: relative to the larger of |value| and the target's spread
    (REGRESSION, [1000.0, 2000.0], [1000.05, 2000.1], True),
    (REGRESSION, [1000.0, 2000.0], [1000.5, 2000.0], False),
    (REGRESSION, [0.001, 300.0, -200.0, 750.0], [0.0015, 300.0, -200.0, 750.0], True),  # float32 sums
    (REGRESSION, [0.001, 300.0, -200.0, 750.0], [0.5, 300.0, -200.0, 750.0], False),  # a real error
    (REGRESSION, [0.1, 0.2], [0.1003, 0.2], False),  # unit scale: the floor of 1 holds
    (REGRESSION, [1.0, float("nan")], [1.0, 1.0], False),  # NaN where the pipeline had none
])
def test_parity_gate_cases(task, expected, actual, ok):
    assert parity.compare(task, np.array(expected), np.array(actual)).ok is ok


@pytest.mark.parametrize("n, checked", [(0, 0), (1500, 1500), (parity.MAX_ROWS, parity.MAX_ROWS),
                                        (50_000, parity.MAX_ROWS)])
def test_parity_checks_every_holdout_row_up_to_a_seeded_sample(n, checked):
    rows = parity.rows(n)
    assert len(rows) == len(set(rows.tolist())) == checked
    assert (np.diff(rows) > 0).all() and (rows < n).all()
    assert np.array_equal(rows, parity.rows(n))  # the same rows on every call


def ids_table(task, rows=30_000, levels=3_000, seed=3):
    """``who``: ids of ``levels`` levels, each with its own effect on the target; ``x``: a number."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, levels, rows)
    signal = rng.normal(size=levels)[ids] * 3 + rng.normal(size=rows)
    if task == REGRESSION:
        y, classes = signal, ()
    else:
        k = 2 if task == BINARY else 4
        y, classes = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, k + 1)[1:-1])), tuple(range(k))
    features = (Feature("x", "numeric", "float8"), Feature("who", "category", "text"))
    schema = FeatureSchema(features, Target("y", "float8" if task == REGRESSION else "int4", task, classes))
    inputs = convert.model_inputs(schema, {"x": rng.normal(size=rows),
                                           "who": np.array([f"id{i}" for i in ids], dtype=object)})
    return schema, inputs, y


@pytest.mark.parametrize("task", [BINARY, MULTICLASS, REGRESSION])
def test_ids_of_thousands_of_levels_get_target_means_that_export_with_parity(task):
    # more than 64 ids: the native-categories encoding gives ``who`` its target means (a column per
    # class for 4 classes), every id seen twice kept; the ONNX graph looks each id up as the pipeline does
    schema, inputs, y = ids_table(task, rows=6_000, levels=800)
    X = convert.as_frame(schema, inputs)
    plan = preprocess.Plan.from_data(schema, X)
    width = 4 if task == MULTICLASS else 1
    assert list(plan.means) == ["who"] and plan.means_width == width and plan.width(NATIVE_CATEGORIES) == 1 + width
    n_classes = len(schema.target.classes)
    problem = Problem(X, y, task, "rmse" if task == REGRESSION else "log_loss", plan, n_classes)
    model, _ = fit_pipeline(SPECS["lightgbm"], {"num_leaves": 31}, problem, X, y, Budget(60), n_estimators=60)
    means = model.named_steps["pre"].named_transformers_["means_0"]
    assert len(means.columns()) == width and len(means.columns()[0][1]) > 790  # every id seen
    check(model, schema, inputs, X, task, n_classes)
    for algorithm in ("linear", "random_forest"):  # one-hot encodings: the 64 most frequent, as before
        assert len(plan.categories["who"]) == preprocess.MAX_CATEGORIES
        model, _ = fit_pipeline(SPECS[algorithm], {**SPECS[algorithm].portfolio[0], "n_estimators": 20}, problem,
                                X, y, Budget(60))
        check(model, schema, inputs, X, task, n_classes)


def test_lightgbm_on_ids_of_thousands_of_levels_exports_with_parity():
    # every id kept as an ordinal code (a plan made by hand: the search gives such ids their target
    # means): LightGBM splits on sets of up to 32 ids, which ONNX writes as chains of BRANCH_EQ nodes;
    # on deep trees the chains run to thousands of nodes (onnxmltools' converter, recursive, needed
    # Python's limit raised). A model imported or trained elsewhere can hold them.
    schema, inputs, y = ids_table(REGRESSION)
    X = convert.as_frame(schema, inputs)
    plan = preprocess.Plan(("x",), ("who",), {"who": sorted(set(X["who"]))})
    problem = Problem(X, y, REGRESSION, "rmse", plan, 0)
    params = {"learning_rate": 0.3, "num_leaves": 1024, "min_child_samples": 2}  # chains 1,500 nodes deep
    model, _ = fit_pipeline(SPECS["lightgbm"], params, problem, X, y, Budget(120), n_estimators=10)
    check(model, schema, inputs, X, REGRESSION, 0)
    # the search prices the export by these nodes: counted from the model, as the graph holds them
    import onnx

    graph = onnx.load_from_string(onnx_convert.to_onnx(model, schema)).graph
    trees = next(n for n in graph.node if n.op_type == "TreeEnsembleRegressor")
    ids = next(a.ints for a in trees.attribute if a.name == "nodes_treeids")
    counted = SPECS["lightgbm"].onnx_nodes_per_tree(model.named_steps["model"])
    assert counted == pytest.approx(len(ids) / 10)
    assert counted > 2 * 1024 - 1  # more than leaves alone make: the chains
