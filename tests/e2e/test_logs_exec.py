"""``kubectl logs`` / ``kubectl exec`` (1.35) and the official Python client through the API
server to a node agent's HTTPS API, on the host's dockerd.

No agent process runs here: the test registers a Node that points at a node API server
(``node_agent.server``) started in a thread, creates a pod bound to that node, reports its
status, and runs the pod's container in Docker with the agent's labels itself.
"""

from __future__ import annotations

import asyncio
import datetime
import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import tarfile
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import pytest
from aiohttp import web
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.stream import stream

from node_agent.server import start_agent_server

if TYPE_CHECKING:
    from tests.conftest import ApiServer
    from tests.e2e.conftest import Kubectl

BUSYBOX = Path("/bin/busybox")
APP_IMAGE = "skiff/app:1.0"
TIMEOUT = 30.0
MAIN_SCRIPT = "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three; exec sleep 3600"


def wait_for(predicate: Any, what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return result


# ---- Docker ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_api() -> Iterator[docker.APIClient]:
    try:
        api = docker.APIClient(timeout=60)
        api.ping()
    except docker.errors.DockerException as e:
        if os.environ.get("CI"):
            pytest.fail(f"dockerd is not reachable: {e}")
        pytest.skip(f"dockerd is not reachable: {e}")
    try:
        yield api
    finally:
        api.close()


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
def image(docker_api: docker.APIClient) -> Iterator[str]:
    """``skiff/app:1.0`` when built already, else busybox imported under a unique tag."""
    if docker_api.images(name=APP_IMAGE):
        yield APP_IMAGE
        return
    if not BUSYBOX.exists():
        pytest.skip("no /bin/busybox (busybox-static) to build a test image from")
    tag = f"skiff-test/busybox:{uuid.uuid4().hex[:8]}"
    repository, version = tag.split(":")
    docker_api.import_image_from_data(busybox_rootfs(), repository=repository, tag=version)
    try:
        yield tag
    finally:
        docker_api.remove_image(tag, force=True)


# ---- a node API server in a thread, and its Node ---------------------------------------------


@dataclass
class AgentSettings:
    data_dir: Path
    node_name: str
    listen_address: str = "127.0.0.1"
    listen_port: int = 0
    node_ip: str = "127.0.0.1"


class AgentThread:
    """``start_agent_server`` on an event loop of its own, so sync tests can use it."""

    def __init__(self, settings: AgentSettings, ca_pem: bytes):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="node-api", daemon=True)
        self.thread.start()
        self.docker = docker.APIClient(timeout=60)
        self.runner: web.AppRunner = asyncio.run_coroutine_threadsafe(
            start_agent_server(settings, self.docker, ca_pem), self.loop).result(TIMEOUT)
        self.port = int(self.runner.addresses[0][1])

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()
        self.docker.close()


@pytest.fixture
def node(api_server: ApiServer, tmp_path: Path) -> Iterator[str]:
    """A Node whose agent endpoint is a node API server on 127.0.0.1."""
    name = f"logs-exec-{uuid.uuid4().hex[:8]}"
    agent = AgentThread(AgentSettings(tmp_path / "agent", name), api_server.ca_pem)
    try:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
        resp = api_server.post("/api/v1/nodes", body)
        assert resp.status == 201, resp
        node = resp.json()
        node["status"] = {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                        {"type": "Hostname", "address": name}],
                          "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.port}}}
        resp = api_server.request("PUT", f"/api/v1/nodes/{name}/status", node)
        assert resp.status == 200, resp
        yield name
    finally:
        api_server.delete(f"/api/v1/nodes/{name}")
        agent.stop()


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str
    container_ids: list[str]


