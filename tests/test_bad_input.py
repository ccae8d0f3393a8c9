"""Bad input: every case is one clear error and writes nothing.

A table of (case, SQL, SQLSTATE, fragment of the primary message) run through one helper, which
checks the SQLSTATE, that the message names the problem (the fragment), that it is sqlml's own
("sqlml: ...") unless PostgreSQL itself refused the call, that no Python traceback leaks into the
message, and that no registry table changed.
"""

from __future__ import annotations

import psycopg2
import pytest

from tests.conftest import query, scalar, sql_error

REGISTRY = ("projects", "models", "deployments", "trials", "grants", "audit_log")
T = "algorithms => '{linear}', time_budget => '2 seconds'"  # for the cases that get as far as training
ROW = """'{"x1": 1.5, "x2": 2, "cat": "a"}'::jsonb"""


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, """
        CREATE TABLE bi AS
        SELECT i AS id, (i % 11)::float8 AS x1, (i % 7)::float8 AS x2, (ARRAY['a', 'b', 'c'])[i % 3 + 1] AS cat,
               ((i % 11) * 3.0 + (i % 7))::float8 AS y, CASE WHEN (i % 11) > 5 THEN 'big' ELSE 'small' END AS label,
               NULL::float8 AS empty_col, date '2024-01-01' + i AS day, 'one'::text AS const
        FROM generate_series(1, 200) AS i;
        CREATE TABLE bi_empty AS SELECT * FROM bi WHERE false;
        CREATE TABLE bi_one AS SELECT * FROM bi WHERE id = 1;
        CREATE TABLE bi_null_target AS SELECT id, x1, x2, NULL::float8 AS y, NULL::text AS label FROM bi;
        CREATE TABLE bi_nan_target AS SELECT id, x1, x2, 'NaN'::float8 AS y FROM bi;
        CREATE TABLE bi_inf AS SELECT id, CASE WHEN id = 7 THEN 'Infinity'::float8 ELSE x1 END AS x1, x2, y FROM bi;
        CREATE TABLE bi_inf_target AS SELECT id, x1, x2, CASE WHEN id = 7 THEN '-Infinity'::float8 ELSE y END AS y FROM bi;
        CREATE TABLE scored_already (id int);
    """)
    query(conn, f"SELECT * FROM sqlml.train('bi', 'SELECT x1, x2, cat, y FROM bi', 'y', {T})")
    query(conn, f"SELECT * FROM sqlml.train('bin', 'SELECT x1, x2, label FROM bi', 'label', {T})")
    yield conn
    conn.close()


