"""Scored rows as PostgreSQL heap tuples, written by native code (pure: no database).

``sqlml.score`` hands a chunk of scored rows to the table it created as tuples ready to store
(``sqlml.server.pg_internals.insert_tuples``: ``heap_multi_insert``, a page at a time): what
``heap_form_tuple`` would build from the rows' Datums, so PostgreSQL parses nothing. COPY FROM a
binary stream ran four receive functions and formed each tuple itself (100k rows of a classifier:
~50 ms, as much as reading them); this is ~10 ms. The tuples are written on the scoring thread by
``pack_tuples`` (PACK_IR, compiled once per machine and cached like the text scanners), without the
GIL the backend's thread needs.

The layout (PostgreSQL 15: access/htup_details.h, access/tupmacs.h, postgres.h; little-endian
only), each tuple at an 8-byte aligned offset, pad bytes zero (a reader tells a short varlena from
padding by its first byte)::

    header   23 bytes: t_xmin, t_xmax, t_cid (set on insert: 0 here), t_ctid (invalid: block
             0xFFFFFFFF, offset 0), t_infomask2 = 4 attributes, t_infomask = HEAP_HASVARWIDTH
             (| HEAP_HASNULL for a regressor), t_hoff = 24; then the null bitmap's one byte (0b0111:
             probabilities NULL), or a pad byte
    id             int2, int4 or int8 at 24
    prediction     float8 at 32
    label          text at 40: a 1-byte header ((length + 1) << 1 | 1) and the UTF-8 bytes up to 126
                   of them, else a 4-byte header (length + 4) << 2 and the bytes
    probabilities  float8[] right after, as ``heap_fill_tuple`` packs a 1-d array of k float8 without
                   NULLs: 24 + 8k bytes with a 4-byte header, 8-aligned; up to 13 classes a 1-byte
                   header instead, unaligned, and the array's other 20 header bytes (ndim 1,
                   dataoffset 0, element type 701, k, lower bound 1), then the k values;
                   absent for a regressor
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

from sqlml.onnx import compiled

FLOAT8OID = 701
HEADER = 24  # t_hoff: MAXALIGN(23 bytes of header + 1 of null bitmap)
MAX_TEXT = (1 << 30) - 1 - 4  # a varlena's 4-byte header holds 30 bits of size, itself included

PACK_IR = r"""
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)

; i64 pack_tuples(out (zeroed), places (n x 2: offset, length), n, ids, id width, predictions, label of
;                 each row, labels' offsets, labels' lengths, labels' bytes, probabilities (n x k, or
;                 null), k): the rows' tuples written at out; returns the bytes used
define i64 @pack_tuples(ptr %out, ptr %places, i64 %n, ptr %ids, i64 %width, ptr %pred, ptr %lab, ptr %loff,
                        ptr %llen, ptr %lbytes, ptr %prob, i64 %k) {
entry:
  %noprob = icmp eq ptr %prob, null
  %mask = select i1 %noprob, i16 3, i16 2
  %bits = select i1 %noprob, i8 7, i8 0
  %values = mul i64 %k, 8
  %asize = add i64 %values, 24
  %ashort = icmp sle i64 %asize, 130
  %ashort_len = sub i64 %asize, 3
  %ashort_shifted = shl i64 %ashort_len, 1
  %ashort_set = or i64 %ashort_shifted, 1
  %ashort_hdr = trunc i64 %ashort_set to i8
  %along_shifted = shl i64 %asize, 2
  %along_hdr = trunc i64 %along_shifted to i32
  %kk = trunc i64 %k to i32
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %row_end]
  %pos = phi i64 [0, %entry], [%next, %row_end]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %row, label %done
row:
  %t = getelementptr i8, ptr %out, i64 %pos
  %ctid = getelementptr i8, ptr %t, i64 12
  store i32 -1, ptr %ctid, align 1
  %natts = getelementptr i8, ptr %t, i64 18
  store i16 4, ptr %natts, align 1
  %infomask = getelementptr i8, ptr %t, i64 20
  store i16 %mask, ptr %infomask, align 1
  %hoff = getelementptr i8, ptr %t, i64 22
  store i8 24, ptr %hoff
  %bitmap = getelementptr i8, ptr %t, i64 23
  store i8 %bits, ptr %bitmap
  %d = getelementptr i8, ptr %t, i64 24
  %idp = getelementptr i64, ptr %ids, i64 %i
  %id = load i64, ptr %idp
  switch i64 %width, label %id8 [ i64 2, label %id2
                                  i64 4, label %id4 ]
