"""Scored rows as PostgreSQL's binary COPY stream, written by native code (pure: no database).

``sqlml.score`` writes a chunk of scored rows into the table it created through COPY FROM
(``sqlml.server.pg_internals.copy_in``): PostgreSQL then forms the tuples and inserts them a page
at a time, where an INSERT from arrays runs the executor on every row (100k rows of a classifier:
~45 ms against ~80 ms). The stream is written on the scoring thread by ``pack_rows`` (PACK_IR,
compiled once per machine and cached like the text scanners): numpy's scatter of the rows' bytes
took ~40 ms per 100k rows holding the GIL the backend's thread waits for; this takes ~1 ms without it.

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

import ctypes

import numpy as np

from sqlml.onnx import compiled

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER = b"\xff\xff"
FLOAT8OID = 701

PACK_IR = r"""
declare i16 @llvm.bswap.i16(i16)
declare i32 @llvm.bswap.i32(i32)
declare i64 @llvm.bswap.i64(i64)
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)

define private void @word(ptr %p, i64 %v) {
  %t = trunc i64 %v to i32
  %b = call i32 @llvm.bswap.i32(i32 %t)
  store i32 %b, ptr %p, align 1
  ret void
}

define private void @double(ptr %p, double %v) {
  %i = bitcast double %v to i64
  %b = call i64 @llvm.bswap.i64(i64 %i)
  store i64 %b, ptr %p, align 1
  ret void
}

