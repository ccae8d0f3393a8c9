"""Exact path-dependent TreeSHAP (Lundberg et al., 2020) for tree ensembles, vectorised.

For one leaf with value ``v`` whose root path tests the distinct features ``f_1 .. f_k``, let
``z_i`` be the product of the cover ratios (child / parent) of the path's edges on ``f_i`` and
``o_i(x)`` 1 if row ``x`` goes the path's way at every one of those edges, else 0. Path-dependent
TreeSHAP is the Shapley value of the game ``val(S) = v * prod_{i in S} o_i * prod_{i not in S} z_i``:

    phi_j = v * (o_j - z_j) * sum_s w(s, k) * [t^s] prod_{i != j} (z_i + o_i t),
    w(s, k) = s! (k - 1 - s)! / k!,            base = sum over leaves of v * prod_i z_i.

The sum over s is an integral that Gauss-Legendre quadrature computes exactly (``_weights``):
O(k^2) per row and leaf, as the original algorithm, in a few array operations. Since ``o`` is a
pattern of k bits, a leaf's weights for all 2^k patterns can be tabulated once (Fast TreeSHAP v2,
Yang 2021): a row then costs a k-bit lookup per leaf. Leaves with small k are tabulated (within
``TABLE_CELLS``), the others computed per row. ``sqlml.explain.native`` computes this in native
code, from the arrays ``Forest._native_arrays`` lays out; the numpy version here (leaves with the
same k across every tree stacked, so that numpy calls are per block of leaves and rows, not per
leaf) is what runs where llvmlite is missing, and the reference the native code is tested against.

A split sends a row left as LightGBM does (scikit-learn's ``x <= t`` is the case ``missing = NAN``
with ``default_left = False``): numerical ``x <= t``, where ``missing`` decides NaN (NONE: NaN is
0; ZERO: NaN and 0 take the default side; NAN: NaN takes it); categorical: ``x`` in the node's
category set (NaN and negative codes go right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sqlml.explain import native
from sqlml.explain.native import CATEGORICAL, NAN, NONE, ZERO, ZERO_THRESHOLD

BLOCK_CELLS = 1 << 21  # float64 cells per (rows x leaves x degree) block: 16 MB
TABLE_CELLS = 1 << 22  # float64 cells of tabulated leaf weights per forest: 32 MB


@dataclass
class Tree:
    """One tree as node arrays: children (-1 at leaves), the feature and threshold tested, the value
    (nodes, outputs) and cover of each node; per split, ``default_left`` and ``missing``; for
    categorical splits, ``categories[node]`` the codes that go left (None for numerical splits)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    cover: np.ndarray
    default_left: np.ndarray | None = None
    missing: np.ndarray | None = None
    categories: list | None = None


@dataclass
class LeafGroup:
    """Every leaf whose path tests ``k`` distinct features. ``feature`` (L, k); ``edges`` (L, k, E)
    node indices (into the forest's stacked nodes; ``-1`` pads, always satisfied) with ``left``
    (L, k, E) the side the path takes; ``z`` (L, k); ``value`` (L, outputs); ``table`` (L * 2^k, k)
    the weights for every pattern of o, leaf after leaf (None: computed per row)."""

    feature: np.ndarray
    edges: np.ndarray
    left: np.ndarray
    z: np.ndarray
    value: np.ndarray
    table: np.ndarray | None = None
    columns: np.ndarray | None = None  # edges as columns of ``Forest.decisions``' output (see ``_group``)
    _scatter: object = None

    def scatter(self, n_columns: int, outputs: int):
        """Sparse (L * k, n_columns * outputs): slot (leaf, j) -> its feature's column, times the
        leaf's value per output; a block's weights (n, L * k) times it are its contributions."""
        if self._scatter is None:
            from scipy import sparse

            count, k = self.feature.shape
            rows = np.repeat(np.arange(count * k), outputs)
            cols = (self.feature.reshape(-1, 1) * outputs + np.arange(outputs)).reshape(-1)
            vals = np.repeat(self.value, k, axis=0).reshape(-1)
            self._scatter = sparse.csr_matrix((vals, (rows, cols)), shape=(count * k, n_columns * outputs))
        return self._scatter


