"""sqlml.explain (row, jsonb, float8[]), sqlml.explain_batch and sqlml.importance on a real server.

Per row, the contributions plus (base) must equal the raw output of what sqlml.predict serves:
the log-odds whose sigmoid is predict_proba's second class (binary LightGBM), the class scores
whose softmax is predict_proba (multiclass linear), the value (regression forest, and a
mixed-type table). Compared in probability space: ONNX's probabilities are float32.
"""

from __future__ import annotations

import json
import math
import stat

import numpy as np
import psycopg2
import pytest

from tests.conftest import query, scalar, sql_error
from tests.test_lifecycle import sample_database, train


@pytest.fixture(scope="module")
def db(dsn):
    yield from sample_database(dsn)


TOLERANCE = 1e-4


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def explained(conn, sql, params=None) -> dict:
    """{(class, feature): contribution} plus the values of one explanation's rows."""
    rows = query(conn, sql, params)
    return {(r[3], r[0]): (r[1], r[2]) for r in rows}


def total(rows: dict, label=None) -> float:
    return sum(c for (k, _), (_, c) in rows.items() if k == label)


@pytest.fixture(scope="module")
def projects(db):
    out = {
        "bc": train(db, "x_bc", "breast_cancer", "diagnosis", algorithms=["lightgbm"]),
        "iris": train(db, "x_iris", "iris", "species", algorithms=["linear"]),
        "diab": train(
            db,
            "x_diab",
            "diabetes",
            "progression",
            algorithms=["random_forest"],
            options=json.dumps({"n_estimators": 20}),
        ),
        "mixed": train(
            db, "x_mixed", "(SELECT * FROM listings)", "price", exclude=["id", "status"], algorithms=["lightgbm"]
        ),
    }
    return out


def test_binary_contributions_sum_to_the_log_odds_in_all_three_forms(db, projects):
    row = explained(db, "SELECT x.* FROM breast_cancer c, sqlml.explain('x_bc', c) x WHERE c.id = 7")
    features = [f for (_, f) in row if f != "(base)"]
    assert len(features) == 30 and all(k is None for (k, _) in row)
    assert row[(None, "(base)")][0] is None
    assert row[(None, "mean_radius")][0] == repr(scalar(db, "SELECT mean_radius FROM breast_cancer WHERE id = 7"))
    p = scalar(db, "SELECT (sqlml.predict_proba('x_bc', c))[2] FROM breast_cancer c WHERE id = 7")
    assert sigmoid(total(row)) == pytest.approx(
        p, abs=1e-6
    )  # (ONNX's probability is float32: its log-odds are not exact)
    as_json = explained(db, "SELECT x.* FROM breast_cancer c, sqlml.explain('x_bc', to_jsonb(c)) x WHERE c.id = 7")
    assert as_json == row
    names = [
        c["name"] for c in scalar(db, "SELECT feature_schema->'features' FROM sqlml.models WHERE project = 'x_bc'")
    ]
    arr = query(db, f"SELECT ARRAY[{', '.join(names)}]::float8[] FROM breast_cancer WHERE id = 7")[0][0]
    as_array = explained(db, "SELECT * FROM sqlml.explain('x_bc', %s::float8[])", (arr,))
    assert {k: v[1] for k, v in as_array.items()} == pytest.approx({k: v[1] for k, v in row.items()}, abs=1e-9)


def test_multiclass_contributions_per_class_are_the_softmax_scores(db, projects):
    row = explained(db, "SELECT x.* FROM iris c, sqlml.explain('x_iris', c) x WHERE c.id = 120")
    classes = scalar(db, "SELECT sqlml.classes('x_iris')")
    assert {k for (k, _) in row} == set(classes)
    scores = np.array([total(row, k) for k in classes])
    soft = np.exp(scores - scores.max())
    proba = scalar(db, "SELECT sqlml.predict_proba('x_iris', c) FROM iris c WHERE id = 120")
    np.testing.assert_allclose(soft / soft.sum(), proba, atol=TOLERANCE)


