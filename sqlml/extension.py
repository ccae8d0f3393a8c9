"""The extension's SQL scripts, built from one source (as pgvector builds ``vector--X.sql``).

``sql/sqlml.sql`` is the source of the current version. It reads top to bottom like any install
script, in sections marked by a line of their own:

- ``-- @schema``: what holds data or state (the schema, tables, indexes, roles, row-level
  security, dump membership). Installed once; a later version changes it in the hand-written
  migration ``sql/upgrades/sqlml--A--B.sql``.
- ``-- @definitions``: what can be replaced without losing anything (``CREATE OR REPLACE
  FUNCTION`` / ``VIEW``, ``COMMENT ON``, ``GRANT`` / ``REVOKE``). Every upgrade script replays
  all of them, after its migration: the functions, their comments and the grants of an upgraded
  database are those of a fresh install by construction, and the bulk ``REVOKE ... FROM PUBLIC``
  at the end covers a function added later too.

The build adds what is written once here, not per function: the guard against running a script
by hand, the guard against an unsupported PostgreSQL, and the PL/Python preamble that each
PL/Python function body opens with. The version comes from ``sqlml.__version__`` alone.

Released scripts are frozen: ``sql/sqlml--0.1.0.sql`` is copied as released, never rebuilt. When a
version is released, its built install script joins them (and its upgrade script too), and
``sql/upgrades/`` starts the next version's migration.

Standard library only: ``sqlml install`` runs it on a machine without the ML stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlml import __version__
from sqlml.postgres_versions import SUPPORTED_MAJORS

CONTROL = """\
# sqlml: AutoML inside PostgreSQL (built by sqlml/extension.py)
comment = 'AutoML inside PostgreSQL: train, register, deploy and score ONNX models in SQL'
default_version = '{version}'
requires = 'plpython3u, jsonb_plpython3u, vector'
relocatable = false
superuser = true
"""

# The first sqlml function a backend calls finds the server's share directory through the
# postgres binary's own path (parallel workers cannot run SPI, so no query can tell them), runs
# extension/sqlml_boot.py from there, and leaves sqlml.server.api in GD['sqlml'] (GD is shared by
# every PL/Python function of the session); later calls only look it up. One line, so that a
# traceback's line numbers match the body as written in sql/sqlml.sql.
PREAMBLE = (
    "if 'sqlml' not in GD: import ctypes as c; L = c.CDLL(None); d = c.create_string_buffer(1024); "
    "L.get_share_path((c.c_char * 1024).in_dll(L, 'my_exec_path'), d); "
    "f = d.value.decode() + '/extension/sqlml_boot.py'; "
    "exec(compile(open(f).read(), f, 'exec'), {'GD': GD, '__file__': f})"
)

GUARD = '\\echo Use "CREATE EXTENSION sqlml" to load this file. \\quit'


def version_guard(version: str) -> str:
    """A DO block that stops the script on a PostgreSQL major version sqlml was not checked on:
    sqlml reads PostgreSQL internals (sqlml/server/pg_internals.py) that differ between majors."""
    majors = ", ".join(str(m) for m in SUPPORTED_MAJORS)
    return f"""DO $guard$
BEGIN
    IF current_setting('server_version_num')::integer / 10000 NOT IN ({majors}) THEN
        RAISE EXCEPTION 'sqlml {version} does not support PostgreSQL %', current_setting('server_version')
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'sqlml {version} is tested on PostgreSQL {majors}; install it on a server of a supported version';
    END IF;
