"""Scored rows as heap tuples (sqlml.scoring.heap_tuples' compiled packer): the layout byte for byte
without a database, then the very tuples PostgreSQL's own INSERT stores for the same rows, page
item by page item, once ``pg_internals.insert_tuples`` has inserted them, and amcheck's verdict."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from sqlml.scoring import heap_tuples
from tests.conftest import query, scalar


@pytest.fixture(scope="module")
def rows():
    """The compiled packer's ``scored_rows`` (compiled here, not cached)."""
    packer = heap_tuples.packer(None)
    assert packer is not None
    return packer.scored_rows


def header(nulls: bool) -> bytes:
    """23 bytes: xmin, xmax, cid 0; ctid invalid; 4 attributes; HEAP_HASVARWIDTH (| HEAP_HASNULL); t_hoff
    24; then the null bitmap (probabilities NULL) or a pad byte."""
    return bytes(12) + b"\xff\xff\xff\xff\x00\x00" + struct.pack("<hhB", 4, 3 if nulls else 2, 24) \
        + (b"\x07" if nulls else b"\x00")


def array(values) -> bytes:
    """A float8[]'s body after its header: ndim 1, no NULLs, element type 701, k, lower bound 1, values."""
    return struct.pack("<iiiii", 1, 0, 701, len(values), 1) + struct.pack(f"<{len(values)}d", *values)


def test_one_row_of_a_regressor(rows):
    tuples = rows(np.array([7]), 2, np.array([1.5]), ["é"], np.array([0]), None)
    # int2 7 and its pad; float8 1.5; the label's 2 UTF-8 bytes with a 1-byte header; no array
    assert tuples.tuple(0) == header(True) + struct.pack("<h6xd", 7, 1.5) + b"\x07" + "é".encode()
    assert tuples.places.tolist() == [[0, 43]]


def test_rows_of_a_classifier_keep_their_order_start_8_aligned_and_pack_their_varlenas(rows):
    probabilities = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    tuples = rows(np.array([2**40, -3]), 8, np.array([30.0, 10.0]), ["a", "", "ccc"], np.array([2, 0]),
                  probabilities)
    for i, (id_, prediction, label) in enumerate([(2**40, 30.0, b"ccc"), (-3, 10.0, b"a")]):
        short = struct.pack("B", ((20 + 24 + 1) << 1) | 1)  # the array: a 1-byte header, unaligned
        assert tuples.tuple(i) == header(False) + struct.pack("<qd", id_, prediction) \
            + struct.pack("B", ((len(label) + 1) << 1) | 1) + label + short + array(probabilities[i])
    assert tuples.places[:, 0].tolist() == [0, 96]  # 89 bytes, then the next at a multiple of 8


def test_what_no_1_byte_header_holds_gets_a_4_byte_one_aligned(rows):
    label = "x" * 127  # one more than a 1-byte header holds
    probabilities = np.arange(14.0).reshape(1, 14)  # 24 + 8 * 14 = 136 bytes: past 130
    tuple_ = rows(np.array([5]), 4, np.array([2.0]), [label], np.array([0]), probabilities).tuple(0)
    text = struct.pack("<I", (127 + 4) << 2) + label.encode()  # at 40, already 4-aligned
    at = 40 + len(text)
    pad = bytes(-at % 8)  # the array 8-aligned, zeros before it
    assert tuple_ == header(False) + struct.pack("<i4xd", 5, 2.0) + text + pad \
        + struct.pack("<I", 136 << 2) + array(probabilities[0])


def test_no_rows_are_no_tuples(rows):
    empty = np.zeros(0, dtype=np.int64)
    assert len(rows(empty, 4, np.zeros(0), [], empty, None)) == 0


REFUSED = [  # (ids, id width, labels, label of each row, probabilities, what the error says)
    (np.array([1]), 3, ["x"], np.array([0]), None, "2, 4 or 8"),
    (np.array([1]), 4, ["x"], np.array([1]), None, "label index outside"),
    (np.array([1]), 4, ["x"], np.array([-1]), None, "label index outside"),
    (np.array([1, 2]), 4, ["x"], np.array([0, 0]), np.zeros((3, 2)), "3 rows of probabilities for 2 ids"),
    (np.array([1]), 4, ["a\0b"], np.array([0]), None, "NUL"),
    (np.array([1]), 4, ["x"], np.array([0]), np.zeros((1, 0)), "no class"),
]


@pytest.mark.parametrize("ids, width, labels, label_of_row, probabilities, message", REFUSED)
def test_what_the_packer_cannot_write_is_refused_before_it_writes(rows, ids, width, labels, label_of_row,
                                                                   probabilities, message):
    with pytest.raises(ValueError, match=message):
        rows(ids, width, np.zeros(len(ids)), labels, label_of_row, probabilities)


