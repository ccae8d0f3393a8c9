"""sqlml.import_model on a real server: models trained outside sqlml, from five sources.

- scikit-learn through skl2onnx: one input per column, a text column one-hot encoded (listings);
- LightGBM through onnxmltools: one matrix input matched with columns => (breast cancer, binary);
- XGBoost through onnxmltools: one matrix input (diabetes, regression);
- a graph written with the ONNX API itself (onnx.helper): a softmax regression with no class
  labels in the graph, classes from the target (iris, multiclass);
- CatBoost through its own ONNX export: one matrix input, a ZipMap (breast cancer, binary; iris,
  multiclass with the species' names as class labels).

Each is imported, scored in place (predict, predict_proba, predict_batch, score), and its
predictions must equal ONNX Runtime's on the original blob outside the database; then deploy with
its gate, monitor, evaluate and lineage. Refusals: a table of bad imports, each with its SQLSTATE.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from onnx import TensorProto, helper

from sqlml.data.schema import NULL_CATEGORY
from sqlml.onnx.convert import session
from tests.conftest import query, scalar, sql_error
from tests.roles import create_roles, drop_roles
from tests.test_lifecycle import sample_database


@pytest.fixture(scope="module")
def db(dsn):
    yield from sample_database(dsn)


BC = ["mean_radius", "mean_texture", "mean_perimeter", "mean_area", "mean_smoothness"]


def fetch(conn, sql) -> dict:
    """Columns of a query's rows, by name."""
    with conn.cursor() as cur:
        cur.execute(sql)
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
    return {n: [r[i] for r in rows] for i, n in enumerate(names)}


def floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float32)


def import_model(conn, project, blob, task, relation, target=None, columns=None, options=None):
    rows = query(
        conn,
        "SELECT * FROM sqlml.import_model(%s, %s, %s, %s, target => %s, columns => %s, "
        "options => coalesce(%s::jsonb, '{}'))",
        (project, blob, task, relation, target, columns, options),
    )
    return dict(zip(("project", "version", "algorithm", "metric", "score", "deployed"), rows[0]))


# --- the four sources ------------------------------------------------------------------------------


def sklearn_model(conn):
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    d = fetch(conn, "SELECT rooms, area::float8 AS area, noise, city, price FROM listings")
    X = pd.DataFrame(
        {
            "rooms": floats(d["rooms"]),
            "area": floats(d["area"]),
            "noise": floats(d["noise"]),
            "city": [NULL_CATEGORY if c is None else c for c in d["city"]],
        }
    )
    pipe = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [
                        ("num", SimpleImputer(), ["rooms", "area", "noise"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                    ]
                ),
            ),
            ("model", Ridge()),
        ]
    ).fit(X, np.array(d["price"]))
    types = [(c, FloatTensorType([None, 1])) for c in ("rooms", "area", "noise")] + [
        ("city", StringTensorType([None, 1]))
    ]
    return convert_sklearn(pipe, initial_types=types, target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()


def lightgbm_model(conn):
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    d = fetch(conn, f"SELECT {', '.join(BC)}, (diagnosis = 'malignant')::int AS malignant FROM breast_cancer")
    X = np.stack([floats(d[c]) for c in BC], axis=1)
    model = lgb.LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1).fit(X, np.array(d["malignant"]))
    return convert_lightgbm(
        model, initial_types=[("input", FloatTensorType([None, len(BC)]))], target_opset=15
    ).SerializeToString()


DIAB = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def xgboost_model(conn):
    import xgboost as xgb
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    d = fetch(conn, f"SELECT {', '.join(DIAB)}, progression FROM diabetes")
    X = np.stack([floats(d[c]) for c in DIAB], axis=1)
    model = xgb.XGBRegressor(n_estimators=30, max_depth=3).fit(X, np.array(d["progression"]))
    return convert_xgboost(
        model, initial_types=[("input", FloatTensorType([None, len(DIAB)]))], target_opset=15
    ).SerializeToString()


