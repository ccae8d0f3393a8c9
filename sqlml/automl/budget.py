"""A wall-clock budget passed down the call, never a global clock.

``Budget(seconds)`` starts counting when created. ``checkpoint()`` is called between folds,
trials and boosting rounds: it runs the caller's interrupt check (the server makes it reach SPI,
so that a cancel or statement_timeout stops the job within moments).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Budget:
    seconds: float
    interrupt: Callable[[], None] = lambda: None
    started: float = field(default_factory=time.monotonic)
    min_interval: float = 0.05  # seconds between interrupt checks
    _last_check: float = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._last_check >= self.min_interval:
            self._last_check = now
            self.interrupt()

    def child(self, seconds: float) -> Budget:
        """A budget of ``min(seconds, remaining)`` sharing this one's interrupt check."""
        return Budget(max(min(seconds, self.remaining()), 0.0), self.interrupt, min_interval=self.min_interval)
