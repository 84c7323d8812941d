"""Probes: single runs against a local aiohttp server on 127.0.0.1, and the prober worker's
threshold rules on a fake clock."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node_agent.probes import ProbeResult, ProbeWorker, resolve_port, run_probe

Obj = dict[str, Any]
LOCAL = "127.0.0.1"
SEEN = web.AppKey("seen", list[dict[str, str]])


async def no_exec(command: list[str], timeout: float) -> tuple[int, bytes]:
    raise AssertionError("exec not expected")


# --- a local HTTP server ------------------------------------------------------------------------

def make_app() -> web.Application:
    app = web.Application()
    seen = app[SEEN] = []

    async def ok(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text="fine")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="body is not shown")

    async def redirect_local(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def redirect_away(request: web.Request) -> web.Response:
        # Never followed: the probe stops at a redirect to another host.
        raise web.HTTPFound("http://elsewhere.invalid/")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    app.router.add_get("/ok", ok)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect-local", redirect_local)
    app.router.add_get("/redirect-away", redirect_away)
    app.router.add_get("/loop", loop)
    app.router.add_get("/slow", slow)
    return app


@pytest.fixture
async def http_server() -> AsyncIterator[TestServer]:
    server = TestServer(make_app(), host=LOCAL)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return ctx


def http_get(path: str, port: Any, **extra: Any) -> Obj:
    return {"httpGet": {"path": path, "port": port, **extra}, "timeoutSeconds": 1}


async def probe(p: Obj, **kw: Any) -> ProbeResult:
    kw.setdefault("exec_in_container", no_exec)
    return await run_probe(p, pod_ip=LOCAL, **kw)


# --- httpGet ------------------------------------------------------------------------------------

async def test_http_success_and_headers(http_server: TestServer) -> None:
    result = await probe(http_get("/ok", http_server.port, httpHeaders=[{"name": "X-Custom", "value": "1"}]))
    assert result == ProbeResult(True, "fine")
    headers = http_server.app[SEEN][-1]
    assert headers["User-Agent"] == "kube-probe/1.30"
    assert headers["Accept"] == "*/*"
    assert headers["X-Custom"] == "1"
    await probe(http_get("/ok", http_server.port, httpHeaders=[{"name": "user-agent", "value": "mine"}]))
    assert http_server.app[SEEN][-1]["User-Agent"] == "mine"


@pytest.mark.parametrize(("code", "success"), [(200, True), (204, True), (399, True), (400, False), (500, False)])
async def test_http_status_codes(http_server: TestServer, code: int, success: bool) -> None:
    result = await probe(http_get(f"/status/{code}", http_server.port))
    assert result.success is success
    if not success:
        assert result.message == f"HTTP probe failed with statuscode: {code}"


async def test_http_redirects(http_server: TestServer) -> None:
    assert await probe(http_get("/redirect-local", http_server.port)) == ProbeResult(True, "fine")
    away = await probe(http_get("/redirect-away", http_server.port))
    assert away.success and away.message.startswith("Probe terminated redirects")
    looping = await probe(http_get("/loop", http_server.port))
    assert not looping.success and "stopped after 10 redirects" in looping.message


async def test_http_named_port(http_server: TestServer) -> None:
    container = {"name": "app", "ports": [{"name": "http", "containerPort": http_server.port}]}
    assert (await probe(http_get("/ok", "http"), container=container)).success
    missing = await probe(http_get("/ok", "nope"), container=container)
    assert missing == ProbeResult(False, "port nope not found")


async def test_http_timeout(http_server: TestServer) -> None:
    result = await probe(http_get("/slow", http_server.port), timeout=0.2)
    assert not result.success
    assert result.message == (f'Get "http://{LOCAL}:{http_server.port}/slow": context deadline exceeded '
                              f"(Client.Timeout exceeded while awaiting headers)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


async def test_http_connection_refused() -> None:
    port = free_port()
    result = await probe(http_get("/", port))
    assert result == ProbeResult(False, f'Get "http://{LOCAL}:{port}/": dial tcp {LOCAL}:{port}: connect: '
                                        f"connection refused")


async def test_https_without_verification(tmp_path: Path) -> None:
    server = TestServer(make_app(), host=LOCAL)
    await server.start_server(ssl=self_signed(tmp_path))
    try:
        assert (await probe(http_get("/ok", server.port, scheme="HTTPS"))) == ProbeResult(True, "fine")
    finally:
        await server.close()


async def test_probe_host_field(http_server: TestServer) -> None:
    result = await run_probe(http_get("/ok", http_server.port, host=LOCAL), pod_ip="127.0.0.2",
                             exec_in_container=no_exec)
    assert result.success


# --- tcpSocket, exec, grpc ----------------------------------------------------------------------

async def test_tcp_socket(http_server: TestServer) -> None:
    assert await probe({"tcpSocket": {"port": http_server.port}}) == ProbeResult(True, "")
    port = free_port()
    assert await probe({"tcpSocket": {"port": port}}) == ProbeResult(
        False, f"dial tcp {LOCAL}:{port}: connect: connection refused")


async def test_exec() -> None:
    calls: list[tuple[list[str], float]] = []

    async def fake_exec(command: list[str], timeout: float) -> tuple[int, bytes]:
        calls.append((command, timeout))
        if command[0] == "hang":
            await asyncio.sleep(10)
        return (0 if command[0] == "true" else 1), b"output\n"

    assert await probe({"exec": {"command": ["true"]}, "timeoutSeconds": 3}, exec_in_container=fake_exec) \
        == ProbeResult(True, "output\n")
    assert calls == [(["true"], 3.0)]
    assert await probe({"exec": {"command": ["false"]}}, exec_in_container=fake_exec) \
        == ProbeResult(False, "output\n")
    assert await probe({"exec": {"command": ["hang", "x"]}}, exec_in_container=fake_exec, timeout=0.05) \
        == ProbeResult(False, 'command "hang x" timed out')


async def test_exec_error_is_failure() -> None:
    async def broken(command: list[str], timeout: float) -> tuple[int, bytes]:
        raise RuntimeError("container not running")

    result = await probe({"exec": {"command": ["x"]}}, exec_in_container=broken)
    assert not result.success and "container not running" in result.message


async def test_grpc_unsupported() -> None:
    result = await probe({"grpc": {"port": 9000}})
    assert result == ProbeResult(False, "gRPC probes are not supported by this node")


def test_resolve_port() -> None:
    c = {"ports": [{"name": "web", "containerPort": 8080}]}
    assert resolve_port(80, c) == 80
    assert resolve_port("web", c) == 8080
    assert resolve_port("8081", c) == 8081
    with pytest.raises(ValueError, match="invalid port number: 0"):
        resolve_port(0, c)


# --- the worker ---------------------------------------------------------------------------------

class FakeTime:
    """A clock that only moves when the worker sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Script:
    """Probe results in order (True/False), then the last one forever; records the times."""

    def __init__(self, time: FakeTime, results: list[bool]) -> None:
        self.time = time
        self.results = results
        self.at: list[float] = []

    async def __call__(self) -> ProbeResult:
        self.at.append(self.time.now)
        ok = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        return ProbeResult(ok, "ok" if ok else "boom")