def catboost_blob(model) -> bytes:
    """CatBoost's own ONNX export (ONNX-ML: a TreeEnsemble and, for classifiers, a ZipMap)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        model.save_model(str(Path(d) / "model.onnx"), format="onnx")
        return (Path(d) / "model.onnx").read_bytes()


def catboost_binary_model(conn):
    from catboost import CatBoostClassifier

    d = fetch(conn, f"SELECT {', '.join(BC)}, (diagnosis = 'malignant')::int AS malignant FROM breast_cancer")
    X = np.stack([floats(d[c]) for c in BC], axis=1)
    model = CatBoostClassifier(iterations=30, depth=4, thread_count=1, verbose=False, allow_writing_files=False)
    return catboost_blob(model.fit(X, np.array(d["malignant"])))


IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def catboost_multiclass_model(conn):
    """Trained on the species' names: the graph's class labels are strings."""
    from catboost import CatBoostClassifier

    d = fetch(conn, f"SELECT {', '.join(IRIS)}, species FROM iris")
    X = np.stack([floats(d[c]) for c in IRIS], axis=1)
    model = CatBoostClassifier(iterations=30, depth=3, thread_count=1, verbose=False, allow_writing_files=False)
    return catboost_blob(model.fit(X, np.array(d["species"])))


def onnx_api_model(conn):
    """Softmax regression written node by node; weights fitted with numpy's least squares on one-hot targets."""
    d = fetch(conn, f"SELECT {', '.join(IRIS)}, species FROM iris")
    X = np.stack([floats(d[c]) for c in IRIS], axis=1).astype(np.float64)
    classes = sorted(set(d["species"]))
    Y = np.array([[float(s == c) for c in classes] for s in d["species"]]) * 6 - 3
    A = np.hstack([X, np.ones((len(X), 1))])
    W = np.linalg.lstsq(A, Y, rcond=None)[0]
    nodes = [
        helper.make_node("Concat", IRIS, ["x"], axis=1),
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["z"]),
        helper.make_node("Softmax", ["z"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "softmax",
        [helper.make_tensor_value_info(c, TensorProto.FLOAT, [None, 1]) for c in IRIS],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 3])],
        [
            helper.make_tensor("W", TensorProto.FLOAT, [4, 3], W[:4].astype(np.float32).ravel()),
            helper.make_tensor("b", TensorProto.FLOAT, [3], W[4].astype(np.float32)),
        ],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper"
    ).SerializeToString()


def outside(blob: bytes, feeds: dict, output: str | None = None) -> np.ndarray:
    """ONNX Runtime on the original blob, outside the database (a ZipMap's dicts as a matrix)."""
    sess = session(blob)
    names = [o.name for o in sess.get_outputs()]
    out = sess.run([output or names[-1]], feeds)[0]
    if isinstance(out, list) and out and isinstance(out[0], dict):  # ZipMap: one {class: probability} per row
        return np.array([[row[k] for k in sorted(row)] for row in out], dtype=np.float64)
    return np.asarray(out, dtype=np.float64)


SOURCES = {  # project -> (build, task, relation, target, columns, in-place query, outside feeds, output)
    "imp_sklearn": (
        sklearn_model,
        "regression",
        "listings",
        "price",
        None,
        "SELECT sqlml.predict('imp_sklearn', c) FROM listings c ORDER BY id",
        lambda d: (
            {c: floats(d[c]).reshape(-1, 1) for c in ("rooms", "area", "noise")}
            | {"city": np.array([[NULL_CATEGORY if v is None else v] for v in d["city"]], dtype=object)}
        ),
        "variable",
    ),
    "imp_lightgbm": (
        lightgbm_model,
        "binary",
        "bc_labelled",
        "malignant",
        BC,
        "SELECT (sqlml.predict_proba('imp_lightgbm', c))[2] FROM bc_labelled c ORDER BY id",
        lambda d: {"input": np.stack([floats(d[c]) for c in BC], axis=1)},
        "probabilities",
    ),
    "imp_xgboost": (
        xgboost_model,
        "regression",
        "diabetes",
        "progression",
        DIAB,
        "SELECT sqlml.predict('imp_xgboost', c) FROM diabetes c ORDER BY id",
        lambda d: {"input": np.stack([floats(d[c]) for c in DIAB], axis=1)},
        "variable",
    ),
    "imp_catboost": (
        catboost_binary_model,
        "binary",
        "bc_labelled",
        "malignant",
        BC,
        "SELECT (sqlml.predict_proba('imp_catboost', c))[2] FROM bc_labelled c ORDER BY id",
        lambda d: {"features": np.stack([floats(d[c]) for c in BC], axis=1)},
        "probabilities",
    ),
    "imp_catboost_iris": (
        catboost_multiclass_model,
        "multiclass",
        "iris",
        "species",
        IRIS,
        "SELECT sqlml.predict_proba('imp_catboost_iris', c) FROM iris c ORDER BY id",
        lambda d: {"features": np.stack([floats(d[c]) for c in IRIS], axis=1)},
        "probabilities",
    ),
    "imp_onnx": (
        onnx_api_model,
        "multiclass",
        "iris",
        "species",
        None,
        "SELECT sqlml.predict_proba('imp_onnx', c) FROM iris c ORDER BY id",
        lambda d: {c: floats(d[c]).reshape(-1, 1) for c in IRIS},
        "probs",
    ),
}
QUERIES = {
    "imp_sklearn": "SELECT rooms, area::float8 AS area, noise, city FROM listings ORDER BY id",
    "imp_lightgbm": f"SELECT {', '.join(BC)} FROM bc_labelled ORDER BY id",
    "imp_xgboost": f"SELECT {', '.join(DIAB)} FROM diabetes ORDER BY id",
    "imp_onnx": f"SELECT {', '.join(IRIS)} FROM iris ORDER BY id",
    "imp_catboost": f"SELECT {', '.join(BC)} FROM bc_labelled ORDER BY id",
    "imp_catboost_iris": f"SELECT {', '.join(IRIS)} FROM iris ORDER BY id",
}


