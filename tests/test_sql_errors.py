"""Errors as a SQL user sees them: no Python traceback in CONTEXT, through psycopg2 and JDBC.

The same failing calls run with the setting sqlml.traceback off (the default) and on: the
SQLSTATE, message and hint are identical; only the CONTEXT differs, by PL/Python's traceback.
Also the NOTICEs of a training that a SQL user reads: one accurate line about an id column, and
the search's split in words.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import pytest

from tests.conftest import query, sql_error

# (case, SQL): errors raised by sqlml's checks, by SPI inside sqlml, and by scoring
FAILING = [
    ("argument check", "SELECT * FROM sqlml.train('no spaces!', 'e', 'y', time_budget => '2 seconds')"),
    ("SPI error inside sqlml", "SELECT * FROM sqlml.train('p', 'no_such_table', 'y', time_budget => '2 seconds')"),
    ("scoring", "SELECT sqlml.predict('no_such_project', '{\"x\": 1}'::jsonb)"),
]


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, "CREATE TABLE e AS SELECT i::float8 AS x, (i % 3)::float8 AS y FROM generate_series(1, 50) i")
    yield conn
    conn.close()


def diag(conn, sql, traceback: bool):
    query(conn, f"SET sqlml.traceback = {'on' if traceback else 'off'}")
    e = sql_error(conn, sql)
    query(conn, "RESET sqlml.traceback")
    return e.pgcode, e.diag.message_primary, e.diag.message_hint, e.diag.message_detail, e.diag.context or ""


@pytest.mark.parametrize("case,sql", FAILING, ids=[c[0] for c in FAILING])
def test_context_has_no_traceback_unless_asked(db, case, sql):
    code, message, hint, detail, context = diag(db, sql, traceback=False)
    assert message.startswith("sqlml: ") and "Traceback" not in context and "line " not in context, context
    assert 'PL/Python function "' in context  # PostgreSQL's own context line stays: which function failed
    on = diag(db, sql, traceback=True)
    assert on[:4] == (code, message, hint, detail)
    assert on[4].startswith("Traceback (most recent call last):") and on[4].endswith(context), on[4]


def test_session_default_hides_and_other_plpython_functions_keep_theirs(db):
    e = sql_error(db, FAILING[0][1])  # no SET at all: the default
    assert e.pgcode == "22023" and "Traceback" not in (e.diag.context or "")
    query(db, """CREATE FUNCTION mine() RETURNS int LANGUAGE plpython3u AS $$
def inner():
    raise ValueError("my own bug")
return inner()
$$""")
    e = sql_error(db, "SELECT mine()")
    assert "Traceback (most recent call last):" in e.diag.context  # only sqlml's errors are changed


JAVA_PROGRAM = """
import java.sql.*;
public class Errors {
    public static void main(String[] a) throws Exception {
        try (Connection c = DriverManager.getConnection(a[0]); Statement s = c.createStatement()) {
            s.executeQuery(a[1]);
            System.out.println("no error");
        } catch (SQLException e) {
            System.out.println("SQLSTATE " + e.getSQLState());
            System.out.println(e.getMessage());
        }
    }
}
"""
JDBC_JAR = Path("/usr/share/java/postgresql.jar")


@pytest.mark.skipif(not (shutil.which("java") and JDBC_JAR.exists()),
                    reason="needs java and libpostgresql-jdbc-java (scripts/system-deps.sh installs them)")
def test_jdbc_message_is_the_sql_error_without_traceback(db, dsn, tmp_path):
    u = urlparse(dsn)
    url = f"jdbc:postgresql://{u.hostname}:{u.port}{u.path}?user={u.username}"
    (tmp_path / "Errors.java").write_text(JAVA_PROGRAM)
    out = subprocess.run(["java", "-cp", str(JDBC_JAR), str(tmp_path / "Errors.java"), url, FAILING[0][1]],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "SQLSTATE 22023" in out.stdout and 'sqlml: invalid project name "no spaces!"' in out.stdout, out.stdout
    assert "Hint: use 1-63 letters" in out.stdout and "Traceback" not in out.stdout, out.stdout


def test_training_notices_say_each_thing_once_and_plainly(db):
    query(db, "CREATE TABLE with_id AS SELECT i AS id, (i % 13)::float8 AS x, ((i % 13) * 2.0 + i % 3)::float8 AS y "
              "FROM generate_series(1, 400) i")
    del db.notices[:]
    query(db, "SELECT * FROM sqlml.train('ids', 'with_id', 'y', algorithms => '{linear}', time_budget => '2 seconds')")
    about_id = [n for n in db.notices if '"id"' in n]
    assert len(about_id) == 1 and "identifies rows" in about_id[0] and "sqlml left it out" in about_id[0], db.notices
    search = next(n for n in db.notices if "searching" in n)
    assert "320 training rows" in search and "80 other rows held out" in search, search
