"""predict_batch with id_type keeps the id's type: the result joins back without a cast, and
pandas reads integer ids as integers (psycopg2 + pandas.read_sql, as a notebook would)."""

from __future__ import annotations

import warnings

import psycopg2
import pytest

from tests.conftest import query, sql_error


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, """
        CREATE TABLE cust AS
        SELECT i AS id, (i::bigint * 10000000000) AS big_id, md5(i::text)::uuid AS uid, 'c-' || i AS code,
               (i % 17)::float8 AS x, ((i % 17) * 1.5 + i % 4)::float8 AS y
        FROM generate_series(1, 400) i;
        SELECT * FROM sqlml.train('typed', 'SELECT x, y FROM cust', 'y', algorithms => '{linear}',
                                  time_budget => '2 seconds');
    """)
    yield conn
    conn.close()


@pytest.mark.parametrize("column,id_type,pg_type", [("id", "NULL::int", "integer"), ("big_id", "NULL::int8", "bigint"),
                                                    ("uid", "NULL::uuid", "uuid"), ("code", "NULL::text", "text")])
def test_ids_come_back_in_their_type_and_join_without_a_cast(db, column, id_type, pg_type):
    rows = query(db, f"""SELECT pg_typeof(b.id)::text, count(*),
                                count(*) FILTER (WHERE b.prediction = sqlml.predict('typed', c))
                         FROM sqlml.predict_batch('typed', 'cust', %s, {id_type}) b JOIN cust c ON b.id = c.{column}
                         GROUP BY 1""", (column,))
    assert rows == [(pg_type, 400, 400)]


def test_the_text_form_still_answers(db):
    assert query(db, "SELECT pg_typeof(id)::text, count(*) FROM sqlml.predict_batch('typed', 'cust', 'id') "
                     "GROUP BY 1") == [("text", 400)]


def test_pandas_reads_integer_ids(dsn, db):
    pd = pytest.importorskip("pandas")
    conn = psycopg2.connect(dsn)
    try:
        with warnings.catch_warnings():  # pandas prefers SQLAlchemy but reads a DBAPI2 connection
            warnings.simplefilter("ignore", UserWarning)
            frame = pd.read_sql("SELECT * FROM sqlml.predict_batch('typed', 'cust', 'id', NULL::int) ORDER BY id", conn)
            table = pd.read_sql("SELECT id, y FROM cust", conn)
    finally:
        conn.close()
    assert frame["id"].dtype.kind == "i" and frame["prediction"].dtype.kind == "f"
    assert len(frame.merge(table, on="id")) == 400  # pandas joins on the same dtype


def test_an_id_type_that_does_not_fit_the_column_is_a_clear_error(db):
    e = sql_error(db, "SELECT * FROM sqlml.predict_batch('typed', 'cust', 'code', NULL::int)")
    assert e.pgcode == "22P02" and 'invalid input syntax for type integer: "c-' in e.diag.message_primary


def test_the_python_client_asks_for_the_type_by_name(dsn, db):
    from sqlml.client import Client, ServerError

    with Client.connect(dsn) as ml:
        rows = ml.predict("typed", "cust", id_column="big_id", id_type="bigint")
        assert len(rows) == 400 and all(isinstance(r["id"], int) for r in rows)
        assert isinstance(ml.predict("typed", "cust", id_type="int4")[0]["id"], int)
        assert isinstance(ml.predict("typed", "cust")[0]["id"], str)  # no id_type: text, as before
        with pytest.raises(ServerError) as e:
            ml.predict("typed", "cust", id_type="int); DROP TABLE cust; --")
        assert e.value.sqlstate in ("42601", "42704") and query(db, "SELECT count(*) FROM cust") == [(400,)]
