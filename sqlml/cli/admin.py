"""``sqlml install | uninstall | doctor``: put sqlml into a PostgreSQL server, take it out, check it.

``install`` and ``uninstall`` run on the database server's machine (``sqlml.install`` does the
work); ``doctor`` runs anywhere and says, for each problem it finds, the command that fixes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sqlml import __version__
from sqlml.cli.conventions import EXIT_FAILED, EXIT_OK, add_command, add_dsn_arguments, connect, emit, resolve_dsn


def cmd_install(args) -> int:
    from sqlml import install

    if not args.no_files:
        venv = Path(args.venv)
        print(f"installing the server-side venv at {venv} (interpreter {install.server_python()})")
        install.make_venv(venv, editable=False)
        print(f"installing extension files into {install.install_files(venv)}")
    if args.dsn or not args.files_only:
        print(install.install_database(resolve_dsn(args.dsn)).describe())
    return EXIT_OK


def cmd_uninstall(args) -> int:
    from sqlml import install

    roles_dropped = install.uninstall_database(resolve_dsn(args.dsn))
    print("DROP EXTENSION sqlml CASCADE: ok")
    print(f"roles {', '.join(install.ROLES)}: " + ("dropped" if roles_dropped else
          "kept (still used in another database of this cluster, where sqlml is installed)"))
    if args.files:
        install.remove_files()
        print("extension files removed")
    return EXIT_OK


def doctor_report(conn) -> dict:
    """Everything doctor checks, as data: each problem with its fix."""
    problems, report = [], {"client": {"sqlml": __version__, "python": sys.version.split()[0]}}
    with conn.cursor() as cur:
        cur.execute("SELECT name, default_version, installed_version FROM pg_available_extensions "
                    "WHERE name IN ('plpython3u', 'jsonb_plpython3u', 'vector', 'sqlml', 'pg_cron')")
        available = {r[0]: {"default": r[1], "installed": r[2]} for r in cur.fetchall()}
        cur.execute("SHOW server_version")
        report["server"] = {"postgresql": cur.fetchone()[0], "extensions": available}
        fixes = {
            "plpython3u": "install postgresql-plpython3-NN on the server (scripts/system-deps.sh)",
            "jsonb_plpython3u": "install postgresql-plpython3-NN on the server (scripts/system-deps.sh)",
            "vector": "install pgvector on the server (scripts/system-deps.sh builds it)",
            "sqlml": "run `sqlml install --dsn ...` on the server (or `make setup` in a checkout)",
        }
        for ext, fix in fixes.items():
            if ext not in available:
                problems.append({"problem": f"extension {ext} is not available on the server", "fix": fix})
        sqlml_ext = available.get("sqlml", {})
        if sqlml_ext and not sqlml_ext["installed"]:
            problems.append({"problem": "extension sqlml is available but not created in this database",
                             "fix": "CREATE EXTENSION sqlml CASCADE;  (or `sqlml install --dsn ...`)"})
        if sqlml_ext.get("installed"):
            try:
                cur.execute("SELECT sqlml.doctor()")
                server = cur.fetchone()[0]
            except Exception as e:  # noqa: BLE001 - a broken server environment is a finding
                conn.rollback() if not conn.autocommit else None
                server = None
                problems.append({"problem": f"sqlml.doctor() failed: {str(e).strip().splitlines()[0]}",
                                 "fix": "run `sqlml install` on the server to repair its Python environment"})
            if server:
                report["server"]["python"] = server["python"]
                report["server"]["sqlml"] = server["sqlml"]
                report["server"]["packages"] = server["packages"]
                for p in server["packages"]:
                    if not p["ok"]:
                        pin = f"=={p['pinned']}" if p.get("pinned") else ""
                        problems.append({"problem": f"server package {p['package']}: {p.get('error')}",
                                         "fix": f"pip install '{p['package']}{pin}' into the server venv "
                                                f"(or re-run `sqlml install`)"})
                if server["sqlml"] != __version__:
                    problems.append({"problem": f"client sqlml {__version__} but server sqlml {server['sqlml']}",
                                     "fix": "install the same sqlml version on both sides"})
                problems += _extension_version_problems(sqlml_ext["installed"], sqlml_ext["default"],
                                                        server["sqlml"], conn.info.dbname)
    report["problems"] = problems
    return report


def _version_key(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in version.split("."))


def _extension_version_problems(created: str, available: str, package: str, database: str) -> list[dict]:
    """The extension created in this database, the version its files on the server install and the
    sqlml package the server runs must be one version; otherwise, what to run."""
    if available != package:
        return [{"problem": f"the server's extension files are sqlml {available} but its Python package is sqlml "
                            f"{package}",
                 "fix": "run `sqlml install --dsn ...` on the database server: it writes the extension files of the "
                        "package it has, then updates the extension in this database"}]
    if created == package:
        return []
    if _version_key(created) < _version_key(package):
        return [{"problem": f"extension sqlml {created} in database \"{database}\" is older than the sqlml {package} "
                            "the server runs",
                 "fix": f"sqlml install --no-files --dsn ...  (or, in database \"{database}\": ALTER EXTENSION sqlml "
                        "UPDATE;) upgrades it in place; models, deployments, grants and history are kept"}]
    return [{"problem": f"extension sqlml {created} in database \"{database}\" is newer than the sqlml {package} "
                        "the server runs",
             "fix": f"install sqlml {created} on the server again (pip install sqlml=={created}, then sqlml install)"}]


def cmd_doctor(args) -> int:
    conn = connect(args)
    report = doctor_report(conn)
    lines = [f"client: sqlml {report['client']['sqlml']} (Python {report['client']['python']})",
             f"server: PostgreSQL {report['server']['postgresql']}"]
    if "python" in report["server"]:
        py = report["server"]["python"]
        lines.append(f"server Python: {py['version']} ({py['prefix']}), sqlml {report['server']['sqlml']}")
        for p in report["server"]["packages"]:
            lines.append(f"  {'ok ' if p['ok'] else 'BAD'} {p['package']:<14} {p.get('version') or '-':<10} "
                         f"{p.get('error') or ''}")
    for ext, v in report["server"]["extensions"].items():
        lines.append(f"  extension {ext}: available {v['default']}, created {v['installed'] or 'no'}")
    for p in report["problems"]:
        lines.append(f"PROBLEM: {p['problem']}\n  fix: {p['fix']}")
    lines.append("all good" if not report["problems"] else f"{len(report['problems'])} problem(s)")
    emit(args, report, "\n".join(lines))
    return EXIT_OK if not report["problems"] else EXIT_FAILED

def add_commands(subparsers) -> None:
    c = add_command(subparsers, "install", cmd_install, "install sqlml into a PostgreSQL server on this machine")
    c.add_argument("--dsn", help="database to CREATE EXTENSION sqlml in")
    c.add_argument("--venv", default="/opt/sqlml/venv", help="server-side venv (default /opt/sqlml/venv)")
    c.add_argument("--files-only", action="store_true", help="only the venv and extension files, no database")
    c.add_argument("--no-files", action="store_true", help="only CREATE EXTENSION in --dsn")

    c = add_command(subparsers, "uninstall", cmd_uninstall,
                    "DROP EXTENSION sqlml CASCADE (and optionally remove its files)")
    c.add_argument("--dsn")
    c.add_argument("--files", action="store_true", help="also remove the extension files from the server")

    c = add_command(subparsers, "doctor", cmd_doctor,
                    "check the server's Python, packages and extensions; say how to fix problems")
    add_dsn_arguments(c)
