"""Every psql script in examples/ runs cleanly, as a user would run it, on a fresh database with
the sample tables: ``psql -X -v ON_ERROR_STOP=1 -f examples/<name>.sql``. The scripts check their
own results (failed checks raise, and ON_ERROR_STOP turns that into a non-zero exit)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg2
import pytest

from sqlml import samples
from sqlml.install import pg_bindir
from tests.conftest import new_database

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.sql"))


@pytest.fixture(scope="module")
def sample_dsn(cluster):
    dsn = new_database(cluster, "examples")
    conn = psycopg2.connect(dsn)
    samples.load_all(conn)
    conn.close()
    return dsn


def psql(dsn: str, script: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(pg_bindir(), "psql"), "-X", "-v", "ON_ERROR_STOP=1", dsn, "-f", str(script)],
                          capture_output=True, text=True, timeout=timeout)


def test_there_are_examples():
    assert {"demo.sql", "lifecycle.sql", "batch_scoring.sql"} <= {p.name for p in EXAMPLES}


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(sample_dsn, script):
    r = psql(sample_dsn, script)
    assert r.returncode == 0, f"{script.name} failed (exit {r.returncode}):\n{r.stderr[-3000:]}"
    assert "ERROR" not in r.stderr


def test_a_failing_check_stops_the_script(sample_dsn, tmp_path):
    """The scripts' checks can fail: a false check exits non-zero with its message."""
    script = tmp_path / "bad.sql"
    script.write_text("CREATE FUNCTION pg_temp.check(ok boolean, message text) RETURNS void LANGUAGE plpgsql AS $$\n"
                      "BEGIN IF ok IS NOT TRUE THEN RAISE EXCEPTION 'check failed: %', message; END IF; END $$;\n"
                      "SELECT pg_temp.check((SELECT count(*) FROM iris) = 151, 'iris has 150 rows');\n"
                      "SELECT 'not reached';\n")
    r = psql(sample_dsn, script)
    assert r.returncode == 3 and "check failed: iris has 150 rows" in r.stderr and "not reached" not in r.stdout