# the same rows inserted by SQL and by insert_tuples: (id type, width, rows of (id, prediction, label, probabilities))
AS_POSTGRES_STORES = [
    ("int4", 4, [(1, 0.0, "no", [0.75, 0.25]), (-2147483648, 1.0, "yes", [0.0, 1.0]), (3, 1.0, "yes", [-0.0, 1e-310])]),
    ("int8", 8, [(2**62, 2.5, "2.5", None), (-1, float("nan"), "nan", None)]),
    ("int2", 2, [(32767, 0.5, "ß ∂", [float("inf"), 0.1, 0.2])]),
    ("int4", 4, [(i, float(i), "label " * (i * 10), (np.linspace(0, 1, 16) + i).tolist()) for i in range(4)]),
]
ITEMS = "SELECT lp_len, t_infomask2, t_infomask, t_hoff, t_bits, t_data FROM heap_page_items(get_raw_page(%s, 0))"


@pytest.mark.parametrize("id_type, width, table", AS_POSTGRES_STORES, ids=["int4", "int8", "int2", "long"])
def test_the_tuples_are_what_postgres_stores_and_amcheck_finds_nothing(db, rows, id_type, width, table):
    scalar(db, "SELECT sqlml.version()")  # the server-side venv on the backend's sys.path
    query(db, "CREATE EXTENSION IF NOT EXISTS pageinspect; CREATE EXTENSION IF NOT EXISTS amcheck")
    query(db, "DROP TABLE IF EXISTS stored_sql, stored_tuples")
    for name in ("stored_sql", "stored_tuples"):
        query(db, f"CREATE TABLE {name} (id {id_type}, prediction float8, label text, probabilities float8[])")
    for r in table:
        query(db, "INSERT INTO stored_sql VALUES (%s, %s::float8, %s, %s::float8[])",
              (r[0], repr(r[1]), r[2], None if r[3] is None else "{" + ",".join(map(repr, r[3])) + "}"))
    labels = sorted({r[2] for r in table})
    probabilities = None if table[0][3] is None else np.array([r[3] for r in table])
    tuples = rows(np.array([r[0] for r in table]), width, np.array([r[1] for r in table]), labels,
                  np.array([labels.index(r[2]) for r in table]), probabilities)
    data, places = "'" + bytes(tuples.data).hex() + "'", tuples.places.tolist()
    query(db, f"""DO $$
                  import numpy as np
                  from sqlml.scoring.heap_tuples import Tuples
                  from sqlml.server import pg_internals
                  found = plpy.execute("SELECT 'stored_tuples'::regclass::oid AS o, "
                                       "'stored_tuples'::regtype::oid AS t")[0]
                  tuples = Tuples(np.frombuffer(bytes.fromhex({data}), dtype=np.uint8).copy(),
                                  np.array({places}, dtype=np.int64))
                  plpy.notice(str(pg_internals.insert_tuples(found["o"], found["t"], tuples)))
                  $$ LANGUAGE plpython3u""")
    assert db.notices[-1].split("NOTICE:  ")[1].strip() == str(len(table))
    # bit for bit: -0.0, a subnormal, NaN and infinity kept; short and long varlena headers as INSERT packs them
    assert query(db, ITEMS, ("stored_tuples",)) == query(db, ITEMS, ("stored_sql",))
    assert query(db, "SELECT * FROM verify_heapam('stored_tuples')") == []
    assert query(db, "SELECT id, label, probabilities::text FROM stored_tuples ORDER BY id") == \
        query(db, "SELECT id, label, probabilities::text FROM stored_sql ORDER BY id")


def test_insert_tuples_raises_postgres_error_and_inserts_nothing(db, rows):
    """A relation that is not there: PostgreSQL's own error as plpy raises it, nothing inserted, and
    the session goes on to insert into the table."""
    scalar(db, "SELECT sqlml.version()")
    query(db, "DROP TABLE IF EXISTS stored_after")
    query(db, "CREATE TABLE stored_after (id int4, prediction float8, label text, probabilities float8[])")
    query(db, """DO $$
                 import numpy as np
                 from sqlml.scoring import heap_tuples
                 from sqlml.server import pg_internals
                 found = plpy.execute("SELECT 'stored_after'::regclass::oid AS o, 'stored_after'::regtype::oid AS t")[0]
                 packer = heap_tuples.packer(pg_internals.compiled_cache_dir())
                 tuples = packer.scored_rows(np.arange(3000), 4, np.zeros(3000), ["x"], np.zeros(3000, int), None)
                 try:
                     pg_internals.insert_tuples(4000000000, found["t"], tuples)
                 except plpy.SPIError as e:
                     plpy.notice(str(e))
                 plpy.notice(str(pg_internals.insert_tuples(found["o"], found["t"], tuples)))
                 $$ LANGUAGE plpython3u""")
    assert "could not open relation with OID 4000000000" in db.notices[-2]
    assert db.notices[-1].split("NOTICE:  ")[1].strip() == "3000"
    assert query(db, "SELECT count(*), sum(id), count(DISTINCT label) FROM stored_after") == [(3000, 2999 * 1500, 1)]
