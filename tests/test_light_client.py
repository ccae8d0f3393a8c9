"""`pip install sqlml` is the light client: a fresh venv that already has pandas 2 (an application's
own pin) installs the package with real dependency resolution, gets the `sqlml` command and the
Python client, and none of the server's ML stack; the client then works against a real database."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import query

SERVER_ONLY = ("scikit-learn", "lightgbm", "onnxruntime", "skl2onnx", "onnxmltools", "scipy", "sqlglot")
CLIENT_SCRIPT = """
import sys, pandas, sqlml
ml = sqlml.connect(sys.argv[1])
frame = pandas.DataFrame({"x": [1.0, 5.0, 9.0]})
rows = ml.predict("light", frame)
print("pandas", pandas.__version__, "rows", len(rows), "increasing", rows[0]["prediction"] < rows[2]["prediction"])
print("models", [m["version"] for m in ml.models("light")])
"""


@pytest.fixture(scope="module")
def venv(wheel):
    root = Path(tempfile.mkdtemp(prefix="sqlml-light-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
        pip = [str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        # the application's pandas first
        subprocess.run(pip + ["pandas>=2,<3"], check=True, capture_output=True, timeout=600)
        done = subprocess.run(pip + [f"{wheel}[pandas]"], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]  # resolves beside pandas 2 (no ResolutionImpossible)
        yield root / "venv"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def installed(venv) -> dict[str, str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze",
                          "--disable-pip-version-check"], check=True, capture_output=True, text=True).stdout
    return dict(line.lower().split("==") for line in out.split() if "==" in line)


@pytest.mark.slow
def test_the_package_is_the_client_without_the_server_stack(venv):
    packages = installed(venv)
    assert packages["pandas"].startswith("2."), packages  # pip kept the application's pandas
    assert "psycopg2-binary" in packages and "sqlml" in packages
    assert not [p for p in SERVER_ONLY if p in packages], packages
    helped = subprocess.run([str(venv / "bin" / "sqlml"), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "train" in helped.stdout and "doctor" in helped.stdout


@pytest.mark.slow
def test_the_light_client_trains_and_scores_against_a_real_database(venv, dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, "CREATE TABLE light_data AS SELECT (i % 50)::float8 AS x, (2 * (i % 50) + i % 7)::float8 AS y "
                "FROM generate_series(1, 300) i")
    conn.close()
    trained = subprocess.run([str(venv / "bin" / "sqlml"), "train", "light", "light_data", "y",
                              "--algorithms", "linear", "--budget", "2 seconds", "--dsn", dsn],
                             capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    used = subprocess.run([str(venv / "bin" / "python"), "-c", CLIENT_SCRIPT, dsn], capture_output=True, text=True,
                          timeout=120)
    assert used.returncode == 0, used.stderr[-2000:]
    assert "pandas 2." in used.stdout and "rows 3 increasing True" in used.stdout, used.stdout
    assert "models [1]" in used.stdout, used.stdout
    report = subprocess.run([str(venv / "bin" / "sqlml"), "report", "light", "--dsn", dsn], capture_output=True,
                            text=True, timeout=60)
    assert report.returncode == 1 and "pip install 'sqlml[report]'" in report.stderr  # an extra, said so
