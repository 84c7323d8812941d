"""Key-value contract: CAS writes, errors, prefix lists, pagination, reads at past revisions."""

from __future__ import annotations

import asyncio
import random

import pytest

from control_plane.storage import (
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RevisionConflictError,
    Store,
    StoreError,
)

from .conftest import AnyStore


async def test_satisfies_the_store_protocol(store: AnyStore) -> None:
    typed: Store = store
    base = typed.current_revision
    assert await typed.create("/a/x", b"v") == base + 1
    assert typed.current_revision == base + 1


async def test_create_then_get(store: AnyStore) -> None:
    base = store.current_revision
    assert await store.create("/pods/default/a", b"one") == base + 1
    assert await store.create("/pods/default/b", b"two") == base + 2
    assert await store.get("/pods/default/a") == KeyValue("/pods/default/a", b"one", base + 1, base + 1)
    assert await store.get("/pods/default/missing") is None
    assert store.current_revision == base + 2


async def test_create_existing_key_fails_without_a_revision(store: AnyStore) -> None:
    base = store.current_revision
    await store.create("/a/x", b"1")
    with pytest.raises(KeyExistsError) as err:
        await store.create("/a/x", b"2")
    assert err.value.key == "/a/x"
    assert store.current_revision == base + 1
    assert await store.get("/a/x") == KeyValue("/a/x", b"1", base + 1, base + 1)


async def test_update_compares_mod_revision(store: AnyStore) -> None:
    b = store.current_revision
    await store.create("/a/x", b"1")
    assert await store.update("/a/x", b"2", expected_revision=b + 1) == b + 2
    with pytest.raises(RevisionConflictError) as err:
        await store.update("/a/x", b"3", expected_revision=b + 1)
    assert (err.value.key, err.value.expected, err.value.actual) == ("/a/x", b + 1, b + 2)
    assert await store.update("/a/x", b"4", expected_revision=0) == b + 3  # unconditional
    assert await store.get("/a/x") == KeyValue("/a/x", b"4", b + 1, b + 3)
    with pytest.raises(KeyNotFoundError):
        await store.update("/a/missing", b"1", expected_revision=0)
    with pytest.raises(KeyNotFoundError):
        await store.update("/a/missing", b"1", expected_revision=b + 1)
    assert store.current_revision == b + 3


async def test_delete_compares_mod_revision_and_returns_the_deleted_value(store: AnyStore) -> None:
    b = store.current_revision
    await store.create("/a/x", b"1")
    await store.update("/a/x", b"2", expected_revision=b + 1)
    with pytest.raises(RevisionConflictError):
        await store.delete("/a/x", expected_revision=b + 1)
    assert await store.delete("/a/x", expected_revision=b + 2) == (b + 3, KeyValue("/a/x", b"2", b + 1, b + 2))
    assert await store.get("/a/x") is None
    with pytest.raises(KeyNotFoundError):
        await store.delete("/a/x")
    assert await store.create("/a/x", b"again") == b + 4
    assert await store.get("/a/x") == KeyValue("/a/x", b"again", b + 4, b + 4)


async def test_concurrent_cas_updates_have_exactly_one_winner(store: AnyStore) -> None:
    """Many CAS writes racing on one key (committed together by SQLite's group commit):
    each losing check fails only its own write."""
    revision = await store.create("/a/x", b"0")
    results = await asyncio.gather(
        *(store.update("/a/x", str(i).encode(), expected_revision=revision) for i in range(50)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, int)]
    assert winners == [revision + 1]
    assert all(isinstance(r, RevisionConflictError) for r in results if not isinstance(r, int))
    assert store.current_revision == revision + 1


