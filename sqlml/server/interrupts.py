"""Interrupt checks for long Python work.

``pg_cancel_backend`` and ``statement_timeout`` set a flag that only PostgreSQL's own code
checks; pure Python never sees it (measured: an 8 s loop cancelled after 1.5 s ran all 8 s). A
trivial SPI call checks it, and raises QueryCanceled into Python, which we let propagate.
"""

import plpy

from sqlml.server import governor

_plan = None


def check() -> None:
    global _plan
    if _plan is None:
        _plan = plpy.prepare("SELECT 1")
    plpy.execute(_plan)
    governor.check_cancel()  # sqlml.cancel() flags the job without a signal
