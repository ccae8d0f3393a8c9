"""The Executor over plpy (SPI): prepared plans cached per backend, notices as NOTICE lines."""

from __future__ import annotations

import plpy

from sqlml.executor import adapt, pg_type

_plans: dict = {}
_ping = None


class SpiExecutor:
    def execute(self, sql, params=()):
        types = [pg_type(v) for v in params]
        key = (sql, tuple(types))
        plan = _plans.get(key)
        if plan is None:
            plan = _plans[key] = plpy.prepare(sql, types)
        return list(plan.execute([adapt(v) for v in params]))

    def notice(self, message):
        plpy.notice(f"sqlml: {message}")

    def check_interrupts(self) -> None:
        """Raise QueryCanceled if the backend has a cancel or a statement_timeout pending.

        ``pg_cancel_backend`` and ``statement_timeout`` set a flag that only PostgreSQL's own code
        checks; pure Python never sees it (measured: an 8 s loop cancelled after 1.5 s ran all 8 s).
        A trivial SPI call checks it."""
        global _ping
        if _ping is None:
            _ping = plpy.prepare("SELECT 1")
        plpy.execute(_ping)


spi = SpiExecutor()
