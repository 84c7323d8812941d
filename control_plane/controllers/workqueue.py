"""A work queue of object keys, as client-go's: a key queued twice before a worker
takes it is handled once; a key being handled is not handed to a second worker, and a
re-add while it is handled runs it again afterwards; failed keys come back after a
per-key exponential backoff."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class WorkQueue:
    def __init__(self, base_delay: float = 0.05, max_delay: float = 30.0):
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.base_delay = base_delay
        self.max_delay = max_delay

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: str) -> float:
        """Requeue after the key's next backoff delay; returns the delay."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = min(self.base_delay * 2**n, self.max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    async def get(self) -> str:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


async def run_worker(queue: WorkQueue, sync: Callable[[str], Awaitable[None]], name: str,
                     log: Callable[..., None]) -> None:
    """The endless loop, alone: take a key, sync it, retry it with backoff on failure."""
    while True:
        key = await queue.get()
        try:
            await sync(key)
            queue.forget(key)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of one key must not stop the others
            delay = queue.retry(key)
            log("%s: syncing %s failed: %s; retrying in %.2fs", name, key, e, delay)
        finally:
            queue.done(key)
