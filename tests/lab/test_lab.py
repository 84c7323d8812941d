"""``skiff lab`` end to end, on the real host: namespaces, links, dockerds, the control plane.

Every lab here has a name of its own (``t`` + 4 random characters) and a state dir under a
fresh /tmp directory (short, because unix socket paths are limited to 107 bytes), so runs in
parallel never collide. Every lab is taken down in a ``finally``, even when a test fails.
Traffic goes only to addresses inside the lab the test made.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from node_agent.lab.controlplane import KubeApi, node_ready, skiff_command
from node_agent.lab.down import SHIM_SOCKET_DIR, socket_paths
from node_agent.lab.processes import mentions_path

docker = pytest.importorskip("docker")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, links, iptables, cgroups)"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("ip", "iptables", "nsenter", "dockerd", "gcc")),
                       reason="the lab needs ip, iptables, nsenter, dockerd and gcc"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="the lab needs busybox-static"),
]

UP_TIMEOUT = 150.0
DOWN_TIMEOUT = 90.0
READY_TIMEOUT = 60.0
NODES = 3


def agent_missing_reason() -> str | None:
    try:
        importlib.import_module("node_agent.main")
    except ImportError as exc:
        return f"skiff agent is not available yet: node_agent.main does not import ({exc})"
    return None


@dataclass
class Lab:
    name: str
    state_dir: Path
    outputs: list[str] = field(default_factory=list)
    before: dict[str, set[str]] = field(default_factory=dict)  # the host before `up`
    up_seconds: float = 0.0

    def skiff(self, *args: str, timeout: float = UP_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*skiff_command(), "lab", *args, "--name", self.name, "--state-dir", str(self.state_dir)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.outputs.append(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
        if check:
            assert proc.returncode == 0, f"skiff lab {' '.join(args)} exited {proc.returncode}:\n" \
                                         f"{proc.stdout}{proc.stderr}"
        return proc

    def up(self, nodes: int = NODES, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.skiff("up", "--nodes", str(nodes), "--wait", str(READY_TIMEOUT), *extra)

    def down(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.skiff("down", timeout=DOWN_TIMEOUT, check=check)

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "state.json").read_text()))

    def docker_host(self, i: int) -> str:
        return f"unix://{self.state_dir}/{self.name}-node-{i}/docker.sock"

    def api(self) -> KubeApi:
        return KubeApi.from_kubeconfig(self.state_dir / "kubeconfig")


@pytest.fixture(scope="module")
def lab_factory() -> Iterator[Callable[[], Lab]]:
    """Makes labs with unique names and state dirs; takes every one down afterwards."""
    labs: list[Lab] = []
    root = Path(tempfile.mkdtemp(prefix="skl-", dir="/tmp"))

    def make() -> Lab:
        name = "t" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
        lab = Lab(name, root / name)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            try:
                lab.down(check=False)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[], Lab]) -> Lab:
    """One three-node lab for the module, brought up before the first test that uses it."""
    lab = lab_factory()
    lab.before = snapshot(lab)
    start = time.monotonic()
    lab.up()
    lab.up_seconds = time.monotonic() - start
    return lab


# -- host snapshots --------------------------------------------------------------------------


def _lines(argv: list[str]) -> set[str]:
    return set(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines())


def snapshot(lab: Lab) -> dict[str, set[str]]:
    """What of the host a lab could leave behind, each item as a string."""
    links = {line.split(":")[1].strip().split("@")[0] for line in _lines(["ip", "-o", "link"])}
    with open("/proc/mounts") as f:
        mounts = set(f.read().splitlines())
    procs = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid != os.getpid() and mentions_path(p.info.get("cmdline") or [], lab.state_dir):
            procs.add(f"{p.pid} {' '.join(p.info['cmdline'])}")
    cgroups = {str(d) for d in Path("/sys/fs/cgroup").glob(f"*/skiff-{lab.name}-*")}
    chains = {line for line in _lines(["iptables", "-w", "10", "-S"]) if lab.name.upper() in line}
    return {"netns": _lines(["ip", "netns", "list"]), "links": links, "mounts": mounts, "processes": procs,
            "cgroups": cgroups, "iptables": chains}


def related(lab: Lab, item: str) -> bool:
    return bool(re.search(rf"skiff-{lab.name}\b|{re.escape(str(lab.state_dir))}|SKIFF-LAB-{lab.name.upper()}\b",
                          item))


def assert_host_as_before(lab: Lab, before: dict[str, set[str]]) -> None:
    """Nothing of the lab is left; other changes (parallel tests) are someone else's."""
    after = snapshot(lab)
    for kind in before:
        was = {x for x in before[kind] if related(lab, x)}
        now = {x for x in after[kind] if related(lab, x)}
        assert now == was, f"{kind} left behind by lab {lab.name}: {sorted(now - was)}"
    assert not after["processes"], f"processes still naming {lab.state_dir}: {after['processes']}"
    assert not after["cgroups"], f"cgroups left: {after['cgroups']}"


