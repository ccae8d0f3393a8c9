"""A model's core graph (``sqlml.onnx.core``) compiled to native code with LLVM (llvmlite), row by row.

ONNX Runtime costs ~8 us a call before it computes anything, and walks its trees through a generic
node table. Compiled, each tree is a function of branches on constants (the idea of lleaves, done
here from the ONNX arrays so that the registry stays ONNX), and scoring one row is a call of a
native function: ~1 us for a 100-tree LightGBM.

Trees are emitted in groups of about GROUP_NODES nodes (a function per group, its trees inlined by
LLVM's -O2 pipeline): no call per tree, and compile time linear in the model's size. A LightGBM
categorical split, which the export writes as a chain of BRANCH_EQ tests (one per category), is
one membership test: a switch on the category code (``_members``).

``program`` reads the core graph into per-row operations over float32 vectors; it knows the nodes
sqlml's converters emit for its estimators (TreeEnsembleClassifier/Regressor, LinearClassifier/
Regressor, Imputer, Scaler, Normalizer, Concat, Gather, ArrayFeatureExtractor, Identity, Cast, Flatten,
Reshape, and the Mul/Add/Sub/Div/Sum of voting ensembles) and returns None for anything else. ``ir`` writes one
function ``score(X, n, out)`` over rows of the core inputs concatenated (float32, row-major) that
reproduces ONNX Runtime's semantics: float32 thresholds and comparisons (``fcmp ole`` for
BRANCH_LEQ: NaN goes to the false branch unless the node's missing value tracks true), leaf
weights summed per target in float32 in tree order, ``base_values``, AVERAGE, the binary-case
rules of the classifier and its LOGISTIC/SOFTMAX post transforms (``expf``, as ONNX Runtime).
Where a rule depends on something only known per row (a class that only some leaves score) the
graph is not compiled.

``load`` then checks the code against ONNX Runtime on probe rows (thresholds, their float32
neighbours, NaN, numbers of several scales): labels identical and scores within 1e-6 (relative
beyond 1), else it returns None and the caller keeps ONNX Runtime. The object code, the probe rows,
ONNX Runtime's answers and the caller's metadata (the split's plumbing) are cached on disk under
``key`` (the model's sha256, the compiler's, llvmlite's, onnx's and onnxruntime's versions and the
CPU), so a new backend (``from_cache``) loads the code and re-checks it against the stored answers
without compiling, without parsing the graph and without ONNX Runtime; on x86-64 Linux without
llvmlite either (``sqlml.onnx.native`` applies the object's relocations itself).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
import sys
from dataclasses import dataclass, field

import numpy as np

from sqlml.onnx import core, native

VERSION = "7"  # of the code this module writes: part of every cache key
TOLERANCE = 1e-6
_ML = "ai.onnx.ml"
_COMPARE = {"BRANCH_LEQ": "ole", "BRANCH_LT": "olt", "BRANCH_GTE": "oge", "BRANCH_GT": "ogt",
            "BRANCH_EQ": "oeq", "BRANCH_NEQ": "une"}  # ONNX Runtime's C++ comparisons, NaN included


class Unsupported(Exception):
    """A node or attribute this compiler does not reproduce: the graph stays with ONNX Runtime."""


# --- the program: per-row operations over named vectors ---------------------------------------------

@dataclass
class Trees:
    """One TreeEnsemble node: trees in ONNX Runtime's order (first appearance of a tree id)."""

    trees: list  # per tree: {node id: ("leaf", [(target, weight)]) or (mode, feature, threshold, true, false, missing)}
    targets: int
    aggregate: str
    post: str
    base: list
    classifier: bool
    has_score: list = field(default_factory=list)  # per target: True always, False never (classifiers)
    binary_case: bool = False
    all_positive: bool = True


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode() for x in v]
        out[a.name] = v
    return out


def _trees(node, a: dict, width: int) -> Trees:
    """The ensemble of ``node`` over rows of ``width`` floats. Native code trusts what this accepts:
    every feature inside the row, every weight on a target, no loop in a tree."""
    classifier = node.op_type == "TreeEnsembleClassifier"
    if any(k.endswith("_as_tensor") for k in a):
        raise Unsupported("double-precision tree attributes")
    if classifier:
        labels = a.get("classlabels_int64s") or a.get("classlabels_strings") or []
        targets = len(labels)
        ids, tree_ids, node_ids, weights = (a.get(k, []) for k in ("class_ids", "class_treeids", "class_nodeids",
                                                                     "class_weights"))
        aggregate = "SUM"
    else:
        targets = int(a.get("n_targets", 1))
        ids, tree_ids, node_ids, weights = (a.get(k, []) for k in ("target_ids", "target_treeids", "target_nodeids",
                                                                     "target_weights"))
        aggregate = a.get("aggregate_function", "SUM")
    if aggregate not in ("SUM", "AVERAGE") or targets < 1:
        raise Unsupported(f"aggregate {aggregate}")
    if targets > core.MAX_COLUMNS:
        raise Unsupported(f"{targets} targets")
    post = a.get("post_transform", "NONE")
    order, trees = [], {}
    n = len(a["nodes_nodeids"])
    missing = a.get("nodes_missing_value_tracks_true", [])
    for i in range(n):
        t, nid, mode = int(a["nodes_treeids"][i]), int(a["nodes_nodeids"][i]), a["nodes_modes"][i]
        if t not in trees:
            trees[t] = {}
            order.append(t)
        if nid in trees[t]:
            raise Unsupported("duplicate node")
        if mode == "LEAF":
            trees[t][nid] = ("leaf", [])
        elif mode in _COMPARE:
            trees[t][nid] = (mode, int(a["nodes_featureids"][i]), float(np.float32(a["nodes_values"][i])),
                             int(a["nodes_truenodeids"][i]), int(a["nodes_falsenodeids"][i]),
                             i < len(missing) and int(missing[i]) == 1)
        else:
            raise Unsupported(f"node mode {mode}")
    for c, t, nid, w in zip(ids, tree_ids, node_ids, weights):
        node_ = trees.get(int(t), {}).get(int(nid))
        if node_ is None:
            raise Unsupported("a weight on no node")
        if node_[0] == "leaf":  # ONNX Runtime keeps weights on branch nodes too, but never reads them
            node_[1].append((int(c), float(np.float32(w))))
    ordered = [trees[t] for t in order]
    for tree in ordered:
        for v in tree.values():
            if v[0] != "leaf" and (v[3] not in tree or v[4] not in tree):
                raise Unsupported("a branch to no node")
            if v[0] == "leaf" and targets == 1 and not v[1]:
                raise Unsupported("a leaf without weight")
            if v[0] == "leaf" and any(not 0 <= c < targets for c, _ in v[1]):
                raise Unsupported("a weight for no target")
            if v[0] != "leaf" and not 0 <= v[1] < width:
                raise Unsupported("a feature outside the row")
        if next(iter(tree)) != 0:  # ONNX Runtime starts a tree at its first node; sqlml's converters number it 0
            raise Unsupported("a tree whose first node is not node 0")
        _check_acyclic(tree)
    ordered = [_members(tree) for tree in ordered]
    spec = Trees(ordered, targets, aggregate, post, [float(np.float32(b)) for b in a.get("base_values", [])],
                 classifier)
    if classifier:
        leaves = [[w for v in tree.values() if v[0] == "leaf" for w in [v[1]]] for tree in ordered]
        scored = set(int(c) for c in ids)
        spec.binary_case = targets == 2 and len(scored) == 1
        spec.all_positive = all(float(w) >= 0 for w in weights)
        for k in range(targets):
            if k not in scored:
                spec.has_score.append(False)
            elif any(all(any(c == k for c, _ in leaf) for leaf in tree) for tree in leaves):
                spec.has_score.append(True)
            elif targets == 2:
                raise Unsupported("a class that only some leaves score")  # the binary rules read it per row
            else:
                spec.has_score.append(True)  # more than 2 classes: 0 + base equals base, either way
    return spec


