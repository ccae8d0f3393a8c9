"""Fixtures: one throwaway PostgreSQL cluster for the whole session (never the dev cluster),
a fresh database with the extension for each test module, and helpers to run SQL and to wait.

The cluster lives in a temporary directory, listens on a free port on 127.0.0.1 and runs as the
``postgres`` OS user when the suite runs as root.

`make test` runs the suite on several pytest-xdist workers (``-n``, ``--dist loadfile``). Each
worker is a process of its own, so it has its own session: its own private PostgreSQL installation
and its own cluster on its own free port (and its own ``wheel``, built from a copy of the checkout).
A test module runs whole on one worker, in order: its module-scoped database and trained models are
made once, and its tests may build on each other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from sqlml import samples
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


# The test modules that take longest (a whole-suite --durations run), started first so that the last
# ones a worker takes are short. Order only: a module missing here costs time, never a result.
LONGEST_FIRST = ("test_governor", "test_onnx_export", "test_docker", "test_light_client", "test_spark",
                 "test_dbt", "test_search_policy", "test_upgrade", "test_explain_core", "test_examples",
                 "test_retrain_cron", "test_model_card", "test_boosting_families", "test_security")


def pytest_collection_modifyitems(config, items):
    """The longest modules first: `make test` passes ``--dist loadfile --no-loadscope-reorder``, so
    xdist hands out whole modules in this order (a stable sort: each module's tests keep theirs)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items[:] = sorted(items, key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))


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
        # from a copy: the build writes build/ and *.egg-info beside the sources, and another xdist
        # worker (or another test run of this checkout) may be building too
        source = root / "source"
        shutil.copytree(CHECKOUT, source, ignore=shutil.ignore_patterns(
            ".sqlml", ".git", "__pycache__", "build", "*.egg-info", ".ruff_cache", ".pytest_cache"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                        "-w", str(root), str(source)], check=True, capture_output=True, timeout=300)
        yield next(root.glob("sqlml-*.whl"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def new_database(cluster, prefix="t") -> str:
    """A fresh database with CREATE EXTENSION sqlml; returns its DSN."""
    return cluster.create_database(f"{prefix}_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def dsn(cluster):
    return new_database(cluster)


@pytest.fixture(scope="module")
def db(dsn):
    """A connection to the module's database with the scikit-learn samples loaded (``sqlml.samples``);
    a module that needs more tables defines a ``db`` of its own."""
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.autocommit = True
    yield conn
    conn.close()


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


def wait_until(condition, what: str, timeout: float = 180, interval: float = 0.1):
    """Poll ``condition()`` until it returns a true value, and return that value; fail the test
    naming ``what`` after ``timeout`` seconds. The timeout bounds what takes seconds on a quiet
    machine (a cold backend, a first trial) and is generous for a busy one: it is never what a
    test asserts."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(interval)


def niceness(pid) -> dict[int, int]:
    """{thread id: nice value} of a backend's threads (field 19 of /proc/<pid>/task/<tid>/stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        out[int(tid)] = int(stat.rsplit(")", 1)[1].split()[16])
    return out


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