# -- a running lab -------------------------------------------------------------------------------


def test_up_creates_namespaces_engines_and_control_plane(lab: Lab) -> None:
    netns = _lines(["ip", "netns", "list"])
    for i in range(1, NODES + 1):
        assert any(line.split()[0] == f"skiff-{lab.name}-{i}" for line in netns), netns
        client = docker.APIClient(base_url=lab.docker_host(i), timeout=10)
        try:
            assert client.ping()
            for image in ("skiff/pause:1.0", "skiff/app:1.0"):
                assert client.inspect_image(image)["Id"].startswith("sha256:")
        finally:
            client.close()
    assert lab.api().ready()
    kubeconfig = lab.skiff("kubeconfig").stdout.strip()
    assert kubeconfig == str(lab.state_dir / "kubeconfig")
    print(f"\nlab up with {NODES} nodes took {lab.up_seconds:.1f}s")


def test_nodes_reach_each_other_and_the_host_over_the_lab_bridge(lab: Lab) -> None:
    state = lab.state()
    node_ips = [n["ip"].split("/")[0] for n in state["nodes"]]
    bridge_ip = re.sub(r"\.\d+$", ".1", node_ips[0])
    for target in (node_ips[1], bridge_ip):
        proc = subprocess.run(["ip", "netns", "exec", f"skiff-{lab.name}-1", "busybox", "ping", "-c", "1", "-W", "2",
                               target], capture_output=True, text=True, timeout=10)
        assert proc.returncode == 0, f"node 1 cannot reach {target}: {proc.stdout}{proc.stderr}"


def test_up_again_keeps_what_runs(lab: Lab) -> None:
    before = lab.state()
    lab.up()
    after = lab.state()
    assert [n["dockerd"]["pid"] for n in after["nodes"]] == [n["dockerd"]["pid"] for n in before["nodes"]]
    assert after["server"]["pid"] == before["server"]["pid"]
    assert after["subnet_index"] == before["subnet_index"]


def test_up_repairs_a_killed_dockerd(lab: Lab) -> None:
    record = lab.state()["nodes"][1]["dockerd"]
    os.kill(record["pid"], signal.SIGKILL)
    lab.up()
    new = lab.state()["nodes"][1]["dockerd"]
    assert new["pid"] != record["pid"]
    client = docker.APIClient(base_url=lab.docker_host(2), timeout=10)
    try:
        assert client.ping()
    finally:
        client.close()


def test_status_reports_every_node(lab: Lab) -> None:
    proc = lab.skiff("status", check=False)
    for i in range(1, NODES + 1):
        assert f"{lab.name}-node-{i}" in proc.stdout
    if agent_missing_reason() is None:
        assert proc.returncode == 0, proc.stdout


