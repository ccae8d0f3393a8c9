"""The upgrade from the released 0.1.0: a database the 0.1.0 code made and used, upgraded in place,
is a fresh install of this version that kept its data, and its models predict as before.

The cluster's server first imports the released package (commit RELEASED, extracted from git), so
the registry, its history and the job store under $PGDATA are written by 0.1.0 itself. Then the
server restarts on this checkout's code and ``ALTER EXTENSION sqlml UPDATE`` runs the upgrade
script built from sql/. A schema change made in sql/sqlml.sql but forgotten in the migration
(sql/upgrades/) shows up here as a difference from the fresh install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import psycopg2
import pytest

from sqlml import __version__
from sqlml.devcluster import as_user, throwaway
from sqlml.governor.store import STORE_VERSION
from sqlml.install import CHECKOUT
from tests.catalog import differences, extension_catalog
from tests.conftest import query, scalar

RELEASED = "715d44e"  # sqlml 0.1.0 as released: its Python package and sql/sqlml--0.1.0.sql
ALICE, BOB = "upgrade_alice", "upgrade_bob"  # a developer who owns the projects, a user granted some
CRON_JOB = "sqlml-retrain-price"
RETRAIN = ("SELECT * FROM sqlml.retrain_if_drifted('price', 'houses_new', 'houses', "
           "time_budget => '10 seconds')")
HOUSES = """
    CREATE TABLE {name} AS
    SELECT i AS id, (i % 9 + {shift})::float8 AS rooms, (ARRAY['north', 'south', 'east'])[i % 3 + 1] AS area,
           ((i % 9 + {shift}) * 1000 + i % 3 * 250 + i * 7919 % 600)::float8 AS price,
           CASE WHEN (i % 9 + {shift}) * 2 + i % 3 + i * 31 % 5 > 11 THEN 'large' ELSE 'small' END AS size
    FROM generate_series(1, 300) AS i"""


def connect(dsn, user=None):
    conn = psycopg2.connect(dsn, **({"user": user} if user else {}))
    conn.autocommit = True
    return conn


@pytest.fixture(scope="module")
def released_site():
    """A site directory whose .pth puts the released sqlml first on sys.path, then this venv's
    site-packages for its dependencies (the released pins are this venv's).

    Not under pytest's temporary root: every pytest run of the machine's user makes that private
    again at its start, and the server would lose the released code in the middle of the test."""
    root = Path(tempfile.mkdtemp(prefix="sqlml-released-"))
    try:
        code = root / "code"
        code.mkdir()
        archive = subprocess.run(["git", "-C", str(CHECKOUT), "archive", RELEASED, "sqlml", "sql"],
                                 capture_output=True)
        if archive.returncode != 0:
            pytest.fail(f"the upgrade test needs the released commit {RELEASED} in the git history "
                        f"(a full clone, not a shallow one): {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
        site = root / "site"
        site.mkdir()
        (site / "sqlml-released.pth").write_text(f"{code}\n{sysconfig.get_paths()['purelib']}\n")
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o055)  # the server's OS user reads it
        yield site
    finally:
        shutil.rmtree(root, ignore_errors=True)


def predictions(conn) -> dict:
    """Every model's answers on fixed rows: the value, and for classifiers the label and probabilities."""
    out = {}
    for project, version, task in query(conn, "SELECT project, version, task FROM sqlml.models ORDER BY 1, 2"):
        ref = f"{project}@{version}"
        out[ref] = query(conn, "SELECT id, sqlml.predict(%s, h) FROM houses h WHERE id %% 7 = 0 ORDER BY id", (ref,))
        if task != "regression":
            out[ref + " label, proba"] = query(
                conn, "SELECT id, sqlml.predict_label(%s, h), sqlml.predict_proba(%s, h) FROM houses h "
                      "WHERE id %% 7 = 0 ORDER BY id", (ref, ref))
    out["deployed"] = query(conn, "SELECT project, version, model_id FROM sqlml.deployed ORDER BY 1")
    return out


def registry_rows(conn) -> dict:
    """Every row of every sqlml table, and the position of every sqlml sequence."""
    rows = {}
    for (table,) in query(conn, "SELECT relname FROM pg_class WHERE relnamespace = 'sqlml'::regnamespace "
                                "AND relkind = 'r' ORDER BY 1"):
        rows[table] = sorted(r[0] for r in query(conn, f"SELECT to_jsonb(t)::text FROM sqlml.{table} t"))
    for (seq,) in query(conn, "SELECT relname FROM pg_class WHERE relnamespace = 'sqlml'::regnamespace "
                              "AND relkind = 'S' ORDER BY 1"):
        rows[seq] = query(conn, f"SELECT last_value, is_called FROM sqlml.{seq}")
    return rows


def jobs(conn) -> list:
    return query(conn, "SELECT job_id, kind, state, role, database, project, error FROM sqlml.jobs ORDER BY 1")


def cron_jobs(conn) -> list:
    return query(conn, "SELECT jobname, schedule, command, database, username, active FROM cron.job ORDER BY 1")


def store_version(cluster) -> int:
    """The job store's PRAGMA user_version, read as the server's OS user (a file root opened
    could leave a journal the server cannot write)."""
    out = as_user(cluster.user, [sys.executable, "-c",
                                 "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("
                                 "'PRAGMA user_version').fetchone()[0])", str(cluster.data / "sqlml" / "jobs.db")])
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def public_functions(conn) -> list[str]:
    return [r[0] for r in query(conn, "SELECT p.oid::regprocedure::text FROM pg_proc p "
                                      "WHERE p.pronamespace = 'sqlml'::regnamespace "
                                      "AND has_function_privilege('public', p.oid, 'EXECUTE') ORDER BY 1")]


def populate(cluster) -> None:
    """Use sqlml 0.1.0 as a team would: several versions, deployments and a rollback, grants,
    evaluations, drift, batch scoring (audit rows and jobs), a pg_cron schedule."""
    dsn = cluster.dsn("sqlml")
    admin = connect(dsn)
    for name in ("houses", "houses_new"):
        query(admin, HOUSES.format(name=name, shift=0 if name == "houses" else 3))
    query(admin, f"CREATE ROLE {ALICE} LOGIN IN ROLE sqlml_developer")
    query(admin, f"CREATE ROLE {BOB} LOGIN IN ROLE sqlml_user")
    query(admin, f"GRANT SELECT ON houses, houses_new TO {ALICE}, {BOB}")
    query(admin, f"GRANT CREATE ON SCHEMA public TO {ALICE}")
    alice = connect(dsn, ALICE)
    fixed = "test_size => 0.25, time_budget => '2 seconds'"  # every training uses its budget whole: keep it short
    for project, target, algorithm, opts in [
            ("price", "price", "linear", '{"seed": 1, "deploy": "never"}'),
            ("price", "price", "lightgbm", '{"seed": 2, "deploy": "never", "n_estimators": 8}'),
            ("size", "size", "linear", '{"seed": 1, "deploy": "never"}'),
            ("size", "size", "lightgbm", '{"seed": 3, "deploy": "never", "n_estimators": 8}')]:
        relation = f"SELECT rooms, area, {target} FROM houses"
        query(alice, f"SELECT * FROM sqlml.train(%s, %s, %s, algorithms => %s, options => %s, {fixed})",
              (project, relation, target, [algorithm], opts))
    for project, strategy, version in [("price", None, 1), ("price", None, 2), ("price", "rollback", None),
                                       ("size", None, 2)]:
        query(alice, "SELECT * FROM sqlml.deploy(%s, coalesce(%s, 'best_score'), %s)", (project, strategy, version))
    query(alice, "SELECT sqlml.grant('size', %s, 'predict')", (BOB,))
    query(alice, "SELECT sqlml.grant('price', 'public', 'predict')")
    query(alice, "SELECT sqlml.grant('price', %s, 'train')", (BOB,))
    query(alice, "SELECT sqlml.revoke('price', %s, 'train')", (BOB,))
    query(alice, "SELECT * FROM sqlml.evaluate('size', 'houses_new')")
    query(alice, "SELECT * FROM sqlml.evaluate('price', 'houses_new', 2)")
    query(alice, "SELECT * FROM sqlml.monitor('price', 'houses_new')")
    query(alice, "SELECT * FROM sqlml.monitor('size', 'houses_new')")
    query(alice, "SELECT count(*) FROM sqlml.predict_batch('price', 'houses', 'id')")
    query(alice, "SELECT sqlml.score('size', 'houses', 'size_scores', 'id')")
    bob = connect(dsn, BOB)
    assert scalar(bob, "SELECT count(*) FROM sqlml.predict_batch('size', 'houses_new', 'id')") == 300
    if scalar(admin, "SHOW shared_preload_libraries") == "pg_cron":
        query(admin, "CREATE EXTENSION pg_cron")
        query(admin, "SELECT cron.schedule(%s, '0 3 * * *', %s)", (CRON_JOB, RETRAIN))
    for c in (admin, alice, bob):
        c.close()


@pytest.fixture(scope="module")
def upgrade(released_site):
    """A cluster whose database ``sqlml`` was made and used by sqlml 0.1.0, then upgraded by
    ALTER EXTENSION; database ``released`` was made by 0.1.0 and left at 0.1.0 (for
    ``sqlml install``); what was recorded before the upgrade, and after it."""
    cluster = throwaway("sqlml-upgrade-", site_packages=str(released_site))
    state = {"cluster": cluster}
    try:
        cluster.create_database("sqlml", extension=False)
        conn = connect(cluster.dsn("sqlml"))
        query(conn, "CREATE EXTENSION sqlml VERSION '0.1.0' CASCADE")
        assert scalar(conn, "SELECT sqlml.version()") == "0.1.0", "the server must run the released package"
        populate(cluster)
        cluster.create_database("released", extension=False)
        released = connect(cluster.dsn("released"))
        query(released, "CREATE EXTENSION sqlml VERSION '0.1.0' CASCADE")
        query(released, HOUSES.format(name="houses", shift=0))
        query(released, "SELECT * FROM sqlml.train('price', 'SELECT rooms, area, price FROM houses', 'price', "
                        "algorithms => '{linear}', time_budget => '2 seconds', options => '{\"seed\": 4}')")
        state["before"] = {"predictions": predictions(conn), "rows": registry_rows(conn), "jobs": jobs(conn),
                           "store_version": store_version(cluster), "released": predictions(released)}
        if scalar(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'"):
            state["before"]["cron"] = cron_jobs(conn)
        conn.close()
        released.close()

        cluster.environment["SQLML_SITE_PACKAGES"] = sysconfig.get_paths()["purelib"]  # this checkout's code
        cluster.restart()
        conn = connect(cluster.dsn("sqlml"))
        state["server_after_restart"] = scalar(conn, "SELECT sqlml.version()")
        state["jobs_on_0.1.0_schema"] = jobs(conn)  # the new code reads (and migrates) the old store
        query(conn, "ALTER EXTENSION sqlml UPDATE")
        state["after"] = {"rows": registry_rows(conn), "jobs": jobs(conn), "predictions": predictions(conn),
                          "store_version": store_version(cluster), "catalog": extension_catalog(conn),
                          "public": public_functions(conn)}
        query(conn, "SELECT count(*) FROM sqlml.predict_batch('price', 'houses', 'id')")
        state["jobs_after_a_new_one"] = jobs(conn)  # the migrated store takes new jobs
        if "cron" in state["before"]:
            state["after"]["cron"] = cron_jobs(conn)
            query(conn, "EXPLAIN " + RETRAIN)  # the scheduled command still resolves on 0.2.0
        state["explain"] = explain_and_import(conn)
        conn.close()
        fresh = connect(cluster.create_database("fresh"))
        state["fresh"] = {"catalog": extension_catalog(fresh), "public": public_functions(fresh)}
        fresh.close()
        yield state
    finally:
        cluster.destroy()


def explain_and_import(conn) -> dict:
    """Issue 19's functions on the upgraded database: a 0.1.0 model (no explainer kept) is refused
    cleanly, a model trained after the upgrade is explained, and a model from outside is imported."""
    from onnx import TensorProto, helper

    out = {}
    for name, sql in (("explain", "SELECT x.* FROM houses h, sqlml.explain('price', h) x WHERE h.id = 1"),
                      ("importance", "SELECT * FROM sqlml.importance('price')")):
        try:
            query(conn, sql)
        except psycopg2.Error as e:
            out[name + " of a 0.1.0 model"] = (e.pgcode, e.diag.message_primary)
    version = query(conn, "SELECT version FROM sqlml.train('price', 'SELECT id, rooms, area, price FROM houses', "
                          "'price', algorithms => '{linear}', time_budget => '2 seconds', exclude => '{id}')")[0][0]
    spec = f"price@{version}"  # the gate may keep the 0.1.0 champion deployed
    out["explained"] = query(conn, "SELECT (SELECT sum(contribution) FROM sqlml.explain(%s, h)), "
                                   "sqlml.predict(%s, h) FROM houses h WHERE h.id = 1", (spec, spec))[0]
    out["importance"] = query(conn, "SELECT feature FROM sqlml.importance(%s)", (spec,))
    f = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["rooms"], ["y"])], "g",
                              [f("rooms", TensorProto.FLOAT, [None, 1])], [f("y", TensorProto.FLOAT, [None, 1])])
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    out["imported"] = query(conn, "SELECT version, algorithm FROM sqlml.import_model('rooms', %s, 'regression', "
                                  "'houses', target => 'price')", (blob,))[0]
    out["imported predicts"] = query(conn, "SELECT sqlml.predict('rooms', h), h.rooms FROM houses h WHERE id = 5")[0]
    return out


