"""Compiled scoring (sqlml.onnx.compiled): parity with ONNX Runtime per model kind, the fallback when
the compiled code disagrees, and the on-disk cache (in a new backend too, against PostgreSQL)."""

from __future__ import annotations

import ctypes
import json
import os
import stat

import numpy as np
import psycopg2
import pytest
from sklearn.pipeline import Pipeline

from sqlml.automl import ensemble, preprocess
from sqlml.automl.estimators import SPECS
from sqlml.data import convert
from sqlml.data.schema import FeatureSchema, Target
from sqlml.data.task import task_of
from sqlml.onnx import compiled, native
from sqlml.onnx.convert import run, session, to_onnx
from sqlml.onnx.scorer import COMPILED, ONNXRUNTIME, Scorer
from tests.conftest import query, scalar
from tests.test_scoring_core import FEATURES, data


def fit(algorithm, task, n_estimators=20, seed=0, categories=0):
    """(pipeline, schema, raw columns): numbers with NaN, a text category with NULL, a boolean.
    ``categories``: that many values in the text column, which LightGBM then splits on natively
    (as sqlml.train has it do), and on which the label depends."""
    raw, y = data(600, seed)
    by_category = np.zeros(len(y))
    if categories:
        codes = np.random.default_rng(seed).integers(0, categories, len(y))
        raw["c"] = np.array([f"k{v}" if v else None for v in codes], dtype=object)
        y = y ^ (codes % 3 == 0).astype(int)
        by_category = 30.0 * (codes % 3 == 0)
    if task == "multiclass":
        y = y + (raw["b"] > 3).astype(int)
        classes = (0, 1, 2)
    else:
        classes = (0, 1) if task == "binary" else ()
    schema = FeatureSchema(FEATURES, Target("y", "int4", task, classes))
    X = convert.as_frame(schema, convert.model_inputs(schema, raw))
    spec = SPECS[algorithm]
    params = {"n_estimators": n_estimators} if algorithm != "linear" else {}
    pipe = Pipeline([("pre", preprocess.build(preprocess.Plan.from_data(schema, X), spec.encoding)),
                     ("model", spec.build(params, task_of(task), 1, seed))])
    native_categories = {"model__categorical_feature": preprocess.Plan.from_data(schema, X).categorical_indices()} \
        if categories and algorithm == "lightgbm" else {}
    pipe.fit(X, y if task != "regression" else raw["b"] * 10.5 + 3 * y + np.nan_to_num(raw["a"]) + by_category,
             **native_categories)
    return pipe, schema, raw


def voting(task):
    (p1, schema, raw), (p2, _, _), (p3, _, _) = fit("lightgbm", task), fit("random_forest", task), fit("linear", task)
    return ensemble.voting([(p1, 0.5), (p2, 0.3), (p3, 0.2)], task), schema, raw


KINDS = [("lightgbm", "binary"), ("lightgbm", "multiclass"), ("lightgbm", "regression"),
         ("random_forest", "binary"), ("random_forest", "multiclass"), ("random_forest", "regression"),
         ("extra_trees", "binary"), ("extra_trees", "regression"), ("linear", "binary"), ("linear", "multiclass"),
         ("linear", "regression"), ("voting", "binary"), ("voting", "multiclass"), ("voting", "regression")]


def reference(blob, schema, raw):
    """ONNX Runtime on the registered graph as it is."""
    return run(session(blob), convert.as_feeds(schema, convert.model_inputs(schema, raw)), schema.target.task)


def assert_parity(got, want, task):
    if task == "regression":
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    else:
        assert np.array_equal(got.argmax(1), want.argmax(1))
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("algorithm, task", KINDS)
def test_compiled_equals_onnxruntime(algorithm, task):
    pipe, schema, raw = voting(task) if algorithm == "voting" else fit(algorithm, task)
    blob = to_onnx(pipe, schema)
    scorer = Scorer(blob, schema)
    assert scorer.engine == COMPILED, scorer.fallback
    want = reference(blob, schema, raw)
    n = len(raw["a"])
    assert_parity(scorer.run(convert.model_inputs(schema, raw), n), want, task)
    # one row at a time, through the native call
    inputs = convert.model_inputs(schema, raw)
    feeds = scorer.split.feeds(inputs, n)
    matrix = np.concatenate([feeds[ci.name].reshape(n, -1) for ci in scorer.split.inputs], axis=1)
    rows = np.array([scorer.run_row(r.tolist()).copy() for r in matrix], dtype=np.float64)
    assert_parity(rows.reshape(-1) if task == "regression" else rows, want, task)
    if native.supported():  # the object's relocations applied by sqlml, not by LLVM
        assert scorer.compiled.loader == "native"


