"""Bounded exponential backoff, shared by request retries and informer re-watches.

Delays are deterministic (no jitter) so tests can assert the exact schedule; the sleep
function is injected wherever a backoff is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

default_sleep: Sleep = asyncio.sleep


@dataclass(frozen=True)
class Backoff:
    initial: float = 0.2
    factor: float = 2.0
    maximum: float = 5.0

    def delay(self, failures: int) -> float:
        """Delay after the ``failures``-th consecutive failure (1-based)."""
        if failures < 1:
            return 0.0
        return round(min(self.maximum, self.initial * self.factor ** (failures - 1)), 3)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a request is tried in total, and how long to wait in between."""

    attempts: int = 5
    backoff: Backoff = Backoff()

    @classmethod
    def never(cls) -> RetryPolicy:
        return cls(attempts=1)
