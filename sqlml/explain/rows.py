"""An explanation as the rows ``sqlml.explain`` returns: (feature, value, contribution, class).

Per input row: a ``(base)`` row (value NULL, contribution the expected raw output), then one row
per feature in training order with the feature's value as text. Multiclass models repeat this per
class and fill ``class``; other tasks leave it NULL.

``sqlml.explain_batch`` sends the same rows folded, one per input row (``batch_rows``), which its
SQL wrapper unfolds with ``unnest``: PL/Python converts every value it returns through its text,
so 21 rows of five values cost several times one row of three arrays, and a float's shortest text
five times an int's: contributions travel as ``pack_float64`` int8s where they can.
"""

from __future__ import annotations

import numpy as np

from sqlml.data.schema import CATEGORY, DATE, TIMESTAMP, VECTOR, FeatureSchema

BASE = "(base)"
EXACT_INTEGERS = 2.0**53  # below this, an integral float prints as an integer


def value_texts(kind: str, values) -> list:
    """Raw column values (``sqlml.data.convert`` layouts) as text, None for NULL."""
    if kind == CATEGORY:
        return list(values)
    v = np.asarray(values, dtype=np.float64)
    if kind == VECTOR:
        return [None if np.isnan(row).all() else "[" + ",".join(repr(float(x)) for x in row) + "]" for row in v]
    missing = np.isnan(v)
    if kind in (DATE, TIMESTAMP):
        t = np.round(np.where(missing, 0.0, v)).astype(np.int64).astype("datetime64[s]")
        texts = np.datetime_as_string(t, unit="D" if kind == DATE else "s").tolist()
        texts = texts if kind == DATE else [s.replace("T", " ") for s in texts]
    else:
        whole = ~missing & (np.floor(v) == v) & (np.abs(v) < EXACT_INTEGERS)
        texts = list(map(repr, v.tolist()))
        for i, n in zip(np.flatnonzero(whole).tolist(), v[whole].astype(np.int64).tolist()):
            texts[i] = repr(n)
    for i in np.flatnonzero(missing).tolist():
        texts[i] = None
    return texts


def explanation_rows(schema: FeatureSchema, classes: list | None, explanation, columns: dict):
    """Yield the output rows of ``explanation`` for the raw ``columns`` it explains."""
    contributions, base = explanation.contributions.tolist(), explanation.base.tolist()
    outputs = list(enumerate(classes if classes is not None else [None]))
    names = [f.name for f in schema.features]
    texts = [value_texts(f.kind, columns[f.name]) for f in schema.features]
    for i, row in enumerate(contributions):
        values = [t[i] for t in texts]
        for k, label in outputs:
            yield BASE, None, base[k], label
            for name, value, c in zip(names, values, row):
                yield name, value, c[k], label


def header(schema: FeatureSchema, classes: list | None) -> tuple:
    """The first row of ``sqlml._explain_batch``: the names and classes of every folded row's
    contributions, in their order (class after class: ``(base)`` then the features)."""
    names = [BASE] + [f.name for f in schema.features]
    per_class = classes if classes is not None else [None]
    return None, None, None, None, names * len(per_class), [c for c in per_class for _ in names]


def batch_rows(schema: FeatureSchema, explanation, columns: dict, ids) -> list[tuple]:
    """One folded row per input row: (id, values, packed, contributions, None, None), with the
    values as text and the contributions as ``pack_float64`` int8s (packed) or, where they cannot
    travel so, as floats; the ``header`` gives their names and classes."""
    n = len(ids)
    c = explanation.contributions  # (n, features, outputs)
    folded = np.empty((n, c.shape[2], c.shape[1] + 1))
    folded[:, :, 0] = explanation.base
    folded[:, :, 1:] = c.transpose(0, 2, 1)
    folded = folded.reshape(n, -1)
    packed = pack_float64(folded)
    numbers = (packed if packed is not None else folded).tolist()
    values = [list(row) for row in zip(*(value_texts(f.kind, columns[f.name]) for f in schema.features))]
    if packed is not None:
        return [(i, v, p, None, None, None) for i, v, p in zip(ids, values, numbers)]
    return [(i, v, None, x, None, None) for i, v, x in zip(ids, values, numbers)]


def pack_float64(values: np.ndarray) -> np.ndarray | None:
    """Float64 values as int8s m * 1024 + (e + 512), m the 53-bit integer and e the exponent with
    value = m * 2**e, which SQL turns back into the same float8 exactly:
    ``((p >> 10)::float8 * power(2::float8, ((p & 1023) - 512)::float8))``. None when a value
    cannot travel so (not finite, or not 0 and outside 2**-460 .. 2**564 in magnitude)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        return None
    mantissa, exponent = np.frexp(values)
    field = np.where(values == 0, 512, exponent.astype(np.int64) - 53 + 512)
    if field.size and (field.min() < 0 or field.max() > 1023):
        return None
    return np.ldexp(mantissa, 53).astype(np.int64) * 1024 + field
