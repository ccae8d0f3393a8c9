"""The scoring core without a database: record text, the split of a graph into plumbing and core,
and row plans (fast way against the general way, values and errors)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from sqlml.automl import ensemble, preprocess
from sqlml.automl.estimators import SPECS
from sqlml.data import convert, record
from sqlml.data.schema import Feature, FeatureSchema, Target
from sqlml.data.task import task_of
from sqlml.errors import SqlmlError
from sqlml.onnx import core
from sqlml.onnx.convert import session, to_onnx
from sqlml.onnx.scorer import Scorer
from sqlml.scoring.rows import RowPlan

RECORDS = [  # record_out text -> fields
    ("(1,2.5,abc)", ["1", "2.5", "abc"]),
    ("(,)", [None, None]),
    ("(1,,)", ["1", None, None]),
    ('("")', [""]),
    ('(" ",x)', [" ", "x"]),
    ('("a,b",c)', ["a,b", "c"]),
    ('("say ""hi""")', ['say "hi"']),
    ('("back\\\\slash",1)', ["back\\slash", "1"]),
    ('("(x)",,"y z")', ["(x)", None, "y z"]),
    ('(t,"[1,2,3]")', ["t", "[1,2,3]"]),
    ('("""")', ['"']),
]


@pytest.mark.parametrize("text, fields", RECORDS)
def test_record_split(text, fields):
    assert record.split(text) == fields


FEATURES = (Feature("a", "numeric", "float8"), Feature("b", "numeric", "int4"), Feature("c", "category", "text"),
            Feature("e", "boolean", "bool"))
TYPES = {"a": 701, "b": 23, "c": 25, "e": 16}


def data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    raw = {"a": rng.normal(size=n) * 10, "b": rng.integers(0, 5, n).astype(float),
           "c": np.array(rng.choice(["x y", "z,w", 'q"', "", None], n), dtype=object),
           "e": rng.integers(0, 2, n).astype(float)}
    raw["a"][::7] = np.nan
    return raw, (raw["a"] > 0).astype(int) ^ (raw["b"] > 2).astype(int)


def fitted(algorithm, task="binary", features=FEATURES):
    raw, y = data()
    schema = FeatureSchema(features, Target("y", "int4", task, (0, 1) if task != "regression" else ()))
    X = convert.as_frame(schema, convert.model_inputs(schema, raw))
    spec = SPECS[algorithm]
    pipe = Pipeline([("pre", preprocess.build(preprocess.Plan.from_data(schema, X), spec.encoding)),
                     ("model", spec.build({"n_estimators": 20}, task_of(task), 1, 0))])
    pipe.fit(X, y if task != "regression" else raw["b"] + 3 * y)
    return pipe, schema, raw


@pytest.mark.parametrize("algorithm, task", [("lightgbm", "binary"), ("lightgbm", "regression"), ("linear", "binary"),
                                             ("random_forest", "binary"), ("extra_trees", "regression")])
def test_split_folds_the_plumbing_and_agrees_with_the_whole_graph(algorithm, task):
    pipe, schema, raw = fitted(algorithm, task)
    blob = to_onnx(pipe, schema)
    split = core.split(blob, schema)
    assert split is not None and split.folded >= 4
    out = ["variable"] if task == "regression" else ["probabilities"]
    full, part = session(blob), session(split.core)
    assert split.check(schema)
    inputs = convert.model_inputs(schema, raw)
    n = len(raw["a"])
    want = full.run(out, convert.as_feeds(schema, inputs))[0]
    assert np.array_equal(want, part.run(out, split.feeds(inputs, n))[0])
    if algorithm == "lightgbm":  # ordinal codes: one float matrix, the shape the per-row path serves
        assert len(split.inputs) == 1 and Scorer(blob, schema).row_columns is not None


