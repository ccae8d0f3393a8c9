"""A text column of many categories, trained and scored on a real server: target means end to end.

``who`` holds 300 ids, each with its own effect on a 3-class target. ``sqlml.train`` with LightGBM
gives it its target means (``sqlml.automl.target_means``): the registered ONNX looks each id up
per class, every scoring form (a row, jsonb, ``score``) answers what ONNX Runtime answers on the
registered graph, an id never seen at training scores as the overall mean, and ``sqlml.explain``
credits the ids' columns to ``who``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from tests.conftest import query, scalar
from tests.test_lifecycle import reference, train


@pytest.fixture(scope="module")
def trained(db):
    query(db, "SELECT setseed(0.3)")
    query(db, """
        CREATE TABLE rated AS
        SELECT i AS id, s.who, s.x,
               CASE WHEN s.effect + s.x + random() < 0.8 THEN 'low'
                    WHEN s.effect + s.x + random() < 1.6 THEN 'mid' ELSE 'high' END AS grade
        FROM generate_series(1, 6000) AS i
        CROSS JOIN LATERAL (SELECT 'id' || k AS who, random() AS x, (k * 7919 % 100) / 50.0 AS effect
                            FROM (SELECT (random() * 299)::int + i * 0 AS k) AS r) AS s""")
    query(db, "UPDATE rated SET who = 'nobody' WHERE id % 500 = 0")  # unseen: its rows are left out of training
    return train(db, "tm", "(SELECT * FROM rated WHERE who <> 'nobody')", "grade", exclude=["id"],
                 algorithms=["lightgbm"], options=json.dumps({"n_estimators": 60, "ensemble": False}))


def test_the_registered_graph_looks_each_id_up_per_class(db, trained):
    blob = bytes(scalar(db, "SELECT onnx FROM sqlml.models WHERE project = 'tm' AND version = %s",
                        (trained["version"],)))
    lookups = [n for n in onnx.load_from_string(blob).graph.node
               if n.op_type == "LabelEncoder" and any(a.name == "values_floats" for a in n.attribute)]
    assert len(lookups) == 3  # a mean per class of the one column of many ids
    keys = {k for a in lookups[0].attribute if a.name == "keys_strings" for k in a.strings}
    assert len(keys) > 250 and b"nobody" not in keys


def test_every_scoring_form_answers_what_onnx_runtime_answers(db, trained):
    want, _ = reference(db, "tm", trained["version"], "rated")  # probabilities (n, 3), rows by id
    rows = query(db, "SELECT sqlml.predict_proba('tm', r), sqlml.predict_proba('tm', to_jsonb(r)) "
                     "FROM rated r ORDER BY id")
    np.testing.assert_allclose(np.array([r[0] for r in rows]), want, atol=1e-6)
    np.testing.assert_allclose(np.array([r[1] for r in rows]), want, atol=1e-6)
    query(db, "SELECT sqlml.score('tm', 'rated', 'rated_scored', 'id')")
    scored = query(db, "SELECT probabilities FROM rated_scored ORDER BY id")
    np.testing.assert_allclose(np.array([r[0] for r in scored]), want, atol=1e-6)
    # the unseen id: every row of it gets the overall means, so its rows differ only by x
    unseen = query(db, "SELECT sqlml.predict_proba('tm', r) FROM rated r WHERE who = 'nobody' ORDER BY id")
    assert len(unseen) == 12 and all(p is not None for p in unseen)


def test_explain_credits_the_ids_columns_to_the_column(db, trained):
    """Per class, the contributions of ``who`` (its mean for that class, among others) and ``x`` plus
    the base are the class score whose softmax is predict_proba."""
    rows = query(db, "SELECT e.feature, e.contribution, e.class FROM rated r, sqlml.explain('tm', r) AS e "
                     "WHERE r.id = 7")
    assert {f for f, _, _ in rows} == {"who", "x", "(base)"}
    assert any(f == "who" and abs(c) > 0 for f, c, _ in rows)
    classes = scalar(db, "SELECT sqlml.classes('tm')")
    scores = np.array([sum(c for _, c, k in rows if k == label) for label in classes])
    soft = np.exp(scores - scores.max())
    proba = scalar(db, "SELECT sqlml.predict_proba('tm', r) FROM rated r WHERE id = 7")
    np.testing.assert_allclose(soft / soft.sum(), proba, atol=1e-5)
