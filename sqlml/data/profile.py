"""Data-quality profile of ingested columns: type, NULL share, distinct count, range, warnings.

Pure: takes the columnar raw arrays that ingest produces (layouts in ``sqlml.data.convert``) and
returns plain JSON-able dicts. ``sqlml.profile(relation)`` shows the report; ``sqlml.train`` runs
it before the search, raises a NOTICE per warning, refuses on a *blocking* one (a feature that is
a copy of the target) and stores the report with the model.

Warnings (``code``: when):
  empty           every value is NULL
  mostly_null     at least half the values are NULL
  constant        one distinct value
  infinite        +/-Infinity present (training refuses those rows)
  id_like         (almost) one distinct value per row: an identifier, not a feature
  high_cardinality  text with many distinct values (> 50 and > 20% of the rows)
  personal_data   values (or the column name) look like e-mail addresses or phone numbers
  leakage         the column predicts the target almost perfectly on its own
  target_copy     the column is the target under another name (blocking)
  imbalance       a class of the target has under 5% of the rows
  unsupported     training cannot use the column's type
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from sqlml.data.schema import BOOLEAN, CATEGORY, DATE, NUMERIC, TIMESTAMP, VECTOR
from sqlml.data.task import task_of

ID_LIKE_MIN_ROWS = 50
ID_LIKE_SHARE = 0.9  # distinct / non-NULL rows above which a column identifies rows
HIGH_CARDINALITY = (50, 0.2)  # text: more than this many distinct values and this share of rows
ID_LIKE_DENSE_SPAN = 1.5  # integer keys: max - min + 1 within this multiple of the distinct count
KEY_NAMES = re.compile(r"(^|_)(id|key|uuid|pk)$", re.I)
MOSTLY_NULL = 0.5
IMBALANCE = 0.05  # minority class share
LEAKAGE_PURITY = 0.99  # share of rows a column's values alone classify correctly
LEAKAGE_CORRELATION = 0.99  # |Pearson r| with a numeric target
COPY_CORRELATION = 1 - 1e-9
LEAKAGE_BINS = 20
LEAKAGE_SAMPLE = 50_000  # labelled rows the leakage checks look at (seeded sample beyond that)
EXACT_GROUPS = 200  # at most this many distinct values: also checked for being a copy of the target
PERSONAL_SAMPLE = 500
PERSONAL_SHARE = 0.5
EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$")
PHONE = re.compile(r"^\+?[\d\s().\-/]{7,24}$")
PERSONAL_NAMES = re.compile(r"(^|_)(e_?mail|phone|mobile|ssn|passport|iban|social_security)(_|$)", re.I)


@dataclass(frozen=True)
class Column:
    """One ingested column: ``raw`` in the layout of its ``kind`` (None: unsupported, read as text)."""

    name: str
    pg_type: str
    kind: str | None
    raw: np.ndarray


def warning(code: str, message: str, blocking: bool = False) -> dict:
    return {"code": code, "message": message, "blocking": blocking}


def profile(n: int, columns: list[Column], target: str | None = None, task: str | None = None) -> dict:
    """The report: ``{"rows", "target", "task", "columns": [per column], "warnings": count,
    "blocking": [messages]}``; ``task`` (binary, multiclass, regression) enables the target checks."""
    by_name = {c.name: c for c in columns}
    tgt = by_name.get(target) if target else None
    labels = _labels(tgt, task) if tgt is not None and task else None
    sample = _target_sample(labels, task) if labels is not None else None
    out = []
    for c in columns:
        entry = describe(n, c)
        if c is tgt:
            entry["target"] = True
            if task and task_of(task).classification:
                entry["warnings"] += imbalance(c, labels)
        elif sample is not None:
            entry["warnings"] += leakage(c, tgt, sample, task, entry)
        out.append(entry)
    warnings = [w for e in out for w in e["warnings"]]
    return {"rows": int(n), "target": target, "task": task, "columns": out, "warnings": len(warnings),
            "blocking": [w["message"] for w in warnings if w["blocking"]]}


# --- one column ---------------------------------------------------------------------------------

def describe(n: int, c: Column) -> dict:
    """Statistics and single-column warnings of ``c``."""
    entry = {"name": c.name, "type": c.pg_type, "kind": c.kind or "unsupported", "nulls": 0, "null_share": 0.0,
             "distinct": 0, "min": None, "max": None, "mean": None, "top": None, "warnings": []}
    warns = entry["warnings"]
    if c.kind in (CATEGORY, None):
        present = [v for v in c.raw if v is not None]
        counts = _value_counts(present)
        entry.update(nulls=n - len(present), distinct=len(counts))
        if counts:
            value, count = max(counts.items(), key=lambda kv: kv[1])
            entry["top"] = {"value": value, "share": count / len(present)}
            entry["min"], entry["max"] = min(counts), max(counts)
        if c.kind is None:
            warns.append(warning("unsupported",
                                 f'type {c.pg_type} is not used by training (cast it in a view to use it)'))
        else:
            warns += _text_warnings(c, present, len(counts))
    else:
        values = c.raw if c.kind != VECTOR else _vector_rows(c.raw)
        missing = np.isnan(values) if values.ndim == 1 else np.isnan(values).all(axis=1)
        present = values[~missing]
        entry["nulls"] = int(missing.sum())
        if len(present):
            finite = present[np.isfinite(present)] if present.ndim == 1 else present[np.isfinite(present).all(axis=1)]
            entry["distinct"] = int(len(np.unique(present, axis=0)))
            if len(finite):
                entry["min"], entry["max"] = _shown(c.kind, float(finite.min())), _shown(c.kind, float(finite.max()))
                if c.kind in (NUMERIC, BOOLEAN):
                    entry["mean"] = float(finite.mean())
            if len(finite) < len(present):
                warns.append(warning("infinite", f"{len(present) - len(finite)} values are Infinity"))
            if c.kind == NUMERIC and _id_like_numbers(c.name, present, n):
                warns.append(warning("id_like", f"{entry['distinct']} distinct integers in {n} rows: an identifier, "
                                                "not a feature (exclude it)"))
    entry["null_share"] = entry["nulls"] / n if n else 0.0
    if n and entry["nulls"] == n:
        warns.insert(0, warning("empty", "every value is NULL"))
    elif n and entry["null_share"] >= MOSTLY_NULL:
        warns.insert(0, warning("mostly_null", f"{entry['null_share']:.0%} of the values are NULL"))
    if entry["distinct"] == 1 and n > 1:
        warns.insert(0, warning("constant", f"a single value ({entry['min']}) in every non-NULL row"))
    return entry


def _text_warnings(c: Column, present: list, distinct: int) -> list[dict]:
    warns = []
    if c.pg_type == "uuid" or (len(present) >= ID_LIKE_MIN_ROWS and distinct > ID_LIKE_SHARE * len(present)):
        warns.append(warning("id_like", f"{distinct} distinct values in {len(present)} rows: an identifier, not a "
                                        "feature (training drops it)"))
    elif distinct > HIGH_CARDINALITY[0] and distinct > HIGH_CARDINALITY[1] * len(present):
        warns.append(warning("high_cardinality", f"{distinct} distinct values in {len(present)} rows: rare categories "
                                                 "carry little signal (group them, or exclude the column)"))
    personal = personal_data(c.name, present)
    if personal:
        warns.append(warning("personal_data", f"likely personal data ({personal}): check that it may be used, and "
                                              "exclude it from training"))
    return warns


def personal_data(name: str, present: list) -> str | None:
    """What kind of personal data a text column seems to hold, or None."""
    sample = [str(v).strip() for v in present[:PERSONAL_SAMPLE]]
    if sample:
        if sum(bool(EMAIL.match(v)) for v in sample) >= PERSONAL_SHARE * len(sample):
            return "e-mail addresses"
        if sum(_is_phone(v) for v in sample) >= PERSONAL_SHARE * len(sample):
            return "phone numbers"
    if PERSONAL_NAMES.search(name):
        return f'the column name "{name}"'
    return None


def _is_phone(value: str) -> bool:
    if not PHONE.match(value):
        return False
    digits = sum(ch.isdigit() for ch in value)
    return 7 <= digits <= 15


def _id_like_numbers(name: str, present: np.ndarray, n: int) -> bool:
    """Integers, (almost) all different, over enough rows, and either dense (a sequence: row
    numbers, serial keys) or named like a key. Integer measurements (amounts) are sparse."""
    if len(present) < ID_LIKE_MIN_ROWS or not np.all(np.isfinite(present)):
        return False
    if not np.all(present == np.round(present)):
        return False
    distinct = len(np.unique(present))
    if distinct <= ID_LIKE_SHARE * n:
        return False
    dense = present.max() - present.min() + 1 <= ID_LIKE_DENSE_SPAN * distinct
    return bool(dense or KEY_NAMES.search(name))


def _value_counts(values: list) -> dict:
    from collections import Counter

    return dict(Counter(values))


def _vector_rows(raw: np.ndarray) -> np.ndarray:
    return raw.reshape(len(raw), -1)


def _shown(kind: str, value: float):
    """Min/max as a person reads them: dates and timestamps in ISO form."""
    if kind == DATE:
        return str(np.datetime64(int(np.floor(value / 86400.0)), "D"))
    if kind == TIMESTAMP:
        return str(np.datetime64(int(value), "s")) + "Z"
    if kind == BOOLEAN:
        return bool(value)
    return value


# --- target checks --------------------------------------------------------------------------------

def _labels(tgt: Column, task: str) -> np.ndarray:
    """Target as float64 (regression) or as text labels with None for NULL (classification)."""
    if not task_of(task).classification:
        return np.asarray(tgt.raw, dtype=np.float64)
    if tgt.kind == CATEGORY:
        return np.asarray(tgt.raw, dtype=object)
    raw = np.asarray(tgt.raw, dtype=np.float64)
    return np.array([None if np.isnan(v) else repr(float(v)) for v in raw], dtype=object)


def imbalance(tgt: Column, labels: np.ndarray) -> list[dict]:
    counts = _value_counts([v for v in labels if v is not None])
    total = sum(counts.values())
    if len(counts) < 2 or not total:
        return []
    label, count = min(counts.items(), key=lambda kv: kv[1])
    if count / total >= IMBALANCE:
        return []
    shown = _label_text(tgt, label)
    return [warning("imbalance", f"class imbalance: {shown} is {count / total:.1%} of the labelled rows ({count} of "
                                 f"{total}); prefer roc_auc, f1 or log_loss to accuracy")]


def _label_text(tgt: Column, label) -> str:
    if tgt.kind == CATEGORY:
        return repr(label)
    value = float(label)
    return repr(int(value)) if value.is_integer() else repr(value)


def _target_sample(labels: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(row positions, target there) for the leakage checks: labelled rows, at most ``LEAKAGE_SAMPLE``
    of them (seeded), with class labels as codes 0..k-1; None with fewer than 10 labelled rows."""
    keep = np.isfinite(labels) if not task_of(task).classification else np.not_equal(labels, None)
    rows = np.flatnonzero(keep)
    if len(rows) < 10:
        return None
    if len(rows) > LEAKAGE_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(rows, size=LEAKAGE_SAMPLE, replace=False))
    return rows, (labels[rows] if not task_of(task).classification else _codes(labels[rows]))


