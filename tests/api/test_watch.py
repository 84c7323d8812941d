"""Watch over HTTPS: fan-out to 100 watchers, 410 after compaction, initial events with
the ``k8s.io/initial-events-end`` bookmark, and label-selector watches.

The fan-out test knows the resourceVersion of every write it made (from the write's
response), so each watcher's stream must equal that exact sequence: in order, no gaps,
no duplicates. The compaction test needs a tiny compaction window, which has no CLI
flag, so it runs the app in-process (``build_app``) on 127.0.0.1 over plain HTTP.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from control_plane.api.auth import TokenAuthenticator, UserInfo
from control_plane.api.server import build_app
from control_plane.api.settings import ApiServerSettings
from control_plane.storage.sqlite import SQLiteStore

if TYPE_CHECKING:
    from tests.conftest import ApiServer

WATCHERS = 100
WRITERS = 4
OBJECTS_PER_WRITER = 10  # each object: create, 3 updates, delete -> 5 writes; 4 * 10 * 5 = 200
UPDATES_PER_OBJECT = 3
EVENT_DEADLINE = 90.0
COMPACTION_WINDOW = 10
TOKEN = "watch-test-token"

Event = tuple[str, str, int]  # (type, name, resourceVersion)


def tls_context(server: ApiServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.load_verify_locations(cadata=server.ca_pem.decode())
    return ctx


@pytest.fixture
async def session(api_server: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=tls_context(api_server), limit=WATCHERS + 20)
    async with aiohttp.ClientSession(
        base_url=api_server.url, connector=connector,
        headers={"Authorization": f"Bearer {api_server.token}", "Accept": "application/json"},
    ) as s:
        yield s


async def call(session: aiohttp.ClientSession, method: str, path: str,
               body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    async with session.request(method, path, json=body, timeout=aiohttp.ClientTimeout(total=30)) as resp:
        return resp.status, await resp.json(content_type=None)


async def ok(session: aiohttp.ClientSession, method: str, path: str,
             body: dict[str, Any] | None = None, expect: tuple[int, ...] = (200, 201)) -> dict[str, Any]:
    status, obj = await call(session, method, path, body)
    assert status in expect, f"{method} {path}: HTTP {status} {obj}"
    return obj


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if labels is not None:
        md["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}


@dataclass
class Watch:
    """One open watch whose lines are read into ``events`` by a background task."""

    resp: aiohttp.ClientResponse
    events: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, path: str, params: dict[str, str],
                   headers: dict[str, str] | None = None) -> Watch:
        resp = await session.get(path, params={"watch": "true", **params}, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        if resp.status != 200:
            text = await resp.text()
            resp.release()
            raise AssertionError(f"watch {path} {params}: HTTP {resp.status} {text}")
        watch = cls(resp)
        watch.task = asyncio.ensure_future(watch._read())
        return watch

    async def _read(self) -> None:
        try:
            async for line in self.resp.content:
                if line.strip():
                    self.events.append(json.loads(line))
                    self.arrived.set()
        except (aiohttp.ClientError, asyncio.CancelledError):
            pass
        finally:
            self.ended = True
            self.arrived.set()

    async def wait_for(self, count: int, deadline: float, what: str, skip_bookmarks: bool = True) -> list[Any]:
        """The first ``count`` events (BOOKMARKs left out unless asked), once they arrived."""
        while True:
            got = [e for e in self.events if not (skip_bookmarks and e["type"] == "BOOKMARK")]
            if len(got) >= count:
                return got[:count]
            if self.ended:
                raise AssertionError(f"{what}: stream ended after {len(got)}/{count} events: {got[-3:]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{what}: {len(got)}/{count} events after the deadline; last: {got[-3:]}")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def close(self) -> None:
        self.resp.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def watches() -> AsyncIterator[list[Watch]]:
    """Collects open watches and closes them all, also when the test fails."""
    opened: list[Watch] = []
    yield opened
    await asyncio.gather(*(w.close() for w in opened))


def summarize(event: dict[str, Any]) -> Event:
    md = event["object"]["metadata"]
    return event["type"], md.get("name", ""), int(md["resourceVersion"])


# ---- 100 watchers ----------------------------------------------------------------


async def test_hundred_watchers_see_every_event_in_order(session: aiohttp.ClientSession, namespace: str,
                                                         watches: list[Watch]) -> None:
    collection = f"/api/v1/namespaces/{namespace}/configmaps"
    listed = await ok(session, "GET", collection)
    assert listed["items"] == []
    start_rv = listed["metadata"]["resourceVersion"]

    opened = await asyncio.gather(*(Watch.open(session, collection, {"resourceVersion": start_rv,
                                                                     "timeoutSeconds": "300"})
                                    for _ in range(WATCHERS)))
    watches.extend(opened)

    written: list[Event] = []
    rng = random.Random(2)

    async def writer(w: int) -> None:
        for i in range(OBJECTS_PER_WRITER):
            name = f"w{w}-obj{i}"
            created = await ok(session, "POST", collection, configmap(name, v="0"))
            written.append(("ADDED", name, int(created["metadata"]["resourceVersion"])))
            for v in range(1, UPDATES_PER_OBJECT + 1):
                updated = await ok(session, "PUT", f"{collection}/{name}", configmap(name, v=str(v)))
                written.append(("MODIFIED", name, int(updated["metadata"]["resourceVersion"])))
            if rng.random() < 0.5:
                await asyncio.sleep(0)  # vary the interleaving of the writers
            deleted = await ok(session, "DELETE", f"{collection}/{name}")
            written.append(("DELETED", name, int(deleted["metadata"]["resourceVersion"])))

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    expected = sorted(written, key=lambda e: e[2])
    assert len(expected) == WRITERS * OBJECTS_PER_WRITER * (2 + UPDATES_PER_OBJECT)
    assert len({rv for _, _, rv in expected}) == len(expected), "two writes acknowledged with one resourceVersion"

    deadline = time.monotonic() + EVENT_DEADLINE
    streams = await asyncio.gather(*(w.wait_for(len(expected), deadline, f"watcher {i}")
                                     for i, w in enumerate(opened)))
    for i, events in enumerate(streams):
        got = [summarize(e) for e in events]
        if got != expected:
            missing = sorted(set(expected) - set(got), key=lambda e: e[2])
            extra = [e for e in got if e not in set(expected)]
            first_diff = next(j for j, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
            raise AssertionError(f"watcher {i}: first difference at event {first_diff}: got {got[first_diff]}, "
                                 f"expected {expected[first_diff]}; missing {missing[:5]}, unexpected {extra[:5]}")
        for event in events:
            obj = event["object"]
            assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1", event
            assert obj["metadata"]["namespace"] == namespace, event
    # One more write: it must be the very next event everywhere, so nothing (a late
    # duplicate, an invented event) slipped in after the expected sequence.
    marker = await ok(session, "POST", collection, configmap("marker", v="end"))
    marker_event = ("ADDED", "marker", int(marker["metadata"]["resourceVersion"]))
    streams = await asyncio.gather(*(w.wait_for(len(expected) + 1, deadline, f"watcher {i}: the marker")
                                     for i, w in enumerate(opened)))
    for i, events in enumerate(streams):
        assert summarize(events[-1]) == marker_event, f"watcher {i}: after the writes came {events[len(expected):]}"


# ---- initial events and selectors -----------------------------------------------


async def test_send_initial_events_ends_with_bookmark(session: aiohttp.ClientSession, namespace: str,
                                                      watches: list[Watch]) -> None:
    collection = f"/api/v1/namespaces/{namespace}/configmaps"
    names = [f"initial-{i}" for i in range(5)]
    versions = []
    for name in names:
        created = await ok(session, "POST", collection, configmap(name, v="0"))
        versions.append(int(created["metadata"]["resourceVersion"]))

    watch = await Watch.open(session, collection, {
        "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "resourceVersion": "",
        "allowWatchBookmarks": "true", "timeoutSeconds": "120"})
    watches.append(watch)
    deadline = time.monotonic() + EVENT_DEADLINE
    first = await watch.wait_for(len(names) + 1, deadline, "initial events", skip_bookmarks=False)
    added, bookmark = first[:-1], first[-1]
    assert [e["type"] for e in added] == ["ADDED"] * len(names), first
    assert sorted(e["object"]["metadata"]["name"] for e in added) == names
    assert bookmark["type"] == "BOOKMARK", first
    bookmark_md = bookmark["object"]["metadata"]
    assert bookmark_md.get("annotations") == {"k8s.io/initial-events-end": "true"}, bookmark
    assert bookmark["object"]["kind"] == "ConfigMap", bookmark
    assert int(bookmark_md["resourceVersion"]) >= max(versions), bookmark

    updated = await ok(session, "PUT", f"{collection}/{names[0]}", configmap(names[0], v="1"))
    events = await watch.wait_for(len(names) + 1, deadline, "the update after the bookmark")
    assert summarize(events[-1]) == ("MODIFIED", names[0], int(updated["metadata"]["resourceVersion"]))


async def test_send_initial_events_without_bookmarks_is_rejected(session: aiohttp.ClientSession,
                                                                 namespace: str) -> None:
    """kubectl 1.35 falls back to list+watch on an error; silently ignoring it would hang."""
    status, body = await call(session, "GET", f"/api/v1/namespaces/{namespace}/configmaps?watch=true"
                              "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan")
    assert status == 422, body
    assert body["kind"] == "Status" and body["reason"] == "Invalid", body


async def test_label_change_turns_into_deleted(session: aiohttp.ClientSession, namespace: str,
                                               watches: list[Watch]) -> None:
    collection = f"/api/v1/namespaces/{namespace}/configmaps"
    start_rv = (await ok(session, "GET", collection))["metadata"]["resourceVersion"]
    watch = await Watch.open(session, collection, {"resourceVersion": start_rv, "labelSelector": "app=web",
                                                   "timeoutSeconds": "120"})
    watches.append(watch)

    def rv(obj: dict[str, Any]) -> int:
        return int(obj["metadata"]["resourceVersion"])

    item = f"{collection}/site"
    created = await ok(session, "POST", collection, configmap("site", {"app": "web"}, v="0"))
    await ok(session, "POST", collection, configmap("other", {"app": "db"}, v="0"))
    modified = await ok(session, "PUT", item, configmap("site", {"app": "web"}, v="1"))
    moved_out = await ok(session, "PUT", item, configmap("site", {"app": "db"}, v="2"))
    await ok(session, "PUT", item, configmap("site", {"app": "db"}, v="3"))  # outside the selection: unseen
    moved_in = await ok(session, "PUT", item, configmap("site", {"app": "web"}, v="4"))
    deleted = await ok(session, "DELETE", item)

    expected = [("ADDED", "site", rv(created)), ("MODIFIED", "site", rv(modified)),
                ("DELETED", "site", rv(moved_out)), ("ADDED", "site", rv(moved_in)),
                ("DELETED", "site", rv(deleted))]
    events = await watch.wait_for(len(expected), time.monotonic() + EVENT_DEADLINE, "label-selector events")
    assert [summarize(e) for e in events] == expected
    # The DELETED for leaving the selection carries the object's new state, as Kubernetes sends it.
    assert events[2]["object"]["metadata"]["labels"] == {"app": "db"}
    assert events[2]["object"]["data"] == {"v": "2"}


async def test_watchers_in_different_forms_each_get_their_own(session: aiohttp.ClientSession, namespace: str,
                                                               watches: list[Watch]) -> None:
    """Watchers of one resource share each event's decoding and encoding: a plain watch, a
    label-selected one and a Table one still see exactly their own events, unaltered."""
    collection = f"/api/v1/namespaces/{namespace}/configmaps"
    start_rv = (await ok(session, "GET", collection))["metadata"]["resourceVersion"]
    params = {"resourceVersion": start_rv, "timeoutSeconds": "120"}
    plain, selected, table = await asyncio.gather(
        Watch.open(session, collection, params),
        Watch.open(session, collection, {**params, "labelSelector": "app=web"}),
        Watch.open(session, collection, params, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}))
    watches.extend([plain, selected, table])

    names = [f"cm-{i}" for i in range(10)]
    labels = {name: {"app": "web" if i % 2 else "db"} for i, name in enumerate(names)}
    written: list[Event] = []
    for verb, version in (("POST", "0"), ("PUT", "1"), ("DELETE", "")):  # each step concurrent: shared commits
        async def one(name: str, verb: str = verb, version: str = version) -> None:
            path = collection if verb == "POST" else f"{collection}/{name}"
            obj = await ok(session, verb, path, None if verb == "DELETE" else configmap(name, labels[name], v=version))
            kind = {"POST": "ADDED", "PUT": "MODIFIED", "DELETE": "DELETED"}[verb]
            written.append((kind, name, int(obj["metadata"]["resourceVersion"])))
        await asyncio.gather(*(one(name) for name in names))
    expected = sorted(written, key=lambda e: e[2])
    deadline = time.monotonic() + EVENT_DEADLINE

    events = await plain.wait_for(len(expected), deadline, "plain watch")
    assert [summarize(e) for e in events] == expected
    for event in events:
        obj = event["object"]
        assert obj["kind"] == "ConfigMap" and obj["data"]["v"] in ("0", "1"), event
        assert obj["metadata"]["labels"] == labels[obj["metadata"]["name"]], event

    web = [e for e in expected if labels[e[1]] == {"app": "web"}]
    assert [summarize(e) for e in await selected.wait_for(len(web), deadline, "selected watch")] == web

    rows = await table.wait_for(len(expected), deadline, "table watch")
    assert [e["object"]["kind"] for e in rows] == ["Table"] * len(expected)
    assert rows[0]["object"]["columnDefinitions"] and not any(e["object"]["columnDefinitions"] for e in rows[1:])
    assert [(e["type"], e["object"]["rows"][0]["cells"][0]) for e in rows] == [(t, n) for t, n, _ in expected]


# ---- compaction: an in-process server with a tiny window --------------------------


@dataclass
class LocalServer:
    url: str
    store: SQLiteStore


@pytest.fixture
async def small_window_server(tmp_path: Path) -> AsyncIterator[LocalServer]:
    """The real app on 127.0.0.1 (plain HTTP) over SQLite keeping only a few revisions."""
    settings = ApiServerSettings(data_dir=tmp_path, bind_address="127.0.0.1", compaction_window=COMPACTION_WINDOW)
    store = SQLiteStore(str(tmp_path / "state.db"), compaction_window=COMPACTION_WINDOW)
    authn = TokenAuthenticator({TOKEN: UserInfo("admin", "admin", ("system:masters", "system:authenticated"))})
    runner = web.AppRunner(build_app(settings, store, authn), handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield LocalServer(f"http://{host}:{port}", store)
    finally:
        await runner.cleanup()


@pytest.fixture
async def local_session(small_window_server: LocalServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=small_window_server.url,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as s:
        yield s


async def test_watch_from_compacted_revision_gets_410(local_session: aiohttp.ClientSession,
                                                      small_window_server: LocalServer,
                                                      watches: list[Watch]) -> None:
    collection = "/api/v1/namespaces/default/configmaps"
    created = await ok(local_session, "POST", collection, configmap("churn", v="0"))
    old_rv = created["metadata"]["resourceVersion"]
    for v in range(1, 4 * COMPACTION_WINDOW):
        await ok(local_session, "PUT", f"{collection}/churn", configmap("churn", v=str(v)))
    assert small_window_server.store.compacted_revision > int(old_rv), (
        f"the store did not compact (compacted {small_window_server.store.compacted_revision}, "
        f"current {small_window_server.store.current_revision})")

    watch = await Watch.open(local_session, collection, {"resourceVersion": old_rv, "timeoutSeconds": "60"})
    watches.append(watch)
    events = await watch.wait_for(1, time.monotonic() + EVENT_DEADLINE, "the ERROR event")
    assert events[0]["type"] == "ERROR", events
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["status"] == "Failure", status
    assert status["code"] == 410 and status["reason"] in ("Expired", "Gone"), status
    await asyncio.wait_for(watch.task or asyncio.sleep(0), EVENT_DEADLINE)
    assert len(watch.events) == 1, f"the stream went on after the ERROR event: {watch.events[:3]}"

    # A watch from a kept revision still works on the same server.
    current = (await ok(local_session, "GET", collection))["metadata"]["resourceVersion"]
    live = await Watch.open(local_session, collection, {"resourceVersion": current, "timeoutSeconds": "60"})
    watches.append(live)
    updated = await ok(local_session, "PUT", f"{collection}/churn", configmap("churn", v="last"))
    got = await live.wait_for(1, time.monotonic() + EVENT_DEADLINE, "the live event")
    assert summarize(got[0]) == ("MODIFIED", "churn", int(updated["metadata"]["resourceVersion"]))


async def test_list_at_compacted_revision_gets_410(local_session: aiohttp.ClientSession,
                                                   small_window_server: LocalServer) -> None:
    collection = "/api/v1/namespaces/default/configmaps"
    created = await ok(local_session, "POST", collection, configmap("churn", v="0"))
    old_rv = created["metadata"]["resourceVersion"]
    for v in range(1, 4 * COMPACTION_WINDOW):
        await ok(local_session, "PUT", f"{collection}/churn", configmap("churn", v=str(v)))
    status, body = await call(local_session, "GET",
                              f"{collection}?resourceVersion={old_rv}&resourceVersionMatch=Exact")
    assert status == 410, body
    assert body["kind"] == "Status" and body["reason"] in ("Expired", "Gone") and body["code"] == 410, body
