"""What every ``sqlml`` command shares: where the database is, how results are printed, exit codes.

Conventions of well-known database CLIs: ``--dsn`` with the environment as default (``SQLML_DSN``,
then libpq's ``PGHOST``/``PGDATABASE``/... variables, then the embedded dev cluster when it runs),
``--json`` for machine-readable output, and exit codes 0 (ok), 1 (the operation failed), 2 (bad
usage, from argparse).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

EXIT_OK, EXIT_FAILED = 0, 1


class CliError(Exception):
    """A failure to report in one line (exit code 1)."""


def dev_cluster():
    """The embedded dev cluster of this checkout (``sqlml dev up``), running or not."""
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


def client(args):
    """A :class:`sqlml.client.Client` on the command's database."""
    from sqlml.client import Client

    return Client(connect(args))


def emit(args, data, text: str) -> None:
    """``data`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else text)


def table(rows: list[dict], columns: list[str]) -> str:
    """Rows as an aligned text table with a header (psql-like, without borders)."""
    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, datetime):
            return v.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(v, bool):
            return "yes" if v else ""
        return str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def add_dsn_arguments(command) -> None:
    """``--dsn`` and ``--json``, as every command that talks to a database takes them."""
    command.add_argument("--dsn",
                         help="connection string (default: $SQLML_DSN, libpq PG* variables, or the dev cluster)")
    command.add_argument("--json", action="store_true", help="machine-readable output")


def add_command(subparsers, name: str, func, help_: str):
    """A subcommand ``name`` that runs ``func(args)``, its help also its description."""
    command = subparsers.add_parser(name, help=help_, description=help_)
    command.set_defaults(func=func)
    return command