class Forest:
    """A scaled sum of trees, ready to explain."""

    def __init__(self, trees: list[Tree], scale: float, n_columns: int, table_cells: int = TABLE_CELLS):
        self.n_columns = n_columns
        self.n_outputs = trees[0].value.shape[1]
        offsets = np.concatenate([[0], np.cumsum([len(t.left) for t in trees])])
        self.node_feature = np.concatenate([np.maximum(t.feature, 0) for t in trees]).astype(np.int64)
        self.node_split = np.concatenate([np.asarray(t.left) >= 0 for t in trees])
        self.node_threshold = np.concatenate([t.threshold for t in trees]).astype(np.float64)
        self.node_default_left = np.concatenate(
            [t.default_left if t.default_left is not None else np.zeros(len(t.left), bool) for t in trees]
        )
        self.node_missing = np.concatenate(
            [t.missing if t.missing is not None else np.full(len(t.left), NAN, np.int8) for t in trees]
        )
        self.zero_nodes = np.flatnonzero(self.node_missing == ZERO)
        self.categorical = {
            int(off + i): np.asarray(sorted(c), dtype=np.float64)
            for t, off in zip(trees, offsets)
            for i, c in enumerate(t.categories or [])
            if c is not None
        }
        paths = _leaf_paths(trees, offsets)
        values = np.concatenate([np.asarray(t.value, dtype=np.float64) for t in trees])[paths.leaf] * scale
        self.base = (values * paths.z_total[:, None]).sum(axis=0)
        self.groups = {}
        budget = table_cells
        for k in np.unique(paths.k):
            k = int(k)
            rows = np.flatnonzero(paths.k == k)  # leaves of this k, in the order of their global index
            slots = np.flatnonzero(paths.k[paths.slot_leaf] == k)  # their slots, leaf after leaf
            row_of = np.empty(len(paths.k), np.int64)
            row_of[rows] = np.arange(len(rows))
            width = max(int(paths.slot_count[slots].max()), 1) if len(slots) else 1
            edges = np.full((len(rows), k, width), -1, dtype=np.int64)
            left = np.ones((len(rows), k, width), dtype=bool)
            on = np.isin(paths.edge_slot, slots)
            r = row_of[paths.slot_leaf[paths.edge_slot[on]]]
            edges[r, paths.slot_index[paths.edge_slot[on]], paths.edge_position[on]] = paths.edge_node[on]
            left[r, paths.slot_index[paths.edge_slot[on]], paths.edge_position[on]] = paths.edge_left[on]
            g = LeafGroup(
                paths.slot_feature[slots].reshape(len(rows), k),
                edges,
                left,
                paths.slot_z[slots].reshape(len(rows), k),
                values[rows].reshape(len(rows), -1),
            )
            cells = len(rows) * (2**k) * k
            if 0 < k and cells <= budget:
                g.table = _table(g.z)
                budget -= cells
            nodes = len(self.node_feature) + 1
            g.columns = np.where(edges < 0, nodes - 1, np.where(left, edges, edges + nodes))
            self.groups[k] = g
        self._native = None

    def _native_arrays(self) -> dict:
        """The forest as ``sqlml.explain.native.ARGS`` arrays: the splits, then the leaves of the
        groups (k > 0) one after the other, their slots, edges and tables."""
        i64 = np.int64
        split_of = np.cumsum(self.node_split) - 1  # a node's position among the splits
        kind = self.node_missing.astype(i64)
        cat_start = np.zeros(len(kind), i64)
        cat_count = np.zeros(len(kind), i64)
        cat_left = [np.zeros(1, i64)]
        offset = 1
        for node, codes in self.categorical.items():
            codes = codes[codes >= 0].astype(i64)
            left = np.zeros(int(codes.max()) + 1 if len(codes) else 0, i64)
            left[codes] = 1
            kind[node], cat_start[node], cat_count[node] = CATEGORICAL, offset, len(left)
            cat_left.append(left)
            offset += len(left)
        groups = [(k, g) for k, g in self.groups.items() if k]
        leaf_k, leaf_table, out_start, out_count, values = [], [], [], [], []
        slot_feature, slot_z, edge_count, edges, tables = [], [], [], [], [np.zeros(1)]
        table_at = 1
        for k, g in groups:
            count = len(g.feature)
            leaf_k.append(np.full(count, k, i64))
            if g.table is not None:
                leaf_table.append(table_at + np.arange(count, dtype=i64) * (2**k * k))
                tables.append(g.table.reshape(-1))
                table_at += g.table.size
            else:
                leaf_table.append(np.full(count, -1, i64))
            scored = g.value != 0  # the outputs a leaf scores: from its first nonzero value to its last
            first = np.argmax(scored, axis=1)
            last = g.value.shape[1] - 1 - np.argmax(scored[:, ::-1], axis=1)
            n_out = np.where(scored.any(axis=1), last - first + 1, 0)
            out_start.append(first.astype(i64))
            out_count.append(n_out.astype(i64))
            outputs = np.arange(g.value.shape[1])
            values.append(g.value[(outputs >= first[:, None]) & (outputs < (first + n_out)[:, None])])
            slot_feature.append(g.feature.reshape(-1))
            slot_z.append(g.z.reshape(-1))
            real = g.edges >= 0
            edge_count.append(real.sum(axis=2).reshape(-1))
            edges.append((split_of[g.edges] * 2 + ~g.left)[real])
        def cat(parts, dtype):  # the native code takes no empty array: an unread 0 stands for one
            a = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
            return np.ascontiguousarray(a if a.size else np.zeros(1, dtype))

        leaf_k, edge_count, out_count = cat(leaf_k, i64), cat(edge_count, i64), cat(out_count, i64)
        longest = int(leaf_k.max()) if len(groups) else 0
        t, w = zip(*(_nodes((k + 1) // 2) for k in range(1, longest + 1))) if longest else ((), ())
        sizes = [0, 0] + [(k + 1) // 2 for k in range(1, longest + 1)]
        split = self.node_split
        return {
            "nodes": int(split.sum()),
            "node_feature": cat([self.node_feature[split]], i64),
            "node_threshold": cat([self.node_threshold[split]], np.float64),
            "node_kind": cat([kind[split]], i64),
            "node_default_left": cat([self.node_default_left[split]], i64),
            "node_cat_start": cat([cat_start[split]], i64),
            "node_cat_count": cat([cat_count[split]], i64),
            "cat_left": cat(cat_left, i64),
            "leaves": int(sum(len(g.feature) for _, g in groups)),
            "leaf_k": leaf_k,
            "leaf_slot": np.concatenate([[0], np.cumsum(leaf_k)[:-1]]).astype(i64),
            "leaf_table": cat(leaf_table, i64),
            "leaf_out_start": cat(out_start, i64),
            "leaf_out_count": out_count,
            "leaf_value_start": np.concatenate([[0], np.cumsum(out_count)[:-1]]).astype(i64),
            "value": cat(values, np.float64),
            "slot_feature": cat(slot_feature, i64),
            "slot_edge_start": np.concatenate([[0], np.cumsum(edge_count)[:-1]]).astype(i64),
            "slot_edge_count": edge_count,
            "slot_z": cat(slot_z, np.float64),
            "edge": cat(edges, i64),
            "table": cat(tables, np.float64),
            "quadrature_start": np.cumsum(sizes)[:-1].astype(i64) if longest else np.zeros(2, i64),
            "quadrature_t": cat(t, np.float64),
            "quadrature_w": cat(w, np.float64),
        }

    def decisions(self, X: np.ndarray) -> np.ndarray:
        """Whether each row goes left at each node, a True column (padding), whether it goes right at
        each node, and a True column: (n, 2 * (nodes + 1))."""
        n, nodes = len(X), len(self.node_feature)
        go = np.empty((n, 2 * (nodes + 1)), dtype=bool)
        xf = X[:, self.node_feature]
        np.less_equal(xf, self.node_threshold, out=go[:, :nodes])  # NaN: False, fixed below where it matters
        if np.isnan(X).any():
            isnan = np.isnan(xf)
            zero_fill = isnan & (self.node_missing == NONE)
            go[:, :nodes] = np.where(zero_fill, 0.0 <= self.node_threshold, go[:, :nodes])
            go[:, :nodes] = np.where(isnan & (self.node_missing != NONE), self.node_default_left, go[:, :nodes])
        for node in self.zero_nodes:  # ZERO: 0 (and NaN) take the default side
            x = xf[:, node]
            go[:, node] = np.where(
                np.isnan(x) | (np.abs(x) < ZERO_THRESHOLD), self.node_default_left[node], go[:, node]
            )
        for node, cats in self.categorical.items():
            x = X[:, self.node_feature[node]]
            go[:, node] = ~np.isnan(x) & (x >= 0) & np.isin(np.floor(np.where(np.isnan(x), -1, x)), cats)
        go[:, nodes] = True
        np.logical_not(go[:, :nodes], out=go[:, nodes + 1 : -1])
        go[:, -1] = True
        return go

    def shap_values(self, X: np.ndarray, use_native: bool = True, interrupt=None) -> np.ndarray:
        """Contributions of shape (n, n_columns, outputs) for the rows ``X`` (n, n_columns); the rows
        are taken as float32, as the trees compare them in ONNX Runtime. Native code computes them
        (``sqlml.explain.native``), numpy where llvmlite is missing or ``use_native`` is False.
        ``interrupt()``, if given, is called between slices of rows (it may raise)."""
        X = np.asarray(X, dtype=np.float32).astype(np.float64)
        n = len(X)
        out = np.zeros((n, self.n_columns, self.n_outputs))
        if use_native and native.function() is not None:
            if self._native is None:
                self._native = self._native_arrays()
            native.run(self._native, X, out, max(self.groups, default=0), interrupt)
            return out
        rows = max(1, min(n, BLOCK_CELLS // max(len(self.node_feature), 1)))
        for r0 in range(0, n, rows):
            if interrupt is not None:
                interrupt()
            go = self.decisions(X[r0 : r0 + rows])
            for k, g in self.groups.items():
                if k:  # a tree that is one leaf moves only the base
                    _group(go, g, out[r0 : r0 + rows])
        return out


def _group(go, g: LeafGroup, out) -> None:
    """Add the contributions of one leaf group for the rows whose decisions are ``go`` (``decisions``,
    then its negation: a path edge's column is its node, or its node + nodes + 1 for a right turn)
    into ``out`` (n, columns, outputs)."""
    n, (count, k, width) = len(go), g.edges.shape
    leaves = max(1, BLOCK_CELLS // (n * max(k * (k + 1) // 2, width * k)))
    scatter = g.scatter(out.shape[1], out.shape[2])
    flat = out.reshape(n, -1)
    for l0 in range(0, count, leaves):
        sl = slice(l0, l0 + leaves)
        columns = g.columns[sl]
        if g.table is not None:  # the pattern's index, bit by bit, then its row of the table
            mask = np.zeros((n, columns.shape[0]), dtype=np.int64)
            for j in range(k):
                oj = go[:, columns[:, j, 0]] if width == 1 else np.all(go[:, columns[:, j]], axis=2)
                mask |= oj.astype(np.uint16) << np.uint16(j)
            mask += np.arange(l0, l0 + columns.shape[0]) << k
            w = np.take(g.table, mask, axis=0)  # (n, L, k)
        else:
            o = np.all(go[:, columns], axis=3)
            w = _weights(np.ascontiguousarray(o.transpose(2, 0, 1), dtype=np.float64), g.z[sl]).transpose(1, 2, 0)
        flat += w.reshape(n, -1) @ scatter[l0 * k : (l0 + columns.shape[0]) * k]


def _weights(o: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``(o_j - z_j) * sum_s w(s, k) [t^s] prod_{i != j} (z_i + o_i t)`` of shape (k, n, L), for
    ``o`` (k, n, L) in {0, 1} and ``z`` (L, k).

    With ``w(s, k) = B(s + 1, k - s) = int_0^1 t^s (1 - t)^(k-1-s) dt`` the sum is the integral over
    [0, 1] of ``prod_{i != j} (z_i (1 - t) + o_i t)``, a polynomial of degree k - 1: Gauss-Legendre
    with ceil(k / 2) nodes integrates it exactly (the idea of Linear TreeSHAP, Yu et al. 2022). Each
    factor is positive inside (0, 1), so the product over i != j is the product over all i divided
    by the factor of j: a few array operations instead of a polynomial per (row, leaf)."""
    k = o.shape[0]
    t, g = _nodes((k + 1) // 2)
    zt = z.T[:, None, None, :]  # (k, 1, 1, L)
    f = zt * (1.0 - t)[None, :, None, None] + o[:, None, :, :] * t[None, :, None, None]  # (k, M, n, L)
    everything = np.prod(f, axis=0)  # (M, n, L)
    psi = np.einsum("m,jmnl->jnl", g, everything[None] / f)
    return (o - z.T[:, None, :]) * psi


def _table(z: np.ndarray) -> np.ndarray:
    """The weights of every pattern of o for leaves with path covers ``z`` (L, k): (L * 2^k, k), the
    row ``leaf * 2^k + pattern`` holding the weights when bit j of ``pattern`` is o_j."""
    count, k = z.shape
    patterns = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1).astype(np.float64).T  # (k, 2^k)
    table = np.empty((count, 2**k, k))
    step = max(1, BLOCK_CELLS // (2**k * k * ((k + 1) // 2)))
    for l0 in range(0, count, step):
        sl = slice(l0, l0 + step)
        o = np.repeat(patterns[:, :, None], z[sl].shape[0], axis=2)  # (k, 2^k, L)
        table[sl] = _weights(o, z[sl]).transpose(2, 1, 0)
    return table.reshape(-1, k)


def _nodes(m: int):
    """Gauss-Legendre nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(m)
    return (x + 1.0) / 2.0, w / 2.0


@dataclass
class LeafPaths:
    """Every leaf of a forest with its root path, grouped by the distinct features the path tests.

    Leaves (L, by global node index): ``leaf`` their node, ``k`` their distinct features, ``z_total``
    the product of their path's cover ratios. Slots (one per leaf and distinct feature, leaf after
    leaf, features ascending): ``slot_leaf`` (into the leaves), ``slot_index`` (0..k-1),
    ``slot_feature``, ``slot_z`` (the product of the ratios of the slot's edges), ``slot_count``
    (its edges). Edges: ``edge_slot``, ``edge_position`` (root first), ``edge_node``, ``edge_left``
    (the side the path takes)."""

    leaf: np.ndarray
    k: np.ndarray
    z_total: np.ndarray
    slot_leaf: np.ndarray
    slot_index: np.ndarray
    slot_feature: np.ndarray
    slot_z: np.ndarray
    slot_count: np.ndarray
    edge_slot: np.ndarray
    edge_position: np.ndarray
    edge_node: np.ndarray
    edge_left: np.ndarray


def _leaf_paths(trees: list[Tree], offsets: np.ndarray) -> LeafPaths:
    """``LeafPaths`` of ``trees`` (nodes numbered globally from ``offsets``): every leaf walks up to
    its root at once, one numpy step per level, instead of a Python walk per leaf (on a 6-class
    model of 26,000 leaves that took 2 s of a 30 s training)."""
    i64 = np.int64
    n = int(offsets[-1])
    def stacked(children):  # one tree's child indices, numbered globally (-1 at leaves)
        return np.concatenate([np.where(np.asarray(c) >= 0, np.asarray(c) + o, -1) for c, o in zip(children, offsets)])

    left, right = stacked([t.left for t in trees]), stacked([t.right for t in trees])
    feature = np.concatenate([np.asarray(t.feature) for t in trees]).astype(i64)
    cover = np.concatenate([np.asarray(t.cover, dtype=np.float64) for t in trees])
    root = np.repeat(offsets[:-1].astype(i64), np.diff(offsets))
    parent = np.full(n, -1, i64)
    went_left = np.zeros(n, bool)
    splits = np.flatnonzero(left >= 0)
    parent[left[splits]], went_left[left[splits]] = splits, True
    parent[right[splits]] = splits
    leaf = np.flatnonzero(left < 0)
    # walk up: one row per edge, (leaf, step from the leaf, node, side, cover ratio)
    e_leaf, e_step, e_node, e_left, e_ratio = [], [], [], [], []
    ids, cur, step = np.arange(len(leaf)), leaf.copy(), 0
    with np.errstate(divide="ignore", invalid="ignore"):
        while len(cur):
            up = cur != root[cur]
            ids, cur = ids[up], cur[up]
            p = parent[cur]
            e_leaf.append(ids)
            e_step.append(np.full(len(ids), step, i64))
            e_node.append(p)
            e_left.append(went_left[cur])
            e_ratio.append(cover[cur] / cover[p])
            cur, step = p, step + 1
    e_leaf, e_step, e_node = np.concatenate(e_leaf), np.concatenate(e_step), np.concatenate(e_node)
    e_left, e_ratio = np.concatenate(e_left), np.concatenate(e_ratio)
    e_feature = feature[e_node]
    order = np.lexsort((-e_step, e_feature, e_leaf))  # by leaf, feature, then root first
    e_leaf, e_node, e_left, e_ratio, e_feature = (a[order] for a in (e_leaf, e_node, e_left, e_ratio, e_feature))
    new_slot = np.ones(len(e_leaf), bool)
    new_slot[1:] = (e_leaf[1:] != e_leaf[:-1]) | (e_feature[1:] != e_feature[:-1])
    starts = np.flatnonzero(new_slot)
    edge_slot = np.cumsum(new_slot) - 1
    slot_leaf = e_leaf[starts]
    slot_count = np.diff(np.append(starts, len(e_leaf)))
    slot_z = np.multiply.reduceat(e_ratio, starts) if len(starts) else np.zeros(0)
    k = np.bincount(slot_leaf, minlength=len(leaf)).astype(i64)
    first_slot = np.concatenate([[0], np.cumsum(k)[:-1]])
    z_total = np.ones(len(leaf))
    np.multiply.at(z_total, slot_leaf, slot_z)
    return LeafPaths(
        leaf=leaf, k=k, z_total=z_total, slot_leaf=slot_leaf, slot_index=np.arange(len(starts)) - first_slot[slot_leaf],
        slot_feature=e_feature[starts], slot_z=slot_z, slot_count=slot_count, edge_slot=edge_slot,
        edge_position=np.arange(len(e_leaf)) - starts[edge_slot], edge_node=e_node, edge_left=e_left)