def _codes(values: np.ndarray) -> np.ndarray:
    """Each value's index in order of first appearance (None is a value too)."""
    index: dict = {}
    return np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))


def leakage(c: Column, tgt: Column, sample: tuple, task: str, entry: dict) -> list[dict]:
    """``target_copy`` or ``leakage`` when column ``c`` alone predicts the target (almost) perfectly,
    judged on the labelled rows of ``sample`` (see ``_target_sample``)."""
    if c.kind is None or c.kind == VECTOR or entry["distinct"] < 2:
        return []
    rows, y = sample
    if not task_of(task).classification:
        return _leakage_regression(c, tgt, rows, y)
    if entry["distinct"] <= EXACT_GROUPS:
        exact = _groups(c, rows, bins=False)
        if exact.max() == y.max() and _purity(exact, y) == 1.0 and _purity(y, exact) == 1.0:
            return [warning("target_copy", f'column "{c.name}" is a copy of the target "{tgt.name}" (one value per '
                                           f"class): exclude it (exclude => '{{{c.name}}}')", blocking=True)]
    if c.kind == CATEGORY and entry["distinct"] > 0.5 * len(rows):
        return []  # (nearly) one row per value: trivially "pure", an identifier rather than a leak
    groups = _groups(c, rows, bins=True)
    majority = np.bincount(y).max() / len(y)
    purity = _purity(groups, y)
    if majority < LEAKAGE_PURITY and purity >= LEAKAGE_PURITY:
        return [warning("leakage", f'possible target leakage: "{c.name}" alone classifies {purity:.1%} of the rows '
                                   f'correctly (is it known before "{tgt.name}"?)')]
    return []


