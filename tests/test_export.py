"""Export round trip: a model leaves the database as files, runs in onnxruntime outside it, and
predicts what ``sqlml.predict_batch`` predicts on the same rows; the Triton repository's
config.pbtxt parses with Triton's own schema and states the graph's names, types and dims; the
registry's sha256 is enforced."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math

import numpy as np
import onnxruntime as ort
import psycopg2
import pytest

import sqlml
from sqlml import samples
from sqlml.data.convert import date_parts
from sqlml.errors import SqlmlError
from sqlml.install import CHECKOUT
from tests.conftest import query

BUDGET = 3


@pytest.fixture(scope="module")
def ml(dsn):
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.autocommit = True
    query(conn, """
        CREATE TABLE tickets AS
        SELECT i AS id,
               (i % 7)::float8 + CASE WHEN i % 13 = 0 THEN NULL ELSE 0 END AS waited_days,
               (i % 3 = 0) AS vip,
               CASE WHEN i % 11 = 0 THEN NULL ELSE (ARRAY['web', 'mail', 'phone'])[i % 3 + 1] END AS channel,
               date '2024-01-01' + (i * 7 % 365) AS opened,
               CASE WHEN (i % 7) + (i % 3) * 2 + CASE WHEN i % 3 = 0 THEN 3 ELSE 0 END > 6 THEN 'escalated'
                    ELSE 'solved' END AS outcome
        FROM generate_series(1, 600) AS i""")
    conn.close()
    client = sqlml.connect(dsn)
    client.train("bc", "breast_cancer", "diagnosis", exclude=["id"], algorithms=["lightgbm"], time_budget=BUDGET)
    client.train("diab", "diabetes", "progression", exclude=["id"], time_budget=BUDGET)
    client.train("tickets", "tickets", "outcome", exclude=["id"], time_budget=BUDGET)
    yield client
    client.close()


def feeds(meta: dict, rows: list[dict]) -> dict:
    """ONNX feeds for ``rows`` built from the sidecar alone (plus calendar parts for dates), as
    a user outside sqlml would."""
    out = {}
    for f in meta["features"]:
        raw = [r.get(f["name"]) for r in rows]
        if f["kind"] == "numeric":
            out[f["name"]] = np.array([math.nan if v is None else float(v) for v in raw], dtype=np.float32)
        elif f["kind"] == "boolean":
            out[f["name"]] = np.array([math.nan if v is None else float(v) for v in raw], dtype=np.float32)
        elif f["kind"] == "category":
            out[f["name"]] = np.array(["__null__" if v is None else str(v) for v in raw], dtype=object)
        elif f["kind"] == "date":
            seconds = np.array([math.nan if v is None else np.datetime64(v, "s").astype("int64") for v in raw],
                               dtype=np.float64)
            for part, values in zip(["year", "month", "day", "weekday", "yearday", "epoch_days"],
                                    date_parts(seconds, False)):
                out[f"{f['name']}__{part}"] = values.astype(np.float32)
        else:
            raise AssertionError(f"test table has no {f['kind']} column")
    types = {"tensor(float)": np.float32, "tensor(string)": object}
    return {i["name"]: out[i["name"]].astype(types[i["type"]]).reshape(-1, 1) for i in meta["inputs"]}


def outside(model_path, meta, rows):
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [o["name"] for o in meta["outputs"]]
    return dict(zip(names, sess.run(names, feeds(meta, rows))))


def inside(ml, project, relation):
    rows = ml.sql(f"SELECT to_jsonb(t) AS r FROM {relation} t ORDER BY id")
    batch = {int(b["id"]): b for b in ml.predict(project, relation)}
    return [r["r"] for r in rows], [batch[r["r"]["id"]] for r in rows]


@pytest.mark.parametrize("project, relation", [("bc", "breast_cancer"), ("diab", "diabetes"), ("tickets", "tickets")])
def test_onnx_export_predicts_like_the_database(ml, tmp_path, project, relation):
    result = ml.export(project, tmp_path)
    model, meta_path = tmp_path / "model.onnx", tmp_path / "sqlml.json"
    assert sorted(result["files"]) == sorted([str(model), str(meta_path)])
    meta = json.loads(meta_path.read_text())
    assert hashlib.sha256(model.read_bytes()).hexdigest() == meta["sha256"] == result["sha256"]

    rows, expected = inside(ml, project, relation)
    got = outside(model, meta, rows)
    if meta["task"] == "regression":
        np.testing.assert_allclose(got["variable"].ravel(), [e["prediction"] for e in expected], rtol=1e-5)
    else:
        np.testing.assert_allclose(got["probabilities"], [e["probabilities"] for e in expected], atol=1e-5)
        labels = [meta["classes"][i] for i in got["label"]]
        assert labels == [e["label"] for e in expected]


def test_sidecar_describes_features_inputs_classes_metrics_and_lineage(ml, tmp_path):
    ml.export("tickets", tmp_path)
    meta = json.loads((tmp_path / "sqlml.json").read_text())
    row = ml.model("tickets")
    kinds = {f["name"]: f["kind"] for f in meta["features"]}
    assert kinds == {"waited_days": "numeric", "vip": "boolean", "channel": "category", "opened": "date"}
    assert all(f["conversion"] for f in meta["features"])
    inputs = {i["name"]: i["type"] for i in meta["inputs"]}
    assert inputs["channel"] == "tensor(string)" and inputs["opened__year"] == "tensor(float)"
    assert [i["name"] for i in meta["inputs"]] == [i["name"] for i in row["feature_schema"]["inputs"]]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert meta["outputs"][1]["shape"] == [None, 2]
    assert meta["classes"] == ml.classes("tickets") == ["escalated", "solved"]
    assert meta["metric"] == row["metric"] and meta["metrics"]["holdout"]
    assert meta["lineage"]["relation"] == "tickets" and meta["lineage"]["rows"] == 600
    assert meta["lineage"]["library_versions"]["onnxruntime"] and meta["lineage"]["data_fingerprint"]
    assert meta["project"] == "tickets" and meta["version"] == row["version"] and meta["target"]["name"] == "outcome"


def triton_schema():
    path = CHECKOUT / ".sqlml" / "triton-schema" / "tritonclient" / "grpc" / "model_config_pb2.py"
    assert path.exists(), f"{path} is missing: `make setup` (scripts/integrations.sh) installs it"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("project, relation", [("tickets", "tickets"), ("diab", "diabetes")])
def test_triton_repository(ml, tmp_path, project, relation):
    from google.protobuf import text_format

    ml.export(project, tmp_path, format="triton")
    home = tmp_path / project
    config = text_format.Parse((home / "config.pbtxt").read_text(), triton_schema().ModelConfig())
    meta = json.loads((home / "sqlml.json").read_text())
    model = home / "1" / "model.onnx"
    assert config.name == project and config.backend == "onnxruntime" and config.max_batch_size == 0

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    triton_type = {"tensor(float)": "TYPE_FP32", "tensor(string)": "TYPE_STRING", "tensor(int64)": "TYPE_INT64"}
    dtype = type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"].enum_type
    for declared, actual in [(config.input, sess.get_inputs()), (config.output, sess.get_outputs())]:
        assert [d.name for d in declared] == [a.name for a in actual]
        for d, a in zip(declared, actual):
            assert dtype.values_by_number[d.data_type].name == triton_type[a.type]
            assert list(d.dims) == [s if isinstance(s, int) else -1 for s in a.shape]
    if meta["task"] == "regression":
        assert [(o.name, list(o.dims)) for o in config.output] == [("variable", [-1, 1])]
    else:
        assert [(o.name, list(o.dims)) for o in config.output] == [("label", [-1]), ("probabilities", [-1, 2])]
        assert any(dtype.values_by_number[i.data_type].name == "TYPE_STRING" for i in config.input)

    rows, expected = inside(ml, project, relation)
    got = outside(model, meta, rows)
    key, want = ("variable", [e["prediction"] for e in expected]) if meta["task"] == "regression" else \
        ("probabilities", [e["probabilities"] for e in expected])
    np.testing.assert_allclose(np.asarray(got[key]).reshape(len(rows), -1), np.asarray(want).reshape(len(rows), -1),
                               rtol=1e-5, atol=1e-5)


def test_export_a_chosen_version(ml, tmp_path):
    second = ml.train("diab", "diabetes", "progression", exclude=["id"], algorithms=["linear"], time_budget=2,
                      options={"deploy": "never"})
    ml.export("diab", tmp_path / "v2", version=second["version"])
    ml.export("diab", tmp_path / "live")
    v2 = json.loads((tmp_path / "v2" / "sqlml.json").read_text())
    live = json.loads((tmp_path / "live" / "sqlml.json").read_text())
    assert v2["version"] == second["version"] and v2["algorithm"] == "linear"
    assert live["version"] == ml.model("diab")["version"] != second["version"]
    with pytest.raises(SqlmlError) as info:
        ml.export("diab", tmp_path / "none", version=99)
    assert info.value.sqlstate == "42704" and not (tmp_path / "none").exists()


def test_a_tampered_model_is_not_exported(ml, dsn, tmp_path):
    ml.train("tamper", "iris", "species", exclude=["id"], algorithms=["linear"], time_budget=2)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, "UPDATE sqlml.models SET onnx = onnx || '\\x00'::bytea WHERE project = 'tamper'")
    conn.close()
    with pytest.raises(SqlmlError) as info:
        ml.export("tamper", tmp_path / "out")
    assert info.value.sqlstate == "XX001" and "integrity" in info.value.message
    assert not (tmp_path / "out").exists()


def test_unknown_format_is_refused(ml, tmp_path):
    with pytest.raises(SqlmlError) as info:
        ml.export("bc", tmp_path, format="pickle")
    assert info.value.sqlstate == "22023" and "onnx, triton" in info.value.hint