@pytest.mark.parametrize("algorithm, task", [("lightgbm", "binary"), ("lightgbm", "multiclass"), ("linear", "binary"),
                                             ("voting", "regression"), ("lightgbm on 60 categories", "binary")])
def test_native_loader_runs_the_code_as_llvm_does(algorithm, task, monkeypatch):
    """The same object code, loaded by sqlml.onnx.native and by llvmlite's JIT: the same answers, bit for bit.
    On 60 categories, membership tests read bitmaps (constants the loader relocates)."""
    if algorithm == "voting":
        pipe, schema, raw = voting(task)
    else:
        pipe, schema, raw = fit("lightgbm", task, categories=60) if "categories" in algorithm else fit(algorithm, task)
    scorer = Scorer(to_onnx(pipe, schema), schema)
    inputs = [(ci.name, int(np.prod(ci.dims))) for ci in scorer.split.inputs]
    ops, width = compiled.program(scorer.split.core, scorer.output, inputs)
    largest = max((len(v[2]) for op in ops if op[0] == "trees" for tree in op[3].trees for v in tree.values()
                   if v[0] == "member"), default=0)
    assert (largest > compiled.SWITCH_CASES) == ("categories" in algorithm)
    obj = compiled.compile_object(compiled.ir(ops, inputs, scorer.output, width))
    probes = compiled.probe_rows(ops, inputs, rows=2000, seed=5)
    by_sqlml = compiled.Compiled(obj, probes.shape[1], width)

    def unsupported(obj, given=None):
        raise native.Unsupported("forced")

    monkeypatch.setattr(native, "Loaded", unsupported)
    by_llvm = compiled.Compiled(obj, probes.shape[1], width)
    assert by_llvm.loader == "llvmlite"
    assert by_sqlml.loader == ("native" if native.supported() else "llvmlite")
    assert np.array_equal(by_sqlml.run(probes), by_llvm.run(probes), equal_nan=True)
    assert compiled.agrees(by_sqlml.run(probes), scorer._reference(probes), task != "regression")


def _modes(scorer) -> set:
    inputs = [(ci.name, int(np.prod(ci.dims))) for ci in scorer.split.inputs]
    ops, _ = compiled.program(scorer.split.core, scorer.output, inputs)
    return {v[0] for op in ops if op[0] == "trees" for tree in op[3].trees for v in tree.values()}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_categorical_splits_compile_to_membership_tests(task):
    """LightGBM's categorical splits (a chain of BRANCH_EQ per category in the ONNX graph) run as one
    membership test each, equal to ONNX Runtime on known, unseen and NULL categories."""
    pipe, schema, raw = fit("lightgbm", task, n_estimators=30, categories=30)
    blob = to_onnx(pipe, schema)
    scorer = Scorer(blob, schema)
    assert scorer.engine == COMPILED, scorer.fallback
    assert "member" in _modes(scorer)
    raw["c"][::5] = "never seen"
    assert_parity(scorer.run(convert.model_inputs(schema, raw), len(raw["a"])), reference(blob, schema, raw), task)
    inputs = [(ci.name, int(np.prod(ci.dims))) for ci in scorer.split.inputs]
    ops, _ = compiled.program(scorer.split.core, scorer.output, inputs)
    probes = compiled.probe_rows(ops, inputs, rows=2000, seed=9)
    assert np.array_equal(scorer.compiled.run(probes), scorer._reference(probes), equal_nan=True)


def test_compile_time_is_priced_per_node_and_category_test():
    """Training compiles a deployed model ahead only within its budget: the guess counts the graph's
    tree nodes, each category test of a chain at its own, higher price (LLVM's time on a model of 7-leaf
    trees over ids was 4x what its size alone predicted)."""
    numeric, schema, _ = fit("lightgbm", "binary", n_estimators=30)
    coded, coded_schema, _ = fit("lightgbm", "binary", n_estimators=30, categories=30)
    for blob, want_tests in ((to_onnx(numeric, schema), False), (to_onnx(coded, coded_schema), True)):
        import onnx

        modes = [m for n in onnx.load_from_string(blob).graph.node for a in n.attribute if a.name == "nodes_modes"
                 for m in a.strings]
        tests = modes.count(b"BRANCH_EQ")
        assert (tests > 0) is want_tests
        assert compiled.compile_seconds(blob) == pytest.approx(
            compiled.COMPILE_SECONDS + (len(modes) - tests) * compiled.COMPILE_SECONDS_PER_NODE
            + tests * compiled.COMPILE_SECONDS_PER_CATEGORY_TEST)


