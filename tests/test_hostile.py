"""No injection: hostile relations, columns, projects, options, table names and roles change
nothing and leak nothing.

Every case runs through one helper, as "mallory" (a sqlml_developer who may read table ``pub``
only, and owns schema ``mal``) and, unless marked otherwise, as the superuser: the victim who runs
a string an attacker supplied (and "victim", a sqlml_admin who is no superuser). Each must fail
with the expected SQLSTATE and message, leave the canary table, the registry, the catalog
(classes, functions, roles, schemas, policies, triggers) and the sessions' advisory locks exactly as
they were, and never show a value of table ``secret`` in its message, notices or results.

Mallory's schema holds code reached indirectly: ``mal.lock(...)`` functions that take a session
advisory lock (an effect the read-only subtransaction cannot undo) while claiming to be IMMUTABLE,
behind an operator, a domain's CHECK, an aggregate, a cast from her enum, a view and a
row-level-security policy. Whoever runs them runs mallory's code with their own rights.
"""

from __future__ import annotations

import json
import threading

import psycopg2
import pytest

from tests.conftest import query, scalar, sql_error, wait_until
from tests.roles import create_roles, drop_roles

SECRET = "TOPSECRET"
T = "algorithms => '{linear}', time_budget => '2 seconds'"

STATE = """
SELECT string_agg(x, '|' ORDER BY x) FROM (
    SELECT 'class:' || c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname !~ '^pg_(toast_)?temp_'
    UNION ALL SELECT 'proc:' || oid::regprocedure::text FROM pg_proc
    UNION ALL SELECT 'role:' || rolname FROM pg_roles
    UNION ALL SELECT 'schema:' || nspname FROM pg_namespace
    UNION ALL SELECT 'policy:' || polname FROM pg_policy
    UNION ALL SELECT 'trigger:' || tgname FROM pg_trigger
    UNION ALL SELECT 'canary:' || status FROM canary
    UNION ALL SELECT 'seq:' || last_value FROM canary_seq
    -- held by sessions: autovacuum's ANALYZE of mal.indexed runs its index's mal.lock too, as its owner
    UNION ALL SELECT 'advisory:' || count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.locktype = 'advisory' AND a.backend_type = 'client backend'
    UNION ALL SELECT 'projects:' || (SELECT count(*) FROM sqlml.projects) || ',models:' || (SELECT count(*) FROM sqlml.models)
        || ',deployments:' || (SELECT count(*) FROM sqlml.deployments) || ',trials:' || (SELECT count(*) FROM sqlml.trials)
        || ',grants:' || (SELECT md5(string_agg(g::text, ',' ORDER BY g::text)) FROM sqlml.grants g)
        || ',audit:' || (SELECT count(*) FROM sqlml.audit_log)
) AS s(x)"""


@pytest.fixture(scope="module")
def world(dsn):
    su = psycopg2.connect(dsn)
    su.autocommit = True
    roles = create_roles(su, dsn)
    mallory = roles["dev"]
    query(su, f"""
        CREATE TABLE pub AS SELECT i AS id, (i % 7)::float8 AS a, (i % 5)::float8 AS b, ((i % 7) * 2.0 + (i % 5))::float8 AS y
                            FROM generate_series(1, 200) AS i;
        CREATE TABLE secret AS SELECT id, a, b, y, '{SECRET}-' || id AS code FROM pub;
        CREATE TABLE canary AS SELECT 'alive'::text AS status;
        CREATE SEQUENCE canary_seq;
        CREATE FUNCTION writer() RETURNS boolean LANGUAGE plpgsql VOLATILE AS
            $$ BEGIN DELETE FROM canary; RETURN true; END $$;
        CREATE FUNCTION liar() RETURNS boolean LANGUAGE plpgsql STABLE AS
            $$ BEGIN DELETE FROM canary; RETURN true; END $$;
        -- a view hides the volatile call from sqlml's parser: the read-only subtransaction must stop it
        CREATE VIEW sneaky AS SELECT * FROM pub WHERE writer();
        GRANT SELECT ON pub, sneaky TO "{mallory}";
    """)
    query(su, f"SELECT * FROM sqlml.train('mal', 'pub', 'y', {T})")
    query(su, "SELECT sqlml.grant('mal', %s, 'own')", (mallory,))
    query(su, f'CREATE SCHEMA mal AUTHORIZATION "{mallory}"')
    conns = {"mallory": roles.connect("dev"), "superuser": su, "victim": roles.connect("admin")}
    query(conns["mallory"], MALLORYS_SCHEMA)
    query(su, f'GRANT SELECT ON pub TO "{roles["admin"]}"')
    query(conns["mallory"], f'GRANT USAGE ON SCHEMA mal TO "{roles["admin"]}"; '
                            f'GRANT SELECT ON mal.guarded, mal.v, mal.nested, mal.guarded_view, mal.indexed TO "{roles["admin"]}"')
    query(su, f"""CREATE VIEW wrapper AS SELECT * FROM mal.v;
                  CREATE DOMAIN sdom AS int CHECK (mal.lock(VALUE));
                  CREATE TABLE policed AS SELECT * FROM pub;
                  ALTER TABLE policed ENABLE ROW LEVEL SECURITY;
                  CREATE POLICY lock ON policed USING (mal.lock(id));
                  GRANT SELECT ON wrapper, policed TO "{roles['admin']}" """)
    yield conns
    drop_roles(su, roles)
    su.close()


