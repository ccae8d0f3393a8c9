"""A model ready to score: ONNX Runtime on the model's core graph (see ``sqlml.onnx.core``).

``Scorer(onnx_bytes, schema)`` splits the graph, checks the folded part on probe rows, and keeps
one session: the core's if the check passed, else the whole graph's. It scores
model inputs (``sqlml.data.convert`` layouts) in chunks, and single rows through buffers bound
once to the session (``run_row``), which skips ONNX Runtime's per-call conversion of inputs.

Outputs: probabilities of shape (n, k) for classifiers, values of shape (n,) for regressors,
float64 either way.
"""

from __future__ import annotations

import struct

import numpy as np

from sqlml.data.schema import REGRESSION, FeatureSchema
from sqlml.onnx import core
from sqlml.onnx.convert import session


class Scorer:
    def __init__(self, onnx_bytes: bytes, schema: FeatureSchema, threads: int = 1):
        self.schema = schema
        self.regression = schema.target.task == REGRESSION
        self.output = "variable" if self.regression else "probabilities"
        split = core.split(onnx_bytes, schema)
        if split is not None and split.check(schema):
            self.split, self.session = split, session(split.core, threads)
        else:
            self.split, self.session = None, session(onnx_bytes, threads)
        # one float matrix in: the shape ``run_row`` serves (every model sqlml trains, today)
        self.row_columns = self.split.inputs[0].columns if self.split and len(self.split.inputs) == 1 \
            and not self.split.inputs[0].text and len(self.split.inputs[0].dims) == 1 else None
        self._binding = None

    def run(self, inputs: dict, n: int) -> np.ndarray:
        """Scores of ``n`` rows of model inputs (name -> array of shape (n,))."""
        if self.split is not None:
            feeds = self.split.feeds(inputs, n)
        else:
            feeds = {name: np.asarray(inputs[name]).reshape(-1, 1) for name, _ in self.schema.inputs}
        return self._shape(self.session.run([self.output], feeds)[0])

    def run_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of rows already laid out as the core matrix (float32, ``row_columns`` order)."""
        return self._shape(self.session.run([self.output], {self.split.inputs[0].name: matrix})[0])

    def run_row(self, values) -> np.ndarray:
        """Scores of one row given as its core columns' values (``row_columns`` order): a float32 view
        of shape (k,) or (1,), overwritten by the next call."""
        if self._binding is None:
            self._bind()
        self._pack(self._row_view, 0, *values)
        self.session.run_with_iobinding(self._binding)
        return self._row_out[0]

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