# (case, SQL, SQLSTATE, fragment of the primary message). Cases whose id starts with "pg:" are
# refused by PostgreSQL itself before sqlml runs, so their message is PostgreSQL's.
CASES = [
    # training: the relation and its columns
    ("unknown relation", f"SELECT * FROM sqlml.train('p', 'no_such_table', 'y', {T})", "42P01", 'relation "no_such_table" does not exist'),
    ("empty relation text", f"SELECT * FROM sqlml.train('p', '  ', 'y', {T})", "42601", "relation is empty"),
    ("relation not a query", f"SELECT * FROM sqlml.train('p', 'SELEC x FROM bi', 'y', {T})", "42601", "neither a table name nor a valid SELECT"),
    ("missing target", f"SELECT * FROM sqlml.train('p', 'bi', 'nope', {T})", "42703", 'column "nope" not found in bi'),
    ("NULL target argument", f"SELECT * FROM sqlml.train('p', 'bi', NULL, {T})", "22023", "target is empty"),
    ("target NULL in every row", f"SELECT * FROM sqlml.train('p', 'bi_null_target', 'y', exclude => '{{label}}', {T})", "22000", 'target "y" is NULL in every row'),
    ("label NULL in every row", f"SELECT * FROM sqlml.train('p', 'bi_null_target', 'label', exclude => '{{y}}', {T})", "22000", 'target "label" is NULL in every row'),
    ("target NaN in every row", f"SELECT * FROM sqlml.train('p', 'bi_nan_target', 'y', {T})", "22000", 'target "y" is NULL in every row'),
    ("single class", f"SELECT * FROM sqlml.train('p', 'bi', 'const', exclude => '{{y,label,empty_col}}', {T})", "22000", "single class"),
    ("empty relation", f"SELECT * FROM sqlml.train('p', 'bi_empty', 'y', {T})", "22000", "bi_empty has no rows"),
    ("one row", f"SELECT * FROM sqlml.train('p', 'bi_one', 'y', exclude => '{{empty_col}}', {T})", "22000", "training needs at least 10"),
    ("text target for regression", f"SELECT * FROM sqlml.train('p', 'bi', 'label', task => 'regression', {T})", "42804", "regression needs a numeric target"),
    ("date target", f"SELECT * FROM sqlml.train('p', 'bi', 'day', {T})", "42804", "sqlml cannot predict"),
    ("money target", f"SELECT * FROM sqlml.train('p', 'SELECT x1, x2, y::numeric::money AS m FROM bi', 'm', {T})", "42804", "has type money, which sqlml cannot predict"),
    ("all-NULL feature", f"SELECT * FROM sqlml.train('p', 'bi', 'y', {T})", "22000", 'column "empty_col" is NULL in every row'),
    ("Infinity in a feature", f"SELECT * FROM sqlml.train('p', 'bi_inf', 'y', {T})", "22000", 'column "x1" contains Infinity in 1 row'),
    ("Infinity in the target", f"SELECT * FROM sqlml.train('p', 'bi_inf_target', 'y', {T})", "22000", 'target "y" contains Infinity'),
    ("unknown excluded column", f"SELECT * FROM sqlml.train('p', 'bi', 'y', exclude => '{{nope}}', {T})", "42703", 'excluded column "nope" not found'),
    ("everything excluded", f"SELECT * FROM sqlml.train('p', 'SELECT x1, y FROM bi', 'y', exclude => '{{x1}}', {T})", "22000", "no feature columns besides the target"),
    # training: the arguments
    ("invalid project name", f"SELECT * FROM sqlml.train('no spaces!', 'bi', 'y', {T})", "22023", 'invalid project name "no spaces!"'),
    ("NULL project", f"SELECT * FROM sqlml.train(NULL, 'bi', 'y', {T})", "22023", "invalid project name"),
    ("zero time budget", "SELECT * FROM sqlml.train('p', 'bi', 'y', time_budget => '0 seconds')", "22023", "time_budget of 0.0 seconds is out of range"),
    ("negative time budget", "SELECT * FROM sqlml.train('p', 'bi', 'y', time_budget => '-5 minutes')", "22023", "time_budget of -300.0 seconds is out of range"),
    ("absurd time budget", "SELECT * FROM sqlml.train('p', 'bi', 'y', time_budget => '100 years')", "22023", "is out of range"),
    ("NULL time budget", "SELECT * FROM sqlml.train('p', 'bi', 'y', time_budget => NULL)", "22023", "time_budget of None seconds"),
    ("unknown algorithm", "SELECT * FROM sqlml.train('p', 'bi', 'y', algorithms => '{linear,deep_magic}')", "22023", 'unknown algorithm "deep_magic"'),
    ("empty algorithms", "SELECT * FROM sqlml.train('p', 'bi', 'y', algorithms => '{}')", "22023", "algorithms is empty"),
    ("unknown metric", "SELECT * FROM sqlml.train('p', 'bi', 'y', metric => 'vibes')", "22023", 'unknown metric "vibes"'),
    ("metric of another task", f"SELECT * FROM sqlml.train('p', 'SELECT x1, x2, y FROM bi', 'y', metric => 'roc_auc', {T})", "22023", 'unknown metric "roc_auc" for regression'),
    ("unknown task", "SELECT * FROM sqlml.train('p', 'bi', 'y', task => 'clustering')", "22023", 'unknown task "clustering"'),
    ("test_size too large", "SELECT * FROM sqlml.train('p', 'bi', 'y', test_size => 0.9)", "22023", "test_size is 0.9"),
    ("pg: bad JSON options", "SELECT * FROM sqlml.train('p', 'bi', 'y', options => '{bad')", "22P02", "invalid input syntax for type json"),
    ("options not an object", "SELECT * FROM sqlml.train('p', 'bi', 'y', options => '[1, 2]')", "22023", "options must be a JSON object"),
    ("unknown option", """SELECT * FROM sqlml.train('p', 'bi', 'y', options => '{"sed": 1}')""", "22023", 'unknown option "sed"'),
    ("option of the wrong type", """SELECT * FROM sqlml.train('p', 'bi', 'y', options => '{"seed": "seven"}')""", "22023", 'option "seed" must be int'),
    ("option with a bad value", """SELECT * FROM sqlml.train('p', 'bi', 'y', options => '{"deploy": "always"}')""", "22023", 'option "deploy" is'),
    ("negative max_rows", """SELECT * FROM sqlml.train('p', 'bi', 'y', options => '{"max_rows": -1}')""", "22023", 'option "max_rows" must be between 1 and'),
    ("folds out of range", """SELECT * FROM sqlml.train('p', 'bi', 'y', options => '{"folds": 0}')""", "22023", 'option "folds" must be between 1 and 10'),
    # scoring
    ("predict unknown project", f"SELECT sqlml.predict('nope', {ROW})", "42704", 'project "nope" does not exist'),
    ("predict NULL project", f"SELECT sqlml.predict(NULL::text, {ROW})", "22023", "project is NULL"),
    ("predict a version that does not exist", f"SELECT sqlml.predict('bi@99', {ROW})", "42704", 'project "bi" has no version 99'),
    ("predict missing feature", """SELECT sqlml.predict('bi', '{"x1": 1}'::jsonb)""", "42703", "'x2', 'cat' missing"),
    ("predict wrong type", """SELECT sqlml.predict('bi', '{"x1": "abc", "x2": 2, "cat": "a"}'::jsonb)""", "42804", 'feature "x1" must be a number, got "abc"'),
    ("predict a list for a number", """SELECT sqlml.predict('bi', '{"x1": [1], "x2": 2, "cat": "a"}'::jsonb)""", "42804", 'feature "x1" must be a number'),
    ("predict Infinity", """SELECT sqlml.predict('bi', '{"x1": "Infinity", "x2": 2, "cat": "a"}'::jsonb)""", "22023", 'feature "x1" is Infinity'),
    ("predict -Infinity in an array", "SELECT sqlml.predict('bin', ARRAY[1, '-Infinity']::float8[])", "22023", 'feature "x2" is -inf'),
    ("predict array of the wrong length", "SELECT sqlml.predict('bin', ARRAY[1, 2, 3]::float8[])", "22023", "needs 2 values in the array, got 3"),
    ("predict array for text features", "SELECT sqlml.predict('bi', ARRAY[1, 2, 3]::float8[])", "42804", "has non-numeric features (cat)"),
    ("predict a JSON array", "SELECT sqlml.predict('bi', '[1, 2, 3]'::jsonb)", "42804", "features must be a JSON object"),
    ("predict a JSON number", "SELECT sqlml.predict('bi', '5'::jsonb)", "42804", "features must be a JSON object"),
    ("predict_proba of a regression", f"SELECT sqlml.predict_proba('bi', {ROW})", "42809", 'project "bi" is a regression'),
    ("predict_batch without id column", "SELECT * FROM sqlml.predict_batch('bi', 'bi', NULL)", "22023", "id_column is NULL"),
    ("predict_batch unknown id column", "SELECT * FROM sqlml.predict_batch('bi', 'bi', 'nope')", "42703", "'nope' not found in bi"),
    ("predict_batch missing features", "SELECT * FROM sqlml.predict_batch('bi', 'SELECT id, x1 FROM bi', 'id')", "42703", "'x2', 'cat' not found"),
    ("score into a query", "SELECT sqlml.score('bi', 'bi', 'SELECT 1', 'id')", "22023", "is not a table name"),
    ("pg: score into an existing table", "SELECT sqlml.score('bi', 'bi', 'scored_already', 'id')", "42P07", 'relation "scored_already" already exists'),
    # deployment and grants
    ("deploy unknown project", "SELECT * FROM sqlml.deploy('nope')", "42704", 'project "nope" does not exist'),
    ("deploy unknown strategy", "SELECT * FROM sqlml.deploy('bi', 'newest')", "22023", 'unknown deployment strategy "newest"'),
    ("deploy a version that does not exist", "SELECT * FROM sqlml.deploy('bi', version => 42)", "42704", 'project "bi" has no version 42'),
    ("rollback with no previous version", "SELECT * FROM sqlml.deploy('bi', 'rollback')", "55000", "no previous deployment to roll back to"),
    ("grant unknown privilege", "SELECT sqlml.grant('bi', 'postgres', 'superuser')", "22023", 'unknown privilege "superuser"'),
    ("grant to a role that does not exist", "SELECT sqlml.grant('bi', 'no_such_role', 'predict')", "42704", 'role "no_such_role" does not exist'),
    ("grant on unknown project", "SELECT sqlml.grant('nope', 'postgres', 'predict')", "42704", 'project "nope" does not exist'),
    ("has_privilege unknown privilege", "SELECT sqlml.has_privilege('bi', 'fly')", "22023", 'unknown privilege "fly"'),
]