async def test_list_matches_whole_prefix_segments(store: AnyStore) -> None:
    base = store.current_revision
    for key in ["/a", "/a/1", "/a/2", "/a/2/sub", "/ab/1", "/b/1"]:
        await store.create(key, key.encode())
    result = await store.list("/a/")
    assert [kv.key for kv in result.items] == ["/a/1", "/a/2", "/a/2/sub"]
    assert result.revision == base + 6
    assert not result.more
    assert [kv.key for kv in (await store.list("/ab/")).items] == ["/ab/1"]
    assert [kv.key for kv in (await store.list("")).items] == ["/a", "/a/1", "/a/2", "/a/2/sub", "/ab/1", "/b/1"]
    assert (await store.list("/c/")).items == []


async def test_list_pages_with_limit_and_start_key(store: AnyStore) -> None:
    keys = [f"/pods/ns/p{i:02}" for i in range(10)]
    for key in random.Random(1).sample(keys, len(keys)):
        await store.create(key, b"v")
    await store.create("/pods/other/p", b"v")
    seen: list[str] = []
    start = ""
    pages = 0
    while True:
        page = await store.list("/pods/ns/", start_key=start, limit=3)
        pages += 1
        seen += [kv.key for kv in page.items]
        if not page.more:
            break
        assert len(page.items) == 3
        start = page.items[-1].key + "\x00"
    assert seen == keys
    assert pages == 4
    exact = await store.list("/pods/ns/", limit=10)
    assert len(exact.items) == 10 and not exact.more


async def test_list_at_past_revisions_matches_history(store: AnyStore) -> None:
    """Random writes; a list at every past revision shows the state right after it."""
    rng = random.Random(7)
    model: dict[str, KeyValue] = {}
    base = store.current_revision
    snapshots: dict[int, dict[str, KeyValue]] = {base: {}}
    for _ in range(300):
        key = f"/k/{rng.randrange(12)}"
        current = model.get(key)
        if current is None:
            revision = await store.create(key, f"{key}@{store.current_revision + 1}".encode())
            model[key] = KeyValue(key, f"{key}@{revision}".encode(), revision, revision)
        elif rng.random() < 0.3:
            revision, deleted = await store.delete(key, expected_revision=current.mod_revision)
            assert deleted == current
            del model[key]
        else:
            revision = await store.update(key, f"{key}@{store.current_revision + 1}".encode(), current.mod_revision)
            model[key] = KeyValue(key, f"{key}@{revision}".encode(), current.create_revision, revision)
        snapshots[revision] = dict(model)
    for revision, snapshot in snapshots.items():
        if revision == base:
            continue
        result = await store.list("/k/", revision=revision)
        assert result.revision == revision
        assert result.items == [snapshot[k] for k in sorted(snapshot)], f"at revision {revision}"


async def test_pagination_at_the_first_pages_revision_ignores_later_writes(store: AnyStore) -> None:
    for i in range(6):
        await store.create(f"/a/{i}", b"old")
    first = await store.list("/a/", limit=2)
    await store.delete("/a/3")
    await store.update("/a/4", b"new", expected_revision=0)
    await store.create("/a/5x", b"new")
    rest = await store.list("/a/", revision=first.revision, start_key=first.items[-1].key + "\x00")
    assert rest.revision == first.revision
    assert [(kv.key, kv.value) for kv in rest.items] == [(f"/a/{i}", b"old") for i in range(2, 6)]


async def test_list_beyond_the_current_revision_fails(store: AnyStore) -> None:
    revision = await store.create("/a/x", b"1")
    with pytest.raises(FutureRevisionError) as err:
        await store.list("/a/", revision=revision + 4)
    assert (err.value.requested, err.value.current) == (revision + 4, revision)


async def test_a_key_that_cannot_be_stored_fails_alone(store: AnyStore) -> None:
    base = store.current_revision
    results = await asyncio.gather(
        store.create("/a/1", b"v"), store.create("/a/\ud800", b"v"), store.create("/a/2", b"v"), return_exceptions=True
    )
    # etcd may commit requests sent together in any order
    assert sorted([results[0], results[2]]) == [base + 1, base + 2]  # type: ignore[type-var]
    assert isinstance(results[1], StoreError) and not isinstance(results[1], KeyExistsError)
