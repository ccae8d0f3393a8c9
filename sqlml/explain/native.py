"""Path-dependent TreeSHAP as native code: one LLVM function (llvmlite) for every forest.

``sqlml.explain.treeshap`` states the algorithm; this computes the same, compiled once (the code is
the same for every model: the forest comes in as arrays) and kept as object code beside scoring's
(``use_cache``), so that a new process loads it without LLVM (``sqlml.onnx.native``), in blocks of rows:

1. every split's decision for the block's rows (``Forest.decisions``' rules: NaN by the node's
   missing type, LightGBM's zero threshold, categorical sets as a flag per code), a byte each;
2. leaf after leaf, for the block's rows: o_j, whether a row goes the path's way at every edge on
   the path's feature j (a byte per row and j), then the weights: for a tabulated leaf the row of
   its table that the bits o_j pick, else the Gauss-Legendre sum (``treeshap._weights``, with the
   products over i != j as prefix times suffix products: no division); times the leaf's values,
   added into the contributions.

Rows, decisions and contributions are laid column by column (a block's values of one column are
contiguous), so the inner loops run over rows and vectorize; a leaf's table and values stay in
cache across a block. Numpy makes the same computation as arrays of (rows x leaves x path length),
which memory bounds to a few hundred rows at a time; here a block's state is a byte per split and
row. Measured in bench/explain.py.

The arrays (``Forest._native_arrays``) are int64 (indices, counts, codes) or float64, in the order
of ``ARGS``; the function reads them through one array of their addresses.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
from contextlib import contextmanager

import numpy as np

ARGS = (
    # rows
    "X",  # float64 (columns, rows): column-major
    "rows",  # int
    "columns",  # int: columns of X (and of the contributions)
    "outputs",  # int: outputs per column in the contributions
    "block",  # int: rows per block
    # splits (every tree's, stacked; leaves have none)
    "nodes",  # int
    "node_feature",
    "node_threshold",  # float64
    "node_kind",  # NONE, ZERO, NAN (treeshap's missing types) or CATEGORICAL
    "node_default_left",
    "node_cat_start",  # categorical: where its flags start in cat_left, and how many codes they cover
    "node_cat_count",
    "cat_left",  # int64 per code: 1 if the code goes left
    # leaves (of paths that test at least one feature)
    "leaves",  # int
    "leaf_k",  # distinct features on its path
    "leaf_slot",  # its first slot: slots leaf_slot .. leaf_slot + k - 1 are its features
    "leaf_table",  # where its weights start in table (-1: computed per row)
    "leaf_out_start",  # the outputs it scores: out_start .. out_start + out_count - 1
    "leaf_out_count",
    "leaf_value_start",  # its values in value, one per output it scores
    "value",  # float64
    "slot_feature",  # the column
    "slot_edge_start",  # its path's edges on that feature: edge_start .. edge_start + edge_count - 1
    "slot_edge_count",
    "slot_z",  # float64: product of the edges' cover ratios
    "edge",  # split * 2 + (0 if the path goes left, 1 if right)
    "table",  # float64: per tabulated leaf, 2^k rows of k weights, row = the pattern of o
    "quadrature_start",  # per k, where its ceil(k / 2) Gauss-Legendre nodes start
    "quadrature_t",  # float64, on [0, 1]
    "quadrature_w",  # float64
    # scratch and result
    "go",  # int8 (splits, block): 1 if the row goes left
    "on_path",  # int8 (longest path, block): o_j
    "pattern",  # int64 (block): the o_j as bits (tabulated leaves)
    "prefix",  # float64 per path slot
    "weights",  # float64 per path slot
    "out",  # float64 (columns, outputs, rows), added into
)
NONE, ZERO, NAN = 0, 1, 2  # what a numerical split does with a missing value (``sqlml.explain.treeshap``)
CATEGORICAL = 3  # a split on a set of category codes
ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold
GO_BYTES = 1 << 19  # a block's decisions, one byte per split and row: rows per block = this / splits
MAX_BLOCK = 256
SLICE_WORK = 1 << 27  # steps (``work_per_row``) between interrupt checks: a few tenths of a second
FLOATS = {"X", "node_threshold", "value", "slot_z", "table", "quadrature_t", "quadrature_w", "prefix", "weights",
          "out"}
SCALARS = {"rows", "columns", "outputs", "block", "nodes", "leaves"}


def _double(v: float) -> str:
    return "0x" + struct.pack(">d", float(v)).hex().upper()


class _Function:
    """LLVM IR text: SSA values, mutable variables as entry-block allocas (promoted by mem2reg)."""

    def __init__(self):
        self.entry, self.body, self.n = [], [], 0

    def fresh(self, prefix="v") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def emit(self, line: str) -> None:
        self.body.append("  " + line)

    def op(self, text: str) -> str:
        r = "%" + self.fresh()
        self.emit(f"{r} = {text}")
        return r

    def label(self, name: str) -> None:
        self.body.append(f"{name}:")

    def var(self, ty: str, init: str | None = None) -> str:
        r = "%" + self.fresh("var")
        self.entry.append(f"  {r} = alloca {ty}")
        if init is not None:
            self.emit(f"store {ty} {init}, ptr {r}")
        return r

    def at(self, ty: str, base: str, index: str) -> str:
        """Pointer to ``base[index]``."""
        return self.op(f"getelementptr inbounds {ty}, ptr {base}, i64 {index}")

    def load(self, ty: str, base: str, index: str) -> str:
        return self.op(f"load {ty}, ptr {self.at(ty, base, index)}")

    def jump(self, target: str) -> None:
        self.emit(f"br label %{target}")

    @contextmanager
    def loop(self, start: str, stop: str, step: str = "1"):
        """``for i in range(start, stop, step)`` (i64), yielding i."""
        counter = self.var("i64", start)
        head, body, end = self.fresh("head"), self.fresh("body"), self.fresh("end")
        self.jump(head)
        self.label(head)
        i = self.op(f"load i64, ptr {counter}")
        self.emit(f"br i1 {self.op(f'icmp slt i64 {i}, {stop}')}, label %{body}, label %{end}")
        self.label(body)
        yield i
        self.emit(f"store i64 {self.op(f'add i64 {i}, {step}')}, ptr {counter}")
        self.jump(head)
        self.label(end)

    @contextmanager
    def when(self, cond: str):
        then, end = self.fresh("then"), self.fresh("end")
        self.emit(f"br i1 {cond}, label %{then}, label %{end}")
        self.label(then)
        yield
        self.jump(end)
        self.label(end)


def ir() -> str:
    """``void treeshap(ptr args, i64 first, i64 last)``: contributions of rows first .. last - 1, in
    blocks of ``block`` rows: a block's decisions split by split, then its rows leaf by leaf."""
    f = _Function()
    arg = {}
    for i, name in enumerate(ARGS):
        p = f.at("i64", "%args", str(i))
        arg[name] = f.op(f"load {'i64' if name in SCALARS else 'ptr'}, ptr {p}")
    with f.loop("%first", "%last", arg["block"]) as b0:
        rows = f.op(f"call i64 @llvm.smin.i64(i64 {arg['block']}, i64 {f.op(f'sub i64 %last, {b0}')})")
        _decisions(f, arg, b0, rows)
        with f.loop("0", arg["leaves"]) as leaf:
            _leaf(f, arg, leaf, b0, rows)
    f.emit("ret void")
    return (
        "declare double @llvm.fabs.f64(double)\ndeclare double @llvm.fma.f64(double, double, double)\n"
        "declare i64 @llvm.smin.i64(i64, i64)\n\n"
        "define void @treeshap(ptr noalias %args, i64 %first, i64 %last) nounwind {\nentry:\n"
        + "\n".join(f.entry)
        + "\n  br label %start\nstart:\n"
        + "\n".join(f.body)
        + "\n}\n"
    )


