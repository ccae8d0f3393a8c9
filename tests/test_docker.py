"""docker/: what can be checked without a Docker engine (none runs here).

- The Dockerfile copies only files that exist and runs the tested steps: scripts/system-deps.sh
  with SQLML_SERVER_ONLY=1, and `sqlml install`; compose.yaml builds that Dockerfile.
- SQLML_SERVER_ONLY=1 stops system-deps.sh after the server's packages.
- The image's step 2 for real, minus the copy into the server's extension directory: a wheel of
  this checkout installed into a fresh venv finds the extension files in <prefix>/share/sqlml, and
  its `make_venv` (what `sqlml install --files-only` runs) builds a server venv from which a
  PostgreSQL server creates the extension and passes `sqlml doctor`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg2
import pytest

from sqlml.devcluster import Cluster, free_port, service_user
from sqlml.install import CHECKOUT, server_python

DOCKER = CHECKOUT / "docker"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ",
                  "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.M)]


def test_dockerfile_copies_what_exists_and_runs_the_tested_steps():
    steps = instructions(DOCKER / "Dockerfile")
    assert steps[0] == ("FROM", "postgres:15-bookworm")
    for kind, args in steps:
        if kind == "COPY":
            *sources, _ = args.split()
            for s in sources:
                assert (CHECKOUT / s).exists(), f"COPY {s}: no such file in the repository"
                ignored = (CHECKOUT / ".dockerignore").read_text().split()
                assert s.split("/")[0] not in ignored, f"COPY {s} is excluded by .dockerignore"
    runs = " ".join(args for kind, args in steps if kind == "RUN")
    assert "SQLML_SERVER_ONLY=1" in runs and "scripts/system-deps.sh" in runs
    assert "sqlml install --files-only --venv /opt/sqlml/venv" in runs
    init = (DOCKER / "initdb-sqlml.sh").read_text()
    assert "sqlml install --no-files" in init and "sqlml doctor" in init
    assert os.access(DOCKER / "initdb-sqlml.sh", os.X_OK)
    compose = (DOCKER / "compose.yaml").read_text()
    assert "dockerfile: docker/Dockerfile" in compose and "context: .." in compose


@pytest.mark.skipif(os.geteuid() != 0, reason="system-deps.sh installs packages: root (CI runs as root)")
def test_system_deps_server_only_stops_after_the_server_packages():
    r = subprocess.run(["bash", str(CHECKOUT / "scripts" / "system-deps.sh")],
                       env={**os.environ, "SQLML_SERVER_ONLY": "1"},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "SQLML_SERVER_ONLY" in r.stdout and "JDBC" not in r.stdout


@pytest.mark.slow
def test_a_wheel_install_makes_a_working_server_venv(wheel):
    root = Path(tempfile.mkdtemp(prefix="sqlml-docker-"))
    os.chmod(root, 0o755)
    try:
        py = server_python()
        subprocess.run([py, "-m", "venv", str(root / "cli")], check=True, timeout=120)
        subprocess.run([str(root / "cli" / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                       check=True, capture_output=True, timeout=600)
        out = subprocess.run(
            [str(root / "cli" / "bin" / "python"), "-c",
             "import sys; from pathlib import Path; from sqlml import install\n"
             "print(install.sql_dir())\n"
             "install.make_venv(Path(sys.argv[1]), editable=False)\n"
             "print(install.site_packages(Path(sys.argv[1])))", str(root / "venv")],
            check=True, capture_output=True, text=True, timeout=900, cwd=root).stdout.split()  # not the checkout
        sql_dir, site = Path(out[0]), out[-1]
        assert sql_dir == root / "cli" / "share" / "sqlml"
        assert {p.name for p in sql_dir.iterdir()} >= {"sqlml.sql", "sqlml_boot.py", "sqlml--0.1.0.sql", "upgrades"}
        # byte-compiled for the server's interpreter: a new backend does not compile sqlml's sources
        assert list((Path(site) / "sqlml" / "server" / "__pycache__").glob("predicting.cpython-*.pyc"))

        state = root / "cluster"
        state.mkdir()
        shutil.chown(state, service_user())
        cluster = Cluster(state, port=free_port(), environment={"SQLML_SITE_PACKAGES": site})
        cluster.start()
        try:
            dsn = cluster.create_database("from_wheel")
            with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT sqlml.doctor()")
                report = cur.fetchone()[0]
            assert report["location"].startswith(site)  # the server imports the venv the wheel made
            assert all(p["ok"] for p in report["packages"]), report["packages"]
        finally:
            cluster.destroy()
    finally:
        shutil.rmtree(root, ignore_errors=True)
