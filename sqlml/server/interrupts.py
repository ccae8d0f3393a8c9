"""The interrupt check of long Python work: between trials, chunks and boosting rounds.

It serves PostgreSQL's cancel and statement_timeout (``spi.check_interrupts``) and ``sqlml.cancel``,
which flags the current job in the job store without a signal (``governing.check_cancel``).
"""

from sqlml.server import governing
from sqlml.server.spi import spi


def check() -> None:
    spi.check_interrupts()
    governing.check_cancel()