def _leakage_regression(c: Column, tgt: Column, rows: np.ndarray, y: np.ndarray) -> list[dict]:
    if c.kind == CATEGORY:
        groups = _groups(c, rows, bins=False)
        if groups.max() + 1 > 0.5 * len(rows):
            return []
        total = ((y - y.mean()) ** 2).sum()
        if total == 0:
            return []
        sums, counts = np.bincount(groups, y), np.bincount(groups)
        means = sums[groups] / counts[groups]
        explained = 1 - ((y - means) ** 2).sum() / total
        if explained >= LEAKAGE_CORRELATION:
            return [warning("leakage", f'possible target leakage: "{c.name}" alone explains {explained:.1%} of the '
                                       f'variance of "{tgt.name}"')]
        return []
    x = np.asarray(c.raw, dtype=np.float64)[rows]
    keep = np.isfinite(x)
    if keep.sum() < 10 or np.std(x[keep]) == 0 or np.std(y[keep]) == 0:
        return []
    r = float(np.corrcoef(x[keep], y[keep])[0, 1])
    if abs(r) >= COPY_CORRELATION:
        return [warning("target_copy", f'column "{c.name}" is a linear function of the target "{tgt.name}" '
                                       f"(correlation {r:.6f}): exclude it (exclude => '{{{c.name}}}')", blocking=True)]
    if abs(r) >= LEAKAGE_CORRELATION:
        return [warning("leakage", f'possible target leakage: "{c.name}" has correlation {r:.4f} with "{tgt.name}" '
                                   f'(is it known before "{tgt.name}"?)')]
    return []


def _groups(c: Column, rows: np.ndarray, bins: bool) -> np.ndarray:
    """Group index (0..g-1) of each of ``rows``: the value itself (NULL is a value), or, for
    numbers with ``bins``, its quantile bin (NULL a bin of its own)."""
    if c.kind == CATEGORY:
        return _codes(c.raw[rows])
    x = np.asarray(c.raw, dtype=np.float64)[rows]
    missing = np.isnan(x)
    if bins:
        present = x[~missing]
        edges = np.unique(np.quantile(present, np.linspace(0, 1, LEAKAGE_BINS + 1)[1:-1])) if len(present) else []
        idx = np.searchsorted(edges, x, side="right")
    else:
        idx = np.unique(np.where(missing, 0.0, x), return_inverse=True)[1]
    idx = np.where(missing, idx.max() + 1, idx).astype(np.int64)
    return np.unique(idx, return_inverse=True)[1]


def _purity(groups: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose class is the majority class of their group."""
    table = np.zeros((groups.max() + 1, y.max() + 1), dtype=np.int64)
    np.add.at(table, (groups, y), 1)
    return float(table.max(axis=1).sum() / len(y))