def test_an_ensemble_splits_too():
    (p1, schema, raw), (p2, _, _) = fitted("lightgbm"), fitted("linear")
    blob = to_onnx(ensemble.voting([(p1, 0.6), (p2, 0.4)], "binary"), schema)
    scorer = Scorer(blob, schema)
    assert scorer.split is not None
    inputs = convert.model_inputs(schema, raw)
    want = session(blob).run(["probabilities"], convert.as_feeds(schema, inputs))[0]
    got = scorer.run(inputs, len(raw["a"]))  # compiled: the linear member's dot products may round differently
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_a_graph_with_nothing_to_fold_is_scored_whole():
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])
    g = helper.make_graph([helper.make_node("Abs", ["a"], ["variable"])], "g", [x], [y])
    blob = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(blob))
    schema = FeatureSchema((Feature("a", "numeric", "float8"),), Target("y", "float8", "regression"))
    assert core.split(blob, schema) is None
    scorer = Scorer(blob, schema)
    assert scorer.split is None and scorer.row_columns is None
    assert scorer.run({"a": np.array([-2.0, 3.0], dtype=np.float32)}, 2).tolist() == [2.0, 3.0]


def _text(row: dict, names: list[str]) -> str:
    """PostgreSQL's text of a row (record_out), for the row plan."""
    def field(v):
        if v is None:
            return ""
        if isinstance(v, bool):
            return "t" if v else "f"
        s = repr(v) if isinstance(v, float) else str(v)
        if s == "" or any(ch in s for ch in '",\\() \t'):
            return '"' + s.replace("\\", "\\\\").replace('"', '""') + '"'
        return s
    return "(" + ",".join(field(row[n]) for n in names) + ")"


def test_row_plan_fast_way_equals_the_general_way():
    pipe, schema, raw = fitted("lightgbm")
    scorer = Scorer(to_onnx(pipe, schema), schema)
    names = ["id", "e", "c", "b", "a"]  # the table's order, not the model's
    plan = RowPlan(scorer, names, [23] + [TYPES[n] for n in names[1:]], "p")
    assert plan.fast is not None
    want = scorer.run(convert.model_inputs(schema, raw), len(raw["a"]))
    for i in range(len(raw["a"])):
        row = {"id": i, "a": None if math.isnan(raw["a"][i]) else float(raw["a"][i]), "b": int(raw["b"][i]),
               "c": raw["c"][i], "e": bool(raw["e"][i])}
        text = _text(row, names)
        fields = record.split(text)
        np.testing.assert_array_equal(scorer.run_row(plan.fast(fields)), want[i])  # the fast way
        np.testing.assert_array_equal(scorer.run(plan.inputs(fields), 1)[0], want[i])  # the general way
        np.testing.assert_array_equal(plan.scores(text), want[i])


@pytest.mark.parametrize("task, compile, scanned", [(t, c, s) for t in ("binary", "regression") for c in (True, False)
                                                    for s in (True, False)])
def test_row_predictor_equals_the_plan_and_counts_each_row(task, compile, scanned, scanner):
    """``RowPlan.predictor`` (generated: fields into the model's buffer, the answer read from its output),
    compiled or through ONNX Runtime, its fields read by the native scanner or split in Python, against
    ``scores`` and the answer taken from its scores; rows it must leave to the general way (quoted
    fields, infinities, long numerics, bad text) give the same value or the same error, and only rows
    scored are counted."""
    pipe, schema, raw = fitted("lightgbm", task)
    scorer = Scorer(to_onnx(pipe, schema), schema, compile=compile)
    names = ["id", "e", "c", "b", "a"]
    plan = RowPlan(scorer, names, [23, 16, 25, 1700, 701], "p", scanner if scanned else None)  # b: numeric
    assert scanned is (plan.scanner is not None and plan._scanned() is not None)
    answers = None if task == "regression" else [10.0, 20.0]
    count = memoryview(bytearray(16)).cast("q")
    value = plan.predictor(answers, (count, 1))

    def want(text):
        out = plan.scores(text)
        if answers is None:
            return float(out[0])
        return answers[int(np.argmax(out))]

    texts = []
    for i in range(len(raw["a"])):
        row = {"id": i, "a": None if math.isnan(raw["a"][i]) else float(raw["a"][i]), "b": int(raw["b"][i]),
               "c": raw["c"][i], "e": bool(raw["e"][i])}
        texts.append(_text(row, names))
    texts += ["(1,t,x,2,-0.5)", "(1,t,Infinity,2,0.5)", "(1,f,,3,)", "(1,f,,,3.4e+38)", f"(1,f,x,0.{'1' * 400},1)"]
    for text in texts:
        assert value(text) == want(text), text
    assert count[1] == len(texts) and count[0] == 0
    for bad, sqlstate in [("(1,t,x,2,Infinity)", "22023"), ("(1,t,x,-Infinity,1)", "22023"),
                          (f"(1,t,x,{'9' * 400},1)", "22023"), ("(1,t,x,2,1e+39)", "22003"),
                          ('(1,t,"x",2,-1e+39)', "22003")]:
        with pytest.raises(SqlmlError) as e:
            value(bad)
        assert e.value.sqlstate == sqlstate, bad
    assert count[1] == len(texts)


