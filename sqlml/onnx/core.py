"""Split a model into its type conversion (done in Python/numpy) and a core graph over float matrices.

The graphs sqlml exports start with per-column plumbing: numeric inputs concatenated into one
matrix, text inputs mapped to numbers (``LabelEncoder`` for ordinal codes, ``OneHotEncoder``),
reshaped, cast and concatenated again. ONNX Runtime pays for every input and node on every call:
for one row of a 20-column LightGBM model the plumbing costs ~15 us against ~2 us for the trees
(measured with onnxruntime 1.32), and in batches it converts every Python string to a C++ string.

``split`` evaluates that plumbing symbolically: each tensor is tracked as a list of *columns*, a
column being a model input, possibly mapped through a lookup table (string -> float). It stops at
the first node it does not know (the estimator, an imputer, a scaler...). The tensors that cross
that line are the *core inputs*; the rest of the graph, unchanged, is the *core*. Filling a core
input is then a copy or a dictionary lookup per column, for one row or for a chunk.

``Split.check`` runs the folded nodes in ONNX Runtime on probe rows (every known category, an
unseen one, NULL, NaN, numbers of several scales) and must find the core inputs identical to
what Python computes; callers use the original graph when it does not (or when ``split``
returns None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sqlml.data.schema import NULL_CATEGORY, FeatureSchema
from sqlml.errors import FEATURE_NOT_SUPPORTED, SqlmlError

FLOAT, STRING = 1, 8  # onnx.TensorProto element types
_ML = "ai.onnx.ml"
# Columns a tensor of one row may have. sqlml's own graphs stay far below (PostgreSQL's 1600 columns
# times 64 one-hot categories each); a graph trained elsewhere beyond it (Concat(x, x) repeated
# doubles its width at each node: 24 of them make 16 million columns per row) is refused before
# its column lists, or ONNX Runtime's tensors, take the server's memory.
MAX_COLUMNS = 1 << 18


@dataclass(frozen=True)
class Column:
    """One column of a core input: model input ``source``, as it is or mapped through ``lut``."""

    source: str
    lut: dict | None = None  # str -> float, for text inputs; None: the value itself
    default: float = math.nan  # what ``lut`` gives for a string it does not hold


@dataclass(frozen=True)
class CoreInput:
    """A tensor of shape (n, *dims) whose row-major columns are ``columns``."""

    name: str
    dims: tuple
    columns: tuple
    text: bool = False  # a string tensor passed through (no lookup known)

    def fill(self, inputs: dict, n: int) -> np.ndarray:
        """This input for ``n`` rows of model inputs (name -> array of shape (n,))."""
        if self.text:
            out = np.empty((n, len(self.columns)), dtype=object)
            for j, c in enumerate(self.columns):
                col = np.asarray(inputs[c.source], dtype=object)
                out[:, j] = np.where(np.equal(col, None), NULL_CATEGORY, col)
            return out.reshape((n, *self.dims))
        out = np.empty((n, len(self.columns)), dtype=np.float32)
        for j, c in enumerate(self.columns):
            if c.lut is None:
                out[:, j] = inputs[c.source]
            else:
                out[:, j] = np.fromiter(map(_table(c).__getitem__, inputs[c.source]), dtype=np.float32, count=n)
        return out.reshape((n, *self.dims))


class _Table(dict):
    """A column's lookup as one dict: its default for strings it does not hold, None as NULL."""

    def __init__(self, column: Column):
        super().__init__(column.lut)
        self.default = column.default
        self[None] = self.get(NULL_CATEGORY, column.default)

    def __missing__(self, key):
        return self.default


_tables: dict = {}


def _table(column: Column) -> _Table:
    t = _tables.get(id(column))
    if t is None or t.column is not column:
        t = _Table(column)
        t.column = column  # keeps id(column) from being reused while cached
        _tables[id(column)] = t
    return t


