"""The builder of the extension's scripts (sqlml/extension.py), without a database: how it splits
the source into statements, what each section may hold, where the PL/Python preamble goes, and
what the built files hold. The built scripts run on a real server in test_install and test_upgrade.
"""

from __future__ import annotations

import re

import pytest

from sqlml import __version__, extension
from sqlml.extension import GUARD, PREAMBLE, install_script, parse, upgrade_script, version_guard
from sqlml.install import CHECKOUT

SQL = CHECKOUT / "sql"


@pytest.mark.parametrize("name, sql, statements", [
    ("two statements", "SELECT 1;\nSELECT 2;", ["SELECT 1;", "SELECT 2;"]),
    ("the comment above belongs to the statement", "-- one\nSELECT 1;", ["-- one\nSELECT 1;"]),
    ("; in a line comment", "-- a; b\nSELECT 1;", ["-- a; b\nSELECT 1;"]),
    ("a quote in a line comment", "-- don't\nSELECT 1;", ["-- don't\nSELECT 1;"]),
    ("; in a string", "SELECT 'a;b';\nSELECT 2;", ["SELECT 'a;b';", "SELECT 2;"]),
    ("'' in a string", "COMMENT ON TABLE t IS 'it''s; fine';\nSELECT 2;",
     ["COMMENT ON TABLE t IS 'it''s; fine';", "SELECT 2;"]),
    ("'' at the end of a string", "SELECT 'x''';\nSELECT 2;", ["SELECT 'x''';", "SELECT 2;"]),
    ("-- in a string", "SELECT '--x;';\nSELECT 2;", ["SELECT '--x;';", "SELECT 2;"]),
    ("; and ' in a dollar quote", "DO $$ BEGIN PERFORM 'a'; PERFORM 1; END $$;\nSELECT 2;",
     ["DO $$ BEGIN PERFORM 'a'; PERFORM 1; END $$;", "SELECT 2;"]),
    ("$$ inside a tagged dollar quote", "DO $g$ x $$; y $g$;\nSELECT 2;", ["DO $g$ x $$; y $g$;", "SELECT 2;"]),
    ("-- inside a dollar quote", "DO $$ -- ; $$;", ["DO $$ -- ; $$;"]),
    ("a trailing comment is no statement", "SELECT 1;\n-- the end; really\n", ["SELECT 1;"]),
])
def test_split(name, sql, statements):
    assert extension._split(sql) == statements


@pytest.mark.parametrize("name, sql, refusal", [
    ("no semicolon", "SELECT 1;\nSELECT 2", "ends with an unterminated statement: 'SELECT 2'"),
    ("open dollar quote", "SELECT 1;\nDO $$ BEGIN END;", "$$ opened at line 2 of a section is never closed"),
    ("open string", "SELECT 'a;", "' opened at line 1 of a section is never closed"),
    ("open string after ''", "SELECT 'a'';", "' opened at line 1 of a section is never closed"),
])
def test_split_refuses_an_unterminated_statement(name, sql, refusal):
    with pytest.raises(ValueError, match=re.escape(refusal)):
        extension._split(sql)


def plpython(name: str, body: str = "return GD['sqlml'].version()") -> str:
    return f"CREATE OR REPLACE FUNCTION {name}() RETURNS text\nLANGUAGE plpython3u STABLE AS $$\n{body}\n$$;"


ACCEPTED = [
    ("schema", "CREATE TABLE sqlml.t (a int);"),
    ("schema", "CREATE INDEX ON sqlml.t (a);"),
    ("schema", "ALTER TABLE sqlml.t ENABLE ROW LEVEL SECURITY;"),
    ("schema", "SELECT pg_catalog.pg_extension_config_dump('sqlml.t', '');"),
    ("schema", "COMMENT ON TABLE sqlml.t IS 'a table';"),
    ("definitions", plpython("sqlml.f")),
    ("definitions", "CREATE OR REPLACE VIEW sqlml.v AS SELECT 1;"),
    ("definitions", "COMMENT ON FUNCTION sqlml.f() IS 'f; CREATE TABLE in a comment is fine';"),
    ("definitions", "GRANT EXECUTE ON FUNCTION sqlml.f() TO PUBLIC;"),
    ("definitions", "REVOKE ALL ON ALL TABLES IN SCHEMA sqlml FROM PUBLIC;"),
    ("definitions", "-- CREATE TABLE in a line comment above\nGRANT SELECT ON sqlml.t TO sqlml_user;"),
]


@pytest.mark.parametrize("section, sql", ACCEPTED)
def test_each_section_takes_what_it_may(section, sql):
    [statement] = parse(f"-- @{section}\n{sql}\n")
    assert statement.section == section