@pytest.fixture(scope="module")
def imported(db):
    query(db, "CREATE VIEW bc_labelled AS SELECT *, (diagnosis = 'malignant')::int AS malignant FROM breast_cancer")
    out = {}
    for project, (build, task, relation, target, columns, *_) in SOURCES.items():
        blob = build(db)
        out[project] = (blob, import_model(db, project, blob, task, relation, target, columns))
    return out


@pytest.mark.parametrize("project", sorted(SOURCES))
def test_imported_model_scores_in_place_as_onnx_runtime_does_outside(db, imported, project):
    blob, result = imported[project]
    _, task, relation, target, _, in_place, feeds, output = SOURCES[project]
    assert result["version"] == 1 and result["algorithm"] == "imported" and result["deployed"]
    assert result["score"] is not None  # every relation here holds the target: metrics
    got = np.array([r[0] for r in query(db, in_place)], dtype=np.float64)
    want = outside(blob, feeds(fetch(db, QUERIES[project])), output)
    if task == "binary":
        want = want[:, 1]
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-6, atol=1e-6)
    batch = dict(query(db, "SELECT id, prediction FROM sqlml.predict_batch(%s, %s, 'id')", (project, relation)))
    single = dict(query(db, f"SELECT id::text, sqlml.predict(%s, c) FROM {relation} c", (project,)))
    assert batch == pytest.approx(single, rel=1e-6)
    assert scalar(db, "SELECT sqlml.score(%s, %s, %s, 'id')", (project, relation, f"{project}_scored")) == len(single)