def _decisions(f: _Function, arg: dict, b0: str, rows: str) -> None:
    """go[split * block + r] = 1 if row b0 + r goes left at the split (``Forest.decisions``)."""
    with f.loop("0", arg["nodes"]) as i:
        feature = f.load("i64", arg["node_feature"], i)
        n = arg["rows"]
        x_at = f.at("double", arg["X"], f.op(f"add i64 {f.op(f'mul i64 {feature}, {n}')}, {b0}"))
        go = f.at("i8", arg["go"], f.op(f"mul i64 {i}, {arg['block']}"))
        kind = f.load("i64", arg["node_kind"], i)
        numeric, categorical, done = f.fresh("numeric"), f.fresh("categorical"), f.fresh("decided")
        f.emit(f"br i1 {f.op(f'icmp eq i64 {kind}, {CATEGORICAL}')}, label %{categorical}, label %{numeric}")
        f.label(numeric)
        threshold = f.load("double", arg["node_threshold"], i)
        default = f.op(f"icmp ne i64 {f.load('i64', arg['node_default_left'], i)}, 0")
        zero_left = f.op(f"fcmp ole double 0.0, {threshold}")
        is_none = f.op(f"icmp eq i64 {kind}, {NONE}")
        is_zero = f.op(f"icmp eq i64 {kind}, {ZERO}")
        with f.loop("0", rows) as r:
            x = f.load("double", x_at, r)
            nan = f.op(f"fcmp uno double {x}, 0.0")
            le = f.op(f"fcmp ole double {x}, {threshold}")
            none = f.op(f"select i1 {nan}, i1 {zero_left}, i1 {le}")  # NaN counts as 0
            magnitude = f.op(f"call double @llvm.fabs.f64(double {x})")
            small = f.op(f"fcmp olt double {magnitude}, {_double(ZERO_THRESHOLD)}")
            zero = f.op(f"select i1 {f.op(f'or i1 {nan}, {small}')}, i1 {default}, i1 {le}")
            nan_side = f.op(f"select i1 {nan}, i1 {default}, i1 {le}")
            left = f.op(f"select i1 {is_none}, i1 {none}, i1 {f.op(f'select i1 {is_zero}, i1 {zero}, i1 {nan_side}')}")
            f.emit(f"store i8 {f.op(f'zext i1 {left} to i8')}, ptr {f.at('i8', go, r)}")
        f.jump(done)
        f.label(categorical)
        flags = f.at("i64", arg["cat_left"], f.load("i64", arg["node_cat_start"], i))
        count = f.op(f"sitofp i64 {f.load('i64', arg['node_cat_count'], i)} to double")
        with f.loop("0", rows) as r:
            x = f.load("double", x_at, r)
            left = f.var("i8", "0")
            inside = f.op(f"and i1 {f.op(f'fcmp oge double {x}, 0.0')}, {f.op(f'fcmp olt double {x}, {count}')}")
            with f.when(inside):  # NaN and negative codes go right
                flag = f.load("i64", flags, f.op(f"fptosi double {x} to i64"))
                f.emit(f"store i8 {f.op(f'trunc i64 {flag} to i8')}, ptr {left}")
            f.emit(f"store i8 {f.op(f'load i8, ptr {left}')}, ptr {f.at('i8', go, r)}")
        f.jump(done)
        f.label(done)


