"""The Python client for notebooks and apps: ``sqlml.connect(dsn)`` -> :class:`Client`.

Thin by design: every method issues SQL over one psycopg2 connection (autocommit) and returns
plain Python values (dicts, lists, floats). Nothing is computed on the client except
:meth:`Client.export`, which writes a model that the registry verified to files. A failing call
raises :class:`ServerError`, which carries the SQLSTATE, the hint and the detail the server sent.

    import sqlml
    with sqlml.connect("postgresql://me@db/warehouse") as ml:
        ml.train("churn", "customers", "churned", time_budget="2 minutes")
        ml.predict("churn", {"tenure": 3, "plan": "basic"})          # one row -> one dict
        ml.predict("churn", "SELECT * FROM customers WHERE new")    # a relation -> rows
"""

from __future__ import annotations

import json
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sqlml.errors import SqlmlError
from sqlml.executor import PsycopgExecutor, to_json


class ServerError(SqlmlError):
    """An error the database reported: ``message`` without the ``sqlml:`` prefix, plus
    ``sqlstate`` (e.g. ``'42704'``), ``hint`` and ``detail`` as the server sent them."""

    @classmethod
    def from_psycopg(cls, e) -> ServerError:
        diag = getattr(e, "diag", None)
        message = (getattr(diag, "message_primary", None) or str(e)).strip()
        message = message[len("sqlml: "):] if message.startswith("sqlml: ") else message
        err = cls(message, hint=getattr(diag, "message_hint", None), detail=getattr(diag, "message_detail", None),
                  sqlstate=getattr(e, "pgcode", None) or "XX000")
        err.__cause__ = e
        return err

    def __str__(self) -> str:
        return self.message + (f" (hint: {self.hint})" if self.hint else "")


def _plain(value):
    """A DataFrame cell as a JSON-ready value: NaN/NaT/None -> None, timestamps -> ISO text."""
    try:
        import pandas as pd

        if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
            return None
    except (TypeError, ValueError):  # array-like cells (vectors) are not scalars: keep them
        pass
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _interval(time_budget) -> str:
    """A PostgreSQL interval from ``'90 seconds'``, ``'2 minutes'`` or a number of seconds."""
    if isinstance(time_budget, (int, float)) and not isinstance(time_budget, bool):
        return f"{float(time_budget)} seconds"
    return str(time_budget)


class _LiveNotices(list):
    """Stands in for ``connection.notices``: hands each NOTICE to ``callback`` as it arrives."""

    def __init__(self, callback):
        super().__init__()
        self.callback = callback

    def append(self, notice):
        text = notice.strip()
        for prefix in ("NOTICE:  ", "WARNING:  ", "INFO:  "):
            if text.startswith(prefix):
                text = text[len(prefix):]
        self.callback(text)


class _CtrlC:
    """While a statement runs with live notices, Ctrl-C (SIGINT) is counted in ``pending`` for the
    wait loop instead of raising KeyboardInterrupt: a signal that arrives while psycopg2 reads
    from the server raises at the next Python code, often ``_LiveNotices.append``, which psycopg2
    calls from C and whose exception it discards, so the cancel was lost and the training ran on.
    Signals reach the main thread only; elsewhere nothing changes."""

    pending = 0

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            _CtrlC.pending = 0
            self.previous = signal.signal(signal.SIGINT, self._count)
        return self

    @staticmethod
    def _count(signum, frame):
        _CtrlC.pending += 1

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _wait_interruptibly(conn):
    """psycopg2 wait callback: poll the socket so that NOTICEs arrive live and Ctrl-C cancels
    the statement on the server (the backend stops at its next interrupt check) instead of
    leaving it running."""
    import psycopg2.extensions as ext

    cancelled = False
    while True:
        try:
            state = conn.poll()
            if _CtrlC.pending:  # counted by _CtrlC while the statement runs
                _CtrlC.pending = 0
                raise KeyboardInterrupt
            if state == ext.POLL_OK:
                return
            if state == ext.POLL_READ:
                select.select([conn.fileno()], [], [], 1.0)
            elif state == ext.POLL_WRITE:
                select.select([], [conn.fileno()], [], 1.0)
        except KeyboardInterrupt:
            if cancelled:
                raise
            cancelled = True
            conn.cancel()  # the server answers with "canceling statement due to user request"