# Largest category code a membership test takes (LightGBM's codes are small; the test converts to i32).
MEMBER_MAX = 1 << 24


def _members(tree: dict) -> dict:
    """``tree`` with every chain of BRANCH_EQ tests of one feature against whole numbers that all lead
    to one node (how a LightGBM categorical split is exported: a test per category, each false
    branch the next test) as one node ("member", feature, codes, true, false, missing): the row goes
    to ``true`` if its value is one of ``codes`` (equal as float32, as each test was), or if it is
    NaN and some test of the chain tracks missing values as true; else to the last test's false
    branch. Only the nodes a walk from node 0 reaches are kept. A chain of 25 categories is then
    one switch instead of 25 blocks: faster to run, and to compile."""
    def code(v):
        return v[0] == "BRANCH_EQ" and v[2] == int(v[2]) and 0 <= v[2] < MEMBER_MAX

    out, stack = {}, [0]
    while stack:
        nid = stack.pop()
        if nid in out:
            continue
        v = tree[nid]
        if code(v):
            codes, missing, last = [int(v[2])], v[5], v
            while code(tree[last[4]]) and tree[last[4]][1] == v[1] and tree[last[4]][3] == v[3]:
                last = tree[last[4]]
                codes.append(int(last[2]))
                missing = missing or last[5]
            if len(codes) > 1:
                v = ("member", v[1], tuple(sorted(set(codes))), v[3], last[4], missing)
        out[nid] = v
        if v[0] != "leaf":
            stack += [v[4], v[3]]
    return dict(sorted(out.items()))


def _check_acyclic(tree: dict) -> None:
    """Raise Unsupported if a walk from node 0 can come back to a node it is on. Nodes may be shared
    (every category of a LightGBM categorical split goes to one subtree: a DAG)."""
    state = {}  # node -> 1 on the current path, 2 done
    stack = [(0, 0)]
    while stack:
        nid, child = stack.pop()
        if child == 0:
            if state.get(nid) == 1:
                raise Unsupported("a loop in a tree")
            if state.get(nid) == 2:
                continue
            state[nid] = 1
        v = tree[nid]
        if v[0] == "leaf" or child == 2:
            state[nid] = 2
            continue
        stack.append((nid, child + 1))
        stack.append((v[3] if child == 0 else v[4], 0))


def _const(consts: dict, name: str) -> np.ndarray:
    if name not in consts:
        raise Unsupported(f"{name} is not a constant")
    return consts[name]


