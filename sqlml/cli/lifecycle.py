"""``sqlml train | models | deploy | jobs | cancel | export``: the model lifecycle from a shell.

Each command is a few lines over :class:`sqlml.client.Client`, so it only issues SQL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime

from sqlml.cli.conventions import EXIT_OK, add_command, add_dsn_arguments, client, emit, table


def _list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _option(text: str) -> tuple[str, object]:
    """``key=value`` with a JSON value where it parses (``seed=7`` -> 7), else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


# --- train ----------------------------------------------------------------------------------------

def cmd_train(args) -> int:
    from sqlml.client import print_progress

    options = dict(args.option or [])
    if args.no_deploy:
        options["deploy"] = "never"
    ml = client(args)
    result = ml.train(args.project, args.relation, args.target, task=args.task, algorithms=_list(args.algorithms),
                      time_budget=args.budget, metric=args.metric, test_size=args.test_size,
                      exclude=_list(args.exclude), options=options,
                      on_progress=None if args.quiet else print_progress)
    emit(args, result, f"{result['project']} version {result['version']}: {result['algorithm']} "
                       f"{result['metric']}={result['score']:.4f}, "
                       f"{'deployed' if result['deployed'] else 'not deployed'}")
    return EXIT_OK


# --- models ---------------------------------------------------------------------------------------

def cmd_models(args) -> int:
    ml = client(args)
    if args.project is None:
        rows = ml.projects()
        emit(args, rows, table(rows, ["project", "task", "target", "owner", "last_version", "deployed_version"])
             if rows else "no projects yet: sqlml train PROJECT RELATION TARGET")
        return EXIT_OK
    if args.version is not None:
        row = ml.model(args.project, args.version)
        emit(args, row, json.dumps(row, indent=2, default=str))
        return EXIT_OK
    rows = ml.models(args.project)
    emit(args, rows, table(rows, ["version", "algorithm", "metric", "score", "rows", "relation", "created_by",
                                  "created_at", "deployed"]) if rows else f"project {args.project} has no models")
    return EXIT_OK


# --- deploy ---------------------------------------------------------------------------------------

def cmd_deploy(args) -> int:
    ml = client(args)
    row = ml.deploy(args.project, args.strategy, args.version)
    emit(args, row, f"{row['project']}: version {row['version']} ({row['algorithm']}, {row['metric']}="
                    f"{row['score']:.4f}) deployed by {row['strategy']}")
    return EXIT_OK


# --- jobs -----------------------------------------------------------------------------------------

def _bar(fraction: float, width: int = 20) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = int(round(fraction * width))
    return "[" + "#" * full + "." * (width - full) + "]"


def render_jobs(jobs: list[dict]) -> str:
    """The jobs view: one line per job, with trials, best score and elapsed/budget as a bar."""
    if not jobs:
        return "no running jobs"
    lines = []
    for j in jobs:
        elapsed, budget = j.get("elapsed_seconds"), j.get("budget_seconds")
        clock = f"{elapsed or 0:6.1f}s" + (f" of {budget:.0f}s {_bar((elapsed or 0) / budget)}" if budget else "")
        trials = "-" if j.get("trials") is None else str(j["trials"])
        best = "-" if j.get("best_score") is None else f"{j['best_score']:.4f}"
        if j.get("best_algorithm"):
            best += f" ({j['best_algorithm']})"
        ident = f"job {j['job_id']}" if j.get("job_id") is not None else f"pid {j.get('pid')}"
        where = f"{j.get('role') or '?'}@{j.get('database') or '?'}"
        queue = f" #{j['queue_position']} in queue" if j.get("queue_position") else ""
        waiting = f"  waiting: {j['wait_reason']}" if j.get("wait_reason") else ""
        lines.append(f"{ident:<10} {j.get('kind') or '':<13} {j.get('project') or '?':<20} {j.get('state') or '':<9}"
                     f"{queue} trials {trials:>3}  best {best:<22} {clock}  {where}{waiting}")
    return "\n".join(lines)


