"""Fitted pipeline -> ONNX bytes, with one input per model input and fixed output names.

Outputs: classifiers give ``label`` (int64 index into the project's classes: pipelines are fitted
on labels encoded 0..k-1) and ``probabilities`` (float32, shape (n, k), no ZipMap); regressors
give ``variable`` (float32, shape (n, 1)).
"""

from __future__ import annotations

import sys

import numpy as np

from sqlml.data.schema import FeatureSchema
from sqlml.data.task import Task, task_of

OPSET = 17
ML_OPSET = 3
_converters: dict = {}  # library module name -> register(): teaches skl2onnx that library's estimators
_registered: set = set()


def add_converter(library: str, register) -> None:
    """``register()`` teaches skl2onnx to convert the estimators of ``library`` (an estimator spec's
    ``register_onnx``, added with it to ``sqlml.automl.estimators``, or a transformer module's own,
    as ``sqlml.automl.target_means``). It runs once, before a conversion that happens while
    ``library`` is loaded."""
    _converters[library] = register


def _register_converters() -> None:
    """Register the converters of the libraries loaded: a model can hold estimators of those only
    (a linear model's export does not import LightGBM)."""
    for library, register in _converters.items():
        if library not in _registered and library in sys.modules:
            register()
            _registered.add(library)


def to_onnx(model, schema: FeatureSchema) -> bytes:
    """Convert a fitted pipeline (or voting ensemble of pipelines) over the model-input frame."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    _register_converters()
    inputs = [(name, StringTensorType([None, 1]) if text else FloatTensorType([None, 1]))
              for name, text in schema.inputs]
    task = task_of(schema.target.task)
    options = {id(model): {"zipmap": False}} if task.classification else {}
    onx = convert_sklearn(model, initial_types=inputs, options=options,
                          target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    outputs = [o.name for o in onx.graph.output]
    rename = dict(zip(outputs, task.outputs))
    # skl2onnx rewrites input names that are not identifiers ("my col" -> "my_col", in order); the
    # model keeps the column names, which PostgreSQL allows to be anything
    restored = {i.name: name for i, (name, _) in zip(onx.graph.input, inputs) if i.name != name}
    internal = {o for node in onx.graph.node for o in node.output} | {t.name for t in onx.graph.initializer}
    taken = internal | set(rename.values()) | set(restored.values())
    for clash in internal & set(restored.values()):  # an intermediate already named like such a column
        rename[clash] = _unique(f"sqlml_{clash}", taken)
    rename.update(restored)
    for node in onx.graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for value in (*onx.graph.input, *onx.graph.output):
        value.name = rename.get(value.name, value.name)
    for t in onx.graph.initializer:
        t.name = rename.get(t.name, t.name)
    onx.producer_name = "sqlml"
    return onx.SerializeToString()


def _unique(name: str, taken: set) -> str:
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    taken.add(candidate)
    return candidate


def session(onnx_bytes: bytes, threads: int = 1):
    """An ONNX Runtime session for scoring with ``threads`` intra-op threads, no spinning."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(int(threads), 1)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def run(sess, feeds: dict, task: Task | str) -> np.ndarray:
    """Probabilities (n, k) for classifiers, values (n,) for regressors."""
    if not task_of(task).classification:
        return sess.run(["variable"], feeds)[0].reshape(-1).astype(np.float64)
    return sess.run(["probabilities"], feeds)[0].astype(np.float64)


def opset_of(onnx_bytes: bytes) -> int:
    import onnx

    m = onnx.load_from_string(onnx_bytes)
    return max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))


def matrix_regressor_to_onnx(model, n_features: int) -> bytes:
    """Convert a fitted regressor over one float matrix input ``features`` (n, n_features) to ONNX
    with output ``variable`` (the forecasters' global model: every feature is numeric)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    _register_converters()
    onx = convert_sklearn(model, initial_types=[("features", FloatTensorType([None, n_features]))],
                          target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    output = onx.graph.output[0].name
    for node in onx.graph.node:
        node.output[:] = ["variable" if o == output else o for o in node.output]
    onx.graph.output[0].name = "variable"
    onx.producer_name = "sqlml"
    return onx.SerializeToString()