id2:
  %id16 = trunc i64 %id to i16
  store i16 %id16, ptr %d, align 1
  br label %prediction
id4:
  %id32 = trunc i64 %id to i32
  store i32 %id32, ptr %d, align 1
  br label %prediction
id8:
  store i64 %id, ptr %d, align 1
  br label %prediction
prediction:
  %q = getelementptr i8, ptr %d, i64 8
  %predp = getelementptr double, ptr %pred, i64 %i
  %pv = load double, ptr %predp
  store double %pv, ptr %q, align 1
  %cp = getelementptr i64, ptr %lab, i64 %i
  %c = load i64, ptr %cp
  %lenp = getelementptr i64, ptr %llen, i64 %c
  %len = load i64, ptr %lenp
  %offp = getelementptr i64, ptr %loff, i64 %c
  %off = load i64, ptr %offp
  %src = getelementptr i8, ptr %lbytes, i64 %off
  %l = getelementptr i8, ptr %d, i64 16
  %lshort = icmp sle i64 %len, 126
  br i1 %lshort, label %short_label, label %long_label
short_label:
  %sl1 = add i64 %len, 1
  %sl2 = shl i64 %sl1, 1
  %sl3 = or i64 %sl2, 1
  %slh = trunc i64 %sl3 to i8
  store i8 %slh, ptr %l
  %sdst = getelementptr i8, ptr %l, i64 1
  call void @llvm.memcpy.p0.p0.i64(ptr %sdst, ptr %src, i64 %len, i1 false)
  %send = add i64 %len, 17
  br label %label_end
long_label:
  %ll1 = add i64 %len, 4
  %ll2 = shl i64 %ll1, 2
  %llh = trunc i64 %ll2 to i32
  store i32 %llh, ptr %l, align 1
  %ldst = getelementptr i8, ptr %l, i64 4
  call void @llvm.memcpy.p0.p0.i64(ptr %ldst, ptr %src, i64 %len, i1 false)
  %lend_ = add i64 %len, 20
  br label %label_end
label_end:
  %lend = phi i64 [%send, %short_label], [%lend_, %long_label]
  br i1 %noprob, label %row_end, label %array
array:
  %first = mul i64 %i, %k
  %vsrc = getelementptr double, ptr %prob, i64 %first
  br i1 %ashort, label %short_array, label %long_array
short_array:
  %sa = getelementptr i8, ptr %d, i64 %lend
  store i8 %ashort_hdr, ptr %sa
  %sbody = getelementptr i8, ptr %sa, i64 1
  %saend = add i64 %lend, %ashort_len
  br label %array_body
long_array:
  %la7 = add i64 %lend, 7
  %lat = and i64 %la7, -8
  %la = getelementptr i8, ptr %d, i64 %lat
  store i32 %along_hdr, ptr %la, align 1
  %lbody = getelementptr i8, ptr %la, i64 4
  %laend = add i64 %lat, %asize
  br label %array_body
array_body:
  %body = phi ptr [%sbody, %short_array], [%lbody, %long_array]
  %aend = phi i64 [%saend, %short_array], [%laend, %long_array]
  store i32 1, ptr %body, align 1
  %b4 = getelementptr i8, ptr %body, i64 4
  store i32 0, ptr %b4, align 1
  %b8 = getelementptr i8, ptr %body, i64 8
  store i32 701, ptr %b8, align 1
  %b12 = getelementptr i8, ptr %body, i64 12
  store i32 %kk, ptr %b12, align 1
  %b16 = getelementptr i8, ptr %body, i64 16
  store i32 1, ptr %b16, align 1
  %b20 = getelementptr i8, ptr %body, i64 20
  call void @llvm.memcpy.p0.p0.i64(ptr %b20, ptr %vsrc, i64 %values, i1 false)
  br label %row_end
row_end:
  %dlen = phi i64 [%lend, %label_end], [%aend, %array_body]
  %tlen = add i64 %dlen, 24
  %i2 = shl i64 %i, 1
  %placep = getelementptr i64, ptr %places, i64 %i2
  store i64 %pos, ptr %placep
  %lenp2 = getelementptr i64, ptr %placep, i64 1
  store i64 %tlen, ptr %lenp2
  %end = add i64 %pos, %tlen
  %end7 = add i64 %end, 7
  %next = and i64 %end7, -8
  %i1 = add i64 %i, 1
  br label %loop
