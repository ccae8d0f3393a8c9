"""An explanation as the rows ``sqlml.explain`` returns: (feature, value, contribution, class).

Per input row: a ``(base)`` row (value NULL, contribution the expected raw output), then one row
per feature in training order with the feature's value as text. Multiclass models repeat this per
class and fill ``class``; other tasks leave it NULL.
"""

from __future__ import annotations

import math

import numpy as np

from sqlml.data.schema import DATE, TIMESTAMP, VECTOR, FeatureSchema

BASE = "(base)"


def value_text(kind: str, value) -> str | None:
    """A raw column value (``sqlml.data.convert`` layouts) as text; None for NULL."""
    if value is None:
        return None
    if kind == VECTOR:
        v = np.asarray(value, dtype=np.float64)
        return None if np.isnan(v).all() else "[" + ",".join(repr(float(x)) for x in v) + "]"
    if isinstance(value, str):
        return value
    f = float(value)
    if math.isnan(f):
        return None
    if kind in (DATE, TIMESTAMP):
        t = np.datetime64(int(round(f)), "s")
        return str(t.astype("datetime64[D]")) if kind == DATE else str(t).replace("T", " ")
    return repr(int(f)) if f.is_integer() and abs(f) < 2**53 else repr(f)


def explanation_rows(schema: FeatureSchema, classes: list | None, explanation, columns: dict, ids=None):
    """Yield the output rows of ``explanation`` for the raw ``columns`` it explains; with ``ids``
    (one per row), each tuple starts with the row's id."""
    contributions, base = explanation.contributions.tolist(), explanation.base.tolist()
    outputs = list(enumerate(classes if classes is not None else [None]))
    names = [f.name for f in schema.features]
    texts = [[value_text(f.kind, v) for v in columns[f.name]] for f in schema.features]
    for i, row in enumerate(contributions):
        values = [t[i] for t in texts]
        head = () if ids is None else (ids[i],)
        for k, label in outputs:
            yield (*head, BASE, None, base[k], label)
            for name, value, c in zip(names, values, row):
                yield (*head, name, value, c[k], label)