class _Executor(PsycopgExecutor):
    """The client's executor: database errors leave it as :class:`ServerError`."""

    def execute(self, sql, params=()):
        import psycopg2

        try:
            return super().execute(sql, params)
        except psycopg2.Error as e:
            raise ServerError.from_psycopg(e) from None


class Client:
    """A connection to a database where ``CREATE EXTENSION sqlml`` has run."""

    def __init__(self, conn):
        self.conn = conn
        self.conn.autocommit = True
        self.ex = _Executor(conn)

    @classmethod
    def connect(cls, dsn: str | None = None, **kwargs) -> Client:
        """Connect with a libpq DSN or URI; ``None`` or ``''`` reads PGHOST/PGDATABASE/... ."""
        import psycopg2

        try:
            return cls(psycopg2.connect(dsn or "", **kwargs))
        except psycopg2.Error as e:
            raise ServerError.from_psycopg(e) from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------------

    def sql(self, query: str, params: Iterable[Any] = (), on_notice: Callable[[str], None] | None = None) -> list[dict]:
        """Run ``query`` (``$1, $2 ...`` placeholders) and return its rows as dicts.

        With ``on_notice``, every NOTICE the server sends is passed to it as it arrives (the
        training progress lines) and Ctrl-C cancels the statement on the server.
        """
        import psycopg2.extensions as ext

        saved_notices, saved_wait = self.conn.notices, ext.get_wait_callback()
        if on_notice is not None:
            self.conn.notices = _LiveNotices(on_notice)
            ext.set_wait_callback(_wait_interruptibly)
        try:
            if on_notice is None:
                return self.ex.execute(query, list(params))
            with _CtrlC():
                return self.ex.execute(query, list(params))
        finally:
            if on_notice is not None:
                ext.set_wait_callback(saved_wait)
                self.conn.notices = saved_notices

    # --- training and deployment -----------------------------------------------------------------

    def train(self, project: str, relation: str, target: str, *, task: str | None = None,
              algorithms: list[str] | None = None, time_budget="60 seconds", metric: str | None = None,
              test_size: float = 0.2, exclude: list[str] | None = None, options: dict | None = None,
              on_progress: Callable[[str], None] | None = None) -> dict:
        """``sqlml.train``: AutoML on ``relation`` (table, view or one SELECT) to predict ``target``.

        ``time_budget`` is an interval text or a number of seconds. ``on_progress`` receives each
        progress line (trial n, algorithm, score, best so far, elapsed/budget) as it happens.
        Returns {project, version, algorithm, metric, score, deployed}.
        """
        rows = self.sql(
            "SELECT * FROM sqlml.train($1, $2, $3, task => $4, algorithms => $5::text[], time_budget => $6::interval, "
            "metric => $7, test_size => $8::float8, exclude => $9::text[], options => $10::jsonb)",
            [project, relation, target, task, algorithms, _interval(time_budget), metric, float(test_size),
             exclude, to_json(options or {})], on_notice=on_progress)
        return rows[0]

    def forecast(self, project: str, horizon: int | None = None, relation: str | None = None,
                 level: float = 0.9) -> list[dict]:
        """``sqlml.forecast``: one {series, ts, forecast, lower, upper} per series and step, for
        ``horizon`` steps (None: the trained horizon), the interval at ``level``; ``relation`` gives
        the regressors' future values."""
        return self.sql("SELECT * FROM sqlml.forecast($1, $2::int, $3, $4::float8)",
                        [project, horizon, relation, float(level)])

    def deploy(self, project: str, strategy: str = "best_score", version: int | None = None) -> dict:
        """``sqlml.deploy``: strategy best_score, most_recent or rollback, or an explicit version.
        Returns {project, version, algorithm, metric, score, strategy, deployed_at}."""
        return self.sql("SELECT * FROM sqlml.deploy($1, $2, $3::int)", [project, strategy, version])[0]

    # --- scoring ---------------------------------------------------------------------------------

    def predict(self, project: str, data, *, id_column: str = "id", id_type: str | None = None):
        """Score with the deployed model of ``project`` (or ``'project@N'`` for version N).

        ``data`` is one of:
          - a relation (table or view name, or one SELECT) -> a list of dicts
            {id, prediction, label, probabilities}, one per row, through ``sqlml.predict_batch``
            (``id`` is ``id_column`` as text, or in the SQL type ``id_type`` names: "int", "uuid"...);
          - a dict of feature values -> one dict {prediction, label, probabilities};
          - a list of such dicts, or a pandas DataFrame (one row each; NaN is NULL) -> a list of
            those dicts, in order.
        ``prediction`` is what ``sqlml.predict`` returns (the value, a numeric label, or the class
        index), ``label`` the predicted label as text, ``probabilities`` follow :meth:`classes`
        (None for regression).
        """
        if isinstance(data, str):
            if id_type is None:
                return self.sql("SELECT * FROM sqlml.predict_batch($1, $2, $3)", [project, data, id_column])
            # a type cannot be a parameter: the server names it (regtype output, quoted where needed)
            typ = self.sql("SELECT $1::regtype::text AS t", [id_type])[0]["t"]
            return self.sql(f"SELECT * FROM sqlml.predict_batch($1, $2, $3, NULL::{typ})", [project, data, id_column])
        if isinstance(data, dict):
            return self.predict(project, [data])[0]
        if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
            data = [{k: _plain(v) for k, v in row.items()} for row in data.to_dict("records")]
        rows = list(data)
        if not all(isinstance(r, dict) for r in rows):
            raise SqlmlError("predict takes a relation (text), a dict of features or a list of dicts",
                             hint="for a float8[] in training order use SQL: sqlml.predict(project, ARRAY[...])")
        if not rows:
            return []
        return self.sql(
            """SELECT sqlml.predict($1, r) AS prediction, sqlml.predict_label($1, r) AS label,
                      CASE WHEN p.task = 'regression' THEN NULL ELSE sqlml.predict_proba($1, r) END AS probabilities
               FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(r, o)
               LEFT JOIN sqlml.projects p ON p.name = split_part($1, '@', 1)
               ORDER BY o""", [project, to_json(rows)])

    def predict_proba(self, project: str, features: dict) -> list[float]:
        """Class probabilities of one row, in the order of :meth:`classes`."""
        return self.sql("SELECT sqlml.predict_proba($1, $2::jsonb) AS p", [project, to_json(features)])[0]["p"]

    def classes(self, project: str) -> list[str]:
        return self.sql("SELECT sqlml.classes($1) AS c", [project])[0]["c"]

    def score(self, project: str, relation: str, into_table: str, id_column: str = "id") -> int:
        """``sqlml.score``: score every row of ``relation`` into a new table; returns the row count."""
        return self.sql("SELECT sqlml.score($1, $2, $3, $4) AS n", [project, relation, into_table, id_column])[0]["n"]

    # --- registry --------------------------------------------------------------------------------

    def projects(self) -> list[dict]:
        """Every project with its task, target, owner and deployed version (None if none)."""
        return self.sql(
            """SELECT p.name AS project, p.task, p.target, p.owner, p.created_at, p.last_version,
                      d.version AS deployed_version
               FROM sqlml.projects p LEFT JOIN sqlml.deployed d ON d.project = p.name ORDER BY p.name""")

    def models(self, project: str | None = None) -> list[dict]:
        """Registered models (newest first), without their ONNX: version, algorithm, metric,
        score, rows, lineage, and whether each is the deployed one."""
        from sqlml.registry import store

        if project is not None:
            store.require_project(self.ex, project)
        return self.sql(
            """SELECT m.project, m.version, m.algorithm, m.task, m.metric, m.score, m.rows, m.relation,
                      m.sha256, m.opset, m.created_by, m.created_at, m.train_seconds,
                      (d.model_id IS NOT NULL) AS deployed
               FROM sqlml.models m LEFT JOIN sqlml.deployed d ON d.model_id = m.id
               WHERE $1::text IS NULL OR m.project = $1
               ORDER BY m.project, m.version DESC""", [project])

    def model(self, project: str, version: int | None = None) -> dict:
        """One model's full registry row without the ONNX blob (the deployed one by default)."""
        from sqlml.registry import store

        store.require_project(self.ex, project)
        ref = store.deployed(self.ex, project) if version is None else store.model_row(self.ex, project, version)
        if ref is None:
            raise SqlmlError(f'project "{project}" has no deployed model', sqlstate="42704",
                             hint="pass a version, or deploy one: sqlml deploy PROJECT")
        rows = self.sql("SELECT id, project, version, algorithm, task, metric, score, metrics, hyperparameters, "
                        "feature_schema, classes, sha256, opset, parity, relation, rows, data_fingerprint, "
                        "library_versions, created_by, created_at, train_seconds, job_id, origin "
                        "FROM sqlml.models WHERE id = $1", [ref["id"]])
        return rows[0]

    def leaderboard(self, project: str, version: int | None = None) -> list[dict]:
        """Every candidate a training tried (the latest training by default), best first."""
        return self.sql(
            """SELECT version, n, algorithm, status, metric, score, fit_seconds, params FROM sqlml.leaderboard
               WHERE project = $1 AND version = coalesce($2::int,
                     (SELECT max(model_version) FROM sqlml.trials WHERE project = $1))
               ORDER BY score DESC NULLS LAST, n""", [project, version])

    def onnx(self, project: str, version: int | None = None) -> tuple[bytes, dict]:
        """(ONNX bytes, registry row) of a model, verified against its stored sha256."""
        from sqlml.registry import store

        row = self.model(project, version)
        try:
            blob, _, _ = store.onnx_blob(self.ex, row["id"])
        except ServerError as e:
            if e.sqlstate != "42501":
                raise
            raise ServerError("reading a model's ONNX needs SELECT on column onnx of sqlml.models",
                              hint="ask an admin: GRANT SELECT (onnx) ON sqlml.models TO <your role>",
                              sqlstate="42501") from None
        return blob, row

    def export(self, project: str, out, version: int | None = None, format: str = "onnx") -> dict:
        """Write the model as ``model.onnx`` + ``sqlml.json`` (format 'onnx') or as a Triton model
        repository (format 'triton') under directory ``out``; returns {files, ...} (see sqlml.export)."""
        from sqlml import export

        blob, row = self.onnx(project, version)
        return export.write(blob, row, out, format)

    # --- jobs ------------------------------------------------------------------------------------

    def jobs(self, include_finished: bool = False) -> list[dict]:
        """Training and scoring jobs, running ones first (see :func:`sqlml.jobs.fetch`)."""
        from sqlml import jobs

        return jobs.fetch(self.ex, include_finished)

    def cancel(self, job_id: int) -> bool:
        """``sqlml.cancel``: request the cancel of a queued or running job (your role's; any, for a
        superuser). True when the cancel was requested (the job may still be stopping: ``jobs()``
        tells), False if it had already ended."""
        return self.sql("SELECT sqlml.cancel($1::int8) AS stopped", [job_id])[0]["stopped"]

    def doctor(self) -> dict:
        """The server's Python and packages (``sqlml.doctor()``)."""
        value = self.sql("SELECT sqlml.doctor() AS d")[0]["d"]
        return json.loads(value) if isinstance(value, str) else value

    def version(self) -> str:
        return self.sql("SELECT sqlml.version() AS v")[0]["v"]


def print_progress(line: str) -> None:
    """An ``on_progress`` that writes each line to stderr."""
    print(line, file=sys.stderr, flush=True)
