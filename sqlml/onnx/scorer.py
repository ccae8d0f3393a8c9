"""A model ready to score: the model's core graph (see ``sqlml.onnx.core``) compiled to native code
(``sqlml.onnx.compiled``), or ONNX Runtime on it.

``Scorer(onnx_bytes, schema)`` splits the graph and checks the folded part on probe rows, then
compiles the core; the compiled code is itself checked against ONNX Runtime on probe rows, and
used only if it agrees (``engine`` says which one scores). Otherwise one ONNX Runtime session: the
core's if the split's check passed, else the whole graph's. It scores model inputs
(``sqlml.data.convert`` layouts) in chunks, and single rows (``run_row``): a call of the native
code, or ONNX Runtime through buffers bound once to the session, which skips its per-call
conversion of inputs. The session is made when first needed: a model loaded from the compiled
cache never makes one.

Outputs: probabilities of shape (n, k) for classifiers, values of shape (n,) for regressors,
float64 either way.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct

import numpy as np

from sqlml.data.schema import FeatureSchema
from sqlml.data.task import task_of
from sqlml.onnx import compiled, core

COMPILED, ONNXRUNTIME = "compiled", "onnxruntime"


class Scorer:
    def __init__(self, onnx_bytes: bytes, schema: FeatureSchema, threads: int = 1, sha256: str | None = None,
                 cache_dir: str | None = None, compile: bool = True):
        """``sha256``: the model's (computed if not given), the key of the compiled code in
        ``cache_dir`` (a directory only this OS user can write; None: no cache)."""
        self.schema = schema
        self.regression = not task_of(schema.target.task).classification
        self.output = "variable" if self.regression else "probabilities"
        self.threads = threads
        self._session = None
        self.compiled, self.cached, self.fallback = None, False, None
        key = directory = None
        if compile:
            try:
                key = compiled.cache_key(sha256 or hashlib.sha256(onnx_bytes).hexdigest())
                directory = compiled.private_directory(cache_dir)
                hit = compiled.from_cache(key, directory, not self.regression)
            except Exception as e:  # noqa: BLE001 - no LLVM: ONNX Runtime scores, as before
                self.fallback, compile, hit = f"{type(e).__name__}: {e}", False, None
            if hit is not None:  # the split and the code, both checked when they were made
                self.compiled, meta = hit
                self.split, self.cached = core.Split.from_json(meta), True
        if self.compiled is None:
            split = core.split(onnx_bytes, schema)
            self.split = split if split is not None and split.check(schema) else None
        self._graph = self.split.core if self.split is not None and self.split.core else onnx_bytes
        if compile and self.compiled is None and self.split is not None \
                and not any(ci.text for ci in self.split.inputs):
            self._compile(key, directory)
        self.engine = COMPILED if self.compiled is not None else ONNXRUNTIME
        if self.compiled is not None:  # every core input in one row, in the core graph's input order
            self.row_columns = tuple(c for ci in self.split.inputs for c in ci.columns)
        else:  # one float matrix in: the shape ``run_row`` serves with ONNX Runtime
            self.row_columns = self.split.inputs[0].columns if self.split and len(self.split.inputs) == 1 \
                and not self.split.inputs[0].text and len(self.split.inputs[0].dims) == 1 else None
        self._binding = None

    def _compile(self, key: str, directory: str | None) -> None:
        inputs = [(ci.name, math.prod(ci.dims)) for ci in self.split.inputs]
        try:
            self.compiled = compiled.load(self.split.core, inputs, self.output, not self.regression, self._reference,
                                          key, directory, self.split.to_json())
        except Exception as e:  # noqa: BLE001 - no LLVM, or LLVM failed: ONNX Runtime scores, as before
            self.fallback = f"{type(e).__name__}: {e}"
            return
        if self.compiled is None:
            self.fallback = "not supported, or disagrees with ONNX Runtime on probe rows"

    @property
    def session(self):
        if self._session is None:
            from sqlml.onnx.convert import session  # not on a cached model's path

            self._session = session(self._graph, self.threads)
        return self._session

    def _reference(self, matrix: np.ndarray) -> np.ndarray:
        """ONNX Runtime on the core graph, for rows of the core inputs concatenated: (n, outputs)."""
        feeds, at = {}, 0
        for ci in self.split.inputs:
            k = math.prod(ci.dims)
            feeds[ci.name] = np.ascontiguousarray(matrix[:, at:at + k]).reshape((-1, *ci.dims))
            at += k
        return self.session.run([self.output], feeds)[0].reshape(len(matrix), -1)

    def run(self, inputs: dict, n: int) -> np.ndarray:
        """Scores of ``n`` rows of model inputs (name -> array of shape (n,))."""
        if self.split is not None:
            feeds = self.split.feeds(inputs, n)
            if self.compiled is not None:
                return self.run_matrix(np.concatenate([feeds[ci.name].reshape(n, -1) for ci in self.split.inputs],
                                                      axis=1))
        else:
            feeds = {name: np.asarray(inputs[name]).reshape(-1, 1) for name, _ in self.schema.inputs}
        return self._shape(self.session.run([self.output], feeds)[0])

    def run_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of rows already laid out as the core matrix (float32, ``row_columns`` order)."""
        if self.compiled is not None:
            return self._shape(self.compiled.run(matrix))
        return self._shape(self.session.run([self.output], {self.split.inputs[0].name: matrix})[0])

    def run_row(self, values) -> np.ndarray:
        """Scores of one row given as its core columns' values (``row_columns`` order): a float32 view
        of shape (k,) or (1,), overwritten by the next call."""
        if self.compiled is not None:
            return self.compiled.run_row(values)
        if self._binding is None:
            self._bind()
        self._pack(self._row_view, 0, *values)
        self.session.run_with_iobinding(self._binding)
        return self._row_out[0]

    def row_entry(self):
        """``run_row`` in parts (``Compiled.row_entry``): (pack, view, score, out), for a row plan's
        generated code, which then scores a row with no Python frame between its fields and the model."""
        if self.compiled is not None:
            return self.compiled.row_entry()
        if self._binding is None:
            self._bind()
        return (self._pack, self._row_view, functools.partial(self.session.run_with_iobinding, self._binding),
                memoryview(self._row_out[0]))

    def _bind(self):
        width = len(self.row_columns)
        self._row_in = np.zeros((1, width), dtype=np.float32)
        self._row_view = memoryview(self._row_in).cast("B")  # written by struct: cheaper than numpy for one row
        self._pack = struct.Struct(f"={width}f").pack_into
        probe = self.session.run([self.output], {self.split.inputs[0].name: self._row_in})[0]
        self._row_out = np.zeros((1, int(np.prod(probe.shape[1:], dtype=int))), dtype=np.float32)
        b = self.session.io_binding()
        b.bind_input(self.split.inputs[0].name, "cpu", 0, np.float32, [1, width], self._row_in.ctypes.data)
        b.bind_output(self.output, "cpu", 0, np.float32, list(probe.shape), self._row_out.ctypes.data)
        self._binding = b

    def _shape(self, out) -> np.ndarray:
        out = np.asarray(out, dtype=np.float64)
        return out.reshape(-1) if self.regression else out
