"""``sqlml dev | demo``: the embedded dev cluster of a checkout, and the SQL tour on it."""

from __future__ import annotations

import argparse
import os
import subprocess

from sqlml.cli.conventions import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    add_command,
    add_dsn_arguments,
    connect,
    dev_cluster,
    emit,
    resolve_dsn,
)


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

def add_dev_command(subparsers) -> None:
    c = add_command(subparsers, "dev", cmd_dev, "the embedded dev cluster under ./.sqlml/")
    c.add_argument("action", choices=["up", "down", "status", "psql", "dsn"])
    c.add_argument("psql_args", nargs=argparse.REMAINDER, help="extra psql arguments (with `psql`)")
    c.add_argument("--json", action="store_true")


def add_demo_command(subparsers) -> None:
    c = add_command(subparsers, "demo", cmd_demo, "load sample tables and run the SQL tour (examples/demo.sql)")
    add_dsn_arguments(c)