@dataclass
class Split:
    core: bytes | None  # ONNX model whose inputs are ``inputs``, outputs those of the original
    inputs: tuple  # CoreInput, in the core graph's input order
    folded: int  # nodes evaluated in Python instead of ONNX Runtime
    prefix: bytes | None  # ONNX model of the folded nodes: model inputs in, core inputs out (for ``check``)

    def to_json(self) -> str:
        """The plumbing (inputs, columns, lookups), without the graphs: what the compiled cache keeps."""
        import json

        return json.dumps({"folded": self.folded, "inputs": [
            {"name": ci.name, "dims": list(ci.dims), "text": ci.text,
             "columns": [[c.source, c.lut, c.default] for c in ci.columns]} for ci in self.inputs]})

    @classmethod
    def from_json(cls, text: str) -> Split:
        """A split from ``to_json``, checked when it was made: it has no graphs (``core``, ``prefix`` None)."""
        import json

        d = json.loads(text)
        inputs = tuple(CoreInput(i["name"], tuple(i["dims"]), tuple(Column(s, lut, default) for s, lut, default
                                                                     in i["columns"]), i["text"]) for i in d["inputs"])
        return cls(None, inputs, d["folded"], None)

    def feeds(self, inputs: dict, n: int) -> dict:
        """Core feeds for ``n`` rows of model inputs."""
        return {ci.name: ci.fill(inputs, n) for ci in self.inputs}

    def check(self, schema: FeatureSchema, rows: int = 96, seed: int = 0) -> bool:
        """Whether ONNX Runtime, running the folded nodes themselves, computes every core input
        exactly as ``feeds`` does, on probe rows. The core is the rest of the original graph,
        node for node: equal core inputs give equal outputs. (Cheap: the folded nodes hold no trees.)"""
        from sqlml.onnx.convert import session

        computed = [ci for ci in self.inputs if ci.name not in dict(schema.inputs)]  # not an input passed through
        if not computed:
            return True
        inputs = probe_inputs(schema, self, rows, seed)
        prefix = session(self.prefix)
        want = prefix.run([ci.name for ci in computed],
                          {i.name: inputs[i.name].reshape(-1, 1) for i in prefix.get_inputs()})
        got = self.feeds(inputs, rows)
        return all(np.array_equal(w, got[ci.name], equal_nan=True) for w, ci in zip(want, computed))


def probe_inputs(schema: FeatureSchema, split: Split, rows: int, seed: int) -> dict:
    """Model inputs that visit every category the lookups know, unseen ones, NULL, NaN and numbers."""
    rng = np.random.default_rng(seed)
    known: dict[str, list] = {}
    for ci in split.inputs:
        for c in ci.columns:
            if c.lut is not None:
                known.setdefault(c.source, []).extend(c.lut)
    out = {}
    for name, text in schema.inputs:
        if text:
            pool = sorted(set(known.get(name, []))) + [NULL_CATEGORY, "\x00unseen"]
            out[name] = np.array([pool[i % len(pool)] for i in rng.permutation(rows)], dtype=object)
        else:
            v = rng.normal(size=rows) * rng.choice([1.0, 10.0, 1000.0], size=rows)
            ints = rng.random(rows) < 0.2
            v[ints] = rng.integers(0, 5, size=int(ints.sum()))
            v[rng.random(rows) < 0.15] = np.nan
            out[name] = v.astype(np.float32)
    return out


@dataclass
class _Sym:
    """A tensor known column by column: shape (n, *dims), columns in row-major order."""

    columns: list
    dims: tuple
    text: bool