def test_lineage_says_imported_with_sha256_and_caller(db, imported):
    blob, _ = imported["imp_xgboost"]
    origin, algorithm, hyper, created_by, relation, sha = query(
        db,
        "SELECT origin, algorithm, hyperparameters, created_by, relation, sha256 FROM sqlml.models "
        "WHERE project = 'imp_xgboost'",
    )[0]
    assert origin == "imported" and algorithm == "imported" and relation == "diabetes"
    assert hyper["imported"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert hyper["imported"]["producer_name"] == "OnnxMLTools"
    assert created_by == scalar(db, "SELECT current_user")
    stored = bytes(scalar(db, "SELECT onnx FROM sqlml.models WHERE project = 'imp_xgboost'"))
    assert hashlib.sha256(stored).hexdigest() == sha  # the registered (wrapped) graph, checked at every load
    assert scalar(db, "SELECT count(*) FROM sqlml.audit_log WHERE action = 'import' AND project = 'imp_xgboost'") == 1


def test_export_writes_the_imported_model_with_its_lineage(dsn, imported, tmp_path):
    import json

    from sqlml.client import Client

    with Client.connect(dsn) as ml:
        result = ml.export("imp_onnx", tmp_path)
    meta = json.loads((tmp_path / "sqlml.json").read_text())
    assert meta["lineage"]["origin"] == "imported" and meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert hashlib.sha256((tmp_path / "model.onnx").read_bytes()).hexdigest() == result["sha256"]
    x = {c: np.array([[5.1]], dtype=np.float32) for c in IRIS}
    assert outside((tmp_path / "model.onnx").read_bytes(), x, "probabilities").shape == (1, 3)


def test_gate_monitor_evaluate_and_classes_work_as_for_native_models(db, imported):
    blob, _ = imported["imp_xgboost"]
    again = import_model(db, "imp_xgboost", blob, "regression", "diabetes", "progression", DIAB)
    assert again["version"] == 2 and not again["deployed"]  # the same model does not beat itself
    assert query(db, "SELECT version FROM sqlml.deploy('imp_xgboost', version => 2)")[0][0] == 2
    assert query(db, "SELECT version FROM sqlml.deploy('imp_xgboost', 'rollback')")[0][0] == 1
    drift = query(db, "SELECT feature, psi FROM sqlml.monitor('imp_xgboost', 'diabetes')")
    assert {f for f, _ in drift} >= set(DIAB) and all(p < 0.1 for _, p in drift)
    assert query(db, "SELECT * FROM sqlml.evaluate('imp_xgboost', 'diabetes')")
    assert scalar(db, "SELECT sqlml.classes('imp_onnx')") == ["setosa", "versicolor", "virginica"]
    unlabelled = import_model(
        db, "imp_xgboost", blob, "regression", f"(SELECT {', '.join(DIAB)} FROM diabetes)", "progression", DIAB
    )
    assert unlabelled["score"] is None and not unlabelled["deployed"]  # nothing to compare the champion with
    first = import_model(
        db, "imp_unlabelled", imported["imp_onnx"][0], "multiclass", f"(SELECT {', '.join(IRIS)} FROM iris)", "species"
    )
    assert first["score"] is None and first["deployed"]  # the first version of a project needs no comparison
    assert scalar(db, "SELECT sqlml.classes('imp_unlabelled')") == ["0", "1", "2"]  # no labels in graph or data


@pytest.mark.parametrize("project, relation", [("imp_onnx", "iris"), ("imp_catboost", "bc_labelled")])
def test_explain_refuses_an_imported_model(db, imported, project, relation):
    e = sql_error(db, f"SELECT x.* FROM {relation} c, sqlml.explain(%s, c) x WHERE c.id = 1", (project,))
    assert e.pgcode == "0A000" and "imported" in e.diag.message_primary
    e = sql_error(db, "SELECT * FROM sqlml.explain_batch(%s, %s, 'id')", (project, relation))
    assert e.pgcode == "0A000" and "imported" in e.diag.message_primary
    assert sql_error(db, "SELECT * FROM sqlml.importance(%s)", (project,)).pgcode == "55000"


def test_catboost_labels_lineage_and_metrics(db, imported):
    """CatBoost's export: string class labels from its TreeEnsembleClassifier, predict_label as its
    'label' output outside, the producer in the lineage, metrics on the labelled relation."""
    blob, result = imported["imp_catboost_iris"]
    assert scalar(db, "SELECT sqlml.classes('imp_catboost_iris')") == ["setosa", "versicolor", "virginica"]
    got = [r[0] for r in query(db, "SELECT sqlml.predict_label('imp_catboost_iris', c) FROM iris c ORDER BY id")]
    feeds = SOURCES["imp_catboost_iris"][6](fetch(db, QUERIES["imp_catboost_iris"]))
    want = session(blob).run(["label"], feeds)[0]
    assert got == [str(v) for v in want] and len(set(got)) == 3
    metric, score, hyper = query(
        db, "SELECT metric, score, hyperparameters FROM sqlml.models WHERE project = 'imp_catboost_iris'"
    )[0]
    assert hyper["imported"]["producer_name"] == "CatBoost" and score == result["score"]
    assert metric == "log_loss" and 0 <= score < 0.2  # trained on these very rows


def test_a_catboost_model_file_is_refused_with_how_to_export_it(db, tmp_path):
    from catboost import CatBoostRegressor

    d = fetch(db, f"SELECT {', '.join(DIAB)}, progression FROM diabetes")
    model = CatBoostRegressor(iterations=3, thread_count=1, verbose=False, allow_writing_files=False)
    model.fit(np.stack([floats(d[c]) for c in DIAB], axis=1), np.array(d["progression"]))
    model.save_model(str(tmp_path / "model.cbm"))  # CatBoost's own format
    e = sql_error(
        db,
        "SELECT * FROM sqlml.import_model('imp_cbm', %s, 'regression', 'diabetes', columns => %s)",
        ((tmp_path / "model.cbm").read_bytes(), DIAB),
    )
    assert e.pgcode == "22P03" and "CatBoost model file" in e.diag.message_primary
    assert "format='onnx'" in e.diag.message_hint
    assert scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'imp_cbm'") == 0


def bad_models():
    def graph(inputs, outputs, nodes, domains=(("", 17),)):
        g = helper.make_graph(nodes, "g", inputs, outputs)
        return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in domains]).SerializeToString()

    f = lambda name, shape=(None, 1): helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))  # noqa: E731
    s = lambda name: helper.make_tensor_value_info(name, TensorProto.STRING, [None, 1])  # noqa: E731
    return [  # (what, blob, task, columns, SQLSTATE, message fragment)
        ("not onnx", b"this is not a model", "regression", None, "22P03", "not a valid ONNX model"),
        ("empty", b"", "regression", None, "22P03", "empty"),
        (
            "unknown input",
            graph([f("nope")], [f("y")], [helper.make_node("Identity", ["nope"], ["y"])]),
            "regression",
            None,
            "42703",
            'input "nope" matches no column',
        ),
        (
            "string input for a number",
            graph([s("age")], [s("y")], [helper.make_node("Identity", ["age"], ["y"])]),
            "regression",
            None,
            "42804",
            "string tensor",
        ),
        (
            "matrix without columns",
            graph([f("x", (None, 3))], [f("y")], [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)]),
            "regression",
            None,
            "42703",
            "cannot match it to columns by name",
        ),
        (
            "matrix with too few columns",
            graph([f("x", (None, 3))], [f("y")], [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)]),
            "regression",
            ["age", "bmi"],
            "42703",
            "3 columns",
        ),
        (
            "regressor imported as multiclass",
            graph([f("age")], [f("y")], [helper.make_node("Identity", ["age"], ["y"])]),
            "multiclass",
            None,
            "22023",
            "(3 or more)",
        ),
        (
            "no float output",
            graph(
                [f("age")],
                [helper.make_tensor_value_info("y", TensorProto.INT64, [None, 1])],
                [helper.make_node("Cast", ["age"], ["y"], to=TensorProto.INT64)],
            ),
            "regression",
            None,
            "22023",
            "no float output",
        ),
        (
            "operator ONNX Runtime lacks",
            graph(
                [f("age")],
                [f("y")],
                [helper.make_node("Frobnicate", ["age"], ["y"], domain="com.example")],
                (("", 17), ("com.example", 1)),
            ),
            "regression",
            None,
            "0A000",
            "ONNX Runtime cannot run this model",
        ),
        (
            "unknown task",
            graph([f("age")], [f("y")], [helper.make_node("Identity", ["age"], ["y"])]),
            "ranking",
            None,
            "22023",
            'unknown task "ranking"',
        ),
    ]


