"""``sqlml report PROJECT --out card.html``: the model card (see ``sqlml.monitor.card``)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlml.cli.conventions import EXIT_OK, CliError, add_command, add_dsn_arguments, connect


def cmd_report(args) -> int:
    try:
        import matplotlib  # noqa: F401 - the card's plots; an extra of the light client
    except ImportError:
        raise CliError("the model card needs matplotlib: pip install 'sqlml[report]'") from None
    from sqlml.executor import PsycopgExecutor
    from sqlml.monitor import card

    conn = connect(args)
    try:
        data = card.collect(PsycopgExecutor(conn), args.project, args.version)
    finally:
        conn.close()
    out = Path(args.out)
    out.write_text(card.render(data), encoding="utf-8")
    model = data["model"]
    summary = {"project": args.project, "version": model["version"], "out": str(out.resolve()),
               "bytes": out.stat().st_size}
    print(json.dumps(summary, indent=2) if args.json else
          f"model card of {args.project} version {model['version']} written to {out} ({summary['bytes']} bytes)")
    return EXIT_OK


def add_commands(subparsers) -> None:
    c = add_command(subparsers, "report", cmd_report, "write the model card of PROJECT as one self-contained HTML page")
    c.add_argument("project")
    c.add_argument("--version", type=int, help="default: the deployed version (else the latest)")
    c.add_argument("--out", default="card.html", help="output file (default card.html)")
    add_dsn_arguments(c)
