"""XGBoost and CatBoost in the database: ``algorithms`` restricts a training to one family, the
model registered is that family's (its ONNX export passed the parity gate), and sqlml.predict
scores with it."""

import json

import psycopg2
import pytest

from sqlml import samples
from tests.conftest import query, scalar


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.autocommit = True
    query(conn, "CREATE TABLE homes AS SELECT i AS id, (i % 7)::float8 AS rooms, "
                "CASE WHEN i % 11 = 0 THEN NULL ELSE (i * 37 % 100)::float8 END AS age, "
                "(ARRAY['oslo', 'bergen', 'bodo'])[i % 3 + 1] AS city, "
                "(i % 7) * 1.5 + CASE WHEN i % 3 = 0 THEN 4 ELSE 0 END + (i * 37 % 100) / 50.0 AS price "
                "FROM generate_series(1, 600) i")
    yield conn
    conn.close()


def _train(db, project, relation, target, algorithm):
    # ensemble false: the family's own model, not an ensemble of its configurations (which more
    # trials within the budget could give)
    query(db, f"SELECT * FROM sqlml.train('{project}', '{relation}', '{target}', algorithms => '{{{algorithm}}}', "
              """time_budget => '8 seconds', options => '{"ensemble": false}')""")
    model = query(db, "SELECT algorithm, (parity ->> 'ok')::bool FROM sqlml.models WHERE project = %s", (project,))
    assert model == [(algorithm, True)]
    tried = query(db, "SELECT DISTINCT algorithm FROM sqlml.trials WHERE project = %s AND status = 'ok'", (project,))
    assert tried == [(algorithm,)]


@pytest.mark.parametrize("algorithm", ["xgboost", "catboost"])
@pytest.mark.parametrize("relation, target", [("breast_cancer", "diagnosis"), ("iris", "species")])
def test_a_classifier_of_the_family_asked_for_predicts(db, algorithm, relation, target):
    project = f"{algorithm}_{relation}"
    _train(db, project, relation, target, algorithm)
    accuracy = scalar(db, f"SELECT avg((sqlml.predict_label(%s, t) = t.{target})::int) FROM {relation} t", (project,))
    assert accuracy > 0.9


@pytest.mark.parametrize("algorithm", ["xgboost", "catboost"])
def test_a_regressor_of_the_family_asked_for_predicts(db, algorithm):
    project = f"{algorithm}_diabetes"
    _train(db, project, "diabetes", "progression", algorithm)
    fit = scalar(db, "SELECT corr(sqlml.predict(%s, d)::float8, d.progression) FROM diabetes d", (project,))
    assert fit > 0.6


@pytest.mark.parametrize("algorithm", ["xgboost", "catboost"])
def test_text_categories_and_missing_numbers_reach_the_family(db, algorithm):
    project = f"{algorithm}_homes"
    _train(db, project, "homes", "price", algorithm)
    row = {"rooms": 3, "age": 40, "city": "oslo"}
    oslo, bergen, unseen, missing = (
        float(scalar(db, "SELECT sqlml.predict(%s, %s::jsonb)", (project, json.dumps(r)))) for r in
        (row, {**row, "city": "bergen"}, {**row, "city": "reykjavik"}, {**row, "age": None}))
    assert oslo - bergen > 2  # oslo's premium is 4 (every third id)
    # an unseen city is no known one (one-hot: all zeros); a missing age takes the trees' NaN branches
    assert abs(bergen - 5.3) < 1 and abs(unseen - 5.3) < 1.5 and abs(missing - oslo) < 1.5, \
        (oslo, bergen, unseen, missing)
