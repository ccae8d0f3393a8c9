"""The fast scoring paths, for correctness (their speed is measured by bench/scoring.py, not here).

- a row scored from its text equals the same row scored as jsonb, and the registered ONNX run
  outside the database, on text full of quotes, commas, spaces, backslashes and NULLs;
- a parallel plan (workers launched, with and without the leader scoring rows) equals the serial
  plan, right after a deploy and a rollback too, and refuses a caller who may not score;
- a change of the row type between statements (columns dropped and re-added) is seen;
- batch scoring in page-range chunks (a table of more than one chunk, integer and text ids, a view)
  equals per-row predict.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from contextlib import contextmanager

import numpy as np
import psycopg2
import pytest

from sqlml.data import convert, values
from sqlml.data.schema import FeatureSchema
from sqlml.onnx.convert import run, session
from tests.conftest import query, scalar
from tests.roles import create_roles, drop_roles

PARALLEL = ("SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; "
            "SET max_parallel_workers_per_gather = 2")
SERIAL = "SET max_parallel_workers_per_gather = 0"
NASTY = ["plain", "two words", "a,b", 'say "hi"', "back\\slash", "(paren)", "", " ", "naïve", "x\ty"]


def train(conn, project, relation, target, n_estimators, seed=42, deploy="auto"):
    options = json.dumps({"ensemble": False, "n_estimators": n_estimators, "seed": seed, "deploy": deploy})
    return query(conn, "SELECT version FROM sqlml.train(%s, %s, %s, algorithms => '{lightgbm}', "
                       "time_budget => '3 seconds', options => %s)", (project, relation, target, options))[0][0]


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, """
        CREATE TABLE people AS
        SELECT i AS id, (i * 37 %% 100)::int AS age, (i * 7919 %% 1000) / 10.0 AS score,
               CASE WHEN i %% 9 = 0 THEN NULL ELSE (i %% 13)::numeric / 3 END AS ratio,
               (i %% 4 = 0) AS member,
               CASE WHEN i %% 11 = 0 THEN NULL ELSE (%s::text[])[i %% 10 + 1] END AS tag,
               (ARRAY['north', 'south', 'east'])[i %% 3 + 1] AS region,
               (i * 37 %% 100 + (i %% 10) * 5 + CASE WHEN i %% 4 = 0 THEN 30 ELSE 0 END > 80)::int AS churned
        FROM generate_series(1, 3000) AS i""", (NASTY,))
    query(conn, "ANALYZE people")
    v1 = train(conn, "sp", "SELECT age, score, ratio, member, tag, region, churned FROM people", "churned", 20)
    v2 = train(conn, "sp", "SELECT age, score, ratio, member, tag, region, churned FROM people", "churned", 8,
               seed=7, deploy="never")
    assert (v1, v2) == (1, 2)
    yield conn
    conn.close()


def reference(conn, project, version, relation="people"):
    """Class probabilities of the registered ONNX run outside the database, rows ordered by id."""
    onnx, schema = query(conn, "SELECT onnx, feature_schema FROM sqlml.models WHERE project = %s AND version = %s",
                         (project, version))[0]
    schema = FeatureSchema.from_json(schema)
    rows = [r[0] for r in query(conn, f"SELECT to_jsonb(t) FROM {relation} t ORDER BY id")]
    cols = values.from_rows(schema, rows)
    return run(session(bytes(onnx)), convert.as_feeds(schema, convert.model_inputs(schema, cols)), schema.target.task)


def column(conn, sql, params=None):
    return [r[0] for r in query(conn, sql, params)]


def workers_scored(conn, sql) -> tuple[int, int]:
    """(workers launched, rows the workers scored) of a parallel plan of ``sql``."""
    plan = scalar(conn, "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) " + sql)[0]["Plan"]
    launched, rows = 0, 0
    stack = [plan]
    while stack:
        node = stack.pop()
        if node["Node Type"] == "Gather":
            launched = node.get("Workers Launched", 0)
        if node.get("Parallel Aware"):
            rows += sum(w.get("Actual Rows", 0) for w in node.get("Workers", []))
        stack.extend(node.get("Plans", []))
    return launched, rows


def test_row_text_equals_jsonb_and_the_onnx_outside(db):
    expected = reference(db, "sp", 1)
    proba = np.array(column(db, "SELECT sqlml.predict_proba('sp', t) FROM people t ORDER BY id"))
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    by_row = column(db, "SELECT sqlml.predict('sp', t) FROM people t ORDER BY id")
    by_json = column(db, "SELECT sqlml.predict('sp', to_jsonb(t)) FROM people t ORDER BY id")
    assert by_row == by_json == expected.argmax(1).astype(float).tolist()
    labels = column(db, "SELECT sqlml.predict_label('sp', t) FROM people t ORDER BY id")
    assert labels == [str(int(v)) for v in by_row]
    # a subquery's row is an anonymous record: scored through jsonb, same answers
    assert column(db, "SELECT sqlml.predict('sp', s) FROM (SELECT * FROM people) s ORDER BY id") == by_row


def test_bad_values_get_the_same_error_either_way(db):
    query(db, "CREATE TEMP TABLE odd AS SELECT id, age::text AS age, score, ratio, member, tag, region FROM people "
              "WHERE id < 5")
    query(db, "UPDATE odd SET age = 'old' WHERE id = 3")
    errors = []
    for sql in ("SELECT sqlml.predict('sp', o) FROM odd o", "SELECT sqlml.predict('sp', to_jsonb(o)) FROM odd o"):
        with pytest.raises(psycopg2.Error) as info:
            query(db, sql)
        errors.append((info.value.pgcode, info.value.diag.message_primary))
    assert errors[0] == errors[1] and errors[0][0] == "42804" and '"age"' in errors[0][1]
    err = pytest.raises(psycopg2.Error, query, db, "SELECT sqlml.predict('sp', 5)").value
    assert err.pgcode == "42804" and "integer" in err.pgerror
    # a row that is NULL (an outer join without a match) scores as NULL
    assert scalar(db, "SELECT sqlml.predict('sp', p) FROM (SELECT 1) x LEFT JOIN people p ON false") is None


@pytest.mark.parametrize("leader", ["on", "off"])
def test_parallel_plan_equals_serial(db, leader):
    sql = "SELECT id, sqlml.predict('sp', t), sqlml.predict_proba('sp', t), sqlml.predict_label('sp', t) FROM people t"
    query(db, SERIAL)
    serial = sorted(query(db, sql))
    query(db, PARALLEL)
    query(db, f"SET parallel_leader_participation = {leader}")
    try:
        launched, rows = workers_scored(db, sql)
        assert launched >= 1 and rows > 0
        assert sorted(query(db, sql)) == serial
    finally:
        query(db, "RESET ALL")


def test_parallel_plan_follows_deploy_and_rollback(db, dsn):
    other = psycopg2.connect(dsn)
    other.autocommit = True
    sql = "SELECT id, sqlml.predict_proba('sp', t) FROM people t"
    try:
        query(db, SERIAL)
        v1, v2 = (sorted(query(db, sql.replace("'sp'", f"'sp@{v}'"))) for v in (1, 2))
        assert v1 != v2
        for conn in (db, other):
            query(conn, PARALLEL)
            query(conn, "SET parallel_leader_participation = off")  # only workers score
        assert sorted(query(other, sql)) == v1 and workers_scored(other, sql)[1] > 0
        query(db, "SELECT * FROM sqlml.deploy('sp', version => 2)")
        assert sorted(query(other, sql)) == v2
        assert sorted(query(db, sql)) == v2
        query(db, "SELECT * FROM sqlml.deploy('sp', 'rollback')")
        assert sorted(query(other, sql)) == v1
        # inside one transaction, the deploy is seen by the workers of the next statement
        query(db, "BEGIN")
        query(db, "SELECT * FROM sqlml.deploy('sp', version => 2)")
        assert sorted(query(db, sql)) == v2
        assert sorted(query(other, sql)) == v1  # not committed yet
        query(db, "ROLLBACK")
        assert sorted(query(db, sql)) == v1
    finally:
        query(db, "RESET ALL")
        other.close()


def test_parallel_plan_refuses_a_caller_who_may_not_score(db, dsn):
    roles = create_roles(db, dsn)
    try:
        query(db, f'GRANT SELECT ON people TO "{roles["usr"]}"')
        conn = roles.connect("usr")
        query(conn, PARALLEL)
        query(conn, "SET parallel_leader_participation = off")
        sql = "SELECT sqlml.predict('sp', t) FROM people t"
        for _ in range(2):  # and the session stays usable after the error
            err = pytest.raises(psycopg2.Error, query, conn, sql).value
            assert err.pgcode == "42501" and 'score project "sp"' in err.pgerror
        query(db, "SELECT sqlml.grant('sp', %s, 'predict')", (roles["usr"],))
        query(db, SERIAL)
        assert sorted(column(conn, sql)) == sorted(column(db, sql))
    finally:
        drop_roles(db, roles)


def test_row_type_changes_between_statements(db):
    query(db, "CREATE TABLE shuffled AS SELECT * FROM people")
    before = column(db, "SELECT sqlml.predict_proba('sp', t) FROM shuffled t ORDER BY id")
    # the same values, in other positions: region and age move to the end, a column is dropped
    query(db, "ALTER TABLE shuffled ADD COLUMN region2 text, ADD COLUMN age2 int, ADD COLUMN junk int")
    query(db, "UPDATE shuffled SET region2 = region, age2 = age")
    query(db, "ALTER TABLE shuffled DROP COLUMN region, DROP COLUMN age, DROP COLUMN junk")
    query(db, "ALTER TABLE shuffled RENAME COLUMN region2 TO region")
    query(db, "ALTER TABLE shuffled RENAME COLUMN age2 TO age")
    assert column(db, "SELECT sqlml.predict_proba('sp', t) FROM shuffled t ORDER BY id") == before


@pytest.fixture(scope="module")
def wide(db):
    """A table of many batch chunks (chunks.CHUNK_ROWS rows each), with a model of its own."""
    query(db, """CREATE TABLE wide AS SELECT i AS id, 'k' || i AS key, (i * 7 % 100)::float8 AS a,
                        CASE WHEN i % 7 = 0 THEN NULL ELSE (ARRAY['x', 'y', 'z'])[i % 3 + 1] END AS b,
                        ((i * 7 % 100) + (i % 3) * 20 > 70)::int AS y
                 FROM generate_series(1, 70000) AS i""")
    query(db, "ANALYZE wide")
    train(db, "wide", "SELECT a, b, y FROM wide WHERE id % 10 = 0", "y", 10)
    return column(db, "SELECT sqlml.predict('wide', t) FROM wide t ORDER BY id")


def test_batch_in_chunks_equals_predict(db, wide):
    query(db, "DROP TABLE IF EXISTS wide_scored, wide_scored_text, wide_scored_view")
    assert scalar(db, "SELECT sqlml.score('wide', 'wide', 'wide_scored', 'id')") == 70000
    rows = query(db, "SELECT id, prediction, label, probabilities FROM wide_scored ORDER BY id")
    assert [r[0] for r in rows] == list(range(1, 70001))
    assert [r[1] for r in rows] == wide
    assert [r[2] for r in rows] == [str(int(p)) for p in wide]
    np.testing.assert_allclose([r[3] for r in rows], column(db, "SELECT sqlml.predict_proba('wide', t) FROM wide t "
                                                                "ORDER BY id"), atol=1e-7)
    assert scalar(db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                      "WHERE attrelid = 'wide_scored'::regclass AND attname = 'id'") == "integer"
    # text ids, and a view (read in one statement, then scored in chunks)
    assert scalar(db, "SELECT sqlml.score('wide', 'wide', 'wide_scored_text', 'key')") == 70000
    assert column(db, "SELECT prediction FROM wide_scored_text ORDER BY substr(key, 2)::int") == wide
    query(db, "CREATE VIEW wide_view AS SELECT * FROM wide WHERE id > 100")
    assert scalar(db, "SELECT sqlml.score('wide', 'wide_view', 'wide_scored_view', 'id')") == 69900
    assert column(db, "SELECT prediction FROM wide_scored_view ORDER BY id") == wide[100:]
    batch = query(db, "SELECT id, prediction FROM sqlml.predict_batch('wide', 'wide', 'id')")
    assert sorted((int(i), p) for i, p in batch) == list(zip(range(1, 70001), wide))
    # categories with quotes, commas, backslashes, spaces, '' and NULL, looked up inside the chunk query
    query(db, "DROP TABLE IF EXISTS people_scored")
    assert scalar(db, "SELECT sqlml.score('sp', 'people', 'people_scored', 'id')") == 3000
    assert query(db, "SELECT prediction, probabilities FROM people_scored ORDER BY id") == \
        query(db, "SELECT sqlml.predict('sp', t), sqlml.predict_proba('sp', t) FROM people t ORDER BY id")


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def settled_threads_of(pid: int, expected: int) -> int:
    """The backend's thread count once a joined thread has left ``/proc``: Python's join returns when
    the thread's last Python step is done, a moment before the OS thread itself is gone."""
    deadline = time.monotonic() + 10
    while threads_of(pid) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return threads_of(pid)


