"""The PostgreSQL internals sqlml reads through ctypes: read right inside a real backend, and
refused on a major version they were not checked against."""

from __future__ import annotations

import json

import psycopg2
import pytest

from sqlml.errors import FEATURE_NOT_SUPPORTED, SqlmlError
from sqlml.postgres_versions import SUPPORTED_MAJORS, check_major, major_of
from tests.conftest import query, scalar, sql_error

# Runs in a backend of the test cluster as a superuser; the first sqlml call put the server-side
# venv on the backend's sys.path. Each block reports through a NOTICE, or raises as an entry point does.
READ_FACTS = """DO $$
from sqlml.server import pg_internals as p
plpy.notice(f"{p.SERVER_VERSION_NUM} {p.data_directory()} {p.database_oid()} {p.iso_dates()} {p.in_parallel_mode()}")
$$ LANGUAGE plpython3u"""

REFUSED_ELSEWHERE = """DO $$
import importlib
import sqlml.postgres_versions as versions
from sqlml.errors import SqlmlError
from sqlml.server import pg_internals
from sqlml.server.sql_errors import translate
supported = versions.SUPPORTED_MAJORS
versions.SUPPORTED_MAJORS = (pg_internals.SERVER_VERSION_NUM // 10000 + 1,)  # as if on another server
try:
    importlib.reload(pg_internals)
except SqlmlError as e:
    raise translate(e)
finally:
    versions.SUPPORTED_MAJORS = supported
$$ LANGUAGE plpython3u"""


@pytest.fixture
def backend(dsn):
    conn = psycopg2.connect(dsn)  # a backend of its own: the refusal test reloads a module in it
    conn.autocommit = True
    scalar(conn, "SELECT sqlml.version()")
    yield conn
    conn.close()


def test_the_facts_read_through_ctypes_match_what_the_server_says(backend):
    query(backend, "SET DateStyle = 'ISO, MDY'")
    query(backend, READ_FACTS)
    version, data_dir, oid, iso, parallel = backend.notices[-1].split("NOTICE:  ")[1].split()
    assert int(version) == int(scalar(backend, "SHOW server_version_num"))
    assert major_of(int(version)) in SUPPORTED_MAJORS
    assert data_dir == scalar(backend, "SHOW data_directory")
    assert int(oid) == scalar(backend, "SELECT oid FROM pg_database WHERE datname = current_database()")
    assert (iso, parallel) == ("True", "False")
    query(backend, "SET DateStyle = 'German'")
    query(backend, READ_FACTS)
    assert backend.notices[-1].split()[-2] == "False"


def test_another_major_version_is_refused_before_any_fact_is_read(backend):
    e = sql_error(backend, REFUSED_ELSEWHERE)
    assert e.pgcode == FEATURE_NOT_SUPPORTED
    major = int(scalar(backend, "SHOW server_version_num")) // 10000
    assert e.diag.message_primary == (f"sqlml: PostgreSQL {major} is not supported (server_version_num "
                                      f"{scalar(backend, 'SHOW server_version_num')}): sqlml supports PostgreSQL "
                                      f"{major + 1} only")
    assert f"PostgreSQL {major + 1} cluster" in e.diag.message_hint


@pytest.mark.parametrize("version_num, refused", [(150000, False), (150014, False), (140011, True),
                                                  (160002, True), (90624, True)])
def test_check_major_names_the_supported_versions(version_num, refused):
    if not refused:
        check_major(version_num)
        return
    with pytest.raises(SqlmlError) as info:
        check_major(version_num)
    assert info.value.sqlstate == FEATURE_NOT_SUPPORTED
    assert info.value.message == (f"PostgreSQL {major_of(version_num)} is not supported (server_version_num "
                                  f"{version_num}): sqlml supports PostgreSQL 15 only")