@pytest.mark.parametrize("source, refusal", [
    ("-- @definitions\nCREATE TABLE sqlml.t (a int);", "-- @definitions holds only"),
    ("-- @definitions\nALTER TABLE sqlml.t ADD COLUMN b int;", "-- @definitions holds only"),
    ("-- @definitions\nCREATE FUNCTION sqlml.f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
     "-- @definitions holds only"),  # not replaceable: the replay of an upgrade would fail
    ("-- @definitions\nCREATE VIEW sqlml.v AS SELECT 1;", "-- @definitions holds only"),
    ("-- @schema\n" + plpython("sqlml.f"), "functions and views belong in -- @definitions"),
    ("-- @schema\nCREATE FUNCTION sqlml.f() RETURNS int LANGUAGE sql AS 'SELECT 1';",
     "functions and views belong in -- @definitions"),
    ("-- @schema\nCREATE VIEW sqlml.v AS SELECT 1;", "functions and views belong in -- @definitions"),
    ("CREATE TABLE sqlml.t (a int);\n-- @schema\n", "statement before the first section marker"),
    ("-- @definitions\nCREATE OR REPLACE FUNCTION sqlml.f() RETURNS text AS $$\nreturn 1\n$$ LANGUAGE plpython3u;",
     "LANGUAGE plpython3u ... AS $$"),  # the build could not find the body to put the preamble into
])
def test_a_section_refuses_what_it_may_not_hold(source, refusal):
    with pytest.raises(ValueError, match=re.escape(refusal)):
        parse(source)


def test_the_preamble_opens_pl_python_bodies_only():
    source = "\n".join([
        "-- @definitions",
        plpython("sqlml.py_f"),
        "CREATE OR REPLACE FUNCTION sqlml.py_g(x jsonb) RETURNS jsonb\n"
        "LANGUAGE plpython3u TRANSFORM FOR TYPE jsonb VOLATILE AS $$\nreturn x\n$$;",
        "CREATE OR REPLACE FUNCTION sqlml.sql_f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
        "CREATE OR REPLACE FUNCTION sqlml.pl_f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN RETURN 1; END\n$$;",
    ])
    py_f, py_g, sql_f, pl_f = (s.text for s in parse(source))
    assert py_f.endswith(f"AS $$\n{PREAMBLE}\nreturn GD['sqlml'].version()\n$$;")
    assert py_g.endswith(f"AS $$\n{PREAMBLE}\nreturn x\n$$;")
    assert PREAMBLE not in sql_f and PREAMBLE not in pl_f
    assert sql_f.endswith("$$ SELECT 1 $$;") and pl_f.endswith("$$\nBEGIN RETURN 1; END\n$$;")


def test_every_pl_python_function_of_the_source_gets_the_preamble_once():
    source = (SQL / "sqlml.sql").read_text()
    functions = [s.text for s in parse(source) if re.search(r"LANGUAGE plpython3u", s.text)]
    assert len(functions) == len(re.findall(r"LANGUAGE plpython3u", source)) > 20
    assert all(f.count(PREAMBLE) == 1 for f in functions)
    assert PREAMBLE not in source  # written once, in the builder


def test_both_scripts_open_with_the_guards():
    source, migration = (SQL / "sqlml.sql").read_text(), "-- nothing to migrate\n"
    for script in (install_script(source, "9.9.9"), upgrade_script(source, migration, "9.9.8", "9.9.9")):
        guard = version_guard("9.9.9")
        assert script.index(GUARD) < script.index(guard) < script.index("CREATE OR REPLACE")
        assert "'sqlml 9.9.9 does not support PostgreSQL %'" in guard


def test_the_version_guard_lists_the_supported_majors(monkeypatch):
    monkeypatch.setattr(extension, "SUPPORTED_MAJORS", (14, 15))
    guard = version_guard("1.2.3")
    assert "/ 10000 NOT IN (14, 15)" in guard and "tested on PostgreSQL 14, 15" in guard
    assert "ERRCODE = 'feature_not_supported'" in guard


def test_upgrade_script_is_the_migration_then_every_definition_and_nothing_of_the_schema():
    source = (SQL / "sqlml.sql").read_text()
    script = upgrade_script(source, "ALTER TABLE sqlml.projects ADD COLUMN x int;", "0.1.0", "0.2.0")
    migration_at = script.index("ALTER TABLE sqlml.projects ADD COLUMN x int;")
    replayed = script[script.index("-- definitions, replayed"):]
    assert migration_at < script.index("-- definitions, replayed")
    statements = parse(source)
    for s in statements:
        assert (s.text in replayed) == (s.section == "definitions"), s.text[:80]
    install = install_script(source, "0.2.0")
    assert [install.index(s.text) for s in statements] == sorted(install.index(s.text) for s in statements)


def test_build_writes_the_control_file_the_released_scripts_as_they_are_and_this_version(tmp_path):
    written = {p.name for p in extension.build(SQL, tmp_path)}
    released = {p.name for p in SQL.glob("sqlml--*.sql")}
    upgrades = {p.name for p in (SQL / "upgrades").glob(f"sqlml--*--{__version__}.sql")}
    assert written == {"sqlml.control", f"sqlml--{__version__}.sql", "sqlml_boot.py"} | released | upgrades
    assert f"sqlml--0.1.0--{__version__}.sql" in upgrades
    for name in released:
        assert (tmp_path / name).read_bytes() == (SQL / name).read_bytes(), f"{name} is frozen"
    assert f"default_version = '{__version__}'" in (tmp_path / "sqlml.control").read_text()
    for name in (f"sqlml--{__version__}.sql", f"sqlml--0.1.0--{__version__}.sql"):
        assert version_guard(__version__) in (tmp_path / name).read_text()


def test_the_released_script_is_unchanged():
    """sql/sqlml--0.1.0.sql as released (git show 715d44e:sql/sqlml--0.1.0.sql), by its digest."""
    import hashlib

    digest = hashlib.sha256((SQL / "sqlml--0.1.0.sql").read_bytes()).hexdigest()
    assert digest == "a6c2cb7922d0eca27faad12d2b6cc07beb6d58468515425dbd7404ee32c6b573"