def collecting(conn) -> bool:
    query(conn, "DO $$ import gc; plpy.notice(str(gc.isenabled())) $$ LANGUAGE plpython3u")
    return conn.notices[-1].split("NOTICE:  ")[1].strip() == "True"


def test_batch_scoring_leaves_no_thread_behind_when_cut_short(db, dsn, wide):
    """The model runs on a background thread (``sqlml.scoring.overlap``): a timeout, a cancel or a
    LIMIT ends it with the statement, and the session goes on."""
    query(db, "CREATE TABLE IF NOT EXISTS wide8 AS SELECT w.* FROM wide w, generate_series(1, 8)")  # 560k rows
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    pid = scalar(conn, "SELECT pg_backend_pid()")
    first = column(conn, "SELECT sqlml.predict('wide', t) FROM wide t WHERE id <= 5 ORDER BY id")
    before = threads_of(pid)
    query(conn, "SET statement_timeout = '300ms'")
    with pytest.raises(psycopg2.errors.QueryCanceled):
        query(conn, "SELECT sqlml.score('wide', 'wide8', 'wide8_scored', 'id')")
    query(conn, "RESET statement_timeout")
    assert settled_threads_of(pid, before) == before
    assert scalar(conn, "SELECT to_regclass('wide8_scored')") is None  # nothing half-written
    canceller = threading.Timer(0.3, lambda: query(db, "SELECT pg_cancel_backend(%s)", (pid,)))
    canceller.start()
    with pytest.raises(psycopg2.errors.QueryCanceled):
        query(conn, "SELECT count(*) FROM sqlml.predict_batch('wide', 'wide8', 'id')")
    canceller.join()
    assert settled_threads_of(pid, before) == before
    assert collecting(conn)  # the garbage collector back on (sqlml.scoring.overlap turns it off meanwhile)
    assert len(query(conn, "SELECT * FROM sqlml.predict_batch('wide', 'wide', 'id') LIMIT 3")) == 3
    assert settled_threads_of(pid, before) == before
    assert collecting(conn)
    assert column(conn, "SELECT sqlml.predict('wide', t) FROM wide t WHERE id <= 5 ORDER BY id") == first
    conn.close()


