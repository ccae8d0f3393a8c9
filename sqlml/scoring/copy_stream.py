"""Scored rows as PostgreSQL's binary COPY stream, built in numpy (pure: no database).

``sqlml.score`` writes a chunk of scored rows into the table it created through COPY FROM
(``sqlml.server.pg_internals.copy_in``): PostgreSQL then forms the tuples and inserts them a page
at a time, where an INSERT from arrays runs the executor on every row (100k rows of a classifier:
~35 ms against ~90 ms). The stream is built on the scoring thread, one chunk at a time.

The format (PostgreSQL's documentation, "COPY: Binary Format"; every integer big-endian)::

    signature   "PGCOPY\\n\\377\\r\\n\\0", int32 flags 0, int32 header extension length 0
    per row     int16 field count, then per field int32 length (-1: NULL) and that many bytes,
                each in its type's binary form (its ``send`` function's output)
    trailer     int16 -1

The fields of score's rows, in the table's column order:

    id             int2, int4 or int8 (2, 4 or 8 bytes)
    prediction     float8
    label          text: its UTF-8 bytes
    probabilities  float8[] (array_send): int32 ndim 1, int32 has-nulls 0, Oid 701, int32 k,
                   int32 lower bound 1, then per element int32 8 and the float8; NULL for a regressor
"""

from __future__ import annotations

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER = b"\xff\xff"
FLOAT8OID = 701
FIELDS = 4  # id, prediction, label, probabilities


def _big_endian(values: np.ndarray, dtype: str) -> np.ndarray:
    """(n, width) uint8: each value in ``dtype``'s big-endian bytes."""
    return np.ascontiguousarray(values, dtype=dtype).view(np.uint8).reshape(len(values), np.dtype(dtype).itemsize)


def _words(*values: int) -> np.ndarray:
    """int32 words, big-endian, as bytes."""
    return np.array(values, dtype=">i4").view(np.uint8)


def scored_rows(ids: np.ndarray, id_width: int, predictions: np.ndarray, labels: list[str],
                label_of_row: np.ndarray, probabilities: np.ndarray | None) -> np.ndarray:
    """The binary COPY stream of n scored rows, uint8.

    ids: (n,) integers, written ``id_width`` (2, 4 or 8) bytes wide; predictions: (n,) float;
    labels: the distinct label texts, ``label_of_row`` (n,) the index of each row's;
    probabilities: (n, k) float, or None (a NULL column: a regressor)."""
    n = len(ids)
    if id_width not in (2, 4, 8):
        raise ValueError(f"an id {id_width} bytes wide: 2, 4 or 8")
    encoded = [s.encode() for s in labels]
    label_lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    label_starts = np.cumsum(label_lengths) - label_lengths
    label_of_row = np.asarray(label_of_row, dtype=np.int64)
    lengths = label_lengths[label_of_row]
    # before the label's bytes: field count, id, prediction, the label's length
    head = np.empty((n, 22 + id_width), dtype=np.uint8)
    head[:, :6] = np.concatenate([[0, FIELDS], _words(id_width)])
    head[:, 6:6 + id_width] = _big_endian(ids, f">i{id_width}")
    head[:, 6 + id_width:10 + id_width] = _words(8)
    head[:, 10 + id_width:18 + id_width] = _big_endian(predictions, ">f8")
    head[:, 18 + id_width:] = _big_endian(lengths, ">i4")
    if probabilities is None:
        tail = np.empty((n, 4), dtype=np.uint8)
        tail[:] = _words(-1)
    else:
        k = probabilities.shape[1]
        tail = np.empty((n, 24 + 12 * k), dtype=np.uint8)
        tail[:, :24] = _words(20 + 12 * k, 1, 0, FLOAT8OID, k, 1)
        elements = tail[:, 24:].reshape(n, k, 12)
        elements[:, :, :4] = _words(8)
        elements[:, :, 4:] = _big_endian(probabilities.reshape(-1), ">f8").reshape(n, k, 8)
    return _rows(head, lengths, np.frombuffer(b"".join(encoded), dtype=np.uint8), label_starts[label_of_row], tail)


def _rows(head: np.ndarray, lengths: np.ndarray, text: np.ndarray, text_starts: np.ndarray,
          tail: np.ndarray) -> np.ndarray:
    """Signature, then per row ``head[i]``, ``lengths[i]`` bytes of ``text`` from ``text_starts[i]``
    and ``tail[i]``, then the trailer."""
    n, before, after = len(lengths), head.shape[1], tail.shape[1]
    sizes = before + lengths + after
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    starts += len(SIGNATURE)
    out = np.empty(len(SIGNATURE) + int(sizes.sum()) + len(TRAILER), dtype=np.uint8)
    out[:len(SIGNATURE)] = np.frombuffer(SIGNATURE, dtype=np.uint8)
    out[len(out) - len(TRAILER):] = np.frombuffer(TRAILER, dtype=np.uint8)
    out[(starts[:, None] + np.arange(before)).reshape(-1)] = head.reshape(-1)
    out[(starts[:, None] + (before + lengths)[:, None] + np.arange(after)).reshape(-1)] = tail.reshape(-1)
    total = int(lengths.sum())
    if total:  # each text byte: from its row's label, to its row's place after the head
        passed = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=passed[1:])
        step = np.arange(total)
        out[np.repeat(starts + before - passed, lengths) + step] = text[np.repeat(text_starts - passed, lengths) + step]
    return out