def program(core_bytes: bytes, output: str, widths: list) -> tuple | None:
    """(ops, output width) for the core graph's ``output``, its inputs being float vectors of
    ``widths`` (name, width) per row; None when some node on the way is not supported."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(core_bytes)
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    width = dict(widths)
    producers = {o: n for n in g.node for o in n.output}
    needed, stack = set(), [output]
    while stack:  # only the nodes the output depends on (not the label's ArgMax and casts)
        name = stack.pop()
        node = producers.get(name)
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    ops = []
    try:
        for node in g.node:
            if id(node) in needed:
                ops.append(_op(node, width, consts))
                if any(width.get(o, 0) > core.MAX_COLUMNS for o in node.output):
                    raise Unsupported(f"rows wider than {core.MAX_COLUMNS} columns")
    except Unsupported:
        return None
    if output not in width:
        return None
    return ops, width[output]


def _op(node, width: dict, consts: dict) -> tuple:
    """One node as (kind, inputs, outputs, params), recording its outputs' widths in ``width``."""
    if node.domain not in ("", "ai.onnx", _ML):
        raise Unsupported(node.domain)
    op, a = node.op_type, _attrs(node)
    ins = list(node.input)

    def w(name):
        if name not in width:
            raise Unsupported(f"{name} is not a per-row float vector")
        return width[name]

    if op in ("TreeEnsembleClassifier", "TreeEnsembleRegressor") and node.domain == _ML:
        spec = _trees(node, a, w(ins[0]))
        out = node.output[1] if spec.classifier else node.output[0]
        if spec.classifier and len(node.output) < 2:
            raise Unsupported("no scores output")
        width[out] = spec.targets
        return ("trees", ins[0], out, spec, w(ins[0]))
    if op in ("LinearClassifier", "LinearRegressor") and node.domain == _ML:
        k_in = w(ins[0])
        coef = np.asarray(a.get("coefficients", []), dtype=np.float32)
        targets = len(coef) // k_in if k_in else 0
        if targets < 1 or targets * k_in != len(coef):
            raise Unsupported("coefficients")
        intercepts = np.asarray(a.get("intercepts", [0.0] * targets), dtype=np.float32)
        post = a.get("post_transform", "NONE")
        if op == "LinearClassifier":
            labels = a.get("classlabels_ints") or a.get("classlabels_strings") or []
            if targets < 2 or len(labels) != targets or post not in ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"):
                raise Unsupported("linear classifier shape")
            out = node.output[1]
        else:
            if post != "NONE" or len(intercepts) != targets:
                raise Unsupported("linear regressor")
            out = node.output[0]
        if len(intercepts) != targets:
            raise Unsupported("intercepts")
        width[out] = targets
        return ("linear", ins[0], out, (coef.reshape(targets, k_in), intercepts, post))
    if op == "Imputer" and node.domain == _ML:
        k = w(ins[0])
        values = list(a.get("imputed_value_floats", []))
        if len(values) == 1:
            values = values * k
        if len(values) != k or "imputed_value_int64s" in a:
            raise Unsupported("imputer")
        width[node.output[0]] = k
        return ("impute", ins[0], node.output[0], ([float(np.float32(v)) for v in values],
                                                   float(np.float32(a.get("replaced_value_float", np.nan)))))
    if op == "Scaler" and node.domain == _ML:
        k = w(ins[0])
        offset, scale = list(a.get("offset", [0.0])), list(a.get("scale", [1.0]))
        offset, scale = (v * k if len(v) == 1 else v for v in (offset, scale))
        if len(offset) != k or len(scale) != k:
            raise Unsupported("scaler")
        width[node.output[0]] = k
        return ("scale", ins[0], node.output[0], ([float(np.float32(v)) for v in offset],
                                                  [float(np.float32(v)) for v in scale]))
    if op == "Normalizer" and node.domain == _ML and a.get("norm") in ("L1", "L2", "MAX"):
        width[node.output[0]] = w(ins[0])
        return ("normalize", ins[0], node.output[0], a["norm"])
    if op == "Concat" and a.get("axis") in (1, -1):
        width[node.output[0]] = sum(w(x) for x in ins)
        return ("concat", ins, node.output[0], None)
    if op in ("Identity", "Cast", "Flatten") and (op != "Cast" or a.get("to") == 1) and a.get("axis", 1) == 1:
        width[node.output[0]] = w(ins[0])
        return ("concat", ins[:1], node.output[0], None)
    if op == "Reshape" and len(ins) == 2:
        shape = [int(v) for v in _const(consts, ins[1]).reshape(-1)]
        if len(shape) != 2 or shape[0] not in (-1, 0) or shape[1] != w(ins[0]):
            raise Unsupported("reshape")
        width[node.output[0]] = w(ins[0])
        return ("concat", ins[:1], node.output[0], None)
    if op in ("Gather", "ArrayFeatureExtractor"):
        if op == "Gather" and a.get("axis", 0) not in (1, -1):
            raise Unsupported("gather axis")
        idx = _const(consts, ins[1])
        k = w(ins[0])
        if idx.ndim != 1 or not all(-k <= int(i) < k for i in idx):
            raise Unsupported("gather indices")
        pick = [int(i) % k for i in idx]
        width[node.output[0]] = len(pick)
        return ("pick", ins[0], node.output[0], pick)
    if op in ("Mul", "Add", "Sub", "Div", "Sum"):
        if op == "Sum":
            ks = {w(x) for x in ins}
            if len(ks) != 1:
                raise Unsupported("sum widths")
            width[node.output[0]] = ks.pop()
            return ("sum", ins, node.output[0], None)
        if len(ins) != 2:
            raise Unsupported(op)
        sides = []
        for x in ins:
            if x in width:
                sides.append(("row", x, width[x]))
            else:
                c = _const(consts, x).astype(np.float32)
                if c.size != 1 and (c.ndim == 0 or c.shape[-1] != c.size):
                    raise Unsupported("broadcast")
                sides.append(("const", [float(v) for v in c.reshape(-1)], c.size))
        k = max(s[2] for s in sides)
        if any(s[2] not in (1, k) for s in sides) or all(s[0] == "const" for s in sides) \
                or any(s[0] == "row" and s[2] != k for s in sides):
            raise Unsupported("broadcast")
        width[node.output[0]] = k
        return ("arith", op, node.output[0], sides)
    raise Unsupported(op)


# --- LLVM IR ---------------------------------------------------------------------------------------

def _f(v: float) -> str:
    """An LLVM float constant: the float32 value as the hex of its double (exact)."""
    return "0x" + struct.pack(">d", float(np.float32(v))).hex().upper()


class _Writer:
    def __init__(self):
        self.lines, self.n = [], 0

    def tmp(self) -> str:
        self.n += 1
        return f"%v{self.n}"

    def emit(self, line: str) -> None:
        self.lines.append("  " + line)

    def op(self, text: str) -> str:
        r = self.tmp()
        self.emit(f"{r} = {text}")
        return r


# A membership test of more categories than this reads a bitmap (a bit per code up to the largest,
# in a constant of the tree's) instead of a switch: its code is then the same for 9 codes or 4,000.
# Codes from BITMAP_CODES up stay a switch: a bitmap's size follows its largest code, and an
# imported graph may test any whole number below MEMBER_MAX.
SWITCH_CASES = 8
BITMAP_CODES = 1 << 16