@pytest.mark.parametrize("value, type_oid, message", [("abc", 25, 'feature "a" must be a number'),
                                                      ("Infinity", 701, "cannot score infinite values"),
                                                      ("0x10", 701, "reads '0x10', which is not a number")])
def test_row_plan_errors_name_the_feature(value, type_oid, message):
    pipe, schema, _ = fitted("lightgbm")
    plan = RowPlan(Scorer(to_onnx(pipe, schema), schema), ["a", "b", "c", "e"], [type_oid, 23, 25, 16], "p")
    with pytest.raises(SqlmlError, match=message):
        plan.scores(f"({value},1,x,t)")


@pytest.mark.parametrize("text, message", [
    ("(sNaN,1,x,t)", "reads 'sNaN', which is not a number"),      # Decimal reads it
    ('(1,1,"x,t)', "a quoted field that does not end"),
    ('(1,1,"x\\)', "a quoted field that does not end"),
    ("(1,1,x)", "a row of 3 fields was scored with a plan for 4 columns"),
])
def test_a_row_text_written_by_hand_gets_22P02_naming_the_problem(text, message):
    # sqlml._predict_row may be called directly with any text: a clear error, never an internal one
    pipe, schema, _ = fitted("lightgbm")
    plan = RowPlan(Scorer(to_onnx(pipe, schema), schema), ["a", "b", "c", "e"], [701, 23, 25, 16], "p")
    with pytest.raises(SqlmlError, match=message) as e:
        plan.scores(text)
    assert e.value.sqlstate == "22P02"


def test_row_plan_needs_every_feature():
    pipe, schema, _ = fitted("lightgbm")
    with pytest.raises(SqlmlError, match="feature columns 'c', 'e' missing"):
        RowPlan(Scorer(to_onnx(pipe, schema), schema), ["a", "b"], [701, 23], "p")


def test_the_check_catches_a_wrong_fold():
    pipe, schema, _ = fitted("lightgbm")
    blob = to_onnx(pipe, schema)
    assert core.split(blob, schema).check(schema)
    split = core.split(blob, schema)
    column = next(c for c in split.inputs[0].columns if c.lut)
    key = next(iter(column.lut))
    column.lut[key] += 1.0  # a lookup that disagrees with the graph's LabelEncoder
    assert not split.check(schema)


def test_row_plan_beyond_float32_goes_the_general_way_which_refuses_it():
    pipe, schema, _ = fitted("lightgbm")
    scorer = Scorer(to_onnx(pipe, schema), schema)
    plan = RowPlan(scorer, ["a", "b", "c", "e"], [701, 23, 25, 16], "p")
    for text in ("(1e+39,1,x,t)", "(-3.5e+38,1,x,t)"):
        with pytest.raises(SqlmlError) as e:
            plan.scores(text)
        assert e.value.sqlstate == "22003" and 'feature "a" is' in e.value.message
    assert plan.scores("(3.4e+38,1,x,t)").shape  # the largest float32 is scored


