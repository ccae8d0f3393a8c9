"""``sqlml.onnx.imported.wrap``: an outside graph in sqlml's input/output convention. Pure: no database.

The wrapped graph must give what the original gives (probabilities reordered to the sorted class
labels), for the input layouts sqlml accepts: one input per column ([n, 1] or [n], float, double,
int64 or string) or one matrix with ``columns``; for a binary output of one column; with ZipMap.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper

from sqlml.onnx import imported
from sqlml.onnx.convert import run, session

KINDS = {"a": "numeric", "b": "numeric", "city": "category"}
N = 50
rng = np.random.default_rng(0)
INPUTS = {
    "a": rng.normal(size=N).astype(np.float32),
    "b": rng.normal(size=N).astype(np.float32),
    "city": np.array(rng.choice(["oslo", "bergen"], N), dtype=object),
}


def model(inputs, nodes, outputs, initializers=(), ml=False):
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    return helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, list(initializers)), opset_imports=opsets
    ).SerializeToString()


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def inside(w, task):
    return run(session(w.onnx), {c: np.asarray(INPUTS[c]).reshape(-1, 1) for c in w.columns}, task)


def const(name, values, elem=TensorProto.FLOAT):
    values = np.asarray(values)
    return helper.make_tensor(name, elem, list(values.shape), values.ravel().tolist())


CASES = {
    # double and [n] inputs, cast and reshaped; a regression of shape [n]
    "double and 1-d inputs": (
        model(
            [vi("a", TensorProto.DOUBLE, [None]), vi("b", TensorProto.DOUBLE, [None])],
            [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT)],
            [vi("y", TensorProto.FLOAT, [None])],
        ),
        "regression",
        None,
        None,
    ),
    # one matrix input matched with columns, int64 cast
    "matrix with columns": (
        model(
            [vi("x", TensorProto.FLOAT, [None, 2])],
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            [vi("y", TensorProto.FLOAT, [None, 1])],
            [const("w", [[2.0], [-1.0]])],
        ),
        "regression",
        ["b", "a"],
        None,
    ),
    # binary with one probability column: becomes [1 - p, p]
    "binary one column": (
        model(
            [vi("a", TensorProto.FLOAT, [None, 1])],
            [helper.make_node("Sigmoid", ["a"], ["p"])],
            [vi("p", TensorProto.FLOAT, [None, 1])],
        ),
        "binary",
        None,
        None,
    ),
    # a classifier node with unsorted string labels, behind ZipMap: reordered to sorted labels
    "unsorted labels and zipmap": (
        model(
            [vi("a", TensorProto.FLOAT, [None, 1]), vi("b", TensorProto.FLOAT, [None, 1])],
            [
                helper.make_node("Concat", ["a", "b"], ["x"], axis=1),
                helper.make_node(
                    "LinearClassifier",
                    ["x"],
                    ["label", "scores"],
                    domain="ai.onnx.ml",
                    coefficients=[1.0, 0.0, 0.0, 1.0, -1.0, -1.0],
                    intercepts=[0.0, 0.0, 0.0],
                    classlabels_strings=["zebra", "ant", "moth"],
                    post_transform="SOFTMAX",
                ),
                helper.make_node(
                    "ZipMap", ["scores"], ["probs"], domain="ai.onnx.ml", classlabels_strings=["zebra", "ant", "moth"]
                ),
            ],
            [
                vi("label", TensorProto.STRING, [None]),
                helper.make_tensor_value_info("probs", TensorProto.UNDEFINED, None),
            ],
            ml=True,
        ),
        "multiclass",
        None,
        ["ant", "moth", "zebra"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_wrapped_graph_predicts_what_the_original_does(name):
    blob, task, columns, classes = CASES[name]
    if name == "unsorted labels and zipmap":  # a ZipMap output's type is a sequence of maps
        import onnx

        m = onnx.load_from_string(blob)
        m.graph.output[1].CopyFrom(
            helper.make_value_info(
                "probs",
                helper.make_sequence_type_proto(
                    helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
                ),
            )
        )
        blob = m.SerializeToString()
    w = imported.wrap(blob, task, KINDS, columns)
    assert w.classes == classes
    want = imported.original_output(blob, w, INPUTS, task)
    np.testing.assert_allclose(inside(w, task), want, rtol=1e-6, atol=1e-7)
    if name == "matrix with columns":
        np.testing.assert_allclose(want, 2 * INPUTS["b"] - INPUTS["a"], rtol=1e-6)
    if name == "unsorted labels and zipmap":  # column 0 is "ant": the original's second score
        x = np.stack([INPUTS["a"], INPUTS["b"]], axis=1).astype(np.float64)
        z = x @ np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]])
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(want, p[:, [1, 2, 0]], rtol=1e-5)


def test_string_input_matches_a_text_column_only():
    blob = model(
        [vi("city", TensorProto.STRING, [None, 1])],
        [
            helper.make_node(
                "LabelEncoder",
                ["city"],
                ["y"],
                domain="ai.onnx.ml",
                keys_strings=["oslo"],
                values_floats=[1.0],
                default_float=0.0,
            )
        ],
        [vi("y", TensorProto.FLOAT, [None, 1])],
        ml=True,
    )
    w = imported.wrap(blob, "regression", KINDS)
    assert w.columns == ["city"] and w.text == [True]
    np.testing.assert_allclose(inside(w, "regression"), (INPUTS["city"] == "oslo").astype(float))
    with pytest.raises(imported.SqlmlError) as e:
        imported.wrap(blob, "regression", {"city": "numeric"})
    assert e.value.sqlstate == "42804"


def doubling_graph(levels: int, first: str | None = None) -> bytes:
    """The 1.5 kB graph of the denial of service: ``Concat(x, x)`` ``levels`` times along the feature
    axis (2**levels columns per row), then a Gather of one column, declared a regression with one
    output. ``first``: an operator applied to the input before (one sqlml does not fold, to hide
    the growth from ``core.split``, so that ONNX Runtime meets it)."""
    nodes, x = [], "a"
    if first is not None:
        nodes.append(helper.make_node(first, [x], ["start"]))
        x = "start"
    for i in range(levels):
        nodes.append(helper.make_node("Concat", [x, x], [f"c{i}"], axis=1))
        x = f"c{i}"
    nodes.append(helper.make_node("Gather", [x, "pick"], ["y"], axis=1))
    return model([vi("a", TensorProto.FLOAT, [None, 1])], nodes, [vi("y", TensorProto.FLOAT, [None, 1])],
                 [const("pick", np.array([0], dtype=np.int64), TensorProto.INT64)])


def test_a_graph_that_doubles_its_rows_is_refused_before_its_columns_are_listed():
    import tracemalloc

    from sqlml.data.schema import Feature, FeatureSchema, Target
    from sqlml.errors import SqlmlError
    from sqlml.onnx import core

    blob = doubling_graph(24)
    assert len(blob) < 2000
    w = imported.wrap(blob, "regression", {"a": "numeric"})
    schema = FeatureSchema((Feature("a", "numeric", "float8"),), Target("y", "float8", "regression", ()))
    tracemalloc.start()
    try:
        e = pytest.raises(SqlmlError, core.split, w.onnx, schema).value
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.sqlstate == "0A000"
    assert f"makes rows of {2 * core.MAX_COLUMNS} columns" in e.message and "Concat" in e.message
    assert peak < 64 * 1024 ** 2  # unbounded, the column lists of 24 doublings took ~300 MB
    narrow = imported.wrap(doubling_graph(4), "regression", {"a": "numeric"})
    assert core.split(narrow.onnx, schema) is not None  # 16 columns fold as before


def test_the_compiler_does_not_take_rows_wider_than_the_limit():
    from sqlml.onnx import compiled, core

    nodes, x = [], "x"
    for i in range(24):
        nodes.append(helper.make_node("Concat", [x, x], [f"c{i}"], axis=1))
        x = f"c{i}"
    wide = model([vi("x", TensorProto.FLOAT, [None, 1])], nodes, [vi(x, TensorProto.FLOAT, [None, None])])
    assert compiled.program(wide, x, [("x", 1)]) is None
    ops, width = compiled.program(model([vi("x", TensorProto.FLOAT, [None, 1])], nodes[:4],
                                        [vi("c3", TensorProto.FLOAT, [None, 16])]), "c3", [("x", 1)])
    assert width == 16 and core.MAX_COLUMNS > width
