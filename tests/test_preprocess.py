"""How many categories a text column keeps, per encoding (``sqlml.automl.preprocess.Plan``). Pure."""

import numpy as np
import pandas as pd
import pytest

from sqlml.automl import preprocess
from sqlml.automl.spec import NATIVE_CATEGORIES, ONE_HOT
from sqlml.data.schema import Feature, FeatureSchema, Target

ROWS, LEVELS = 20_000, 500


def _table(task: str, effect: float, seed: int = 0):
    """``who``: 500 ids, a few frequent and a long tail; the target moves with each id by ``effect``."""
    rng = np.random.default_rng(seed)
    ids = np.minimum(rng.zipf(1.3, ROWS), LEVELS) - 1
    signal = effect * rng.normal(size=LEVELS)[ids] + rng.normal(size=ROWS)
    y = signal if task == "regression" else (signal > 0).astype(np.int64)
    frame = pd.DataFrame({"x": rng.normal(size=ROWS), "who": [f"id{i}" for i in ids]})
    schema = FeatureSchema((Feature("x", "numeric", "float8"), Feature("who", "category", "text")),
                           Target("y", "float8" if task == "regression" else "int4", task,
                                  () if task == "regression" else (0, 1)))
    return schema, frame, y


@pytest.mark.parametrize("task, effect, with_target, all_coded", [
    ("regression", 1.0, True, True),    # each id moves the target: every id becomes a code
    ("binary", 1.0, True, True),
    ("regression", 0.0, True, False),   # ids carry nothing: the 64 most frequent, as for one-hot
    ("binary", 0.0, True, False),
    ("regression", 1.0, False, False),  # no target given: as for one-hot
])
def test_ordinal_codes_keep_every_category_only_where_the_rare_ones_carry_signal(task, effect, with_target,
                                                                                 all_coded):
    schema, frame, y = _table(task, effect)
    plan = preprocess.Plan.from_data(schema, frame, y if with_target else None)
    one_hot = plan.kept(ONE_HOT)["who"]
    coded = plan.kept(NATIVE_CATEGORIES)["who"]
    assert len(one_hot) == preprocess.MAX_CATEGORIES
    seen_twice = (frame["who"].value_counts() >= preprocess.MIN_CATEGORY_COUNT).sum()
    assert len(coded) == (seen_twice if all_coded else preprocess.MAX_CATEGORIES)
    assert plan.width(NATIVE_CATEGORIES) == 2  # codes: one column, whatever their count


@pytest.mark.parametrize("effect, low, high", [
    (1.0, 0.05, 1.0),
    (0.0, -1.0, preprocess.MIN_TAIL_GAIN),
])
def test_tail_gain_is_out_of_sample(effect, low, high):
    schema, frame, y = _table("regression", effect, seed=1)
    frequent = set(frame["who"].value_counts().index[:preprocess.MAX_CATEGORIES])
    targets = (y - y.mean())[:, None] / y.std()
    assert low <= preprocess.tail_gain(frame["who"].tolist(), frequent, targets) < high