def test_dates_need_iso_datestyle_in_a_row(db):
    query(db, """CREATE TABLE visits AS SELECT i AS id, date '2024-01-01' + i % 300 AS day, (i % 5)::float8 AS n,
                        (i % 300 > 150)::int AS late FROM generate_series(1, 400) AS i""")
    train(db, "visits", "SELECT day, n, late FROM visits", "late", 5)
    expected = column(db, "SELECT sqlml.predict('visits', to_jsonb(t)) FROM visits t ORDER BY id")
    assert column(db, "SELECT sqlml.predict('visits', t) FROM visits t ORDER BY id") == expected
    try:
        query(db, "SET DateStyle = 'SQL, DMY'")
        err = pytest.raises(psycopg2.Error, query, db, "SELECT sqlml.predict('visits', t) FROM visits t").value
        assert err.pgcode == "42804" and "DateStyle" in err.pgerror
        assert column(db, "SELECT sqlml.predict('visits', to_jsonb(t)) FROM visits t ORDER BY id") == expected
    finally:
        query(db, "RESET DateStyle")


def datums_available(conn) -> bool:
    """Whether batch scoring in this database goes through ``pg_internals.DatumSpi`` (the guard built)."""
    query(conn, "DO $$ from sqlml.server import pg_internals as p; plpy.notice(str(p.DatumSpi.available())) $$ "
                "LANGUAGE plpython3u")
    return conn.notices[-1].split("NOTICE:  ")[1].strip() == "True"


@pytest.fixture(scope="module")
def wide_reg(db, wide):
    """``wide`` with a number to predict, and a regressor of it."""
    query(db, "CREATE TABLE wide_reg AS SELECT id, key, a, b, "
              "(a * 2 + id * 7919 % 13 + CASE WHEN b = 'x' THEN 5 ELSE 0 END)::float8 AS v FROM wide")
    query(db, "ANALYZE wide_reg")
    train(db, "wide_reg", "SELECT a, b, v FROM wide_reg WHERE id % 10 = 0", "v", 10)