def counts(conn) -> dict:
    return {t: scalar(conn, f"SELECT count(*) FROM sqlml.{t}") for t in REGISTRY}


@pytest.mark.parametrize("case, sql, sqlstate, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_writes_nothing(db, case, sql, sqlstate, fragment):
    before = counts(db)
    with pytest.raises(psycopg2.Error) as info:
        query(db, sql)
    e = info.value
    primary = e.diag.message_primary or ""
    assert e.pgcode == sqlstate, (e.pgcode, e.pgerror)
    assert fragment in primary, primary
    assert "Traceback" not in primary and "internal error" not in primary, primary
    if not case.startswith("pg:"):
        assert primary.startswith("sqlml: ") and not primary.startswith("sqlml: sqlml:"), primary
    assert counts(db) == before


def test_a_money_column_is_left_out_with_a_notice_like_other_unsupported_types(db):
    db.notices.clear()
    query(db, f"SELECT * FROM sqlml.train('with_money', 'SELECT x1, x2, y, (x1 * 100)::numeric::money AS price FROM bi', "
              f"'y', {T})")
    assert any('column "price" is not used: type money is not supported' in n for n in db.notices), db.notices
    features = scalar(db, "SELECT feature_schema->'features' FROM sqlml.models WHERE project = 'with_money'")
    assert [f["name"] for f in features] == ["x1", "x2"]


def test_unseen_category_and_missing_values_are_predicted_not_refused(db):
    """Not errors, by design: an unseen category scores like a missing one, and NULL and NaN are
    missing values, at scoring as in training (a float8 NaN in a table is trained on as missing, so
    scoring the same rows must not fail)."""
    seen = scalar(db, """SELECT sqlml.predict('bi', '{"x1": 1.5, "x2": 2, "cat": "a"}'::jsonb)""")
    unseen = scalar(db, """SELECT sqlml.predict('bi', '{"x1": 1.5, "x2": 2, "cat": "zebra"}'::jsonb)""")
    missing = scalar(db, """SELECT sqlml.predict('bi', '{"x1": null, "x2": 2, "cat": null}'::jsonb)""")
    nan_row = scalar(db, """SELECT sqlml.predict('bi', '{"x1": "NaN", "x2": 2, "cat": null}'::jsonb)""")
    nan_array = scalar(db, "SELECT sqlml.predict('bin', ARRAY['NaN', NULL]::float8[])")
    assert all(v == v for v in (seen, unseen, missing, nan_row, nan_array))  # numbers, not NaN
    assert nan_row == missing


# Column names PostgreSQL allows that are not plain identifiers: spaces, quotes, a semicolon and
# SQL, non-ASCII letters, a newline, a name skl2onnx would rename to an existing one ("my_col").
NAMES = {"num": "my col", "twin": "my_col", "quote": 'x"q;y', "sql": "it's; DROP TABLE bi; --", "cat": "naïve\nnom",
         "day": "le jour", "target": "the target", "label": 'clé "étiquette"'}


def test_column_names_that_are_not_identifiers_work_end_to_end(db, dsn, tmp_path):
    import html
    import json
    import subprocess
    import sys

    from sqlml.data.ingest import quote_ident as q

    n = NAMES
    query(db, f"""CREATE TABLE odd_names AS
        SELECT i AS id, (i % 11)::float8 AS {q(n['num'])}, (i % 3)::float8 AS {q(n['twin'])}, (i % 7)::float8 AS {q(n['quote'])},
               (i % 5)::float8 AS {q(n['sql'])}, (ARRAY['a', 'b', 'c'])[i % 3 + 1] AS {q(n['cat'])},
               date '2024-01-01' + i AS {q(n['day'])},
               ((i % 11) * 3.0 + (i % 7) + (i % 3))::float8 AS {q(n['target'])},
               CASE WHEN (i % 11) > 5 THEN 'big' ELSE 'small' END AS {q(n['label'])}
        FROM generate_series(1, 200) AS i""")
    query(db, f"SELECT * FROM sqlml.train('odd', 'odd_names', %s, exclude => %s, {T})", (n["target"], [n["label"]]))
    query(db, f"SELECT * FROM sqlml.train('odd_cls', 'odd_names', %s, exclude => %s, {T})", (n["label"], [n["target"]]))
    row = {n["num"]: 4, n["twin"]: 1, n["quote"]: 2, n["sql"]: 3, n["cat"]: "b", n["day"]: "2024-02-01"}
    by_row = query(db, "SELECT sqlml.predict('odd', o) FROM odd_names o WHERE id = 1")[0][0]
    by_json = scalar(db, "SELECT sqlml.predict('odd', %s::jsonb)", (json.dumps({**row, n["num"]: 1, n["twin"]: 1,
                                                                                  n["quote"]: 1, n["sql"]: 1,
                                                                                  n["cat"]: "b", n["day"]: "2024-01-02"}),))
    assert abs(by_row - by_json) < 1e-6 and abs(by_row - 5.0) < 0.5  # 1 * 3 + 1 + 1
    assert scalar(db, "SELECT sqlml.predict_label('odd_cls', %s::jsonb)", (json.dumps(row),)) in ("big", "small")
    batch = dict(query(db, "SELECT id, prediction FROM sqlml.predict_batch('odd', 'odd_names', 'id')"))
    assert len(batch) == 200 and abs(batch["1"] - by_row) < 1e-5  # float32 sums in another order
    assert scalar(db, "SELECT sqlml.score('odd_cls', 'odd_names', 'odd_scores', 'id')") == 200
    card = tmp_path / "odd.html"
    done = subprocess.run([sys.executable, "-m", "sqlml.cli", "report", "odd", "--out", str(card), "--dsn", dsn],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = card.read_text()
    assert html.escape(n["quote"]) in page and html.escape(n["sql"]) in page


def test_a_read_only_transaction_is_told_why_a_relation_cannot_be_read(db, dsn):
    """Checking what a relation runs takes a temporary view, which a read-only transaction (a
    session with default_transaction_read_only, a standby) cannot create: a clear 25006."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        query(conn, "SET default_transaction_read_only = on")
        e = sql_error(conn, "SELECT * FROM sqlml.profile('bi')")
        assert e.pgcode == "25006" and "a read-only transaction cannot create" in e.diag.message_primary
    finally:
        conn.close()