def _bitmap(name: str, codes) -> tuple[str, int]:
    """(the definition of a constant ``@name`` of i32 words with bit ``c`` set per code, its words)."""
    words = [0] * (max(codes) // 32 + 1)
    for c in codes:
        words[c >> 5] |= 1 << (c & 31)
    signed = (w - (1 << 32) if w >= 1 << 31 else w for w in words)
    return (f"@{name} = private unnamed_addr constant [{len(words)} x i32] ["
            + ", ".join(f"i32 {w}" for w in signed) + "], align 4"), len(words)


def _tree_function(name: str, tree: dict, single: bool) -> str:
    """One tree: single target -> returns its leaf's first weight; else adds every leaf weight to acc;
    preceded by the bitmaps of its large membership tests."""
    sig = f"define internal float @{name}(ptr noalias %x)" if single else \
        f"define internal void @{name}(ptr noalias %x, ptr noalias %acc)"
    constants = []
    lines = [sig + " #2 {", "entry:", "  br label %n0"]
    for nid in sorted(tree):
        v = tree[nid]
        lines.append(f"n{nid}:")
        if v[0] == "leaf":
            if single:
                lines.append(f"  ret float {_f(v[1][0][1])}")
                continue
            for j, (c, wt) in enumerate(v[1]):
                lines.append(f"  %p{nid}_{j} = getelementptr inbounds float, ptr %acc, i64 {c}")
                lines.append(f"  %a{nid}_{j} = load float, ptr %p{nid}_{j}")
                lines.append(f"  %s{nid}_{j} = fadd float %a{nid}_{j}, {_f(wt)}")
                lines.append(f"  store float %s{nid}_{j}, ptr %p{nid}_{j}")
            lines.append("  ret void")
            continue
        mode, feature, threshold, true, false, missing = v
        lines.append(f"  %x{nid}p = getelementptr inbounds float, ptr %x, i64 {feature}")
        lines.append(f"  %x{nid} = load float, ptr %x{nid}p")
        if mode == "member":  # a whole number in range (NaN is not), then a switch on it
            lines += [f"  %r{nid} = fcmp oge float %x{nid}, 0.0",
                      f"  %h{nid} = fcmp olt float %x{nid}, {_f(MEMBER_MAX)}",
                      f"  %b{nid} = and i1 %r{nid}, %h{nid}",
                      f"  br i1 %b{nid}, label %n{nid}i, label %n{nid}o",
                      f"n{nid}i:",
                      f"  %i{nid} = fptosi float %x{nid} to i32",
                      f"  %f{nid} = sitofp i32 %i{nid} to float",
                      f"  %w{nid} = fcmp oeq float %f{nid}, %x{nid}",
                      f"  br i1 %w{nid}, label %n{nid}s, label %n{false}",
                      f"n{nid}s:"]
            if len(threshold) > SWITCH_CASES and max(threshold) < BITMAP_CODES:
                bitmap, words = _bitmap(f"{name}_b{nid}", threshold)
                constants.append(bitmap)
                lines += [f"  %u{nid} = icmp ult i32 %i{nid}, {32 * words}",
                          f"  br i1 %u{nid}, label %n{nid}t, label %n{false}",
                          f"n{nid}t:",
                          f"  %q{nid} = lshr i32 %i{nid}, 5",
                          f"  %g{nid} = getelementptr inbounds [{words} x i32], ptr @{name}_b{nid}, i32 0, i32 %q{nid}",
                          f"  %k{nid} = load i32, ptr %g{nid}",
                          f"  %e{nid} = and i32 %i{nid}, 31",
                          f"  %z{nid} = lshr i32 %k{nid}, %e{nid}",
                          f"  %y{nid} = trunc i32 %z{nid} to i1",
                          f"  br i1 %y{nid}, label %n{true}, label %n{false}"]
            else:
                lines.append(f"  switch i32 %i{nid}, label %n{false} [" +
                             " ".join(f"i32 {c}, label %n{true}" for c in threshold) + "]")
            lines.append(f"n{nid}o:")
            if missing:
                lines += [f"  %m{nid} = fcmp uno float %x{nid}, 0.0",
                          f"  br i1 %m{nid}, label %n{true}, label %n{false}"]
            else:
                lines.append(f"  br label %n{false}")
            continue
        lines.append(f"  %c{nid} = fcmp {_COMPARE[mode]} float %x{nid}, {_f(threshold)}")
        cond = f"%c{nid}"
        if missing:
            lines.append(f"  %m{nid} = fcmp uno float %x{nid}, 0.0")
            lines.append(f"  %o{nid} = or i1 %c{nid}, %m{nid}")
            cond = f"%o{nid}"
        lines.append(f"  br i1 {cond}, label %n{true}, label %n{false}")
    lines.append("}")
    return "\n".join([*constants, *lines])


# Trees are grouped into functions of about this many nodes: LLVM optimises a group as one piece
# (its trees inlined, their small branches turned into selects, no call per tree), and the time it
# takes grows with the size of a function faster than linearly, so bounded groups keep the compile
# time linear in the model's size.
GROUP_NODES = 1000


def _groups(trees: list) -> list:
    """Consecutive tree indices, in groups of at most GROUP_NODES nodes (a bigger tree alone)."""
    groups, size = [], GROUP_NODES
    for t, tree in enumerate(trees):
        if size + len(tree) > GROUP_NODES:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += len(tree)
    return groups


def _group_function(name: str, trees: list, single: bool) -> str:
    """Trees called in order: single target -> returns acc + tree 0 + tree 1 ... (ONNX Runtime's float32
    order); else each tree adds its leaf's weights to acc."""
    if single:
        lines = [f"define internal float @{name}(ptr noalias %x, float %acc) #1 {{", "entry:"]
        total = "%acc"
        for k, t in enumerate(trees):
            lines += [f"  %t{k} = call float @{t}(ptr %x)", f"  %s{k} = fadd float {total}, %t{k}"]
            total = f"%s{k}"
        lines.append(f"  ret float {total}")
    else:
        lines = [f"define internal void @{name}(ptr noalias %x, ptr noalias %acc) #1 {{", "entry:"]
        lines += [f"  call void @{t}(ptr %x, ptr %acc)" for t in trees]
        lines.append("  ret void")
    return "\n".join(lines + ["}"])


_HELPERS = """
declare float @expf(float)
declare float @llvm.fma.f32(float, float, float)

define internal float @logistic(float %v) #0 {
  %a = call float @llvm.fabs.f32(float %v)
  %n = fneg float %a
  %e = call float @expf(float %n)
  %d = fadd float 1.0, %e
  %l = fdiv float 1.0, %d
  %neg = fcmp olt float %v, 0.0
  %c = fsub float 1.0, %l
  %r = select i1 %neg, float %c, float %l
  ret float %r
}
declare float @llvm.fabs.f32(float)
declare float @llvm.sqrt.f32(float)
attributes #0 = { nounwind }
attributes #1 = { nounwind noinline }
attributes #2 = { nounwind alwaysinline }
"""


def _post(wr: _Writer, values: list, post: str) -> list:
    """ONNX Runtime's write_scores for two or more scores."""
    if post == "NONE":
        return values
    if post == "LOGISTIC":
        return [wr.op(f"call float @logistic(float {v})") for v in values]
    if post in ("SOFTMAX", "SOFTMAX_ZERO"):
        top = _f(-np.finfo(np.float32).max)
        for v in values:
            c = wr.op(f"fcmp ogt float {v}, {top}")
            top = wr.op(f"select i1 {c}, float {v}, float {top}")
        total, exps = "0.0", []
        for v in values:
            e = wr.op(f"call float @expf(float {wr.op(f'fsub float {v}, {top}')})")
            if post == "SOFTMAX_ZERO":
                raise Unsupported("SOFTMAX_ZERO")
            exps.append(e)
            total = wr.op(f"fadd float {total}, {e}")
        return [wr.op(f"fdiv float {e}, {total}") for e in exps]
    raise Unsupported(post)


def _finish_trees(wr: _Writer, spec: Trees, sums: list) -> list:
    """Base values, AVERAGE and the post transform, as ONNX Runtime's aggregators finalize."""
    n_trees = float(len(spec.trees))
    if not spec.classifier:
        if spec.targets == 1:
            origin = spec.base[0] if len(spec.base) == 1 else 0.0
            s = sums[0]
            if spec.aggregate == "AVERAGE":
                s = wr.op(f"fdiv float {s}, {_f(n_trees)}")
            if spec.post == "PROBIT":
                raise Unsupported("PROBIT")
            return [wr.op(f"fadd float {s}, {_f(origin)}")]
        out = []
        for k, s in enumerate(sums):
            if spec.aggregate == "AVERAGE":
                s = wr.op(f"fdiv float {s}, {_f(n_trees)}")
            if len(spec.base) == spec.targets:
                s = wr.op(f"fadd float {s}, {_f(spec.base[k])}")
            out.append(s)
        return _post(wr, out, spec.post)
    has = spec.has_score
    if spec.targets > 2:
        out = [wr.op(f"fadd float {s}, {_f(spec.base[k])}") if k < len(spec.base) else s
               for k, s in enumerate(sums)]
        return _post(wr, out, spec.post)
    s0, s1 = sums
    extra = -1
    if len(spec.base) == 2:
        if has[1]:
            s1 = wr.op(f"fadd float {_f(spec.base[1])}, {s0}")
            s0 = wr.op(f"fneg float {s1}")
        else:
            s1 = wr.op(f"fadd float {s1}, {_f(spec.base[1])}")
            s0 = wr.op(f"fadd float {s0}, {_f(spec.base[0])}")
            has = [has[0], True]  # scores of both classes are written
        scores = [s0, s1]
    elif len(spec.base) == 1:
        s0 = wr.op(f"fadd float {s0}, {_f(spec.base[0])}")
        scores = [s0, s1] if has[1] else [s0]
    elif not spec.base:
        extra = 3
        scores = [s0, s1] if has[1] else [s0]
    else:
        scores = [s0, s1]
    if len(scores) == 2:
        return _post(wr, scores, spec.post)
    if spec.post == "PROBIT":
        raise Unsupported("PROBIT")
    # one score: which second class ONNX Runtime writes depends on the positive weight (per row)
    pos = s0 if has[0] else "0.0"
    if spec.binary_case:
        threshold = "0x3FE0000000000000" if spec.all_positive else "0.0"  # 0.5 or 0
        up = wr.op(f"fcmp ogt float {pos}, {threshold}")
        kinds = (0, 1) if spec.all_positive else (2, 3)
    elif extra == -1:
        raise Unsupported("one score without a second-class rule")
    else:
        up, kinds = None, (extra, extra)

    def write(kind):
        if kind in (0, 1):
            return [wr.op(f"fsub float 1.0, {s0}"), s0]
        if spec.post == "LOGISTIC":
            return [wr.op(f"call float @logistic(float {wr.op(f'fneg float {s0}')})"),
                    wr.op(f"call float @logistic(float {s0})")]
        if kind == 2:
            return [wr.op(f"fneg float {s0}"), s0]
        return [s0, wr.op(f"fneg float {s0}")]

    a, b = write(kinds[0]), write(kinds[1])
    if up is None or a == b:
        return a
    return [wr.op(f"select i1 {up}, float {x}, float {y}") for x, y in zip(a, b)]


def _row_op(wr: _Writer, kind: str, src, out: str, params, vals: dict) -> None:
    """One per-row operation on SSA values (``vals``: tensor -> its columns' values in this row)."""
    if kind == "concat":
        vals[out] = [v for s in src for v in vals[s]]
    elif kind == "pick":
        vals[out] = [vals[src][i] for i in params]
    elif kind == "impute":
        values, replaced = params
        res = []
        for v, fill in zip(vals[src], values):
            hit = wr.op(f"fcmp uno float {v}, 0.0") if np.isnan(replaced) else \
                wr.op(f"fcmp oeq float {v}, {_f(replaced)}")
            res.append(wr.op(f"select i1 {hit}, float {_f(fill)}, float {v}"))
        vals[out] = res
    elif kind == "scale":
        offs, scales = params
        vals[out] = [wr.op(f"fmul float {wr.op(f'fsub float {v}, {_f(o)}')}, {_f(s)}")
                     for v, o, s in zip(vals[src], offs, scales)]
    elif kind == "normalize":  # ONNX Runtime's Normalizer: divided by the norm when it is not 0
        xs = vals[src]
        if params == "MAX":
            norm = xs[0]
            for v in xs[1:]:
                norm = wr.op(f"select i1 {wr.op(f'fcmp ogt float {v}, {norm}')}, float {v}, float {norm}")
        else:
            norm = "0.0"
            for v in xs:
                term = wr.op(f"call float @llvm.fabs.f32(float {v})") if params == "L1" else \
                    wr.op(f"fmul float {v}, {v}")
                norm = wr.op(f"fadd float {norm}, {term}")
            if params == "L2":
                norm = wr.op(f"call float @llvm.sqrt.f32(float {norm})")
        zero = wr.op(f"fcmp oeq float {norm}, 0.0")
        vals[out] = [wr.op(f"select i1 {zero}, float {v}, float {wr.op(f'fdiv float {v}, {norm}')}") for v in xs]
    elif kind == "sum":
        acc = vals[src[0]]
        for s in src[1:]:
            acc = [wr.op(f"fadd float {x}, {y}") for x, y in zip(acc, vals[s])]
        vals[out] = acc
    elif kind == "arith":
        op, sides = src, params
        k = max(s[2] for s in sides)
        cols = []
        for side in sides:
            if side[0] == "row":
                cols.append(vals[side[1]])
            else:
                c = side[1]
                cols.append([_f(c[0] if len(c) == 1 else c[j]) for j in range(k)])
        instr = {"Mul": "fmul", "Add": "fadd", "Sub": "fsub", "Div": "fdiv"}[op]
        vals[out] = [wr.op(f"{instr} float {x}, {y}") for x, y in zip(*cols)]
    elif kind == "linear":
        coef, intercepts, post = params
        scores = []
        for t in range(coef.shape[0]):
            acc = "0.0"
            for v, c in zip(vals[src], coef[t]):
                acc = wr.op(f"call float @llvm.fma.f32(float {v}, float {_f(c)}, float {acc})")
            scores.append(wr.op(f"fadd float {acc}, {_f(intercepts[t])}"))
        vals[out] = _post(wr, scores, post) if len(scores) > 1 else scores
    else:
        raise Unsupported(kind)


def ir(ops: list, inputs: list, output: str, out_width: int) -> str:
    """LLVM IR of ``score_row(ptr x, ptr o)``, one row straight-line, and ``score(ptr X, i64 n, ptr out)``,
    its loop over rows; a row is the inputs' columns concatenated (float32)."""
    width_in = sum(k for _, k in inputs)
    functions = []
    wr = _Writer()
    entry, vals, offset = [], {}, 0
    for name, k in inputs:
        cols = []
        for j in range(k):
            p = wr.op(f"getelementptr inbounds float, ptr %x, i64 {offset + j}")
            cols.append(wr.op(f"load float, ptr {p}"))
        vals[name] = cols
        offset += k
    for e, (kind, src, out, params, *_) in enumerate(ops):
        if kind != "trees":
            _row_op(wr, kind, src, out, params, vals)
            continue
        spec = params
        single = spec.targets == 1
        functions += [_tree_function(f"e{e}t{t}", tree, single) for t, tree in enumerate(spec.trees)]
        groups = _groups(spec.trees)
        functions += [_group_function(f"e{e}g{g}", [f"e{e}t{t}" for t in group], single)
                      for g, group in enumerate(groups)]
        buf = f"%e{e}.in"
        entry.append(f"  {buf} = alloca float, i64 {len(vals[src])}")
        for j, v in enumerate(vals[src]):
            wr.emit(f"store float {v}, ptr {wr.op(f'getelementptr inbounds float, ptr {buf}, i64 {j}')}")
        if single:  # ONNX Runtime's order: 0 + tree 0 + tree 1 ... in float32
            total = "0.0"
            for g in range(len(groups)):
                total = wr.op(f"call float @e{e}g{g}(ptr {buf}, float {total})")
            sums = [total]
        else:
            acc = f"%e{e}.acc"
            entry.append(f"  {acc} = alloca float, i64 {spec.targets}")
            ptrs = [wr.op(f"getelementptr inbounds float, ptr {acc}, i64 {j}") for j in range(spec.targets)]
            for p in ptrs:
                wr.emit(f"store float 0.0, ptr {p}")
            for g in range(len(groups)):
                wr.emit(f"call void @e{e}g{g}(ptr {buf}, ptr {acc})")
            sums = [wr.op(f"load float, ptr {p}") for p in ptrs]
        vals[out] = _finish_trees(wr, spec, sums)
    for j, v in enumerate(vals[output]):
        wr.emit(f"store float {v}, ptr {wr.op(f'getelementptr inbounds float, ptr %o, i64 {j}')}")
    row = "define void @score_row(ptr noalias %x, ptr noalias %o) #0 {\nentry:\n" + "\n".join(entry + wr.lines) + \
        "\n  ret void\n}"
    score = f"""define void @score(ptr %X, i64 %n, ptr %out) #0 {{
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %done, label %loop
loop:
  %i = phi i64 [0, %entry], [%next, %loop]
  %xo = mul i64 %i, {width_in}
  %oo = mul i64 %i, {out_width}
  %xp = getelementptr inbounds float, ptr %X, i64 %xo
  %op = getelementptr inbounds float, ptr %out, i64 %oo
  call void @score_row(ptr %xp, ptr %op)
  %next = add i64 %i, 1
  %more = icmp slt i64 %next, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}}"""
    return "\n\n".join([_HELPERS, *functions, row, score]) + "\n"


# --- compile, cache, check -----------------------------------------------------------------------------

_SCORE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p)  # releases the GIL
_ROW = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_llvm_ready = False