@pytest.mark.parametrize(
    "what, blob, task, columns, sqlstate, fragment", bad_models(), ids=[b[0] for b in bad_models()]
)
def test_bad_imports_are_refused_cleanly(db, what, blob, task, columns, sqlstate, fragment):
    e = sql_error(
        db, "SELECT * FROM sqlml.import_model('imp_bad', %s, %s, 'diabetes', columns => %s)", (blob, task, columns)
    )
    assert e.pgcode == sqlstate and fragment in e.diag.message_primary, (e.pgcode, e.diag.message_primary)
    assert scalar(db, "SELECT count(*) FROM sqlml.models WHERE project = 'imp_bad'") == 0


def test_a_caller_without_train_cannot_import(db, imported, dsn):
    roles = create_roles(db, dsn)
    try:
        query(db, f'GRANT SELECT ON diabetes TO "{roles["usr"]}", "{roles["dev"]}"')
        query(db, f"SELECT sqlml.grant('imp_xgboost', '{roles['dev']}', 'predict')")
        blob, _ = imported["imp_xgboost"]
        for who in ("usr", "dev"):  # may not create projects; may only predict this one
            conn = roles.connect(who)
            project = "imp_xgboost" if who == "dev" else "imp_new"
            e = sql_error(
                conn,
                "SELECT * FROM sqlml.import_model(%s, %s, 'regression', 'diabetes', columns => %s)",
                (project, blob, DIAB),
            )
            assert e.pgcode == "42501", (who, e.diag.message_primary)
    finally:
        drop_roles(db, roles)
