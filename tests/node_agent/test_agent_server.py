"""The agent's node API (logs, exec) against the host's dockerd, with a throwaway CA.

A "pod" here is two Docker containers labelled as the agent labels them: restart 0 (exited,
the previous instance) and restart 1 (running). Clients call the server over real TLS,
verifying its self-signed certificate, with client certificates from the test CA.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import ssl
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from control_plane.api.certs import Pki, ensure_client_cert, ensure_pki
from node_agent.runtime.docker_streams import parse_resize
from node_agent.server import start_agent_server
from node_agent.tls import ensure_serving_cert

BUSYBOX = Path("/bin/busybox")
APP_IMAGE = "skiff/app:1.0"
V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
TIMEOUT = 30.0


# ---- Docker fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[docker.APIClient]:
    try:
        client = docker.APIClient(timeout=60)
        client.ping()
    except docker.errors.DockerException as e:
        if os.environ.get("CI"):
            pytest.fail(f"dockerd is not reachable: {e}")
        pytest.skip(f"dockerd is not reachable: {e}")
    try:
        yield client
    finally:
        client.close()


def busybox_rootfs() -> bytes:
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image(api: docker.APIClient) -> Iterator[str]:
    """``skiff/app:1.0`` when built already, else busybox imported under a unique tag."""
    if api.images(name=APP_IMAGE):
        yield APP_IMAGE
        return
    if not BUSYBOX.exists():
        pytest.skip("no /bin/busybox (busybox-static) to build a test image from")
    tag = f"skiff-test/busybox:{uuid.uuid4().hex[:8]}"
    repository, version = tag.split(":")
    api.import_image_from_data(busybox_rootfs(), repository=repository, tag=version)
    try:
        yield tag
    finally:
        api.remove_image(tag, force=True)


@dataclass
class FakePod:
    namespace: str
    name: str
    uid: str
    container: str
    current: str  # container id of restart 1 (running)
    previous: str  # container id of restart 0 (exited)


MAIN_SCRIPT = "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three; exec sleep 3600"


def run_instance(api: docker.APIClient, image: str, pod: FakePod, restart: int, script: str) -> str:
    labels = {"io.kubernetes.pod.uid": pod.uid, "io.kubernetes.pod.namespace": pod.namespace,
              "io.kubernetes.pod.name": pod.name, "io.kubernetes.container.name": pod.container,
              "io.kubernetes.container.restartCount": str(restart), "io.skiff.container.type": "app",
              "io.skiff.managed": "true"}
    created = api.create_container(
        image, ["sh", "-c", script], labels=labels,
        name=f"k8s_{pod.container}_{pod.name}_{pod.namespace}_{pod.uid}_{restart}",
        host_config=api.create_host_config(network_mode="none", log_config={"type": "json-file", "config": {}}))
    api.start(created["Id"])
    return str(created["Id"])


def wait_for(predicate: Any, what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return result


@pytest.fixture
def pod(api: docker.APIClient, image: str) -> Iterator[FakePod]:
    suffix = uuid.uuid4().hex[:8]
    p = FakePod(f"ns-{suffix}", "web", f"uid-{suffix}", "main", "", "")
    ids: list[str] = []
    try:
        p.previous = run_instance(api, image, p, 0, "echo old-instance")
        ids.append(p.previous)
        api.wait(p.previous, timeout=TIMEOUT)
        p.current = run_instance(api, image, p, 1, MAIN_SCRIPT)
        ids.append(p.current)
        wait_for(lambda: b"three" in api.logs(p.current), "the container's first lines")
        yield p
    finally:
        for cid in ids:
            api.remove_container(cid, force=True)


# ---- the server and its clients ------------------------------------------------------------


@dataclass
class Settings:
    data_dir: Path
    listen_address: str = "127.0.0.1"
    listen_port: int = 0
    node_name: str = "node-under-test"
    node_ip: str = "127.0.0.1"


@dataclass
class Agent:
    url: str
    server_cert: Path
    pki: Pki
    tmp: Path

    def ssl(self, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
        # Verifies the agent's self-signed certificate and its 127.0.0.1 SAN.
        ctx = ssl.create_default_context(cafile=str(self.server_cert))
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx

    def session(self, cert: tuple[Path, Path] | None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl(cert)),
                                     timeout=aiohttp.ClientTimeout(total=TIMEOUT))

    def api_server(self) -> aiohttp.ClientSession:
        return self.session(ensure_client_cert(self.tmp / "apiserver", self.pki))


@pytest.fixture
async def agent(api: docker.APIClient, tmp_path: Path) -> AsyncIterator[Agent]:
    pki = ensure_pki(tmp_path / "cluster-ca", ["localhost"])
    settings = Settings(tmp_path / "agent")
    runner = await start_agent_server(settings, api, pki.ca_cert.read_bytes())
    try:
        port = runner.addresses[0][1]
        yield Agent(f"https://127.0.0.1:{port}", settings.data_dir / "pki" / "kubelet.crt", pki, tmp_path)
    finally:
        await runner.cleanup()


async def get_text(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, str]:
    async with session.get(url, params=params) as resp:
        return resp.status, await resp.text()


# ---- logs ----------------------------------------------------------------------------------


async def test_logs_with_tail_timestamps_limit_and_previous(agent: Agent, pod: FakePod) -> None:
    url = f"{agent.url}/containerLogs/{pod.namespace}/{pod.name}/{pod.container}"
    async with agent.api_server() as s:
        assert await get_text(s, url) == (200, "one\ntwo\nthree\n")
        assert await get_text(s, url, tailLines="1") == (200, "three\n")
        assert await get_text(s, url, limitBytes="6") == (200, "one\ntw")
        assert await get_text(s, url, previous="true") == (200, "old-instance\n")
        assert await get_text(s, url, sinceSeconds="3600") == (200, "one\ntwo\nthree\n")
        status, text = await get_text(s, url, timestamps="true")
        assert status == 200
        lines = text.splitlines()
        assert [line.split(" ", 1)[1] for line in lines] == ["one", "two", "three"]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line.split(" ", 1)[0]) for line in lines)
        async with s.get(url) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")

        assert await get_text(s, f"{agent.url}/containerLogs/{pod.namespace}/{pod.name}/nope") == (
            404, 'container "nope" in pod "web" is not available')
        assert await get_text(s, url, sinceSeconds="1", sinceTime="2024-01-01T00:00:00Z") == (
            400, "at most one of `sinceTime` or `sinceSeconds` may be specified")


async def test_previous_without_a_restart_is_refused(agent: Agent, pod: FakePod, api: docker.APIClient,
                                                     image: str) -> None:
    single = FakePod(pod.namespace, "solo", f"uid-{uuid.uuid4().hex[:8]}", "main", "", "")
    cid = run_instance(api, image, single, 0, MAIN_SCRIPT)
    try:
        async with agent.api_server() as s:
            url = f"{agent.url}/containerLogs/{single.namespace}/solo/main"
            assert await get_text(s, url, previous="true") == (
                400, 'previous terminated container "main" in pod "solo" not found')
    finally:
        api.remove_container(cid, force=True)


async def test_follow_sees_a_line_written_later(agent: Agent, pod: FakePod, api: docker.APIClient) -> None:
    url = f"{agent.url}/containerLogs/{pod.namespace}/{pod.name}/{pod.container}"
    async with agent.api_server() as s, s.get(url, params={"follow": "true", "tailLines": "1"}) as resp:
        assert resp.status == 200
        seen = b""
        async with asyncio.timeout(TIMEOUT):
            while b"three\n" not in seen:
                seen += await resp.content.readany()
            # Written by another process straight into the container's stdout.
            exec_id = api.exec_create(pod.current, ["sh", "-c", "echo later > /proc/1/fd/1"])["Id"]
            await asyncio.to_thread(api.exec_start, exec_id)
            while b"later\n" not in seen:
                chunk = await resp.content.readany()
                assert chunk, f"the stream ended before the new line; got {seen!r}"
                seen += chunk
        assert seen == b"three\nlater\n"
    # The client hung up: the handler is cancelled and the Docker stream's thread ends.
    async with asyncio.timeout(TIMEOUT):
        while any(t.name == f"logs-{pod.current[:12]}" for t in threading.enumerate()):
            await asyncio.sleep(0.05)


# ---- exec ----------------------------------------------------------------------------------


@dataclass
class ExecResult:
    protocol: str | None
    frames: list[tuple[int, bytes]]

    def channel(self, n: int) -> bytes:
        return b"".join(data for ch, data in self.frames if ch == n)

    @property
    def status(self) -> dict[str, Any]:
        return json.loads(self.channel(3)) if self.channel(3) else {}


async def run_exec(agent: Agent, pod: FakePod, command: list[str], *, protocols: tuple[str, ...] = (V5,),
                   send: tuple[bytes, ...] = (), **flags: str) -> ExecResult:
    params = [("command", c) for c in command] + list(flags.items())
    url = f"{agent.url}/exec/{pod.namespace}/{pod.name}/{pod.container}"
    frames = []
    async with agent.api_server() as s, s.ws_connect(url, params=params, protocols=protocols) as ws:
        for message in send:
            await ws.send_bytes(message)
        async with asyncio.timeout(TIMEOUT):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames.append((msg.data[0], msg.data[1:]))
        return ExecResult(ws.protocol, frames)


async def test_exec_stdout_stderr_and_exit_code(agent: Agent, pod: FakePod) -> None:
    result = await run_exec(agent, pod, ["sh", "-c", "echo out; echo err >&2; exit 3"], stdout="1", stderr="1")
    assert result.protocol == V5
    assert result.frames[0] == (1, b"")  # "connected", as the kubelet says it
    assert result.channel(1) == b"out\n"
    assert result.channel(2) == b"err\n"
    assert result.frames[-1][0] == 3
    assert result.status == {
        "metadata": {}, "status": "Failure",
        "message": "command terminated with non-zero exit code: error executing command "
                   "[sh -c echo out; echo err >&2; exit 3], exit code 3",
        "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}


async def test_exec_stdin_until_closed(agent: Agent, pod: FakePod) -> None:
    result = await run_exec(agent, pod, ["sh", "-c", "cat; echo done"], stdin="1", stdout="1",
                            send=(b"\x00hello\n", b"\x00world\n", b"\xff\x00"))
    assert result.channel(1) == b"hello\nworld\ndone\n"
    assert result.status == {"metadata": {}, "status": "Success"}


async def test_exec_v4_success(agent: Agent, pod: FakePod) -> None:
    result = await run_exec(agent, pod, ["sh", "-c", "echo v4"], protocols=(V4,), stdout="true")
    assert result.protocol == V4
    assert result.channel(1) == b"v4\n"
    assert result.status == {"metadata": {}, "status": "Success"}


async def test_exec_tty_and_resize(agent: Agent, pod: FakePod) -> None:
    resize = b"\x04" + json.dumps({"Width": 101, "Height": 33}).encode()
    result = await run_exec(agent, pod, ["sh", "-c", "read line; stty size"], stdin="1", stdout="1", stderr="1",
                            tty="1", send=(resize, b"\x00go\r"))
    assert b"33 101" in result.channel(1)
    assert result.channel(2) == b""  # a terminal has one output stream
    assert result.status == {"metadata": {}, "status": "Success"}


async def test_exec_refusals(agent: Agent, pod: FakePod) -> None:
    base = f"{agent.url}/exec/{pod.namespace}/{pod.name}"
    async with agent.api_server() as s:
        assert await get_text(s, f"{base}/main", command="true", stdout="1") == (
            400, "this node serves exec only over WebSocket (v5.channel.k8s.io)")
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await s.ws_connect(f"{base}/nope", params={"command": "true", "stdout": "1"}, protocols=(V5,))
        assert err.value.status == 404
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await s.ws_connect(f"{base}/main", params={"command": "true"}, protocols=(V5,))
        assert err.value.status == 400


# ---- who may call --------------------------------------------------------------------------


async def test_only_the_api_server_certificate_is_let_in(agent: Agent, pod: FakePod) -> None:
    url = f"{agent.url}/containerLogs/{pod.namespace}/{pod.name}/{pod.container}"
    async with agent.session(None) as anonymous:
        assert await get_text(anonymous, url) == (401, "Unauthorized")
    node_cert = ensure_client_cert(agent.tmp / "node", agent.pki, cn="system:node:other", org="system:nodes")
    async with agent.session(node_cert) as other:
        assert await get_text(other, url) == (
            403, "Forbidden (user=system:node:other, verb=get, resource=nodes, subresource=proxy)")
    foreign = ensure_pki(agent.tmp / "foreign-ca", ["localhost"])
    async with agent.session(ensure_client_cert(agent.tmp / "foreign", foreign)) as stranger:
        with pytest.raises(aiohttp.ClientError):
            await get_text(stranger, url)


def test_parse_resize() -> None:
    assert parse_resize(b'{"Width":80,"Height":24}') == [(80, 24)]
    assert parse_resize(b'{"Width":80,"Height":24}\n{"Width":100,"Height":30}') == [(80, 24), (100, 30)]
    assert parse_resize(b'{"Width":0,"Height":24}') == []
    assert parse_resize(b"garbage") == []


def test_certificates_are_kept_until_something_changes(tmp_path: Path) -> None:
    cert, _ = ensure_serving_cert(tmp_path / "pki", "node-a", ["10.0.0.5"])
    first = cert.read_bytes()
    assert ensure_serving_cert(tmp_path / "pki", "node-a", ["10.0.0.5"])[0].read_bytes() == first
    assert ensure_serving_cert(tmp_path / "pki", "node-a", ["10.0.0.6"])[0].read_bytes() != first

    pki = ensure_pki(tmp_path / "ca", ["localhost"])
    client_cert, _ = ensure_client_cert(tmp_path / "client", pki)
    issued = client_cert.read_bytes()
    assert ensure_client_cert(tmp_path / "client", pki)[0].read_bytes() == issued
    other_ca = ensure_pki(tmp_path / "ca2", ["localhost"])  # same CA name, another key
    assert ensure_client_cert(tmp_path / "client", other_ca)[0].read_bytes() != issued