def make_worker(kind: Any, probe_spec: Obj, results: list[bool], **kw: Any
                ) -> tuple[ProbeWorker, FakeTime, Script, list[tuple[bool, str]]]:
    time = FakeTime()
    script = Script(time, results)
    changes: list[tuple[bool, str]] = []
    worker = ProbeWorker(kind, probe_spec, script, lambda ok, msg: changes.append((ok, msg)),
                         clock=time.clock, sleep=time.sleep, started_at=0.0, **kw)
    return worker, time, script, changes


async def run_until(worker: ProbeWorker, time: FakeTime, until: float) -> None:
    """Run the worker until it ends by itself or the fake clock reaches ``until``."""
    task = asyncio.ensure_future(worker.run_forever())
    while time.now < until and not task.done():
        await asyncio.sleep(0)
    worker.stop()
    await asyncio.wait_for(task, 5)


async def test_initial_states() -> None:
    assert make_worker("readiness", {}, [True])[0].result is False
    assert make_worker("liveness", {}, [True])[0].result is True
    startup = make_worker("startup", {}, [True])[0]
    assert startup.result is None and not startup.started


async def test_readiness_thresholds_and_initial_delay() -> None:
    spec = {"initialDelaySeconds": 5, "periodSeconds": 10, "successThreshold": 2, "failureThreshold": 3}
    worker, time, script, changes = make_worker("readiness", spec, [True, True, False, False, True, False, False,
                                                                    False, True, True])
    await run_until(worker, time, 105)
    # The first probe runs right when the initial delay is over, then every period.
    assert script.at[:3] == [5.0, 15.0, 25.0]
    # ready after 2 successes; a lone failure pair does not flip it; 3 failures do.
    assert changes == [(True, "ok"), (False, "boom"), (True, "ok")]
    assert worker.result is True


async def test_liveness_failure_stops_the_worker() -> None:
    spec = {"periodSeconds": 1, "failureThreshold": 2}
    worker, time, script, changes = make_worker("liveness", spec, [True, False, True, False, False])
    await run_until(worker, time, 100)
    assert changes == [(False, "boom")]
    assert worker.on_hold
    assert len(script.at) == 5  # nothing after the failure that restarts the container


async def test_liveness_waits_for_startup() -> None:
    started = {"value": False}
    worker, time, script, _ = make_worker("liveness", {"periodSeconds": 1}, [True],
                                          is_started=lambda: started["value"])
    assert await worker.tick() and script.at == []
    started["value"] = True
    assert await worker.tick() and script.at == [0.0]


async def test_startup_probe() -> None:
    spec = {"periodSeconds": 2, "failureThreshold": 30}
    worker, time, script, changes = make_worker("startup", spec, [False, False, True])
    await run_until(worker, time, 20)
    assert changes == [(True, "ok")]
    assert worker.started
    assert len(script.at) == 3  # done once started
    assert time.now == 4.0


async def test_startup_failure_threshold() -> None:
    worker, time, _script, changes = make_worker("startup", {"periodSeconds": 1, "failureThreshold": 3}, [False])
    await run_until(worker, time, 100)
    assert changes == [(False, "boom")]
    assert worker.on_hold and not worker.started
    assert time.now == 2.0


async def test_every_result_is_seen_by_on_probe() -> None:
    seen: list[ProbeResult] = []
    worker, time, _script, changes = make_worker("readiness", {"periodSeconds": 1}, [False, True],
                                                 on_probe=seen.append)
    await worker.tick()
    await worker.tick()
    assert [r.success for r in seen] == [False, True]
    assert changes == [(True, "ok")]


async def test_trigger_wakes_the_worker() -> None:
    worker, time, script, _ = make_worker("readiness", {"periodSeconds": 10}, [True])

    async def forever(seconds: float) -> None:
        await asyncio.sleep(3600)

    worker._sleep = forever  # a period that would never end
    task = asyncio.ensure_future(worker.run_forever())
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(script.at) == 1
    worker.trigger()
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(script.at) == 2
    worker.stop()
    await asyncio.wait_for(task, 1)
