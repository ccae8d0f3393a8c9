"""Roles, project privileges, row-level security on the registry, data access as the caller,
registry integrity and the audit log, against a real cluster with several login roles.

One developer ("dev") owns project "sec"; the other roles are granted and refused things in turn.
"""

from __future__ import annotations

import psycopg2
import pytest

from tests.conftest import query, scalar
from tests.roles import create_roles, drop_roles

BUDGET = "2 seconds"
REGISTRY = ("projects", "models", "deployments", "trials", "grants", "audit_log")


def train(conn, project, relation, target="y", **kw):
    args = "".join(f", {k} => %({k})s" for k in kw)
    return query(conn, f"SELECT project, version, deployed FROM sqlml.train(%(p)s, %(r)s, %(t)s, "
                       f"algorithms => '{{linear}}', time_budget => '{BUDGET}'{args})",
                 {"p": project, "r": relation, "t": target, **kw})[0]


def error(conn, sql, params=None) -> psycopg2.Error:
    with pytest.raises(psycopg2.Error) as info:
        query(conn, sql, params)
    return info.value


def denied(conn, sql, fragment, params=None, code="42501"):
    e = error(conn, sql, params)
    assert e.pgcode == code, (e.pgcode, e.pgerror)
    assert fragment in e.diag.message_primary, e.diag.message_primary
    return e


@pytest.fixture(scope="module")
def world(dsn):
    su = psycopg2.connect(dsn)
    su.autocommit = True
    roles = create_roles(su, dsn)
    readers = ", ".join(f'"{roles[k]}"' for k in ("admin", "dev", "dev2", "usr", "usr2", "nobody"))
    query(su, """
        CREATE TABLE pts AS
        SELECT i AS id, (i % 7)::float8 AS a, (i % 5)::float8 AS b, CASE WHEN i % 3 = 0 THEN 'x' ELSE 'z' END AS c,
               CASE WHEN i % 4 = 0 THEN 'north' ELSE 'south' END AS region, ((i % 7) * 2.0 + (i % 5))::float8 AS y
        FROM generate_series(1, 300) AS i;
        CREATE TABLE secret AS SELECT id, a, b, y, 'TOPSECRET-' || id AS code FROM pts;
        CREATE TABLE partial AS SELECT * FROM pts;
        CREATE TABLE regional AS SELECT * FROM pts;
        ALTER TABLE regional ENABLE ROW LEVEL SECURITY;
        CREATE VIEW secret_view AS SELECT id, a, b, y FROM secret;
        CREATE VIEW hidden_view AS SELECT id, a, b, y FROM pts;
    """)
    query(su, f"GRANT SELECT ON pts, regional, secret_view TO {readers}")
    query(su, f'GRANT SELECT (id, a, b, y) ON partial TO "{roles["dev"]}"')
    query(su, f'GRANT SELECT (id, a, b, c) ON partial TO "{roles["dev2"]}"')
    query(su, f"""CREATE POLICY north_only ON regional FOR SELECT TO "{roles['dev']}" USING (region = 'north')""")
    query(su, f"GRANT CREATE ON SCHEMA public TO {readers}")
    dev = roles.connect("dev")
    assert train(dev, "sec", "pts") == ("sec", 1, True)
    yield su, roles
    drop_roles(su, roles)
    su.close()


def test_extension_roles_form_a_hierarchy(world):
    su, _ = world
    members = dict(query(su, """SELECT r.rolname, array_agg(g.rolname ORDER BY g.rolname)
                                FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid
                                JOIN pg_roles g ON g.oid = m.roleid
                                WHERE r.rolname LIKE 'sqlml\\_%' GROUP BY 1"""))
    assert members == {"sqlml_admin": ["sqlml_developer"], "sqlml_developer": ["sqlml_user"]}


def test_new_project_is_owned_by_its_creator(world):
    su, roles = world
    assert scalar(su, "SELECT owner FROM sqlml.projects WHERE name = 'sec'") == roles["dev"]
    assert scalar(su, "SELECT created_by FROM sqlml.models WHERE project = 'sec'") == roles["dev"]


