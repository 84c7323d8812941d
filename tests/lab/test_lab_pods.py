"""Issue 3's robustness acceptance, in a real lab: pods survive a killed agent and a restarted dockerd.

One three-node lab for the module (a name of its own, ``p`` + 4 random characters, and a state
dir under a fresh /tmp directory), taken down in a ``finally`` even when a test fails. The
tests read what is real: the containers on a node's own dockerd, the files in the node's
host-local IPAM directory, and the pods through the API. They wait on conditions with a
deadline, never for a fixed time.

- Pods on different nodes get addresses from their own node's pod CIDR.
- ``kill -9`` of an agent, then ``skiff lab up`` (which restarts a dead agent): every container
  keeps running (same IDs, same start times), restart counts unchanged, the pods still Ready.
- A node's dockerd stopped (SIGTERM: it stops every container, as ``systemctl restart docker``
  does) and started again by ``skiff lab up``: each pod follows its restartPolicy, as kubelet
  does (``computePodActions``): Always and OnFailure pods get a new sandbox and their
  container again (restartCount incremented); a Never pod gets no new sandbox and ends Failed.
  Afterwards the node runs only containers of live pods, and its IPAM directory holds exactly
  the addresses of the running pods, each reserved by the pod's current pause container.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from node_agent.lab.controlplane import KubeApi, node_ready, skiff_command
from node_agent.lab.dockerd import stop_dockerd
from node_agent.lab.processes import is_alive
from node_agent.lab.state import ProcessRecord

docker = pytest.importorskip("docker")


def _agent_missing() -> str | None:
    try:
        importlib.import_module("node_agent.main")
    except ImportError as exc:
        return f"skiff agent is not available: {exc}"
    return None


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, links, iptables, cgroups)"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("ip", "iptables", "nsenter", "dockerd", "gcc")),
                       reason="the lab needs ip, iptables, nsenter, dockerd and gcc"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="the lab needs busybox-static"),
    pytest.mark.skipif(_agent_missing() is not None, reason=str(_agent_missing())),
]

NODES = 3
UP_TIMEOUT = 150.0
DOWN_TIMEOUT = 90.0
READY_TIMEOUT = 60.0  # nodes Ready, pods Running
SETTLE_TIMEOUT = 60.0  # the agent converging after a restart
POLL = 0.2
NAMESPACE = "default"
# Exits at once on SIGTERM, non-zero like a process killed by it, so that dockerd's shutdown is quick
# and restartPolicy OnFailure restarts it. (A plain `sleep` as PID 1 ignores SIGTERM.)
APP_COMMAND = ["sh", "-c", "trap 'exit 143' TERM; sleep 3600 & wait"]
IPAM_BOOKKEEPING = ("lock", "last_reserved_ip")

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout: float, what: Callable[[], str]) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what()`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f}s: {what()}")
        time.sleep(POLL)


# -- the lab -----------------------------------------------------------------------------------


@dataclass
class Lab:
    name: str
    state_dir: Path

    def skiff(self, *args: str, timeout: float = UP_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*skiff_command(), "lab", *args, "--name", self.name, "--state-dir", str(self.state_dir)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if check:
            assert proc.returncode == 0, f"skiff lab {' '.join(args)} exited {proc.returncode}:\n" \
                                         f"{proc.stdout}{proc.stderr}"
        return proc

    def up(self, *extra: str) -> None:
        self.skiff("up", "--wait", str(READY_TIMEOUT), *extra)

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "state.json").read_text()))

    def node(self, i: int) -> dict[str, Any]:
        return dict(next(n for n in self.state()["nodes"] if n["index"] == i))

    def node_name(self, i: int) -> str:
        return f"{self.name}-node-{i}"

    def api(self) -> KubeApi:
        return KubeApi.from_kubeconfig(self.state_dir / "kubeconfig")

    def docker(self, i: int) -> Any:
        return docker.APIClient(base_url=self.node(i)["docker_host"], timeout=30)

    def agent_log(self, i: int, lines: int = 40) -> str:
        path = self.state_dir / self.node_name(i) / "agent.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="skp-", dir="/tmp"))
    name = "p" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    lab = Lab(name, root / name)
    try:
        lab.up("--nodes", str(NODES))
        api = lab.api()
        names = {lab.node_name(i) for i in range(1, NODES + 1)}
        wait_until(lambda: names <= {n["metadata"]["name"] for n in api.nodes() if node_ready(n)}, READY_TIMEOUT,
                   lambda: f"nodes not Ready: {[n['metadata']['name'] for n in api.nodes() if not node_ready(n)]}")
        yield lab
    finally:
        try:
            lab.skiff("down", timeout=DOWN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(root, ignore_errors=True)


# -- pods ----------------------------------------------------------------------------------------


def pod_manifest(name: str, node: str, restart_policy: str = "Always", readiness: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "skiff/app:1.0", "imagePullPolicy": "Never",
                                 "command": APP_COMMAND}
    if readiness:
        container["readinessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    # The node goes NotReady while its dockerd or agent is down, and the lab's node
    # lifecycle controller would evict these bare pods after 5 s: they tolerate it, as
    # these tests are about the agent bringing them back, not about eviction.
    tolerations = [{"key": key, "operator": "Exists", "effect": "NoExecute"}
                   for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "restartPolicy": restart_policy, "terminationGracePeriodSeconds": 2,
                     "tolerations": tolerations, "containers": [container]}}


def create_pod(api: KubeApi, manifest: dict[str, Any]) -> None:
    status, body = api.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", manifest)
    assert status == 201, body


def get_pod(api: KubeApi, name: str) -> dict[str, Any]:
    status, body = api.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
    assert status == 200, body
    return dict(body)


def list_pods(api: KubeApi) -> list[dict[str, Any]]:
    status, body = api.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
    assert status == 200, body
    return list(body["items"])


def phase(pod: dict[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("phase")


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def container_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    assert len(statuses) == 1, f"{pod['metadata']['name']}: containerStatuses {statuses}"
    return dict(statuses[0])


def brief(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    return json.dumps({"name": pod["metadata"]["name"], "phase": status.get("phase"), "podIP": status.get("podIP"),
                       "conditions": [(c.get("type"), c.get("status")) for c in status.get("conditions") or []],
                       "containerStatuses": status.get("containerStatuses")})


def wait_running_ready(lab: Lab, names: list[str], node: int, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    api = lab.api()

    def check() -> dict[str, Any] | None:
        pods = {n: get_pod(api, n) for n in names}
        return pods if all(phase(p) == "Running" and is_ready(p) for p in pods.values()) else None

    return wait_until(check, timeout, lambda: "pods not Running and Ready: "
                      + "; ".join(brief(get_pod(api, n)) for n in names) + f"\nagent log:\n{lab.agent_log(node)}")


# -- what is on a node ------------------------------------------------------------------------------


def node_containers(lab: Lab, i: int) -> list[dict[str, Any]]:
    """Every container on the node's dockerd (``docker ps -a``), with its labels."""
    client = lab.docker(i)
    try:
        return list(client.containers(all=True))
    finally:
        client.close()


