"""PodWorkers: one serial queue per pod uid; triggers collapse; DONE ends a worker; errors back off."""

from __future__ import annotations

import asyncio

from node_agent.pod_worker import DONE, PodWorkers, SyncResult


async def test_syncs_of_one_pod_never_overlap_and_triggers_collapse() -> None:
    running: dict[str, int] = {}
    calls: list[str] = []
    gate = asyncio.Event()

    async def sync(uid: str) -> SyncResult:
        running[uid] = running.get(uid, 0) + 1
        assert running[uid] == 1, "two syncs of one pod at once"
        calls.append(uid)
        await gate.wait()
        running[uid] -= 1
        return None

    workers = PodWorkers(sync)
    workers.enqueue("a")
    workers.enqueue("b")
    await asyncio.sleep(0.01)
    assert sorted(calls) == ["a", "b"]  # pods in parallel
    for _ in range(5):
        workers.enqueue("a")  # arrive during the sync: one more sync afterwards, not five
    gate.set()
    await asyncio.sleep(0.05)
    assert calls.count("a") == 2 and calls.count("b") == 1
    await workers.stop()


async def test_done_ends_the_worker_and_delay_reschedules() -> None:
    results: list[SyncResult] = [0.02, DONE]
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def sync(uid: str) -> SyncResult:
        calls.append(loop.time())
        return results.pop(0)

    workers = PodWorkers(sync)
    workers.enqueue("a")
    await asyncio.sleep(0.1)
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.015
    assert len(workers) == 0
    await workers.stop()


async def test_failing_sync_is_retried_with_backoff(caplog: object) -> None:
    attempts = 0

    async def sync(uid: str) -> SyncResult:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("boom")
        return DONE

    workers = PodWorkers(sync)
    workers.enqueue("a")
    await asyncio.sleep(0.05)
    assert attempts == 1  # waiting out the 1 s back-off
    workers.enqueue("a")  # a new trigger does not wait for it
    await asyncio.sleep(0.05)
    assert attempts == 2 and len(workers) == 0
    await workers.stop()
