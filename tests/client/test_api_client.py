from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
from aiohttp import web
from fakeapi import ExecCall, FakeApi, FakeSleep, pod, read_stdin_until_eof

from skiff.client import (
    AlreadyExists,
    ApiClient,
    ApiConnectionError,
    ClientConfig,
    Gone,
    NotFound,
    RetryPolicy,
    ServerError,
    resolve_type,
)
from skiff.client.remotecommand import exit_code_from_status, open_exec
from skiff.client.watchstream import NdjsonDecoder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- plain verbs --------------------------------------------------------------------


async def test_create_get_and_typed_errors(fake_api: FakeApi, config: ClientConfig) -> None:
    async with ApiClient(config) as client:
        created = await client.create("pods", pod("web"))
        assert created["metadata"]["resourceVersion"]
        got = await client.get("pods", "web")
        assert got["metadata"]["uid"] == created["metadata"]["uid"]
        with pytest.raises(NotFound) as missing:
            await client.get("pods", "nope")
        with pytest.raises(AlreadyExists) as taken:
            await client.create("po", pod("web"))
    assert missing.value.code == 404 and missing.value.reason == "NotFound"
    assert str(missing.value) == 'pods "nope" not found'
    assert missing.value.status["details"]["name"] == "nope"
    assert taken.value.code == 409 and taken.value.reason == "AlreadyExists"
    assert fake_api.requests[0].headers["Authorization"] == "Bearer secret-token"
    assert fake_api.requests[0].path == "/api/v1/namespaces/default/pods"
    assert fake_api.requests[1].path == "/api/v1/namespaces/default/pods/web"


async def test_list_all_follows_continue_tokens(fake_api: FakeApi, config: ClientConfig) -> None:
    for i in range(5):
        fake_api.add(pod(f"p{i}"))
    async with ApiClient(config) as client:
        result = await client.list_all("pods", "default", page_size=2)
    assert [i["metadata"]["name"] for i in result["items"]] == ["p0", "p1", "p2", "p3", "p4"]
    assert result["metadata"]["resourceVersion"] == str(fake_api.rv)
    assert "continue" not in result["metadata"]
    assert [(r.query.get("limit"), r.query.get("continue")) for r in fake_api.requests] == [
        ("2", None), ("2", "2"), ("2", "4")]


async def test_list_namespace_none_lists_all_namespaces(fake_api: FakeApi, config: ClientConfig) -> None:
    fake_api.add(pod("a", "ns1"))
    fake_api.add(pod("b", "ns2", app="web"))
    async with ApiClient(config) as client:
        everything = await client.list("pods")
        selected = await client.list("pods", label_selector={"app": "web"})
    assert len(everything["items"]) == 2
    assert [i["metadata"]["name"] for i in selected["items"]] == ["b"]
    assert fake_api.requests[0].path == "/api/v1/pods"
    assert fake_api.requests[1].query["labelSelector"] == "app=web"


async def test_patch_content_types_and_delete_options(fake_api: FakeApi, config: ClientConfig) -> None:
    fake_api.add({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
                  "spec": {"replicas": 1}})
    async with ApiClient(config) as client:
        patched = await client.patch("deploy", "web", {"spec": {"replicas": 3}}, patch_type="strategic")
        await client.patch("deploy", "web", {"spec": {"replicas": 2}}, subresource="scale")
        with pytest.raises(ValueError, match="field_manager"):
            await client.patch("deploy", "web", {}, patch_type="apply")
        await client.delete("deployments.apps", "web", grace_period_seconds=0, propagation_policy="Foreground")
    assert patched["spec"]["replicas"] == 3
    patch_req, scale_req, delete_req = fake_api.requests
    assert patch_req.headers["Content-Type"] == "application/strategic-merge-patch+json"
    assert patch_req.path == "/apis/apps/v1/namespaces/default/deployments/web"
    assert scale_req.headers["Content-Type"] == "application/merge-patch+json"
    assert scale_req.path.endswith("/deployments/web/scale")
    assert delete_req.json() == {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                                 "propagationPolicy": "Foreground"}


async def test_replace_conflict_and_update_status(fake_api: FakeApi, config: ClientConfig) -> None:
    async with ApiClient(config) as client:
        created = await client.create("pods", pod("web"))
        created["status"] = {"phase": "Succeeded"}
        updated = await client.update_status("pods", created)
        stale = dict(created)
        with pytest.raises(Exception) as conflict:
            await client.replace("pods", stale)
    assert updated["status"]["phase"] == "Succeeded"
    assert fake_api.requests[1].method == "PUT" and fake_api.requests[1].path.endswith("/pods/web/status")
    assert type(conflict.value).__name__ == "Conflict"