def _leaf(f: _Function, arg: dict, leaf: str, b0: str, rows: str) -> None:
    """One leaf's contributions to the block's rows: o_j per row, then weights times values."""
    R = arg["block"]
    k = f.load("i64", arg["leaf_k"], leaf)
    first_slot = f.load("i64", arg["leaf_slot"], leaf)
    start = f.load("i64", arg["leaf_table"], leaf)
    tabulated = f.op(f"icmp sge i64 {start}, 0")
    out_start = f.load("i64", arg["leaf_out_start"], leaf)
    out_count = f.load("i64", arg["leaf_out_count"], leaf)
    values = f.at("double", arg["value"], f.load("i64", arg["leaf_value_start"], leaf))
    pattern = arg["pattern"]
    with f.loop("0", rows) as r:
        f.emit(f"store i64 0, ptr {f.at('i64', pattern, r)}")
    with f.loop("0", k) as j:
        slot = f.op(f"add i64 {first_slot}, {j}")
        on = f.at("i8", arg["on_path"], f.op(f"mul i64 {j}, {R}"))
        e0 = f.load("i64", arg["slot_edge_start"], slot)
        e1 = f.op(f"add i64 {e0}, {f.load('i64', arg['slot_edge_count'], slot)}")
        with f.loop(e0, e1) as e:  # o_j = AND over the edges of (went left XOR the path goes right)
            code = f.load("i64", arg["edge"], e)
            go = f.at("i8", arg["go"], f.op(f"mul i64 {f.op(f'ashr i64 {code}, 1')}, {R}"))
            right = f.op(f"trunc i64 {f.op(f'and i64 {code}, 1')} to i8")
            first = f.op(f"icmp eq i64 {e}, {e0}")
            with f.loop("0", rows) as r:
                agrees = f.op(f"xor i8 {f.load('i8', go, r)}, {right}")
                p = f.at("i8", on, r)
                so_far = f.op(f"select i1 {first}, i8 1, i8 {f.op(f'load i8, ptr {p}')}")
                f.emit(f"store i8 {f.op(f'and i8 {so_far}, {agrees}')}, ptr {p}")
        with f.when(tabulated):
            with f.loop("0", rows) as r:
                flag = f.load("i8", on, r)
                bit = f.op(f"shl i64 {f.op(f'zext i8 {flag} to i64')}, {j}")
                p = f.at("i64", pattern, r)
                bits = f.op(f"load i64, ptr {p}")
                f.emit(f"store i64 {f.op(f'or i64 {bits}, {bit}')}, ptr {p}")
    with f.when(tabulated):
        with f.loop("0", k) as j:
            target = _target(f, arg, first_slot, j, out_start, b0)
            with f.loop("0", out_count) as q:
                v = f.load("double", values, q)
                out = f.at("double", target, f.op(f"mul i64 {q}, {arg['rows']}"))
                with f.loop("0", rows) as r:
                    bits = f.load("i64", pattern, r)
                    cell = f.op(f"add i64 {f.op(f'mul i64 {bits}, {k}')}, {j}")
                    w = f.load("double", arg["table"], f.op(f"add i64 {start}, {cell}"))
                    _add(f, f.at("double", out, r), w, v)
    with f.when(f.op(f"xor i1 {tabulated}, true")):
        with f.loop("0", rows) as r:
            _quadrature(f, arg, k, first_slot, r)
            with f.loop("0", k) as j:
                w = f.load("double", arg["weights"], j)
                target = _target(f, arg, first_slot, j, out_start, b0)
                with f.loop("0", out_count) as q:
                    n = arg["rows"]
                    out = f.at("double", target, f.op(f"add i64 {f.op(f'mul i64 {q}, {n}')}, {r}"))
                    _add(f, out, w, f.load("double", values, q))


