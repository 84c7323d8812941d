"""One serial worker per pod uid (kopf's queueing): a pod's syncs never overlap, pods run in parallel.

`enqueue(uid)` marks a pod dirty (wakes its worker now) and `enqueue(uid, delay)` asks for
a sync no later than ``delay`` seconds from now. Triggers that arrive during a sync
collapse into one more sync after it. The sync function returns how soon it wants to
run again, None for "only when triggered", or `DONE` when the pod is gone for good (the
worker exits unless it was triggered meanwhile). A failing sync is retried with a
backoff (1 s doubling to 30 s); `CancelledError` always propagates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from node_agent.runtime.docker_adapter import DockerError
from skiff.client import ApiClientError

log = logging.getLogger("skiff.agent.workers")


class _Done:
    def __repr__(self) -> str:
        return "DONE"


DONE: Final = _Done()
SyncResult = float | None | _Done
SyncFn = Callable[[str], Awaitable[SyncResult]]
ERROR_BACKOFF = (1.0, 30.0)


class _Worker:
    def __init__(self, uid: str, clock: Callable[[], float]) -> None:
        self.uid = uid
        self.dirty = True
        self.due: float | None = None
        self.failures = 0
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._clock = clock

    def schedule(self, delay: float) -> None:
        at = self._clock() + max(0.0, delay)
        if self.due is None or at < self.due:
            self.due = at
            self.changed.set()

    async def wait_turn(self) -> None:
        while not self.dirty:
            timeout = None if self.due is None else self.due - self._clock()
            if timeout is not None and timeout <= 0:
                return
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except TimeoutError:
                return


class PodWorkers:
    def __init__(self, sync: SyncFn, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._sync = sync
        self._clock = clock
        self._workers: dict[str, _Worker] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._workers)

    def uids(self) -> set[str]:
        return set(self._workers)

    def enqueue(self, uid: str, delay: float = 0.0) -> None:
        if self._closed or not uid:
            return
        worker = self._workers.get(uid)
        if worker is None:
            worker = self._workers[uid] = _Worker(uid, self._clock)
            worker.dirty = delay <= 0
            if delay > 0:
                worker.schedule(delay)
            worker.task = asyncio.create_task(self._run(worker), name=f"pod-worker-{uid}")
            return
        if delay <= 0:
            worker.dirty = True
            worker.changed.set()
        else:
            worker.schedule(delay)

    async def _run(self, worker: _Worker) -> None:
        try:
            while True:
                await worker.wait_turn()
                worker.dirty, worker.due = False, None
                result = await self._sync_once(worker)
                if result is DONE:
                    if worker.dirty:
                        continue
                    return
                if isinstance(result, float | int):
                    worker.schedule(float(result))
        finally:
            if self._workers.get(worker.uid) is worker:
                del self._workers[worker.uid]

    async def _sync_once(self, worker: _Worker) -> SyncResult:
        try:
            result = await self._sync(worker.uid)
            worker.failures = 0
            return result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            worker.failures += 1
            delay = min(ERROR_BACKOFF[1], ERROR_BACKOFF[0] * 2 ** (worker.failures - 1))
            log.warning("sync of pod %s failed (attempt %d): %s; retrying in %.0fs", worker.uid, worker.failures,
                        exc, delay, exc_info=not _expected(exc))
            return delay

    async def stop(self) -> None:
        """Cancel every worker and wait for them (in-flight syncs are interrupted)."""
        self._closed = True
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()

    async def wait_idle(self, timeout: float) -> None:
        """Tests: wait until no worker is dirty or running a sync right now."""
        deadline = self._clock() + timeout
        while any(w.dirty for w in self._workers.values()) and self._clock() < deadline:
            await asyncio.sleep(0.01)


def _expected(exc: Exception) -> bool:
    """Errors whose message says it all (Docker or the API unreachable): no traceback."""
    return isinstance(exc, DockerError | ApiClientError)
