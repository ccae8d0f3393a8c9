"""The task seam (sqlml.data.task), without a database: metrics, splits and target checks per task."""

import numpy as np
import pytest

from sqlml.data.task import FORECAST, SHUFFLED, STRATIFIED, TASKS, TIME_ORDERED, check_target_type, task_of
from sqlml.errors import SqlmlError


@pytest.mark.parametrize("name, classification, default, outputs, split", [
    ("binary", True, "roc_auc", ("label", "probabilities"), STRATIFIED),
    ("multiclass", True, "log_loss", ("label", "probabilities"), STRATIFIED),
    ("regression", False, "rmse", ("variable",), SHUFFLED),
    ("forecast", False, "mase", ("variable",), TIME_ORDERED),
])
def test_each_task_says_what_judges_it_and_what_its_models_output(name, classification, default, outputs, split):
    task = task_of(name)
    assert (task.name, task.classification, task.default_metric, task.outputs, task.split) == \
        (name, classification, default, outputs, split)
    assert task_of(task) is task and str(task) == name


@pytest.mark.parametrize("task, metric, expected", [
    ("binary", None, "roc_auc"),
    ("binary", " Accuracy ", "accuracy"),
    ("multiclass", "f1", "f1"),
    ("regression", "R2", "r2"),
    ("forecast", None, "mase"),
    ("regression", "accuracy", 'unknown metric "accuracy" for regression'),
    ("binary", "rmse", 'unknown metric "rmse" for binary classification'),
    ("forecast", "rmse", 'unknown metric "rmse" for forecasting'),
])
def test_metric_is_checked_against_the_task(task, metric, expected):
    if expected.startswith("unknown"):
        with pytest.raises(SqlmlError, match=expected) as e:
            task_of(task).check_metric(metric)
        assert e.value.sqlstate == "22023" and "use one of" in e.value.hint
    else:
        assert task_of(task).check_metric(metric) == expected


def test_an_unknown_task_names_the_known_ones():
    with pytest.raises(SqlmlError, match='unknown task "clustering"') as e:
        task_of("clustering")
    assert e.value.sqlstate == "22023" and all(t in e.value.hint for t in TASKS)


@pytest.mark.parametrize("task, pg_type, sqlstate", [
    ("regression", "float8", None),
    ("regression", "int4", None),
    ("regression", "text", "42804"),
    ("forecast", "bool", "42804"),
    ("binary", "text", None),
    ("multiclass", "bool", None),
    ("binary", "date", "42804"),
    (None, "vector", "42804"),
    (None, "text", None),
])
def test_target_type_must_suit_the_task(task, pg_type, sqlstate):
    if sqlstate is None:
        check_target_type("y", pg_type, task)
    else:
        with pytest.raises(SqlmlError, match='target column "y" has type') as e:
            check_target_type("y", pg_type, task)
        assert e.value.sqlstate == sqlstate


@pytest.mark.parametrize("task, raw, numeric, expected", [
    ("binary", ["b", "a", None, "b"], False, ([1, 0, -1, 1], ("a", "b"), [True, True, False, True])),
    ("multiclass", [3.0, 1.0, np.nan, 2.0], True, ([2, 0, -1, 1], (1, 2, 3), [True, True, False, True])),
    ("regression", [1.5, np.nan, 2.0], True, ([1.5, np.nan, 2.0], (), [True, False, True])),
])
def test_target_encoding(task, raw, numeric, expected):
    y, classes, keep = task_of(task).encode_target("y", np.array(raw, dtype=object if not numeric else float), numeric)
    want_y, want_classes, want_keep = expected
    np.testing.assert_array_equal(y, np.array(want_y, dtype=y.dtype))
    assert classes == want_classes and keep.tolist() == want_keep


@pytest.mark.parametrize("task, raw, numeric, message, sqlstate", [
    ("regression", [1.0, np.inf], True, "contains Infinity", "22000"),
    ("regression", [1.0, 1e39], True, "beyond ±3.4e38", "22003"),
    ("binary", ["a", "a", None], False, "single class", "22000"),
    ("multiclass", [float(i) for i in range(201)], True, "201 classes; the limit is 200", "22000"),
])
def test_target_values_are_validated(task, raw, numeric, message, sqlstate):
    with pytest.raises(SqlmlError, match=message) as e:
        task_of(task).encode_target("y", np.array(raw, dtype=float if numeric else object), numeric)
    assert e.value.sqlstate == sqlstate


def _labels(n=200, seed=0):
    return np.random.default_rng(seed).choice([0, 0, 0, 1, 2], size=n)


@pytest.mark.parametrize("task, k, description", [
    ("binary", 5, "5-fold cv"),
    ("multiclass", 3, "3-fold cv"),
    ("regression", 5, "5-fold cv"),
    ("binary", 1, "holdout"),
    ("regression", 1, "holdout"),
    ("forecast", 4, "4 time-ordered folds"),
    ("forecast", 1, "time-ordered holdout"),
])
def test_folds_follow_the_tasks_split(task, k, description):
    task = task_of(task)
    y = _labels() if task.classification else np.random.default_rng(1).normal(size=200)
    folds, described = task.folds(y, k, seed=7)
    assert described == description and len(folds) == k
    valid = np.concatenate([v for _, v in folds])
    for fit, v in folds:
        assert not set(fit) & set(v)
    if task.split == TIME_ORDERED:  # the past predicts the future, never the reverse
        assert all(fit.max() < v.min() for fit, v in folds)
    elif k > 1:  # every row is validated once
        assert sorted(valid) == list(range(len(y)))
    else:
        assert len(valid) == 40
    if task.split == STRATIFIED:  # each validation part has the classes' shares
        for _, v in folds:
            assert abs(np.mean(y[v] == 0) - np.mean(y == 0)) < 0.05
    assert task.folds(y, k, seed=7)[0][0][1].tolist() == folds[0][1].tolist()  # seeded


def test_stratified_folds_fall_back_to_plain_ones_for_a_class_too_small_to_spread():
    y = np.array([0] * 30 + [1] * 2)
    folds, described = task_of("binary").folds(y, 5, seed=0)
    assert described == "5-fold cv" and sorted(np.concatenate([v for _, v in folds])) == list(range(32))


@pytest.mark.parametrize("task, y, train, test", [
    # a class with one row stays in training; the rest are split by class
    ("binary", [0, 0, 0, 0, 1, 1, 1, 1, 2, 0], 8, 2),
    ("regression", list(range(10)), 8, 2),
    ("forecast", list(range(10)), 8, 2),
])
def test_holdout_follows_the_tasks_split(task, y, train, test):
    y = np.array(y)
    tr, te = task_of(task).holdout(y, 0.2, seed=3)
    assert (len(tr), len(te)) == (train, test) and not set(tr) & set(te)
    if task == "binary":
        assert 8 in tr and set(y[te]) == {0, 1}
    if task == FORECAST:
        assert te.tolist() == [8, 9]


@pytest.mark.parametrize("lengths, horizon, windows, origins", [
    ([20, 12], 3, 2, [[16, 13], [8, 5]]),
    ([10], 1, 3, [[8, 7, 6]]),
])
def test_backtest_origins_roll_back_one_horizon_per_window(lengths, horizon, windows, origins):
    got = task_of(FORECAST).backtest_origins(np.array(lengths), horizon, windows)
    assert got.tolist() == origins