END
$guard$;"""


@dataclass(frozen=True)
class Statement:
    section: str  # "schema" or "definitions"
    text: str     # the statement, with the comments above it, ending in ';'


_SECTION = re.compile(r"^-- @(schema|definitions)\s*$")
_TOKEN = re.compile(r"\$([A-Za-z_]\w*)?\$|'|--|;")
_DEFINITION = re.compile(
    r"^\s*(CREATE OR REPLACE (FUNCTION|VIEW)|COMMENT ON|GRANT|REVOKE)\b", re.IGNORECASE)
_PLPYTHON_BODY = re.compile(r"(LANGUAGE plpython3u\b[^$]*?AS \$\$\n)", re.IGNORECASE)


def _split(sql: str) -> list[str]:
    """The statements of ``sql``, each with the comment lines above it. Knows dollar quotes,
    string literals and line comments, which is all the source uses."""
    out, start, i = [], 0, 0
    while True:
        m = _TOKEN.search(sql, i)
        if m is None:
            break
        tok = m.group(0)
        if tok == ";":
            out.append(sql[start:m.end()].strip("\n"))
            start = i = m.end()
        elif tok == "--":
            i = sql.find("\n", m.end())
            i = len(sql) if i < 0 else i
        elif tok == "'":
            i = m.end()
            while True:
                i = _closing(sql, "'", i, m.start()) + 1
                if sql[i:i + 1] != "'":
                    break
                i += 1
        else:  # $tag$ ... $tag$
            i = _closing(sql, tok, m.end(), m.start()) + len(tok)
    rest = sql[start:].strip()
    if rest and not all(line.lstrip().startswith("--") for line in rest.splitlines() if line.strip()):
        raise ValueError(f"sql/sqlml.sql ends with an unterminated statement: {rest[:80]!r}")
    return out


def _closing(sql: str, quote: str, start: int, opened: int) -> int:
    """Where ``quote`` closes the literal opened at ``opened``."""
    at = sql.find(quote, start)
    if at < 0:
        line = sql.count("\n", 0, opened) + 1
        raise ValueError(f"{quote} opened at line {line} of a section is never closed: {sql[opened:opened + 60]!r}")
    return at


def parse(source: str) -> list[Statement]:
    """The statements of the source with their sections; checks that each section holds only what
    it may (a definition is replayed by every upgrade, so it must be replaceable)."""
    statements: list[Statement] = []
    section = None
    for chunk in re.split(r"^(-- @(?:schema|definitions)[ \t]*)$", source, flags=re.MULTILINE):
        m = _SECTION.match(chunk)
        if m:
            section = m.group(1)
            continue
        for text in _split(chunk):
            code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
            if section is None:
                raise ValueError(f"statement before the first section marker: {code.strip()[:80]!r}")
            replaceable = bool(_DEFINITION.match(code))
            if section == "definitions" and not replaceable:
                raise ValueError(f"-- @definitions holds only CREATE OR REPLACE, COMMENT, GRANT and REVOKE: "
                                 f"{code.strip()[:80]!r}")
            if section == "schema" and re.match(r"^\s*CREATE (OR REPLACE )?(FUNCTION|VIEW)", code, re.I):
                raise ValueError(f"functions and views belong in -- @definitions: {code.strip()[:80]!r}")
            statements.append(Statement(section, _with_preamble(text, code)))
    return statements


def _with_preamble(text: str, code: str) -> str:
    """``text`` with the preamble opening its PL/Python body; a PL/Python function whose body the
    build cannot find is refused (without the preamble it would fail at its first call)."""
    if re.search(r"\bLANGUAGE\s+plpython3u\b", code, re.IGNORECASE) and not _PLPYTHON_BODY.search(code):
        raise ValueError("a PL/Python function is written `LANGUAGE plpython3u ... AS $$`, then its body on the "
                         f"next line: {code.strip()[:80]!r}")
    return _PLPYTHON_BODY.sub(lambda m: m.group(1) + PREAMBLE + "\n", text)


def _header(title: str, version: str) -> str:
    return (f"-- sqlml {title} (built by sqlml/extension.py from sql/sqlml.sql: edit that, not this)\n\n"
            f"{GUARD}\n\n{version_guard(version)}\n")


def install_script(source: str, version: str = __version__) -> str:
    """``sqlml--<version>.sql``: every statement of the source, in order."""
    body = "\n\n".join(s.text for s in parse(source))
    return f"{_header(version, version)}\n{body}\n"


def upgrade_script(source: str, migration: str, old: str, version: str = __version__) -> str:
    """``sqlml--<old>--<version>.sql``: the hand-written migration of the schema, then every
    definition of the source replayed."""
    body = "\n\n".join(s.text for s in parse(source) if s.section == "definitions")
    return (f"{_header(f'upgrade {old} -> {version}', version)}\n"
            f"-- migration (sql/upgrades/sqlml--{old}--{version}.sql)\n\n{migration.strip()}\n\n"
            f"-- definitions, replayed (sql/sqlml.sql)\n\n{body}\n")


def build(src: Path, dest: Path, version: str = __version__) -> list[Path]:
    """Write the control file, the released scripts, this version's install script and its upgrade
    scripts from ``src`` (the sql/ directory) into ``dest``; returns the files written."""
    src, dest = Path(src), Path(dest)
    source = (src / "sqlml.sql").read_text()
    files = {"sqlml.control": CONTROL.format(version=version),
             f"sqlml--{version}.sql": install_script(source, version)}
    for released in sorted(src.glob("sqlml--*.sql")):
        if released.name != f"sqlml--{version}.sql":
            files[released.name] = released.read_text()
    for migration in sorted((src / "upgrades").glob(f"sqlml--*--{version}.sql")):
        old = migration.name[len("sqlml--"):-len(f"--{version}.sql")]
        files[migration.name] = upgrade_script(source, migration.read_text(), old, version)
    files["sqlml_boot.py"] = (src / "sqlml_boot.py").read_text()
    written = []
    for name, text in files.items():
        (dest / name).unlink(missing_ok=True)  # a new file, never through a link to another's
        (dest / name).write_text(text)
        (dest / name).chmod(0o644)
        written.append(dest / name)
    return written


def main(argv=None) -> int:
    """``python -m sqlml.extension DIR``: build the extension's files into DIR (to read them)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(main.__doc__, file=sys.stderr)
        return 2
    dest = Path(argv[0])
    dest.mkdir(parents=True, exist_ok=True)
    for path in build(Path(__file__).resolve().parent.parent / "sql", dest):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