def test_who_may_create_projects(world):
    _, roles = world
    denied(roles.connect("usr"), "SELECT * FROM sqlml.train('usr_p', 'pts', 'y')", "may not create projects")
    denied(roles.connect("nobody"), "SELECT * FROM sqlml.train('nb_p', 'pts', 'y')", "permission denied for function")
    denied(roles.connect("dev2"), "SELECT * FROM sqlml.train('sec', 'pts', 'y')",
           'permission denied to train project "sec"')


def test_scoring_needs_predict_and_registry_rows_are_hidden(world):
    _, roles = world
    usr = roles.connect("usr")
    e = denied(usr, "SELECT sqlml.predict('sec', t) FROM pts t LIMIT 1", 'permission denied to score project "sec"')
    assert "sqlml.grant('sec'" in e.diag.message_hint
    denied(usr, "SELECT sqlml.predict('sec@1', '{\"a\": 1, \"b\": 2, \"c\": \"x\"}'::jsonb)",
           "permission denied to score")
    denied(usr, "SELECT sqlml.classes('sec')", "permission denied to score")
    denied(usr, "SELECT * FROM sqlml.predict_batch('sec', 'pts', 'id')", "permission denied to score")
    for table in REGISTRY[:4] + ("deployed", "leaderboard"):
        assert scalar(usr, f"SELECT count(*) FROM sqlml.{table} WHERE project = 'sec'"
                      if table != "projects" else "SELECT count(*) FROM sqlml.projects") == 0, table
    assert scalar(usr, "SELECT sqlml.has_privilege('sec', 'predict')") is False
    nobody = roles.connect("nobody")
    denied(nobody, "SELECT sqlml.predict('sec', t) FROM pts t LIMIT 1", "permission denied for function")
    denied(nobody, "SELECT onnx FROM sqlml.models", "permission denied for table models")


def test_grant_predict_then_revoke(world):
    su, roles = world
    dev, usr, usr2 = roles.connect("dev"), roles.connect("usr"), roles.connect("usr2")
    query(dev, "SELECT sqlml.grant('sec', %s, 'predict')", (roles["usr"],))
    expected = query(dev, "SELECT sqlml.predict('sec', t) FROM pts t ORDER BY id LIMIT 5")
    assert query(usr, "SELECT sqlml.predict('sec', t) FROM pts t ORDER BY id LIMIT 5") == expected
    assert scalar(usr, "SELECT count(*) FROM sqlml.models WHERE project = 'sec' AND octet_length(onnx) > 0") == 1
    assert scalar(usr, "SELECT version FROM sqlml.deployed WHERE project = 'sec'") == 1
    denied(usr2, "SELECT sqlml.predict('sec', t) FROM pts t LIMIT 1", "permission denied to score")
    # predict is not train, deploy or own
    denied(usr, "SELECT * FROM sqlml.train('sec', 'pts', 'y')", 'permission denied to train project "sec"')
    denied(usr, "SELECT * FROM sqlml.deploy('sec', 'most_recent')", 'permission denied to deploy project "sec"')
    denied(usr, "SELECT sqlml.grant('sec', %s, 'predict')", 'permission denied to manage project "sec"',
           (roles["usr2"],))
    query(dev, "SELECT sqlml.revoke('sec', %s, 'predict')", (roles["usr"],))
    denied(usr, "SELECT sqlml.predict('sec', t) FROM pts t LIMIT 1", "permission denied to score")
    assert scalar(usr, "SELECT count(*) FROM sqlml.models") == 0


def test_grant_to_public_reaches_every_sqlml_user_but_not_others(world):
    _, roles = world
    dev = roles.connect("dev")
    query(dev, "SELECT sqlml.grant('sec', 'PUBLIC', 'predict')")
    try:
        assert scalar(roles.connect("usr2"), "SELECT sqlml.predict('sec', t) IS NOT NULL FROM pts t LIMIT 1") is True
        denied(roles.connect("nobody"), "SELECT sqlml.predict('sec', t) FROM pts t LIMIT 1",
               "permission denied for function")
    finally:
        query(dev, "SELECT sqlml.revoke('sec', 'public', 'predict')")