def test_the_supported_versions_import_without_a_server():
    import subprocess
    import sys

    code = ("import sys; from sqlml.postgres_versions import SUPPORTED_MAJORS; "
            "assert 'ctypes' not in sys.modules and 'plpy' not in sys.modules, sorted(sys.modules); "
            "print(SUPPORTED_MAJORS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(15,)"


# DatumSpi: arrays built in numpy read by PostgreSQL as they are; errors caught as plpy catches them
DATUMS = """DO $$
import json
import numpy as np
from sqlml.scoring import arrays as A
from sqlml.server import pg_internals as p
spi = p.DatumSpi()
assert spi.available()
floats = np.array([0.1, -0.0, 1e-310, 3.4028234663852886e38, float("nan")])
texts = ["a", "", "naïve", "x" * 60, "y" * 200]
params = [(A.ARRAY_OF[A.INT8OID], A.build(np.array([1, -2, 2**62]), A.INT8OID)),
          (A.ARRAY_OF[A.FLOAT8OID], A.build(floats, A.FLOAT8OID)),
          (A.ARRAY_OF[A.TEXTOID], A.build_text(texts)),
          (A.ARRAY_OF[A.FLOAT8OID], A.build(np.arange(6.0).reshape(3, 2), A.FLOAT8OID)),
          (A.ARRAY_OF[A.INT8OID], A.build(np.empty(0, dtype=np.int64), A.INT8OID))]
n = spi.execute("CREATE TEMP TABLE datums AS SELECT $1 AS i, $2 AS f, $3 AS t, $4 AS m, $5 AS e", params)
row = plpy.execute("SELECT i::text, (SELECT array_agg(float8send(x)::text) FROM unnest(f) x) AS f, t, "
                   "m::text, e::text, cardinality(e) AS ne, array_dims(m) AS dims FROM datums")[0]
out = {"rows": n, "row": dict(row), "want_f": [ "\\\\x" + np.float64(x).byteswap().tobytes().hex() for x in floats]}
caught = []
for sql in ["SELECT 1/0", "SELECT pg_sleep(10)", "INSERT INTO datums (i) VALUES ('x')"]:
    try:
        done = spi.execute(sql)
        out.setdefault("after", []).append(done)
    except plpy.SPIError as e:
        caught.append([type(e).__name__, str(e), e.spidata[0]])
out["caught"] = caught
out["count"] = plpy.execute("SELECT count(*) AS c FROM datums")[0]["c"]
plpy.notice(json.dumps(out))
$$ LANGUAGE plpython3u"""


def test_datum_spi_hands_numpy_arrays_to_postgres_and_catches_its_errors(backend):
    query(backend, "SET statement_timeout = '500ms'")
    query(backend, DATUMS)
    query(backend, "RESET statement_timeout")
    out = json.loads(backend.notices[-1].split("NOTICE:  ", 1)[1])
    assert out["rows"] == 1
    row = out["row"]
    assert row["i"] == "{1,-2,4611686018427387904}"
    assert row["f"] == out["want_f"]  # every float bit for bit: -0.0, a subnormal, NaN
    assert row["t"] == ["a", "", "naïve", "x" * 60, "y" * 200]
    assert (row["m"], row["dims"]) == ("{{0,1},{2,3},{4,5}}", "[1:3][1:2]")
    assert (row["e"], row["ne"]) == ("{}", 0)
    # each error raised as plpy raises it (its class, message and code), and the function went on
    assert [c[:2] for c in out["caught"]] == [
        ["DivisionByZero", "division by zero"],
        ["QueryCanceled", "canceling statement due to statement timeout"],
        ["InvalidTextRepresentation", 'malformed array literal: "x"']]
    assert "after" not in out and out["count"] == 1


# RowCursor: a query's rows into matrices by the compiled receiver, a chunk at a time: numbers (NULL as
# NaN), texts looked up (NULL, unknown), NULL ids counted; errors caught; a portal gone refused
ROWS = """DO $$
import json
import math
from sqlml.scoring import lookup_tables
from sqlml.server import pg_internals as p
assert p.rows_available()
table = lookup_tables.build({"a": 1.0, "naïve": 2.0, "": 3.0}, -1.0, -9.0)
sql = ("SELECT CASE WHEN g = 7 THEN NULL ELSE g * 10 END::int8, "
       "(CASE WHEN g % 4 = 0 THEN NULL ELSE g * 0.5 END)::float8, "
       "(ARRAY['a', 'naïve', '', NULL, 'zz'])[g % 5 + 1] FROM generate_series(1, 10) AS g")
columns = [(1, p.NUMBER_KIND, float("nan")), (2, p.TEXT_KIND, table), (1, p.NUMBER_KIND, float("nan"))]
cursor = p.RowCursor(sql, 3, columns)
out = {"chunks": []}
while True:
    n, matrix, ids, null_ids = cursor.fetch(4)
    out["chunks"].append([n, ids.tolist(), null_ids, [[None if math.isnan(v) else v for v in row]
                                                      for row in matrix.tolist()]])
    if n < 4:
        break
cursor.close()
failing = p.RowCursor("SELECT 1::int8, (1 / (g - 2))::float8 FROM generate_series(1, 3) AS g", 2,
                      [(1, p.NUMBER_KIND, 0.0)])
try:
    failing.fetch(10)
except plpy.SPIError as e:
    out["error"] = [type(e).__name__, str(e)]
failing.close()
try:  # a cursor whose portal went with a rolled-back subtransaction reads nothing, and closes as a no-op
    with plpy.subtransaction():
        gone = p.RowCursor("SELECT 1::int8", 1, [])
        raise RuntimeError("rolled back")
except RuntimeError:
    pass
try:
    gone.fetch(1)
except Exception as e:
    out["gone"] = [type(e).__name__, getattr(e, "sqlstate", None), str(e)]
gone.close()
again = p.RowCursor("SELECT 5::int8, 2.5::float8", 2, [(1, p.NUMBER_KIND, 0.0)])
out["after"] = again.fetch(1)[1].tolist()
again.close()
plpy.notice(json.dumps(out))
$$ LANGUAGE plpython3u"""


def test_row_cursor_writes_a_querys_rows_into_matrices_and_catches_its_errors(backend):
    query(backend, ROWS)
    out = json.loads(backend.notices[-1].split("NOTICE:  ", 1)[1])
    assert [c[0] for c in out["chunks"]] == [4, 4, 2]
    assert [c[2] for c in out["chunks"]] == [0, 1, 0]  # the 7th row's id is NULL
    ids = [i for c in out["chunks"] for i in c[1]]
    assert ids[:6] + ids[7:] == [10, 20, 30, 40, 50, 60, 80, 90, 100]
    numbers = [None if g % 4 == 0 else g * 0.5 for g in range(1, 11)]
    texts = {1: 2.0, 2: 3.0, 3: -9.0, 4: -1.0, 0: 1.0}  # naïve, '', NULL, zz (unknown), a
    assert [row for c in out["chunks"] for row in c[3]] == \
        [[numbers[g - 1], texts[g % 5], numbers[g - 1]] for g in range(1, 11)]
    assert out["error"] == ["DivisionByZero", "division by zero"]
    assert out["gone"][:2] == ["SqlmlError", "24000"] and "cursor is gone" in out["gone"][2]
    assert out["after"] == [[2.5]]  # and the session went on
