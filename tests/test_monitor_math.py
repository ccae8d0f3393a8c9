"""The pure parts of operations, without a database: profile warnings, PSI, baselines,
contribution importance, holdout diagnostics, label encoding for evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sqlml.data.profile import Column, personal_data, profile
from sqlml.data.schema import Target
from sqlml.monitor import diagnostics, drift, evaluation, importance

N = 400
rng = np.random.default_rng(0)


def codes(report, name):
    return {w["code"] for c in report["columns"] if c["name"] == name for w in c["warnings"]}


def numbers(values):
    return np.asarray(values, dtype=np.float64)


def test_profile_statistics_and_single_column_warnings():
    i = np.arange(N, dtype=np.float64)
    cols = [
        Column("id", "int4", "numeric", i),
        Column("const", "int4", "numeric", np.full(N, 7.0)),
        Column("sparse", "float8", "numeric", np.where(i % 10 == 0, i, np.nan)),
        Column("email", "text", "category", np.array([f"user{k}@example.com" for k in range(N)], dtype=object)),
        Column("phone", "text", "category", np.array([f"+47 9{k % 50:02d} 12 345" for k in range(N)], dtype=object)),
        Column("city", "text", "category", np.array([["Oslo", "Bergen", None][k % 3] for k in range(N)], dtype=object)),
        Column("code", "text", "category", np.array([f"c{k % 150}" for k in range(N)], dtype=object)),
        Column("flag", "bool", "boolean", (i % 2).astype(float)),
        Column("doc", "jsonb", None, np.array(['{"a": 1}'] * N, dtype=object)),
        Column("born", "date", "date", i * 86400.0),
    ]
    report = profile(N, cols)
    by = {c["name"]: c for c in report["columns"]}
    assert by["id"]["distinct"] == N and by["id"]["min"] == 0.0 and by["id"]["max"] == N - 1
    assert by["id"]["mean"] == pytest.approx((N - 1) / 2)
    assert by["sparse"]["null_share"] == pytest.approx(0.9) and by["city"]["nulls"] == N // 3
    assert by["city"]["top"]["value"] in ("Oslo", "Bergen")
    assert by["born"]["min"] == "1970-01-01" and by["flag"]["max"] is True
    assert codes(report, "id") == {"id_like"}
    assert codes(report, "const") == {"constant"}
    assert codes(report, "sparse") == {"mostly_null"}
    assert codes(report, "email") == {"id_like", "personal_data"}
    assert codes(report, "phone") == {"personal_data"}
    assert codes(report, "code") == {"high_cardinality"}
    assert codes(report, "city") == set() and codes(report, "flag") == set()
    assert codes(report, "doc") == {"unsupported", "constant"}
    assert report["blocking"] == []


@pytest.mark.parametrize("value, expected", [
    ("ann@example.org", None),  # one value is not a column of them: see the list below
    ("+1 (555) 123-4567", None),
])
def test_personal_data_needs_most_values(value, expected):
    assert personal_data("note", [value] + ["plain text"] * 3) == expected


@pytest.mark.parametrize("name, values, kind", [
    ("contact", ["a@b.io", "c.d@e.co.uk", "x+y@z.dev"], "e-mail addresses"),
    ("contact", ["+47 912 34 567", "(555) 123-4567", "0049-30-1234567"], "phone numbers"),
    ("customer_email", ["n/a", "unknown", "none"], 'the column name "customer_email"'),
    ("zip", ["0150", "5003", "9008"], None),  # too few digits for a phone number
])
def test_personal_data_kinds(name, values, kind):
    assert personal_data(name, values) == kind


def test_target_checks_copy_leakage_imbalance():
    y = np.where(rng.random(N) < 0.03, "fraud", "ok").astype(object)
    noise = rng.normal(size=N)
    cols = [
        Column("label", "text", "category", y),
        Column("copy", "int4", "numeric", (y == "fraud").astype(float)),
        Column("leaky", "float8", "numeric", (y == "fraud") * 10 + rng.random(N)),
        Column("noise", "float8", "numeric", noise),
    ]
    report = profile(N, cols, target="label", task="binary")
    assert codes(report, "label") == {"imbalance"}
    assert codes(report, "copy") == {"target_copy"}
    assert codes(report, "noise") == set()
    assert report["blocking"] and "copy" in report["blocking"][0]
    balanced = np.where(noise > 0, "a", "b").astype(object)
    report = profile(N, [Column("label", "text", "category", balanced), Column("leaky", "float8", "numeric", noise)],
                     target="label", task="binary")
    assert codes(report, "leaky") == {"leakage"} and codes(report, "label") == set()


def test_regression_leakage_and_linear_copy():
    y = rng.normal(size=N) * 10
    cols = [Column("y", "float8", "numeric", y), Column("twice", "float8", "numeric", 2 * y + 1),
            Column("close", "float8", "numeric", y + rng.normal(size=N) * 0.5),
            Column("group", "text", "category", np.array(["lo" if v < 0 else "hi" for v in y], dtype=object))]
    report = profile(N, cols, target="y", task="regression")
    assert codes(report, "twice") == {"target_copy"} and codes(report, "close") == {"leakage"}
    assert codes(report, "group") == set()


def test_psi_is_zero_for_the_same_data_and_grows_with_shift():
    x = rng.normal(size=5000)
    base = drift.baseline(x)
    assert base["type"] == "bins" and len(base["freq"]) == len(base["edges"]) + 2
    assert sum(base["freq"]) == pytest.approx(1.0)
    same = drift.psi(base["freq"], drift.frequencies(base, rng.normal(size=5000)))
    small = drift.psi(base["freq"], drift.frequencies(base, rng.normal(0.2, 1, size=5000)))
    large = drift.psi(base["freq"], drift.frequencies(base, rng.normal(1.0, 1, size=5000)))
    assert same < 0.02 < small < drift.MAJOR < large
    assert drift.level(same) == "none" and drift.level(0.15) == "moderate" and drift.level(large) == "major"
    with_nulls = np.where(rng.random(5000) < 0.5, np.nan, rng.normal(size=5000))
    assert drift.psi(base["freq"], drift.frequencies(base, with_nulls)) > drift.MAJOR  # NULLs appearing is drift


def test_psi_known_value():
    # two bins, 50/50 against 90/10: (0.9-0.5) ln(1.8) + (0.1-0.5) ln(0.2)
    assert drift.psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2))


def test_categories_and_few_valued_numbers_bin_by_value():
    cats = np.array(["a"] * 50 + ["b"] * 30 + [None] * 20, dtype=object)
    base = drift.baseline(cats)
    assert base["type"] == "values" and base["values"] == ["a", "b"]
    assert base["freq"] == pytest.approx([0.5, 0.3, 0.0, 0.2])
    unseen = drift.frequencies(base, np.array(["c", "a", None, "c"], dtype=object))
    assert unseen.tolist() == pytest.approx([0.25, 0.0, 0.5, 0.25])
    rooms = drift.baseline(numbers([1, 2, 3, 3, np.nan]))
    assert rooms["type"] == "values" and rooms["values"] == [1.0, 2.0, 3.0]
    assert drift.frequencies(rooms, numbers([3, 4])).tolist() == [0.0, 0.0, 0.5, 0.5, 0.0]


def test_vectors_are_measured_by_their_norm():
    raw = np.array([[3.0, 4.0], [np.nan, np.nan], [0.0, 1.0]])
    assert drift.as_values("vector", raw).tolist()[0] == 5.0 and np.isnan(drift.as_values("vector", raw)[1])


def test_prediction_values_per_task():
    proba = np.array([[0.2, 0.8], [0.9, 0.1]])
    assert drift.prediction_values("binary", proba, ("n", "y")).tolist() == [0.8, 0.1]
    assert drift.prediction_values("multiclass", proba, ("n", "y")).tolist() == ["y", "n"]
    assert drift.prediction_values("regression", numbers([1, 2]), ()).tolist() == [1.0, 2.0]


class LinearExplainer:
    """contribution of each input = its weight * x (a stand-in for sqlml.explain.model.Explainer)."""

    def __init__(self, weights: dict):
        self.features, self.weights, self.calls = list(weights), weights, 0

    def explain(self, inputs, n):
        from sqlml.explain.model import Explanation

        self.calls += 1
        c = np.stack([self.weights[f] * inputs[f] for f in self.features], axis=1)[:, :, None]
        return Explanation(c, np.zeros(1))


def test_importance_is_mean_absolute_contribution_ranked():
    x = rng.normal(size=(500, 2))
    explainer = LinearExplainer({"a": 0.1, "b": -3.0})
    out = importance.mean_abs_contribution(explainer, {"a": x[:, 0], "b": x[:, 1]}, deadline=float("inf"))
    assert out["complete"] and out["rows"] == 500 and [f["feature"] for f in out["features"]] == ["b", "a"]
    assert out["features"][0]["importance"] == pytest.approx(3.0 * np.abs(x[:, 1]).mean())
    assert out["method"] == importance.METHOD


def test_importance_stops_at_the_deadline():
    clock = [0.0]

    def tick():
        clock[0] += 1
        return clock[0]

    x = rng.normal(size=(1000, 1))
    explainer = LinearExplainer({"a": 1.0})
    out = importance.mean_abs_contribution(explainer, {"a": x[:, 0]}, deadline=2.5, clock=tick)
    assert explainer.calls == 3 and out["rows"] == importance.FIRST + 2 * importance.CHUNK and not out["complete"]
    assert "the training budget ran out" in out["note"]
    late = importance.mean_abs_contribution(LinearExplainer({"a": 1.0}), {"a": x[:, 0]}, deadline=-1, clock=tick)
    assert late["rows"] == importance.FIRST and late["features"]  # a spent budget still explains FIRST rows


def test_diagnostics_roc_confusion_and_residuals():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    d = diagnostics.summarise("binary", y, proba, ("no", "yes"))
    assert d["roc"]["auc"] == pytest.approx(1.0) and d["roc"]["positive"] == "yes"
    assert d["confusion"]["matrix"] == [[1, 1], [0, 2]]
    r = diagnostics.summarise("regression", numbers([1, 2, 3]), numbers([1, 2, 5]), ())
    assert r["actual"] == [1.0, 2.0, 3.0] and r["residual_quantiles"]["0.5"] == 0.0
    assert diagnostics.jsonable({"x": float("nan"), "y": np.float32(1.5), "z": [np.int64(2)]}) == \
        {"x": None, "y": 1.5, "z": [2]}


def test_evaluation_encodes_labels_like_training():
    text = Target("species", "text", "multiclass", ("a", "b", "c"))
    y, keep, unseen = evaluation.encode(text, np.array(["b", None, "z", "a"], dtype=object))
    assert y.tolist() == [1, 0] and keep.tolist() == [True, False, False, True] and unseen == 1
    ints = Target("stars", "int4", "multiclass", (1, 3, 5))
    y, keep, unseen = evaluation.encode(ints, numbers([5, 2, np.nan, 1]))
    assert y.tolist() == [2, 0] and unseen == 1
    values = evaluation.evaluate("binary", np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]))
    assert values["accuracy"] == 1.0 and set(values) == {"roc_auc", "log_loss", "accuracy", "f1"}


def test_counters_files_are_summed_and_dead_processes_folded(tmp_path, monkeypatch):
    from sqlml.server import counters

    monkeypatch.setattr(counters, "database_dir", lambda oid=None: str(tmp_path))
    monkeypatch.setattr(counters, "_slots", {})
    monkeypatch.setattr(counters, "_file", {"map": None, "view": None, "used": counters.SLOTS, "broken": False})
    counters.add("churn", 5)
    counters.add("price", 2)
    counters.add("churn", 1)
    assert counters.read() == {"churn": 6, "price": 2}
    mine = next(tmp_path.glob("*.cnt"))
    dead = tmp_path / "999999999-0000.cnt"  # a process that has exited (no such pid)
    dead.write_bytes(mine.read_bytes())
    assert counters.read() == {"churn": 12, "price": 4}
    assert not dead.exists()
    assert json.loads((tmp_path / "archive.json").read_text())["counts"] == {"churn": 6, "price": 2}
    counters.add("churn", 10)  # the live file keeps counting in place
    assert counters.read() == {"churn": 22, "price": 4}
    assert counters.parse(b"not a counters file") == {}
