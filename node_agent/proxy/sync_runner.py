"""`SyncRunner`: kube-proxy's BoundedFrequencyRunner for one asyncio coroutine.

Contract of `run` (the only endless loop, kept thin; `run_once` is one turn):
  * `request()` asks for a sync; requests made while one is waiting or running coalesce
    into one more sync;
  * two syncs start at least ``min_interval`` apart (bursts of events become one sync);
  * without requests, a sync runs every ``max_interval`` anyway (the periodic check);
  * a sync that raises is logged and retried after a delay doubling from
    ``min_interval`` up to ``max_interval``; `CancelledError` always propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("skiff.proxy")

Clock = Callable[[], float]


class SyncRunner:
    def __init__(self, sync: Callable[[], Awaitable[None]], min_interval: float, max_interval: float,
                 clock: Clock = time.monotonic, name: str = "sync",
                 expected_errors: tuple[type[Exception], ...] = ()) -> None:
        self.sync = sync
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.name = name
        self.expected_errors = expected_errors  # logged without a traceback
        self._clock = clock
        self._wanted = asyncio.Event()
        self._last_start = float("-inf")
        self._next_due = clock() + max_interval
        self.failures = 0
        self.runs = 0

    def request(self) -> None:
        self._wanted.set()

    async def run(self) -> None:
        while True:
            await self.run_once()

    async def run_once(self) -> None:
        """Wait for a request or the due time, respect the minimum interval, then sync once."""
        timeout = max(0.0, self._next_due - self._clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wanted.wait(), timeout)
        hold = self._last_start + self.min_interval - self._clock()
        if hold > 0:
            await asyncio.sleep(hold)
        self._wanted.clear()
        self._last_start = self._clock()
        self.runs += 1
        try:
            await self.sync()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            delay = min(self.max_interval, (self.min_interval or 0.1) * 2 ** (self.failures - 1))
            log.error("%s attempt %d failed: %s; retrying in %gs", self.name, self.failures, exc, round(delay, 3),
                      exc_info=not isinstance(exc, self.expected_errors))
            self._next_due = self._clock() + delay
            return
        self.failures = 0
        self._next_due = self._clock() + self.max_interval
