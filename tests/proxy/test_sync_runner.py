"""`SyncRunner`: bursts coalesce, syncs keep their minimum distance, a quiet proxy still syncs
periodically, and a failing sync is retried with a growing delay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from node_agent.proxy.sync_runner import SyncRunner


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


class Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.starts: list[float] = []
        self.fail = fail

    async def __call__(self) -> None:
        self.starts.append(time.monotonic())
        if self.fail:
            self.fail -= 1
            raise RuntimeError("iptables-restore exited 1")


@pytest.fixture
async def running() -> AsyncIterator[Callable[[SyncRunner], None]]:
    tasks: list[asyncio.Task[None]] = []

    def start(runner: SyncRunner) -> None:
        tasks.append(asyncio.create_task(runner.run()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_burst_of_requests_is_one_sync_then_one_more(running: Callable[[SyncRunner], None]) -> None:
    sync = Recorder()
    runner = SyncRunner(sync, min_interval=0.3, max_interval=60)
    running(runner)
    runner.request()
    await until(lambda: len(sync.starts) == 1)
    for _ in range(50):  # while the minimum interval holds the next sync back
        runner.request()
    await until(lambda: len(sync.starts) == 2)
    assert sync.starts[1] - sync.starts[0] >= 0.3 - 0.01
    await asyncio.sleep(0)  # no third sync is pending: the burst became one
    assert not runner._wanted.is_set()


async def test_a_quiet_proxy_still_syncs_every_max_interval(running: Callable[[SyncRunner], None]) -> None:
    sync = Recorder()
    runner = SyncRunner(sync, min_interval=0.0, max_interval=0.2)
    running(runner)
    await until(lambda: len(sync.starts) >= 3)
    gaps = [b - a for a, b in zip(sync.starts, sync.starts[1:], strict=False)]
    assert all(gap >= 0.2 - 0.01 for gap in gaps), gaps


async def test_a_failing_sync_is_retried_with_a_growing_delay(running: Callable[[SyncRunner], None],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    sync = Recorder(fail=3)
    runner = SyncRunner(sync, min_interval=0.05, max_interval=60, name="proxy sync")
    running(runner)
    runner.request()
    await until(lambda: len(sync.starts) == 4)
    gaps = [b - a for a, b in zip(sync.starts, sync.starts[1:], strict=False)]
    assert gaps[0] >= 0.05 - 0.01 and gaps[1] >= 0.1 - 0.01 and gaps[2] >= 0.2 - 0.01, gaps
    await until(lambda: runner.failures == 0)
    assert "proxy sync attempt 3 failed: iptables-restore exited 1; retrying in 0.2s" in caplog.text