def test_image_load_copies_a_host_image_into_every_node(lab: Lab) -> None:
    from node_agent.images.build import app_image_spec, ensure_image

    try:
        host = docker.from_env()
        host.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker Engine on the host to load from: {exc}")
    tag = f"skiff/app:load-{lab.name}"
    try:
        ensure_image(host, app_image_spec().with_tag(tag))
        proc = subprocess.run([sys.executable, "-m", "node_agent.images.main", "load", tag, "--lab", lab.name,
                               "--state-dir", str(lab.state_dir)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        host_id = host.api.inspect_image(tag)["Id"]
        for i in range(1, NODES + 1):
            client = docker.APIClient(base_url=lab.docker_host(i), timeout=10)
            try:
                assert client.inspect_image(tag)["Id"] == host_id
            finally:
                client.close()
    finally:
        try:
            host.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
        host.close()


def test_a_pod_pinned_to_each_node_runs(lab: Lab) -> None:
    reason = agent_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    api = lab.api()
    names = [f"{lab.name}-node-{i}" for i in range(1, NODES + 1)]
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(n["metadata"]["name"] in names and node_ready(n) for n in api.nodes()) or \
            len([n for n in api.nodes() if n["metadata"]["name"] in names]) < NODES:
        assert time.monotonic() < deadline, f"nodes not Ready: {api.nodes()}"
        time.sleep(0.5)
    for node in names:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pinned-{node}"},
               "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "main", "image": "skiff/app:1.0", "imagePullPolicy": "Never",
                                        "command": ["sleep", "3600"]}]}}
        status, body = api.request("POST", "/api/v1/namespaces/default/pods", pod)
        assert status == 201, body
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        status, body = api.request("GET", "/api/v1/namespaces/default/pods")
        phases = {p["metadata"]["name"]: (p.get("status") or {}).get("phase") for p in body["items"]}
        if all(phases.get(f"pinned-{node}") == "Running" for node in names):
            break
        assert time.monotonic() < deadline, f"pods not Running: {phases}"
        time.sleep(0.5)


# -- teardown ----------------------------------------------------------------------------------


def test_down_after_kill_9_of_every_lab_process(lab: Lab, lab_factory: Callable[[], Lab]) -> None:
    """A crashed lab (dockerd, containerd, server, agents killed -9; shims and containers left running;
    its state file lost) is still removed completely, from its name alone. It runs beside ``lab``, which
    must have another subnet."""
    crashed = lab_factory()
    before = snapshot(crashed)
    crashed.up(2)
    assert crashed.state()["subnet_index"] != lab.state()["subnet_index"]
    client = docker.APIClient(base_url=crashed.docker_host(1), timeout=30)
    try:
        pause = client.create_container("skiff/pause:1.0", host_config=client.create_host_config(network_mode="none"))
        client.start(pause["Id"])
        app = client.create_container("skiff/app:1.0", command=["sleep", "3600"],
                                      host_config=client.create_host_config(network_mode=f"container:{pause['Id']}"))
        client.start(app["Id"])
    finally:
        client.close()
    state = crashed.state()
    pids = [state["server"]["pid"]] + [n[k]["pid"] for n in state["nodes"] for k in ("dockerd", "agent") if n.get(k)]
    containerds = [p.pid for p in psutil.process_iter(["cmdline"])
                   if (p.info.get("cmdline") or [""])[0] == "containerd"
                   and mentions_path(p.info["cmdline"], crashed.state_dir)]
    for pid in pids + containerds:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shims = [p for p in psutil.process_iter(["cmdline"]) if "containerd-shim" in " ".join(p.info.get("cmdline") or [])
             and mentions_path(p.info["cmdline"], crashed.state_dir)]
    assert shims, "the containers' shims should outlive their dockerd"
    sockets = set().union(*(socket_paths(p.pid, SHIM_SOCKET_DIR) for p in shims))
    assert sockets, "the shims should listen on sockets in /run/containerd/s"
    (crashed.state_dir / "state.json").unlink()
    start = time.monotonic()
    crashed.down()
    print(f"\nlab down after kill -9 took {time.monotonic() - start:.1f}s")
    assert_host_as_before(crashed, before)
    assert not [path for path in sockets if os.path.exists(path)], "shim sockets left in /run/containerd/s"
    crashed.down()  # idempotent


def test_down_leaves_the_host_as_it_was(lab: Lab) -> None:
    start = time.monotonic()
    lab.down()
    print(f"\nlab down took {time.monotonic() - start:.1f}s")
    assert_host_as_before(lab, lab.before)
    assert not lab.state_dir.exists()
    proc = lab.down()  # idempotent
    assert "is down" in proc.stderr
