"""Scored rows as a binary COPY stream (sqlml.scoring.copy_stream's compiled packer): the layout
byte for byte without a database, then the very bytes PostgreSQL's own ``COPY ... TO STDOUT (FORMAT binary)`` writes for
the same rows, and ``pg_internals.copy_in`` reading them back into a table."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from sqlml.scoring import copy_stream
from tests.conftest import query, scalar

HEAD = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)


@pytest.fixture(scope="module")
def rows():
    """The compiled packer's ``scored_rows`` (compiled here, not cached)."""
    packer = copy_stream.packer(None)
    assert packer is not None
    return packer.scored_rows


def test_one_row_of_a_regressor(rows):
    stream = rows(np.array([7]), 2, np.array([1.5]), ["é"], np.array([0]), None)
    # 4 fields; int2 7; float8 1.5; the label's 2 UTF-8 bytes; NULL; the trailer
    assert bytes(stream) == HEAD + struct.pack(">h", 4) + struct.pack(">ih", 2, 7) + struct.pack(">id", 8, 1.5) \
        + struct.pack(">i", 2) + "é".encode() + struct.pack(">i", -1) + struct.pack(">h", -1)


def test_rows_of_a_classifier_keep_their_order_and_labels_of_any_length(rows):
    probabilities = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    stream = rows(np.array([2**40, -3]), 8, np.array([30.0, 10.0]), ["a", "", "ccc"], np.array([2, 0]), probabilities)
    rows = b""
    for id_, prediction, label, p in [(2**40, 30.0, b"ccc", probabilities[0]), (-3, 10.0, b"a", probabilities[1])]:
        array = struct.pack(">iiiii", 1, 0, 701, 3, 1) + b"".join(struct.pack(">id", 8, v) for v in p)
        rows += struct.pack(">h", 4) + struct.pack(">iq", 8, id_) + struct.pack(">id", 8, prediction) \
            + struct.pack(">i", len(label)) + label + struct.pack(">i", len(array)) + array
    assert bytes(stream) == HEAD + rows + struct.pack(">h", -1)


def test_no_rows_is_a_stream_of_its_header_and_trailer(rows):
    empty = np.zeros(0, dtype=np.int64)
    assert bytes(rows(empty, 4, np.zeros(0), [], empty, None)) == HEAD + b"\xff\xff"


REFUSED = [  # (ids, id width, label of each row, probabilities, what the error says)
    (np.array([1]), 3, np.array([0]), None, "2, 4 or 8"),
    (np.array([1]), 4, np.array([1]), None, "label index outside"),
    (np.array([1]), 4, np.array([-1]), None, "label index outside"),
    (np.array([1, 2]), 4, np.array([0, 0]), np.zeros((3, 2)), "3 rows of probabilities for 2 ids"),
]


@pytest.mark.parametrize("ids, width, label_of_row, probabilities, message", REFUSED)
def test_what_the_packer_cannot_write_is_refused_before_it_writes(rows, ids, width, label_of_row, probabilities,
                                                                   message):
    with pytest.raises(ValueError, match=message):
        rows(ids, width, np.zeros(len(ids)), ["x"], label_of_row, probabilities)


# the same rows made by SQL and by scored_rows: (id type, width, rows of (id, prediction, label, probabilities))
AS_POSTGRES_WRITES = [
    ("int4", 4, [(1, 0.0, "no", [0.75, 0.25]), (-2147483648, 1.0, "yes", [0.0, 1.0]), (3, 1.0, "yes", [-0.0, 1e-310])]),
    ("int8", 8, [(2**62, 2.5, "2.5", None), (-1, float("nan"), "nan", None)]),
    ("int2", 2, [(32767, 0.5, "ß ∂", [float("inf"), 0.1, 0.2])]),
]


@pytest.mark.parametrize("id_type, width, table", AS_POSTGRES_WRITES, ids=[c[0] for c in AS_POSTGRES_WRITES])
def test_the_stream_is_what_postgres_copy_writes_and_copy_in_reads_it_back(db, rows, id_type, width, table):
    scalar(db, "SELECT sqlml.version()")  # the server-side venv on the backend's sys.path
    query(db, "DROP TABLE IF EXISTS copied_sql, copied_in")
    for name in ("copied_sql", "copied_in"):
        query(db, f"CREATE TABLE {name} (id {id_type}, prediction float8, label text, probabilities float8[])")
    for r in table:
        query(db, "INSERT INTO copied_sql VALUES (%s, %s::float8, %s, %s::float8[])",
              (r[0], repr(r[1]), r[2], None if r[3] is None else "{" + ",".join(map(repr, r[3])) + "}"))
    out = io.BytesIO()
    with db.cursor() as cur:
        cur.copy_expert("COPY copied_sql TO STDOUT (FORMAT binary)", out)
    labels = sorted({r[2] for r in table})
    probabilities = None if table[0][3] is None else np.array([r[3] for r in table])
    stream = rows(np.array([r[0] for r in table]), width, np.array([r[1] for r in table]), labels,
                  np.array([labels.index(r[2]) for r in table]), probabilities)
    assert bytes(stream) == out.getvalue()
    # copy_in: the stream into the table, read back as PostgreSQL stored it
    stream_literal = "'" + bytes(stream).hex() + "'"
    query(db, f"""DO $$
                  import numpy as np
                  from sqlml.server import pg_internals
                  oid = plpy.execute("SELECT 'copied_in'::regclass::oid AS o")[0]["o"]
                  stream = np.frombuffer(bytes.fromhex({stream_literal}), dtype=np.uint8)
                  plpy.notice(str(pg_internals.copy_in(oid, stream)))
                  $$ LANGUAGE plpython3u""")
    assert db.notices[-1].split("NOTICE:  ")[1].strip() == str(len(table))
    back = io.BytesIO()
    with db.cursor() as cur:
        cur.copy_expert("COPY copied_in TO STDOUT (FORMAT binary)", back)
    assert back.getvalue() == out.getvalue()  # bit for bit: -0.0, a subnormal, NaN and infinity kept


def test_copy_in_raises_postgres_error_and_copies_nothing(db):
    """A stream cut short: COPY's own error (22P04) as plpy raises it, no row kept, the session goes on."""
    scalar(db, "SELECT sqlml.version()")
    query(db, "DROP TABLE IF EXISTS copied_short")
    query(db, "CREATE TABLE copied_short (id int4, prediction float8, label text, probabilities float8[])")
    query(db, """DO $$
                 import numpy as np
                 from sqlml.scoring import copy_stream
                 from sqlml.server import pg_internals
                 oid = plpy.execute("SELECT 'copied_short'::regclass::oid AS o")[0]["o"]
                 packer = copy_stream.packer(pg_internals.compiled_cache_dir())
                 stream = packer.scored_rows(np.arange(1000), 4, np.zeros(1000), ["x"], np.zeros(1000, int), None)
                 try:
                     pg_internals.copy_in(oid, stream[:-7])
                 except plpy.spiexceptions.BadCopyFileFormat as e:
                     plpy.notice(str(e))
                 plpy.notice(str(pg_internals.copy_in(oid, stream)))
                 $$ LANGUAGE plpython3u""")
    assert db.notices[-2].split("NOTICE:  ")[1].strip().endswith("unexpected EOF in COPY data")
    assert db.notices[-1].split("NOTICE:  ")[1].strip() == "1000"
    assert scalar(db, "SELECT count(*) FROM copied_short") == 1000