; i64 pack_rows(out, n, ids, id width, predictions, label of each row, labels' offsets, labels' lengths,
;               labels' bytes, probabilities (n x k, or null), k): the rows' bytes written at out (no
;               signature, no trailer); returns how many
define i64 @pack_rows(ptr %out, i64 %n, ptr %ids, i64 %width, ptr %pred, ptr %lab, ptr %loff, ptr %llen,
                      ptr %lbytes, ptr %prob, i64 %k) {
entry:
  %noprob = icmp eq ptr %prob, null
  %asize = mul i64 %k, 12
  %alen = add i64 %asize, 20
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %row_end]
  %pos = phi i64 [0, %entry], [%pos1, %row_end]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %row, label %done
row:
  %p = getelementptr i8, ptr %out, i64 %pos
  store i8 0, ptr %p
  %p1 = getelementptr i8, ptr %p, i64 1
  store i8 4, ptr %p1
  %p2 = getelementptr i8, ptr %p, i64 2
  call void @word(ptr %p2, i64 %width)
  %p6 = getelementptr i8, ptr %p, i64 6
  %idp = getelementptr i64, ptr %ids, i64 %i
  %id = load i64, ptr %idp
  switch i64 %width, label %id8 [ i64 2, label %id2
                                  i64 4, label %id4 ]
id2:
  %id16 = trunc i64 %id to i16
  %id16b = call i16 @llvm.bswap.i16(i16 %id16)
  store i16 %id16b, ptr %p6, align 1
  br label %prediction
id4:
  call void @word(ptr %p6, i64 %id)
  br label %prediction
id8:
  %id64b = call i64 @llvm.bswap.i64(i64 %id)
  store i64 %id64b, ptr %p6, align 1
  br label %prediction
prediction:
  %at = add i64 6, %width
  %q = getelementptr i8, ptr %p, i64 %at
  call void @word(ptr %q, i64 8)
  %q4 = getelementptr i8, ptr %q, i64 4
  %predp = getelementptr double, ptr %pred, i64 %i
  %pv = load double, ptr %predp
  call void @double(ptr %q4, double %pv)
  %l = getelementptr i8, ptr %q, i64 12
  %cp = getelementptr i64, ptr %lab, i64 %i
  %c = load i64, ptr %cp
  %lenp = getelementptr i64, ptr %llen, i64 %c
  %len = load i64, ptr %lenp
  %offp = getelementptr i64, ptr %loff, i64 %c
  %off = load i64, ptr %offp
  call void @word(ptr %l, i64 %len)
  %l4 = getelementptr i8, ptr %l, i64 4
  %src = getelementptr i8, ptr %lbytes, i64 %off
  call void @llvm.memcpy.p0.p0.i64(ptr %l4, ptr %src, i64 %len, i1 false)
  %a = getelementptr i8, ptr %l4, i64 %len
  br i1 %noprob, label %null_array, label %array
null_array:
  call void @word(ptr %a, i64 -1)
  %a_null_end = getelementptr i8, ptr %a, i64 4
  br label %row_end
array:
  call void @word(ptr %a, i64 %alen)
  %h1 = getelementptr i8, ptr %a, i64 4
  call void @word(ptr %h1, i64 1)
  %h2 = getelementptr i8, ptr %a, i64 8
  call void @word(ptr %h2, i64 0)
  %h3 = getelementptr i8, ptr %a, i64 12
  call void @word(ptr %h3, i64 701)
  %h4 = getelementptr i8, ptr %a, i64 16
  call void @word(ptr %h4, i64 %k)
  %h5 = getelementptr i8, ptr %a, i64 20
  call void @word(ptr %h5, i64 1)
  %first = mul i64 %i, %k
  br label %elements
elements:
  %e = phi i64 [0, %array], [%e1, %element]
  %emore = icmp slt i64 %e, %k
  br i1 %emore, label %element, label %array_end
element:
  %eat0 = mul i64 %e, 12
  %eat = add i64 %eat0, 24
  %ep = getelementptr i8, ptr %a, i64 %eat
  call void @word(ptr %ep, i64 8)
  %ep4 = getelementptr i8, ptr %ep, i64 4
  %vi = add i64 %first, %e
  %vp = getelementptr double, ptr %prob, i64 %vi
  %v = load double, ptr %vp
  call void @double(ptr %ep4, double %v)
  %e1 = add i64 %e, 1
  br label %elements
array_end:
  %a_end_at = add i64 %alen, 4
  %a_end = getelementptr i8, ptr %a, i64 %a_end_at
  br label %row_end
row_end:
  %end = phi ptr [%a_null_end, %null_array], [%a_end, %array_end]
  %endi = ptrtoint ptr %end to i64
  %outi = ptrtoint ptr %out to i64
  %pos1 = sub i64 %endi, %outi
  %i1 = add i64 %i, 1
  br label %loop
done:
  ret i64 %pos
}
"""
VERSION = "1"
_PACK = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_int64)  # CFUNCTYPE: the GIL let go while it writes
_loaded: dict = {}


class Packer:
    """The loaded ``pack_rows``; ``scored_rows`` builds a chunk's stream with it."""

    def __init__(self, obj: bytes):
        self._code, address, self.loader = compiled.link(obj)
        if not address("pack_rows"):
            raise RuntimeError("pack_rows is missing from its object")
        self._pack = _PACK(address("pack_rows"))

    def scored_rows(self, ids: np.ndarray, id_width: int, predictions: np.ndarray, labels: list[str],
                    label_of_row: np.ndarray, probabilities: np.ndarray | None) -> np.ndarray:
        """The binary COPY stream of n scored rows, uint8.

        ids: (n,) integers, written ``id_width`` (2, 4 or 8) bytes wide; predictions: (n,) float;
        labels: the distinct label texts, ``label_of_row`` (n,) the index of each row's;
        probabilities: (n, k) float, or None (a NULL column: a regressor)."""
        if id_width not in (2, 4, 8):
            raise ValueError(f"an id {id_width} bytes wide: 2, 4 or 8")
        n = len(ids)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        predictions = np.ascontiguousarray(predictions, dtype=np.float64)
        label_of_row = np.ascontiguousarray(label_of_row, dtype=np.int64)
        if n and (label_of_row.min() < 0 or label_of_row.max() >= len(labels)):
            raise ValueError("a row's label index outside the labels")
        encoded = [s.encode() for s in labels]
        lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        offsets = np.cumsum(lengths) - lengths
        text = np.frombuffer(b"".join(encoded) + b"\0", dtype=np.uint8)
        k = 0 if probabilities is None else probabilities.shape[1]
        if probabilities is not None:
            probabilities = np.ascontiguousarray(probabilities, dtype=np.float64)
            if probabilities.shape[0] != n:
                raise ValueError(f"{probabilities.shape[0]} rows of probabilities for {n} ids")
        fixed = 2 + 4 + id_width + 12 + 4 + (4 if probabilities is None else 24 + 12 * k)
        size = len(SIGNATURE) + n * fixed + int(lengths[label_of_row].sum()) + len(TRAILER)
        out = np.empty(size, dtype=np.uint8)
        out[:len(SIGNATURE)] = np.frombuffer(SIGNATURE, dtype=np.uint8)
        written = self._pack(out.ctypes.data + len(SIGNATURE), n, ids.ctypes.data, id_width, predictions.ctypes.data,
                             label_of_row.ctypes.data, offsets.ctypes.data, lengths.ctypes.data, text.ctypes.data,
                             None if probabilities is None else probabilities.ctypes.data, k)
        if written != size - len(SIGNATURE) - len(TRAILER):
            raise RuntimeError(f"pack_rows wrote {written} bytes where {size} were due")
        out[size - len(TRAILER):] = np.frombuffer(TRAILER, dtype=np.uint8)
        return out


def packer(cache_dir: str | None) -> Packer | None:
    """This process's packer: loaded from ``cache_dir`` if compiled there before, else compiled (LLVM)
    and kept there; None where it cannot be (no LLVM): the caller then writes rows another way."""
    if "packer" not in _loaded:
        _loaded["packer"] = compiled.cached_code("copy-stream", PACK_IR, cache_dir, Packer, version=VERSION)
    return _loaded["packer"]