def _target_machine(opt: int = 2):
    global _llvm_ready
    import llvmlite.binding as llvm

    if not _llvm_ready:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _llvm_ready = True
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=features, reloc="pic",
                                        codemodel="default", opt=opt)


# Up to this many tree nodes (a categorical split's membership test counting one) and this much IR,
# LLVM at -O2; beyond, -O0. Compile time follows the code's size, so nodes count, not trees. With
# trees in groups of GROUP_NODES, -O2 compiles a 1,000-tree model (7,000 nodes) in about the time
# codegen alone took. A membership test is one node but a dozen instructions and a constant: 654
# 6-class trees of 7 leaves over ids (8,500 nodes, 3,200 membership tests, 3.4 MB of IR) took 15 s
# at -O2, 1.6 s at -O0.
OPTIMIZED_NODES = 15_000
OPTIMIZED_IR_BYTES = 2_000_000


# What ``load`` takes to compile, generously, per tree node of the ONNX graph: LLVM's time follows
# the code's size, and a category test (one ``case`` of a membership switch) costs more than a
# comparison. Measured on 2 cores: 560 kB of numerical LightGBM (~8,500 nodes) in ~1 s; 654 trees of
# 7 leaves on ids (53,000 category tests, 5,300 other nodes) in 15 s.
COMPILE_SECONDS = 0.3
COMPILE_SECONDS_PER_NODE = 150e-6
COMPILE_SECONDS_PER_CATEGORY_TEST = 350e-6