def test_forest_and_mixed_types_sum_to_the_predicted_value(db, projects):
    row = explained(db, "SELECT x.* FROM diabetes c, sqlml.explain('x_diab', c) x WHERE c.id = 3")
    assert total(row) == pytest.approx(
        scalar(db, "SELECT sqlml.predict('x_diab', c) FROM diabetes c WHERE id = 3"), rel=1e-5
    )
    for i in (13, 17, 26):  # NULL city (13), NULL vector (17), both set (26)
        row = explained(db, "SELECT x.* FROM listings c, sqlml.explain('x_mixed', c) x WHERE c.id = %s", (i,))
        assert {f for (_, f) in row} == {
            "(base)",
            "rooms",
            "area",
            "noise",
            "balcony",
            "city",
            "built",
            "listed_at",
            "emb",
        }
        want = scalar(db, "SELECT sqlml.predict('x_mixed', c) FROM listings c WHERE id = %s", (i,))
        assert total(row) == pytest.approx(want, rel=1e-5)
    assert row[(None, "built")][0] == str(scalar(db, "SELECT built FROM listings WHERE id = 26"))
    assert row[(None, "city")][0] == scalar(db, "SELECT city FROM listings WHERE id = 26")
    assert (
        explained(db, "SELECT x.* FROM listings c, sqlml.explain('x_mixed', c) x WHERE c.id = 13")[(None, "city")][0]
        is None
    )


def test_explain_batch_is_explain_for_every_row(db, projects):
    rows = query(
        db, "SELECT id, feature, value, contribution, class FROM sqlml.explain_batch('x_bc', 'breast_cancer', 'id')"
    )
    by_id: dict = {}
    for i, feature, _, c, k in rows:
        by_id.setdefault(i, {})[(k, feature)] = c
    assert len(by_id) == scalar(db, "SELECT count(*) FROM breast_cancer")
    proba = dict(query(db, "SELECT id::text, (sqlml.predict_proba('x_bc', c))[2] FROM breast_cancer c"))
    for i, contributions in by_id.items():
        assert sigmoid(sum(contributions.values())) == pytest.approx(proba[i], abs=1e-6)
    one = explained(db, "SELECT x.* FROM breast_cancer c, sqlml.explain('x_bc', c) x WHERE c.id = 7")
    assert by_id["7"] == pytest.approx({k: v[1] for k, v in one.items()}, abs=1e-9)
    assert scalar(db, "SELECT count(*) FROM sqlml.audit_log WHERE action = 'explain_batch' AND project = 'x_bc'") == 1


