"""Compaction: history at and below the compacted revision is gone; current values stay."""

from __future__ import annotations

import pytest

from control_plane.storage import CompactedError, FutureRevisionError, KeyValue

from .conftest import AnyStore, StoreFactory
from .streams import take


async def _write_history(store: AnyStore) -> int:
    """Revisions base+1..base+10: /a/0..4 created, then each updated once; returns base."""
    base = store.current_revision
    for i in range(5):
        await store.create(f"/a/{i}", b"v1")
    for i in range(5):
        await store.update(f"/a/{i}", b"v2", expected_revision=0)
    return base


async def test_list_and_watch_before_the_compacted_revision_fail(store: AnyStore) -> None:
    b = await _write_history(store)
    await store.compact(b + 7)
    assert store.compacted_revision == b + 7

    with pytest.raises(CompactedError) as err:
        await store.list("/a/", revision=b + 6)
    assert (err.value.requested, err.value.compacted) == (b + 6, b + 7)
    events = store.watch("/a/", after_revision=b + 6)
    with pytest.raises(CompactedError):
        await anext(events)

    # Revision 7 itself is still readable: everything after it is kept.
    at_7 = await store.list("/a/", revision=b + 7)
    assert [kv.value for kv in at_7.items] == [b"v2", b"v2", b"v1", b"v1", b"v1"]
    assert [e.revision for e in await take(store.watch("/a/", after_revision=b + 7), 3)] == [b + 8, b + 9, b + 10]
    # Current values survive compaction.
    assert await store.get("/a/0") == KeyValue("/a/0", b"v2", b + 1, b + 6)
    assert len((await store.list("/a/")).items) == 5


async def test_compacting_an_older_revision_is_a_no_op(store: AnyStore) -> None:
    b = await _write_history(store)
    await store.compact(b + 7)
    await store.compact(b + 3)
    assert store.compacted_revision == b + 7


async def test_compacting_beyond_the_current_revision_fails(store: AnyStore) -> None:
    compacted = store.compacted_revision
    b = await _write_history(store)
    with pytest.raises(FutureRevisionError):
        await store.compact(b + 11)
    assert store.compacted_revision == compacted


async def test_automatic_compaction_keeps_the_window(make_store: StoreFactory) -> None:
    store = await make_store(compaction_window=50)
    b = store.current_revision
    for i in range(200):
        await store.create(f"/a/{i}", b"v")
    # Compaction runs in steps of a tenth of the window.
    assert b + 200 - 50 - 5 <= store.compacted_revision <= b + 200 - 50
    oldest = store.compacted_revision
    assert len((await store.list("/a/", revision=oldest)).items) == oldest - b
    assert len(await take(store.watch("/a/", after_revision=oldest), b + 200 - oldest)) == b + 200 - oldest
    with pytest.raises(CompactedError):
        await anext(store.watch("/a/", after_revision=oldest - 1))
    with pytest.raises(CompactedError):
        await store.list("/a/", revision=oldest - 1)
