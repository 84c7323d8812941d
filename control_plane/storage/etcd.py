"""The store on a real etcd cluster (etcd v3), for several API servers sharing one state.

Layout: the store key K is the etcd key ``prefix + K`` (the API server's keys are
``/registry/<group>/<resource>/[<namespace>/]<name>``), the value is the stored JSON as
is, and a key's ``mod_revision`` is its resourceVersion: etcd's revisions are the
store's revisions, so a resourceVersion means the same on every API server.

- create: a txn comparing the key's create_revision with 0; update and delete: a txn
  comparing its mod_revision with the expected one (or, when unconditional, its version
  with 0), reading the key on failure to tell "not found" from "conflict";
- list: one range, at the revision asked for (a consistent snapshot for pagination);
- watch: ONE etcd watch on the whole prefix (with prev_kv, for the last state of deleted
  objects) feeds a WatchHub, this process's watch cache, as kube-apiserver's cacher
  does; watches starting before its ring buffer replay through a watch from their
  revision; the hub follows from its last revision across member failures;
- compaction: etcd's (revisions at and below are dropped); reading below it raises
  CompactedError (the API's 410 Gone). ``compaction_window`` compacts automatically as
  SQLite does; with several API servers each may compact, and a compaction another one
  already did is a no-op;
- durability: etcd answers a write after a quorum committed and fsynced it; nothing is
  cached on the write path, and reads are linearizable (quorum reads). As with SQLite,
  a write returns once this server's watchers have its event too (waiting at most
  PUBLISH_WAIT, and not at all while the hub's etcd watch is down).
- etcd-specific limits: a txn that writes several keys makes several events with one
  revision, which the hub would pass on only once; Skiff writes one key per txn.

Why etcd's JSON gateway with aiohttp rather than a client library: the gateway is part
of etcd's stable v3 API (served by every etcd since 3.4 at ``/v3/``, the same RPCs and
semantics as gRPC), the store needs four calls of it, and aiohttp is already Skiff's
HTTP stack, async-native and typed. python-etcd3 is unmaintained; aetcd is a one-person
beta that would add grpcio and protobuf (native wheels) for the same four calls. What
the gateway costs: no HTTP/2 multiplexing (a pool of HTTP/1.1 connections instead), and
one HTTP request per watch, which suits a store that keeps one long watch per process.
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import itertools
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from control_plane.storage.etcd_client import (
    EtcdClient,
    EtcdError,
    EtcdKV,
    EtcdUnavailableError,
    TlsFiles,
    b64,
    header_revision,
    prefix_range_end,
)
from control_plane.storage.interface import (
    CompactedError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionConflictError,
    StoreError,
    WatchEvent,
)
from control_plane.storage.semantics import auto_compact_target, check_key
from control_plane.storage.stats import StoreStats
from control_plane.storage.watch_hub import WatchHub, WatchStream

log = logging.getLogger(__name__)

# The whole keyspace, for history replays (see _load_history).
ALL_KEYS = (b"\0", b"\0")
# How long a write waits, at most, for its event to reach this server's watchers.
PUBLISH_WAIT = 2.0


class EtcdStore:
    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        prefix: str = "",
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        compaction_window: int = 100_000,  # revisions kept readable by list/watch
        ring_size: int = 10_000,  # recent events kept in memory for watch starts
        max_watch_backlog: int = 10_000,  # a watcher this far behind is cut off
        request_timeout: float = 10.0,  # one request to etcd, at most
        retry_timeout: float = 5.0,  # retrying requests etcd surely did not apply (an election)
        start_timeout: float = 60.0,  # waiting for etcd to answer at start
    ):
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e]
        tls = TlsFiles(ca_file, cert_file, key_file) if (ca_file or cert_file) else None
        self._client = EtcdClient(endpoints, tls=tls, request_timeout=request_timeout, retry_timeout=retry_timeout)
        self._prefix = prefix
        self._root = prefix.encode()
        self._probe_key = self._root + b"\0probe"  # no API key starts with NUL
        self._window = compaction_window
        self._ring_size = ring_size
        self._max_backlog = max_watch_backlog
        self._start_timeout = start_timeout
        self._hub = WatchHub(self._load_history, ring_size=ring_size, max_backlog=max_watch_backlog)
        self._revision = 0  # the newest revision any reply showed
        self._compacted = 0  # etcd's compacted revision as far as this process knows
        self._compacting = False
        self._follower: asyncio.Task[None] | None = None
        self._watching = asyncio.Event()  # the hub's etcd watch is open
        # Writes waiting for the hub to publish their revision: (revision, seq, future), a heap.
        self._unpublished: builtins.list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._open = False
        self._writes = 0

    async def __aenter__(self) -> EtcdStore:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def endpoints(self) -> list[str]:
        return list(self._client.endpoints)

    async def start(self) -> None:
        """Wait (up to ``start_timeout``) for etcd to answer a quorum read, then follow it."""
        if self._open:
            raise StoreError("etcd store was already started; open a new EtcdStore")
        await self._client.start()
        deadline = asyncio.get_running_loop().time() + self._start_timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                revision = await self.read_revision()
                compacted = await self._find_compacted()
                break
            except StoreError as exc:
                if asyncio.get_running_loop().time() > deadline:
                    await self._client.close()
                    raise StoreError(f"etcd at {','.join(self._client.endpoints)} did not answer within "
                                     f"{self._start_timeout:.0f}s: {exc}") from exc
                log.warning("etcd not ready (attempt %d: %s); retrying in 1s", attempt, exc)
                await asyncio.sleep(1)
        self._see(revision)
        self._compacted = compacted
        self._hub.reset(revision, compacted, [])
        self._open = True
        self._follower = asyncio.create_task(self._follow(revision), name="etcd-store-watch")
        try:
            async with asyncio.timeout(self._start_timeout):
                await self._watching.wait()
        except TimeoutError:
            await self.close()
            raise StoreError(f"could not open a watch on etcd at {','.join(self._client.endpoints)}") from None

    async def close(self) -> None:
        """End every watch and the hub's etcd watch, close the connections. Writes in
        flight are etcd's: each either committed or not; none is queued here."""
        self._open = False
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        self._release_writers(None)
        self._hub.close()
        await self._client.close()

    @property
    def current_revision(self) -> int:
        return max(self._revision, self._hub.revision)

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    @property
    def stats(self) -> StoreStats:
        return StoreStats(
            writes=self._writes,
            commits=self._writes,  # each write is its own raft entry
            largest_batch=1 if self._writes else 0,
            watchers=self._hub.watcher_count,
            watchers_cut_off=self._hub.cut_off,
        )

    # ---- reads ---------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        self._check_open()
        check_key(key)
        result = await self._client.range(self._etcd_key(key))
        self._see(result.revision)
        return self._kv(result.kvs[0]) if result.kvs else None

    async def list(self, prefix: str, *, revision: int = 0, start_key: str = "", limit: int = 0) -> ListResult:
        self._check_open()
        check_key(prefix or "/")
        if revision and revision < self._compacted:
            raise CompactedError(revision, self._compacted)
        begin = self._root + max(prefix, start_key).encode() or b"\0"  # etcd keys are never empty
        end = prefix_range_end(self._root + prefix.encode())
        try:
            result = await self._client.range(begin, end, revision=revision, limit=limit)
        except EtcdError as exc:
            raise await self._revision_error(exc, revision) from None
        self._see(result.revision)
        return ListResult([self._kv(kv) for kv in result.kvs], revision or result.revision, result.more)

    # ---- writes --------------------------------------------------------------

    async def create(self, key: str, value: bytes) -> int:
        self._check_open()
        check_key(key)
        k = b64(self._etcd_key(key))
        reply = await self._client.txn(
            [{"target": "CREATE", "key": k, "result": "EQUAL", "create_revision": "0"}],
            [{"request_put": {"key": k, "value": b64(value)}}],
            [],
        )
        if not reply.get("succeeded"):
            self._see(header_revision(reply))
            raise KeyExistsError(key)
        return await self._written(header_revision(reply))

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        self._check_open()
        check_key(key)
        k = b64(self._etcd_key(key))
        reply = await self._client.txn(
            [self._expect(k, expected_revision)],
            [{"request_put": {"key": k, "value": b64(value)}}],
            [{"request_range": {"key": k}}],
        )
        if not reply.get("succeeded"):
            raise self._write_failed(key, expected_revision, reply)
        return await self._written(header_revision(reply))

    async def delete(self, key: str, expected_revision: int = 0) -> tuple[int, KeyValue]:
        self._check_open()
        check_key(key)
        k = b64(self._etcd_key(key))
        reply = await self._client.txn(
            [self._expect(k, expected_revision)],
            [{"request_delete_range": {"key": k, "prev_kv": True}}],
            [{"request_range": {"key": k}}],
        )
        if not reply.get("succeeded"):
            raise self._write_failed(key, expected_revision, reply)
        deleted = reply["responses"][0]["response_delete_range"]["prev_kvs"][0]
        return await self._written(header_revision(reply)), self._kv(EtcdKV.from_json(deleted))

    async def compact(self, revision: int) -> None:
        self._check_open()
        try:
            await self._client.compact(revision)
        except EtcdError as exc:
            if exc.compacted:  # already compacted at or beyond it (by us or another server)
                self._set_compacted(revision)
                return
            raise await self._revision_error(exc, revision) from None
        self._set_compacted(revision)

    @staticmethod
    def _expect(key: str, expected_revision: int) -> dict[str, Any]:
        if expected_revision:
            return {"target": "MOD", "key": key, "result": "EQUAL", "mod_revision": str(expected_revision)}
        return {"target": "VERSION", "key": key, "result": "GREATER", "version": "0"}  # it exists

    def _write_failed(self, key: str, expected_revision: int, reply: dict[str, Any]) -> StoreError:
        self._see(header_revision(reply))
        kvs = reply.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
        if not kvs:
            return KeyNotFoundError(key)
        return RevisionConflictError(key, expected_revision, EtcdKV.from_json(kvs[0]).mod_revision)

    async def _written(self, revision: int) -> int:
        self._see(revision)
        self._writes += 1
        target = auto_compact_target(revision, self._compacted, self._window)
        if target is not None and not self._compacting:
            # As SQLite compacts inside the commit that crosses the step: the write is
            # acknowledged once the compaction was asked for. Its failure does not fail the write.
            self._compacting = True
            try:
                await self.compact(target)
            except StoreError as exc:
                log.warning("automatic compaction to revision %d failed: %s; retrying after later writes",
                            target, exc)
            finally:
                self._compacting = False
        await self._until_published(revision)
        return revision

    async def _until_published(self, revision: int) -> None:
        """Wait until this server's watchers have the write at ``revision`` at hand, as
        SQLite answers a write only after publishing it: a watch started once the write
        returned has it without waiting. Bounded by PUBLISH_WAIT, and skipped while the
        hub's etcd watch is down: the write is durable either way, only later to arrive."""
        if self._hub.revision >= revision or not self._watching.is_set():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._unpublished, (revision, next(self._seq), waiter))
        try:
            async with asyncio.timeout(PUBLISH_WAIT):
                await waiter
        except TimeoutError:
            log.info("the write at revision %d did not come back through the etcd watch within %.0fs; "
                     "answering anyway (its watchers get it when it comes)", revision, PUBLISH_WAIT)

    def _release_writers(self, published: int | None) -> None:
        """Wake the writes waiting for revisions up to ``published`` (None: all of them)."""
        waiting = self._unpublished
        while waiting and (published is None or waiting[0][0] <= published):
            _, _, waiter = heapq.heappop(waiting)
            if not waiter.done():
                waiter.set_result(None)

    # ---- watch ---------------------------------------------------------------

    def watch(self, prefix: str, after_revision: int) -> WatchStream:
        return self._hub.watch(prefix, after_revision)

    async def _follow(self, revision: int) -> None:
        """Loop contract: keep ONE etcd watch on the prefix open from the revision after
        the last one published, and publish what it brings to the hub in order. A
        broken watch (member down, no leader) is opened again on the next endpoint after
        a short delay; if etcd compacted past the last revision published meanwhile, the
        hub's watchers are ended (their clients re-watch and get 410 Gone) and a new hub
        follows from now."""
        delay = 0.1
        attempt = 0
        while True:
            try:
                async with self._client.watch(self._root or b"\0", prefix_range_end(self._root), revision + 1,
                                              prev_kv=True) as replies:
                    self._watching.set()
                    if attempt:
                        log.info("etcd watch open again on %s from revision %d", self._client.endpoint, revision + 1)
                    attempt = 0
                    delay = 0.1
                    async for reply in replies:
                        if reply.get("compact_revision"):
                            revision = await self._restart_hub(revision, int(reply["compact_revision"]))
                            break
                        if reply.get("canceled"):
                            raise EtcdUnavailableError(f"etcd canceled the watch: {reply.get('cancel_reason', '')}")
                        events = [self._event(e) for e in reply.get("events", ())]
                        if events:
                            self._see(events[-1].revision)
                            self._hub.publish(events)
                            revision = events[-1].revision
                            self._release_writers(revision)
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                self._watching.clear()
                self._release_writers(None)  # no waiting for a watch that is down
                attempt += 1
                log.warning("etcd watch broke (attempt %d: %s); watching again from revision %d in %.1fs",
                            attempt, exc, revision + 1, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _restart_hub(self, published: int, compacted: int) -> int:
        log.warning("etcd compacted to revision %d past the last revision this server published (%d); "
                    "ending its watches (clients relist) and following from now", compacted, published)
        self._set_compacted(compacted)
        old = self._hub
        revision = await self.read_revision()
        self._hub = WatchHub(self._load_history, ring_size=self._ring_size, max_backlog=self._max_backlog)
        self._hub.reset(revision, self._compacted, [])
        old.close()
        self._release_writers(revision)
        return revision

    async def _load_history(self, prefix: str, after: int, up_to: int, limit: int) -> builtins.list[WatchEvent]:
        """Events under ``prefix`` with after < revision <= up_to, for a watch that starts
        before the hub's ring buffer: replayed by an etcd watch from ``after + 1``.

        That watch covers the whole keyspace although only ``prefix`` is wanted: every
        etcd revision is some key's write, so it surely reaches ``up_to`` and ends there,
        where a watch on ``prefix`` alone could wait forever for a write that never
        comes. Replays are rare (the ring covers recent starts) and bounded by the
        compaction window."""
        if after < self._compacted:
            raise CompactedError(after, self._compacted)
        want = (self._root + prefix.encode()).decode("utf-8", "surrogateescape")
        found: builtins.list[WatchEvent] = []
        async with self._client.watch(*ALL_KEYS, after + 1, prev_kv=True) as replies:
            async for reply in replies:
                if reply.get("compact_revision"):
                    self._set_compacted(int(reply["compact_revision"]))
                    raise CompactedError(after, int(reply["compact_revision"]))
                if reply.get("canceled"):
                    raise EtcdUnavailableError(f"etcd canceled a replay watch: {reply.get('cancel_reason', '')}")
                for raw in reply.get("events", ()):
                    revision = int(raw["kv"]["mod_revision"])
                    if revision > up_to:
                        return found
                    if self._key_of(raw).startswith(want):
                        found.append(self._event(raw))
                        if len(found) >= limit:
                            return found
                    if revision == up_to:
                        return found
        return found  # pragma: no cover - the watch only ends by raising

    # ---- conversions and bookkeeping -----------------------------------------

    def _etcd_key(self, key: str) -> bytes:
        return self._root + key.encode()

    def _kv(self, kv: EtcdKV) -> KeyValue:
        return KeyValue(kv.key[len(self._root):].decode("utf-8", "surrogateescape"), kv.value, kv.create_revision, kv.mod_revision)

    @staticmethod
    def _key_of(raw: dict[str, Any]) -> str:
        return EtcdKV.from_json(raw["kv"]).key.decode("utf-8", "surrogateescape")

    def _event(self, raw: dict[str, Any]) -> WatchEvent:
        kv = EtcdKV.from_json(raw["kv"])
        prev = EtcdKV.from_json(raw["prev_kv"]) if "prev_kv" in raw else None
        key = kv.key[len(self._root):].decode("utf-8", "surrogateescape")
        if raw.get("type") == "DELETE":
            if prev is None:
                log.warning("etcd sent the delete of %s at revision %d without its last state (compacted)",
                            key, kv.mod_revision)
            return WatchEvent("DELETE", key, kv.mod_revision, None, prev.value if prev else None,
                              prev.create_revision if prev else 0)
        # Created when this is the key's first version; else the previous value is known
        # unless etcd compacted it away meanwhile.
        prev_value = prev.value if prev is not None and kv.version > 1 else None
        return WatchEvent("PUT", key, kv.mod_revision, kv.value, prev_value, kv.create_revision)

    async def _find_compacted(self) -> int:
        """etcd's compacted revision: 0 when revision 1 is still readable; else what a
        watch from revision 1 is told (etcd answers it at once with compact_revision)."""
        try:
            await self._client.range(self._probe_key, revision=1, count_only=True)
            return 0
        except EtcdError as exc:
            if not exc.compacted:
                raise
        try:
            async with asyncio.timeout(10):
                async with self._client.watch(self._probe_key, b"", 1) as replies:
                    async for reply in replies:
                        if reply.get("compact_revision"):
                            return int(reply["compact_revision"])
        except TimeoutError:
            pass
        raise StoreError("etcd did not tell its compacted revision to a watch from revision 1 within 10s")

    async def _revision_error(self, exc: EtcdError, revision: int) -> StoreError:
        if exc.future_revision:
            return FutureRevisionError(revision, await self.read_revision())
        if exc.compacted:
            try:
                self._set_compacted(await self._find_compacted())
            except StoreError as probe:
                log.warning("cannot learn etcd's compacted revision: %s", probe)
                self._set_compacted(revision + 1)
            return CompactedError(revision, self._compacted)
        return exc

    async def read_revision(self) -> int:
        """etcd's current revision, by a quorum (linearizable) read: a StoreError when no
        quorum answers (what a readiness check wants to know)."""
        revision = (await self._client.range(self._probe_key, count_only=True)).revision
        self._see(revision)
        return revision

    def _set_compacted(self, revision: int) -> None:
        if revision > self._compacted:
            self._compacted = revision
            self._hub.compacted_revision = revision

    def _see(self, revision: int) -> None:
        if revision > self._revision:
            self._revision = revision

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("store is not started or already closed")