def inspect(lab: Lab, i: int, container_id: str) -> dict[str, Any]:
    client = lab.docker(i)
    try:
        return dict(client.inspect_container(container_id))
    finally:
        client.close()


def ipam_dir(lab: Lab, i: int) -> Path:
    """``<dataDir>/<network>`` of the node's conflist: where host-local keeps one file per address."""
    conflist = next((lab.state_dir / lab.node_name(i) / "cni" / "net.d").glob("*.conflist"))
    config = json.loads(conflist.read_text())
    return Path(config["plugins"][0]["ipam"]["dataDir"]) / config["name"]


def reserved_ips(lab: Lab, i: int) -> dict[str, str]:
    """address -> the container ID that reserved it (the file's first line)."""
    found = {}
    for path in ipam_dir(lab, i).iterdir():
        if not path.name.startswith(IPAM_BOOKKEEPING):
            found[path.name] = path.read_text().splitlines()[0].strip()
    return found


def running_sandboxes(lab: Lab, i: int) -> dict[str, str]:
    """pod uid -> ID of its running pause container."""
    return {c["Labels"]["io.kubernetes.pod.uid"]: c["Id"] for c in node_containers(lab, i)
            if c["State"] == "running" and c["Labels"].get("io.skiff.container.type") == "pause"}