# ---- retries ------------------------------------------------------------------------


async def test_get_retries_5xx_with_backoff(fake_api: FakeApi, config: ClientConfig, fake_sleep: FakeSleep,
                                            caplog: pytest.LogCaptureFixture) -> None:
    fake_api.add(pod("web"))
    fake_api.fail_next = [503, 503]
    caplog.set_level(logging.WARNING, "skiff.client")
    async with ApiClient(config, sleep=fake_sleep) as client:
        got = await client.get("pods", "web")
    assert got["metadata"]["name"] == "web"
    assert len(fake_api.requests) == 3
    assert fake_sleep.delays == [0.2, 0.4]
    assert caplog.messages == [
        "GET /api/v1/namespaces/default/pods/web: attempt 1/5 failed: 503 InternalError: injected 503; "
        "retrying in 0.2s",
        "GET /api/v1/namespaces/default/pods/web: attempt 2/5 failed: 503 InternalError: injected 503; "
        "retrying in 0.4s",
    ]


async def test_retries_are_bounded(fake_api: FakeApi, config: ClientConfig, fake_sleep: FakeSleep,
                                   caplog: pytest.LogCaptureFixture) -> None:
    fake_api.fail_next = [500] * 10
    caplog.set_level(logging.WARNING, "skiff.client")
    async with ApiClient(config, sleep=fake_sleep) as client:
        with pytest.raises(ServerError) as failed:
            await client.list("pods")
    assert failed.value.code == 500
    assert len(fake_api.requests) == 5
    assert fake_sleep.delays == [0.2, 0.4, 0.8, 1.6]
    assert caplog.messages[-1] == "GET /api/v1/pods: attempt 5/5 failed: 500 InternalError: injected 500; giving up"


async def test_429_is_retried(fake_api: FakeApi, config: ClientConfig, fake_sleep: FakeSleep) -> None:
    fake_api.fail_next = [429]
    async with ApiClient(config, sleep=fake_sleep) as client:
        await client.list("pods")
    assert fake_sleep.delays == [0.2]


async def test_non_idempotent_requests_are_not_retried(fake_api: FakeApi, config: ClientConfig,
                                                       fake_sleep: FakeSleep) -> None:
    fake_api.fail_next = [503]
    async with ApiClient(config, sleep=fake_sleep) as client:
        with pytest.raises(ServerError):
            await client.create("pods", pod("web"))
        fake_api.fail_next = [503]
        with pytest.raises(ServerError):
            await client.patch("pods", "web", {"metadata": {"labels": {"a": "b"}}})
    assert fake_sleep.delays == []
    assert len(fake_api.requests) == 2


async def test_dropped_connection_is_retried(fake_api: FakeApi, config: ClientConfig, fake_sleep: FakeSleep) -> None:
    fake_api.add(pod("web"))
    fake_api.fail_next = [0, 0]  # aiohttp itself resends an idempotent request once; the second drop is ours
    async with ApiClient(config, sleep=fake_sleep) as client:
        got = await client.get("pods", "web")
    assert got["metadata"]["name"] == "web"
    assert fake_sleep.delays == [0.2]
    assert len(fake_api.requests) == 3


async def test_connection_refused_raises_after_retries(fake_sleep: FakeSleep,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "skiff.client")
    config = ClientConfig(server=f"http://127.0.0.1:{free_port()}")
    async with ApiClient(config, sleep=fake_sleep, retry=RetryPolicy(attempts=3)) as client:
        with pytest.raises(ApiConnectionError):
            await client.get("pods", "web")
    assert fake_sleep.delays == [0.2, 0.4]
    assert caplog.messages[0].startswith("GET /api/v1/namespaces/default/pods/web: attempt 1/3 failed: ")
    assert caplog.messages[0].endswith("; retrying in 0.2s")
    assert caplog.messages[-1].endswith("; giving up")


