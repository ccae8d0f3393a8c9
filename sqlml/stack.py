"""The Python packages sqlml needs inside the server, and how to find their versions.

The pins themselves live in pyproject.toml; this module only maps distribution names to the
module each one imports as, so that `sqlml doctor` can check them one by one.
"""

from __future__ import annotations

import importlib
import re
import sys
from importlib import metadata

# distribution -> module it imports as
SERVER_PACKAGES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "scikit-learn": "sklearn",
    "lightgbm": "lightgbm",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "skl2onnx": "skl2onnx",
    "onnxmltools": "onnxmltools",
    "xgboost-cpu": "xgboost",
    "catboost": "catboost",
    "llvmlite": "llvmlite",
    "protobuf": "google.protobuf",
    "sqlglot": "sqlglot",
    "threadpoolctl": "threadpoolctl",
}


def pinned_versions() -> dict[str, str]:
    """Distribution -> pinned version, from sqlml's own metadata (empty if it has none)."""
    try:
        reqs = metadata.requires("sqlml") or []
    except metadata.PackageNotFoundError:
        return {}
    pins = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)\s*(;.*)?$", r.strip())  # pins of any extra (server's)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def check_packages() -> list[dict]:
    """Import each server package; report its version, the pin, and the error if it fails."""
    pins = pinned_versions()
    report = []
    for dist, module in SERVER_PACKAGES.items():
        entry = {"package": dist, "module": module, "pinned": pins.get(dist)}
        try:
            importlib.import_module(module)
            entry["version"] = metadata.version(dist)
            entry["ok"] = entry["pinned"] in (None, entry["version"])
            if not entry["ok"]:
                entry["error"] = f"version {entry['version']} installed, {entry['pinned']} pinned"
        except Exception as e:  # noqa: BLE001 - any import failure is what doctor reports
            entry.update(version=None, ok=False, error=f"{type(e).__name__}: {e}")
        report.append(entry)
    return report


def python_info() -> dict:
    return {
        "version": sys.version.split()[0],
        "executable": sys.executable,
        "prefix": sys.base_prefix,
    }
