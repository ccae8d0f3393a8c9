"""Training twice on the same data with the same arguments returns the first version (with a
NOTICE saying so) instead of registering an identical one; force, another argument or other data
trains a new version."""

from __future__ import annotations

import psycopg2
import pytest

from tests.conftest import query

T = "algorithms => '{linear}', time_budget => '2 seconds'"


@pytest.fixture(scope="module")
def db(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    query(conn, "CREATE TABLE idem AS SELECT i AS id, (i % 13)::float8 AS x, ((i % 13) * 2.0 + i % 3)::float8 AS y "
                "FROM generate_series(1, 300) i")
    yield conn
    conn.close()


def train(conn, extra=""):
    del conn.notices[:]
    rows = query(conn, f"SELECT version, deployed FROM sqlml.train('idem', 'idem', 'y', {T}{extra})")
    return rows[0], " ".join(conn.notices)


def test_same_data_and_arguments_return_the_existing_version(db):
    assert train(db)[0] == (1, True)
    (version, deployed), notices = train(db)
    assert (version, deployed) == (1, True)
    assert "version 1 was trained on the same data with the same settings" in notices and '"force": true' in notices
    assert "trial " not in notices  # no search ran
    assert query(db, "SELECT count(*) FROM sqlml.models WHERE project = 'idem'") == [(1,)]


def test_force_another_argument_or_other_data_train_anew(db):
    assert train(db, """, options => '{"force": true}'""")[0][0] == 2
    assert train(db, ", test_size => 0.3")[0][0] == 3  # another argument
    assert train(db, ", test_size => 0.3")[0][0] == 3  # ... which is then known too
    query(db, "UPDATE idem SET y = y + 1 WHERE id = 7")
    assert train(db, ", test_size => 0.3")[0][0] == 4  # other data