@pytest.mark.parametrize("payload, names, message", [
    (np.array([[1, np.inf], [2, 3]], dtype=np.float32), ["a", "b"], 'feature "b" holds Infinity or a number in 1 row,'),
    (np.array([[1e39, 1], [-1e39, 3]]).astype(np.float32), ["a", "b"],
     'feature "a" holds Infinity or a number in 2 rows'),
    ({"a": np.array([1.0, 3.5e38]), "t": np.array(["x", None], dtype=object)}, [], 'feature "a" holds'),
    ({"v": np.array([[1.0, -np.inf], [0.0, 1.0]])}, [], 'feature "v" holds Infinity or a number in 1 row'),
])
def test_a_chunk_beyond_float32_is_refused(payload, names, message):
    from sqlml.scoring.chunks import check_float32

    with pytest.raises(SqlmlError) as e:
        check_float32(payload, names)
    assert e.value.sqlstate == "22003" and message in e.value.message


def test_a_chunk_within_float32_passes():
    from sqlml.scoring.chunks import check_float32

    check_float32(np.array([[3.4e38, np.nan]], dtype=np.float32), ["a", "b"])
    check_float32({"a": np.array([-3.4e38, np.nan]), "t": np.array(["x"], dtype=object)}, [])


def jsonb_text(row: dict) -> str:
    """What jsonb's output function prints for ``row``: keys by length then bytes, ", " and ": "."""
    import json
    from decimal import Decimal

    def text(v):
        return str(v) if isinstance(v, Decimal) else json.dumps(v, ensure_ascii=False, separators=(", ", ": "))

    items = sorted(row.items(), key=lambda kv: (len(kv[0].encode()), kv[0].encode()))
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {text(v)}" for k, v in items) + "}"


@pytest.fixture(scope="module")
def scanner():
    from sqlml.scoring import textscan

    found = textscan.scanner(None)  # compiled here (LLVM), checked on its probe rows
    assert found is not None
    return found


@pytest.mark.parametrize("scanned", [True, False], ids=["scanner", "parsed"])
def test_json_plan_fast_way_equals_the_general_way(scanned, scanner):
    from decimal import Decimal

    from sqlml.data import values
    from sqlml.scoring.rows import JsonPlan

    pipe, schema, raw = fitted("lightgbm")
    scorer = Scorer(to_onnx(pipe, schema), schema)
    plan = JsonPlan(scorer, "p", scanner if scanned else None)
    assert plan.fast is not None

    def general(row):
        return scorer.run(convert.model_inputs(schema, values.from_rows(schema, [row], "p")), 1)[0]

    rows = [{"a": None if math.isnan(raw["a"][i]) else Decimal(repr(float(raw["a"][i]))), "b": int(raw["b"][i]),
             "c": raw["c"][i], "e": bool(raw["e"][i]), "extra": [1]} for i in range(len(raw["a"]))]
    rows += [{"a": "2.5", "b": 1, "c": True, "e": "t"}, {"a": 1, "b": 1.5, "c": 7, "e": 1}]  # the general way's cases
    count = memoryview(bytearray(8)).cast("q")
    value = plan.predictor([10.0, 20.0], (count, 0))  # what sqlml.predict returns: the answer of the class
    for row in rows:
        np.testing.assert_array_equal(plan.scores(row), general(row))
        assert value(jsonb_text(row)) == [10.0, 20.0][int(np.argmax(general(row)))]
    assert count[0] == len(rows)
    for bad, message in [({"a": 1, "b": 1, "c": "x"}, "feature column 'e' missing"),
                         ({"a": "abc", "b": 1, "c": "x", "e": True}, 'feature "a" must be a number'),
                         ({"a": "Infinity", "b": 1, "c": "x", "e": True}, "cannot score infinite values"),
                         ({"a": Decimal("1e39"), "b": 1, "c": "x", "e": True}, 'feature "a" is 1e\\+39')]:
        with pytest.raises(SqlmlError, match=message):
            plan.scores(bad)
        with pytest.raises(SqlmlError, match=message):
            value(jsonb_text(bad))
    with pytest.raises(SqlmlError, match="cannot score infinite values"):
        plan.scores({"a": Decimal("-Infinity"), "b": 1, "c": "x", "e": True})  # (no jsonb holds it)
    deep = '{"a": "1", "b": 1, "c": "x", "e": true, "z": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(SqlmlError, match="too deeply") as e:
        value(deep)
    assert e.value.sqlstate == "54001"
    assert count[0] == len(rows)


