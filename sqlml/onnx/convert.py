"""Fitted pipeline -> ONNX bytes, with one input per model input and fixed output names.

Outputs: classifiers give ``label`` (int64 index into the project's classes: pipelines are fitted
on labels encoded 0..k-1) and ``probabilities`` (float32, shape (n, k), no ZipMap); regressors
give ``variable`` (float32, shape (n, 1)).
"""

from __future__ import annotations

import sys

import numpy as np

from sqlml.data.schema import REGRESSION, FeatureSchema

OPSET = 17
ML_OPSET = 3
_registered = False


def _round_thresholds_down(node: dict) -> None:
    """LightGBM splits ``x <= t`` with a float64 ``t``; ONNX stores ``t`` as float32, rounded to
    nearest. When that rounds up onto an input value ``x > t``, ONNX sends the row left and
    LightGBM right (seen: 2 rows in 1729 off by 1%). The largest float32 <= t splits every
    float32 input exactly as ``t`` does, so thresholds are rounded down before conversion."""
    if "split_index" not in node:
        return
    t = node.get("threshold")
    if node.get("decision_type") == "<=" and isinstance(t, float):
        with np.errstate(over="ignore"):  # a threshold beyond float32's range becomes its largest value
            f = np.float32(t)
        # compare as float64: NumPy 2 would turn t into float32 and always keep f
        node["threshold"] = float(f) if float(f) <= t else float(np.nextafter(f, np.float32(-np.inf)))
    _round_thresholds_down(node["left_child"])
    _round_thresholds_down(node["right_child"])


def _register_lightgbm() -> None:
    """Teach skl2onnx the LightGBM estimators (converters live in onnxmltools), with float32-exact
    thresholds (see ``_round_thresholds_down``)."""
    global _registered
    if _registered:
        return
    import lightgbm as lgb
    from onnxmltools.convert.lightgbm.operator_converters import LightGbm
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    dump = LightGbm.dump_booster_model

    def dump_float32_exact(*args, **kwargs):
        model, info = dump(*args, **kwargs)
        for tree in model.get("tree_info", []):
            _round_thresholds_down(tree["tree_structure"])
        return model, info

    LightGbm.dump_booster_model = dump_float32_exact  # the converter looks it up in its module
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(lgb.LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
                                convert_lightgbm, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    update_registered_converter(lgb.LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
                                convert_lightgbm, options={"split": None})
    _registered = True


def to_onnx(model, schema: FeatureSchema) -> bytes:
    """Convert a fitted pipeline (or voting ensemble of pipelines) over the model-input frame."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if "lightgbm" in sys.modules:  # a LightGBM model was built with it; a linear export skips its converters
        _register_lightgbm()
    inputs = [(name, StringTensorType([None, 1]) if text else FloatTensorType([None, 1]))
              for name, text in schema.inputs]
    options = {} if schema.target.task == REGRESSION else {id(model): {"zipmap": False}}
    onx = convert_sklearn(model, initial_types=inputs, options=options,
                          target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    outputs = [o.name for o in onx.graph.output]
    rename = dict(zip(outputs, ["variable"] if schema.target.task == REGRESSION else ["label", "probabilities"]))
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


def run(sess, feeds: dict, task: str) -> np.ndarray:
    """Probabilities (n, k) for classifiers, values (n,) for regressors."""
    if task == REGRESSION:
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

    _register_lightgbm()
    onx = convert_sklearn(model, initial_types=[("features", FloatTensorType([None, n_features]))],
                          target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
    output = onx.graph.output[0].name
    for node in onx.graph.node:
        node.output[:] = ["variable" if o == output else o for o in node.output]
    onx.graph.output[0].name = "variable"
    onx.producer_name = "sqlml"
    return onx.SerializeToString()