def _target(f: _Function, arg: dict, first_slot: str, j: str, out_start: str, b0: str) -> str:
    """Pointer to out[column of slot j, out_start, b0]."""
    column = f.load("i64", arg["slot_feature"], f.op(f"add i64 {first_slot}, {j}"))
    outputs, n = arg["outputs"], arg["rows"]
    plane = f.op(f"add i64 {f.op(f'mul i64 {column}, {outputs}')}, {out_start}")
    return f.at("double", arg["out"], f.op(f"add i64 {f.op(f'mul i64 {plane}, {n}')}, {b0}"))


def _add(f: _Function, p: str, w: str, v: str) -> None:
    """*p += w * v"""
    total = f.op(f"call double @llvm.fma.f64(double {w}, double {v}, double {f.op(f'load double, ptr {p}')})")
    f.emit(f"store double {total}, ptr {p}")


def _quadrature(f: _Function, arg: dict, k: str, first_slot: str, r: str) -> None:
    """weights[j] = (o_j - z_j) * sum_m w_m prod_{i != j} (z_i (1 - t_m) + o_i t_m) for row r of the
    block: the prefix product before j times the suffix product after it (``treeshap._weights``,
    without its division)."""
    W, R = arg["weights"], arg["block"]

    def o(j):
        flag = f.load("i8", arg["on_path"], f.op(f"add i64 {f.op(f'mul i64 {j}, {R}')}, {r}"))
        return f.op(f"uitofp i8 {flag} to double")

    def z(j):
        return f.load("double", arg["slot_z"], f.op(f"add i64 {first_slot}, {j}"))

    with f.loop("0", k) as j:
        f.emit(f"store double 0.0, ptr {f.at('double', W, j)}")
    q0 = f.load("i64", arg["quadrature_start"], k)
    with f.loop("0", f.op(f"sdiv i64 {f.op(f'add i64 {k}, 1')}, 2")) as m:
        t = f.load("double", arg["quadrature_t"], f.op(f"add i64 {q0}, {m}"))
        gw = f.load("double", arg["quadrature_w"], f.op(f"add i64 {q0}, {m}"))
        rest = f.op(f"fsub double 1.0, {t}")

        def factor(j):
            return f.op(f"fadd double {f.op(f'fmul double {z(j)}, {rest}')}, {f.op(f'fmul double {o(j)}, {t}')}")

        product = f.var("double", "1.0")
        with f.loop("0", k) as j:
            before = f.op(f"load double, ptr {product}")
            f.emit(f"store double {before}, ptr {f.at('double', arg['prefix'], j)}")
            f.emit(f"store double {f.op(f'fmul double {before}, {factor(j)}')}, ptr {product}")
        suffix = f.var("double", "1.0")
        with f.loop("0", k) as back:
            j = f.op(f"sub i64 {f.op(f'sub i64 {k}, 1')}, {back}")
            after = f.op(f"load double, ptr {suffix}")
            prefix = f.load("double", arg["prefix"], j)
            term = f.op(f"fmul double {gw}, {f.op(f'fmul double {prefix}, {after}')}")
            _add(f, f.at("double", W, j), term, "1.0")
            f.emit(f"store double {f.op(f'fmul double {after}, {factor(j)}')}, ptr {suffix}")
    with f.loop("0", k) as j:
        p = f.at("double", W, j)
        scale = f.op(f"fsub double {o(j)}, {z(j)}")
        psi = f.op(f"load double, ptr {p}")
        f.emit(f"store double {f.op(f'fmul double {psi}, {scale}')}, ptr {p}")


