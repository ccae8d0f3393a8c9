"""An ONNX model trained elsewhere, checked and wrapped into the graph shape sqlml registers.

sqlml's graphs take one input per model input (float32 or string, shape (n, 1), named after the
column) and give ``probabilities`` (float32 (n, k), columns in the order of the sorted classes)
and ``label`` (int64 index) for classifiers, ``variable`` (float32 (n, 1)) for regressors
(``sqlml.onnx.convert``). ``wrap`` checks an outside model and builds that graph around it:

- the blob must parse as ONNX and pass ``onnx.checker`` (else 22P03), and ONNX Runtime must have
  every operator it uses (else 0A000);
- inputs are matched to the relation's columns by name and type: one input per column, named as
  the column (float/double/int inputs for numeric or boolean columns, string inputs for text), or
  a single numeric matrix input (n, k) whose k columns ``columns`` names in order (else 42703
  for a name, 42804 for a type);
- the output must fit the task (else 22023): one numeric tensor for a regression; for a
  classification a probability tensor (n, k) with k classes (binary: (n, 2), or (n, 1) holding the
  second class's probability), ZipMap removed. Class labels come from the classifier node's
  ``classlabels_*`` when it has them.

The original graph goes in unchanged, its names prefixed (``src_``); the wrapper only casts,
reshapes and concatenates inputs, and reorders, casts and arg-maxes outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sqlml.data.schema import BINARY, CATEGORY, MULTICLASS, REGRESSION
from sqlml.data.task import task_of
from sqlml.errors import (
    DATATYPE_MISMATCH,
    FEATURE_NOT_SUPPORTED,
    INVALID_PARAMETER,
    UNDEFINED_COLUMN,
    SqlmlError,
)

NOT_ONNX = "22P03"  # invalid_binary_representation
PREFIX = "src_"
FLOAT, INT32, INT64, STRING, BOOL, DOUBLE = 1, 6, 7, 8, 9, 11  # onnx.TensorProto
NUMERIC_TYPES = {FLOAT: "float", DOUBLE: "double", INT64: "int64", INT32: "int32"}
CLASSIFIERS = ("TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier", "ZipMap")
NATIVE_FORMATS = {  # a framework's own model file, recognised by its first bytes: what it is, how to export it
    b"CBM1": (
        "a CatBoost model file (.cbm)",
        "export it with model.save_model(path, format='onnx') and pass that file's bytes; CatBoost's ONNX "
        "export takes numeric features only (encode categorical columns before training)",
    ),
}


@dataclass
class Wrapped:
    onnx: bytes  # sqlml's graph shape
    columns: list  # the relation's columns the model reads, in input order
    text: list  # for each, whether it is a string input
    classes: list | None  # class labels in probability order, sorted (None: from the data, or a regression)
    outputs: int  # k for classifiers, 1 for regressors
    producer: dict  # producer name and version, domain, the original's opset


def load(blob: bytes):
    """The parsed model, or 22P03 for bytes that are not a valid ONNX model."""
    import onnx

    if not blob:
        raise SqlmlError("onnx is empty", hint="pass the bytes of an .onnx file", sqlstate=NOT_ONNX)
    for magic, (what, fix) in NATIVE_FORMATS.items():
        if bytes(blob[: len(magic)]) == magic:
            raise SqlmlError(f"onnx is {what}, not an ONNX model", hint=fix, sqlstate=NOT_ONNX)
    try:
        model = onnx.load_from_string(bytes(blob))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf's DecodeError, onnx's ValidationError
        raise SqlmlError(
            f"onnx is not a valid ONNX model: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}",
            hint="pass the bytes of a model saved with onnx.save / skl2onnx / onnxmltools "
            "(psql: pg_read_binary_file, or a bytea parameter)",
            sqlstate=NOT_ONNX,
        ) from None
    if not model.graph.output:
        raise SqlmlError("the ONNX model has no outputs", sqlstate=NOT_ONNX)
    return model


def check_runtime(blob: bytes) -> None:
    """0A000 if ONNX Runtime cannot run the model (an operator or version it lacks)."""
    from sqlml.onnx.convert import session

    try:
        session(blob)
    except Exception as e:
        message = str(e).splitlines()[0][:300]
        if any(
            s in message
            for s in (
                "NOT_IMPLEMENTED",
                "Could not find an implementation",
                "No Op registered",
                "is not a registered function/op",
            )
        ):
            raise SqlmlError(
                f"ONNX Runtime cannot run this model: {message}",
                sqlstate=FEATURE_NOT_SUPPORTED,
                hint="export it with operators and an opset ONNX Runtime supports (sqlml.version(), "
                "onnxruntime's operator list)",
            ) from None
        raise SqlmlError(
            f"ONNX Runtime refuses this model: {message}",
            sqlstate=NOT_ONNX,
            hint="check the model with onnx.checker and onnxruntime before importing it",
        ) from None


def _dims(value_info) -> list:
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _inputs(model):
    init = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init]


def match_inputs(model, kinds: dict, columns: list | None) -> tuple[list, list]:
    """(column names in input order, how each input is fed) for ``kinds`` (relation column -> sqlml
    kind). Each feed is (original input, its element type, its dims, [columns])."""
    inputs = _inputs(model)
    if not inputs:
        raise SqlmlError("the ONNX model has no inputs", sqlstate=NOT_ONNX)
    described = ", ".join(f"{k} ({v})" for k, v in kinds.items())
    feeds, names = [], []
    for i in inputs:
        if not i.type.HasField("tensor_type"):
            raise SqlmlError(
                f'input "{i.name}" is not a tensor',
                sqlstate=DATATYPE_MISMATCH,
                hint="sqlml feeds tensors: one per column, or one numeric matrix",
            )
        elem, dims = i.type.tensor_type.elem_type, _dims(i)
        width = dims[1] if len(dims) == 2 else (1 if len(dims) == 1 else -1)
        if width != 1 and len(inputs) == 1 and len(dims) == 2 and elem in NUMERIC_TYPES:
            cols = list(columns or [])
            if not cols:
                raise SqlmlError(
                    f'input "{i.name}" is one matrix of {width or "any number of"} columns: sqlml cannot '
                    "match it to columns by name",
                    sqlstate=UNDEFINED_COLUMN,
                    hint="pass columns => ARRAY['col1', 'col2', ...], the relation's columns in the matrix's order",
                )
            if width and len(cols) != width:
                raise SqlmlError(
                    f'input "{i.name}" has {width} columns; columns names {len(cols)}',
                    sqlstate=UNDEFINED_COLUMN,
                    hint="name every column of the matrix, in order",
                )
            for c in cols:
                _require(c, kinds, numeric=True, what=f'column "{c}" of input "{i.name}"', described=described)
            feeds.append((i.name, elem, dims, cols))
            names += cols
            continue
        if width != 1 or len(dims) not in (1, 2):
            raise SqlmlError(
                f'input "{i.name}" has shape {dims}: sqlml feeds one column per input (shape [n, 1] or '
                "[n]) or one matrix",
                sqlstate=DATATYPE_MISMATCH,
                hint="export one input per column, named after it",
            )
        if elem != STRING and elem not in NUMERIC_TYPES:
            raise SqlmlError(
                f'input "{i.name}" has element type {elem}; sqlml feeds float, double, int32, int64 or string',
                sqlstate=DATATYPE_MISMATCH,
            )
        _require(i.name, kinds, numeric=elem != STRING, what=f'input "{i.name}"', described=described)
        feeds.append((i.name, elem, dims, [i.name]))
        names.append(i.name)
    if columns is not None and not any(len(f[3]) > 1 or f[3] != [f[0]] for f in feeds):
        raise SqlmlError(
            "columns is for a model with one matrix input; this model takes one input per column",
            sqlstate=INVALID_PARAMETER,
            hint="omit columns",
        )
    return names, feeds


def _require(column: str, kinds: dict, numeric: bool, what: str, described: str) -> None:
    if column not in kinds:
        raise SqlmlError(
            f"{what} matches no column of the relation; columns are: {described}",
            sqlstate=UNDEFINED_COLUMN,
            hint="rename the model's input or the column (a view can rename)",
        )
    kind = kinds[column]
    if numeric and kind not in ("numeric", "boolean"):
        raise SqlmlError(
            f'{what} is numeric but column "{column}" is {kind}',
            sqlstate=DATATYPE_MISMATCH,
            hint="feed a numeric column, or cast it in a view",
        )
    if not numeric and kind != CATEGORY:
        raise SqlmlError(
            f'{what} is a string tensor but column "{column}" is {kind}',
            sqlstate=DATATYPE_MISMATCH,
            hint="feed a text column, or cast it in a view",
        )


def class_labels(model) -> list | None:
    """Class labels of the classifier node, in its probability order, if the graph names them."""
    from onnx import helper

    for node in model.graph.node:
        if node.op_type in CLASSIFIERS and node.domain == "ai.onnx.ml":
            for a in node.attribute:
                if a.name in ("classlabels_int64s", "classlabels_strings", "classlabels_ints"):
                    values = helper.get_attribute_value(a)
                    return [v.decode() if isinstance(v, bytes) else int(v) for v in values]
    return None


def _strip_zipmap(model) -> None:
    """Replace a graph output made by ZipMap with ZipMap's input (the probability tensor)."""
    from onnx import helper

    for node in list(model.graph.node):
        if node.op_type != "ZipMap":
            continue
        outputs = [o for o in model.graph.output if o.name == node.output[0]]
        if not outputs:
            continue
        model.graph.node.remove(node)
        o = outputs[0]
        o.CopyFrom(helper.make_tensor_value_info(node.input[0], FLOAT, [None, None]))