def test_batch_of_a_regressor_equals_predict_and_the_old_way(db, wide_reg):
    """Chunks handed to PostgreSQL as Datums (integer ids: ``pg_internals.DatumSpi``), a regressor's
    labels included, give what per-row predict gives and what plpy's way (text ids) gives."""
    assert datums_available(db)
    query(db, "DROP TABLE IF EXISTS wide_reg_scored, wide_reg_scored_text")
    assert scalar(db, "SELECT sqlml.score('wide_reg', 'wide_reg', 'wide_reg_scored', 'id')") == 70000
    assert scalar(db, "SELECT sqlml.score('wide_reg', 'wide_reg', 'wide_reg_scored_text', 'key')") == 70000
    rows = query(db, "SELECT s.id, s.prediction, s.label, s.probabilities, t.prediction, t.label "
                     "FROM wide_reg_scored s JOIN wide_reg_scored_text t ON t.key = 'k' || s.id ORDER BY s.id")
    assert [r[0] for r in rows] == list(range(1, 70001))
    assert [r[1] for r in rows] == column(db, "SELECT sqlml.predict('wide_reg', t) FROM wide_reg t ORDER BY id")
    assert all(r[1] == r[4] and r[2] == r[5] == repr(r[1]) and r[3] is None for r in rows)


ATTACHED = [  # what an event trigger on CREATE TABLE adds to the scored table, each running PL/Python on insert
    ("trigger", "CREATE TRIGGER counted AFTER INSERT ON {t} FOR EACH STATEMENT EXECUTE FUNCTION hooked_trigger()"),
    ("check", "ALTER TABLE {t} ADD CHECK (hooked_true(prediction))"),
    ("index", "CREATE INDEX ON {t} ((hooked_true(prediction)))"),
    ("partition", "ALTER TABLE hooked_parent ATTACH PARTITION {t} FOR VALUES IN (true)"),
]


@pytest.fixture(scope="module")
def hooks(db):
    """PL/Python functions that count their calls in the backend (GD), and a parent partitioned by one."""
    query(db, """CREATE FUNCTION hooked_true(p float8) RETURNS bool IMMUTABLE LANGUAGE plpython3u AS $$
                 GD["hooked"] = GD.get("hooked", 0) + 1
                 return True
                 $$""")
    query(db, """CREATE FUNCTION hooked_trigger() RETURNS trigger LANGUAGE plpython3u AS $$
                 GD["hooked"] = GD.get("hooked", 0) + 1
                 $$""")
    query(db, "CREATE FUNCTION hooked_calls() RETURNS int LANGUAGE plpython3u AS $$ return GD.pop('hooked', 0) $$")
    query(db, "CREATE TABLE hooked_parent (id int4, prediction float8, label text, probabilities float8[]) "
              "PARTITION BY LIST (hooked_true(prediction))")
    query(db, """CREATE FUNCTION hook_new_table() RETURNS event_trigger LANGUAGE plpgsql AS $$
                 DECLARE r record;
                 BEGIN
                   FOR r IN SELECT * FROM pg_event_trigger_ddl_commands()
                            WHERE object_identity = 'public.hooked_' || current_setting('hooked.kind') LOOP
                     EXECUTE replace(current_setting('hooked.sql'), '{t}', r.object_identity);
                   END LOOP;
                 END $$""")


@contextmanager
def hooked(db, kind: str, sql: str, *sessions):
    """``hooks``' event trigger armed while the block runs: once a table ``hooked_<kind>`` is created,
    ``sql`` runs on it ({t}: its name). ``sessions``: others that create it, told the same."""
    for conn in (db, *sessions):
        query(conn, "SELECT set_config('hooked.kind', %s, false), set_config('hooked.sql', %s, false)", (kind, sql))
    query(db, "CREATE EVENT TRIGGER hook_new_table ON ddl_command_end WHEN TAG IN ('CREATE TABLE') "
              "EXECUTE FUNCTION hook_new_table()")
    try:
        yield
    finally:
        query(db, "DROP EVENT TRIGGER hook_new_table")


@pytest.mark.parametrize("kind, sql", ATTACHED, ids=[k for k, _ in ATTACHED])
def test_what_an_event_trigger_adds_to_the_scored_table_still_runs(db, hooks, kind, sql):
    """An event trigger may add to the table score creates what runs PL/Python on insert: it must run
    as usual, the backend keeping the GIL while it writes such a table (without, it would crash)."""
    query(db, f"DROP TABLE IF EXISTS hooked_{kind}")
    query(db, "SELECT hooked_calls()")
    with hooked(db, kind, sql):
        assert scalar(db, f"SELECT sqlml.score('sp', 'people', 'hooked_{kind}', 'id')") == 3000
    assert scalar(db, "SELECT hooked_calls()") >= 1  # PL/Python ran while the chunks were written
    assert query(db, f"SELECT prediction FROM hooked_{kind} ORDER BY id") == \
        query(db, "SELECT sqlml.predict('sp', t) FROM people t ORDER BY id")


PLAIN = [  # (what is done to a table of score's four columns, whether writing it runs only PostgreSQL's code)
    ("", True),
    ("ALTER TABLE {t} ADD CHECK (prediction > 0)", False),
    ("CREATE INDEX ON {t} (id)", False),
    ("CREATE TRIGGER counted AFTER INSERT ON {t} FOR EACH STATEMENT EXECUTE FUNCTION hooked_trigger()", False),
    ("CREATE RULE noted AS ON INSERT TO {t} DO ALSO NOTIFY scored", False),
    ("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY", False),
    ("ALTER TABLE {t} FORCE ROW LEVEL SECURITY", False),
    ("ALTER TABLE {t} ALTER COLUMN label SET DEFAULT 'x'", False),
    ("ALTER TABLE {t} ADD COLUMN twice float8 GENERATED ALWAYS AS (prediction * 2) STORED", False),
    ("ALTER TABLE {t} ADD COLUMN extra int", False),
    ("ALTER TABLE {t} DROP COLUMN probabilities, ADD COLUMN probabilities float8[]", True),  # a dropped one: not
    ("ALTER TABLE {t} DROP COLUMN label, ADD COLUMN label text", False),  # the columns' order changed
    ("ALTER TABLE {t} ALTER COLUMN label TYPE plain_label", False),
    ("ALTER TABLE hooked_parent ATTACH PARTITION {t} FOR VALUES IN (false)", False),
]


