"""What a candidate will cost to score, per row, once compiled (``sqlml.onnx.compiled``): an estimate
from its size, so that the search can weigh it without building the model.

Compiled, a tree costs one compare-and-branch per level on the row's path, and the call costs
about the same whatever the model. So a row costs ``CALL_US + LEVEL_US * trees * depth``, with
the depth of a tree of L leaves taken as log2(L) + 1 (LightGBM's num_leaves; for forests, the
leaves their rows and min_samples_leaf allow, as ``Search.export_estimate`` counts them). Linear
models cost the call. The constants are this machine's order of magnitude (a 100-tree, 31-leaf
LightGBM scores a row in ~1 us compiled); the estimate ranks candidates and keeps a budget, it
does not promise a time.

``NOISE``: two candidates whose validation losses differ by less than this share of the loss are
taken as equal, and the one cheaper to score wins (1,000 shallow trees or 200 deeper ones is then
a choice made on purpose).
"""

from __future__ import annotations

import math

CALL_US = 0.5
LEVEL_US = 0.002
NOISE = 0.002


def tree_us(trees: float, leaves: float) -> float:
    return CALL_US + LEVEL_US * trees * (math.log2(max(leaves, 1.0)) + 1.0)


def equal_within_noise(loss: float, best_loss: float) -> bool:
    return loss <= best_loss + NOISE * max(abs(best_loss), 1e-12)


def cheapest_within_noise(trials: list, best, cost):
    """Among ``trials`` whose loss is within noise of ``best``'s, the one cheapest to score (``best`` on ties)."""
    if best is None:
        return None
    equal = [t for t in trials if t is best or equal_within_noise(t.loss, best.loss)]
    return min(equal, key=lambda t: (cost(t), t is not best, t.loss))
