"""Fixtures: one throwaway PostgreSQL cluster for the whole session (never the dev cluster),
a fresh database with the extension for each test module, and helpers to run SQL.

The cluster lives in a temporary directory, listens on a free port on 127.0.0.1 and runs as the
``postgres`` OS user when the suite runs as root.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from sqlml.devcluster import throwaway
from sqlml.install import CHECKOUT


def reachable_by_server(path) -> Path:
    """Let the server's OS user reach ``path`` (pytest's temporary directories are private): read
    and search permission for others on it and on its parents below the temporary root, never on
    the root itself (/tmp keeps its sticky, world-writable mode)."""
    root = Path(tempfile.gettempdir()).resolve()
    path = Path(path).resolve()
    for p in [path, *path.parents]:
        if root not in p.parents:
            break
        p.chmod(p.stat().st_mode | 0o055)
    return path


@pytest.fixture(scope="session")
def cluster():
    """The session's cluster: this checkout's extension files, this venv's code."""
    c = throwaway("sqlml-test-")
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def wheel() -> Path:
    """A wheel of this checkout (``pip wheel --no-deps``), built once for the tests that install it."""
    root = Path(tempfile.mkdtemp(prefix="sqlml-wheel-"))
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                        "-w", str(root), str(CHECKOUT)], check=True, capture_output=True, timeout=300)
        yield next(root.glob("sqlml-*.whl"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def new_database(cluster, prefix="t") -> str:
    """A fresh database with CREATE EXTENSION sqlml; returns its DSN."""
    return cluster.create_database(f"{prefix}_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def dsn(cluster):
    return new_database(cluster)


@pytest.fixture
def conn(dsn):
    c = psycopg2.connect(dsn)
    c.autocommit = True
    yield c
    c.close()


def query(conn, sql, params=None):
    """Run ``sql``; return all rows (list of tuples), or [] for statements without a result."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def scalar(conn, sql, params=None):
    rows = query(conn, sql, params)
    return rows[0][0] if rows else None


def reconnect_after_crash(old, dsn, timeout=60):
    """A connection once the server has restarted all backends (``old`` is one of the ended ones)."""
    deadline = time.monotonic() + timeout
    while True:  # first the crash must have reached the old connection, or we might connect too early
        try:
            query(old, "SELECT 1")
        except psycopg2.Error:
            break
        assert time.monotonic() < deadline, "the crash did not end the other backends"
        time.sleep(0.2)
    while True:
        try:
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            query(conn, "SELECT 1")
            return conn
        except psycopg2.OperationalError:
            assert time.monotonic() < deadline, "the server did not come back after the crash"
            time.sleep(0.5)


def sql_error(conn, sql, params=None) -> psycopg2.Error:
    """Run ``sql``, which must fail; return the error (with .pgcode and .diag)."""
    with pytest.raises(psycopg2.Error) as info:
        query(conn, sql, params)
    return info.value