def cmd_jobs(args) -> int:
    ml = client(args)
    if not args.watch:
        rows = ml.jobs(include_finished=args.all)
        emit(args, rows, render_jobs(rows))
        return EXIT_OK
    redraw = sys.stdout.isatty() and not args.json
    n = 0
    try:
        while args.count is None or n < args.count:
            rows = ml.jobs(include_finished=args.all)
            if args.json:
                print(json.dumps({"at": datetime.now().isoformat(timespec="seconds"), "jobs": rows}, default=str),
                      flush=True)
            else:
                screen = f"sqlml jobs  {datetime.now():%H:%M:%S}  (every {args.interval:g}s, Ctrl-C to stop)\n" \
                         + render_jobs(rows)
                print(("\x1b[H\x1b[2J" if redraw else "") + screen + ("" if redraw else "\n"), flush=True)
            n += 1
            if args.count is None or n < args.count:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def cmd_cancel(args) -> int:
    stopped = client(args).cancel(args.job_id)
    emit(args, {"job_id": args.job_id, "stopped": stopped},
         f"job {args.job_id} {'cancel requested' if stopped else 'had already ended'}")
    return EXIT_OK


# --- export ---------------------------------------------------------------------------------------

def cmd_export(args) -> int:
    ml = client(args)
    result = ml.export(args.project, args.out, version=args.version, format=args.format)
    emit(args, result, f"exported {result['project']} version {result['version']} (sha256 {result['sha256'][:12]}…, "
                       f"verified) as {result['format']}:\n  " + "\n  ".join(result["files"]))
    return EXIT_OK


# --- parser ---------------------------------------------------------------------------------------

def add_commands(subparsers) -> None:
    c = add_command(subparsers, "train", cmd_train,
                    "AutoML: train a model for PROJECT on RELATION to predict TARGET (sqlml.train)")
    c.add_argument("project", help="project name (created on first training)")
    c.add_argument("relation", help="table or view name, or one SELECT query")
    c.add_argument("target", help="the column to predict")
    c.add_argument("--task", choices=["binary", "multiclass", "regression"], help="default: inferred from the target")
    c.add_argument("--algorithms", metavar="A,B", help="comma-separated (default: the AutoML portfolio)")
    c.add_argument("--budget", default="60 seconds",
                   help="wall-clock budget, an interval or seconds (default: 60 seconds)")
    c.add_argument("--metric", help="metric to optimise (default: by task)")
    c.add_argument("--test-size", type=float, default=0.2, help="holdout share (default 0.2)")
    c.add_argument("--exclude", metavar="COL,COL", help="columns not to use as features")
    c.add_argument("--option", action="append", type=_option, metavar="KEY=VALUE",
                   help="training option (repeatable), e.g. seed=7")
    c.add_argument("--no-deploy", action="store_true", help="register only; never deploy (options.deploy = never)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    add_dsn_arguments(c)

    c = add_command(subparsers, "models", cmd_models,
                    "list projects, or the models of PROJECT (newest first), or one model in full")
    c.add_argument("project", nargs="?", help="a project (default: list all projects)")
    c.add_argument("--version", type=int, help="show this version's full registry row")
    add_dsn_arguments(c)

    c = add_command(subparsers, "deploy", cmd_deploy,
                    "deploy a model of PROJECT by strategy or version (sqlml.deploy)")
    c.add_argument("project")
    c.add_argument("--strategy", default="best_score", choices=["best_score", "most_recent", "rollback"],
                   help="default best_score")
    c.add_argument("--version", type=int, help="deploy this version")
    add_dsn_arguments(c)

    c = add_command(subparsers, "jobs", cmd_jobs,
                    "training and scoring jobs: trials, best score, elapsed/budget")
    c.add_argument("-w", "--watch", action="store_true", help="refresh until Ctrl-C (a live progress view)")
    c.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    c.add_argument("--count", type=int, help="with --watch: stop after this many refreshes")
    c.add_argument("--all", action="store_true", help="include the newest finished jobs")
    add_dsn_arguments(c)

    c = add_command(subparsers, "cancel", cmd_cancel,
                    "cancel a queued or running job (sqlml.cancel): see `sqlml jobs` for ids")
    c.add_argument("job_id", type=int)
    add_dsn_arguments(c)

    c = add_command(subparsers, "export", cmd_export,
                    "write a model as ONNX + metadata, or as a Triton model repository")
    c.add_argument("project")
    c.add_argument("--version", type=int, help="default: the deployed version")
    c.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    c.add_argument("--format", default="onnx", choices=["onnx", "triton"], help="default onnx")
    add_dsn_arguments(c)