@pytest.mark.parametrize("project, relation", [("x_iris", "iris"), ("x_mixed", "listings"), ("x_diab", "diabetes")])
def test_explain_batch_rows_are_explains_exactly(db, projects, project, relation):
    """Multiclass (class per row), NULLs, dates, vectors and categories as text, a forest: folded by
    PL/Python, unfolded in SQL, every value and contribution the same as sqlml.explain's."""
    batch = query(db, "SELECT id, feature, value, contribution, class FROM sqlml.explain_batch(%s, %s, 'id')",
                  (project, relation))
    ids = [r[0] for r in query(db, f"SELECT id::text FROM {relation}")]
    assert sorted({r[0] for r in batch}) == sorted(ids)
    width = len({r[1] for r in batch}) * max(1, len({r[4] for r in batch}))
    assert len(batch) == len(ids) * width
    for i in (ids[0], ids[len(ids) // 2], ids[-1], "13", "17"):
        if i not in ids:
            continue
        one = query(db, f"SELECT x.* FROM {relation} c, sqlml.explain(%s, c) x WHERE c.id = %s", (project, int(i)))
        key = lambda r: (r[3] or "", r[0])  # noqa: E731
        assert sorted(one, key=key) == sorted([r[1:] for r in batch if r[0] == i], key=key)


def test_importance_is_stored_at_training_and_served(db, projects):
    for project, n in (("x_bc", 30), ("x_iris", 4), ("x_diab", 10)):
        rows = query(db, "SELECT feature, importance FROM sqlml.importance(%s)", (project,))
        assert len(rows) == n
        values = [v for _, v in rows]
        assert all(v >= 0 for v in values) and values == sorted(values, reverse=True) and values[0] > 0
        stored = scalar(db, "SELECT importance FROM sqlml.models WHERE project = %s", (project,))
        assert stored["method"] == "mean |contribution| on the holdout" and stored["rows"] > 0
    assert query(db, "SELECT feature FROM sqlml.importance('x_diab') LIMIT 2")[0][0] in ("bmi", "s5")


def test_explain_refuses_what_it_cannot_explain(db, projects):
    e = sql_error(db, "SELECT * FROM sqlml.explain('nope', '{}'::jsonb)")
    assert e.pgcode == "42704"
    e = sql_error(db, """SELECT * FROM sqlml.explain('x_bc', '{"mean_radius": 1}'::jsonb)""")
    assert e.pgcode == "42703" and "missing" in e.diag.message_primary
    e = sql_error(db, "SELECT * FROM sqlml.explain_batch('x_bc', 'iris', 'id')")
    assert e.pgcode == "42703"


@pytest.mark.parametrize("id_type, pg_type", [("NULL::int", "integer"), ("NULL::uuid", "uuid")])
def test_explain_batch_ids_come_back_in_their_type(db, projects, id_type, pg_type):
    """As predict_batch's: the result joins back to the relation without a cast."""
    query(db, "CREATE OR REPLACE VIEW bc_uuid AS SELECT md5(id::text)::uuid AS uid, * FROM breast_cancer")
    column = "id" if pg_type == "integer" else "uid"
    rows = query(db, f"""SELECT pg_typeof(b.id)::text, count(DISTINCT b.id), count(*)
                         FROM sqlml.explain_batch('x_bc', 'bc_uuid', %s, {id_type}) b
                         JOIN bc_uuid c ON b.id = c.{column}
                         GROUP BY 1""", (column,))
    n = scalar(db, "SELECT count(*) FROM breast_cancer")
    assert rows == [(pg_type, n, n * 31)]  # 30 features and (base) per row
    e = sql_error(db, "SELECT * FROM sqlml.explain_batch('x_bc', 'bc_uuid', 'uid', NULL::int)")
    assert e.pgcode == "22P02"  # invalid input syntax for type integer: the id type does not fit the column


def test_a_new_backend_loads_native_treeshap_from_the_cache(db, dsn, cluster, projects):
    """The first backend to explain a tree model compiles TreeSHAP with LLVM and keeps the object
    code beside the compiled scoring code; the next one loads it, without importing llvmlite."""
    cache = cluster.data / "sqlml_compiled"
    for entry in cache.glob("treeshap-*"):  # kept by the training of the projects: not this test's case
        entry.unlink()
    seen, want = [], None
    for _ in range(2):
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        conn.notices = []
        query(conn, "SET client_min_messages = debug2")  # plpy.debug's level
        row = explained(conn, "SELECT x.* FROM diabetes c, sqlml.explain('x_diab', c) x WHERE c.id = 3")
        seen.append([m for m in conn.notices if "explains with" in m])
        query(conn, "CREATE FUNCTION pg_temp.llvmlite_loaded() RETURNS bool LANGUAGE plpython3u AS "
                    "$$ import sys; return 'llvmlite' in sys.modules $$")
        seen[-1].append(scalar(conn, "SELECT pg_temp.llvmlite_loaded()"))
        conn.close()
        assert want is None or row == want
        want = row
    assert len(seen[0]) == 2 and "explains with TreeSHAP compiled" in seen[0][0] and "cache" not in seen[0][0]
    assert len(seen[1]) == 2 and "explains with TreeSHAP compiled (from the cache)" in seen[1][0]
    assert seen[1][1] is False, "the backend that found the code in the cache imported llvmlite"
    (entry,) = cache.glob("treeshap-*")
    assert stat.S_IMODE(entry.stat().st_mode) & 0o077 == 0