# Created by mallory: each lock function claims IMMUTABLE, takes a session advisory lock and returns true.
MALLORYS_SCHEMA = """
CREATE FUNCTION mal.lock(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4242); RETURN true; END $$;
CREATE FUNCTION mal.lock(int, int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4242); RETURN $1 = $2; END $$;
CREATE FUNCTION mal.lock(float8, float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4242); RETURN coalesce($1, 0) + $2; END $$;
CREATE FUNCTION mal.volatile_lock() RETURNS boolean LANGUAGE plpgsql VOLATILE AS
    $$ BEGIN PERFORM pg_advisory_lock(4242); RETURN true; END $$;
CREATE OPERATOR mal.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = mal.lock);
CREATE DOMAIN mal.checked AS int CHECK (mal.lock(VALUE));
CREATE AGGREGATE mal.total(float8) (SFUNC = mal.lock, STYPE = float8);
CREATE TYPE mal.mood AS ENUM ('calm', 'angry');
CREATE FUNCTION mal.mood_text(mal.mood) RETURNS text LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4242); RETURN 'calm'; END $$;
CREATE CAST (mal.mood AS text) WITH FUNCTION mal.mood_text(mal.mood);
CREATE VIEW mal.v AS SELECT * FROM public.pub WHERE mal.lock(id);
CREATE VIEW mal.nested AS SELECT * FROM mal.v;
CREATE TABLE mal.guarded AS SELECT * FROM public.pub;
ALTER TABLE mal.guarded ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone ON mal.guarded USING (mal.lock(id));
CREATE DOMAIN mal.checked_twice AS mal.checked;
CREATE VIEW mal.guarded_view AS SELECT * FROM mal.guarded;
CREATE FUNCTION mal.definer() RETURNS boolean LANGUAGE plpgsql STABLE SECURITY DEFINER AS
    $$ BEGIN PERFORM pg_advisory_lock(4242); RETURN true; END $$;
CREATE TABLE mal.moody AS SELECT id, a, b, y, 'calm'::mal.mood AS mood FROM public.pub;
CREATE FUNCTION mal.same(int, int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 = $2';
CREATE OPERATOR mal.== (LEFTARG = int, RIGHTARG = int, FUNCTION = mal.same);
-- planted for a victim whose search_path lists mal: exact matches for what sqlml's own SQL calls
CREATE FUNCTION mal.hashtextextended(text, int) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4242); RETURN 0; END $$;
CREATE FUNCTION mal.append(text[], text) RETURNS text[] LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4242); RETURN $1 || $2; END $$;
CREATE AGGREGATE mal.array_agg(text) (SFUNC = mal.append, STYPE = text[]);
-- a plain table whose index the planner evaluates (building it ran mal.lock here: its locks let go)
CREATE TABLE mal.indexed AS SELECT * FROM public.pub;
CREATE INDEX indexed_lock ON mal.indexed ((mal.lock(id::int)));
SELECT pg_advisory_unlock_all();
"""


def hostile(conns, who: str, sql: str, params, sqlstate: str, fragment: str = ""):
    conn, su = conns[who], conns["superuser"]
    before = scalar(su, STATE)
    conn.notices.clear()
    rows, error = None, None
    try:
        rows = query(conn, sql, params)
    except psycopg2.Error as e:
        error = e
    assert error is not None, f"accepted as {who}: {sql} -> {rows}"
    said = " ".join(str(x) for x in (error.pgerror, error.diag.message_detail, error.diag.message_hint,
                                     *conn.notices, rows))
    assert SECRET not in said, said
    assert error.pgcode == sqlstate, (who, error.pgcode, error.pgerror)
    assert fragment in error.diag.message_primary, (who, error.pgerror)
    assert "internal error" not in error.pgerror and "Traceback" not in (error.diag.message_primary or "")
    after = scalar(su, STATE)
    assert after == before, f"{sql} changed something as {who}: gone " \
                            f"{sorted(set(before.split('|')) - set(after.split('|')))[:10]}, new " \
                            f"{sorted(set(after.split('|')) - set(before.split('|')))[:10]}"
    assert scalar(su, "SELECT status FROM canary") == "alive"


def _stump(targets: int) -> bytes:
    """ONNX of one stump over columns a and b with ``targets`` outputs, declaring one."""
    from onnx import TensorProto, helper

    trees = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["variable"], domain="ai.onnx.ml", n_targets=targets,
        nodes_treeids=[0, 0, 0], nodes_nodeids=[0, 1, 2], nodes_featureids=[1, 0, 0],
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"], nodes_values=[2.0, 0.0, 0.0], nodes_truenodeids=[1, 0, 0],
        nodes_falsenodeids=[2, 0, 0], target_ids=[0, 0], target_treeids=[0, 0], target_nodeids=[1, 2],
        target_weights=[1.0, 2.0])
    graph = helper.make_graph([helper.make_node("Concat", ["a", "b"], ["x"], axis=1), trees], "g",
                              [helper.make_tensor_value_info(c, TensorProto.FLOAT, [None, 1]) for c in "ab"],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
                             ir_version=8).SerializeToString()


BOTH, MALLORY, VICTIMS = ("mallory", "superuser"), ("mallory",), ("superuser", "victim")
TRAIN = f"SELECT * FROM sqlml.train(%s, %s, %s, {T})"
TRAIN_OPTS = f"SELECT * FROM sqlml.train('h', 'pub', 'y', {T}, options => %s::jsonb)"