_TREESHAP = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)  # releases the GIL
_compiled: list = []  # [(the loaded code, function)] once loaded in this process
cache = {"directory": None, "origin": None}  # where the object code is kept; "compiled" or "cache" once loaded


def use_cache(directory: str | None) -> None:
    """Keep the object code in ``directory`` (``sqlml.onnx.compiled.private_directory``'s: only this
    OS user may write it; None: no cache), under ``cache_name()``, beside the scoring code: a new
    process loads it with ``sqlml.onnx.native`` instead of compiling it with LLVM again."""
    cache["directory"] = directory


def cache_name() -> str:
    """The cache file's name (without .o): the IR's sha256, salted as scoring's code is (the code
    version, llvmlite's, the CPU: ``sqlml.onnx.compiled.cache_key``)."""
    from sqlml.onnx.compiled import cache_key

    return cache_key("treeshap-" + hashlib.sha256(ir().encode()).hexdigest())


def function():
    """The compiled ``treeshap``: from the cache (no llvmlite needed), else compiled by llvmlite and
    kept in the cache; None where neither works (numpy then computes the same)."""
    if not _compiled:
        directory = cache["directory"]
        path = os.path.join(directory, cache_name() + ".o") if directory else None
        loaded, origin = _cached(path) if path else None, "cache"
        if loaded is None:
            try:
                obj = _compile()
            except ImportError:
                return None
            loaded, origin = _load(obj), "compiled"
            if path:
                from sqlml.onnx.compiled import write_sealed

                write_sealed(path, obj)
        code, address = loaded
        _compiled.append((code, _TREESHAP(address)))
        cache["origin"] = origin
    return _compiled[0][1]