def split(onnx_bytes: bytes, schema: FeatureSchema) -> Split | None:
    """The model split into Python-side conversion and a core graph, or None if nothing folds."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    syms: dict[str, _Sym] = {}
    for i in g.input:
        elem = i.type.tensor_type.elem_type
        if elem not in (FLOAT, STRING):
            return None
        syms[i.name] = _Sym([Column(i.name)], (1,), elem == STRING)
    core_nodes = []
    for node in g.node:
        out = _fold(node, syms, consts) if all(x in syms or x in consts for x in node.input) else None
        if out is None:
            core_nodes.append(node)
        else:
            syms[node.output[0]] = out
    folded = len(g.node) - len(core_nodes)
    if folded == 0:
        return None
    needed = [x for n in core_nodes for x in n.input] + [o.name for o in g.output]
    cut = list(dict.fromkeys(x for x in needed if x in syms))
    if any(o.name in syms for o in g.output):
        return None
    inputs = tuple(CoreInput(name, syms[name].dims, tuple(syms[name].columns), syms[name].text
                             and all(c.lut is None for c in syms[name].columns)) for name in cut)
    if any(ci.text and any(c.lut is not None for c in ci.columns) for ci in inputs):
        return None
    used = {x for n in core_nodes for x in n.input}
    graph = helper.make_graph(
        core_nodes, g.name + "_core",
        [helper.make_tensor_value_info(ci.name, STRING if ci.text else FLOAT, [None, *ci.dims]) for ci in inputs],
        list(g.output), [t for t in g.initializer if t.name in used],
        value_info=[v for v in g.value_info if v.name in used])
    core = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                             producer_name="sqlml-core")
    folded_nodes = [n for n in g.node if n.output[0] in syms]
    made = {x for n in folded_nodes for x in n.input}
    prefix = helper.make_model(helper.make_graph(
        folded_nodes, g.name + "_prefix", [i for i in g.input if i.name in made],
        [helper.make_tensor_value_info(ci.name, FLOAT, [None, *ci.dims]) for ci in inputs if not ci.text
         and ci.name not in {i.name for i in g.input}],
        [t for t in g.initializer if t.name in made]),
        opset_imports=list(model.opset_import), ir_version=model.ir_version, producer_name="sqlml-prefix")
    return Split(core.SerializeToString(), inputs, folded, prefix.SerializeToString())


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_width(node, columns: int) -> None:
    """0A000 if ``node`` makes rows wider than ``MAX_COLUMNS``: checked before the columns are listed."""
    if columns > MAX_COLUMNS:
        raise SqlmlError(
            f'the model\'s node "{node.name or node.output[0]}" ({node.op_type}) makes rows of {columns} columns; '
            f"sqlml scores rows of at most {MAX_COLUMNS} columns",
            sqlstate=FEATURE_NOT_SUPPORTED,
            hint="export a graph whose tensors hold one row's features (no repeated Concat of an input with itself)")


def _fold(node, syms: dict, consts: dict) -> _Sym | None:
    """The symbolic output of ``node``, or None if it is not plumbing sqlml knows how to fold."""
    if len(node.output) != 1 or node.domain not in ("", _ML):
        return None
    op, a = node.op_type, _attrs(node)
    ins = [syms.get(x) for x in node.input]
    x = ins[0] if ins else None
    if x is None:
        return None
    if op == "Identity":
        return x
    if op == "Cast" and a.get("to") == FLOAT and not x.text:
        return x
    if op == "Concat" and all(s is not None and len(s.dims) == 1 for s in ins) and a.get("axis") in (1, -1) \
            and len({s.text for s in ins}) == 1:
        _check_width(node, sum(len(s.columns) for s in ins))
        cols = [c for s in ins for c in s.columns]
        return _Sym(cols, (len(cols),), x.text)
    if op == "Reshape" and len(node.input) == 2 and node.input[1] in consts:
        shape = [int(v) for v in consts[node.input[1]].reshape(-1)]
        if len(shape) >= 1 and shape[0] in (-1, 0) and all(d > 0 for d in shape[1:]) \
                and math.prod(shape[1:]) == len(x.columns) and a.get("allowzero", 0) == 0:
            return _Sym(x.columns, tuple(shape[1:]), x.text)
        return None
    if op == "Gather" and len(node.input) == 2 and node.input[1] in consts and len(x.dims) == 1 \
            and a.get("axis", 0) in (1, -1):
        idx = consts[node.input[1]]
        _check_width(node, idx.size)
        k = len(x.columns)
        pick = [int(i) % k for i in idx.reshape(-1)] if all(-k <= int(i) < k for i in idx.reshape(-1)) else None
        if pick is None or idx.ndim > 1:
            return None
        return _Sym([x.columns[i] for i in pick], () if idx.ndim == 0 else (len(pick),), x.text)
    if node.domain != _ML or not x.text or any(c.lut is not None for c in x.columns):
        return None
    if op == "LabelEncoder" and "keys_strings" in a and "values_floats" in a:
        keys = [k.decode() if isinstance(k, bytes) else k for k in a["keys_strings"]]
        lut = dict(zip(keys, (float(v) for v in a["values_floats"])))
        default = float(a.get("default_float", -0.0))
        return _Sym([Column(c.source, lut, default) for c in x.columns], x.dims, False)
    if op == "OneHotEncoder" and "cats_strings" in a and a.get("zeros", 1) == 1:
        cats = [k.decode() if isinstance(k, bytes) else k for k in a["cats_strings"]]
        _check_width(node, len(x.columns) * len(cats))
        cols = [Column(c.source, {cat: 1.0}, 0.0) for c in x.columns for cat in cats]
        return _Sym(cols, (*x.dims, len(cats)), False)
    return None
