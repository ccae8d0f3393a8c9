"""A registered model as files that run without sqlml: ONNX + metadata, or a Triton repository.

Formats (``write(blob, row, out, format)``):
  onnx     ``out/model.onnx`` and ``out/sqlml.json``: features and their kinds, the ONNX inputs and
           outputs with their types and shapes, the classes, the metrics, the lineage, and how to
           turn a row into the inputs (the one conversion outside the graph).
  triton   a Triton Inference Server model repository for the ONNX Runtime backend:
           ``out/<project>/config.pbtxt``, ``out/<project>/1/model.onnx``, and the same
           ``sqlml.json`` beside config.pbtxt.

The blob must match the registry's sha256 (checked here, and the written file is checked again):
an export is the model the registry verified, byte for byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlml.errors import DATA_CORRUPTED, FEATURE_NOT_SUPPORTED, INVALID_PARAMETER, SqlmlError
from sqlml.registry import store

FORMATS = ("onnx", "triton")
METADATA = "sqlml.json"

# ONNX tensor element type -> (ONNX type name, Triton data type)
_ELEM = {1: ("tensor(float)", "TYPE_FP32"), 7: ("tensor(int64)", "TYPE_INT64"), 8: ("tensor(string)", "TYPE_STRING"),
         11: ("tensor(double)", "TYPE_FP64"), 9: ("tensor(bool)", "TYPE_BOOL"), 6: ("tensor(int32)", "TYPE_INT32")}

CONVERSION = {
    "numeric": "float32; NULL -> NaN (imputed inside the graph)",
    "boolean": "float32 0.0/1.0; NULL -> NaN",
    "category": 'string; NULL -> "__null__" (ONNX strings cannot be NULL); unseen values are handled by the graph',
    "date": "six float32 inputs <name>__year, __month, __day, __weekday (0 = Monday), __yearday, __epoch_days (UTC)",
    "timestamp": "the six date parts plus <name>__hour and <name>__minute (UTC)",
    "vector": "one float32 input per dimension, <name>__0 ... <name>__<dim-1>",
}


def graph_io(blob: bytes) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of an ONNX graph: [{name, type, shape}] with None for dynamic dims."""
    try:
        import onnx
    except ImportError:  # the light client: onnx is an extra
        raise SqlmlError("exporting a model needs the onnx package", hint="pip install 'sqlml[export]'") from None

    graph = onnx.load_from_string(blob).graph

    def describe(v) -> dict:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        return {"name": v.name, "type": _ELEM[t.elem_type][0], "elem_type": t.elem_type, "shape": shape}

    return [describe(v) for v in graph.input], [describe(v) for v in graph.output]


def metadata(blob: bytes, row: dict) -> dict:
    """The sidecar: everything needed to call model.onnx correctly and to know where it came from."""
    schema = row["feature_schema"]
    inputs, outputs = graph_io(blob)
    for io in inputs + outputs:
        io.pop("elem_type")
    task = row["task"]
    return {
        "sqlml_export": 1,
        "project": row["project"], "version": row["version"], "algorithm": row["algorithm"], "task": task,
        "sha256": row["sha256"], "opset": row["opset"],
        "features": [{"name": f["name"], "kind": f["kind"], "pg_type": f["pg_type"],
                      **({"dim": f["dim"]} if f["kind"] == "vector" else {}), "conversion": CONVERSION[f["kind"]]}
                     for f in schema["features"]],
        "inputs": inputs,
        "outputs": outputs,
        "output_meaning": ({"variable": "the predicted value, shape (n, 1)"} if task == "regression" else
                           {"label": "index into classes of the most probable class, shape (n,)",
                            "probabilities": "one column per class, in the order of classes, shape (n, k)"}),
        "target": {"name": schema["target"]["name"], "pg_type": schema["target"]["pg_type"]},
        "classes": row.get("classes") or [],
        "metric": row["metric"], "score": row["score"], "metrics": row["metrics"],
        "hyperparameters": row["hyperparameters"], "parity": row["parity"],
        "lineage": {k: row.get(k) for k in ("relation", "rows", "data_fingerprint", "library_versions", "created_by",
                                            "created_at", "train_seconds", "job_id", "origin")},
        "dropped_columns": schema.get("dropped", {}),
    }


def triton_config(name: str, blob: bytes) -> str:
    """config.pbtxt for Triton's ONNX Runtime backend.

    ``max_batch_size: 0``: the dims below are the full tensor shapes of the graph, batch
    dimension (-1) included, so the config states exactly what model.onnx takes and returns.
    """
    inputs, outputs = graph_io(blob)

    def tensor(io) -> str:
        dims = ", ".join(str(-1 if d is None else d) for d in io["shape"])
        return f'  {{\n    name: "{io["name"]}"\n    data_type: {_ELEM[io["elem_type"]][1]}\n    dims: [ {dims} ]\n  }}'

    sep = ",\n"
    return (f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
            f"input [\n{sep.join(tensor(i) for i in inputs)}\n]\n"
            f"output [\n{sep.join(tensor(o) for o in outputs)}\n]\n"
            "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n")


def _write_verified(path: Path, blob: bytes, expected: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    if store.sha256(tmp.read_bytes()) != expected:
        tmp.unlink()
        raise SqlmlError(f"{path} does not match the model's sha256 after writing", sqlstate=DATA_CORRUPTED,
                         hint="check the disk and write again")
    os.replace(tmp, path)


def write(blob: bytes, row: dict, out, format: str = "onnx") -> dict:
    """Write model ``row`` (a registry row, ``blob`` its ONNX) to directory ``out``.

    Returns {format, project, version, sha256, files: [paths]}.
    """
    if format not in FORMATS:
        raise SqlmlError(f'unknown export format "{format}"', hint=f"use one of: {', '.join(FORMATS)}",
                         sqlstate=INVALID_PARAMETER)
    if row["task"] == "forecast":  # statistical members as data, and a global member fed by stored history tails
        raise SqlmlError(f'"{row["project"]}" is a forecast project: its model is not one ONNX graph that runs alone',
                         sqlstate=FEATURE_NOT_SUPPORTED,
                         hint=f"forecast it in the database: SELECT * FROM sqlml.forecast('{row['project']}')")
    if store.sha256(blob) != row["sha256"]:
        raise SqlmlError(f'model "{row["project"]}" version {row["version"]} fails its integrity check: the ONNX '
                         f"does not match its sha256", sqlstate=DATA_CORRUPTED,
                         hint="the models table was modified outside sqlml; export another version or retrain")
    out = Path(out)
    meta = json.dumps(metadata(blob, row), indent=2, default=str) + "\n"
    if format == "onnx":
        model_path, meta_path, extra = out / "model.onnx", out / METADATA, []
    else:
        home = out / row["project"]
        model_path, meta_path = home / "1" / "model.onnx", home / METADATA
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.pbtxt").write_text(triton_config(row["project"], blob))
        extra = [home / "config.pbtxt"]
    _write_verified(model_path, blob, row["sha256"])
    meta_path.write_text(meta)
    return {"format": format, "project": row["project"], "version": row["version"], "sha256": row["sha256"],
            "files": [str(p) for p in (model_path, meta_path, *extra)]}
