"""PostgreSQL arrays in their in-memory form, built from numpy and read back into numpy (pure: no database).

Batch scoring hands whole chunks to SPI as Datums (``sqlml.server.pg_internals.DatumSpi``): a
pass-by-reference Datum is a pointer to a varlena, and an array's varlena is a short header and
its elements, so a numpy buffer laid out that way is a parameter PostgreSQL takes as it is
(copied once, as the plan's constant). No value goes through a Python object or a text form
(PL/Python converts a list parameter one element at a time through its text: ~0.2 us an int,
~0.5 us a float).

The layout (``utils/array.h``: 15), little-endian, no NULLs::

    int32 vl_len_     total size << 2 (a 4-byte varlena header, uncompressed)
    int32 ndim
    int32 dataoffset  0: no NULL bitmap
    Oid   elemtype
    int32 dims[ndim], lbound[ndim]
    (padding to 8 bytes: MAXALIGN)
    elements          fixed width: packed at their own alignment; text: a 4-byte varlena
                      header then the bytes, each element starting at a multiple of 4
"""

from __future__ import annotations

import numpy as np

# element type OIDs and their numpy types (catalog/pg_type_d.h: fixed since the types were created)
INT4OID, INT8OID, FLOAT8OID, TEXTOID = 23, 20, 701, 25
ARRAY_OF = {INT4OID: 1007, INT8OID: 1016, FLOAT8OID: 1022, TEXTOID: 1009}
_DTYPES = {INT4OID: np.dtype("<i4"), INT8OID: np.dtype("<i8"), FLOAT8OID: np.dtype("<f8")}
_HEAD = 16  # vl_len_, ndim, dataoffset, elemtype


def _maxalign(n: int) -> int:
    return (n + 7) & ~7


def _buffer(size: int) -> np.ndarray:
    """A zeroed buffer of ``size`` bytes at an 8-byte-aligned address (numpy's allocations are)."""
    if size >= 1 << 30:
        raise ValueError("an array of 1 GB or more: PostgreSQL's largest varlena is under 1 GB")
    return np.zeros((size + 7) // 8, dtype=np.int64).view(np.uint8)[:size]


def _header(out: np.ndarray, size: int, elemtype: int, shape: tuple) -> int:
    """Write the header into ``out``; the offset of the elements."""
    ndim = len(shape)
    head = np.array([size << 2, ndim, 0, elemtype, *shape, *([1] * ndim)], dtype="<u4")  # all non-negative
    out[:head.nbytes] = head.view(np.uint8)
    return _maxalign(_HEAD + 8 * ndim)


def _empty(elemtype: int) -> np.ndarray:
    """An empty array as PostgreSQL makes one: no dimensions at all."""
    out = _buffer(_HEAD)
    _header(out, _HEAD, elemtype, ())
    return out


def build(values: np.ndarray, elemtype: int) -> np.ndarray:
    """The array ``values`` (1-D or 2-D, no NaN-as-NULL: every element is a value) as a varlena of
    ``elemtype`` (INT4OID, INT8OID or FLOAT8OID): uint8, at an 8-byte-aligned address."""
    data = np.ascontiguousarray(values, dtype=_DTYPES[elemtype])
    if data.ndim not in (1, 2):
        raise ValueError(f"an array of {data.ndim} dimensions: 1 or 2 only")
    if not data.size:
        return _empty(elemtype)
    start = _maxalign(_HEAD + 8 * data.ndim)
    size = start + data.nbytes
    out = _buffer(size)
    _header(out, size, elemtype, data.shape)
    out[start:] = data.reshape(-1).view(np.uint8)
    return out


def build_text(strings: list[str]) -> np.ndarray:
    """A 1-D text[] of ``strings`` (none NULL) as a varlena: uint8, at an 8-byte-aligned address."""
    if not strings:
        return _empty(TEXTOID)
    encoded = [s.encode() for s in strings]
    if any(b"\0" in e for e in encoded):
        raise ValueError("a text holding NUL: PostgreSQL's text cannot")
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    spans = (4 + lengths + 3) & ~3  # each element: its header and bytes, the next one at a multiple of 4
    starts = np.zeros(len(encoded), dtype=np.int64)
    np.cumsum(spans[:-1], out=starts[1:])
    start = _maxalign(_HEAD + 8)
    size = start + int(spans.sum())
    out = _buffer(size)
    _header(out, size, TEXTOID, (len(encoded),))
    body = out[start:]
    heads = ((4 + lengths) << 2).astype("<u4")
    body[(starts[:, None] + np.arange(4)).reshape(-1)] = heads.view(np.uint8)
    text = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    if len(text):  # each byte at its element's start + 4 + its place in the element
        first = np.repeat(starts + 4 - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        body[first + np.arange(len(text))] = text
    return out