def compile_seconds(onnx_bytes: bytes) -> float:
    """A generous guess of the seconds ``load`` takes to compile the trees of ``onnx_bytes``, from
    its tree nodes (``BRANCH_EQ`` tests priced apart)."""
    import onnx

    tests = nodes = 0
    for node in onnx.load_from_string(onnx_bytes).graph.node:
        for a in node.attribute:
            if a.name == "nodes_modes":
                modes = list(a.strings)
                eq = modes.count(b"BRANCH_EQ")
                tests += eq
                nodes += len(modes) - eq
    return COMPILE_SECONDS + nodes * COMPILE_SECONDS_PER_NODE + tests * COMPILE_SECONDS_PER_CATEGORY_TEST


def compile_object(source: str, opt: int = 2) -> bytes:
    """Native object code of LLVM IR ``source`` for this CPU.

    At -O<opt> > 0, LLVM's IR pipeline of that level runs first (inlining each group's trees, turning
    small branches into selects), then the code generator at that level: on 100,000 rows, 100 trees
    of 31 leaves took 0.27x ONNX Runtime's time against 0.46x with the code generator's -O2 alone,
    1,000 trees of 4 leaves 0.25x against 0.35x, for the same compile time (measured in one process,
    2 busy cores)."""
    import llvmlite.binding as llvm

    tm = _target_machine(opt)
    module = llvm.parse_assembly(source)
    module.verify()
    # LLVM's own -O<opt> pipeline on the IR (the target machine's level only sets the code generator's);
    # at -O0 it only inlines the trees into their groups (alwaysinline)
    builder = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(opt))
    builder.getModulePassManager().run(module, builder)
    return tm.emit_object(module)