done:
  ret i64 %pos
}
"""
VERSION = "1"
_PACK = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                         ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)  # CFUNCTYPE: the GIL let go meanwhile
_loaded: dict = {}


class Tuples:
    """A chunk's heap tuples: ``data`` (uint8) and ``places`` ((n, 2) int64: each tuple's offset in
    ``data``, 8-aligned, and its length)."""

    def __init__(self, data: np.ndarray, places: np.ndarray):
        self.data, self.places = data, places

    def __len__(self) -> int:
        return len(self.places)

    def tuple(self, i: int) -> bytes:
        """The bytes of tuple ``i``."""
        at, length = self.places[i]
        return bytes(self.data[at:at + length])


class Packer:
    """The loaded ``pack_tuples``; ``scored_rows`` builds a chunk's tuples with it."""

    def __init__(self, obj: bytes):
        self._code, address, self.loader = compiled.link(obj)
        if not address("pack_tuples"):
            raise RuntimeError("pack_tuples is missing from its object")
        self._pack = _PACK(address("pack_tuples"))

    def scored_rows(self, ids: np.ndarray, id_width: int, predictions: np.ndarray, labels: list[str],
                    label_of_row: np.ndarray, probabilities: np.ndarray | None) -> Tuples:
        """The heap tuples of n scored rows (id, prediction, label, probabilities).

        ids: (n,) integers, written ``id_width`` (2, 4 or 8) bytes wide; predictions: (n,) float;
        labels: the distinct label texts (no NUL: text cannot hold one), ``label_of_row`` (n,) the
        index of each row's; probabilities: (n, k) float, or None (a NULL column: a regressor)."""
        if id_width not in (2, 4, 8):
            raise ValueError(f"an id {id_width} bytes wide: 2, 4 or 8")
        n = len(ids)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        predictions = np.ascontiguousarray(predictions, dtype=np.float64)
        label_of_row = np.ascontiguousarray(label_of_row, dtype=np.int64)
        if len(predictions) != n or len(label_of_row) != n:
            raise ValueError(f"{len(predictions)} predictions and {len(label_of_row)} labels for {n} ids")
        if n and (label_of_row.min() < 0 or label_of_row.max() >= len(labels)):
            raise ValueError("a row's label index outside the labels")
        encoded = [s.encode() for s in labels]
        joined = b"".join(encoded)
        if b"\0" in joined:
            raise ValueError("a label with a NUL character, which text cannot hold")
        lengths = np.array([len(e) for e in encoded], dtype=np.int64)
        if len(lengths) and lengths.max() > MAX_TEXT:
            raise ValueError(f"a label of {lengths.max()} bytes: text holds {MAX_TEXT} at most")
        offsets = np.cumsum(lengths) - lengths
        text = np.frombuffer(joined + b"\0", dtype=np.uint8)
        k = 0 if probabilities is None else probabilities.shape[1]
        if probabilities is not None:
            probabilities = np.ascontiguousarray(probabilities, dtype=np.float64)
            if probabilities.shape[0] != n:
                raise ValueError(f"{probabilities.shape[0]} rows of probabilities for {n} ids")
            if k < 1:
                raise ValueError("probabilities of no class")
        # per row at most: header, id and prediction, a label's 4-byte header, the array 8-aligned
        # with its 4-byte header, and the pad to the next tuple
        size = n * (HEADER + 16 + 4 + 7 + 24 + 8 * k + 7) + int(lengths[label_of_row].sum())
        data = np.zeros(size, dtype=np.uint8)
        places = np.empty((n, 2), dtype=np.int64)
        if data.ctypes.data % 8:
            raise RuntimeError("the tuples' buffer is not 8-aligned")
        self._pack(data.ctypes.data, places.ctypes.data, n, ids.ctypes.data, id_width, predictions.ctypes.data,
                   label_of_row.ctypes.data, offsets.ctypes.data, lengths.ctypes.data, text.ctypes.data,
                   None if probabilities is None else probabilities.ctypes.data, k)
        if n and places[-1].sum() > size:
            raise RuntimeError(f"pack_tuples wrote past the {size} bytes it was given")
        return Tuples(data, places)


def packer(cache_dir: str | None) -> Packer | None:
    """This process's packer: loaded from ``cache_dir`` if compiled there before, else compiled (LLVM)
    and kept there; None where it cannot be (no LLVM, or a big-endian machine, whose varlena headers
    differ): the caller then writes rows another way."""
    if "packer" not in _loaded:
        _loaded["packer"] = compiled.cached_code("heap-tuples", PACK_IR, cache_dir, Packer, version=VERSION) \
            if sys.byteorder == "little" else None
    return _loaded["packer"]