def _cached(path: str) -> tuple | None:
    """The object code kept at ``path``, loaded (``_load``), or None (absent, damaged, or not
    loadable here: compiled again)."""
    from sqlml.onnx.compiled import read_sealed

    obj = read_sealed(path)
    try:
        return _load(obj) if obj is not None else None
    except (ValueError, RuntimeError, ImportError):
        return None


def _compile() -> bytes:
    """Object code of ``ir()`` for this CPU, optimized (mem2reg promotes the IR's variables)."""
    from sqlml.onnx.compiled import compile_object

    return compile_object(ir())


def _load(obj: bytes) -> tuple:
    """(what keeps the code mapped, the address of ``treeshap``) (``sqlml.onnx.compiled.link``)."""
    from sqlml.onnx.compiled import link

    code, address_of, _ = link(obj)
    address = address_of("treeshap")
    if not address:
        raise RuntimeError("the TreeSHAP object code has no treeshap function")
    return code, address


def run(arrays: dict, X: np.ndarray, out: np.ndarray, longest: int, interrupt=None) -> None:
    """Add the contributions of the rows ``X`` (n, columns) into ``out`` (n, columns, outputs),
    with the forest's ``arrays`` (names of ``ARGS``) whose longest path tests ``longest`` features.
    The rows go through in slices of about ``SLICE_WORK`` steps, with ``interrupt()`` (if given)
    before each: native code does not see a cancel."""
    kernel = function()
    n, columns, outputs = out.shape
    nodes = max(int(arrays["nodes"]), 1)
    block = min(max(GO_BYTES // nodes, 16), MAX_BLOCK)
    slots = max(longest, 1)
    own = {
        "X": np.ascontiguousarray(np.asarray(X, dtype=np.float64).T),
        "rows": n,
        "columns": columns,
        "outputs": outputs,
        "block": block,
        "go": np.zeros(nodes * block, dtype=np.int8),
        "on_path": np.zeros(slots * block, dtype=np.int8),
        "pattern": np.zeros(block, dtype=np.int64),
        "prefix": np.zeros(slots),
        "weights": np.zeros(slots),
        "out": np.zeros((columns, outputs, max(n, 1))),
    }
    addresses = np.zeros(len(ARGS), dtype=np.int64)
    for i, name in enumerate(ARGS):
        a = own[name] if name in own else arrays[name]
        if name in SCALARS:
            addresses[i] = int(a)
            continue
        if not (isinstance(a, np.ndarray) and a.flags.c_contiguous and a.dtype == _dtype(name) and a.size):
            raise TypeError(f"{name} must be a non-empty contiguous {_dtype(name)} array")
        addresses[i] = a.ctypes.data
    step = max(SLICE_WORK // work_per_row(arrays) // block, 1) * block  # whole blocks
    for first in range(0, n, step):
        if interrupt is not None:
            interrupt()
        kernel(addresses.ctypes.data, first, min(first + step, n))
    out += own["out"][:, :, :n].transpose(2, 0, 1)


def work_per_row(arrays: dict) -> int:
    """Steps of the native code per row, about: a decision per split, a lookup per slot of a
    tabulated leaf, k * ceil(k / 2) products per slot of a leaf computed by quadrature."""
    k = arrays["leaf_k"][: int(arrays["leaves"])]
    tabulated = arrays["leaf_table"][: int(arrays["leaves"])] >= 0
    computed = k[~tabulated]
    quadrature = int((computed * computed * (computed + 1) // 2).sum())
    return max(int(arrays["nodes"]) + int(k[tabulated].sum()) + quadrature, 1)


def _dtype(name: str):
    return np.int8 if name in ("go", "on_path") else np.float64 if name in FLOATS else np.int64
