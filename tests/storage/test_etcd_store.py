"""What only the etcd store does: survive a member's death, fail over between endpoints,
TLS client certificates, several stores (API servers) on one cluster, and its key layout."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.storage import CompactedError, KeyValue, StoreError, WatchEvent
from control_plane.storage.etcd import EtcdStore

from .conftest import requires_etcd
from .etcd_cluster import EtcdCluster, free_ports
from .streams import take, take_until

pytestmark = requires_etcd

ELECTION_BOUND = 5.0  # seconds writes may fail while a new leader is elected


def unique_prefix() -> str:
    return f"/t-{os.urandom(4).hex()}"


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A three-member cluster of this test's own (it gets killed)."""
    cluster = EtcdCluster(tmp_path / "etcd", size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize("talks_to", ["leader", "follower"])
async def test_writes_resume_within_an_election_when_the_leader_is_killed(etcd3: EtcdCluster, talks_to: str) -> None:
    """kill -9 the leader (the member the store talks to, or another one): writes sent
    after the kill succeed within ELECTION_BOUND, as an API server with many clients
    would see it. Every acknowledged write is there afterwards, and the store's watch
    (which may have been on the killed member) lost none and repeated none."""
    leader = 0 if talks_to == "leader" else 1
    await asyncio.to_thread(etcd3.move_leader, leader)
    async with EtcdStore(etcd3.endpoints, prefix=unique_prefix()) as store:
        base = store.current_revision
        events = store.watch("/k/", base)
        acked: dict[str, int] = {}
        resumed: list[float] = []  # ack times of writes sent after the kill
        failures: list[str] = []
        kill_at = 0.0

        async def write(key: str) -> None:
            sent = time.monotonic()
            try:
                acked[key] = await store.create(key, key.encode())
            except StoreError as exc:  # refused, or outcome unknown
                failures.append(f"{time.monotonic() - kill_at:.2f}s after the kill: {exc}")
                return
            if kill_at and sent > kill_at:
                resumed.append(time.monotonic())

        async def clients() -> None:
            """A write every 20 ms, without waiting for the ones in flight."""
            async with asyncio.TaskGroup() as group:
                for i in range(100_000):
                    if stop.is_set():
                        break
                    group.create_task(write(f"/k/{i:06}"))
                    await asyncio.sleep(0.02)

        stop = asyncio.Event()
        load = asyncio.create_task(clients())
        async with asyncio.timeout(30):
            while len(acked) < 20:
                await asyncio.sleep(0.01)
        kill_at = time.monotonic()
        await asyncio.to_thread(etcd3.kill, leader)
        async with asyncio.timeout(30):
            while len(resumed) < 20:
                await asyncio.sleep(0.01)
        stop.set()
        async with asyncio.timeout(30):
            await load

        outage = resumed[0] - kill_at
        print(f"writes resumed {outage:.2f}s after the kill; {len(failures)} writes failed")
        assert outage < ELECTION_BOUND, f"writes failed for {outage:.1f}s: {failures[-3:]}"
        assert await asyncio.to_thread(etcd3.leader) != leader
        listed = {kv.key: kv for kv in (await store.list("/k/")).items}
        for key, revision in acked.items():
            assert listed[key] == KeyValue(key, key.encode(), revision, revision)
        seen = await take_until(events, max(acked.values()), timeout=30)
        revisions = [e.revision for e in seen]
        assert revisions == sorted(set(revisions))
        assert set(acked.values()) <= set(revisions)
        assert all(e.type == "PUT" and e.key in listed for e in seen)  # writes of unknown outcome included


async def test_a_store_fails_over_when_its_first_endpoint_is_down(etcd_cluster: EtcdCluster) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    async with EtcdStore([dead, *etcd_cluster.endpoints], prefix=unique_prefix()) as store:
        events = store.watch("/a/", store.current_revision)
        revision = await store.create("/a/x", b"v")
        assert (await take(events, 1))[0].revision == revision
        assert await store.get("/a/x") == KeyValue("/a/x", b"v", revision, revision)


async def test_the_watch_follows_across_a_restart_that_compaction_overtook(etcd3: EtcdCluster) -> None:
    """The store's only member is down while others write and compact past the last
    revision it published: when it is back, its watches end (clients relist: a watch
    from before the compaction gets 410), and it follows new writes."""
    prefix = unique_prefix()
    async with EtcdStore(etcd3.endpoints[:1], prefix=prefix) as lonely, \
            EtcdStore(etcd3.endpoints[1:], prefix=prefix) as other:
        old = lonely.watch("/a/", lonely.current_revision)
        first = await other.create("/a/0", b"v")
        assert (await take(old, 1))[0].revision == first
        await asyncio.to_thread(etcd3.move_leader, 1)  # the others keep a quorum without an election
        await asyncio.to_thread(etcd3.kill, 0)
        for i in range(1, 5):
            last = await other.create(f"/a/{i}", b"v")
        await other.compact(last)
        await asyncio.to_thread(etcd3.restart, 0)
        with pytest.raises(StopAsyncIteration):  # ended, for the client to watch again
            async with asyncio.timeout(30):
                await anext(old)
        assert lonely.compacted_revision == last
        with pytest.raises(CompactedError):
            await anext(lonely.watch("/a/", first))
        again = lonely.watch("/a/", last)
        revision = await other.create("/a/5", b"v")
        assert await take(again, 1) == [WatchEvent("PUT", "/a/5", revision, b"v", None, revision)]


async def test_two_stores_on_one_cluster_agree(etcd_cluster: EtcdCluster) -> None:
    """Two API servers: one's writes reach the other's watch with the same revisions; a
    compaction by one is known to the other (list and watch below it: CompactedError)."""
    prefix = unique_prefix()
    async with EtcdStore(etcd_cluster.endpoints, prefix=prefix) as a, \
            EtcdStore(list(reversed(etcd_cluster.endpoints)), prefix=prefix) as b:
        base = a.current_revision
        watch_b = b.watch("/a/", base)
        revisions = [await a.create(f"/a/{i}", str(i).encode()) for i in range(5)]
        assert [e.revision for e in await take(watch_b, 5)] == revisions
        assert await b.get("/a/0") == await a.get("/a/0")
        updated = await b.update("/a/0", b"new", revisions[0])
        assert await a.get("/a/0") == KeyValue("/a/0", b"new", revisions[0], updated)
        await a.compact(revisions[2])
    async with EtcdStore(etcd_cluster.endpoints, prefix=prefix) as c:  # a server started after the compaction
        assert c.compacted_revision >= revisions[2]
        with pytest.raises(CompactedError) as err:
            await c.list("/a/", revision=revisions[1])
        assert err.value.compacted >= revisions[2]
        with pytest.raises(CompactedError):
            await anext(c.watch("/a/", revisions[0]))
        replay = await take(c.watch("/a/", revisions[2]), 3)
        assert [e.revision for e in replay] == [*revisions[3:], updated]


async def test_keys_and_values_in_etcd(etcd_cluster: EtcdCluster) -> None:
    """The etcd key is the prefix + the store key, the value is stored as is, and the
    mod_revision etcd reports is the revision the store returned."""
    prefix = unique_prefix()
    key = "/registry/core/configmaps/default/cm"
    value = b'{"kind":"ConfigMap","metadata":{"name":"cm"}}'
    async with EtcdStore(etcd_cluster.endpoints, prefix=prefix) as store:
        revision = await store.create(key, value)
    status, reply = etcd_cluster.call(0, "kv/range", {"key": base64.b64encode(f"{prefix}{key}".encode()).decode()})
    assert status == 200
    (kv,) = reply["kvs"]
    assert base64.b64decode(kv["value"]) == value
    assert int(kv["mod_revision"]) == int(kv["create_revision"]) == revision


@pytest.fixture(scope="module")
def etcd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-tls"), size=1, tls=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def test_tls_with_a_client_certificate(etcd_tls: EtcdCluster) -> None:
    tls = etcd_tls.client_tls
    assert tls is not None and all(url.startswith("https://") for url in etcd_tls.endpoints)
    async with EtcdStore(etcd_tls.endpoints, prefix=unique_prefix(), ca_file=str(tls.ca_file),
                         cert_file=str(tls.cert_file), key_file=str(tls.key_file)) as store:
        events = store.watch("/a/", store.current_revision)
        revision = await store.create("/a/x", b"v")
        assert await take(events, 1) == [WatchEvent("PUT", "/a/x", revision, b"v", None, revision)]


@pytest.mark.parametrize("missing", ["client certificate", "CA"])
async def test_tls_without_a_client_certificate_or_the_ca_is_refused(etcd_tls: EtcdCluster, missing: str) -> None:
    tls = etcd_tls.client_tls
    assert tls is not None
    options: dict[str, Any] = {"ca_file": str(tls.ca_file)} if missing == "client certificate" else {
        "cert_file": str(tls.cert_file), "key_file": str(tls.key_file)}
    store = EtcdStore(etcd_tls.endpoints, prefix=unique_prefix(), start_timeout=1, request_timeout=2,
                      retry_timeout=0.5, **options)
    with pytest.raises(StoreError, match="did not answer"):
        await store.start()
