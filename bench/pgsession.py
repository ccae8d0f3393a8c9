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