def link(obj: bytes, given: dict[str, int] | None = None) -> tuple:
    """(what keeps the code mapped, a function of a global function's name to its address (0 if
    absent), "native" or "llvmlite"): object code loaded by ``sqlml.onnx.native`` where it can (no
    LLVM in the process), else by llvmlite's MCJIT. ``given``: addresses of outside symbols the
    process does not export."""
    try:
        code = native.Loaded(obj, given)
        return code, code.address, "native"
    except native.Unsupported:
        import llvmlite.binding as llvm

        for name, address in (given or {}).items():
            llvm.add_symbol(name, address)
        code = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine())
        code.add_object_file(llvm.ObjectFileRef.from_data(obj))
        code.finalize_object()
        return code, code.get_function_address, "llvmlite"


class Compiled:
    """Native ``score`` loaded from object code: rows of ``width`` float32 in, ``outputs`` float32 out.

    The code is loaded by ``sqlml.onnx.native`` where it can (x86-64 Linux: no LLVM in the process),
    else by llvmlite's MCJIT."""

    def __init__(self, obj: bytes, width: int, outputs: int):
        self._code, address_of, self.loader = link(obj)
        address, row = address_of("score"), address_of("score_row")
        if not address or not row:
            raise RuntimeError("compiled object has no score function")
        self._score, self._score_row = _SCORE(address), _ROW(row)
        self.width, self.outputs = width, outputs
        self._row_in = np.zeros(width, dtype=np.float32)
        self._row_out = np.zeros(outputs, dtype=np.float32)
        self._in_addr = ctypes.c_void_p(self._row_in.ctypes.data)
        self._out_addr = ctypes.c_void_p(self._row_out.ctypes.data)
        self._row_view = memoryview(self._row_in).cast("B")
        self._pack = struct.Struct(f"={width}f").pack_into

    def run(self, matrix: np.ndarray) -> np.ndarray:
        """Scores (n, outputs) float32 of ``matrix`` (n, width)."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        n = matrix.shape[0]
        out = np.empty((n, self.outputs), dtype=np.float32)
        if n:
            self._score(matrix.ctypes.data, n, out.ctypes.data)
        return out

    def run_row(self, values) -> np.ndarray:
        """Scores of one row (a sequence of ``width`` floats): a float32 view, overwritten by the next call."""
        self._pack(self._row_view, 0, *values)
        self._score_row(self._in_addr, self._out_addr)
        return self._row_out

    def row_entry(self):
        """``run_row`` in parts, for callers that generate their own code: (pack, view, score, out):
        ``pack(view, 0, *values)``, then ``score()``, then ``out[j]`` holds output j (a float)."""
        import functools

        return (self._pack, self._row_view, functools.partial(self._score_row, self._in_addr, self._out_addr),
                memoryview(self._row_out))


def probe_rows(ops: list, inputs: list, rows: int = 512, seed: int = 0) -> np.ndarray:
    """Rows of the concatenated inputs that reach the trees' thresholds, their float32 neighbours,
    NaN and numbers of several scales, as every column allows."""
    rng = np.random.default_rng(seed)
    width = sum(k for _, k in inputs)
    # which input column each vector column is (where the value reaches it unchanged, NaN aside)
    origin, offset = {}, 0
    for name, k in inputs:
        origin[name] = list(range(offset, offset + k))
        offset += k
    pools = [set() for _ in range(width)]
    for kind, src, out, params, *_ in ops:
        if kind == "concat":
            origin[out] = [c for s in src for c in origin.get(s, [None] * 0)] \
                if all(s in origin for s in src) else None
        elif kind in ("pick",) and origin.get(src):
            origin[out] = [origin[src][i] for i in params]
        elif kind == "impute" and origin.get(src):
            origin[out] = origin[src]
        elif kind == "trees" and origin.get(src):
            for tree in params.trees:
                for v in tree.values():
                    if v[0] != "leaf" and v[1] < len(origin[src]) and origin[src][v[1]] is not None:
                        pools[origin[src][v[1]]].update(v[2] if v[0] == "member" else (v[2],))
    matrix = (rng.normal(size=(rows, width)) * rng.choice([1.0, 10.0, 1000.0], size=(rows, width))).astype(np.float32)
    for j, pool in enumerate(pools):
        if not pool:
            continue
        t = np.array(sorted(pool), dtype=np.float32)
        near = np.concatenate([t, np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf))])
        pick = rng.random(rows) < 0.8
        matrix[pick, j] = rng.choice(near, size=int(pick.sum()))
    matrix[rng.random((rows, width)) < 0.1] = np.nan
    return matrix


def agrees(got: np.ndarray, want: np.ndarray, classifier: bool) -> bool:
    """Same labels (argmax) and scores within TOLERANCE (relative beyond 1)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False
    if classifier and not np.array_equal(got.argmax(axis=1), want.argmax(axis=1)):
        return False
    close = np.abs(got - want) <= TOLERANCE * np.maximum(1.0, np.abs(want))
    return bool(np.all(close | (np.isnan(got) & np.isnan(want))))


def cache_key(sha256: str) -> str:
    """The cache file name for a model: its sha256 and everything that makes the code or the answers
    (found without importing llvmlite, onnx or onnxruntime: a cold backend loading cached code needs
    none of them)."""
    salt = f"{VERSION}|{_installed('llvmlite')}|{_installed('onnxruntime')}|{_installed('onnx')}|" \
           f"{os.uname().machine}|{_cpu()}"
    return f"{sha256}-{hashlib.sha256(salt.encode()).hexdigest()[:16]}"


_versions: dict = {}


def _installed(package: str) -> str:
    """A package's installed version from its dist-info folder's name on ``sys.path``, without
    importing the package (onnxruntime costs ~80 ms, llvmlite more) or importlib.metadata."""
    if package not in _versions:
        prefix, found = package + "-", "none"
        for directory in sys.path:
            try:
                entries = sorted(os.listdir(directory or "."))
            except OSError:
                continue
            found = next((e[len(prefix):-len(".dist-info")] for e in entries
                          if e.startswith(prefix) and e.endswith(".dist-info")), "none")
            if found != "none":
                break
        _versions[package] = found
    return _versions[package]


