"""What every benchmark does with a database: connect in autocommit, run a statement, set a governor
setting for the whole cluster. Imported by the scripts beside it (their directory is on sys.path)."""

from __future__ import annotations

import psycopg2


def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


def run(conn, sql, params=None):
    """Run ``sql``; all rows, or [] for a statement without a result."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def configure(dsn, **values):
    """``sqlml.<name> = value`` in this session and, through ALTER SYSTEM, for new ones."""
    conn = connect(dsn)
    for name, value in values.items():
        run(conn, f"SET sqlml.{name} = '{value}'")
        run(conn, f"ALTER SYSTEM SET sqlml.{name} = '{value}'")
    conn.close()


def fresh_database(dsn, name):
    """A new database ``name`` with sqlml installed, on ``dsn``'s server (dropped first if it is
    there); returns its DSN. A training warm-starts from the trainings of its database
    (sqlml.server.training.similar_trainings): a database of its own sees no other's history."""
    from psycopg2.extensions import make_dsn

    from sqlml import install

    drop_database(dsn, name)
    conn = connect(dsn)
    try:
        run(conn, f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    fresh = make_dsn(dsn, dbname=name)
    install.install_database(fresh)
    return fresh


def drop_database(dsn, name):
    """DROP DATABASE ``name`` on ``dsn``'s server, if it is there (its sessions ended first)."""
    conn = connect(dsn)
    try:
        run(conn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()
