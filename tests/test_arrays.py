"""PostgreSQL arrays built in numpy (sqlml.scoring.arrays), without a database: the layout byte for
byte, read back as PostgreSQL reads them, and refusals. PostgreSQL itself reading them is tested in
test_pg_internals.py."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from sqlml.scoring import arrays

ROUND_TRIPS = [  # (values, element type)
    (np.array([1, -2, 2**62], dtype=np.int64), arrays.INT8OID),
    (np.array([7, -8], dtype=np.int32), arrays.INT4OID),
    (np.array([0.1, -0.0, np.inf, 1e-310, np.nan]), arrays.FLOAT8OID),
    (np.arange(12, dtype=np.float64).reshape(4, 3), arrays.FLOAT8OID),
    (np.arange(3, dtype=np.float64).reshape(3, 1), arrays.FLOAT8OID),
    (np.empty(0, dtype=np.int64), arrays.INT8OID),
]


def parse_array(data: bytes, elemtype: int) -> np.ndarray:
    """How PostgreSQL reads a 1-D or 2-D array of a fixed-width type without NULLs."""
    size, ndim, offset, found = struct.unpack_from("<4i", data)
    assert (size >> 2, offset, found) == (len(data), 0, elemtype)
    dtype = {arrays.INT4OID: "<i4", arrays.INT8OID: "<i8", arrays.FLOAT8OID: "<f8"}[elemtype]
    if ndim == 0:
        return np.empty(0, dtype=dtype)
    shape = struct.unpack_from(f"<{ndim}i", data, 16)
    assert struct.unpack_from(f"<{ndim}i", data, 16 + 4 * ndim) == (1,) * ndim  # lower bounds
    return np.frombuffer(data, dtype=dtype, offset=(16 + 8 * ndim + 7) & ~7).reshape(shape)


@pytest.mark.parametrize("values, elemtype", ROUND_TRIPS)
def test_round_trip(values, elemtype):
    built = arrays.build(values, elemtype)
    assert built.ctypes.data % 8 == 0
    back = parse_array(bytes(built), elemtype)
    assert back.shape == values.shape
    np.testing.assert_array_equal(back, values)
    assert np.array_equal(np.signbit(back), np.signbit(values)) if values.dtype.kind == "f" else True


def test_layout_of_a_one_dimensional_int8_array():
    built = bytes(arrays.build(np.array([5, 6]), arrays.INT8OID))
    # size 24 + 16 = 40, << 2; one dimension; no NULL bitmap; int8; 2 elements from 1; the elements at 24
    assert built[:24] == struct.pack("<6i", 40 << 2, 1, 0, 20, 2, 1)
    assert built[24:] == struct.pack("<2q", 5, 6)


def test_layout_of_a_two_dimensional_array_pads_its_header_to_8_bytes():
    built = bytes(arrays.build(np.ones((2, 3)), arrays.FLOAT8OID))
    assert built[:32] == struct.pack("<8i", (32 + 48) << 2, 2, 0, 701, 2, 3, 1, 1)
    assert len(built) == 80


TEXTS = [
    ["a", "", "naïve", "x" * 70],
    ["abc"],  # 4 + 3 bytes, padded to 8
    ["abcd", "e"],  # the second element at 8
    [],
    ["x" * 60],  # a header whose first byte is 0 ((4 + 60) << 2 = 256): still read at its aligned place
]


def parse_text_array(data: bytes) -> list[str]:
    """How PostgreSQL walks a text[] without NULLs whose elements have 4-byte headers."""
    size, ndim, offset, elemtype = struct.unpack_from("<4i", data)
    assert (size >> 2, offset, elemtype) == (len(data), 0, 25)
    if ndim == 0:
        return []
    count = struct.unpack_from("<i", data, 16)[0]
    at, out = 24, []
    for _ in range(count):
        at = (at + 3) & ~3
        length = (struct.unpack_from("<I", data, at)[0] >> 2) - 4
        out.append(data[at + 4:at + 4 + length].decode())
        at += 4 + length
    assert (at + 3) & ~3 == len(data)
    return out


@pytest.mark.parametrize("strings", TEXTS)
def test_text_array_layout(strings):
    built = arrays.build_text(strings)
    assert built.ctypes.data % 8 == 0
    assert parse_text_array(bytes(built)) == strings


def test_build_refuses_what_postgres_cannot_hold():
    with pytest.raises(ValueError, match="NUL"):
        arrays.build_text(["a\0b"])
    with pytest.raises(ValueError, match="dimensions"):
        arrays.build(np.zeros((1, 1, 1)), arrays.FLOAT8OID)