def pick_output(model, task: str):
    """(output name, element type, dims) of the prediction: 22023 if none fits ``task``."""
    outs = [
        (o.name, o.type.tensor_type.elem_type, _dims(o))
        for o in model.graph.output
        if o.type.HasField("tensor_type") and o.type.tensor_type.elem_type in (FLOAT, DOUBLE)
    ]
    if task_of(task).classification:
        outs = [o for o in outs if len(o[2]) == 2] or outs
        named = [o for o in outs if "prob" in o[0].lower()]
    else:
        named = [o for o in outs if o[0].lower() in ("variable", "predictions", "output", "value")]
    listed = ", ".join(f"{o.name}" for o in model.graph.output)
    if not outs:
        raise SqlmlError(
            f"the model has no float output that could hold a {task} prediction (outputs: {listed})",
            sqlstate=INVALID_PARAMETER,
            hint="a regressor needs a numeric output; a classifier a probability tensor (n, classes)",
        )
    if len(outs) > 1 and len(named) != 1:
        raise SqlmlError(
            f"the model has {len(outs)} float outputs ({', '.join(o[0] for o in outs)}); sqlml cannot tell "
            "which is the prediction",
            sqlstate=INVALID_PARAMETER,
            hint="export only the prediction",
        )
    return named[0] if len(outs) > 1 else outs[0]