async def test_cancellation_during_backoff_propagates(fake_api: FakeApi, config: ClientConfig) -> None:
    fake_api.fail_next = [503]
    sleeping = asyncio.Event()

    async def forever(delay: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()

    async with ApiClient(config, sleep=forever) as client:
        task = asyncio.create_task(client.get("pods", "web"))
        await sleeping.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ---- watch --------------------------------------------------------------------------


def test_ndjson_decoder_handles_every_split_point() -> None:
    events = [{"type": "ADDED", "object": {"metadata": {"name": f"p{i}", "x": "é" * i}}} for i in range(3)]
    data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    for cut in range(len(data) + 1):
        for step in (1, 3, 7):
            decoder = NdjsonDecoder()
            out = decoder.feed(data[:cut])
            for i in range(cut, len(data), step):
                out += decoder.feed(data[i:i + step])
            assert out + decoder.close() == events
    decoder = NdjsonDecoder()
    assert decoder.feed(b'{"type":"ADDED","object":{}}') == []
    assert decoder.close() == [{"type": "ADDED", "object": {}}]


async def test_watch_parses_events_split_across_chunks(fake_api: FakeApi, config: ClientConfig) -> None:
    fake_api.watch_chunk_size = 7
    seen: list[tuple[str, str]] = []
    async with ApiClient(config) as client:
        async def consume() -> None:
            async for event_type, obj in client.watch("pods", "default", resource_version=str(fake_api.rv)):
                seen.append((event_type, obj["metadata"].get("name", "")))
                if len(seen) == 4:
                    return

        task = asyncio.create_task(consume())
        await fake_api.wait_for_watchers()
        fake_api.add(pod("a"))
        fake_api.add(pod("b"))
        fake_api.bookmark()
        fake_api.remove(resolve_type("pods"), "default", "a")
        await asyncio.wait_for(task, 5)
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("BOOKMARK", ""), ("DELETED", "a")]
    query = fake_api.requests[0].query
    assert query["watch"] == "true" and query["allowWatchBookmarks"] == "true"


@pytest.mark.parametrize("as_event", [True, False], ids=["error-event", "http-410"])
async def test_watch_too_old_raises_gone(fake_api: FakeApi, config: ClientConfig, as_event: bool) -> None:
    fake_api.compacted_rv = 10_000
    fake_api.gone_as_event = as_event
    async with ApiClient(config) as client:
        with pytest.raises(Gone) as gone:
            async for _ in client.watch("pods", resource_version="101"):
                pass
    assert gone.value.code == 410


async def test_watch_cancellation_propagates(fake_api: FakeApi, config: ClientConfig) -> None:
    async with ApiClient(config) as client:
        async def consume() -> None:
            async for _ in client.watch("pods"):
                pass

        task = asyncio.create_task(consume())
        await fake_api.wait_for_watchers()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ---- logs and exec ------------------------------------------------------------------


async def test_stream_log(fake_api: FakeApi, config: ClientConfig) -> None:
    fake_api.logs["web"] = b"one\ntwo\nthree\n"
    async with ApiClient(config) as client:
        data = b"".join([c async for c in client.stream_log("web", container="main", tail_lines=2)])
    assert data == b"two\nthree\n"
    assert fake_api.requests[0].path == "/api/v1/namespaces/default/pods/web/log"
    assert fake_api.requests[0].query == {"container": "main", "tailLines": "2"}


async def test_exec_session_streams_and_reports_exit_code(fake_api: FakeApi, config: ClientConfig) -> None:
    async def script(ws: web.WebSocketResponse, call: ExecCall) -> None:
        await read_stdin_until_eof(ws, call)
        await ws.send_bytes(b"\x01" + call.stdin.upper())
        await ws.send_bytes(b"\x02oops")
        await ws.send_bytes(b"\x03" + json.dumps({
            "status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}).encode())

    fake_api.exec_script = script
    async with ApiClient(config) as client:
        session = await open_exec(client, "web", ["sh", "-c", "tr a-z A-Z"], stdin=True, container="main")
        assert session.protocol == "v5.channel.k8s.io"
        await session.write_stdin(b"hello ")
        await session.write_stdin(b"world")
        await session.close_stdin()
        frames = [f async for f in session]
        await session.close()
    assert frames == [(1, b"HELLO WORLD"), (2, b"oops")]
    assert session.exit_code == 3
    call = fake_api.exec_calls[0]
    assert call.query == [("command", "sh"), ("command", "-c"), ("command", "tr a-z A-Z"), ("container", "main"),
                          ("stdin", "true"), ("stdout", "true"), ("stderr", "true")]


def test_exit_code_from_status() -> None:
    assert exit_code_from_status({"status": "Success"}) == 0
    assert exit_code_from_status({"status": "Failure", "reason": "InternalError", "message": "boom"}) is None
    assert exit_code_from_status(None) is None