# (case, SQL, parameters, SQLSTATE, roles[, fragment of the message])
CASES = [
    # relation: statements stacked, data-modifying, locking, side effects, hidden writes
    ("stacked DROP after a name", TRAIN, ("h", "pub; DROP TABLE canary", "y"), "42601", BOTH),
    ("stacked DROP after a query", TRAIN, ("h", "SELECT * FROM pub; DROP TABLE canary", "y"), "42601", BOTH),
    ("comment hides the rest", TRAIN, ("h", "pub -- ; DROP TABLE canary", "y"), "42601", BOTH),
    ("quote breaks out of a name", TRAIN, ("h", 'pub"; DROP TABLE canary; --', "y"), "42601", BOTH),
    ("a quoted name is only a name", TRAIN, ("h", '"pub; DROP TABLE canary"', "y"), "42P01", BOTH),
    ("data-modifying CTE", TRAIN, ("h", "WITH d AS (DELETE FROM canary RETURNING 1) SELECT * FROM pub", "y"), "42601", BOTH),
    ("SELECT INTO", TRAIN, ("h", "SELECT * INTO stolen FROM pub", "y"), "42601", BOTH),
    ("row locks", TRAIN, ("h", "SELECT * FROM pub FOR UPDATE", "y"), "42601", BOTH),
    ("COPY to a file", TRAIN, ("h", "COPY canary TO '/tmp/sqlml-hostile'", "y"), "42601", BOTH),
    ("volatile writer in WHERE", TRAIN, ("h", "SELECT * FROM pub WHERE writer()", "y"), "2F002", BOTH, "which is VOLATILE"),
    ("nextval", TRAIN, ("h", "SELECT *, nextval('canary_seq') AS n FROM pub", "y"), "2F002", BOTH, "which is VOLATILE"),
    ("set_config", TRAIN, ("h", "SELECT *, set_config('search_path', 'evil', false) AS s FROM pub", "y"), "2F002", BOTH, "which is VOLATILE"),
    ("terminate a backend", TRAIN, ("h", "SELECT *, pg_terminate_backend(pg_backend_pid()) AS t FROM pub", "y"), "2F002", BOTH, "which is VOLATILE"),
    ("read a server file", TRAIN, ("h", "SELECT *, pg_read_file('/etc/passwd') AS f FROM pub", "y"), "2F002", BOTH, "which is VOLATILE"),
    ("large object import", TRAIN, ("h", "SELECT *, lo_import('/etc/passwd') AS o FROM pub", "y"), "2F002", BOTH, "which is VOLATILE"),
    ("STABLE function that writes", TRAIN, ("h", "SELECT * FROM pub WHERE liar()", "y"), "0A000", ("superuser",)),
    ("view hiding a volatile writer", TRAIN, ("h", "sneaky", "y"), "2F002", BOTH, "view public.sneaky calls public.writer(), which is VOLATILE"),
    ("a relation of 200k characters", TRAIN, ("h", "SELECT * FROM pub WHERE " + " OR ".join(["a = 1"] * 25000), "y"), "42601", BOTH),
    # relation: reading what the role may not
    ("secret table", TRAIN, ("h", "secret", "y"), "42501", MALLORY),
    ("secret through UNION", TRAIN, ("h", "SELECT a, b, y FROM pub UNION ALL SELECT a, b, y FROM secret", "y"), "42501", MALLORY),
    ("secret in a subquery", TRAIN, ("h", f"SELECT * FROM pub WHERE EXISTS (SELECT 1 FROM secret WHERE code LIKE '{SECRET}%')", "y"), "42501", MALLORY),
    ("system catalog of passwords", TRAIN, ("h", "pg_catalog.pg_authid", "rolname"), "42501", MALLORY),
    # column names
    ("target breaks out of quotes", TRAIN, ("h", "pub", 'y", (SELECT code FROM secret LIMIT 1) AS "x'), "42703", BOTH),
    ("excluded column breaks out", f"SELECT * FROM sqlml.train('h', 'pub', 'y', {T}, exclude => %s)", (['a"; DROP TABLE canary; --'],), "42703", BOTH),
    ("id_column breaks out", "SELECT * FROM sqlml.predict_batch('mal', 'pub', %s)", ('id", (SELECT code FROM secret LIMIT 1) AS "x',), "42703", BOTH),
    ("id_column with a statement", "SELECT * FROM sqlml.predict_batch('mal', 'pub', %s)", ("id; DROP TABLE canary",), "42703", BOTH),
    # project names
    ("project name with SQL", TRAIN, ("p'; DROP TABLE canary; --", "pub", "y"), "22023", BOTH),
    ("project spec with SQL", "SELECT sqlml.predict(%s, '{}'::jsonb)", ("mal'); DROP TABLE canary; --",), "42704", BOTH),
    ("project spec OR 1=1", "SELECT sqlml.predict(%s, '{}'::jsonb)", ("mal@1 OR 1=1",), "42704", BOTH),
    ("deploy project with SQL", "SELECT * FROM sqlml.deploy(%s)", ("mal' OR '1'='1",), "42704", BOTH),
    # options, algorithms, metric, task, strategy, privilege
    ("option key with SQL", TRAIN_OPTS, (json.dumps({'seed"; DROP TABLE canary; --': 1}),), "22023", BOTH),
    ("option value with SQL", TRAIN_OPTS, (json.dumps({"seed": "1; DROP TABLE canary"}),), "22023", BOTH),
    ("deploy option with SQL", TRAIN_OPTS, (json.dumps({"deploy": "auto'); DELETE FROM sqlml.models; --"}),), "22023", BOTH),
    ("option that is a nested object", TRAIN_OPTS, (json.dumps({"seed": {"__class__": "x"}}),), "22023", BOTH),
    ("algorithm with SQL", "SELECT * FROM sqlml.train('h', 'pub', 'y', algorithms => %s)", (["linear; DROP TABLE canary"],), "22023", BOTH),
    ("metric with SQL", "SELECT * FROM sqlml.train('h', 'pub', 'y', metric => %s)", ("rmse'; DROP TABLE canary; --",), "22023", BOTH),
    ("task with SQL", "SELECT * FROM sqlml.train('h', 'pub', 'y', task => %s)", ("regression' --",), "22023", BOTH),
    ("strategy with SQL", "SELECT * FROM sqlml.deploy('mal', %s)", ("rollback'; DELETE FROM sqlml.deployments; --",), "22023", BOTH),
    ("privilege with SQL", "SELECT sqlml.grant('mal', 'public', %s)", ("predict'); DELETE FROM sqlml.grants; --",), "22023", BOTH),
    ("role with SQL", "SELECT sqlml.grant('mal', %s, 'predict')", ("public; DROP ROLE sqlml_admin",), "42704", BOTH),
    # into_table
    ("into_table with a statement", "SELECT sqlml.score('mal', 'pub', %s, 'id')", ("scored; DROP TABLE canary",), "42601", BOTH),
    ("into_table is a query", "SELECT sqlml.score('mal', 'pub', %s, 'id')", ("SELECT * FROM canary",), "22023", BOTH),
    ("into_table overwrites canary", "SELECT sqlml.score('mal', 'pub', %s, 'id')", ("canary",), "42P07", ("superuser",)),
    ("into_table where one may not create", "SELECT sqlml.score('mal', 'pub', %s, 'id')", ("canary",), "42501", MALLORY),
    ("into_table in pg_catalog", "SELECT sqlml.score('mal', 'pub', %s, 'id')", ("pg_catalog.scored",), "42501", BOTH),
    ("batch scoring a secret table", "SELECT * FROM sqlml.predict_batch('mal', 'secret', 'id')", (), "42501", MALLORY),
    # the wrappers' PL/Python halves are executable by sqlml_user: called directly they check the same
    ("batch chunks of a secret table", "SELECT * FROM sqlml._predict_batch_chunks('mal', 'secret', 'id')", (), "42501",
     MALLORY),
    ("batch explanations of a secret table", "SELECT * FROM sqlml._explain_batch('mal', 'secret', 'id')", (), "42501",
     MALLORY),
    ("batch chunks of an untrusted view", "SELECT * FROM sqlml._predict_batch_chunks('mal', 'mal.v', 'id')", (), "42501",
     VICTIMS, "view mal.v, owned by"),
    ("batch explanations of an untrusted view", "SELECT * FROM sqlml._explain_batch('mal', 'mal.v', 'id')", (), "42501",
     VICTIMS, "view mal.v, owned by"),
    ("batch chunks: id_column breaks out", "SELECT * FROM sqlml._predict_batch_chunks('mal', 'pub', %s)",
     ('id", (SELECT code FROM secret LIMIT 1) AS "x',), "42703", BOTH),
    ("batch explanations: id_column breaks out", "SELECT * FROM sqlml._explain_batch('mal', 'pub', %s)",
     ('id", (SELECT code FROM secret LIMIT 1) AS "x',), "42703", BOTH),
    # code reached indirectly: an untrusted owner's function runs for nobody but its owner
    ("untrusted function by name", TRAIN, ("h", "SELECT * FROM pub WHERE mal.lock(id)", "y"), "42501", VICTIMS,
     'the relation calls mal.lock(integer), owned by role "dev_'),
    ("untrusted operator", TRAIN, ("h", "SELECT * FROM pub WHERE id OPERATOR(mal.===) id", "y"), "42501", VICTIMS,
     "operator mal.===(integer, integer) calls mal.lock(integer, integer)"),
    ("untrusted domain CHECK", TRAIN, ("h", "SELECT *, id::mal.checked AS c FROM pub", "y"), "42501", VICTIMS,
     'the relation uses domain mal.checked, owned by role "dev_'),
    ("untrusted domain CHECK on a literal", TRAIN, ("h", "SELECT *, '1'::mal.checked AS c FROM pub", "y"), "42501", VICTIMS,
     "domain mal.checked"),
    ("domain inside an array", TRAIN, ("h", "SELECT *, ARRAY[id]::mal.checked[] AS c FROM pub", "y"), "42501", VICTIMS,
     "domain mal.checked"),
    ("untrusted operator in ANY", TRAIN, ("h", "SELECT * FROM pub WHERE id OPERATOR(mal.===) ANY (ARRAY[1, 2])", "y"),
     "42501", VICTIMS, "operator mal.===(integer, integer) calls"),
    ("domain over a domain", TRAIN, ("h", "SELECT *, id::mal.checked_twice AS c FROM pub", "y"), "42501", VICTIMS,
     "the relation uses domain mal.checked_twice, owned by"),
    ("untrusted function in a CTE", TRAIN, ("h", "WITH t AS (SELECT id FROM pub WHERE mal.lock(id)) SELECT * FROM pub", "y"),
     "42501", VICTIMS, "the relation calls mal.lock(integer)"),
    ("untrusted SECURITY DEFINER function", TRAIN, ("h", "SELECT * FROM pub WHERE mal.definer()", "y"), "42501",
     VICTIMS, "mal.definer()"),
    ("untrusted aggregate as a window", TRAIN, ("h", "SELECT *, mal.total(a) OVER () AS t FROM pub", "y"), "42501",
     VICTIMS, "the relation calls aggregate mal.total(double precision), owned by"),
    ("untrusted aggregate", TRAIN, ("h", "SELECT *, (SELECT mal.total(a) FROM pub) AS t FROM pub", "y"), "42501", VICTIMS,
     "the relation calls aggregate mal.total(double precision), owned by"),
    ("untrusted cast", TRAIN, ("h", "SELECT *, 'calm'::mal.mood::text AS m FROM pub", "y"), "42501", VICTIMS,
     "the relation calls mal.mood_text(mal.mood)"),
    ("untrusted view by name", TRAIN, ("h", "mal.v", "y"), "42501", VICTIMS, "the relation reads view mal.v, owned by"),
    ("untrusted view inside a view", TRAIN, ("h", "mal.nested", "y"), "42501", VICTIMS,
     "the relation reads view mal.nested, owned by"),
    ("untrusted view in a subquery", TRAIN, ("h", "SELECT * FROM pub WHERE id IN (SELECT id FROM mal.v)", "y"), "42501",
     VICTIMS, "the relation reads view mal.v, owned by"),
    ("untrusted row-level-security policy", TRAIN, ("h", "mal.guarded", "y"), "42501", VICTIMS,
     "the relation reads table mal.guarded, owned by"),
    ("untrusted policy behind a view", TRAIN, ("h", "mal.guarded_view", "y"), "42501", VICTIMS,
     "the relation reads view mal.guarded_view, owned by"),
    ("a trusted view over an untrusted one", TRAIN, ("h", "wrapper", "y"), "42501", VICTIMS,
     'view public.wrapper calls view mal.v, owned by role "dev_'),
    ("a trusted domain checking with an untrusted function", TRAIN, ("h", "SELECT *, id::sdom AS d FROM pub", "y"),
     "42501", VICTIMS, 'domain public.sdom calls its check "sdom_check" calls mal.lock(integer), owned by'),
    ("a trusted table whose policy calls an untrusted function", TRAIN, ("h", "policed", "y"), "42501", ("victim",),
     'table public.policed calls policy "lock" calls mal.lock(integer)'),
    ("a table whose index calls an untrusted function", TRAIN, ("h", "mal.indexed", "y"), "42501", VICTIMS,
     "index mal.indexed_lock calls mal.lock(integer), owned by"),
    ("a cast sqlml itself would make", TRAIN, ("h", "mal.moody", "mood"), "42501", ("superuser",),
     "mal.mood_text(mal.mood)"),
    ("untrusted view scored in batch", "SELECT * FROM sqlml.predict_batch('mal', 'mal.v', 'id')", (), "42501", VICTIMS,
     "view mal.v, owned by"),
    ("untrusted operator scored into a table", "SELECT sqlml.score('mal', %s, 'stolen', 'id')",
     ("SELECT * FROM pub WHERE id OPERATOR(mal.===) 1",), "42501", VICTIMS, "operator mal.==="),
    ("untrusted view profiled", "SELECT * FROM sqlml.profile('mal.v')", (), "42501", VICTIMS, "view mal.v, owned by"),
    ("untrusted view evaluated", "SELECT * FROM sqlml.evaluate('mal', 'mal.v')", (), "42501", VICTIMS, "view mal.v, owned by"),
    ("retraining on an untrusted view", "SELECT * FROM sqlml.retrain_if_drifted('mal', 'pub', 'mal.v', threshold => 0.0001)",
     (), "42501", ("superuser",), "view mal.v, owned by"),
    # volatile: refused whoever owns it, its owner included
    ("own volatile function", TRAIN, ("h", "SELECT * FROM pub WHERE mal.volatile_lock()", "y"), "2F002", MALLORY,
     "the relation calls mal.volatile_lock(), which is VOLATILE"),
    ("advisory lock by name", TRAIN, ("h", "SELECT *, pg_advisory_lock(1) AS l FROM pub", "y"), "2F002", BOTH,
     "pg_catalog.pg_advisory_lock(bigint), which is VOLATILE"),
    # inputs that used to end in internal errors or silent nonsense: refused before reading data where possible
    ("project name with a final newline", TRAIN, ("h\n", "pub", "y"), "22023", BOTH, 'invalid project name "h\n"'),
    ("project name of other letters", TRAIN, ("prøject", "pub", "y"), "22023", BOTH, "invalid project name"),
    ("max_rows beyond 64 bits", TRAIN_OPTS, ('{"max_rows": 18446744073709551616}',), "22023", BOTH,
     'option "max_rows" is 1.845E+19, beyond 64 bits'),
    ("max_rows as 1e30", TRAIN_OPTS, ('{"max_rows": 1e30}',), "22023", BOTH, 'option "max_rows"'),
    ("seed 1e400", TRAIN_OPTS, ('{"seed": 1e400}',), "22023", BOTH, 'option "seed" is 1.000E+400, beyond 64 bits'),
    ("seed 2**32", TRAIN_OPTS, ('{"seed": 4294967296}',), "22023", BOTH, 'option "seed" must be between 0 and 4294967295'),
    ("an option of 5000 digits", TRAIN_OPTS, ('{"n_estimators": 1e5000}',), "22023", BOTH,
     'option "n_estimators" is 1.000E+5000'),
    ("negative seed", TRAIN_OPTS, ('{"seed": -1}',), "22023", BOTH, 'option "seed"'),
    ("max_scoring_us 1e400", TRAIN_OPTS, ('{"max_scoring_us": 1e400}',), "22023", BOTH,
     'option "max_scoring_us" is 1.000E+400, beyond 64 bits'),
    ("forecast seed 1e400", "SELECT * FROM sqlml.train('h', 'pub', 'y', task => 'forecast', time_budget => '2 seconds', "
     "options => %s::jsonb)", ('{"time_column": "id", "horizon": 3, "seed": 1e400}',), "22023", BOTH,
     'option "seed" is 1.000E+400, beyond 64 bits'),
    ("n_estimators 1e400", TRAIN_OPTS, ('{"n_estimators": 1e400}',), "22023", BOTH, 'option "n_estimators"'),
    ("test_size NaN", f"SELECT * FROM sqlml.train('h', 'pub', 'y', {T}, test_size => 'NaN')", (), "22023", BOTH,
     "test_size is nan"),
    ("a feature beyond float32", TRAIN, ("h", "SELECT a * 1e300 AS a, b, y FROM pub", "y"), "22003", BOTH,
     'column "a" holds values beyond ±3.4e38'),
    ("a target beyond float32", TRAIN, ("h", "SELECT a, b, y * -1e300 AS y FROM pub", "y"), "22003", BOTH,
     'target "y" holds values beyond ±3.4e38'),
    ("predict jsonb beyond float32", "SELECT sqlml.predict('mal', %s::jsonb)", ('{"a": 1e308, "b": 1}',), "22003", BOTH,
     'feature "a" is 1e+308, beyond ±3.4e38'),
    ("predict a row beyond float32", "SELECT sqlml.predict('mal', p) FROM (SELECT 1e300::float8 AS a, 1::float8 AS b) p",
     (), "22003", BOTH, 'feature "a"'),
    ("predict an array beyond float32", "SELECT sqlml.predict('mal', ARRAY[1, -1e39]::float8[])", (), "22003", BOTH,
     'feature "b"'),
    ("batch scoring beyond float32", "SELECT * FROM sqlml.predict_batch('mal', %s, 'id')",
     ("SELECT id, a, b * 1e39 AS b FROM pub",), "22003", BOTH, 'feature "b" holds Infinity or a number in 160 rows'),
    ("scoring into a table beyond float32", "SELECT sqlml.score('mal', %s, 'mal.overflowed', 'id')",
     ("SELECT id, a * 1e39 AS a, b FROM pub",), "22003", BOTH, 'feature "a"'),
    ("rollback with no earlier deployment", "SELECT * FROM sqlml.deploy('mal', 'rollback')", (), "55000", BOTH,
     "no previous deployment to roll back to"),
    ("imported regression of three outputs declaring one", "SELECT * FROM sqlml.import_model('h', %s, 'regression', "
     "'pub', 'y')", (psycopg2.Binary(_stump(3)),), "22023", BOTH, "the model gives 3 values per row"),
    ("volatile in a lateral subquery", TRAIN, ("h", "SELECT p.* FROM pub p, LATERAL (SELECT pg_notify('c', 'x')) n", "y"),
     "2F002", BOTH, "pg_notify"),
]