def wrap(blob: bytes, task: str, kinds: dict, columns: list | None = None) -> Wrapped:
    """Check ``blob`` and wrap it (see the module docstring). ``kinds``: relation column -> sqlml
    feature kind (numeric, boolean, category, ...)."""
    import onnx
    from onnx import compose, helper

    if task not in (BINARY, MULTICLASS, REGRESSION):
        raise SqlmlError(
            f'unknown task "{task}"',
            hint="pass task => 'binary', 'multiclass' or 'regression'",
            sqlstate=INVALID_PARAMETER,
        )
    model = load(blob)
    check_runtime(bytes(blob))
    names, feeds = match_inputs(model, kinds, columns)
    labels = class_labels(model)
    _strip_zipmap(model)
    out_name, _, out_dims = pick_output(model, task)
    width = out_dims[1] if len(out_dims) == 2 else None
    if not task_of(task).classification and width not in (None, 1):
        raise SqlmlError(
            f'output "{out_name}" has shape {out_dims}; a regression predicts one value per row',
            sqlstate=INVALID_PARAMETER,
            hint="pass task => 'multiclass' for class scores",
        )
    if task_of(task).classification:
        if len(out_dims) != 2:
            raise SqlmlError(
                f'output "{out_name}" has shape {out_dims}; a classifier gives probabilities (n, classes)',
                sqlstate=INVALID_PARAMETER,
                hint="pass task => 'regression' for a value",
            )
        if task == BINARY and width not in (None, 1, 2):
            raise SqlmlError(
                f'output "{out_name}" has {width} columns; a binary classifier gives 2 (or 1: the second '
                "class's probability)",
                sqlstate=INVALID_PARAMETER,
                hint="pass task => 'multiclass'",
            )
        if task == MULTICLASS and width is not None and width < 3:
            raise SqlmlError(
                f'output "{out_name}" has {width} columns; a multiclass classifier gives one per class (3 or more)',
                sqlstate=INVALID_PARAMETER,
                hint="pass task => 'binary'",
            )
    producer = {
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "domain": model.domain,
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
    }

    src = compose.add_prefix(model, PREFIX)
    g = src.graph
    nodes, inputs = [], []
    text = {}
    for orig, elem, dims, cols in feeds:
        target = PREFIX + orig
        for c in cols:
            if c not in text:
                text[c] = elem == STRING
                inputs.append(helper.make_tensor_value_info(c, STRING if elem == STRING else FLOAT, [None, 1]))
        x = cols[0] if len(cols) == 1 else f"sqlml_concat_{orig}"
        if len(cols) > 1:
            nodes.append(helper.make_node("Concat", cols, [x], axis=1))
        if elem not in (FLOAT, STRING):
            nodes.append(helper.make_node("Cast", [x], [f"sqlml_cast_{orig}"], to=elem))
            x = f"sqlml_cast_{orig}"
        if len(dims) == 1:
            shape = f"sqlml_shape_{orig}"
            nodes.append(helper.make_node("Constant", [], [shape], value=helper.make_tensor(shape, INT64, [1], [-1])))
            nodes.append(helper.make_node("Reshape", [x, shape], [target]))
        else:
            nodes.append(helper.make_node("Identity", [x], [target]))
    nodes += list(g.node)
    out = PREFIX + out_name
    outputs = []
    as_float = "sqlml_out_float"
    nodes.append(helper.make_node("Cast", [out], [as_float], to=FLOAT))
    if not task_of(task).classification:
        nodes.append(
            helper.make_node(
                "Constant", [], ["sqlml_out_shape"], value=helper.make_tensor("sqlml_out_shape", INT64, [2], [-1, 1])
            )
        )
        nodes.append(helper.make_node("Reshape", [as_float, "sqlml_out_shape"], ["variable"]))
        outputs.append(helper.make_tensor_value_info("variable", FLOAT, [None, 1]))
        k = 1
    else:
        proba = as_float
        if width == 1 or (width is None and task == BINARY and labels is not None and len(labels) == 1):
            nodes.append(
                helper.make_node("Constant", [], ["sqlml_one"], value=helper.make_tensor("sqlml_one", FLOAT, [], [1.0]))
            )
            nodes.append(helper.make_node("Sub", ["sqlml_one", proba], ["sqlml_first"]))
            nodes.append(helper.make_node("Concat", ["sqlml_first", proba], ["sqlml_two"], axis=1))
            proba = "sqlml_two"
            width = 2
        if labels is not None and width is not None and len(labels) != width:
            raise SqlmlError(
                f"the classifier names {len(labels)} classes but its output has {width} columns",
                sqlstate=INVALID_PARAMETER,
            )
        k = width or (len(labels) if labels else None)
        if k is None:
            raise SqlmlError(
                f'output "{out_name}" does not say how many classes it has',
                sqlstate=INVALID_PARAMETER,
                hint="export the probability output with a fixed number of columns",
            )
        if labels is not None and len(labels) == k and labels != sorted(labels):
            order = sorted(range(k), key=lambda j: labels[j])
            nodes.append(
                helper.make_node(
                    "Constant", [], ["sqlml_order"], value=helper.make_tensor("sqlml_order", INT64, [k], order)
                )
            )
            nodes.append(helper.make_node("Gather", [proba, "sqlml_order"], ["sqlml_sorted"], axis=1))
            proba = "sqlml_sorted"
            labels = sorted(labels)
        nodes.append(helper.make_node("Identity", [proba], ["probabilities"]))
        nodes.append(helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0))
        outputs += [
            helper.make_tensor_value_info("label", INT64, [None]),
            helper.make_tensor_value_info("probabilities", FLOAT, [None, k]),
        ]
    graph = helper.make_graph(
        nodes, "sqlml_imported", inputs, outputs, list(g.initializer), value_info=list(g.value_info)
    )
    opsets = {o.domain: o.version for o in src.opset_import}
    opsets[""] = max(opsets.get("", 0), opsets.get("ai.onnx", 0), 13)
    opsets.pop("ai.onnx", None)
    wrapped = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
        ir_version=max(src.ir_version, 7),
        producer_name="sqlml-import",
        functions=list(src.functions),
    )
    onnx.checker.check_model(wrapped)
    blob_out = wrapped.SerializeToString()
    check_runtime(blob_out)
    return Wrapped(blob_out, list(text), [text[c] for c in text], labels, k, producer)