@pytest.mark.parametrize("sql, plain", PLAIN, ids=[str(i) for i in range(len(PLAIN))])
def test_what_makes_a_scored_table_plain(db, hooks, sql, plain):
    """``batch._plain``, which decides whether the backend may let go of the GIL while it
    writes the scored table."""
    query(db, "DROP TABLE IF EXISTS plain_scored")
    query(db, "DO $$ BEGIN CREATE DOMAIN plain_label AS text; EXCEPTION WHEN duplicate_object THEN END $$")
    query(db, "CREATE TABLE plain_scored (id int4, prediction float8, label text, probabilities float8[])")
    if sql:
        query(db, sql.replace("{t}", "plain_scored"))
    query(db, "DO $$ from sqlml.server import batch; "
              "oid = plpy.execute(\"SELECT 'plain_scored'::regclass::oid AS o\")[0]['o']; "
              "plpy.notice(str(batch._plain(batch._table_fields(oid, 'plain_scored'), 23))) $$ LANGUAGE plpython3u")
    assert db.notices[-1].split("NOTICE:  ")[1].strip() == str(plain)


def test_an_error_while_reading_a_chunk_is_postgres_own_and_leaves_nothing(db):
    """A value PostgreSQL refuses to convert, met inside the chunk query (read with SPI called
    directly): its own error and SQLSTATE, no table left, and the session goes on."""
    query(db, "DROP TABLE IF EXISTS huge, huge_scored")
    query(db, "CREATE TABLE huge AS SELECT id, age, score, ratio, member, tag, region FROM people")
    query(db, "ALTER TABLE huge ALTER COLUMN score TYPE numeric")
    query(db, "UPDATE huge SET score = 1e400 WHERE id = 2500")
    err = pytest.raises(psycopg2.Error, query, db, "SELECT sqlml.score('sp', 'huge', 'huge_scored', 'id')").value
    assert err.pgcode == "22003" and "out of range for type double precision" in err.pgerror
    assert scalar(db, "SELECT to_regclass('huge_scored')") is None
    query(db, "UPDATE huge SET score = 1 WHERE id = 2500")
    assert scalar(db, "SELECT sqlml.score('sp', 'huge', 'huge_scored', 'id')") == 3000


def test_without_the_guard_batch_goes_through_plpy_with_the_same_answers(db, wide):
    """Where the compiled guard cannot be built (no LLVM), ``score`` reads and writes through plpy:
    the same rows as through Datums."""
    assert datums_available(db)
    query(db, "DROP TABLE IF EXISTS wide_plpy, people_plpy, wide_datums, people_datums")
    query(db, """DO $$
                 from sqlml.server import batch
                 found = batch._datum_spi
                 batch._datum_spi = lambda id_type: None
                 try:
                     batch.score('wide', 'wide', 'wide_plpy', 'id')
                     batch.score('sp', 'people', 'people_plpy', 'id')
                 finally:
                     batch._datum_spi = found
                 $$ LANGUAGE plpython3u""")
    query(db, "SELECT sqlml.score('wide', 'wide', 'wide_datums', 'id'), "
              "sqlml.score('sp', 'people', 'people_datums', 'id')")
    for name in ("wide", "people"):
        assert query(db, f"SELECT * FROM {name}_plpy ORDER BY id") == \
            query(db, f"SELECT * FROM {name}_datums ORDER BY id")
    assert scalar(db, "SELECT count(*) FROM wide_datums") == 70000


WRITTEN_BOTH_WAYS = """DO $$
from sqlml.server import batch, pg_internals
writes, insert_tuples, available = [], pg_internals.insert_tuples, pg_internals.tuples_available
pg_internals.insert_tuples = lambda *args, **kwargs: writes.append(1) or insert_tuples(*args, **kwargs)
try:
    batch.score('wide', 'wide', 'wide_tuples', 'id')
    batch.score('wide_reg', 'wide_reg', 'wide_reg_tuples', 'id')
    batch.score('sp', 'people', 'people_tuples', 'id')
finally:
    pg_internals.insert_tuples = insert_tuples
pg_internals.tuples_available = lambda: False
try:
    batch.score('wide', 'wide', 'wide_inserted', 'id')
    batch.score('wide_reg', 'wide_reg', 'wide_reg_inserted', 'id')
    batch.score('sp', 'people', 'people_inserted', 'id')
finally:
    pg_internals.tuples_available = available
plpy.notice(str(len(writes)))
$$ LANGUAGE plpython3u"""


def test_plain_tables_are_written_as_tuples_with_the_rows_an_insert_writes(db, wide, wide_reg):
    """The table score created, still plain and insertable, is filled with heap tuples formed by sqlml
    (``pg_internals.insert_tuples``), one call per chunk: the same rows, bit for bit, as the INSERT
    from arrays (the way left for tables that are not plain), for classifiers and a regressor."""
    assert datums_available(db)
    query(db, "DROP TABLE IF EXISTS wide_tuples, wide_reg_tuples, people_tuples, "
              "wide_inserted, wide_reg_inserted, people_inserted")
    query(db, WRITTEN_BOTH_WAYS)
    assert int(db.notices[-1].split("NOTICE:  ")[1]) >= 2 * 70000 // 16384 + 1  # every chunk, none by INSERT
    for name in ("wide", "wide_reg", "people"):
        written, inserted = io.BytesIO(), io.BytesIO()
        with db.cursor() as cur:
            cur.copy_expert(f"COPY (SELECT * FROM {name}_tuples ORDER BY id) TO STDOUT (FORMAT binary)", written)
            cur.copy_expert(f"COPY (SELECT * FROM {name}_inserted ORDER BY id) TO STDOUT (FORMAT binary)", inserted)
        assert written.getvalue() == inserted.getvalue()
    assert column(db, "SELECT prediction FROM wide_tuples ORDER BY id") == wide
    query(db, "CREATE EXTENSION IF NOT EXISTS amcheck")
    for name in ("wide_tuples", "wide_reg_tuples", "people_tuples"):
        assert query(db, f"SELECT * FROM verify_heapam('{name}')") == []