# row texts (id int4, e bool, c text, b numeric, a float8) the scanner reads, or declines (then the
# general way answers): each must score as the general way scores it
ROWS_SCANNED = [
    ("(1,t,x,2,-0.5)", "read"),
    ("(1,f,,,)", "read"),  # NULLs
    ("(1,t,x,2,1.5e-07)", "read"),
    ("(1,t,x,-0,3.4028235e+38)", "read"),  # float32's largest
    ("(1,t,é,12345678901234567890123,1)", "read"),  # a long numeric (strtod's way)
    ("(1,t,never seen,2,1)", "read"),
    ("(1,t,x,2,1e+39)", "declined"),  # beyond float32: the general way refuses it
    ("(1,t,x,2,NaN)", "declined"),
    ("(1,t,x,2,Infinity)", "declined"),
    ("(1,t,x,2,0x10)", "declined"),  # strtod would read it
    ("(1,t,x,2,1.)", "declined"),
    ('(1,t,"x y",2,1)', "declined"),  # a quoted field
    ("(1,true,x,2,1)", "declined"),
    ("(1,t,x,2)", "declined"),  # a field missing
    ("(1,t,x,2,1,2)", "declined"),  # one too many
]


@pytest.mark.parametrize("text, how", ROWS_SCANNED, ids=[f"{i}-{h}" for i, (_, h) in enumerate(ROWS_SCANNED)])
def test_the_scanner_reads_row_text_as_the_general_way(text, how, scanner):
    pipe, schema, raw = fitted("lightgbm")
    plan = RowPlan(Scorer(to_onnx(pipe, schema), schema), ["id", "e", "c", "b", "a"], [23, 16, 25, 1700, 701], "p",
                   scanner)
    count = memoryview(bytearray(8)).cast("q")
    value = plan.predictor([10.0, 20.0], (count, 0))
    env, _ = plan._scanned()
    assert scanner.scan_record(text.encode(), env["LAYOUT"].address) == (0 if how == "read" else 1)
    try:
        want = [10.0, 20.0][int(np.argmax(plan.scores(text)))]
    except SqlmlError as e:
        with pytest.raises(SqlmlError, match=re.escape(e.message)):
            value(text)
        return
    assert value(text) == want


def _number_texts(rng, n: int):
    """Numbers as PostgreSQL prints them and beyond: doubles' shortest text, long significands, exponents
    both ways, halfway points between float32s, integers around 2^53."""
    for _ in range(n):
        k = rng.random()
        if k < 0.3:
            x = float(np.frombuffer(rng.bytes(8), dtype=np.float64)[0])
            if math.isfinite(x):
                yield repr(x)
        elif k < 0.5:
            yield ("-" if k < 0.4 else "") + "".join(rng.choice(list("0123456789"), rng.integers(1, 25))) + "." \
                + "".join(rng.choice(list("0123456789"), rng.integers(1, 25))) \
                + f"e{rng.choice(['', '+', '-'])}{rng.integers(0, 60)}" * (k < 0.45)
        elif k < 0.8:
            f = np.float32(rng.uniform(-3.4e38, 3.4e38) if k < 0.65 else rng.uniform(-10, 10))
            middle = (float(f) + float(np.nextafter(f, np.float32(np.inf)))) / 2
            yield repr(middle)
            yield f"{middle:.25g}"
        else:
            yield f"{rng.integers(0, 2 ** 53 + 10)}e{rng.integers(-25, 25)}"
            yield str(rng.integers(2 ** 53 - 10, 2 ** 53 + 10))