def _cpu() -> str:
    """This CPU's model and features (what the code was compiled for), as /proc/cpuinfo says."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read(65536)
    except OSError:
        return os.uname().machine
    first = text.split("\n\n", 1)[0]
    return hashlib.sha256("\n".join(line for line in first.splitlines()
                                    if line.split(":")[0].strip() in ("vendor_id", "model name", "flags")
                                    ).encode()).hexdigest()[:16]


def private_directory(path: str | None) -> str | None:
    """``path``, created mode 700 if missing, if it is a directory of this OS user that no one else
    may write; else None (no cache)."""
    if not path:
        return None
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError:
        return None
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return path


# A cache entry: this header, then the object code, the probe rows and ONNX Runtime's answers on them
# (float32, row-major) and the caller's metadata (UTF-8). One read and np.frombuffer: a cold backend
# imports nothing for it (an .npz needed zipfile, shutil and a codec: ~10% of a cold first predict).
_ENTRY = struct.Struct("<8sQQQQQ")  # magic, object bytes, probe rows, probe columns, outputs, metadata bytes
_MAGIC = b"sqlmlc2\0"  # 2: sealed (``write_sealed``)


def from_cache(key: str, cache_dir: str | None, classifier: bool) -> tuple | None:
    """(Compiled, the metadata stored with it) from the cache, if there and if it still gives the
    answers ONNX Runtime gave on its probe rows; else None. Needs neither onnx nor onnxruntime, nor
    llvmlite where ``sqlml.onnx.native`` loads the code."""
    data = read_sealed(os.path.join(cache_dir, key + ".bin")) if cache_dir else None
    if data is None:
        return None
    try:
        magic, size, rows, width, outputs, meta_size = _ENTRY.unpack_from(data)
        at = _ENTRY.size
        if magic != _MAGIC or len(data) != at + size + 4 * rows * (width + outputs) + meta_size:
            return None
        obj = data[at:at + size]
        at += size
        probes = np.frombuffer(data, dtype=np.float32, count=rows * width, offset=at).reshape(rows, width)
        at += 4 * rows * width
        want = np.frombuffer(data, dtype=np.float32, count=rows * outputs, offset=at).reshape(rows, outputs)
        meta = data[at + 4 * rows * outputs:].decode()
        compiled = Compiled(obj, width, outputs)
        if agrees(compiled.run(probes), want, classifier):
            return compiled, meta
    except (ValueError, RuntimeError, IndexError, struct.error, UnicodeDecodeError):
        pass  # unreadable or stale: the caller compiles again
    return None


def load(core_bytes: bytes, inputs: list, output: str, classifier: bool, reference, key: str | None = None,
         cache_dir: str | None = None, meta: str = "") -> Compiled | None:
    """The core graph compiled, checked on probe rows against ``reference(matrix) -> scores``
    (ONNX Runtime on the core graph), or None when it is not supported or disagrees. When it
    agrees and ``cache_dir`` is given, the code is kept there under ``key`` with ``meta``.

    ``inputs``: (name, width) of the core inputs, in the order of the matrix's columns."""
    import llvmlite.binding as llvm  # noqa: F401 - fails here, before any work, when llvmlite is missing

    prog = program(core_bytes, output, inputs)
    if prog is None:
        return None
    ops, out_width = prog
    width = sum(k for _, k in inputs)
    nodes = sum(len(tree) for op in ops if op[0] == "trees" for tree in op[3].trees)
    try:
        source = ir(ops, inputs, output, out_width)
        obj = compile_object(source, 2 if nodes <= OPTIMIZED_NODES and len(source) <= OPTIMIZED_IR_BYTES else 0)
    except Unsupported:
        return None
    compiled = Compiled(obj, width, out_width)
    probes = probe_rows(ops, inputs)
    want = np.asarray(reference(probes), dtype=np.float32)
    if not agrees(compiled.run(probes), want, classifier):
        return None
    if cache_dir and key:
        probes, want = np.ascontiguousarray(probes, dtype=np.float32), np.ascontiguousarray(want, dtype=np.float32)
        meta_bytes = meta.encode()
        write_sealed(os.path.join(cache_dir, key + ".bin"),
                     b"".join([_ENTRY.pack(_MAGIC, len(obj), *probes.shape, want.shape[1], len(meta_bytes)), obj,
                               probes.tobytes(), want.tobytes(), meta_bytes]))
    return compiled


def cached_code(name: str, source: str, cache_dir: str | None, load, version: str = ""):
    """``load(object code)`` of LLVM IR ``source`` (helpers that are not a model: the text scanners,
    the backend's error guard): from ``cache_dir`` if compiled there before (under ``name``, the IR's
    hash, ``version`` and ``cache_key``'s salt), else compiled (LLVM) and kept there; None where it
    cannot be (no LLVM, or ``load`` raised: a failed check)."""
    key = cache_key(f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:16]}" + (f"-{version}" if version else ""))
    directory = private_directory(cache_dir)
    path = os.path.join(directory, key + ".o") if directory else None
    obj = read_sealed(path) if path else None
    if obj is not None:
        try:
            return load(obj)
        except Exception:  # noqa: BLE001 - intact but not loadable here: compiled again
            pass
    try:
        obj = compile_object(source)
        found = load(obj)
    except Exception:  # noqa: BLE001 - no LLVM, or it failed: the caller's general way
        return None
    if path:
        write_sealed(path, obj)
    return found


def read_sealed(path: str) -> bytes | None:
    """What ``write_sealed`` wrote at ``path``, or None: absent, unreadable, or not what was written
    (damaged, cut short, another format). Every cache file of native code goes through this pair:
    a damaged object run could crash the backend, and probe rows do not catch every flipped bit."""
    try:
        with open(path, "rb") as f:
            sealed = f.read()
    except OSError:
        return None
    data, digest = sealed[:-32], sealed[-32:]
    return data if len(sealed) >= 32 and hashlib.sha256(data).digest() == digest else None


def write_sealed(path: str, data: bytes) -> None:
    """Write ``data`` and its sha256 to ``path`` atomically, readable by this OS user only."""
    import tempfile

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data + hashlib.sha256(data).digest())
        os.replace(tmp, path)
    except OSError:  # a full disk or a read-only cache costs a compile next time, nothing else
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
