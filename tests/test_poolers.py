"""sqlml behind pgbouncer in transaction pooling mode, through psycopg2: every statement may land
on another server connection, and sqlml keeps no session state, so training, scoring and errors
work as they do directly; a setting given with SET LOCAL stays in its transaction."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import pytest

from sqlml.devcluster import as_user, free_port, service_user
from tests.conftest import query, sql_error

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@pytest.fixture(scope="module")
def pooled(dsn):
    """The DSN of a pgbouncer (transaction pooling, 2 server connections) in front of ``dsn``."""
    if not os.path.exists(PGBOUNCER):
        pytest.skip("pgbouncer is not installed (scripts/system-deps.sh installs it)")
    u = urlparse(dsn)
    root = Path(tempfile.mkdtemp(prefix="sqlml-pgbouncer-"))
    port = free_port()
    (root / "users.txt").write_text(f'"{u.username}" ""\n')
    (root / "pgbouncer.ini").write_text(f"""[databases]
* = host={u.hostname} port={u.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root}/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 20
ignore_startup_parameters = extra_float_digits
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
""")
    shutil.chown(root, service_user())
    for f in root.iterdir():
        shutil.chown(f, service_user())
    started = as_user(service_user(), [PGBOUNCER, "-d", str(root / "pgbouncer.ini")], timeout=30)
    assert started.returncode == 0, started.stderr
    pooled_dsn = f"postgresql://{u.username}@127.0.0.1:{port}{u.path}"
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg2.connect(pooled_dsn).close()
            break
        except psycopg2.OperationalError:
            assert time.monotonic() < deadline, (root / "pgbouncer.log").read_text()
    yield pooled_dsn
    os.kill(int((root / "pgbouncer.pid").read_text()), 15)
    shutil.rmtree(root, ignore_errors=True)


def test_train_and_score_through_transaction_pooling(dsn, pooled):
    direct = psycopg2.connect(dsn)
    direct.autocommit = True
    query(direct, "CREATE TABLE pooled AS SELECT i AS id, (i % 11)::float8 AS x, ((i % 11) * 3.0 + i % 4)::float8 AS y "
                  "FROM generate_series(1, 300) i")
    clients = [psycopg2.connect(pooled) for _ in range(3)]  # more clients than server connections
    for c in clients:
        c.autocommit = True
    try:
        a, b, c = clients
        assert query(a, "SELECT version, deployed FROM sqlml.train('pooled', 'pooled', 'y', algorithms => '{linear}', "
                        "time_budget => '2 seconds')") == [(1, True)]
        per_row = dict(query(b, "SELECT id, sqlml.predict('pooled', p) FROM pooled p"))
        batch = dict(query(c, "SELECT id, prediction FROM sqlml.predict_batch('pooled', 'pooled', 'id', NULL::int)"))
        assert len(per_row) == 300 and per_row == pytest.approx(batch)
        assert query(a, "SELECT version FROM sqlml.deploy('pooled', 'most_recent')") == [(1,)]
        # a setting for one transaction: SET LOCAL (a plain SET would stay on a server connection other clients get)
        a.autocommit = False
        query(a, "SET LOCAL sqlml.traceback = on")
        assert "Traceback" in sql_error(a, "SELECT sqlml.predict('nope', '{}'::jsonb)").diag.context
        a.rollback()
        a.autocommit = True
        for client in clients:
            error = sql_error(client, "SELECT sqlml.predict('nope', '{}'::jsonb)")
            assert "Traceback" not in (error.diag.context or "")
    finally:
        for client in clients:
            client.close()
        direct.close()
