"""The ``sqlml`` command.

Conventions of well-known database CLIs: ``--help`` on every command, ``--dsn`` with the
environment as default (``SQLML_DSN``, then libpq's ``PGHOST``/``PGDATABASE``/... variables, then
the embedded dev cluster when it runs), ``--json`` for machine-readable output, and exit codes
0 (ok), 1 (the operation failed), 2 (bad usage).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlml import __version__
from sqlml.errors import SqlmlError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure to report in one line (exit code 1)."""


# --- connection -------------------------------------------------------------------------------

def dev_cluster():
    from sqlml.devcluster import DEFAULT_PORT, Cluster, project_state_dir
    from sqlml.install import CHECKOUT

    home = Path(os.environ.get("SQLML_HOME", CHECKOUT))
    return Cluster(project_state_dir(home), port=int(os.environ.get("SQLML_DEV_PORT", DEFAULT_PORT)))


def resolve_dsn(dsn: str | None) -> str:
    if dsn:
        return dsn
    if os.environ.get("SQLML_DSN"):
        return os.environ["SQLML_DSN"]
    if any(os.environ.get(v) for v in ("PGHOST", "PGDATABASE", "PGSERVICE", "PGPORT")):
        return ""  # libpq reads the environment
    try:
        cluster = dev_cluster()
        if cluster.running():
            return cluster.dsn()
    except Exception:  # noqa: BLE001 - no dev cluster is fine; say what to do below
        pass
    raise CliError("no database given: pass --dsn, set SQLML_DSN or PGHOST/PGDATABASE, or run `sqlml dev up`")


def connect(args):
    import psycopg2

    try:
        conn = psycopg2.connect(resolve_dsn(args.dsn))
    except psycopg2.OperationalError as e:
        raise CliError(f"cannot connect: {str(e).strip()}") from e
    conn.autocommit = True
    return conn


def emit(args, data, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else text)


# --- dev cluster ------------------------------------------------------------------------------

def cmd_dev(args) -> int:
    cluster = dev_cluster()
    if args.action == "up":
        cluster.start()
        cluster.create_database("sqlml")
        print(f"sqlml dev cluster is up ({cluster.data})\n"
              f"  connect: psql '{cluster.dsn()}'   (or: sqlml dev psql)\n"
              f"  dsn:     {cluster.dsn()}           (or: export SQLML_DSN=$(sqlml dev dsn))")
    elif args.action == "down":
        cluster.stop()
        print("sqlml dev cluster stopped")
    elif args.action == "status":
        running = cluster.running()
        emit(args, {"running": running, "data": str(cluster.data), "dsn": cluster.dsn(), "log": str(cluster.log)},
             f"{'running' if running else 'stopped'}: {cluster.data}"
             + (f"\n  dsn: {cluster.dsn()}" if running else ""))
        return EXIT_OK if running else EXIT_FAILED
    elif args.action == "dsn":
        if not cluster.running():
            raise CliError("the dev cluster is not running: `sqlml dev up`")
        print(cluster.dsn())
    elif args.action == "psql":
        if not cluster.running():
            raise CliError("the dev cluster is not running: `sqlml dev up`")
        from sqlml.install import pg_bindir

        return subprocess.call([os.path.join(pg_bindir(), "psql"), cluster.dsn(), *args.psql_args])
    return EXIT_OK


# --- install / doctor -------------------------------------------------------------------------

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


# --- demo ---------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from sqlml import samples
    from sqlml.install import CHECKOUT, pg_bindir

    dsn = resolve_dsn(args.dsn)
    conn = connect(args)
    for name in samples.load_all(conn):
        print(f"loaded sample table {name}")
    script = CHECKOUT / "examples" / "demo.sql"
    return subprocess.call([os.path.join(pg_bindir(), "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-e", dsn, "-f",
                            str(script)])


# --- parser -------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sqlml", description="AutoML inside PostgreSQL.")
    p.add_argument("--version", action="version", version=f"sqlml {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, func, help_):
        c = sub.add_parser(name, help=help_, description=help_)
        c.set_defaults(func=func)
        return c

    def dsn_arg(c):
        c.add_argument("--dsn", help="connection string (default: $SQLML_DSN, libpq PG* variables, or the dev cluster)")
        c.add_argument("--json", action="store_true", help="machine-readable output")

    c = command("dev", cmd_dev, "the embedded dev cluster under ./.sqlml/")
    c.add_argument("action", choices=["up", "down", "status", "psql", "dsn"])
    c.add_argument("psql_args", nargs=argparse.REMAINDER, help="extra psql arguments (with `psql`)")
    c.add_argument("--json", action="store_true")

    c = command("install", cmd_install, "install sqlml into a PostgreSQL server on this machine")
    c.add_argument("--dsn", help="database to CREATE EXTENSION sqlml in")
    c.add_argument("--venv", default="/opt/sqlml/venv", help="server-side venv (default /opt/sqlml/venv)")
    c.add_argument("--files-only", action="store_true", help="only the venv and extension files, no database")
    c.add_argument("--no-files", action="store_true", help="only CREATE EXTENSION in --dsn")

    c = command("uninstall", cmd_uninstall, "DROP EXTENSION sqlml CASCADE (and optionally remove its files)")
    c.add_argument("--dsn")
    c.add_argument("--files", action="store_true", help="also remove the extension files from the server")

    c = command("doctor", cmd_doctor, "check the server's Python, packages and extensions; say how to fix problems")
    dsn_arg(c)

    c = command("demo", cmd_demo, "load sample tables and run the SQL tour (examples/demo.sql)")
    dsn_arg(c)

    from sqlml.cli_lifecycle import add_commands

    add_commands(command, dsn_arg)  # train, models, deploy, jobs, cancel, export
    from sqlml.cli_report import add_command as add_report

    add_report(command, dsn_arg)  # report: the model card
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"sqlml: {e}", file=sys.stderr)
        return EXIT_FAILED
    except SqlmlError as e:  # the server's (or the client's) message, with its hint and SQLSTATE
        print(f"sqlml: {e.message}" + (f"\n  hint: {e.hint}" if e.hint else "")
              + (f"\n  (SQLSTATE {e.sqlstate})" if e.sqlstate else ""), file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - one line, not a traceback, for expected failures
        from sqlml.install import InstallError

        try:
            import psycopg2
            expected = (InstallError, psycopg2.Error)
        except ImportError:
            expected = (InstallError,)
        if isinstance(e, expected):
            print(f"sqlml: {str(e).strip()}", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    # `python -m sqlml.cli`: run the imported module's main, so that the exception classes that
    # other modules raise (sqlml.cli.CliError) are the ones main catches
    from sqlml.cli import main as package_main

    sys.exit(package_main())