def _equality_chain(missing: list, values: list):
    """One tree: node 0..k-1 test x0 == values[i] (true -> leaf k+1, false -> the next test; the last's
    false -> leaf k), ``missing`` per test: nodes_missing_value_tracks_true."""
    from onnx import TensorProto, helper

    k = len(values)
    n = k + 2
    node = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["variable"], domain="ai.onnx.ml", n_targets=1,
        nodes_treeids=[0] * n, nodes_nodeids=list(range(n)), nodes_featureids=[0] * n,
        nodes_modes=["BRANCH_EQ"] * k + ["LEAF", "LEAF"], nodes_values=[*values, 0.0, 0.0],
        nodes_truenodeids=[k + 1] * k + [0, 0], nodes_falsenodeids=[*range(1, k + 1), 0, 0],
        nodes_missing_value_tracks_true=[*missing, 0, 0],
        target_treeids=[0, 0], target_nodeids=[k, k + 1], target_ids=[0, 0], target_weights=[1.0, 2.0])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
                          [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])


@pytest.mark.parametrize("missing, values, merged", [
    ([0, 0, 0], [1.0, 2.0, 7.0], True),
    ([0, 1, 0], [3.0, 0.0, 40.0], True),  # NaN goes true: a test in the middle tracks missing values as true
    ([1, 0], [5.0, 5.0], True),
    ([0, 0, 0], [1.0, 2.5, 3.0], False),  # 2.5 is no category code: the tests stay tests
    ([0, 0], [-1.0, 2.0], False),
    ([0] * 12, [float(c) for c in (0, 1, 2, 3, 5, 7, 31, 32, 33, 40, 63, 64)], True),  # a bitmap of 3 words
    ([0] * 10 + [1], [float(c) for c in range(2, 44, 4)], True),  # a bitmap; NaN goes true
    ([0] * 10, [float(c) for c in (*range(1, 10), 70000)], True),  # a code past BITMAP_CODES: a switch
])
def test_membership_tests_follow_onnxruntime(missing, values, merged):
    blob = _equality_chain(missing, values).SerializeToString()
    ops, width = compiled.program(blob, "variable", [("x", 1)])
    assert any(v[0] == "member" for v in ops[0][3].trees[0].values()) == merged
    obj = compiled.compile_object(compiled.ir(ops, [("x", 1)], "variable", width))
    edges = (-1.0, -0.0, 0.5, 2.5, 41.0, 1e30, -1e30, 2.0 ** 24, 2.0 ** 31, np.inf, -np.inf, np.nan, 70000.0)
    rows = np.array([[v] for v in (*edges, *range(0, 100))], dtype=np.float32)
    want = session(blob).run(None, {"x": rows})[0]
    assert np.array_equal(compiled.Compiled(obj, 1, width).run(rows), want)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_trees_grouped_into_functions_keep_onnxruntime_order(task, monkeypatch):
    """Trees are compiled in groups (a function each): sums stay in ONNX Runtime's float32 order."""
    pipe, schema, raw = fit("lightgbm", task, n_estimators=40)
    blob = to_onnx(pipe, schema)
    split = Scorer(blob, schema, compile=False).split
    inputs = [(ci.name, int(np.prod(ci.dims))) for ci in split.inputs]
    ops, _ = compiled.program(split.core, "variable" if task == "regression" else "probabilities", inputs)
    trees = next(op[3].trees for op in ops if op[0] == "trees")
    monkeypatch.setattr(compiled, "GROUP_NODES", 3 * int(np.median([len(t) for t in trees])))  # a few trees a group
    assert 5 < len(compiled._groups(trees)) < len(trees)
    scorer = Scorer(blob, schema)
    assert scorer.engine == COMPILED, scorer.fallback
    probes = compiled.probe_rows(ops, inputs, rows=2000, seed=4)
    assert np.array_equal(scorer.compiled.run(probes), scorer._reference(probes), equal_nan=True)


def test_native_loader_refuses_what_it_does_not_know():
    with pytest.raises(native.Unsupported):
        native.Loaded(b"not an object file at all" + bytes(64))


GIVEN_GLOBAL_IR = """
@given_cell = external global i64
define i64 @bump() {
  %v = load i64, ptr @given_cell
  %w = add i64 %v, 1
  store i64 %w, ptr @given_cell
  ret i64 %v
}
"""