# what an event trigger may do to the created table that leaves it plain (nothing runs on insert)
# but not laid out as sqlml's tuples are: it is written by the INSERT, as PostgreSQL lays it out
RESHAPED = [
    ("dropped", "ALTER TABLE {t} DROP COLUMN probabilities; ALTER TABLE {t} ADD COLUMN probabilities float8[]"),
    ("added", "ALTER TABLE {t} ADD COLUMN extra int"),
]


@pytest.mark.parametrize("kind, sql", RESHAPED, ids=[k for k, _ in RESHAPED])
def test_a_table_not_laid_out_as_the_tuples_is_written_by_the_insert(db, hooks, wide, kind, sql):
    query(db, f"DROP TABLE IF EXISTS hooked_{kind}")
    with hooked(db, kind, sql):
        assert scalar(db, f"SELECT sqlml.score('wide', 'wide', 'hooked_{kind}', 'id')") == 70000
    assert column(db, f"SELECT prediction FROM hooked_{kind} ORDER BY id") == wide
    assert scalar(db, f"SELECT count(*) FROM hooked_{kind} WHERE label IS NULL OR probabilities IS NULL") == 0
    # as an INSERT of the same rows into a table reshaped the same way stores them (from new values:
    # a value read from a table keeps its 1-byte header wherever it goes)
    query(db, f"DROP TABLE IF EXISTS relaid_{kind}")
    query(db, f"CREATE TABLE relaid_{kind} (id int4, prediction float8, label text, probabilities float8[])")
    query(db, sql.replace("{t}", f"relaid_{kind}"))
    query(db, f"INSERT INTO relaid_{kind} (id, prediction, label, probabilities) SELECT id, prediction, "
              f"label || '', probabilities || '{{}}'::float8[] FROM hooked_{kind} ORDER BY ctid")
    query(db, "CREATE EXTENSION IF NOT EXISTS pageinspect; CREATE EXTENSION IF NOT EXISTS amcheck")
    items = "SELECT lp_len, t_infomask2, t_hoff, t_bits, t_data FROM heap_page_items(get_raw_page(%s, 0))"
    assert query(db, items, (f"hooked_{kind}",)) == query(db, items, (f"relaid_{kind}",))
    assert query(db, f"SELECT * FROM verify_heapam('hooked_{kind}')") == []


READ_BOTH_WAYS = """DO $$
from sqlml.server import batch, pg_internals
fetches, fetch, available = [], pg_internals.RowCursor.fetch, pg_internals.rows_available


def counted(self, count):
    fetches.append(count)
    return fetch(self, count)


pg_internals.RowCursor.fetch = counted
try:
    for project, table in PAIRS:
        batch.score(project, table, table + '_received', 'id')
finally:
    pg_internals.RowCursor.fetch = fetch
pg_internals.rows_available = lambda: False
try:
    for project, table in PAIRS:
        batch.score(project, table, table + '_aggregated', 'id')
finally:
    pg_internals.rows_available = available
plpy.notice(str(len(fetches)))
$$ LANGUAGE plpython3u"""


def scored_bytes(conn, table: str) -> bytes:
    out = io.BytesIO()
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT (FORMAT binary)", out)
    return out.getvalue()


def read_both_ways(conn, pairs) -> int:
    """Score each (project, table) of ``pairs`` into <table>_received (rows read by the compiled
    receiver, ``pg_internals.RowCursor``) and <table>_aggregated (the chunks' aggregates); the
    receiver's fetches."""
    for _, table in pairs:
        query(conn, f"DROP TABLE IF EXISTS {table}_received, {table}_aggregated")
    query(conn, READ_BOTH_WAYS.replace("PAIRS", repr(list(pairs))))
    return int(conn.notices[-1].split("NOTICE:  ")[1])


