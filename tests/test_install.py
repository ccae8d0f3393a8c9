"""The foundation: extension install, reinstall, uninstall, doctor, a second database, the dev cluster."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest

from sqlml import __version__
from sqlml.devcluster import free_port, throwaway
from tests.conftest import new_database, query, reachable_by_server, scalar, sql_error

SQLML = [sys.executable, "-m", "sqlml.cli"]


def cli(*args, env=None, check=True):
    out = subprocess.run(SQLML + list(args), capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and out.returncode != 0:
        raise AssertionError(f"sqlml {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def test_version_answers_inside_the_server(conn):
    assert scalar(conn, "SELECT sqlml.version()") == __version__


def test_server_stack_imports(conn):
    report = scalar(conn, "SELECT sqlml.doctor()")
    assert report["python"]["version"].startswith("3.")
    bad = [p for p in report["packages"] if not p["ok"]]
    assert not bad, bad
    assert {p["package"] for p in report["packages"]} >= {"scikit-learn", "onnxruntime", "lightgbm", "sqlglot"}


def test_reinstall_and_uninstall_leave_nothing_behind(cluster):
    dsn = new_database(cluster, "reinstall")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        query(conn, "DROP EXTENSION sqlml CASCADE")
        leftovers = """SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'sqlml')
                            + (SELECT count(*) FROM pg_proc WHERE proname LIKE '%sqlml%')
                            + (SELECT count(*) FROM pg_class WHERE relname LIKE 'sqlml%')"""
        assert scalar(conn, leftovers) == 0
        query(conn, "CREATE EXTENSION sqlml CASCADE")
        assert scalar(conn, "SELECT sqlml.version()") == __version__
        cli("uninstall", "--dsn", dsn)
        assert scalar(conn, leftovers) == 0
        cli("install", "--no-files", "--dsn", dsn)
        assert scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'sqlml'") == __version__
    finally:
        conn.close()


def test_second_database_in_the_same_cluster(cluster, dsn):
    other = new_database(cluster, "second")
    for d in (dsn, other):
        with psycopg2.connect(d) as c, c.cursor() as cur:
            cur.execute("SELECT sqlml.version(), current_database()")
            assert cur.fetchone()[0] == __version__


def test_doctor_cli_all_good(dsn):
    out = cli("doctor", "--dsn", dsn)
    assert "all good" in out.stdout
    report = __import__("json").loads(cli("doctor", "--dsn", dsn, "--json").stdout)
    assert report["problems"] == [] and report["server"]["sqlml"] == __version__


@pytest.fixture(scope="module")
def site_without_lightgbm(tmp_path_factory):
    """A real site-packages that lacks one package: every entry of ours but lightgbm's, linked."""
    import sysconfig

    ours = Path(sysconfig.get_paths()["purelib"])
    site = tmp_path_factory.mktemp("site")
    for entry in ours.iterdir():
        if not entry.name.lower().startswith("lightgbm"):
            (site / entry.name).symlink_to(entry)
    return reachable_by_server(site)


def test_doctor_names_a_missing_server_package_and_the_fix(site_without_lightgbm, tmp_path_factory):
    broken = throwaway("sqlml-broken-", site_packages=str(site_without_lightgbm))
    try:
        dsn = broken.create_database("broken")
        out = cli("doctor", "--dsn", dsn, check=False)
        assert out.returncode == 1, out.stdout
        assert "server package lightgbm" in out.stdout
        assert "pip install 'lightgbm==" in out.stdout
    finally:
        broken.destroy()


def test_dev_cluster_up_is_idempotent_and_dsn_works(tmp_path):
    reachable_by_server(tmp_path)
    env = {"SQLML_HOME": str(tmp_path), "SQLML_DEV_PORT": str(free_port())}
    try:
        cli("dev", "up", env=env)
        cli("dev", "up", env=env)
        dsn = cli("dev", "dsn", env=env).stdout.strip()
        with psycopg2.connect(dsn) as c, c.cursor() as cur:
            cur.execute("SELECT sqlml.version()")
            assert cur.fetchone()[0] == __version__
        assert cli("dev", "status", env=env).returncode == 0
    finally:
        cli("dev", "down", env=env, check=False)
    assert cli("dev", "status", env=env, check=False).returncode == 1


GUARDED = "0.0.0-unsupported"  # a version name of its own: the session's scripts stay as they are


@pytest.fixture
def scripts_for_another_postgresql(cluster, monkeypatch):
    """This version's install and upgrade scripts, built as if sqlml supported PostgreSQL 14 only,
    under a version name of their own in the session installation's extension directory."""
    from sqlml import extension, install

    monkeypatch.setattr(extension, "SUPPORTED_MAJORS", (14,))
    src, dest = install.sql_dir(), install.extension_dir()
    source = (src / "sqlml.sql").read_text()
    migration = (src / "upgrades" / f"sqlml--0.1.0--{__version__}.sql").read_text()
    files = {dest / f"sqlml--{GUARDED}.sql": extension.install_script(source, GUARDED),
             dest / f"sqlml--0.1.0--{GUARDED}.sql": extension.upgrade_script(source, migration, "0.1.0", GUARDED)}
    for path, text in files.items():
        path.write_text(text)
        path.chmod(0o644)
    yield
    for path in files:
        path.unlink()


def test_the_scripts_refuse_a_postgresql_major_they_do_not_support(cluster, scripts_for_another_postgresql):
    """The version guard, run by the server itself: CREATE and ALTER EXTENSION fail with a clear
    error naming the supported versions, and leave nothing behind."""
    conn = psycopg2.connect(cluster.create_database(f"guard_{uuid.uuid4().hex[:8]}", extension=False))
    conn.autocommit = True
    try:
        for statement, leaves in [(f"CREATE EXTENSION sqlml VERSION '{GUARDED}' CASCADE", None),
                                  (f"ALTER EXTENSION sqlml UPDATE TO '{GUARDED}'", "0.1.0")]:
            if leaves:
                query(conn, f"CREATE EXTENSION sqlml VERSION '{leaves}' CASCADE")
            e = sql_error(conn, statement)
            assert e.pgcode == "0A000", e
            assert e.diag.message_primary.startswith(f"sqlml {GUARDED} does not support PostgreSQL 15")
            assert e.diag.message_hint == (f"sqlml {GUARDED} is tested on PostgreSQL 14; "
                                           "install it on a server of a supported version")
            assert scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'sqlml'") == leaves
    finally:
        conn.close()


@pytest.mark.parametrize("created, available, package, problem, fix", [
    ("0.2.0", "0.2.0", "0.2.0", None, None),
    ("0.1.0", "0.2.0", "0.2.0", 'extension sqlml 0.1.0 in database "d" is older than the sqlml 0.2.0',
     "sqlml install --no-files --dsn ..."),
    ("0.10.0", "0.9.0", "0.9.0", "is newer than the sqlml 0.9.0", "pip install sqlml==0.10.0"),
    ("0.1.0", "0.1.0", "0.2.0", "extension files are sqlml 0.1.0 but its Python package is sqlml 0.2.0",
     "run `sqlml install --dsn ...` on the database server"),
])
def test_doctor_says_how_to_bring_the_extension_to_the_package_version(created, available, package, problem, fix):
    from sqlml.cli.admin import _extension_version_problems

    found = _extension_version_problems(created, available, package, "d")
    assert [(problem in p["problem"], fix in p["fix"]) for p in found] == ([] if problem is None else [(True, True)])