@pytest.mark.parametrize("loader", ["native", "llvmlite"])
def test_an_outside_symbol_given_by_the_caller_is_where_the_code_reads_and_writes(monkeypatch, loader):
    """``compiled.link(obj, given)``: a global the process does not export (pg_internals' COPY
    source) at the caller's own address, by either loader."""
    def unsupported(obj, given=None):
        raise native.Unsupported("forced")

    if loader == "llvmlite":
        monkeypatch.setattr(native, "Loaded", unsupported)
    cell = ctypes.c_int64(41)
    code, address, used = compiled.link(compiled.compile_object(GIVEN_GLOBAL_IR),
                                        {"given_cell": ctypes.addressof(cell)})
    assert used == loader
    bump = ctypes.CFUNCTYPE(ctypes.c_int64)(address("bump"))
    assert (bump(), bump(), cell.value) == (41, 42, 43)


def test_tree_thresholds_are_exact():
    """Trees are bit for bit ONNX Runtime's (float32 sums in tree order), on the thresholds themselves."""
    pipe, schema, _ = fit("lightgbm", "binary", n_estimators=50)
    scorer = Scorer(to_onnx(pipe, schema), schema)
    inputs = [(ci.name, int(np.prod(ci.dims))) for ci in scorer.split.inputs]
    ops, _ = compiled.program(scorer.split.core, "probabilities", inputs)
    probes = compiled.probe_rows(ops, inputs, rows=2000, seed=3)
    assert np.array_equal(scorer.compiled.run(probes), scorer._reference(probes))


def test_a_wrong_compile_falls_back_to_onnxruntime(monkeypatch):
    pipe, schema, raw = fit("lightgbm", "binary")
    blob = to_onnx(pipe, schema)
    # a compiler that sends x == threshold the wrong way: only the probe rows on thresholds see it
    monkeypatch.setitem(compiled._COMPARE, "BRANCH_LEQ", "olt")
    scorer = Scorer(blob, schema)
    assert scorer.engine == ONNXRUNTIME and scorer.compiled is None
    assert "disagrees" in scorer.fallback
    np.testing.assert_array_equal(scorer.run(convert.model_inputs(schema, raw), len(raw["a"])),
                                  reference(blob, schema, raw))


def test_a_failing_compiler_falls_back(monkeypatch):
    pipe, schema, raw = fit("random_forest", "regression")

    def broken(source, opt=2):
        raise RuntimeError("LLVM ERROR: out of memory")

    monkeypatch.setattr(compiled, "compile_object", broken)
    scorer = Scorer(to_onnx(pipe, schema), schema)
    assert scorer.engine == ONNXRUNTIME and "out of memory" in scorer.fallback


def test_unsupported_nodes_stay_with_onnxruntime():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 2])
    g = helper.make_graph([helper.make_node("Tanh", ["x"], ["variable"])], "g", [x], [y])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    assert compiled.program(blob, "variable", [("x", 2)]) is None


def _regressor(features, trues, falses, modes, width=2):
    """A one-tree TreeEnsembleRegressor over rows of ``width`` floats."""
    from onnx import TensorProto, helper

    n = len(modes)
    node = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["variable"], domain="ai.onnx.ml", n_targets=1,
        nodes_treeids=[0] * n, nodes_nodeids=list(range(n)), nodes_featureids=features, nodes_modes=modes,
        nodes_values=[0.5] * n, nodes_truenodeids=trues, nodes_falsenodeids=falses,
        target_treeids=[0] * n, target_nodeids=list(range(n)), target_ids=[0] * n, target_weights=[1.0] * n)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
                          [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])


@pytest.mark.parametrize("features, trues, falses, modes, compiles", [
    ([0, 0, 0], [1, 0, 0], [2, 0, 0], ["BRANCH_LEQ", "LEAF", "LEAF"], True),
    ([7, 0, 0], [1, 0, 0], [2, 0, 0], ["BRANCH_LEQ", "LEAF", "LEAF"], False),   # a feature beyond the row
    ([0, 1, 0], [1, 2, 0], [2, 2, 0], ["BRANCH_LEQ", "BRANCH_EQ", "LEAF"], True),  # a shared node (categories)
    ([0, 1, 0], [1, 0, 0], [2, 2, 0], ["BRANCH_LEQ", "BRANCH_LT", "LEAF"], False),  # node 0 reached again: a loop
    ([0, 0, 0], [1, 0, 0], [2, 0, 0], ["BRANCH_LEQ", "LEAF", "BRANCH_XYZ"], False),  # a mode it does not know
])
def test_only_well_formed_trees_reach_native_code(features, trues, falses, modes, compiles):
    """An imported model is not trusted: native code reads only inside the row and always ends."""
    blob = _regressor(features, trues, falses, modes).SerializeToString()
    assert (compiled.program(blob, "variable", [("x", 2)]) is not None) == compiles


