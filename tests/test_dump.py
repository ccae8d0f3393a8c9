"""Nothing lost: a database with sqlml projects survives pg_dump / pg_restore into a new cluster,
and its models predict the same values there; then uninstalling leaves no roles behind.
"""

from __future__ import annotations

import os
import subprocess

import psycopg2
import pytest

from sqlml.devcluster import throwaway
from sqlml.install import ROLES, pg_bindir, uninstall_database
from tests.conftest import query, scalar

pytestmark = pytest.mark.slow

T = "algorithms => '{linear}', time_budget => '2 seconds'"
REGISTRY = ("projects", "models", "deployments", "trials", "grants", "audit_log")


def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def source(dsn):
    conn = connect(dsn)
    query(conn, """
        CREATE TABLE houses AS
        SELECT i AS id, (i % 9)::float8 AS rooms, (ARRAY['north', 'south', 'east'])[i % 3 + 1] AS area,
               (i % 9 * 1000 + i % 3 * 250 + i % 17)::float8 AS price,
               CASE WHEN i % 9 > 4 THEN 'large' ELSE 'small' END AS size
        FROM generate_series(1, 400) AS i""")
    query(conn, f"SELECT * FROM sqlml.train('price', 'SELECT rooms, area, price FROM houses', 'price', {T})")
    query(conn, f"""SELECT * FROM sqlml.train('price', 'SELECT rooms, area, price FROM houses', 'price', {T},
                                              options => '{{"seed": 5, "deploy": "never"}}')""")
    query(conn, "SELECT * FROM sqlml.deploy('price', version => 2)")
    query(conn, "SELECT * FROM sqlml.deploy('price', 'rollback')")
    query(conn, f"SELECT * FROM sqlml.train('size', 'SELECT rooms, area, size FROM houses', 'size', {T})")
    query(conn, "SELECT sqlml.grant('size', 'sqlml_user', 'predict')")
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    c = throwaway("sqlml-restore-")
    yield c
    c.destroy()


def predictions(conn):
    return {
        "price": query(conn, "SELECT id, sqlml.predict('price', h) FROM houses h ORDER BY id"),
        "price@2": query(conn, "SELECT id, sqlml.predict('price@2', h) FROM houses h ORDER BY id"),
        "size": query(conn, "SELECT id, sqlml.predict_label('size', h), sqlml.predict_proba('size', h) "
                            "FROM houses h ORDER BY id"),
    }


def registry(conn):
    return {
        "models": query(conn,
                        "SELECT id, project, version, sha256, md5(onnx), created_by FROM sqlml.models ORDER BY id"),
        "deployed": query(conn, "SELECT project, version, strategy FROM sqlml.deployed ORDER BY project"),
        "deployments": query(conn,
                             "SELECT id, project, model_id, version, strategy FROM sqlml.deployments ORDER BY id"),
        "counts": [scalar(conn, f"SELECT count(*) FROM sqlml.{t}") for t in REGISTRY],
        "grants": query(conn, "SELECT project, grantee, privilege FROM sqlml.grants ORDER BY 1, 2, 3"),
        "last_version": query(conn, "SELECT name, last_version FROM sqlml.projects ORDER BY name"),
    }


def test_every_sqlml_table_is_dumped(source):
    undumped = query(source, """
        SELECT c.relname FROM pg_class c
        WHERE c.relnamespace = 'sqlml'::regnamespace AND c.relkind IN ('r', 'p')
          AND c.oid <> ALL (SELECT unnest(extconfig) FROM pg_extension WHERE extname = 'sqlml')""")
    assert undumped == [], ("pg_dump would lose these tables' rows: add "
                            "SELECT pg_catalog.pg_extension_config_dump('sqlml.<table>', '') (and its id sequence)")


def test_dump_and_restore_into_a_new_cluster_predicts_the_same(source, dsn, target, tmp_path):
    before, expected = registry(source), predictions(source)
    dump = tmp_path / "sqlml.dump"
    subprocess.run([os.path.join(pg_bindir(), "pg_dump"), "-Fc", "-f", str(dump), dsn], check=True,
                   capture_output=True, text=True)
    restored_dsn = target.create_database("restored", extension=False)
    out = subprocess.run([os.path.join(pg_bindir(), "pg_restore"), "--exit-on-error", "-d", restored_dsn, str(dump)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    restored = connect(restored_dsn)
    try:
        assert registry(restored) == before
        assert predictions(restored) == expected
        assert {r for (r,) in query(restored,
                                    "SELECT rolname FROM pg_roles WHERE rolname LIKE 'sqlml\\_%'")} == set(ROLES)
        # the identity sequences came along: new rows do not collide with restored ones
        version, deployed = query(restored, f"SELECT version, deployed FROM sqlml.train('price', "
                                            f"'SELECT rooms, area, price FROM houses', 'price', {T}, "
                                            """options => '{"force": true}')""")[0]
        assert version == 3
        assert scalar(restored, "SELECT max(id) FROM sqlml.models") > max(m[0] for m in before["models"])
        query(restored, "SELECT * FROM sqlml.deploy('size', 'most_recent')")
        assert scalar(restored, "SELECT count(*) FROM sqlml.audit_log") == before["counts"][-1] + 2 + deployed
    finally:
        restored.close()


def test_uninstall_drops_the_roles_only_when_no_database_uses_them(target):
    other = target.create_database("other")
    restored = target.dsn("restored")
    assert uninstall_database(restored) is False  # "other" still has sqlml
    assert scalar(connect(restored), "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),)) == 3
    assert uninstall_database(other) is True
    conn = connect(restored)
    try:
        assert scalar(conn, "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),)) == 0
        assert scalar(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'sqlml'") == 0
    finally:
        conn.close()