def original_output(blob: bytes, wrapped: Wrapped, inputs: dict, task: str) -> np.ndarray:
    """The original model's prediction on model inputs (column -> array (n,)) through ONNX Runtime,
    in sqlml's layout (probabilities in the sorted classes' order, or values): the wrapper's parity
    check compares the wrapped graph with it."""
    import onnx

    from sqlml.onnx.convert import session

    model = onnx.load_from_string(bytes(blob))
    labels = class_labels(model)
    kinds = {c: CATEGORY if t else "numeric" for c, t in zip(wrapped.columns, wrapped.text)}
    inputs_of = _inputs(model)
    matrix = len(inputs_of) == 1 and len(_dims(inputs_of[0])) == 2 and _dims(inputs_of[0])[1] != 1
    _, feeds = match_inputs(model, kinds, list(wrapped.columns) if matrix else None)
    dtypes = {FLOAT: np.float32, DOUBLE: np.float64, INT64: np.int64, INT32: np.int32}
    fed = {}
    for orig, elem, dims, cols in feeds:
        if elem == STRING:
            x = np.asarray(inputs[cols[0]], dtype=object).reshape(-1, 1)
        else:
            x = np.stack([np.asarray(inputs[c], dtype=np.float32) for c in cols], axis=1).astype(dtypes[elem])
        fed[orig] = x.reshape(-1) if len(dims) == 1 else x
    _strip_zipmap(model)
    out = np.asarray(session(model.SerializeToString()).run([pick_output(model, task)[0]], fed)[0], dtype=np.float64)
    if not task_of(task).classification:
        return out.reshape(-1)
    if out.shape[1] == 1:
        out = np.concatenate([1 - out, out], axis=1)
    if labels is not None and labels != sorted(labels):
        out = out[:, sorted(range(len(labels)), key=lambda j: labels[j])]
    return out