RUNS = [(case, sql, params, state, who, *rest) for case, sql, params, state, roles_, *rest in CASES for who in roles_]


@pytest.mark.parametrize("case, sql, params, sqlstate, who, fragment", [(*r, "")[:6] for r in RUNS],
                         ids=[f"{r[0]} as {r[4]}" for r in RUNS])
def test_hostile_input_changes_nothing_and_leaks_nothing(world, case, sql, params, sqlstate, who, fragment):
    hostile(world, who, sql, params, sqlstate, fragment)


def test_trojan_catalog_functions_in_public_are_not_called(world):
    """sqlml's own catalog lookups run with the caller's search_path, where pg_catalog comes first
    unless a user puts it later: a role that plants same-named functions in public gets nothing."""
    su = world["superuser"]
    query(su, "CREATE TABLE trojan_calls (n int)")
    try:
        query(su, """CREATE FUNCTION public.to_regclass(text) RETURNS regclass LANGUAGE sql VOLATILE AS
                         $$ INSERT INTO trojan_calls VALUES (1); SELECT NULL::regclass $$;
                     CREATE FUNCTION public.has_column_privilege(oid, int2, text) RETURNS boolean LANGUAGE sql VOLATILE AS
                         $$ INSERT INTO trojan_calls VALUES (2); SELECT true $$""")
        query(su, "SELECT count(*) FROM sqlml.predict_batch('mal', 'pub', 'id')")
        assert scalar(su, "SELECT count(*) FROM trojan_calls") == 0
    finally:
        query(su, "DROP FUNCTION public.to_regclass(text); DROP FUNCTION public.has_column_privilege(oid, int2, text); "
                  "DROP TABLE trojan_calls")