def test_explain_and_import_work_on_the_upgraded_database(upgrade):
    got = upgrade["explain"]
    code, message = got["explain of a 0.1.0 model"]
    assert code == "0A000" and "registered before sqlml kept explainers" in message
    assert got["importance of a 0.1.0 model"][0] == "55000"
    total, predicted = got["explained"]
    assert abs(total - predicted) <= 1e-6 * max(1.0, abs(predicted))
    assert {f for (f,) in got["importance"]} == {"rooms", "area"}
    assert tuple(got["imported"]) == (1, "imported")
    assert got["imported predicts"][0] == got["imported predicts"][1]


def test_the_released_code_made_the_database_and_the_new_code_runs_it(upgrade):
    assert upgrade["server_after_restart"] == __version__ != "0.1.0"
    assert upgrade["after"]["catalog"]["extension"]["sqlml"]["version"] == __version__


def test_upgraded_database_equals_a_fresh_install(upgrade):
    diff = differences(upgrade["after"]["catalog"], upgrade["fresh"]["catalog"], ("upgraded", "fresh"))
    assert not diff, ("ALTER EXTENSION sqlml UPDATE from 0.1.0 does not give a fresh install (a schema change "
                      "missing from sql/upgrades/?):\n" + "\n".join(diff))


def test_the_catalog_comparison_sees_what_it_must(upgrade):
    """The comparison is not vacuous: every section found objects (policies, dump membership...)."""
    catalog = upgrade["fresh"]["catalog"]
    assert all(catalog[section] for section in catalog if section not in ("triggers", "types")), \
        [section for section in catalog if not catalog[section]]
    assert "sqlml.projects" in catalog["dumped"] and "models may_score" in catalog["policies"]
    assert "relation models to sqlml_user: SELECT" in catalog["privileges"]
    assert catalog["functions"]["sqlml._privileged(text)"]["security_definer"] is True


