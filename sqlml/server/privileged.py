"""Run registry work with the extension owner's rights, reachable only from sqlml's own code.

Public sqlml functions run as the caller (SECURITY INVOKER), so that reading training data
obeys the caller's grants and row-level security. Registry tables, though, are writable only
by their owner. ``run(fn, *args)`` parks the closure in this backend's interpreter under a
random token and calls ``sqlml._privileged(token)``, a SECURITY DEFINER function that runs it.
A user can call ``sqlml._privileged`` too, but cannot put anything under a token: only Python
code in this process can, and untrusted users cannot run Python.
"""

from __future__ import annotations

import secrets

from sqlml.errors import INSUFFICIENT_PRIVILEGE, SqlmlError
from sqlml.server.spi import spi

_pending: dict = {}
_results: dict = {}


def run(fn, *args):
    """``fn(spi, *args)`` as the extension owner; returns its result, raises its error."""
    token = secrets.token_hex(16)
    _pending[token] = (fn, args)
    try:
        spi.execute("SELECT sqlml._privileged($1)", [token])
        return _results.pop(token, None)
    finally:
        _pending.pop(token, None)
        _results.pop(token, None)


def execute(token: str) -> None:
    """Body of ``sqlml._privileged``: run what ``run`` parked under ``token``."""
    job = _pending.pop(token, None)
    if job is None:
        raise SqlmlError("sqlml._privileged is internal to sqlml", sqlstate=INSUFFICIENT_PRIVILEGE,
                         hint="call sqlml's public functions instead")
    fn, args = job
    _results[token] = fn(spi, *args)
