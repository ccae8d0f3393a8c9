"""Audit rows for work that has no registry write of its own (batch scoring)."""

from __future__ import annotations

from sqlml.registry import audit
from sqlml.server import privileged
from sqlml.server.spi import spi


def record(action: str, project: str, version: int | None, detail: dict) -> None:
    """One ``sqlml.audit_log`` row for the caller, in the caller's transaction."""
    caller = spi.execute("SELECT current_user AS u")[0]["u"]
    privileged.run(lambda ex: audit.record(ex, caller, action, project, version, detail))
