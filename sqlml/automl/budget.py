"""A wall-clock budget passed down the call, never a global clock.

``Budget(seconds)`` counts from ``started`` (by default, when created), on ``clock``
(``time.monotonic`` unless a test injects another). The server starts it at the SQL entry of
``sqlml.train``, before the ML libraries are imported, so that ``time_budget`` is the wall clock
of the whole call and the search plans with what is left. ``checkpoint()`` is called between
folds, trials and boosting rounds: it runs the caller's interrupt check (the server makes it
reach SPI, so that a cancel or statement_timeout stops the job within moments).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Budget:
    seconds: float
    interrupt: Callable[[], None] = lambda: None
    started: float | None = None  # on ``clock``; None: now
    min_interval: float = 0.05  # seconds between interrupt checks
    clock: Callable[[], float] = time.monotonic
    _last_check: float = float("-inf")

    def __post_init__(self):
        if self.started is None:
            self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def checkpoint(self) -> None:
        now = self.clock()
        if now - self._last_check >= self.min_interval:
            self._last_check = now
            self.interrupt()

    def child(self, seconds: float) -> Budget:
        """A budget of ``min(seconds, remaining)`` sharing this one's interrupt check and clock."""
        return Budget(max(min(seconds, self.remaining()), 0.0), self.interrupt, min_interval=self.min_interval,
                      clock=self.clock)
