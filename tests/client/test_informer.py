from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakeapi import FakeApi, FakeSleep, pod

from skiff.client import ApiClient, ClientConfig, Informer, RetryPolicy, SharedInformerFactory, resolve_type

PODS = resolve_type("pods")


class Recorder:
    """Handlers that note what they saw; the update handler is a coroutine on purpose."""

    def __init__(self, informer: Informer) -> None:
        self.seen: list[tuple[str, str]] = []
        informer.on_add(lambda obj: self.seen.append(("add", obj["metadata"]["name"])))
        informer.on_update(self._update)
        informer.on_delete(lambda obj: self.seen.append(("delete", obj["metadata"]["name"])))

    async def _update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.seen.append(("update", new["metadata"]["name"]))


@pytest.fixture
async def client(config: ClientConfig) -> AsyncIterator[ApiClient]:
    # One attempt per request: these tests count the informer's own retries.
    async with ApiClient(config, retry=RetryPolicy.never()) as c:
        yield c


async def until(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def watch_requests(api: FakeApi) -> list[dict[str, str]]:
    return [r.query for r in api.requests if r.query.get("watch") == "true"]


def list_requests(api: FakeApi) -> list[dict[str, str]]:
    return [r.query for r in api.requests if r.method == "GET" and r.query.get("watch") != "true"]


async def test_relist_fills_cache_and_dispatches(fake_api: FakeApi, client: ApiClient) -> None:
    fake_api.add(pod("a"))
    fake_api.add(pod("b", "other"))
    informer = Informer(client, "pods", page_size=1)
    rec = Recorder(informer)
    rv = await informer.relist()
    assert rv == str(fake_api.rv)
    assert informer.has_synced and await informer.wait_synced(0)
    assert informer.keys() == ["default/a", "other/b"]
    assert informer.get("other/b")["kind"] == "Pod"  # type: ignore[index]
    assert sorted(rec.seen) == [("add", "a"), ("add", "b")]
    assert [q.get("continue") for q in list_requests(fake_api)] == [None, "1"]


async def test_watch_once_applies_events_and_bookmarks(fake_api: FakeApi, client: ApiClient) -> None:
    informer = Informer(client, "pods", "default")
    rec = Recorder(informer)
    await informer.relist()
    task = asyncio.create_task(informer.watch_once(informer.resource_version or ""))
    await fake_api.wait_for_watchers()
    fake_api.add(pod("a"))
    fake_api.add(pod("a", app="x"))
    fake_api.add(pod("b"))
    fake_api.remove(PODS, "default", "b")
    fake_api.rv += 50
    fake_api.bookmark()
    await until(lambda: informer.resource_version == str(fake_api.rv))
    fake_api.close_watches()
    result = await asyncio.wait_for(task, 5)
    assert rec.seen == [("add", "a"), ("update", "a"), ("add", "b"), ("delete", "b")]
    assert informer.keys() == ["default/a"]
    assert informer.get("default/a")["metadata"]["labels"] == {"app": "x"}  # type: ignore[index]
    assert result.resource_version == str(fake_api.rv) and result.events == 5
    query = watch_requests(fake_api)[0]
    assert query["allowWatchBookmarks"] == "true" and query["resourceVersion"] == "100"


async def test_run_resumes_from_last_resource_version(fake_api: FakeApi, client: ApiClient) -> None:
    informer = Informer(client, "pods")
    rec = Recorder(informer)
    informer.start()
    try:
        await informer.wait_synced(5)
        await fake_api.wait_for_watchers()
        fake_api.add(pod("a"))
        await until(lambda: informer.get("default/a") is not None)
        seen_rv = informer.resource_version
        fake_api.close_watches()
        fake_api.add(pod("b"))  # happens while the informer is disconnected
        await until(lambda: informer.get("default/b") is not None)
    finally:
        await informer.stop()
    assert rec.seen == [("add", "a"), ("add", "b")]
    assert [q.get("resourceVersion") for q in watch_requests(fake_api)] == ["100", seen_rv]
    assert len(list_requests(fake_api)) == 1  # resumed, not relisted


@pytest.mark.parametrize("as_event", [True, False], ids=["error-event", "http-410"])
async def test_run_relists_on_gone(fake_api: FakeApi, client: ApiClient, as_event: bool,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "skiff.client.informer")
    fake_api.add(pod("a"))
    fake_api.add(pod("b"))
    informer = Informer(client, "pods")
    rec = Recorder(informer)
    informer.start()
    try:
        await informer.wait_synced(5)
        await fake_api.wait_for_watchers()
        old_rv = informer.resource_version
        # Changes the watch never reports (history compacted past our RV): only a relist finds them.
        del fake_api.objects[("pods", "default", "b")]
        fake_api.add(pod("c"), event=False)
        fake_api.gone_as_event = as_event
        fake_api.compacted_rv = fake_api.rv
        fake_api.close_watches()
        await until(lambda: len(list_requests(fake_api)) == 2 and fake_api.watcher_count == 1)
    finally:
        await informer.stop()
    assert rec.seen == [("add", "a"), ("add", "b"), ("delete", "b"), ("add", "c")]
    assert informer.keys() == ["default/a", "default/c"]
    assert [q.get("resourceVersion") for q in watch_requests(fake_api)] == [old_rv, old_rv, str(fake_api.rv)]
    assert f"{informer!r}: resourceVersion {old_rv} is gone (too old resource version: {old_rv}" in caplog.text
    assert "; relisting" in caplog.text


async def test_run_once_backs_off_on_errors(fake_api: FakeApi, client: ApiClient, fake_sleep: FakeSleep,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "skiff.client.informer")
    informer = Informer(client, "pods", sleep=fake_sleep)
    fake_api.fail_next = [500, 503, 500]
    for _ in range(3):
        await informer.run_once()
    assert fake_sleep.delays == [0.8, 1.6, 3.2]
    assert informer.failures == 3 and not informer.has_synced
    assert caplog.messages[1] == (f"{informer!r}: attempt 2 failed: ServerError: injected 503; relisting in 1.6s")
    # Recovery: the next cycle lists, watches, and resets the failure count.
    fake_api.watch_end_after_history = True
    fake_api.add(pod("a"))
    informer._clock = iter([0.0, 5.0]).__next__  # type: ignore[method-assign]  # a long, healthy watch
    await informer.run_once()
    assert informer.has_synced and informer.failures == 0 and fake_sleep.delays == [0.8, 1.6, 3.2]


async def test_watch_failure_resumes_after_backoff(fake_api: FakeApi, client: ApiClient,
                                                   fake_sleep: FakeSleep, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "skiff.client.informer")
    informer = Informer(client, "pods", sleep=fake_sleep)
    await informer.relist()
    rv = informer.resource_version
    fake_api.fail_next = [500]
    await informer.run_once()
    assert fake_sleep.delays == [0.8]
    assert caplog.messages[-1].endswith(f"resuming from {rv} in 0.8s")
    assert len(list_requests(fake_api)) == 1


async def test_immediately_ending_watch_counts_as_failure(fake_api: FakeApi, client: ApiClient,
                                                          fake_sleep: FakeSleep) -> None:
    fake_api.watch_end_after_history = True
    informer = Informer(client, "pods", sleep=fake_sleep, clock=lambda: 0.0)
    await informer.run_once()
    await informer.run_once()
    assert fake_sleep.delays == [0.8, 1.6]


async def test_handler_errors_do_not_stop_dispatch(fake_api: FakeApi, client: ApiClient,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    fake_api.add(pod("a"))
    informer = Informer(client, "pods")
    seen: list[str] = []

    def broken(obj: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    informer.on_add(broken)
    informer.on_add(lambda obj: seen.append(obj["metadata"]["name"]))
    await informer.relist()
    assert seen == ["a"]
    assert "handler" in caplog.text and "failed for default/a" in caplog.text


async def test_resync_redelivers_cached_objects(fake_api: FakeApi, client: ApiClient) -> None:
    fake_api.add(pod("a"))
    informer = Informer(client, "pods", resync_period=60)
    rec = Recorder(informer)
    await informer.relist()
    await informer.resync()
    assert rec.seen == [("add", "a"), ("update", "a")]


async def test_cancel_during_watch_propagates(fake_api: FakeApi, client: ApiClient) -> None:
    informer = Informer(client, "pods")
    task = informer.start()
    await fake_api.wait_for_watchers()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_shared_factory_dedupes_informers(client: ApiClient) -> None:
    factory = SharedInformerFactory(client)
    a = factory.informer_for("pods", "default")
    assert factory.informer_for("po", "default") is a
    assert factory.informer_for("pods", "other") is not a
    assert factory.informer_for("pods", "default", label_selector="app=web") is not a
    nodes = factory.informer_for("nodes", "ignored-for-cluster-scope")
    assert factory.informer_for("nodes") is nodes
    assert len(factory.informers) == 4


async def test_shared_factory_start_and_sync(fake_api: FakeApi, client: ApiClient) -> None:
    fake_api.add(pod("a"))
    factory = SharedInformerFactory(client)
    pods = factory.informer_for("pods")
    factory.informer_for("nodes")
    factory.start()
    try:
        assert await factory.wait_for_sync(5)
        assert pods.keys() == ["default/a"]
    finally:
        await factory.stop()