def same_answers(a, b) -> bool:
    """Equal, numbers within 1e-6 relative: 0.1.0 scored with ONNX Runtime, 0.2.0 with the compiled
    evaluator (sqlml/onnx/compiled.py), whose float32 arithmetic matches it to the last bits of a
    probability; labels, ids and versions must be identical."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_answers(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_answers(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("a, b, same", [
    (0.25, 0.25 + 1e-8, True), (0.25, 0.2501, False), (["x", [0.5, 0.5]], ["x", [0.5, 0.5 + 1e-9]], True),
    ("benign", "malignant", False), ((7, 1.0), (7, 1.0), True), ((7, 1.0), (14, 1.0), False),
])
def test_same_answers(a, b, same):
    assert same_answers(a, b) is same


def test_every_model_predicts_as_before(upgrade):
    before, after = upgrade["before"]["predictions"], upgrade["after"]["predictions"]
    assert {"price@1", "price@2", "size@1", "size@2"} <= set(before)
    assert same_answers(after, before), (after, before)


def test_registry_and_history_are_kept(upgrade):
    """Every row of every 0.1.0 table and every sequence position, unchanged (columns a later
    version adds are left out of the comparison)."""
    import json

    before, after = upgrade["before"]["rows"], upgrade["after"]["rows"]
    for name, rows in before.items():
        assert name in after, f"sqlml.{name} is gone"
        if rows and isinstance(rows[0], str):
            keys = set(json.loads(rows[0]))
            kept = sorted(json.dumps({k: v for k, v in json.loads(r).items() if k in keys}, sort_keys=True)
                          for r in after[name])
            assert kept == sorted(json.dumps(json.loads(r), sort_keys=True) for r in rows), name
        else:
            assert after[name] == rows, name
    counts = {t: len(before[t]) for t in ("projects", "models", "deployments", "grants", "audit_log",
                                          "evaluations", "drift", "trials")}
    assert min(counts.values()) > 0, counts
    assert counts["deployments"] == 4 and counts["models"] == 4


def test_job_store_is_read_and_migrated(upgrade):
    before = upgrade["before"]["jobs"]
    assert upgrade["before"]["store_version"] == 0  # 0.1.0 kept no version
    assert {(kind, state) for _, kind, state, *_ in before} >= {("train", "succeeded"), ("predict_batch", "succeeded"),
                                                                ("score", "succeeded")}
    assert upgrade["jobs_on_0.1.0_schema"] == before == upgrade["after"]["jobs"]
    assert upgrade["after"]["store_version"] == STORE_VERSION
    *kept, (job_id, kind, state, *_) = upgrade["jobs_after_a_new_one"]
    assert kept == before and (kind, state) == ("predict_batch", "succeeded") and job_id > before[-1][0]


def test_pg_cron_schedule_is_kept(upgrade):
    if "cron" not in upgrade["before"]:
        pytest.fail("the test cluster does not preload pg_cron (postgresql-15-cron missing? scripts/system-deps.sh)")
    assert upgrade["after"]["cron"] == upgrade["before"]["cron"]
    assert [j[0] for j in upgrade["before"]["cron"]] == [CRON_JOB]


def test_only_version_is_executable_by_public(upgrade):
    assert upgrade["after"]["public"] == ["sqlml.version()"]
    assert upgrade["fresh"]["public"] == ["sqlml.version()"]


def sqlml_cli(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "sqlml.cli", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"sqlml {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def test_doctor_then_install_upgrade_a_released_database_in_place(upgrade):
    """``sqlml doctor`` names the old extension and the command; ``sqlml install`` runs it and says so;
    the model trained on 0.1.0 predicts as before; doctor is then content."""
    dsn = upgrade["cluster"].dsn("released")
    doctor = sqlml_cli("doctor", "--dsn", dsn, check=False)
    assert doctor.returncode == 1, doctor.stdout
    assert f'extension sqlml 0.1.0 in database "released" is older than the sqlml {__version__}' in doctor.stdout
    assert "fix: sqlml install --no-files --dsn" in doctor.stdout and "ALTER EXTENSION sqlml UPDATE" in doctor.stdout

    out = sqlml_cli("install", "--no-files", "--dsn", dsn).stdout
    assert f"upgraded in place from 0.1.0 to {__version__}" in out, out
    conn = connect(dsn)
    try:
        assert scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'sqlml'") == __version__
        assert predictions(conn) == upgrade["before"]["released"]
    finally:
        conn.close()
    assert "already up to date" in sqlml_cli("install", "--no-files", "--dsn", dsn).stdout
    assert "all good" in sqlml_cli("doctor", "--dsn", dsn).stdout