def test_the_scanners_read_numbers_as_python_does(scanner):
    """Every number either scanner reads is ``float()``'s double rounded to float32, bit for bit (the
    fast way's 10^k products and strtod alike), and one beyond float32 is declined."""
    from sqlml.scoring import textscan

    values = np.zeros(1, dtype=np.float32)
    row = memoryview(values).cast("B")
    record = textscan.RecordLayout(1, {0: (textscan.NUMBER, 0)}, row, 0)
    jsonb = textscan.Layout([("a", textscan.NUMBER, 0)], row, 0)
    read = 0
    for text in _number_texts(np.random.default_rng(11), 20000):
        with np.errstate(over="ignore"):
            want = np.float32(float(text))
        for scan, layout, whole in [(scanner.scan_record, record, f"({text})"),
                                    (scanner.scan, jsonb, f'{{"a": {text}}}')]:
            values[:] = 7
            code = scan(whole.encode(), layout.address)
            assert code == (1 if np.isinf(want) else 0), whole
            assert code == 1 or values[0].tobytes() == want.tobytes(), (whole, values[0], want)
            read += code == 0
    assert read > 30000


# jsonb texts the scanner reads, or declines (then the general way answers): each must score as the
# general way scores the same row (keys a: number, b: number, c: category, e: boolean)
SCANNED = [
    ('{"a": 1.5, "b": 2, "c": "x y", "e": true}', "read"),
    ('{"a": -0, "b": 0.000001, "c": "", "e": false}', "read"),
    ('{"a": null, "b": null, "c": null, "e": null}', "read"),
    ('{"a": true, "b": false, "c": "z,w", "e": true}', "read"),  # booleans as numbers
    ('{"a": 12345678901234567890123, "b": 1, "c": "never seen", "e": true}', "read"),
    ('{"a": 1, "b": 2, "c": "x y", "e": true, "aa": "a", "id": 7, "zz": {"c": "}", "a": [1, "]"]}}', "read"),
    ('{"a": 1, "b": 2, "c": "x y", "e": true, "k\\\\": 1}', "declined"),  # an escaped key
    ('{"a": 1, "b": 2, "c": "x y", "e": true, "kk": "\\"", "zz": ["\\"]"]}', "read"),  # escaped values elsewhere
    ('{"b": 2, "a": 1, "c": "x y", "e": true}', "declined"),  # keys out of jsonb's order
    ('{"a": 1, "a": 2, "b": 2, "c": "x y", "e": true}', "declined"),  # a duplicate key
    ('{"a": 1, "b": 2, "c": "q\\"", "e": true}', "declined"),  # an escaped category: q"
    ('{"a": 1, "b": 2, "c": 5, "e": true}', "declined"),  # a number for a category
    ('{"a": "1", "b": 2, "c": "x y", "e": true}', "declined"),  # a number in a string
    ('{"a": 1, "b": 2, "c": "x y", "e": 1}', "declined"),  # a number for a boolean
    ('{"a": 1e39, "b": 2, "c": "x y", "e": true}', "declined"),  # beyond float32
    ('{"a": [1], "b": 2, "c": "x y", "e": true}', "declined"),  # a list for a number
]


