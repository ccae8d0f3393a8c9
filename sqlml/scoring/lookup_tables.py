"""A category column's lookup (``Column.lut``: text -> float) as a hash table native code probes (pure).

Batch scoring reads a table's rows with compiled code (``sqlml.server.pg_internals.RowCursor``),
which maps each text to its column's value itself: Python's dictionary lookup, one call per value,
was most of a chunk's decoding (5 categories x 100k rows: ~35 ms, holding the GIL).

Layout: open addressing, linear probing, a power-of-two number of slots, at least twice the keys
(so a probe always meets an empty slot). Each slot is four int64s::

    hash     FNV-1a 64 of the key's UTF-8 bytes (as int64)
    offset   where the key's bytes start in ``keys``
    length   the key's length in bytes; -1: an empty slot
    value    the float32 the key maps to, its bits (as int64)

A text's slot is found from ``hash & (slots - 1)`` on; it matches on equal hash, length and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FNV_OFFSET, FNV_PRIME, MASK64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fnv1a(data: bytes) -> int:
    """FNV-1a, 64 bits (unsigned)."""
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def _bits(value: float) -> int:
    return int(np.array([value], dtype=np.float32).view(np.int32)[0])


@dataclass(frozen=True)
class LookupTable:
    """``slots``: (size, 4) int64 as above; ``keys``: the keys' bytes, uint8; ``default``, ``null``:
    the float32 bits of what an unknown text and a NULL map to."""

    slots: np.ndarray
    keys: np.ndarray
    default: int
    null: int

    @property
    def mask(self) -> int:
        return len(self.slots) - 1


def build(lut: dict, default: float, null: float) -> LookupTable:
    """The table of ``lut`` (str -> float); unknown texts map to ``default``, NULL to ``null``."""
    encoded = [(k.encode(), v) for k, v in lut.items()]
    size = 8
    while size < 2 * len(encoded):
        size *= 2
    slots = np.zeros((size, 4), dtype=np.int64)
    slots[:, 2] = -1
    blob, at = [], 0
    for key, value in encoded:
        h = fnv1a(key)
        i = h & (size - 1)
        while slots[i, 2] >= 0:
            i = (i + 1) & (size - 1)
        slots[i] = [h - (1 << 64) if h >= 1 << 63 else h, at, len(key), _bits(value)]
        blob.append(key)
        at += len(key)
    keys = np.frombuffer(b"".join(blob) + b"\0", dtype=np.uint8).copy()  # never empty: a valid address
    return LookupTable(slots, keys, _bits(default), _bits(null))


def find(table: LookupTable, text: str | None) -> float:
    """What the compiled code answers for ``text`` (None: NULL), for tests."""
    bits = table.null if text is None else table.default
    if text is not None:
        data = text.encode()
        h = fnv1a(data)
        i = h & table.mask
        while table.slots[i, 2] >= 0:
            s = table.slots[i]
            if int(s[0]) & MASK64 == h and s[2] == len(data) and bytes(table.keys[s[1]:s[1] + s[2]]) == data:
                bits = int(s[3])
                break
            i = (i + 1) & table.mask
    return float(np.array([bits], dtype=np.int32).view(np.float32)[0])
