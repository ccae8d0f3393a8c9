"""How a text column is encoded, per encoding: which categories it keeps, codes or target means
(``sqlml.automl.preprocess.Plan``). Pure."""

import numpy as np
import pandas as pd
import pytest

from sqlml.automl import preprocess
from sqlml.automl.spec import NATIVE_CATEGORIES, ONE_HOT
from sqlml.data.schema import Feature, FeatureSchema, Target

ROWS, LEVELS = 20_000, 500


def _table(task: str, levels: int = LEVELS, seed: int = 0):
    """``who``: ``levels`` ids, a few frequent and a long tail; each moves the target."""
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.3, ROWS), levels) - 1
    signal = rng.normal(size=levels)[ids] + rng.normal(size=ROWS)
    classes = {"regression": (), "binary": (0, 1), "multiclass": (0, 1, 2)}[task]
    y = signal if task == "regression" else np.digitize(signal, [-0.5, 0.5][:len(classes) - 1]).astype(np.int64)
    frame = pd.DataFrame({"x": rng.normal(size=ROWS), "who": [f"id{i}" for i in ids]})
    schema = FeatureSchema((Feature("x", "numeric", "float8"), Feature("who", "category", "text")),
                           Target("y", "float8" if task == "regression" else "int4", task, classes))
    return schema, frame, y


@pytest.mark.parametrize("task, levels, means, width", [
    ("regression", 500, True, 1),   # more than MAX_CATEGORIES: target means, a column
    ("binary", 500, True, 1),
    ("multiclass", 500, True, 3),   # a column per class
    ("binary", 60, False, 1),       # few enough for codes
])
def test_target_means_for_columns_of_many_categories_under_native_categories_only(task, levels, means, width):
    schema, frame, y = _table(task, levels)
    plan = preprocess.Plan.from_data(schema, frame)
    assert len(plan.categories["who"]) == min(levels, preprocess.MAX_CATEGORIES)
    seen_twice = (frame["who"].value_counts() >= preprocess.MIN_CATEGORY_COUNT).sum()
    assert {k: len(v) for k, v in plan.means.items()} == ({"who": seen_twice} if means else {})
    assert (plan.means_target, plan.means_width) == \
        ({"regression": "continuous"}.get(task, task), width)
    assert plan.coded(ONE_HOT) == ("who",)  # one-hot encodings never take the means
    assert plan.coded(NATIVE_CATEGORIES) == (() if means else ("who",))
    assert plan.width(NATIVE_CATEGORIES) == 1 + (width if means else 1)
    assert plan.categorical_indices() == ([] if means else [1])


def test_target_means_keep_at_most_max_means_categories(monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_MEANS_CATEGORIES", 100)
    schema, frame, _ = _table("binary")
    plan = preprocess.Plan.from_data(schema, frame)
    kept = plan.means["who"]
    assert len(kept) == 100 and kept == sorted(kept)
    assert set(kept) == set(frame["who"].value_counts().index[:100])  # the most frequent


def test_rows_of_categories_not_kept_move_no_kept_categorys_mean():
    # "a" and "b" kept, twenty ids seen once not: their rows (target 10) stay out of every category's
    # mean (scikit-learn alone counts them as "a"), so "a" and "b" (target 0 each) encode alike
    from sqlml.automl.target_means import TargetMeans

    X = pd.DataFrame({"who": ["a", "a", "b", "b"] + [f"once{i}" for i in range(20)]})
    y = np.array([0.0] * 4 + [10.0] * 20)
    means = TargetMeans(categories=[["a", "b"]], target_type="continuous", smooth=1.0).fit(X, y)
    a, b = means.encodings_[0]
    overall = y.mean()
    assert a == b == pytest.approx(overall / 3)  # (0 + 1 x overall) / (2 rows + 1)
    assert means.transform(pd.DataFrame({"who": ["once3", "never"]})).ravel().tolist() == \
        [pytest.approx(overall)] * 2


@pytest.mark.parametrize("labels, columns", [
    ([0, 1] * 300, 1),                # a fold of a 3-class target holding two of them: one column
    (list(range(20)) * 4, 20),        # 20 classes of 4 rows, fewer than the 5 folds of cross fitting
])
def test_target_means_fit_whatever_classes_the_rows_hold(labels, columns):
    rng = np.random.default_rng(0)
    n = len(labels)
    frame = pd.DataFrame({"x": rng.normal(size=n), "who": [f"id{i % 70}" for i in range(n)]})  # 70 ids
    k = max(3, len(set(labels)))
    schema = FeatureSchema((Feature("x", "numeric", "float8"), Feature("who", "category", "text")),
                           Target("y", "int4", "multiclass", tuple(range(k))))
    plan = preprocess.Plan.from_data(schema, frame)
    assert list(plan.means) == ["who"] and plan.means_width == k
    out = preprocess.build(plan, NATIVE_CATEGORIES).fit_transform(frame, np.array(labels))
    assert out.shape == (n, 1 + columns)


def test_many_classes_keep_fewer_categories(monkeypatch):
    monkeypatch.setattr(preprocess, "MAX_MEANS_ENTRIES", 300)
    schema, frame, _ = _table("multiclass")  # 3 classes: 100 categories at most
    assert len(preprocess.Plan.from_data(schema, frame).means["who"]) == 100