def test_train_grant_registers_but_only_deploy_grant_deploys(world):
    su, roles = world
    dev, usr = roles.connect("dev"), roles.connect("usr")
    query(dev, "SELECT sqlml.grant('sec', %s, 'train')", (roles["usr"],))
    try:
        project, version, deployed = train(usr, "sec", "pts", options='{"seed": 3}')
        assert (project, deployed) == ("sec", False) and version >= 2
        reason = scalar(su, "SELECT created_by FROM sqlml.models WHERE project = 'sec' AND version = %s", (version,))
        assert reason == roles["usr"]
        denied(usr, "SELECT * FROM sqlml.deploy('sec', version => %s)", "permission denied to deploy", (version,))
        query(dev, "SELECT sqlml.grant('sec', %s, 'deploy')", (roles["usr"],))
        assert query(usr, "SELECT version FROM sqlml.deploy('sec', version => %s)", (version,)) == [(version,)]
        assert query(usr, "SELECT version, strategy FROM sqlml.deploy('sec', 'rollback')") == [(1, "rollback")]
    finally:
        query(dev, "SELECT sqlml.revoke('sec', %s, 'train'), sqlml.revoke('sec', %s, 'deploy')",
              (roles["usr"], roles["usr"]))
    denied(usr, "SELECT * FROM sqlml.deploy('sec', 'most_recent')", "permission denied to deploy")


def test_own_grant_and_admin(world):
    su, roles = world
    dev, dev2, admin = roles.connect("dev"), roles.connect("dev2"), roles.connect("admin")
    assert scalar(dev2, "SELECT count(*) FROM sqlml.projects WHERE name = 'sec'") == 0
    assert scalar(admin, "SELECT count(*) FROM sqlml.projects WHERE name = 'sec'") == 1
    assert scalar(admin, "SELECT sqlml.predict('sec', t) IS NOT NULL FROM pts t LIMIT 1") is True
    query(admin, "SELECT sqlml.grant('sec', %s, 'own')", (roles["dev2"],))
    query(dev2, "SELECT sqlml.grant('sec', %s, 'predict')", (roles["usr2"],))
    assert scalar(roles.connect("usr2"), "SELECT sqlml.has_privilege('sec', 'predict')") is True
    assert scalar(su, "SELECT sqlml.has_privilege(%s, 'sec', 'deploy')", (roles["dev2"],)) is True
    assert scalar(su, "SELECT sqlml.has_privilege(%s, 'sec', 'train')", (roles["usr2"],)) is False
    assert scalar(su, "SELECT sqlml.has_privilege(%s, 'no_such_project', 'predict')", (roles["dev"],)) is None
    # usr2 sees its own grant, not the others of the project; the owners see all of them
    assert query(roles.connect("usr2"), "SELECT grantee, privilege FROM sqlml.grants") == [(roles["usr2"], "predict")]
    assert scalar(dev, "SELECT count(*) FROM sqlml.grants WHERE project = 'sec'") == 2
    query(admin, "SELECT sqlml.revoke('sec', %s, 'own')", (roles["dev2"],))
    query(dev, "SELECT sqlml.revoke('sec', %s, 'predict')", (roles["usr2"],))
    denied(dev2, "SELECT sqlml.grant('sec', %s, 'predict')", "permission denied to manage", (roles["usr"],))


@pytest.mark.parametrize("table", REGISTRY)
def test_ordinary_roles_cannot_write_the_registry(world, table):
    _, roles = world
    dev = roles.connect("dev")  # the owner of a project, through sqlml, is still not allowed to write directly
    for sql in (f"DELETE FROM sqlml.{table}", f"UPDATE sqlml.{table} SET project = project" if table != "projects"
                else "UPDATE sqlml.projects SET owner = current_user", f"TRUNCATE sqlml.{table}",
                f"INSERT INTO sqlml.{table} DEFAULT VALUES"):
        e = error(dev, sql)
        assert e.pgcode == "42501" and f"permission denied for table {table}" in e.pgerror, (sql, e.pgerror)


def test_privileged_entry_cannot_be_called_directly(world):
    _, roles = world
    denied(roles.connect("dev"), "SELECT sqlml._privileged('00000000000000000000000000000000')", "internal to sqlml")


