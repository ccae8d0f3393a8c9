"""The PostgreSQL internals sqlml reads through ctypes: read right inside a real backend, and
refused on a major version they were not checked against."""

from __future__ import annotations

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
