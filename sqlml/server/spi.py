"""The Executor over plpy (SPI): prepared plans cached per backend, notices as NOTICE lines."""

from __future__ import annotations

import plpy

from sqlml.executor import adapt, pg_type

_plans: dict = {}


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


spi = SpiExecutor()
