"""The batching that keeps the store cheap per request: a watcher takes every event a
commit brought at once (``take_ready``), SQLite reads of one loop iteration share a
worker and a transaction, and gets of recently written keys come from memory. None of
it may change what a caller sees."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control_plane.storage import (
    CompactedError,
    KeyValue,
    ListResult,
    SQLiteStore,
    StoreError,
    WatcherTooSlowError,
    WatchEvent,
)
from control_plane.storage.watch_hub import WatchHub

from .conftest import AnyStore
from .streams import take

# ---- take_ready: the events a watch has at hand -------------------------------------


async def test_take_ready_returns_the_events_at_hand_in_order(store: AnyStore) -> None:
    base = store.current_revision
    events = store.watch("/a/", after_revision=base)
    assert events.take_ready(10) == []  # not started: nothing at hand yet
    await asyncio.gather(*(store.create(f"/a/{i}", b"v") for i in range(5)))
    await store.create("/b/other", b"v")
    first = await take(events, 1)
    rest = events.take_ready(10)
    assert [e.revision for e in first + rest] == list(range(base + 1, base + 6))
    assert events.take_ready(10) == []
    await store.update("/a/0", b"w", expected_revision=0)
    assert [e.type for e in await take(events, 1)] == ["PUT"]


async def test_take_ready_stops_at_its_limit_and_the_next_call_goes_on(store: AnyStore) -> None:
    base = store.current_revision
    for i in range(6):
        await store.create(f"/a/{i}", b"v")
    events = store.watch("/a/", after_revision=base)
    await take(events, 1)
    assert [e.revision for e in events.take_ready(2)] == [base + 2, base + 3]
    assert [e.revision for e in await take(events, 1)] == [base + 4]
    assert [e.revision for e in events.take_ready(10)] == [base + 5, base + 6]


async def test_take_ready_leaves_a_history_read_to_the_next_anext(tmp_path: Path) -> None:
    async with SQLiteStore(str(tmp_path / "s.db"), ring_size=2) as store:
        for i in range(8):
            await store.create(f"/a/{i}", b"v")
        events = store.watch("/a/", after_revision=0)  # behind the ring: replayed from the log
        got = await take(events, 1)
        while len(got) < 8:
            got += events.take_ready(10) or await take(events, 1)
        assert [e.revision for e in got] == list(range(1, 9))


async def test_take_ready_hands_back_nothing_once_a_watcher_fell_behind() -> None:
    async def no_history(prefix: str, after: int, up_to: int, limit: int) -> list[WatchEvent]:
        return []

    hub = WatchHub(no_history, max_backlog=3)
    events = hub.watch("/a/", after_revision=0)
    hub.publish([WatchEvent("PUT", "/a/x", 1, b"v", None, 1)])
    assert [e.revision for e in await take(events, 1)] == [1]
    hub.publish([WatchEvent("PUT", "/a/x", r, b"v", b"v", 1) for r in range(2, 7)])  # 5 > backlog of 3
    assert events.take_ready(10) == []
    with pytest.raises(WatcherTooSlowError):
        await anext(events)


# ---- SQLite reads in batches ----------------------------------------------------------


async def test_reads_of_one_loop_iteration_each_get_their_own_answer(tmp_path: Path) -> None:
    async with SQLiteStore(str(tmp_path / "s.db"), latest_size=0) as store:  # every get reads the database
        for i in range(20):
            await store.create(f"/a/{i:02d}", f"v{i}".encode())
        gets = [store.get(f"/a/{i:02d}") for i in range(20)]
        results = await asyncio.gather(store.list("/a/", limit=5), store.get("/a/missing"),
                                       store.get("/a/\ud800"), *gets, return_exceptions=True)
        listed, missing, bad, *values = results
        assert isinstance(listed, ListResult) and listed.more
        assert [kv.key for kv in listed.items] == ["/a/00", "/a/01", "/a/02", "/a/03", "/a/04"]
        assert missing is None
        assert isinstance(bad, StoreError)  # fails alone: the reads batched with it are answered
        assert values == [KeyValue(f"/a/{i:02d}", f"v{i}".encode(), i + 1, i + 1) for i in range(20)]


async def test_a_read_after_an_acknowledged_write_sees_it(tmp_path: Path) -> None:
    async with SQLiteStore(str(tmp_path / "s.db"), latest_size=0) as store:
        await store.create("/a/x", b"0")
        for i in range(1, 30):
            revision = await store.update("/a/x", str(i).encode(), expected_revision=0)
            got, listed = await asyncio.gather(store.get("/a/x"), store.list("/a/"))
            assert got is not None and (got.value, got.mod_revision) == (str(i).encode(), revision)
            assert listed.revision >= revision and listed.items[0].value == str(i).encode()


async def test_closing_answers_reads_already_submitted(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.db"), latest_size=0)
    await store.start()
    await store.create("/a/x", b"v")
    pending = asyncio.ensure_future(asyncio.gather(*(store.get("/a/x") for _ in range(10)), return_exceptions=True))
    await asyncio.sleep(0)  # the reads are submitted, not yet handed to a worker
    await store.close()
    for result in await asyncio.wait_for(pending, 10):
        assert result == KeyValue("/a/x", b"v", 1, 1) or isinstance(result, StoreError)
    with pytest.raises(StoreError):
        await store.get("/a/x")


# ---- gets of recently written keys ----------------------------------------------------


@pytest.mark.parametrize("latest_size", [10_000, 2, 0])
async def test_gets_follow_every_write_whether_remembered_or_read(tmp_path: Path, latest_size: int) -> None:
    async with SQLiteStore(str(tmp_path / "s.db"), latest_size=latest_size) as store:
        for i in range(5):
            await store.create(f"/a/{i}", b"v1")
        await store.update("/a/0", b"v2", expected_revision=1)
        await store.delete("/a/1")
        await store.create("/a/1", b"again")
        await store.delete("/a/2")
        assert await store.get("/a/0") == KeyValue("/a/0", b"v2", 1, 6)
        assert await store.get("/a/1") == KeyValue("/a/1", b"again", 8, 8)
        assert await store.get("/a/2") is None
        assert await store.get("/a/4") == KeyValue("/a/4", b"v1", 5, 5)
    async with SQLiteStore(str(tmp_path / "s.db"), latest_size=latest_size) as store:  # nothing remembered
        assert await store.get("/a/0") == KeyValue("/a/0", b"v2", 1, 6)
        assert await store.get("/a/2") is None


async def test_a_failed_write_leaves_the_remembered_value(tmp_path: Path) -> None:
    async with SQLiteStore(str(tmp_path / "s.db")) as store:
        await store.create("/a/x", b"v1")
        with pytest.raises(StoreError):
            await store.update("/a/x", b"v2", expected_revision=99)
        assert await store.get("/a/x") == KeyValue("/a/x", b"v1", 1, 1)


# ---- one commit, many operations on the same keys -------------------------------------


async def test_a_batch_applies_its_operations_in_order_on_the_same_keys(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    async with SQLiteStore(path) as store:
        await store.create("/a/old", b"0")  # revision 1
        commits = store.stats.commits
        outcomes = await asyncio.gather(  # submitted in one loop iteration: one batch, one commit
            store.create("/a/x", b"1"),  # 2
            store.update("/a/x", b"2", expected_revision=0),  # 3
            store.delete("/a/x"),  # 4
            store.create("/a/x", b"3"),  # 5: created again, with a new create_revision
            store.create("/a/x", b"dup"),  # fails alone: exists
            store.update("/a/old", b"1", expected_revision=1),  # 6
            store.compact(3),
            store.update("/a/old", b"2", expected_revision=1),  # fails alone: not the current revision
            store.delete("/a/old", expected_revision=6),  # 7
            store.create("/a/y", b"4"),  # 8
            return_exceptions=True)
        assert store.stats.commits == commits + 1
        assert [o if isinstance(o, int | type(None)) else type(o).__name__ for o in outcomes] == [
            2, 3, "tuple", 5, "KeyExistsError", 6, None, "RevisionConflictError", "tuple", 8]
        assert (store.current_revision, store.compacted_revision) == (8, 3)
    async with SQLiteStore(path, latest_size=0) as store:  # what reached the disk
        assert await store.get("/a/x") == KeyValue("/a/x", b"3", 5, 5)
        assert await store.get("/a/old") is None
        assert await store.get("/a/y") == KeyValue("/a/y", b"4", 8, 8)
        assert [(kv.key, kv.value) for kv in (await store.list("/a/", revision=4)).items] == [("/a/old", b"0")]
        assert [(kv.key, kv.value) for kv in (await store.list("/a/", revision=6)).items] == [
            ("/a/old", b"1"), ("/a/x", b"3")]
        log = await take(store.watch("/a/", after_revision=3), 5)
        assert [(e.revision, e.type, e.key, e.value, e.prev_value) for e in log] == [
            (4, "DELETE", "/a/x", None, b"2"), (5, "PUT", "/a/x", b"3", None), (6, "PUT", "/a/old", b"1", b"0"),
            (7, "DELETE", "/a/old", None, b"1"), (8, "PUT", "/a/y", b"4", None)]
        with pytest.raises(CompactedError):
            await anext(store.watch("/a/", after_revision=2))
