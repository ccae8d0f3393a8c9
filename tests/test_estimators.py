"""The estimator seam, without a database: every spec is complete and pinned, encodings do what
they say, a new estimator plugs in with one spec, and the search names no library."""

import ast
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib

from sqlml.automl import estimators, preprocess, search
from sqlml.automl.budget import Budget
from sqlml.automl.estimators import DEFAULT_ALGORITHMS, SPECS, add_learner
from sqlml.automl.spec import (
    BOOSTING,
    LINEAR,
    NATIVE_CATEGORIES,
    NATIVE_MISSING,
    ONE_HOT,
    SCALED,
    TREES,
    EstimatorSpec,
    Hyper,
)
from sqlml.data.schema import CATEGORY, NUMERIC, Feature, FeatureSchema, Target
from sqlml.data.task import task_of

ROOT = Path(__file__).resolve().parent.parent


def _server_pins() -> set[str]:
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
    return {re.split(r"[=<>\[ ]", p)[0].lower() for p in pins}


@pytest.mark.parametrize("name", list(SPECS))
def test_every_spec_is_complete_and_its_library_pinned(name):
    spec = SPECS[name]
    assert spec.family in (LINEAR, TREES, BOOSTING)
    assert spec.encoding in (SCALED, ONE_HOT, NATIVE_CATEGORIES, NATIVE_MISSING)
    assert spec.portfolio and spec.space and spec.cost > 0
    assert spec.tasks <= {"binary", "multiclass", "regression"}
    distributions = {d.lower() for d in metadata.packages_distributions()[spec.library]}
    assert distributions & _server_pins(), f"{spec.library} ({distributions}) is not pinned in the server extras"


def test_the_default_portfolio_is_registered():
    assert set(DEFAULT_ALGORITHMS) <= set(SPECS)


def test_the_search_names_no_library():
    tree = ast.parse(Path(search.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
    # scikit-learn is the frame every estimator fits in (Pipeline), not one estimator's library
    libraries = ({s.library for s in SPECS.values()} - {"sklearn"}) | {"xgboost", "catboost", "lightgbm"}
    assert not imported & libraries
    source = Path(search.__file__).read_text().lower()
    assert not [lib for lib in ("lightgbm", "xgboost", "catboost") if lib in source]


def test_the_search_names_no_estimator_and_no_family_for_its_refit():
    source = Path(search.__file__).read_text()
    assert not [name for name in SPECS if f'"{name}"' in source]
    assert "LINEAR" not in source  # a bounded refit is the spec's attribute (interruptible_refit)
    assert [name for name, spec in SPECS.items() if spec.interruptible_refit] == ["linear"]


FRAME = pd.DataFrame({"a": np.array([1.0, np.nan, 3.0, 4.0, 5.0], dtype=np.float32), "c": ["x", "y", "x", "y", "z"]})
SCHEMA = FeatureSchema((Feature("a", NUMERIC, "float8"), Feature("c", CATEGORY, "text")),
                       Target("y", "float8", "regression"))


@pytest.mark.parametrize("encoding, width, nan_kept, scaled", [
    (SCALED, 1 + 2, False, True),  # "z" occurs once: not a kept category
    (ONE_HOT, 1 + 2, False, False),
    (NATIVE_CATEGORIES, 1 + 1, True, False),  # one ordinal column
    (NATIVE_MISSING, 1 + 2, True, False),
])
def test_encodings(encoding, width, nan_kept, scaled):
    plan = preprocess.Plan.from_data(SCHEMA, FRAME)
    out = preprocess.build(plan, encoding).fit_transform(FRAME)
    assert out.shape == (5, width)
    assert np.isnan(out[1, 0]) == nan_kept
    assert (abs(float(np.nanmean(out[:, 0]))) < 1e-6) == scaled
    if encoding == NATIVE_CATEGORIES:
        assert np.isnan(out[4, 1]) and plan.categorical_indices() == [1]  # an unkept category is unknown


def _problem(task: str, n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n).astype(np.float32), "b": rng.normal(size=n).astype(np.float32)})
    y = (X["a"] > 0).astype(int).to_numpy() if task == "binary" else X["a"].to_numpy(np.float64) * 3
    schema = FeatureSchema((Feature("a", NUMERIC, "float4"), Feature("b", NUMERIC, "float4")),
                           Target("y", "float8", task, (0, 1) if task == "binary" else ()))
    return search.Problem(X, y, task, "roc_auc" if task == "binary" else "rmse",
                          preprocess.Plan.from_data(schema, X), n_classes=2 if task == "binary" else 0)


def _nearest(params, task, threads, seed):
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    cls = KNeighborsClassifier if task_of(task).classification else KNeighborsRegressor
    return cls(n_neighbors=int(params["k"]))


@pytest.fixture
def nearest():
    """A new estimator, as a user of the seam would add one: a spec and one call."""
    spec = EstimatorSpec(name="nearest", family=LINEAR, encoding=SCALED, build=_nearest, library="sklearn",
                         space=(Hyper("k", 1, 30, log=True, integer=True),), portfolio=({"k": 5}, {"k": 15}))
    add_learner(spec)
    yield spec
    del estimators.SPECS["nearest"]


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_a_new_estimator_is_one_spec_and_one_call(nearest, task):
    problem = _problem(task)
    s = search.Search(problem, [nearest], Budget(4), use_ensemble=False, reserve_seconds=0.0)
    s.run()
    result = s.finish()
    assert result.algorithm == "nearest" and {t.algorithm for t in s.trials} == {"nearest"}
    assert {t.origin for t in s.trials} >= {"portfolio"} and len(s.trials) >= 2
    assert search.predict(result.model, problem.X, problem.task, problem.n_classes).shape[0] == len(problem.y)


def test_a_name_is_registered_once(nearest):
    with pytest.raises(ValueError, match="registered twice"):
        add_learner(nearest)


@pytest.mark.parametrize("name, task, kept", [
    ("linear", "binary", {"C"}),
    ("linear", "regression", {"alpha"}),
    ("lightgbm", "regression", {"C", "alpha"}),  # only linear models split their parameters by task
])
def test_params_that_apply_to_the_task(name, task, kept):
    assert set(SPECS[name].params_for({"C": 1.0, "alpha": 2.0}, task_of(task))) == kept


@pytest.mark.parametrize("name, params, rows, task, leaves", [
    ("lightgbm", {"num_leaves": 63}, 1000, "binary", 63),
    ("random_forest", {"min_samples_leaf": 4}, 1000, "regression", 200),
    ("extra_trees", {"min_samples_leaf": 1}, 1_000_000, "binary", 1024),  # the forests' leaf cap
    ("linear", {}, 1000, "binary", 1),
])
def test_leaves_per_tree_for_cost_estimates(name, params, rows, task, leaves):
    assert SPECS[name].leaves(params, rows, task_of(task)) == pytest.approx(leaves)