def test_tampered_onnx_is_refused_at_load(world):
    su, roles = world
    # a new backend: nothing cached
    query(su, "UPDATE sqlml.models SET onnx = onnx || '\\x00'::bytea WHERE project = 'sec' AND version = 1")
    try:
        dev = roles.connect("dev")
        e = denied(dev, "SELECT sqlml.predict('sec@1', t) FROM pts t LIMIT 1", "fails its integrity check",
                   code="XX001")
        assert e.diag.message_primary.startswith("sqlml: ") and "Traceback" not in e.diag.message_primary
        assert "deploy another version" in e.diag.message_hint
    finally:
        query(su, "UPDATE sqlml.models SET onnx = substring(onnx FROM 1 FOR octet_length(onnx) - 1) "
                  "WHERE project = 'sec' AND version = 1")
    assert scalar(roles.connect("dev"), "SELECT sqlml.predict('sec@1', t) IS NOT NULL FROM pts t LIMIT 1") is True


# -- data is read as the caller ----------------------------------------------------------------


def test_no_select_on_table_or_in_query_means_no_training(world):
    _, roles = world
    dev = roles.connect("dev")
    denied(dev, "SELECT * FROM sqlml.train('leak', 'secret', 'y')", 'permission denied for relation "secret"')
    denied(dev, "SELECT * FROM sqlml.train('leak', 'SELECT a, b, y FROM secret', 'y')",
           "permission denied for table secret")
    denied(dev, "SELECT * FROM sqlml.train('leak', 'SELECT p.a, p.b, p.y FROM pts p WHERE EXISTS "
                "(SELECT 1 FROM secret s WHERE s.code = ''x'')', 'y')", "permission denied for table secret")
    denied(dev, "SELECT * FROM sqlml.train('leak', 'hidden_view', 'y')", 'permission denied for relation "hidden_view"')
    denied(dev, "SELECT * FROM sqlml.predict_batch('sec', 'secret', 'id')", 'permission denied for relation "secret"')
    assert scalar(dev, "SELECT count(*) FROM sqlml.projects WHERE name = 'leak'") == 0


def test_a_granted_view_reads_with_its_owners_rights(world):
    su, roles = world
    dev = roles.connect("dev")
    assert train(dev, "viewed", "secret_view")[1] == 1
    assert scalar(su, "SELECT rows FROM sqlml.models WHERE project = 'viewed'") == 300


def test_column_grants_limit_features_and_the_target(world):
    su, roles = world
    dev, dev2 = roles.connect("dev"), roles.connect("dev2")
    dev.notices.clear()
    train(dev, "cols", "partial")
    features = scalar(su, "SELECT array(SELECT f->>'name' FROM jsonb_array_elements(feature_schema->'features') f "
                          "ORDER BY 1) FROM sqlml.models WHERE project = 'cols'")
    assert features == ["a", "b"]  # id identifies rows: never a feature
    assert any('"c" is not used: not readable' in n for n in dev.notices)
    denied(dev2, "SELECT * FROM sqlml.train('cols2', 'partial', 'y')", 'permission denied for column "y" of partial')
    denied(dev2, """SELECT * FROM sqlml.train('cols2', 'partial', 'y', task => 'forecast',
                    options => '{"time_column": "c", "horizon": 3}')""", 'permission denied for column "y" of partial')
    denied(dev2, "SELECT * FROM sqlml.import_model('cols2', '\\x00'::bytea, 'regression', 'partial', target => 'y')",
           'permission denied for column "y" of partial')
    denied(dev, "SELECT * FROM sqlml.train('cols3', 'SELECT a, c, y FROM partial', 'y')",
           "permission denied for table partial")


def test_row_level_security_of_the_source_applies(world):
    su, roles = world
    dev, dev2 = roles.connect("dev"), roles.connect("dev2")
    train(dev, "north", "regional")
    assert scalar(su, "SELECT rows FROM sqlml.models WHERE project = 'north'") == 75  # i % 4 = 0
    assert scalar(dev, "SELECT count(*) FROM sqlml.predict_batch('north', 'regional', 'id')") == 75
    # dev2 has no policy on regional: RLS is on, so it sees no rows at all
    e = error(dev2, "SELECT * FROM sqlml.train('south', 'regional', 'y')")
    assert "has no rows" in e.pgerror


def test_score_creates_the_table_as_the_caller(world):
    su, roles = world
    dev = roles.connect("dev")
    assert scalar(dev, "SELECT sqlml.score('sec', 'pts', 'sec_scores', 'id')") == 300
    assert scalar(su, "SELECT tableowner FROM pg_tables WHERE tablename = 'sec_scores'") == roles["dev"]