def test_a_damaged_scanner_cache_file_is_compiled_again_never_run(tmp_path):
    from sqlml.scoring import textscan

    textscan._load(str(tmp_path))  # compiles and keeps it
    (path,) = tmp_path.glob("textscan-*.o")
    sealed = path.read_bytes()
    for bad in [b"", sealed[:10], sealed[:len(sealed) // 2], bytes([sealed[0] ^ 1]) + sealed[1:],
                sealed[:300] + bytes([sealed[300] ^ 4]) + sealed[301:]]:
        path.write_bytes(bad)
        assert textscan._load(str(tmp_path)) is not None  # (a damaged object run would crash this process)
        assert path.read_bytes() == sealed  # written anew


@pytest.mark.parametrize("text, how", SCANNED, ids=[f"{i}-{h}" for i, (_, h) in enumerate(SCANNED)])
def test_the_scanner_reads_jsonb_text_as_the_general_way(text, how, scanner):
    from sqlml.scoring.rows import JsonPlan, parse

    pipe, schema, raw = fitted("lightgbm")
    plan = JsonPlan(Scorer(to_onnx(pipe, schema), schema), "p", scanner)
    count = memoryview(bytearray(8)).cast("q")
    value = plan.predictor([10.0, 20.0], (count, 0))
    env, _ = plan._scanned()
    layout = env["LAYOUT"]
    assert scanner.scan(text.encode(), layout.address) == (0 if how == "read" else 1)
    try:
        want = [10.0, 20.0][int(np.argmax(plan.scores(parse(text))))]
    except SqlmlError as e:
        with pytest.raises(SqlmlError, match=re.escape(e.message)):
            value(text)
        return
    assert value(text) == want
    assert count[0] == 1


CHUNK_PAGES = [  # (rows a page, pages of the table) -> pages a chunk (rows_per_chunk's rows)
    (100.0, 1_000, 163),  # 100k rows: CHUNK_ROWS (16,384) a chunk
    (100.0, 20_000, 416),  # 2M rows: 48 chunks of 41,666 rows, each chunk's write a subtransaction's XID
    (100.0, 1_000_000, 655),  # 100M rows: MAX_CHUNK_ROWS (65,536) a chunk, memory before subtransactions
    (None, 1_000, 273),  # never analyzed: 60 rows a page guessed
    (100_000.0, 10, 1),  # at least a page
]


@pytest.mark.parametrize("per_page, pages, want", CHUNK_PAGES)
def test_pages_per_chunk(per_page, pages, want):
    from sqlml.scoring.chunks import pages_per_chunk

    assert pages_per_chunk(per_page, pages) == want


ROWS_FEATURES = [Feature("n", "numeric", "numeric"), Feature("flag", "boolean", "bool"),
                 Feature('odd "name"', "category", "varchar"), Feature("v", "vector", "float4[]", 3)]
ROWS_QUERIES = [  # (core columns, the select list after the id, each core column's (attribute, looked up)) or None
    ([core.Column("n"), core.Column("flag")],
     ['src."n"::pg_catalog.float8', 'src."flag"::pg_catalog.int4::pg_catalog.float8'], ((1, False), (2, False))),
    # one category read once for the two core columns it feeds (one-hot)
    ([core.Column('odd "name"', {"a": 1.0}), core.Column("n"), core.Column('odd "name"', {"b": 1.0})],
     ['src."odd ""name"""::pg_catalog.text', 'src."n"::pg_catalog.float8'], ((1, True), (2, False), (1, True))),
    ([core.Column("v")], None, None),  # a vector: not a number of the table
    ([core.Column("n", {"a": 1.0})], None, None),  # a number looked up
    ([core.Column('odd "name"')], None, None),  # a category not looked up
    ([core.Column("absent")], None, None),
]


@pytest.mark.parametrize("columns, items, read", ROWS_QUERIES)
def test_rows_query(columns, items, read):
    from sqlml.scoring.chunks import rows_query

    q = rows_query('"s"."t"', ROWS_FEATURES, tuple(columns), "id")
    if items is None:
        assert q is None
        return
    assert q.items == ('src."id"::pg_catalog.int8', *items) and q.columns == read
    assert q.sql == f'SELECT {", ".join(q.items)} FROM "s"."t" AS src'


@pytest.mark.parametrize("per_page, pages, want", [(100.0, 1_000, 16384), (100.0, 20_000, 41666),
                                                   (100.0, 1_000_000, 65536), (None, 1_000, 16384)])
def test_rows_per_chunk(per_page, pages, want):
    from sqlml.scoring.chunks import rows_per_chunk

    assert rows_per_chunk(per_page, pages) == want
