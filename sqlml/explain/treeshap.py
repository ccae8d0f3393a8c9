"""Exact path-dependent TreeSHAP (Lundberg et al., 2020) for axis-aligned trees, vectorised.

For one leaf with value ``v`` whose root path tests the distinct features ``f_1 .. f_k``, let
``z_i`` be the product of the cover ratios (child / parent) of the path's edges on ``f_i`` and
``o_i(x)`` 1 if row ``x`` satisfies every test of the path on ``f_i`` (it lies in the leaf's
interval ``lo_i < x <= hi_i``), else 0. Path-dependent TreeSHAP is the Shapley value of the game
``val(S) = v * prod_{i in S} o_i * prod_{i not in S} z_i``:

    phi_j = v * (o_j - z_j) * sum_s w(s, k) * [t^s] prod_{i != j} (z_i + o_i t),
    w(s, k) = s! (k - 1 - s)! / k!,            base = sum over leaves of v * prod_i z_i.

``prod_i (z_i + o_i t)`` is built once per (row, leaf) and the factor of ``j`` divided out (exact
synthetic division when ``o_j = 1``, a scalar when ``o_j = 0``): O(k^2) per row and leaf, as the
original algorithm. Leaves with the same ``k`` across every tree are stacked, so the numpy calls
are O(k^2) per block of leaves and rows, not per leaf.

Trees arrive as scikit-learn's arrays (left, right, feature, threshold, value, cover); a row goes
left when ``x <= threshold``. Inputs are the float32 matrix the trees were fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import numpy as np

BLOCK_CELLS = 1 << 21  # float64 cells per (rows x leaves x degree) block: 16 MB


@dataclass
class Tree:
    """One tree: node arrays of scikit-learn's ``tree_`` layout; ``value`` of shape (nodes, outputs)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    cover: np.ndarray


@dataclass
class LeafGroup:
    """Every leaf whose path tests ``k`` distinct features: shapes (L, k) and (L, outputs)."""

    feature: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    z: np.ndarray
    value: np.ndarray


class Forest:
    """An average (or sum) of trees, ready to explain: leaves grouped by path length."""

    def __init__(self, trees: list[Tree], scale: float, n_columns: int):
        self.n_columns = n_columns
        self.n_outputs = trees[0].value.shape[1]
        by_k: dict[int, list] = {}
        base = np.zeros(self.n_outputs)
        for tree in trees:
            for feats, lo, hi, z, v in _leaves(tree):
                v = v * scale
                base += v * np.prod(z)
                by_k.setdefault(len(feats), []).append((feats, lo, hi, z, v))
        self.base = base
        self.groups = {k: LeafGroup(*(np.array([leaf[i] for leaf in leaves], dtype=np.int64 if i == 0 else np.float64)
                                      .reshape(len(leaves), -1 if i < 4 else self.n_outputs) for i in range(5)))
                       for k, leaves in sorted(by_k.items())}

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        """Contributions of shape (n, n_columns, outputs) for the rows ``X`` (n, n_columns)."""
        X = np.asarray(X, dtype=np.float32).astype(np.float64)
        n = len(X)
        out = np.zeros((n, self.n_columns, self.n_outputs))
        for k, g in self.groups.items():
            if k == 0:
                continue  # a tree that is one leaf moves only the base
            weights = np.array([factorial(s) * factorial(k - 1 - s) / factorial(k) for s in range(k)])
            rows = max(1, min(n, BLOCK_CELLS // ((k + 1) * 64)))
            leaves = max(1, BLOCK_CELLS // (rows * (k + 1)))
            for r0 in range(0, n, rows):
                for l0 in range(0, len(g.feature), leaves):
                    sl = slice(l0, l0 + leaves)
                    _block(X[r0:r0 + rows], g.feature[sl], g.lo[sl], g.hi[sl], g.z[sl], g.value[sl], weights,
                           out[r0:r0 + rows])
        return out


def _block(X, feature, lo, hi, z, value, weights, out):
    """Add the contributions of a block of leaves (same k) for a block of rows into ``out``.

    Arrays are laid out (k or degree, rows, leaves): each step reads contiguous planes."""
    k = feature.shape[1]
    xv = X[:, feature.T].transpose(1, 0, 2)  # (k, n, L)
    o = ((xv > lo.T[:, None, :]) & (xv <= hi.T[:, None, :])).astype(np.float64)
    zt = z.T[:, None, :]  # (k, 1, L)
    q = np.zeros((k + 1,) + o.shape[1:])
    q[0] = 1.0
    for i in range(k):  # q <- q * (z_i + o_i t)
        shifted = q[:i + 1] * o[i]
        q[:i + 1] *= zt[i]
        q[1:i + 2] += shifted
    zero_sum = np.tensordot(weights, q[:k], axes=1)  # o_j = 0: q / z_j
    for j in range(k):
        zj = zt[j]
        r = q[k].copy()  # o_j = 1: q = (z_j + t) r, r read from the top degree down
        one_sum = r * weights[k - 1]
        for s in range(k - 1, 0, -1):
            r = q[s] - zj * r
            one_sum += r * weights[s - 1]
        oj = o[j]
        m = (oj - zj) * np.where(oj > 0, one_sum, zero_sum / zj)  # (n, L)
        for c in np.unique(feature[:, j]):
            sel = feature[:, j] == c
            out[:, c, :] += m[:, sel] @ value[sel]


def _leaves(tree: Tree):
    """(features, lo, hi, z, value) of every leaf: the distinct features its path tests, the interval
    the path allows for each, and the product of cover ratios of the path's edges on each."""
    stack = [(0, {})]
    while stack:
        node, path = stack.pop()
        left, right = int(tree.left[node]), int(tree.right[node])
        if left < 0:
            feats = sorted(path)
            yield (feats, [path[f][0] for f in feats], [path[f][1] for f in feats], [path[f][2] for f in feats],
                   tree.value[node])
            continue
        f, t, cover = int(tree.feature[node]), float(tree.threshold[node]), float(tree.cover[node])
        lo, hi, z = path.get(f, (-np.inf, np.inf, 1.0))
        stack.append((left, {**path, f: (lo, min(hi, t), z * float(tree.cover[left]) / cover)}))
        stack.append((right, {**path, f: (max(lo, t), hi, z * float(tree.cover[right]) / cover)}))