# -- audit -------------------------------------------------------------------------------------


def test_audit_log_records_who_did_what_and_hides_other_rows(world):
    su, roles = world
    dev, usr, admin = roles.connect("dev"), roles.connect("usr"), roles.connect("admin")
    query(dev, "SELECT sqlml.grant('sec', %s, 'predict')", (roles["usr"],))
    assert scalar(usr, "SELECT count(*) FROM sqlml.predict_batch('sec', 'pts', 'id')") == 300
    query(dev, "SELECT sqlml.revoke('sec', %s, 'predict')", (roles["usr"],))
    actions = {a for (a,) in query(su, "SELECT DISTINCT action FROM sqlml.audit_log WHERE project = 'sec'")}
    assert {"train", "deploy", "rollback", "grant", "revoke", "predict_batch", "score"} <= actions
    first = query(su, "SELECT actor, action, version, detail->>'relation' FROM sqlml.audit_log WHERE project = 'sec' "
                      "ORDER BY id LIMIT 2")
    assert first == [(roles["dev"], "train", 1, "pts"), (roles["dev"], "deploy", 1, None)]
    grant = query(su, "SELECT actor, detail FROM sqlml.audit_log WHERE action = 'grant' ORDER BY id LIMIT 1")[0]
    assert grant == (roles["dev"], {"role": roles["usr"], "privilege": "predict"})
    # others read only their own rows, admins all of them; nobody writes any
    assert {a for (a,) in query(usr, "SELECT DISTINCT actor FROM sqlml.audit_log")} == {roles["usr"]}
    assert {a for (a,) in query(dev, "SELECT DISTINCT actor FROM sqlml.audit_log")} == {roles["dev"]}
    assert scalar(admin, "SELECT count(*) FROM sqlml.audit_log") == scalar(su, "SELECT count(*) FROM sqlml.audit_log")
    denied(dev, "DELETE FROM sqlml.audit_log", "permission denied for table audit_log")
    denied(roles.connect("nobody"), "SELECT * FROM sqlml.audit_log", "permission denied for table audit_log")


# -- guards for every sqlml object, present and future -------------------------------------------


def test_security_definer_functions_pin_their_search_path(world):
    su, _ = world
    loose = query(su, """SELECT p.oid::regprocedure::text FROM pg_proc p
                         WHERE p.pronamespace = 'sqlml'::regnamespace AND p.prosecdef
                           AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY(p.proconfig), false)""")
    assert loose == [], "SECURITY DEFINER functions need SET search_path = pg_catalog, pg_temp"


def test_no_sqlml_role_may_write_any_sqlml_table(world):
    su, _ = world
    writable = query(su, """
        SELECT r.rolname, c.relname, priv FROM pg_class c
        CROSS JOIN (VALUES ('sqlml_user'), ('sqlml_developer'), ('sqlml_admin'), ('public')) AS r(rolname)
        CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS priv
        WHERE c.relnamespace = 'sqlml'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND CASE WHEN r.rolname = 'public'
                   THEN EXISTS (SELECT FROM aclexplode(c.relacl) x WHERE x.grantee = 0 AND x.privilege_type = priv)
                   ELSE has_table_privilege(r.rolname, c.oid, priv) END""")
    assert writable == []


def test_every_per_project_table_has_row_level_security(world):
    su, _ = world
    open_tables = query(su, """
        SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname IN ('project', 'name')
        WHERE c.relnamespace = 'sqlml'::regnamespace AND c.relkind = 'r'
          AND (NOT c.relrowsecurity OR NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid))""")
    assert open_tables == [], "tables of per-project data need ENABLE ROW LEVEL SECURITY and a policy"
    views = query(su, """SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'sqlml'::regnamespace
                         AND c.relkind = 'v' AND NOT coalesce('security_invoker=true' = ANY(c.reloptions), false)
                         AND EXISTS (SELECT FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid
                                     JOIN pg_class t ON t.oid = d.refobjid
                                     WHERE w.ev_class = c.oid AND t.relrowsecurity)""")
    assert views == [], "views over row-level-secured tables need WITH (security_invoker = true)"


