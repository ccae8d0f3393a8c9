"""A model's lineage beyond its relation and its creator: what data it saw, which libraries built it.

Pure: the registry stores these with every version (trained, forecast or imported), and a training
compares the fingerprint with earlier versions' to return one instead of training it again.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

import numpy as np


def fingerprint(n: int, columns: dict, target) -> str:
    """sha256 of ``n`` rows: each column of ``columns`` (name and values, in name order), then the target."""
    h = hashlib.sha256(str(n).encode())
    for name in sorted(columns):
        h.update(name.encode())
        arr = columns[name]
        h.update(repr(arr.tolist()).encode() if arr.dtype == object else np.ascontiguousarray(arr).tobytes())
    h.update(repr(list(target)).encode() if np.asarray(target).dtype == object else np.asarray(target).tobytes())
    return h.hexdigest()


def library_versions() -> dict:
    """{distribution: version} of sqlml and the server-side packages installed beside it."""
    from sqlml import __version__, stack

    out = {"sqlml": __version__}
    for dist in stack.SERVER_PACKAGES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