def test_rows_read_by_the_compiled_receiver_are_what_the_aggregates_give(db, wide, wide_reg):
    """A table's chunks read row by row by compiled code (``pg_internals.read_rows``: numbers,
    categories looked up in hash tables, NULLs) score exactly as the chunks' aggregates read in SQL
    do, for classifiers (one of texts with commas, quotes, tabs and accents) and a regressor."""
    assert datums_available(db)
    pairs = [("wide", "wide"), ("wide_reg", "wide_reg"), ("sp", "people")]
    assert read_both_ways(db, pairs) >= 2 * (70000 // 16384 + 1) + 1  # a fetch per chunk
    for _, table in pairs:
        assert scored_bytes(db, f"{table}_received") == scored_bytes(db, f"{table}_aggregated")
    assert column(db, "SELECT prediction FROM wide_received ORDER BY id") == wide


def test_long_categories_stored_compressed_or_out_of_line_are_looked_up(db):
    """Texts PostgreSQL keeps compressed in the row or out of line (TOAST): the compiled receiver
    detoasts them before looking them up, as per-row predict reads them."""
    query(db, "DROP TABLE IF EXISTS long_texts")
    rows = """SELECT i AS id, (i % 10)::float8 AS x,
                     CASE i % 3 WHEN 0 THEN 'short' WHEN 1 THEN repeat('compressible ', 400)
                                ELSE (SELECT string_agg(md5(j::text), '') FROM generate_series(1, 150) AS j) END AS c,
                     (i % 3 = 1 OR i % 10 > 6)::int AS y
              FROM generate_series({}, {}) AS i"""
    query(db, "CREATE TABLE long_texts AS " + rows.format(1, 3000))  # compressed in the row, or out of line
    query(db, "ALTER TABLE long_texts ALTER COLUMN c SET STORAGE EXTERNAL")
    query(db, "INSERT INTO long_texts " + rows.format(3001, 6000))  # out of line, uncompressed
    query(db, "ANALYZE long_texts")
    assert scalar(db, "SELECT count(DISTINCT pg_column_size(c)) FROM long_texts WHERE id % 3 = 1") == 2  # both ways
    train(db, "long_texts", "SELECT x, c, y FROM long_texts", "y", 10)
    assert read_both_ways(db, [("long_texts", "long_texts")]) >= 1
    assert column(db, "SELECT prediction FROM long_texts_received ORDER BY id") == \
        column(db, "SELECT sqlml.predict('long_texts', t) FROM long_texts t ORDER BY id")
    assert scored_bytes(db, "long_texts_received") == scored_bytes(db, "long_texts_aggregated")
    assert len(set(column(db, "SELECT prediction FROM long_texts_received"))) > 1


def test_a_table_changed_between_writes_is_judged_again_before_each(db, hooks, wide):
    """The caller's own code may run while the chunks are read (here a trusted cast function that
    calls another adding a CHECK in PL/Python to the scored table after score judged it plain):
    each write judges the table again, and the rows still to write go through the INSERT, the
    backend keeping the GIL for the PL/Python the CHECK runs (letting go of it would crash it)."""
    query(db, "DROP TABLE IF EXISTS mid_scored, mid_source")
    query(db, "DO $$ BEGIN CREATE TYPE mid_tag AS ENUM ('x', 'y', 'z'); EXCEPTION WHEN duplicate_object THEN END $$")
    query(db, "CREATE TABLE mid_source AS SELECT id, a, b::mid_tag AS b FROM wide")
    query(db, "ANALYZE mid_source")
    query(db, """CREATE OR REPLACE FUNCTION mid_change() RETURNS void VOLATILE LANGUAGE plpgsql AS $$
                 BEGIN
                   IF to_regclass('public.mid_scored') IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM pg_constraint WHERE conrelid = 'public.mid_scored'::regclass) THEN
                     ALTER TABLE public.mid_scored ADD CHECK (hooked_true(prediction));
                   END IF;
                 END $$""")
    query(db, """CREATE OR REPLACE FUNCTION mid_tag_text(t mid_tag) RETURNS text STABLE LANGUAGE plpgsql AS $$
                 BEGIN PERFORM mid_change(); RETURN format('%s', t); END $$""")
    query(db, "CREATE CAST (mid_tag AS text) WITH FUNCTION mid_tag_text(mid_tag)")
    query(db, "SELECT hooked_calls()")
    try:
        assert scalar(db, "SELECT sqlml.score('wide', 'mid_source', 'mid_scored', 'id')") == 70000
    finally:
        query(db, "DROP CAST (mid_tag AS text)")
    assert scalar(db, "SELECT hooked_calls()") >= 60000  # the CHECK ran in PL/Python for the rows after it
    assert column(db, "SELECT prediction FROM mid_scored ORDER BY id") == wide


def test_rows_written_earlier_in_the_statement_are_scored(db):
    """The chunks are read in a snapshot taken when score starts reading, as plpy's cursors are:
    rows the same statement wrote before are seen."""
    query(db, "DROP TABLE IF EXISTS late_rows, late_scored")
    query(db, "CREATE TABLE late_rows AS SELECT * FROM people WITH NO DATA")
    query(db, """CREATE OR REPLACE FUNCTION fill_late_rows() RETURNS bigint VOLATILE LANGUAGE sql AS $$
                 INSERT INTO late_rows SELECT * FROM people; SELECT count(*) FROM late_rows $$""")
    assert query(db, "SELECT fill_late_rows(), sqlml.score('sp', 'late_rows', 'late_scored', 'id')") == [(3000, 3000)]
    assert query(db, "SELECT prediction FROM late_scored ORDER BY id") == \
        query(db, "SELECT sqlml.predict('sp', t) FROM people t ORDER BY id")


@pytest.mark.parametrize("call", ["batch.score('wide', 'wide_bad', 'wide_bad_scored', 'id')",
                                  "list(batch.predict_batch('wide', 'wide_bad', 'id'))"])
def test_a_failed_chunk_closes_the_cursor_before_the_statement_ends(db, wide, call):
    """A chunk the scoring thread refuses (a number float32 cannot hold) ends the read there: its
    cursor is closed at once, not when the last reference to the error's frames goes (a caller
    may keep the error; PostgreSQL may have ended the statement by then)."""
    query(db, "DROP TABLE IF EXISTS wide_bad, wide_bad_scored")
    query(db, "CREATE TABLE wide_bad AS SELECT id, key, CASE WHEN id = 30000 THEN 1e300 ELSE a END AS a, b, y "
              "FROM wide")  # in the second chunk of five: the read is not over when the error comes
    query(db, "DO $$\n"
              "import gc\n"
              "plpy.execute('SELECT sqlml.version()')\n"
              "from sqlml.server import batch\n"
              "readers = {batch._chunks.__code__, batch._read_rows.__code__}\n"
              "try:\n"
              f"    {call}\n"
              "except Exception as e:\n"
              "    held = e\n"
              "plpy.notice('error: ' + str(held))\n"
              "gc.collect()\n"
              "open_readers = sum(type(g).__name__ == 'generator' and g.gi_code in readers and g.gi_frame is not None\n"
              "                   for g in gc.get_objects())\n"
              "plpy.notice(f'open: {open_readers}')\n"
              "del held\n"  # the last reference to the error: an unclosed reader would close only here
              "$$ LANGUAGE plpython3u")
    error, still_open = [n.split("NOTICE:  ")[1].strip() for n in db.notices[-2:]]
    assert "float32 range" in error, error
    assert still_open == "open: 0"


def test_a_cast_created_while_the_chunks_are_read_is_not_run(db, hooks, wide):
    """The read is planned once, after its check (``reach``): a cast created between two chunks (here
    by a trigger on the scored table, as another role could from another session) is not what the
    later chunks run."""
    query(db, "DROP TABLE IF EXISTS hooked_planted, planted, planted_log")
    query(db, "DO $$ BEGIN CREATE TYPE planted_tag AS ENUM ('x', 'y', 'z'); "
              "EXCEPTION WHEN duplicate_object THEN END $$")
    query(db, "CREATE TABLE planted AS SELECT id, a, b::planted_tag AS b FROM wide")
    query(db, "ANALYZE planted")
    query(db, "CREATE TABLE planted_log (who text)")
    query(db, """CREATE OR REPLACE FUNCTION planted_text(t planted_tag) RETURNS text VOLATILE LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO planted_log VALUES (current_user); RETURN format('%s', t); END $$""")
    query(db, """CREATE OR REPLACE FUNCTION plant_cast() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                   IF NOT EXISTS (SELECT 1 FROM pg_cast WHERE castsource = 'planted_tag'::regtype) THEN
                     CREATE CAST (planted_tag AS text) WITH FUNCTION planted_text(planted_tag);
                   END IF;
                   RETURN NULL;
                 END $$""")
    try:
        with hooked(db, "planted", "CREATE TRIGGER planting AFTER INSERT ON {t} FOR EACH STATEMENT "
                                   "EXECUTE FUNCTION plant_cast()"):
            assert scalar(db, "SELECT sqlml.score('wide', 'planted', 'hooked_planted', 'id')") == 70000
            assert scalar(db, "SELECT count(*) FROM pg_cast WHERE castsource = 'planted_tag'::regtype") == 1  # planted
    finally:
        query(db, "DROP CAST IF EXISTS (planted_tag AS text)")
    assert scalar(db, "SELECT count(*) FROM planted_log") == 0
    assert column(db, "SELECT prediction FROM hooked_planted ORDER BY id") == wide


def test_the_insert_checks_what_the_table_holds_it_to(db, hooks, wide_reg):
    """A NOT NULL an event trigger put on the created table (tuples are inserted unchecked, so such
    a table is written by the INSERT): PostgreSQL's own error, 23502, and no table left."""
    query(db, "DROP TABLE IF EXISTS hooked_notnull")
    with hooked(db, "notnull", "ALTER TABLE {t} ALTER COLUMN probabilities SET NOT NULL"):
        err = pytest.raises(psycopg2.Error, query, db,
                            "SELECT sqlml.score('wide_reg', 'wide_reg', 'hooked_notnull', 'id')").value
    assert err.pgcode == "23502" and 'column "probabilities"' in err.pgerror
    assert scalar(db, "SELECT to_regclass('hooked_notnull')") is None


def test_tuples_are_not_written_where_their_owner_may_not_insert(db, dsn, hooks):
    """``insert_tuples`` checks no privilege: a table its owner may not insert into (an event
    trigger revoked it) goes through the INSERT, which refuses it (42501), and nothing is written."""
    roles = create_roles(db, dsn)
    try:
        usr = roles["usr"]
        query(db, f'GRANT SELECT ON people TO "{usr}"')
        query(db, f'GRANT CREATE ON SCHEMA public TO "{usr}"')
        query(db, "SELECT sqlml.grant('sp', %s, 'predict')", (usr,))
        conn = roles.connect("usr")
        with hooked(db, "revoked", "REVOKE INSERT ON {t} FROM CURRENT_USER", conn):
            err = pytest.raises(psycopg2.Error, query, conn,
                                "SELECT sqlml.score('sp', 'people', 'hooked_revoked', 'id')").value
        assert err.pgcode == "42501" and "permission denied for table hooked_revoked" in err.pgerror
        assert scalar(db, "SELECT to_regclass('hooked_revoked')") is None
        assert scalar(conn, "SELECT sqlml.score('sp', 'people', 'usr_scored', 'id')") == 3000  # it may otherwise
        query(db, "DROP TABLE usr_scored")
        query(db, f'REVOKE CREATE ON SCHEMA public FROM "{usr}"')
    finally:
        drop_roles(db, roles)


def test_types_of_pg_temp_do_not_stand_in_for_pg_catalogs(dsn, db):
    """Domains named like the types score writes (pg_temp comes first for types), whose CHECK calls
    PL/Python: not what the scored table is made of nor what its INSERT casts to, so the backend
    may let go of the GIL while it writes (a PL/Python call then would crash the backend)."""
    assert datums_available(db)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        query(conn, """CREATE FUNCTION pg_temp.hijacked(x anyelement) RETURNS bool LANGUAGE sql AS
                       $$ SELECT sqlml.version() IS NOT NULL $$""")
        for name, base in [("int4", "int4"), ("int8", "int8"), ("float8", "float8"), ("text", "text"),
                           ("int2", "int2")]:
            query(conn, f"CREATE DOMAIN pg_temp.{name} AS pg_catalog.{base} CHECK (pg_temp.hijacked(VALUE))")
        query(conn, "DROP TABLE IF EXISTS people_temp_types")
        assert scalar(conn, "SELECT sqlml.score('sp', 'people', 'people_temp_types', 'id')") == 3000
        assert query(conn, "SELECT atttypid::int FROM pg_attribute WHERE attnum > 0 AND "
                           "attrelid = 'people_temp_types'::regclass ORDER BY attnum") == \
            [(23,), (701,), (25,), (1022,)]  # pg_catalog's int4, float8, text, float8[]
        assert query(conn, "SELECT prediction FROM people_temp_types ORDER BY id") == \
            query(db, "SELECT sqlml.predict('sp', t) FROM people t ORDER BY id")
    finally:
        conn.close()


def test_null_ids_are_refused_by_name(db):
    """An integer id column with NULLs cannot join its scores back: a clear error (before, the ids
    of the rows after a NULL were shifted)."""
    query(db, "DROP TABLE IF EXISTS people_null_ids, people_null_ids_scored")
    query(db, "CREATE TABLE people_null_ids AS SELECT * FROM people")
    query(db, "UPDATE people_null_ids SET id = NULL WHERE id = 1500")
    err = pytest.raises(psycopg2.Error, query, db,
                        "SELECT sqlml.score('sp', 'people_null_ids', 'people_null_ids_scored', 'id')").value
    assert err.pgcode == "23502" and "id column holds NULL" in err.pgerror
    assert scalar(db, "SELECT to_regclass('people_null_ids_scored')") is None