def test_a_definer_function_does_not_lend_its_privilege_to_the_statement(world):
    """Scoring resolves a project once per statement; the resolution must be per role, or a caller
    could score a project it may not, right after a SECURITY DEFINER function of its owner did."""
    su, roles = world
    query(su, f"""CREATE FUNCTION dev_scores_one() RETURNS float8 LANGUAGE sql SECURITY DEFINER
                  SET search_path = pg_catalog AS
                  $$ SELECT sqlml.predict('sec', '{{"id": 1, "a": 1, "b": 1, "c": "x", "region": "north"}}'::jsonb) $$;
                  ALTER FUNCTION dev_scores_one() OWNER TO "{roles['dev']}";
                  GRANT EXECUTE ON FUNCTION dev_scores_one() TO "{roles['usr']}" """)
    usr = roles.connect("usr")
    assert scalar(usr, "SELECT dev_scores_one() IS NOT NULL") is True
    denied(usr, """SELECT dev_scores_one(), sqlml.predict('sec', '{"id": 2, "a": 5, "b": 3, "c": "z"}'::jsonb)""",
           'permission denied to score project "sec"')
    denied(usr, """SELECT sqlml.predict('sec', '{"id": 2, "a": 5, "b": 3, "c": "z"}'::jsonb), dev_scores_one()""",
           'permission denied to score project "sec"')


# -- tenant isolation: nothing of a project reaches a role that may not score it -----------------


def test_warm_start_borrows_only_from_projects_the_caller_may_score(world):
    """Configurations tuned on dev's data ("sec", trained on pts) are facts about that data: dev2
    may not score "sec", so its training on the same data starts cold, until dev grants predict."""
    su, roles = world
    dev, dev2 = roles.connect("dev"), roles.connect("dev2")

    def warm_trials(project):
        return scalar(su, "SELECT count(*) FROM sqlml.trials WHERE project = %s AND origin = 'warm_start'", (project,))

    dev2.notices.clear()
    train(dev2, "cold", "pts")
    assert not any("warm start" in n for n in dev2.notices), dev2.notices
    assert warm_trials("cold") == 0
    query(dev, "SELECT sqlml.grant('sec', %s, 'predict')", (roles["dev2"],))
    try:
        dev2.notices.clear()
        train(dev2, "warm", "pts")
        # borrowed: the search is handed sec's configurations. Whether they run as trials of their own
        # is the budget's business (one equal to the probe's is not fitted twice; 2 s may be spent)
        offered = [n for n in dev2.notices if "warm start" in n]
        assert offered and int(offered[0].split("warm start: ")[1].split()[0]) > 0, dev2.notices
    finally:
        query(dev, "SELECT sqlml.revoke('sec', %s, 'predict')", (roles["dev2"],))


def test_prediction_counts_show_only_projects_the_caller_may_score(world):
    su, roles = world
    dev, usr, admin = roles.connect("dev"), roles.connect("usr"), roles.connect("admin")
    assert scalar(dev, "SELECT count(*) FROM sqlml.predict_batch('sec', 'pts', 'id')") == 300
    assert dict(query(dev, "SELECT * FROM sqlml.prediction_counts()")).get("sec", 0) >= 300
    assert dict(query(admin, "SELECT * FROM sqlml.prediction_counts()")).get("sec", 0) >= 300
    assert "sec" not in dict(query(usr, "SELECT * FROM sqlml.prediction_counts()"))
    query(dev, "SELECT sqlml.grant('sec', %s, 'predict')", (roles["usr"],))
    try:
        assert "sec" in dict(query(usr, "SELECT * FROM sqlml.prediction_counts()"))
    finally:
        query(dev, "SELECT sqlml.revoke('sec', %s, 'predict')", (roles["usr"],))


def test_a_denied_scoring_job_does_not_reveal_the_size_of_the_model(world):
    """A scoring job's predicted memory counts its model: for a project the role may not score it
    counts nothing, as for one that does not exist (each call from a fresh, equally cold backend)."""
    _, roles = world
    peaks = []
    for project in ("sec", "no_such_project"):
        usr = roles.connect("usr")
        error(usr, "SELECT * FROM sqlml.predict_batch(%s, 'pts', 'id')", (project,))
        peaks.append(scalar(usr, "SELECT predicted_peak_bytes FROM sqlml.jobs WHERE role = current_user "
                                 "ORDER BY job_id DESC LIMIT 1"))
    assert peaks[0] is not None and peaks[0] == peaks[1]
