"""Watch contract: replay then live with no gap or duplicate, fan-out, slow watchers, cleanup."""

from __future__ import annotations

import asyncio
import random

import pytest

from control_plane.storage import WatcherTooSlowError, WatchEvent

from .conftest import AnyStore, StoreFactory
from .streams import take, take_until


async def test_replays_history_then_follows_live_writes(store: AnyStore) -> None:
    b = store.current_revision
    await store.create("/a/x", b"1")
    await store.update("/a/x", b"2", expected_revision=b + 1)
    await store.create("/a/y", b"3")
    events = store.watch("/a/", after_revision=b + 1)
    replayed = await take(events, 2)
    assert replayed == [
        WatchEvent("PUT", "/a/x", b + 2, b"2", b"1", b + 1),
        WatchEvent("PUT", "/a/y", b + 3, b"3", None, b + 3),
    ]
    assert replayed[1].created and not replayed[0].created
    await store.delete("/a/x")
    assert await take(events, 1) == [WatchEvent("DELETE", "/a/x", b + 4, None, b"2", b + 1)]


async def test_watch_sees_only_its_prefix(store: AnyStore) -> None:
    events = store.watch("/a/", after_revision=store.current_revision)
    for key in ["/ab/1", "/a", "/a/1", "/b/1", "/a/2/sub"]:
        await store.create(key, b"v")
    assert [e.key for e in await take(events, 2)] == ["/a/1", "/a/2/sub"]


async def test_start_at_current_revision_is_live_only(store: AnyStore) -> None:
    await store.create("/a/old", b"v")
    events = store.watch("/a/", after_revision=store.current_revision)
    await store.create("/a/new", b"v")
    assert [e.key for e in await take(events, 1)] == ["/a/new"]


async def test_start_beyond_current_revision_waits_for_it(store: AnyStore) -> None:
    base = store.current_revision
    events = store.watch("/a/", after_revision=base + 2)
    for i in range(4):
        await store.create(f"/a/{i}", b"v")
    assert [e.revision for e in await take(events, 2)] == [base + 3, base + 4]


@pytest.mark.parametrize("ring_size", [10_000, 8])  # 8: most replays come from the revision log
async def test_no_gap_or_duplicate_between_replay_and_live(make_store: StoreFactory, ring_size: int) -> None:
    store = await make_store(ring_size=ring_size)
    base = store.current_revision
    total = 600
    reference = store.watch("", after_revision=base)

    async def writer(n: int) -> None:
        for i in range(total // 4):
            key = f"/w/{n}/{i % 7}"
            current = await store.get(key)
            if current is None:
                await store.create(key, f"{n}:{i}".encode())
            else:
                await store.update(key, f"{n}:{i}".encode(), current.mod_revision)

    async def late_watcher(seed: int) -> tuple[int, list[WatchEvent]]:
        rng = random.Random(seed)
        await asyncio.sleep(rng.random() * 0.2)
        after = rng.randrange(base, store.current_revision + 1)
        return after, await take_until(store.watch("/w/", after), base + total, timeout=30)

    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    watchers = [asyncio.create_task(late_watcher(seed)) for seed in range(20)]
    await asyncio.gather(*writers)
    history = await take(reference, total)
    assert [e.revision for e in history] == list(range(base + 1, base + total + 1))
    for after, seen in await asyncio.gather(*watchers):
        assert seen == history[after - base:], f"watch after {after}"


async def test_hundred_watchers_each_get_every_event_in_order(store: AnyStore) -> None:
    total = 400
    base = store.current_revision
    streams = [store.watch("/pods/", after_revision=base) for _ in range(100)]
    consumers = [asyncio.create_task(take(s, total, timeout=30)) for s in streams]
    await asyncio.sleep(0)  # let every watcher subscribe before the writes start

    async def writer(n: int) -> None:
        for i in range(total // 8):
            await store.create(f"/pods/{n}/{i}", b"v")

    await asyncio.gather(*(writer(n) for n in range(8)))
    results = await asyncio.gather(*consumers)
    assert all([e.revision for e in seen] == list(range(base + 1, base + total + 1)) for seen in results)
    assert store.stats.watchers == 100


async def test_slow_watcher_is_cut_off_without_blocking_writers(make_store: StoreFactory) -> None:
    store = await make_store(max_watch_backlog=10)
    b = store.current_revision
    slow = store.watch("/a/", after_revision=b)
    fast = store.watch("/a/", after_revision=b)
    fast_reader = asyncio.create_task(take(fast, 100))
    await store.create("/a/first", b"v")
    assert [e.revision for e in await take(slow, 1)] == [b + 1]
    async with asyncio.timeout(10):  # the slow watcher reads nothing while these commit
        for i in range(99):
            await store.create(f"/a/{i}", b"v")
    assert [e.revision for e in await fast_reader] == list(range(b + 1, b + 101))
    with pytest.raises(WatcherTooSlowError) as err:
        await anext(slow)
    assert err.value.last_revision == b + 1
    assert store.stats.watchers_cut_off == 1
    assert store.stats.watchers == 1  # only the fast one is still subscribed
    with pytest.raises(StopAsyncIteration):
        await anext(slow)
    # The remedy: watch again from the last revision received.
    again = store.watch("/a/", after_revision=err.value.last_revision)
    assert [e.revision for e in await take(again, 99)] == list(range(b + 2, b + 101))


async def test_watch_unsubscribes_when_the_consumer_stops(store: AnyStore) -> None:
    base = store.current_revision
    await store.create("/a/x", b"v")
    async for _ in store.watch("/a/", after_revision=base):
        break
    # no gc.collect(): CPython frees the stream as soon as the loop exits
    assert store.stats.watchers == 0

    closed = store.watch("/a/", after_revision=base)
    await anext(closed)
    assert store.stats.watchers == 1
    await closed.aclose()
    assert store.stats.watchers == 0
    with pytest.raises(StopAsyncIteration):
        await anext(closed)

    cancelled = store.watch("/a/", after_revision=base + 1)
    consumer = asyncio.create_task(anext(cancelled))
    await asyncio.sleep(0.01)
    assert store.stats.watchers == 1
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert store.stats.watchers == 0


async def test_closing_the_store_ends_watches(make_store: StoreFactory) -> None:
    store = await make_store()
    events = store.watch("", after_revision=store.current_revision)
    consumer = asyncio.create_task(take(events, 1))
    await asyncio.sleep(0.01)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await consumer


async def test_long_replay_from_the_log_is_paged(make_store: StoreFactory) -> None:
    store = await make_store(ring_size=8)
    base = store.current_revision
    for start in range(0, 2500, 250):
        await asyncio.gather(*(store.create(f"/a/{i}", b"v") for i in range(start, start + 250)))
    await store.create("/b/other", b"v")
    events = store.watch("/a/", after_revision=base + 10)
    assert [e.revision for e in await take(events, 2490, timeout=60)] == list(range(base + 11, base + 2501))
    await store.create("/a/live", b"v")
    assert [e.key for e in await take(events, 1)] == ["/a/live"]
