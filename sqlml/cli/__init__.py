"""The ``sqlml`` command (``python -m sqlml.cli`` runs it too).

One module per group of commands, all over :mod:`sqlml.cli.conventions` (``--dsn`` defaults,
``--json``, exit codes): ``dev`` (the dev cluster, the demo), ``admin`` (install, uninstall,
doctor), ``lifecycle`` (train, models, deploy, jobs, cancel, export; over :class:`sqlml.client.Client`),
``report`` (the model card). Heavy imports stay inside the commands: ``sqlml --help`` needs only
the standard library.
"""

from __future__ import annotations

import argparse
import sys

from sqlml import __version__
from sqlml.cli import admin, dev, lifecycle, report
from sqlml.cli.conventions import EXIT_FAILED, CliError
from sqlml.errors import SqlmlError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sqlml", description="AutoML inside PostgreSQL.")
    p.add_argument("--version", action="version", version=f"sqlml {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    dev.add_dev_command(sub)
    admin.add_commands(sub)  # install, uninstall, doctor
    dev.add_demo_command(sub)
    lifecycle.add_commands(sub)  # train, models, deploy, jobs, cancel, export
    report.add_commands(sub)  # report: the model card
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