# -- tests ---------------------------------------------------------------------------------------


def test_pods_on_different_nodes_get_ips_from_their_nodes_pod_cidr(lab: Lab) -> None:
    api = lab.api()
    names = {i: f"cidr-{i}" for i in range(1, NODES + 1)}
    for i, name in names.items():
        create_pod(api, pod_manifest(name, lab.node_name(i)))
    ips = {}
    for i, name in names.items():
        pod = wait_running_ready(lab, [name], i)[name]
        node = lab.node(i)
        ip = ipaddress.IPv4Address(pod["status"]["podIP"])
        assert ip in ipaddress.IPv4Network(node["pod_cidr"]), f"{name} on node {i}: {ip} not in {node['pod_cidr']}"
        assert pod["status"]["podIPs"] == [{"ip": str(ip)}]
        assert pod["status"]["hostIP"] == node["ip"].split("/")[0]
        assert reserved_ips(lab, i)[str(ip)] == running_sandboxes(lab, i)[pod["metadata"]["uid"]]
        ips[i] = ip
    assert len(set(ips.values())) == NODES


def test_kill_9_of_an_agent_keeps_every_container_running(lab: Lab) -> None:
    i = 1
    api = lab.api()
    names = ["adopt-plain", "adopt-probed"]
    create_pod(api, pod_manifest(names[0], lab.node_name(i)))
    create_pod(api, pod_manifest(names[1], lab.node_name(i), readiness=True))
    before = wait_running_ready(lab, names, i)
    uids = {p["metadata"]["uid"] for p in before.values()}
    containers_before = {c["Id"]: inspect(lab, i, c["Id"])["State"]["StartedAt"] for c in node_containers(lab, i)
                         if c["Labels"].get("io.kubernetes.pod.uid") in uids}
    assert len(containers_before) == 2 * len(names)  # a pause and an app container each
    statuses_before = {n: container_status(p) for n, p in before.items()}

    ips_before = reserved_ips(lab, i)
    agent = lab.node(i)["agent"]
    os.kill(agent["pid"], signal.SIGKILL)
    wait_until(lambda: not is_alive(ProcessRecord(**agent)), 10,
               lambda: f"agent pid {agent['pid']} still alive after SIGKILL")
    lab.up()  # restarts the dead agent, leaves everything else as it is
    assert lab.node(i)["agent"]["pid"] != agent["pid"]

    # A new pod on the node running shows the new agent has listed its pods and is syncing them.
    create_pod(api, pod_manifest("adopt-marker", lab.node_name(i)))
    wait_running_ready(lab, ["adopt-marker"], i)
    after = wait_running_ready(lab, names, i, SETTLE_TIMEOUT)

    containers_after = {c["Id"]: inspect(lab, i, c["Id"])["State"]["StartedAt"] for c in node_containers(lab, i)
                        if c["Labels"].get("io.kubernetes.pod.uid") in uids}
    assert containers_after == containers_before, "containers were replaced or restarted by the agent's restart"
    for c in containers_after:
        assert inspect(lab, i, c)["State"]["Running"], f"container {c[:12]} is not running"
    for name, pod in after.items():
        status = container_status(pod)
        old = statuses_before[name]
        assert status["restartCount"] == old["restartCount"] == 0, brief(pod)
        assert status["containerID"] == old["containerID"], brief(pod)
        assert status["ready"] is True and status["started"] is True, brief(pod)
        assert status["state"] == old["state"], brief(pod)  # running, with the same startedAt
        assert pod["status"]["podIP"] == before[name]["status"]["podIP"]
    assert {ip: cid for ip, cid in reserved_ips(lab, i).items() if ip in ips_before} == ips_before