def test_a_dba_can_trust_a_schema_and_a_planted_search_path_changes_nothing(world):
    """sqlml.trusted_schemas lets a role run code of an owner it does not otherwise trust; sqlml's
    own SQL calls pg_catalog's functions whatever the search_path, and refuses a planted aggregate."""
    victim, mallory = world["victim"], world["mallory"]
    relation = "SELECT * FROM pub WHERE id OPERATOR(mal.==) id"
    e = sql_error(victim, TRAIN, ("trusting", relation, "y"))
    assert e.pgcode == "42501" and "operator mal.==(integer, integer) calls mal.same(integer, integer)" in e.pgerror
    assert query(mallory, TRAIN, ("trusting_own", relation, "y"))[0][0] == "trusting_own"  # her own code
    query(victim, "SET sqlml.trusted_schemas = 'mal'")
    try:
        assert query(victim, TRAIN, ("trusting", relation, "y"))[0][0] == "trusting"
    finally:
        query(victim, "RESET sqlml.trusted_schemas")
    query(victim, "SET search_path = mal, public")
    try:
        sampled = query(victim, f"SELECT * FROM sqlml.train('planted', 'pub', 'y', {T}, options => %s)",
                        ('{"max_rows": 50}',))
        assert sampled[0][0] == "planted"
        e = sql_error(victim, TRAIN, ("planted", "SELECT a, b, y, (id % 3)::text AS c FROM pub", "y"))
        assert e.pgcode == "42501" and "the relation calls aggregate mal.array_agg(text), owned by" in e.pgerror
    finally:
        query(victim, "RESET search_path")
    assert scalar(world["superuser"], "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


def test_the_check_leaves_no_view_behind_and_keeps_what_it_read_locked(dsn, world):
    """The relations a checked query names stay locked (ACCESS SHARE) until the transaction (or the
    read's subtransaction) ends, so no policy can be added to a table between the check and the read."""
    conn = psycopg2.connect(dsn)
    try:
        query(conn, "SELECT sqlml.version()")  # loads sqlml into this backend's PL/Python
        query(conn, """DO $$
                         from sqlml.server import reach
                         with reach.checked("SELECT * FROM pub WHERE a > 1") as read:
                             plpy.execute(read)
                       $$ LANGUAGE plpython3u""")
        locked = query(conn, "SELECT relation::regclass::text, mode FROM pg_locks WHERE pid = pg_backend_pid() "
                             "AND locktype = 'relation' AND relation = 'pub'::regclass")
        assert locked == [("pub", "AccessShareLock")]
        assert scalar(conn, "SELECT count(*) FROM pg_class WHERE relname LIKE 'sqlml\\_reach\\_%'") == 0
    finally:
        conn.rollback()
        conn.close()


def test_what_is_read_is_what_was_checked(dsn):
    """A cast created after the check (as the owner of a column's type could, from another session)
    is not what the read runs: the read is the checked analysis, not the query parsed again."""
    conn = psycopg2.connect(dsn)
    try:
        query(conn, "SELECT sqlml.version()")  # loads sqlml into this backend's PL/Python
        query(conn, "CREATE TYPE pg_temp.tag AS ENUM ('x', 'y')")
        query(conn, "CREATE TEMP TABLE tagged AS SELECT 'x'::pg_temp.tag AS b")
        query(conn, "CREATE TEMP TABLE cast_log (n int)")
        query(conn, """CREATE FUNCTION pg_temp.tag_text(t pg_temp.tag) RETURNS text VOLATILE LANGUAGE plpgsql AS $$
                       BEGIN INSERT INTO cast_log VALUES (1); RETURN 'planted'; END $$""")
        read = query(conn, """DO $$
                                from sqlml.server import reach
                                with reach.checked("SELECT b::text AS b FROM tagged") as read:
                                    plpy.execute("CREATE CAST (pg_temp.tag AS text) WITH FUNCTION pg_temp.tag_text(pg_temp.tag)")
                                    rows = plpy.execute(read)
                                assert [r["b"] for r in rows] == ["x"], rows
                              $$ LANGUAGE plpython3u""")
        assert read == [] and scalar(conn, "SELECT count(*) FROM cast_log") == 0
        assert scalar(conn, "SELECT b::text FROM tagged") == "planted"  # the same query parsed again runs it
        assert scalar(conn, "SELECT count(*) FROM pg_class WHERE relname LIKE 'sqlml\\_reach\\_%'") == 0
    finally:
        conn.rollback()
        conn.close()


@pytest.mark.parametrize("read", [
    "SELECT pg_catalog.int4range(1, 2)::text::pg_temp.watched_range AS r",  # a range's input runs its subtype's
    "SELECT '{[1,2]}'::text::pg_temp.watched_multirange AS r",  # a multirange's, its range's
    "SELECT '(1)'::text::pg_temp.watched_row AS r",  # a row's, its fields'
    "SELECT '{1}'::text::pg_temp.watched[] AS r",  # an array's, its element's
    # a constant of such a type is read at analysis, before any judge: judged first with NULL in its place
    "SELECT '{1}'::pg_temp.watched[] AS r",
    "SELECT '[1,2]'::pg_temp.watched_range AS r",
    "SELECT CAST('(1)' AS pg_temp.watched_row) AS r",
    "SELECT 1 AS one FROM ranged WHERE r IS DISTINCT FROM '[1,2]'",  # typed by the column it meets
])
def test_a_domain_inside_a_range_row_or_array_is_judged(dsn, read):
    """A domain's CHECK runs when a value of a type built on it is read: a range or multirange over
    it, a row or an array of it. The walk goes from each to the domain."""
    conn = psycopg2.connect(dsn)
    try:
        query(conn, "SELECT sqlml.version()")
        query(conn, "CREATE TEMP TABLE check_log (n int)")
        query(conn, """CREATE FUNCTION pg_temp.logged(v int) RETURNS boolean VOLATILE LANGUAGE plpgsql AS $$
                       BEGIN INSERT INTO check_log VALUES (v); RETURN true; END $$""")
        query(conn, "CREATE DOMAIN pg_temp.watched AS int CHECK (pg_temp.logged(VALUE))")
        query(conn, "CREATE TYPE pg_temp.watched_range AS RANGE (subtype = pg_temp.watched, "
                    "multirange_type_name = pg_temp.watched_multirange)")
        query(conn, "CREATE TYPE pg_temp.watched_row AS (a pg_temp.watched)")
        query(conn, "CREATE TEMP TABLE ranged (r pg_temp.watched_range)")
        query(conn, f"""DO $$
                         from sqlml.errors import SqlmlError
                         from sqlml.server import reach
                         try:
                             with reach.checked({read!r}) as read:
                                 plpy.execute(read)
                             raise AssertionError("read")
                         except SqlmlError as e:
                             assert e.sqlstate == "2F002" and "logged" in e.message, (e.sqlstate, e.message)
                       $$ LANGUAGE plpython3u""")
        assert scalar(conn, "SELECT count(*) FROM check_log") == 0
    finally:
        conn.rollback()
        conn.close()


def test_a_policy_committed_while_the_check_runs_is_judged(dsn):
    """A view's own tables are locked only when the read is planned. A session that holds one (here
    while it turns on row-level security and adds a policy) and commits after the walk would slip
    its policy past the judge: the check locks every table it reaches and walks again."""
    setup = psycopg2.connect(dsn)
    setup.autocommit = True
    holder, reader = psycopg2.connect(dsn), psycopg2.connect(dsn)
    try:
        query(setup, "CREATE TABLE late_policed AS SELECT g AS id FROM generate_series(1, 5) AS g")
        query(setup, "CREATE VIEW late_policed_view AS SELECT * FROM late_policed")
        query(setup, "CREATE FUNCTION late_policy_fn(id int) RETURNS boolean VOLATILE LANGUAGE sql AS 'SELECT true'")
        query(holder, "ALTER TABLE late_policed ENABLE ROW LEVEL SECURITY")  # holds it, uncommitted
        query(holder, "CREATE POLICY watched ON late_policed USING (late_policy_fn(id))")
        query(reader, "SELECT sqlml.version()")
        pid, outcome = scalar(reader, "SELECT pg_backend_pid()"), {}

        def read():
            try:
                query(reader, """DO $$
                                   from sqlml.server import reach
                                   with reach.checked("SELECT * FROM late_policed_view") as read:
                                       plpy.execute(read)
                                 $$ LANGUAGE plpython3u""")
                outcome["read"] = True
            except psycopg2.Error as e:
                outcome["error"] = e

        thread = threading.Thread(target=read)
        thread.start()
        wait_until(lambda: scalar(setup, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                  (pid,)) == "Lock" or not thread.is_alive(), "the check waiting for the table")
        holder.commit()
        thread.join(60)
        error = outcome.get("error")  # a SqlmlError inside a DO block: PL/Python's 38000, its message
        assert error is not None and "SqlmlError" in error.pgerror and 'policy "watched"' in error.pgerror \
            and "late_policy_fn" in error.pgerror, outcome
    finally:
        for conn in (holder, reader):
            conn.rollback()
            conn.close()
        query(setup, "DROP VIEW IF EXISTS late_policed_view; DROP TABLE IF EXISTS late_policed; "
                     "DROP FUNCTION IF EXISTS late_policy_fn(int)")
        setup.close()


@pytest.mark.parametrize("setting, message", [
    ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", "repeatable read transaction does not see"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "serializable transaction does not see"),
    ("SET standard_conforming_strings = off", "standard_conforming_strings on"),
])
def test_a_check_refuses_settings_it_cannot_hold_under(dsn, setting, message):
    """The walk reads the catalogs in the transaction's snapshot (analysis reads the latest: under
    REPEATABLE READ a function or policy committed since would run unseen), and constants are lexed
    with standard_conforming_strings on: anything else is refused before the query is analysed."""
    conn = psycopg2.connect(dsn)
    try:
        query(conn, setting)
        query(conn, "SELECT sqlml.version()")
        with pytest.raises(psycopg2.Error) as e:
            query(conn, "SELECT * FROM sqlml.profile('SELECT 1 AS a')")
        assert e.value.pgcode == "0A000" and message in e.value.pgerror, e.value.pgerror
    finally:
        conn.rollback()
        conn.close()


def test_a_ranges_subtype_diff_is_reached(dsn):
    """The planner's range estimates call a range type's subtype_diff: the walk reaches it from the
    range (and judges it as any function: its owner, its volatility)."""
    conn = psycopg2.connect(dsn)
    try:
        query(conn, "SELECT sqlml.version()")
        query(conn, """CREATE FUNCTION pg_temp.gap(a int, b int) RETURNS float8 IMMUTABLE LANGUAGE sql
                       AS 'SELECT (b - a)::float8'""")
        query(conn, "CREATE TYPE pg_temp.spaced AS RANGE (subtype = int4, subtype_diff = pg_temp.gap)")
        query(conn, "CREATE TEMP VIEW spaced_view AS SELECT pg_catalog.int4range(1, 2)::text::pg_temp.spaced AS r")
        query(conn, """DO $$
                         from sqlml.server import reach
                         from sqlml.server.spi import spi
                         root = spi.execute(reach._ROOT, ["spaced_view"])[0]  # the view's stored analysis
                         functions, _ = reach._walk(root["expr"], root["view"])
                         assert any(f.name.startswith("gap(") for f in functions), functions
                       $$ LANGUAGE plpython3u""")
    finally:
        conn.rollback()
        conn.close()


def test_what_the_planner_evaluates_on_a_table_is_reached(dsn):
    """Planning a read of a table evaluates more than its query: its indexes' expressions and
    predicates, its statistics' expressions, the CHECK constraints of the tables inheriting from it
    (constraint exclusion). The walk reaches each function there, and names the path."""
    conn = psycopg2.connect(dsn)
    try:
        query(conn, "SELECT sqlml.version()")
        for name in ("by_index", "by_predicate", "by_statistics", "by_child_check"):
            query(conn, f"CREATE FUNCTION pg_temp.{name}(a int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT a'")
        query(conn, "CREATE TEMP TABLE planned (a int, b int)")
        query(conn, "CREATE INDEX ON planned ((pg_temp.by_index(a)))")
        query(conn, "CREATE INDEX ON planned (b) WHERE pg_temp.by_predicate(a) > 0")
        query(conn, "CREATE STATISTICS pg_temp.planned_stats ON (pg_temp.by_statistics(a)), b FROM planned")
        query(conn, "CREATE TEMP TABLE planned_child (CHECK (pg_temp.by_child_check(a) > 0)) INHERITS (planned)")
        query(conn, "CREATE TEMP VIEW planned_view AS SELECT a FROM planned WHERE a = 1")
        query(conn, """DO $$
                         from sqlml.server import reach
                         from sqlml.server.spi import spi
                         root = spi.execute(reach._ROOT, ["planned_view"])[0]  # the view's stored analysis
                         functions, relations = reach._walk(root["expr"], root["view"])
                         paths = {f.name.split("(")[0]: f.path for f in functions if f.name.startswith("by_")}
                         assert set(paths) == {"by_index", "by_predicate", "by_statistics", "by_child_check"}, paths
                         assert paths["by_statistics"][0].startswith("statistics "), paths
                         assert paths["by_child_check"][-1] == 'its check "planned_child_a_check"', paths
                         child = plpy.execute("SELECT 'planned_child'::regclass::oid::int8 AS o")[0]["o"]
                         assert child in relations  # locked before the judge, as every relation reached
                       $$ LANGUAGE plpython3u""")
    finally:
        conn.rollback()
        conn.close()


def test_a_select_list_no_view_can_hold_is_judged_first(dsn):
    """Two columns of one name: what the query runs is judged before the read fails, and the read
    fails with a clear error."""
    conn = psycopg2.connect(dsn)
    try:
        query(conn, "SELECT sqlml.version()")
        query(conn, """DO $$
                         from sqlml.errors import SqlmlError
                         from sqlml.server import reach
                         try:
                             with reach.checked("SELECT 1 AS a, 2 AS a") as read:
                                 plpy.execute(read)
                             raise AssertionError("read")
                         except SqlmlError as e:
                             assert e.sqlstate == "42701" and "as a view's" in e.message, (e.sqlstate, e.message)
                         try:
                             with reach.checked("SELECT 1 AS a, pg_catalog.pg_advisory_lock(1) AS a") as read:
                                 plpy.execute(read)
                             raise AssertionError("read")
                         except SqlmlError as e:
                             assert e.sqlstate == "2F002" and "pg_advisory_lock" in e.message, (e.sqlstate, e.message)
                       $$ LANGUAGE plpython3u""")
        assert scalar(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND pid = pg_backend_pid()") == 0
    finally:
        conn.rollback()
        conn.close()


# Planted by mallory for a victim whose search_path lists her schema plant: operators and functions that match the
# arguments of sqlml's SQL wrappers better than pg_catalog's (no pg_catalog &(bigint, integer),
# =(regtype, regtype), unnest(bigint[]) or to_jsonb(record): those are polymorphic or reached through
# a coercion), and, for a search_path that puts pg_catalog after plant, the same signatures as pg_catalog's.
# Each takes a session advisory lock and then answers what pg_catalog's would.
PLANTED = """
CREATE FUNCTION plant.p_and(bigint, integer) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN $1 OPERATOR(pg_catalog.&) $2::bigint; END $$;
CREATE OPERATOR plant.& (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = plant.p_and);
CREATE FUNCTION plant.p_eq(regtype, regtype) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN $1::oid OPERATOR(pg_catalog.=) $2::oid; END $$;
CREATE OPERATOR plant.= (LEFTARG = regtype, RIGHTARG = regtype, FUNCTION = plant.p_eq);
CREATE FUNCTION plant.p_shr(bigint, integer) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN $1 OPERATOR(pg_catalog.>>) $2; END $$;
CREATE OPERATOR plant.>> (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = plant.p_shr);
CREATE FUNCTION plant.p_mod(bigint, bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN $1 OPERATOR(pg_catalog.%) $2; END $$;
CREATE OPERATOR plant.% (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = plant.p_mod);
CREATE FUNCTION plant.unnest(bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION plant.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION plant.to_jsonb(record) RETURNS jsonb LANGUAGE plpgsql STABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN pg_catalog.to_jsonb($1); END $$;
CREATE FUNCTION plant.power(float8, float8) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN pg_catalog.power($1, $2); END $$;
CREATE FUNCTION plant.checked(float8) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN true; END $$;
CREATE DOMAIN plant.float8 AS pg_catalog.float8 CHECK (plant.checked(VALUE));
CREATE FUNCTION plant.array_length(anyarray, integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS
    $$ BEGIN PERFORM pg_advisory_lock(4243); RETURN pg_catalog.array_length($1, $2); END $$;
"""
PLANTED_DROP = """
DROP OPERATOR plant.& (bigint, integer); DROP FUNCTION plant.p_and(bigint, integer);
DROP OPERATOR plant.= (regtype, regtype); DROP FUNCTION plant.p_eq(regtype, regtype);
DROP OPERATOR plant.>> (bigint, integer); DROP FUNCTION plant.p_shr(bigint, integer);
DROP OPERATOR plant.% (bigint, bigint); DROP FUNCTION plant.p_mod(bigint, bigint);
DROP FUNCTION plant.unnest(bigint[]); DROP FUNCTION plant.unnest(text[]); DROP FUNCTION plant.to_jsonb(record);
DROP DOMAIN plant.float8; DROP FUNCTION plant.checked(pg_catalog.float8);
DROP FUNCTION plant.power(pg_catalog.float8, pg_catalog.float8); DROP FUNCTION plant.array_length(anyarray, integer);
"""

# (case, SQL): each run with plant before pg_catalog's implicit place and before pg_catalog named
WRAPPERS = [
    ("predict_batch", "SELECT count(*), sum(prediction) FROM sqlml.predict_batch('mal', 'public.pub', 'id')"),
    ("predict_batch with id_type", "SELECT count(*), sum(id) FROM sqlml.predict_batch('mal', 'public.pub', 'id', NULL::int)"),
    ("explain_batch", "SELECT count(*) FROM sqlml.explain_batch('mal', 'public.pub', 'id')"),
    ("predict of a table's row", "SELECT sum(sqlml.predict('mal', p)) FROM public.pub p"),
    ("predict of a record", "SELECT sqlml.predict('mal', r) FROM (SELECT 1.0::double precision AS a, 2.0::double precision AS b) r"),
    ("predict_label of a record", "SELECT sqlml.predict_label('mal', r) FROM (SELECT 1.0::double precision AS a, 2.0::double precision AS b) r"),
    ("predict_label of a table's row", "SELECT count(sqlml.predict_label('mal', p)) FROM public.pub p"),
    ("train", f"SELECT project FROM sqlml.train('planted_train', 'public.pub', 'y', {T})"),
    ("retrain_if_drifted", "SELECT project FROM sqlml.retrain_if_drifted('mal', 'public.pub', threshold => 2, "
                           "time_budget => '2 seconds')"),
    ("explain of a table's row", "SELECT count(*) FROM public.pub p, sqlml.explain('mal', p) WHERE p.id < 3"),
    ("explain of a record", "SELECT count(*) FROM (SELECT 1.0::double precision AS a, 2.0::double precision AS b) r, sqlml.explain('mal', r)"),
]
PATHS = ["plant, public", "plant, pg_catalog, public"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case, sql", WRAPPERS, ids=[c for c, _ in WRAPPERS])
def test_planted_operators_and_functions_are_not_called_by_sqlmls_sql_wrappers(world, case, sql, path):
    """sqlml's LANGUAGE sql/plpgsql wrappers run (scalar ones inlined) in the caller's search_path:
    every operator, function and type they name is pg_catalog's, whatever schema comes first. (The
    SQL sqlml's Python runs there is checked instead: what reaches planted code is refused unrun.)"""
    victim, mallory, su = world["victim"], world["mallory"], world["superuser"]
    if not scalar(su, "SELECT count(*) FROM pg_namespace WHERE nspname = 'plant'"):
        query(su, f'CREATE SCHEMA plant AUTHORIZATION "{scalar(mallory, "SELECT current_user")}"; '
                  f'GRANT USAGE ON SCHEMA plant TO "{scalar(victim, "SELECT current_user")}"')
    query(mallory, PLANTED)
    try:
        query(victim, "RESET search_path")
        clean = query(victim, sql)
        query(victim, f"SET search_path = {path}")
        try:
            try:
                assert query(victim, sql) == clean
            except psycopg2.Error as e:  # sqlml's own SQL in Python meeting plant.float8: refused unrun
                assert e.pgcode == "42501" and "which you do not trust" in e.pgerror, e.pgerror
        finally:
            query(victim, "RESET search_path")
        assert scalar(su, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0, \
            f"{case}: mallory's code ran as the victim"
    finally:
        query(victim, "SELECT pg_advisory_unlock_all()")
        query(mallory, PLANTED_DROP)


def test_made_up_row_types_neither_pile_up_plans_nor_change_answers(world):
    # each row type gets a plan holding its own category tables, kept per backend: mallory scores
    # through more row types than are kept (predicting.MAX_ROW_PLANS) and back; the oldest plans go,
    # and a row type scored again after its plan went gets the same answer
    mal = world["mallory"]
    types = 64 + 6  # sqlml.server.predicting.MAX_ROW_PLANS (which imports only inside a backend) + 6
    query(mal, "; ".join(f"CREATE TYPE mal.r{i} AS (a float8, b float8, pad{i} int)" for i in range(types)))
    try:
        answers = [query(mal, f"SELECT sqlml.predict('mal', ROW(3, 4, {i})::mal.r{i})")[0][0] for i in range(types)]
        assert len(set(answers)) == 1, answers
        again = query(mal, "SELECT sqlml.predict('mal', ROW(3, 4, 0)::mal.r0)")[0][0]
        assert again == answers[0]
    finally:
        query(mal, "; ".join(f"DROP TYPE mal.r{i}" for i in range(types)))