def test_cache_loads_without_compiling_or_onnxruntime(tmp_path, monkeypatch):
    pipe, schema, raw = fit("lightgbm", "multiclass")
    blob = to_onnx(pipe, schema)
    cache = str(tmp_path / "cache")
    first = Scorer(blob, schema, cache_dir=cache)
    assert first.engine == COMPILED and not first.cached
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    (entry,) = os.listdir(cache)
    assert entry.startswith(__import__("hashlib").sha256(blob).hexdigest())
    assert stat.S_IMODE(os.stat(os.path.join(cache, entry)).st_mode) & 0o077 == 0

    def no_compile(source, opt=2):
        raise AssertionError("compiled again")

    monkeypatch.setattr(compiled, "compile_object", no_compile)
    second = Scorer(blob, schema, cache_dir=cache)
    assert second.engine == COMPILED and second.cached and second._session is None
    want = reference(blob, schema, raw)
    assert_parity(second.run(convert.model_inputs(schema, raw), len(raw["a"])), want, "multiclass")


def test_a_cold_process_loads_the_cache_without_the_ml_stack(tmp_path):
    """What a new backend's first predict imports when the code is cached: no onnx, no onnxruntime,
    no scikit-learn, and on x86-64 Linux no llvmlite."""
    import subprocess
    import sys

    pipe, schema, raw = fit("lightgbm", "binary")
    blob = to_onnx(pipe, schema)
    cache = str(tmp_path / "cache")
    Scorer(blob, schema, cache_dir=cache)
    (tmp_path / "model.onnx").write_bytes(blob)
    (tmp_path / "schema.json").write_text(json.dumps(schema.to_json()))
    code = ("import json, sys; from sqlml.data.schema import FeatureSchema; from sqlml.onnx.scorer import Scorer; "
            f"s = Scorer(open({str(tmp_path / 'model.onnx')!r}, 'rb').read(), "
            f"FeatureSchema.from_json(json.load(open({str(tmp_path / 'schema.json')!r}))), cache_dir={cache!r}); "
            "print(json.dumps([s.engine, s.cached, sorted({m.split('.')[0] for m in sys.modules}), "
            "s.run_row([0.5] * len(s.row_columns)).tolist()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    engine, cached, modules, row = json.loads(out.stdout)
    assert engine == COMPILED and cached
    assert not {"onnx", "onnxruntime", "sklearn", "scipy", "pandas", "skl2onnx", "zipfile"} & set(modules)
    if native.supported():
        assert "llvmlite" not in modules
    assert len(row) == 2


def test_a_cache_entry_that_disagrees_is_compiled_again(tmp_path):
    pipe, schema, raw = fit("lightgbm", "regression")
    blob = to_onnx(pipe, schema)
    cache = str(tmp_path / "cache")
    Scorer(blob, schema, cache_dir=cache)
    (entry,) = os.listdir(cache)
    path = os.path.join(cache, entry)
    data = bytearray(compiled.read_sealed(path))
    _, size, rows, width, outputs, _ = compiled._ENTRY.unpack_from(data)
    at = compiled._ENTRY.size + size + 4 * rows * width
    want = np.frombuffer(bytes(data[at:at + 4 * rows * outputs]), dtype=np.float32)
    data[at:at + 4 * rows * outputs] = (want + 1.0).astype(np.float32).tobytes()  # answers the code does not give
    compiled.write_sealed(path, bytes(data))
    again = Scorer(blob, schema, cache_dir=cache)
    assert again.engine == COMPILED and not again.cached
    with open(path, "rb") as f:  # rewritten by the compile above
        sealed = f.read()
    damaged = [sealed[:len(sealed) // 2], b"",  # cut short; and one bit of the object code flipped: never run
               sealed[:compiled._ENTRY.size + 64] + bytes([sealed[compiled._ENTRY.size + 64] ^ 4])
               + sealed[compiled._ENTRY.size + 65:]]
    for bad in damaged:
        with open(path, "wb") as f:
            f.write(bad)
        assert not Scorer(blob, schema, cache_dir=cache).cached
    assert_parity(again.run(convert.model_inputs(schema, raw), len(raw["a"])), reference(blob, schema, raw),
                  "regression")


def test_a_cache_directory_others_may_write_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert compiled.private_directory(str(shared)) is None
    assert compiled.private_directory(str(tmp_path / "mine")) == str(tmp_path / "mine")


# --- in PostgreSQL ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, """
        CREATE TABLE shop AS
        SELECT i AS id, CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 37 % 100)::float8 END AS spend,
               (i % 5)::int AS visits,
               CASE WHEN i % 11 = 0 THEN NULL ELSE (ARRAY['web', 'app', 'store'])[i % 3 + 1] END AS channel,
               ((i * 37 % 100) + (i % 3) * 25 > 70)::int AS bought
        FROM generate_series(1, 4000) AS i""")
    opts = json.dumps({"ensemble": False, "n_estimators": 30})
    query(conn, "SELECT * FROM sqlml.train('shop', 'SELECT spend, visits, channel, bought FROM shop', 'bought', "
                "algorithms => '{lightgbm}', time_budget => '3 seconds', options => %s)", (opts,))
    yield conn
    conn.close()


def engine_messages(conn) -> list[str]:
    return [m for m in conn.notices if "scores with" in m]


def test_predict_compiles_once_and_new_backends_load_the_cache(db, dsn, cluster):
    onnx, schema = query(db, "SELECT onnx, feature_schema FROM sqlml.models WHERE project = 'shop'")[0]
    schema = FeatureSchema.from_json(schema)
    rows = [r[0] for r in query(db, "SELECT to_jsonb(s) FROM shop s ORDER BY id")]
    from sqlml.data import values

    inputs = convert.model_inputs(schema, values.from_rows(schema, rows))
    want = run(session(bytes(onnx)), convert.as_feeds(schema, inputs),
               "binary")
    sha = scalar(db, "SELECT sha256 FROM sqlml.models WHERE project = 'shop'")
    cache = cluster.data / "sqlml_compiled"
    for entry in cache.glob(sha + "-*"):  # compiled by the training if its budget left time: not this test's case
        entry.unlink()
    seen = []
    for _ in range(2):  # the first backend compiles, the second loads the cache
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        conn.notices = []  # unbounded (psycopg2 keeps 50 by default)
        query(conn, "SET client_min_messages = debug2")  # plpy.debug's level
        proba = np.array([r[0] for r in query(conn, "SELECT sqlml.predict_proba('shop', s) FROM shop s ORDER BY id")])
        seen.append(engine_messages(conn))
        labels = [r[0] for r in query(conn, "SELECT sqlml.predict('shop', s) FROM shop s ORDER BY id")]
        by_json = [r[0] for r in query(conn, "SELECT sqlml.predict('shop', to_jsonb(s)) FROM shop s ORDER BY id")]
        conn.close()
        np.testing.assert_allclose(proba, want, atol=1e-6)
        assert labels == by_json == want.argmax(1).astype(float).tolist()
    assert len(seen[0]) == 1 and "scores with compiled" in seen[0][0] and "from the cache" not in seen[0][0]
    assert len(seen[1]) == 1 and "scores with compiled (from the cache)" in seen[1][0]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    # one entry for this model (the cluster's other test modules cache theirs beside it)
    assert [p.name.split("-")[0] for p in cache.iterdir()].count(sha) == 1


def test_batch_scoring_uses_the_compiled_code(db):
    query(db, "DROP TABLE IF EXISTS shop_scored")
    assert scalar(db, "SELECT sqlml.score('shop', 'shop', 'shop_scored', 'id')") == 4000
    scored = query(db, "SELECT s.prediction, s.probabilities, sqlml.predict_proba('shop', t) FROM shop_scored s "
                       "JOIN shop t USING (id) ORDER BY id")
    assert all(p == float(np.argmax(q)) for p, q, _ in scored)
    np.testing.assert_allclose([q for _, q, _ in scored], [r for _, _, r in scored], atol=1e-7)
    batch = dict(query(db, "SELECT id::int, prediction FROM sqlml.predict_batch('shop', 'shop', 'id')"))
    assert [batch[i] for i in range(1, 4001)] == [p for p, _, _ in scored]


def test_deploy_compiles_ahead_so_a_new_backend_loads_the_cache(db, dsn, cluster):
    sha = scalar(db, "SELECT sha256 FROM sqlml.models WHERE project = 'shop'")
    cache = cluster.data / "sqlml_compiled"
    for entry in cache.glob(sha + "-*"):
        entry.unlink()
    version = scalar(db, "SELECT version FROM sqlml.models WHERE project = 'shop'")
    query(db, "SELECT * FROM sqlml.deploy('shop', version => %s)", (version,))
    assert len(list(cache.glob(sha + "-*"))) == 1  # compiled by the deploy, before any predict
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    conn.notices = []
    query(conn, "SET client_min_messages = debug2")
    assert scalar(conn, "SELECT sqlml.predict('shop', s) FROM shop s WHERE id = 3") in (0.0, 1.0)
    messages = engine_messages(conn)
    conn.close()
    assert len(messages) == 1 and "scores with compiled (from the cache)" in messages[0]


def test_batch_reads_categories_as_text_unseen_and_separator_included(db):
    """Categories reach batch scoring as one text per chunk, looked up in Python: NULL, unseen values
    and values holding the separator (chr(1)) score as a row does."""
    query(db, "DROP TABLE IF EXISTS shop_odd, shop_odd_scored")
    query(db, """CREATE TABLE shop_odd AS SELECT i AS id, (i * 13 % 100)::float8 AS spend, i % 5 AS visits,
                 (ARRAY['web', 'app', NULL, 'kiosk', 'we' || chr(1) || 'b', chr(1), '', 'store'])[i % 8 + 1] AS channel
                 FROM generate_series(1, 800) AS i""")
    assert scalar(db, "SELECT sqlml.score('shop', 'shop_odd', 'shop_odd_scored', 'id')") == 800
    got = query(db, "SELECT s.probabilities, sqlml.predict_proba('shop', t) FROM shop_odd_scored s "
                    "JOIN shop_odd t USING (id) ORDER BY id")
    np.testing.assert_allclose([g for g, _ in got], [w for _, w in got], atol=1e-7)
    batch = query(db, "SELECT b.probabilities, sqlml.predict_proba('shop', t) FROM sqlml.predict_batch('shop', "
                      "'shop_odd', 'id') b JOIN shop_odd t ON t.id = b.id::int ORDER BY t.id")
    np.testing.assert_allclose([g for g, _ in batch], [w for _, w in batch], atol=1e-7)


def test_rows_and_jsonb_are_read_by_the_native_scanners_and_score_as_the_general_way(db, dsn, cluster):
    """``sqlml.predict(p, row)`` and ``sqlml.predict(p, jsonb)`` read the row's text natively
    (``sqlml.scoring.textscan``): the scanners are compiled once into the cache (a new backend loads
    them without LLVM), and every row, the scanners' and the ones they decline (quoted or escaped
    strings, numbers in strings, nested values), scores as ``predict_proba`` (which reads rows in
    Python) does."""
    for entry in (cluster.data / "sqlml_compiled").glob("textscan-*"):
        entry.unlink()
    query(db, "DROP TABLE IF EXISTS shop_json")
    query(db, """CREATE TABLE shop_json AS SELECT i AS id,
                 CASE WHEN i % 9 = 0 THEN NULL ELSE (i * 13 % 100)::numeric / 3 END AS spend,
                 (i % 5)::int2 AS visits,
                 (ARRAY['web', 'app', NULL, 'café', 'we"b', 'a\\b', 'x, y', '', 'store', '{"app"}'])[i % 10 + 1]
                     AS channel,
                 jsonb_build_object('note', 'a "}" ' || i, 'list', jsonb_build_array(i, 'x')) AS extra
                 FROM generate_series(1, 600) AS i""")
    query(db, "DROP TABLE IF EXISTS shop_float")
    # float8 and float4 text: exponents both ways, 17 digits, NaN (the general way's), a negative zero
    query(db, """CREATE TABLE shop_float AS SELECT id, channel,
                 CASE WHEN id % 50 = 0 THEN 'NaN' WHEN id % 50 = 1 THEN -0.0
                      ELSE spend::float8 * 10 ^ (id % 7 * 6 - 18) END AS spend,
                 (visits * 1.1)::float4 AS visits FROM shop_json""")
    texts = [t for t, in query(db, "SELECT s::text FROM shop_float s")]
    assert any("e-" in t for t in texts) and any("e+" in t for t in texts)
    first = psycopg2.connect(dsn)  # a new backend (this module's others have the scanners loaded): it compiles them
    first.autocommit = True
    try:
        by_row = query(first, "SELECT sqlml.predict('shop', s) FROM shop_json s ORDER BY id")
        assert query(first, "SELECT sqlml.predict('shop', to_jsonb(s)) FROM shop_json s ORDER BY id") == by_row
        for table in ("shop_json", "shop_float"):
            got = [p for p, in query(first, f"SELECT sqlml.predict('shop', s) FROM {table} s ORDER BY id")]
            probabilities = query(first, f"SELECT sqlml.predict_proba('shop', s) FROM {table} s ORDER BY id")
            assert got == [float(np.argmax(q)) for q, in probabilities]
        one = """SELECT sqlml.predict('shop', '{"spend": %s, "visits": 1, "channel": "web"}'::jsonb)"""
        assert scalar(first, one % '"12"') == scalar(first, one % "12")  # a number in a string: the general way
    finally:
        first.close()
    assert len(list((cluster.data / "sqlml_compiled").glob("textscan-*.o"))) == 1
    conn = psycopg2.connect(dsn)  # a new backend: the scanner from the cache, no LLVM
    conn.autocommit = True
    try:
        assert query(conn, "SELECT sqlml.predict('shop', to_jsonb(s)) FROM shop_json s ORDER BY id") == by_row
        assert query(conn, "SELECT sqlml.predict('shop', s) FROM shop_json s ORDER BY id") == by_row
        for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
                        "max_parallel_workers_per_gather = 2"):  # parallel workers read jsonb the same way
            query(conn, f"SET {setting}")
        parallel = "SELECT id, sqlml.predict('shop', to_jsonb(s)) FROM shop_json s"
        plan = "\n".join(r[0] for r in query(conn, f"EXPLAIN (ANALYZE, COSTS OFF) {parallel}"))
        assert "Workers Launched" in plan, plan
        assert [p for _, p in sorted(query(conn, parallel))] == [p for p, in by_row]
        assert [p for _, p in sorted(query(conn, parallel.replace("to_jsonb(s)", "s")))] == [p for p, in by_row]
        query(conn, "CREATE FUNCTION pg_temp.llvm_loaded() RETURNS bool LANGUAGE plpython3u "
                    "AS $$ import sys; return 'llvmlite' in sys.modules $$")
        assert scalar(conn, "SELECT pg_temp.llvm_loaded()") is (not native.supported())
    finally:
        conn.close()


def test_categorical_splits_in_postgresql_score_as_onnxruntime(db):
    """A LightGBM model that sqlml.train fits on a 40-value category (native categorical splits, compiled
    as membership tests) scores in sqlml.score and per row as ONNX Runtime does on the registered graph."""
    query(db, """CREATE TABLE shop_cats AS SELECT i AS id, (i * 37 % 100)::float8 AS spend,
                 CASE WHEN i % 13 = 0 THEN NULL ELSE 'store' || (i * 7 % 40) END AS store,
                 (((i * 7 % 40) % 3 = 0) <> ((i * 37 % 100) > 60))::int AS bought
                 FROM generate_series(1, 3000) AS i""")
    opts = json.dumps({"ensemble": False, "n_estimators": 30})
    query(db, "SELECT * FROM sqlml.train('shop_cats', 'SELECT spend, store, bought FROM shop_cats', 'bought', "
              "algorithms => '{lightgbm}', time_budget => '3 seconds', options => %s)", (opts,))
    onnx, schema = query(db, "SELECT onnx, feature_schema FROM sqlml.models WHERE project = 'shop_cats'")[0]
    schema = FeatureSchema.from_json(schema)
    scorer = Scorer(bytes(onnx), schema)
    assert scorer.engine == COMPILED and "member" in _modes(scorer)
    query(db, "INSERT INTO shop_cats VALUES (3001, 10, 'never seen', 0), (3002, NULL, NULL, 1)")
    assert scalar(db, "SELECT sqlml.score('shop_cats', 'shop_cats', 'shop_cats_scored', 'id')") == 3002
    got = query(db, "SELECT s.probabilities, sqlml.predict_proba('shop_cats', t), t.spend, t.store "
                    "FROM shop_cats_scored s JOIN shop_cats t USING (id) ORDER BY id")
    raw = {"spend": np.array([r[2] if r[2] is not None else np.nan for r in got], dtype=np.float64),
           "store": np.array([r[3] for r in got], dtype=object)}
    want = run(session(bytes(onnx)), convert.as_feeds(schema, convert.model_inputs(schema, raw)), "binary")
    assert np.array_equal(np.array([g[0] for g in got]).argmax(1), want.argmax(1))
    np.testing.assert_allclose([g[0] for g in got], want, atol=1e-6, rtol=0)
    np.testing.assert_allclose([g[1] for g in got], want, atol=1e-6, rtol=0)


def test_a_model_of_much_code_compiles_without_llvms_optimiser(monkeypatch):
    """Past OPTIMIZED_IR_BYTES of IR (membership tests make much code of few nodes), -O0: LLVM's -O2
    time grows with the code, and -O0 scores still agree with ONNX Runtime."""
    pipe, schema, raw = fit("lightgbm", "binary", categories=60)
    blob = to_onnx(pipe, schema)
    levels, real = [], compiled.compile_object
    monkeypatch.setattr(compiled, "compile_object", lambda source, opt=2: levels.append((len(source), opt))
                        or real(source, opt))
    assert Scorer(blob, schema).engine == COMPILED
    monkeypatch.setattr(compiled, "OPTIMIZED_IR_BYTES", levels[0][0] - 1)
    scorer = Scorer(blob, schema)
    assert scorer.engine == COMPILED, scorer.fallback
    assert [opt for _, opt in levels] == [2, 0]
    assert_parity(scorer.run(convert.model_inputs(schema, raw), len(raw["a"])), reference(blob, schema, raw), "binary")