def test_dockerd_restart_brings_pods_back_per_restart_policy(lab: Lab) -> None:
    i = 2
    api = lab.api()
    policies = {"restart-always": "Always", "restart-onfailure": "OnFailure", "restart-never": "Never"}
    for name, policy in policies.items():
        create_pod(api, pod_manifest(name, lab.node_name(i), policy))
    before = wait_running_ready(lab, list(policies), i)
    old_sandboxes = running_sandboxes(lab, i)

    record = lab.node(i)["dockerd"]
    stop_dockerd(ProcessRecord(**record))  # SIGTERM: dockerd stops its containers, then exits
    assert not is_alive(ProcessRecord(**record)), "dockerd did not exit"
    lab.up()  # starts the node's dockerd again
    assert lab.node(i)["dockerd"]["pid"] != record["pid"]

    restarted = [n for n, p in policies.items() if p != "Never"]

    def back() -> dict[str, dict[str, Any]] | None:
        """The restarted pods once their status shows a new container running, and Ready."""
        pods = {n: get_pod(api, n) for n in restarted}
        for name, pod in pods.items():
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            old = container_status(before[name])
            if not (phase(pod) == "Running" and is_ready(pod) and len(statuses) == 1
                    and statuses[0]["containerID"] != old["containerID"] and "running" in statuses[0]["state"]):
                return None
        return pods

    after = wait_until(back, SETTLE_TIMEOUT, lambda: "pods not back: "
                       + "; ".join(brief(get_pod(api, n)) for n in restarted) + f"\nagent log:\n{lab.agent_log(i)}")
    for name in restarted:
        pod = after[name]
        status = container_status(pod)
        assert status["restartCount"] >= container_status(before[name])["restartCount"] + 1, brief(pod)
        assert status["ready"] is True, brief(pod)
        assert ipaddress.IPv4Address(pod["status"]["podIP"]) in ipaddress.IPv4Network(lab.node(i)["pod_cidr"])

    def never_failed() -> dict[str, Any] | None:
        pod = get_pod(api, "restart-never")
        return pod if phase(pod) == "Failed" else None

    never = wait_until(never_failed, SETTLE_TIMEOUT,
                       lambda: f"the Never pod is not Failed: {brief(get_pod(api, 'restart-never'))}"
                               f"\nagent log:\n{lab.agent_log(i)}")
    status = container_status(never)
    assert status["restartCount"] == 0, brief(never)
    assert status["state"]["terminated"]["exitCode"] != 0, brief(never)
    assert not is_ready(never), brief(never)

    new_sandboxes = running_sandboxes(lab, i)
    for name in restarted:
        uid = after[name]["metadata"]["uid"]
        assert new_sandboxes.get(uid) not in (None, old_sandboxes[uid]), f"{name} has no new sandbox"

    def problems() -> list[str]:
        """Why the node is not (yet) running exactly its live pods' containers and holding their IPs."""
        pods = {p["metadata"]["uid"]: p for p in list_pods(api) if p["spec"].get("nodeName") == lab.node_name(i)}
        containers = node_containers(lab, i)
        found = [f"orphan container {c['Names'][0]}" for c in containers
                 if c["Labels"].get("io.kubernetes.pod.uid") not in pods]
        for uid, pod in pods.items():
            running = sorted(c["Labels"].get("io.skiff.container.type", "?") for c in containers
                             if c["State"] == "running" and c["Labels"].get("io.kubernetes.pod.uid") == uid)
            want = ["app", "pause"] if phase(pod) == "Running" else []
            if running != want:
                found.append(f"{pod['metadata']['name']} ({phase(pod)}) runs {running}, not {want}")
        sandboxes = running_sandboxes(lab, i)
        want_ips = {p["status"].get("podIP"): sandboxes.get(uid) for uid, p in pods.items() if phase(p) == "Running"}
        reserved = reserved_ips(lab, i)
        if reserved != want_ips:
            found.append(f"IPAM holds {reserved}, the running pods' pause containers {want_ips}")
        return found

    last: list[str] = []

    def converged() -> bool:
        last[:] = problems()
        return not last

    wait_until(converged, SETTLE_TIMEOUT, lambda: "the node did not converge: " + "; ".join(last)
               + f"\nagent log:\n{lab.agent_log(i)}")