class Pods:
    """Pods bound to the test node, with their containers run by the test as the agent would."""

    def __init__(self, api_server: ApiServer, docker_api: docker.APIClient, image: str, namespace: str, node: str):
        self.api_server, self.docker, self.image, self.namespace, self.node = (
            api_server, docker_api, image, namespace, node)
        self.created: list[Pod] = []

    def create(self, name: str, containers: dict[str, str], *, run: bool = True) -> Pod:
        spec = {"nodeName": self.node, "containers": [{"name": c, "image": self.image} for c in containers]}
        resp = self.api_server.post(f"/api/v1/namespaces/{self.namespace}/pods",
                                    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
        assert resp.status == 201, resp
        obj = resp.json()
        pod = Pod(self.namespace, name, obj["metadata"]["uid"], [])
        self.created.append(pod)
        if not run:
            return pod
        statuses = []
        for container, script in containers.items():
            cid = self._run(pod, container, script)
            pod.container_ids.append(cid)
            started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            statuses.append({"name": container, "ready": True, "restartCount": 0, "started": True,
                             "image": self.image, "imageID": "", "containerID": f"docker://{cid}",
                             "state": {"running": {"startedAt": started}}, "lastState": {}})
        obj["status"] = {"phase": "Running", "hostIP": "127.0.0.1", "containerStatuses": statuses}
        resp = self.api_server.request("PUT", f"/api/v1/namespaces/{self.namespace}/pods/{name}/status", obj)
        assert resp.status == 200, resp
        return pod

    def _run(self, pod: Pod, container: str, script: str) -> str:
        labels = {"io.kubernetes.pod.uid": pod.uid, "io.kubernetes.pod.namespace": pod.namespace,
                  "io.kubernetes.pod.name": pod.name, "io.kubernetes.container.name": container,
                  "io.kubernetes.container.restartCount": "0", "io.skiff.container.type": "app",
                  "io.skiff.managed": "true"}
        created = self.docker.create_container(
            self.image, ["sh", "-c", script], labels=labels,
            name=f"k8s_{container}_{pod.name}_{pod.namespace}_{pod.uid}_0",
            host_config=self.docker.create_host_config(network_mode="none",
                                                       log_config={"type": "json-file", "config": {}}))
        cid = str(created["Id"])
        pod.container_ids.append(cid)  # removed in cleanup even if starting fails
        self.docker.start(cid)
        pod.container_ids.remove(cid)
        return cid

    def write_to_stdout(self, pod: Pod, line: str) -> None:
        """A line in the container's log, written by another process into PID 1's stdout."""
        exec_id = self.docker.exec_create(pod.container_ids[0], ["sh", "-c", f"echo {line} > /proc/1/fd/1"])["Id"]
        self.docker.exec_start(exec_id)

    def cleanup(self) -> None:
        for pod in self.created:
            for cid in pod.container_ids:
                self.docker.remove_container(cid, force=True)
            self.api_server.delete(f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}?gracePeriodSeconds=0")


@pytest.fixture
def pods(api_server: ApiServer, docker_api: docker.APIClient, image: str, namespace: str,
         node: str) -> Iterator[Pods]:
    p = Pods(api_server, docker_api, image, namespace, node)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def web_pod(pods: Pods, docker_api: docker.APIClient) -> Pod:
    pod = pods.create("web", {"main": MAIN_SCRIPT})
    wait_for(lambda: b"three" in docker_api.logs(pod.container_ids[0]), "the container's first lines")
    return pod


# ---- kubectl 1.35 -----------------------------------------------------------------------------


def test_kubectl_logs(kubectl135: Kubectl, web_pod: Pod) -> None:
    ns = web_pod.namespace
    assert kubectl135.ok("logs", "web", "-n", ns) == "one\ntwo\nthree\n"
    assert kubectl135.ok("logs", "pod/web", "-n", ns, "--tail=1") == "three\n"
    assert kubectl135.ok("logs", "web", "-n", ns, "-c", "main", "--limit-bytes=4") == "one\n"
    stamped = kubectl135.ok("logs", "web", "-n", ns, "--timestamps").splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["one", "two", "three"]


def test_kubectl_logs_follow(kubectl135: Kubectl, pods: Pods, web_pod: Pod) -> None:
    follower = kubectl135.start("logs", "-f", "web", "-n", web_pod.namespace)
    follower.wait_for_line(lambda line: line == "three", what="the existing lines")
    pods.write_to_stdout(web_pod, "later")
    follower.wait_for_line(lambda line: line == "later", what="a line written after kubectl started following")
    assert follower.proc.poll() is None, follower.describe()
    follower.stop()
    # kubectl gone: the API server drops its stream to the agent, and the agent its Docker stream.
    wait_for(lambda: not stream_threads("logs-"), "the agent's log stream thread to end")


def stream_threads(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def test_kubectl_exec_exit_code(kubectl135: Kubectl, web_pod: Pod) -> None:
    result = kubectl135("exec", "web", "-n", web_pod.namespace, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert result.returncode == 3, result
    assert result.stdout == "hi\n"
    assert "oops" in result.stderr
    assert "command terminated with exit code 3" in result.stderr
    assert kubectl135.ok("exec", "web", "-n", web_pod.namespace, "-c", "main", "--", "echo", "ok") == "ok\n"
    wait_for(lambda: not stream_threads("exec-"), "the agent's exec threads to end")


def test_kubectl_exec_stdin(kubectl135: Kubectl, web_pod: Pod) -> None:
    out = kubectl135.ok("exec", "-i", "web", "-n", web_pod.namespace, "--", "sh", "-c", "cat; echo done",
                        input="hello\nworld\n")
    assert out == "hello\nworld\ndone\n"


def test_kubectl_exec_tty_gets_the_terminal_size(kubectl135: Kubectl, web_pod: Pod) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 37, 111, 0, 0))  # rows, columns
    # A Docker exec's terminal starts at 0x0, where busybox's `stty size` prints nothing to
    # stdout (only an error, and exits 0): wait for kubectl's resize, then report the size.
    script = 'while [ -z "$(stty size 2>/dev/null)" ]; do sleep 0.05; done; stty size'
    proc = subprocess.Popen(kubectl135.argv("exec", "-it", "web", "-n", web_pod.namespace, "--", "sh", "-c",
                                            script),
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=kubectl135.env, close_fds=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + TIMEOUT
        while b"37 111" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        assert b"37 111" in seen, seen
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_kubectl_errors(kubectl135: Kubectl, kubectl120: Kubectl, pods: Pods, api_server: ApiServer,
                        namespace: str) -> None:
    pods.create("pending", {"main": ""}, run=False)
    result = kubectl135("logs", "pending", "-n", namespace)
    assert result.returncode != 0
    assert 'container "main" in pod "pending" is waiting to start: ContainerCreating' in result.stderr

    pods.create("two", {"a": MAIN_SCRIPT, "b": MAIN_SCRIPT})
    resp = api_server.get(f"/api/v1/namespaces/{namespace}/pods/two/log")
    assert resp.status == 400, resp
    assert resp.json()["message"] == "a container name must be specified for pod two, choose one of: [a b]"
    resp = api_server.get(f"/api/v1/namespaces/{namespace}/pods/two/log?container=c")
    assert (resp.status, resp.json()["message"]) == (400, "container c is not valid for pod two")

    # kubectl 1.20 speaks SPDY only: told plainly that exec needs a WebSocket.
    result = kubectl120("exec", "two", "-c", "a", "-n", namespace, "--", "true")
    assert result.returncode != 0
    assert "WebSocket" in result.stderr, result.stderr


# ---- the Python client ---------------------------------------------------------------------


@pytest.fixture
def core(api_server: ApiServer) -> Iterator[Any]:
    api = k8s_config.new_client_from_config(config_file=str(api_server.kubeconfig))
    try:
        yield k8s_client.CoreV1Api(api)
    finally:
        api.close()


def test_python_client_logs_and_exec(core: Any, pods: Pods, web_pod: Pod) -> None:
    ns = web_pod.namespace
    assert core.read_namespaced_pod_log("web", ns) == "one\ntwo\nthree\n"
    assert core.read_namespaced_pod_log("web", ns, tail_lines=1) == "three\n"

    out = stream(core.connect_get_namespaced_pod_exec, "web", ns, command=["sh", "-c", "echo hi"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "hi\n"

    resp = stream(core.connect_get_namespaced_pod_exec, "web", ns, command=["sh", "-c", "echo hi; exit 3"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=TIMEOUT)
    assert resp.read_stdout() == "hi\n"
    assert resp.returncode == 3

    resp = stream(core.connect_get_namespaced_pod_exec, "web", ns, command=["sh", "-c", "cat; echo done"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    assert resp.subprotocol == "v5.channel.k8s.io"
    resp.write_stdin("hello\n")
    resp.close_channel(0)
    resp.run_forever(timeout=TIMEOUT)
    assert resp.read_stdout() == "hello\ndone\n"
    assert resp.returncode == 0


def test_python_client_follow(core: Any, pods: Pods, web_pod: Pod) -> None:
    resp = core.read_namespaced_pod_log("web", web_pod.namespace, follow=True, _preload_content=False,
                                        _request_timeout=TIMEOUT)
    try:
        seen = b""
        chunks = resp.stream(amt=None, decode_content=False)
        while b"three\n" not in seen:
            seen += next(chunks)
        pods.write_to_stdout(web_pod, "later")
        while b"later\n" not in seen:
            seen += next(chunks)
        assert seen == b"one\ntwo\nthree\nlater\n"
    finally:
        resp.release_conn()

