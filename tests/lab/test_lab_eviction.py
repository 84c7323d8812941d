"""Issue 6's node-pressure eviction acceptance, in a real two-node lab.

The lab's nodes are small on purpose: 1Gi of memory (advertised by the agent, and the
limit of the node's cgroup), at most 400 tasks, and a 3Gi filesystem of their own for the
agent and Docker (``--node-disk``). Their agents run with
``--eviction-hard=memory.available<600Mi,pid.available<150,...`` (pressure once the pods'
working set passes 424Mi, or 250 tasks), the lab's short eviction timings (a pass every 2 s,
pressure conditions clear 10 s after the threshold was last met) and memcg threshold
notifications, so a memory shortage is acted on as soon as the kernel sees it.

- Memory: a BestEffort hog (awk holding 450Mi), a Burstable and a Guaranteed pod on node 1;
  the hog is evicted (phase Failed, reason Evicted, kubelet's message, exactly one Evicted
  event), MemoryPressure and its NoSchedule taint come and go, the other two are untouched.
- ``skiff lab chaos memory-pressure`` on node 1: every replica of a Deployment there is
  evicted and replaced on node 2; ``relieve`` ends it and the pressure clears.
- Disk: an emptyDir over its sizeLimit evicts its pod; ``chaos disk-pressure`` on node 2
  sets DiskPressure and its pods move to node 1; ``relieve`` loads back the images the
  image GC took and the cluster converges.
- PIDs: a fork bomb is stopped by the node's task limit and evicted under PIDPressure.
- A container over its memory limit shows OOMKilled.

Run with ``-s`` to see the measured times.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import string
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_agent.lab.controlplane import KubeApi, node_ready
from tests.lab.labutil import (
    DOWN_TIMEOUT,
    LAB_SKIPS,
    READY_TIMEOUT,
    Lab,
    Obj,
    Stopwatch,
    api_delete,
    api_get,
    api_items,
    api_write,
    condition,
    is_ready,
    phase,
    wait_until,
)

pytestmark = LAB_SKIPS

NS = "default"
NODES = 2
EVICTION_HARD = "memory.available<600Mi,pid.available<150,nodefs.available<10%,imagefs.available<15%"
UP_ARGS = ("--node-memory", "1Gi", "--node-pids", "400", "--node-disk", "3Gi",
           f"--agent-arg=--eviction-hard={EVICTION_HARD}")
TRANSITION = 10.0  # agents.LAB_EVICTION_FLAGS
MEMORY_MESSAGE = "The node was low on resource: memory. Threshold quantity: 600Mi, available: "


def hog_command(mib: int) -> list[str]:
    """awk holds ``mib`` MiB in one string (busybox has no stress tool; a shell variable is freed)."""
    return ["awk", f'BEGIN {{ s = sprintf("%" {mib}*1048576 "s", ""); print "holding"; fflush(); '
                   'system("sleep 3600") }']


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="skev-", dir="/tmp"))
    name = "ev" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    lab = Lab(name, root / name, NODES)
    try:
        start = time.monotonic()
        lab.skiff("up", "--nodes", str(NODES), "--wait", str(READY_TIMEOUT), *UP_ARGS)
        api = lab.api()
        wanted = {lab.node_name(i) for i in range(1, NODES + 1)}
        wait_until(lambda: wanted <= {n["metadata"]["name"] for n in api.nodes() if node_ready(n)}, READY_TIMEOUT,
                   lambda: "nodes not Ready")
        print(f"[lab {name}] up in {time.monotonic() - start:.1f}s")
        yield lab
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            lab.skiff("down", timeout=DOWN_TIMEOUT, check=False)
        shutil.rmtree(root, ignore_errors=True)


# -- helpers ---------------------------------------------------------------------------------------


def pod_manifest(name: str, node: str | None, command: list[str], *, requests: dict[str, str] | None = None,
                 limits: dict[str, str] | None = None, volumes: list[Obj] | None = None,
                 mounts: list[Obj] | None = None, restart: str = "Always") -> Obj:
    resources: Obj = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    spec: Obj = {"restartPolicy": restart, "terminationGracePeriodSeconds": 2,
                 "containers": [{"name": name.split("-")[0], "image": "skiff/app:1.0", "command": command,
                                 "resources": resources, "volumeMounts": mounts or []}],
                 "volumes": volumes or []}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def create_pod(api: KubeApi, manifest: Obj) -> Obj:
    return api_write(api, "POST", f"/api/v1/namespaces/{NS}/pods", manifest)


def get_pod(api: KubeApi, name: str) -> Obj | None:
    return api_get(api, f"/api/v1/namespaces/{NS}/pods/{name}")


def running(api: KubeApi, name: str) -> bool:
    pod = get_pod(api, name)
    return pod is not None and phase(pod) == "Running" and is_ready(pod)


def evicted(api: KubeApi, name: str) -> Obj | None:
    pod = get_pod(api, name)
    if pod is not None and phase(pod) == "Failed" and pod["status"].get("reason") == "Evicted":
        return pod
    return None


def events_of(api: KubeApi, uid: str, reason: str) -> list[Obj]:
    return [e for e in api_items(api, f"/api/v1/namespaces/{NS}/events")
            if e["involvedObject"].get("uid") == uid and e.get("reason") == reason]


def assert_one_evicted_event(api: KubeApi, pod: Obj, message_start: str) -> None:
    """Exactly one Evicted event (count 1), Warning, saying what the pod status says."""
    events = wait_until(lambda: events_of(api, pod["metadata"]["uid"], "Evicted"), 20,
                        lambda: f"no Evicted event for {pod['metadata']['name']}")
    assert len(events) == 1 and events[0].get("count", 1) == 1, events
    assert events[0]["type"] == "Warning"
    assert events[0]["message"] == pod["status"]["message"]
    assert events[0]["message"].startswith(message_start), events[0]["message"]


def node_condition(api: KubeApi, node: str, kind: str) -> str | None:
    obj = api_get(api, f"/api/v1/nodes/{node}")
    cond = condition(obj, kind) if obj else None
    return cond.get("status") if cond else None


def node_taints(api: KubeApi, node: str) -> set[str]:
    obj = api_get(api, f"/api/v1/nodes/{node}") or {}
    return {t["key"] for t in (obj.get("spec") or {}).get("taints") or []}


def wait_condition(api: KubeApi, node: str, kind: str, status: str, timeout: float) -> float:
    start = time.monotonic()
    wait_until(lambda: node_condition(api, node, kind) == status, timeout,
               lambda: f"{node}: {kind} is {node_condition(api, node, kind)}, not {status}")
    return time.monotonic() - start


def delete_pods(api: KubeApi, *names: str) -> None:
    for name in names:
        api_delete(api, f"/api/v1/namespaces/{NS}/pods/{name}")
    wait_until(lambda: all(get_pod(api, n) is None for n in names), 60, lambda: f"pods {names} not deleted")


def deployment(name: str, replicas: int) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 5, "containers": [
                                      {"name": "app", "image": "skiff/app:1.0", "command": ["sleep", "3600"]}]}}}}


def replicas_of(api: KubeApi, app: str) -> list[Obj]:
    return api_items(api, f"/api/v1/namespaces/{NS}/pods", labelSelector=f"app={app}")


def chaos(lab: Lab, *args: str) -> str:
    out = lab.skiff("chaos", *args, timeout=120).stdout
    print(out.rstrip())
    return out


# -- memory --------------------------------------------------------------------------------------------


def test_memory_pressure_evicts_the_besteffort_hog_first_and_spares_the_guaranteed_pod(lab: Lab) -> None:
    api, node = lab.api(), lab.node_name(1)
    watch = Stopwatch("memory")
    create_pod(api, pod_manifest("guaranteed", node, hog_command(40), requests={"memory": "100Mi", "cpu": "50m"},
                                 limits={"memory": "100Mi", "cpu": "50m"}))
    create_pod(api, pod_manifest("burstable", node, hog_command(60), requests={"memory": "50Mi"}))
    wait_until(lambda: running(api, "guaranteed") and running(api, "burstable"), 60, lambda: "pods not Running")
    assert node_condition(api, node, "MemoryPressure") == "False"
    create_pod(api, pod_manifest("hog", node, hog_command(450)))
    start = time.monotonic()
    pod = wait_until(lambda: evicted(api, "hog"), 60,
                     lambda: f"hog not evicted: {(get_pod(api, 'hog') or {}).get('status')}\n{lab.agent_log(1)}")
    to_eviction = time.monotonic() - start
    to_true = wait_condition(api, node, "MemoryPressure", "True", 10) + to_eviction
    watch.lap(f"hog created -> Evicted {to_eviction:.1f}s (MemoryPressure True seen by {to_true:.1f}s)")
    message = pod["status"]["message"]
    assert message.startswith(MEMORY_MESSAGE) and "Container hog was using " in message
    assert message.endswith(", request is 0, has larger consumption of memory. "), message
    assert condition(pod, "DisruptionTarget")["reason"] == "TerminationByKubelet"  # type: ignore[index]
    assert_one_evicted_event(api, pod, MEMORY_MESSAGE)
    assert "node.kubernetes.io/memory-pressure" in node_taints(api, node) or \
        wait_until(lambda: "node.kubernetes.io/memory-pressure" in node_taints(api, node), 10, lambda: "no taint")
    cleared = wait_condition(api, node, "MemoryPressure", "False", TRANSITION + 20)
    watch.lap(f"MemoryPressure False {cleared:.1f}s after the eviction (transition period {TRANSITION:.0f}s)")
    assert cleared >= TRANSITION - 2.5  # held for the transition period (counted from the last pass that met it)
    wait_until(lambda: "node.kubernetes.io/memory-pressure" not in node_taints(api, node), 15,
               lambda: "the memory-pressure taint stayed")
    for name in ("guaranteed", "burstable"):
        survivor = get_pod(api, name)
        assert survivor is not None and phase(survivor) == "Running", survivor
        assert survivor["status"]["containerStatuses"][0]["restartCount"] == 0
        assert events_of(api, survivor["metadata"]["uid"], "Evicted") == []
    delete_pods(api, "guaranteed", "burstable", "hog")


def test_memory_pressure_chaos_moves_a_deployments_replicas_to_the_other_node(lab: Lab) -> None:
    api, node1, node2 = lab.api(), lab.node_name(1), lab.node_name(2)
    watch = Stopwatch("memory-pressure")
    api_write(api, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", deployment("mem", 4))
    wait_until(lambda: sum(1 for p in replicas_of(api, "mem") if phase(p) == "Running") == 4, 60,
               lambda: "replicas not Running")
    on_node1 = [p for p in replicas_of(api, "mem") if p["spec"]["nodeName"] == node1]
    assert on_node1, "the scheduler spreads replicas: some run on node 1"
    watch.lap("4 replicas Running")
    out = chaos(lab, "memory-pressure", "1")
    assert "its agent's hard threshold is memory.available<600Mi: MemoryPressure turns True" in out
    assert f"undo: skiff lab chaos relieve {node1}" in out
    wait_condition(api, node1, "MemoryPressure", "True", 20)

    def moved() -> bool:
        active = [p for p in replicas_of(api, "mem") if phase(p) not in ("Failed", "Succeeded")]
        return len(active) == 4 and all(p["spec"].get("nodeName") == node2 and is_ready(p) for p in active)

    wait_until(moved, 90, lambda: "replicas: " + ", ".join(
        f"{p['metadata']['name']}@{p['spec'].get('nodeName')}:{phase(p)}" for p in replicas_of(api, "mem")))
    watch.lap("every replica of node 1 evicted and replaced on node 2")
    for pod in on_node1:
        gone = get_pod(api, pod["metadata"]["name"])
        assert gone is not None and evicted(api, pod["metadata"]["name"]), gone
        assert_one_evicted_event(api, gone, MEMORY_MESSAGE)
    out = chaos(lab, "relieve", "1")
    assert "killed the memory hog" in out
    cleared = wait_condition(api, node1, "MemoryPressure", "False", TRANSITION + 20)
    watch.lap(f"relieved; MemoryPressure False after {cleared:.1f}s")
    assert all(node_ready(n) for n in api.nodes())
    api_delete(api, f"/apis/apps/v1/namespaces/{NS}/deployments/mem")
    wait_until(lambda: not replicas_of(api, "mem"), 60, lambda: "mem pods left")


# -- disk --------------------------------------------------------------------------------------------


def test_an_emptydir_over_its_size_limit_evicts_its_pod(lab: Lab) -> None:
    api = lab.api()
    create_pod(api, pod_manifest("filler", lab.node_name(2), ["sh", "-c", "dd if=/dev/zero of=/cache/fill bs=1M "
                                                                         "count=40; sleep 3600"],
                                 volumes=[{"name": "cache", "emptyDir": {"sizeLimit": "20Mi"}}],
                                 mounts=[{"name": "cache", "mountPath": "/cache"}]))
    start = time.monotonic()
    pod = wait_until(lambda: evicted(api, "filler"), 60, lambda: f"filler not evicted\n{lab.agent_log(2)}")
    print(f"[emptyDir] created -> Evicted in {time.monotonic() - start:.1f}s")
    assert pod["status"]["message"] == 'Usage of EmptyDir volume "cache" exceeds the limit "20Mi". '
    assert_one_evicted_event(api, pod, 'Usage of EmptyDir volume "cache"')
    assert node_condition(api, lab.node_name(2), "DiskPressure") == "False"  # the pod's limit, not the node's
    delete_pods(api, "filler")


def test_disk_pressure_chaos_reclaims_then_evicts_and_relieve_converges(lab: Lab) -> None:
    api, node1, node2 = lab.api(), lab.node_name(1), lab.node_name(2)
    watch = Stopwatch("disk-pressure")
    api_write(api, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", deployment("disk", 4))
    wait_until(lambda: sum(1 for p in replicas_of(api, "disk") if phase(p) == "Running") == 4, 60,
               lambda: "replicas not Running")
    on_node2 = [p for p in replicas_of(api, "disk") if p["spec"]["nodeName"] == node2]
    assert on_node2, "the scheduler spreads replicas: some run on node 2"
    out = chaos(lab, "disk-pressure", "2")
    assert "DiskPressure turns True" in out and f"undo: skiff lab chaos relieve {node2}" in out
    seen = wait_condition(api, node2, "DiskPressure", "True", 20)
    watch.lap(f"DiskPressure True after {seen:.1f}s")

    def moved() -> bool:
        active = [p for p in replicas_of(api, "disk") if phase(p) not in ("Failed", "Succeeded")]
        return len(active) == 4 and all(p["spec"].get("nodeName") == node1 and is_ready(p) for p in active)

    wait_until(moved, 90, lambda: "replicas: " + ", ".join(
        f"{p['metadata']['name']}@{p['spec'].get('nodeName')}:{phase(p)}" for p in replicas_of(api, "disk")))
    watch.lap("replicas of node 2 evicted and replaced on node 1")
    for pod in on_node2:
        gone = evicted(api, pod["metadata"]["name"])
        assert gone is not None
        assert_one_evicted_event(api, gone, "The node was low on resource: ephemeral-storage. Threshold quantity: ")
    out = chaos(lab, "relieve", "2")
    assert "deleted" in out and "chaos-disk-pressure.fill" in out
    cleared = wait_condition(api, node2, "DiskPressure", "False", TRANSITION + 20)
    watch.lap(f"relieved; DiskPressure False after {cleared:.1f}s")
    # node 2 runs pods again: its images are back (the image GC took skiff/app:1.0 under pressure)
    create_pod(api, pod_manifest("after", node2, ["sleep", "3600"]))
    wait_until(lambda: running(api, "after"), 60, lambda: f"pod on node 2 not Running: {get_pod(api, 'after')}")
    assert all(node_ready(n) for n in api.nodes())
    api_delete(api, f"/apis/apps/v1/namespaces/{NS}/deployments/disk")
    delete_pods(api, "after")


# -- pids and OOM ----------------------------------------------------------------------------------------


def test_a_fork_bomb_is_stopped_by_the_node_task_limit_and_evicted_under_pid_pressure(lab: Lab) -> None:
    api, node = lab.api(), lab.node_name(2)
    # Doubling every second (each copy sleeps before forking), so it fills the node's 400 tasks in
    # ~9 s without burning the CPU of a shared test machine.
    create_pod(api, pod_manifest("bomb", node, ["sh", "-c", "b() { sleep 1; b & b; }; b"]))
    start = time.monotonic()
    pod = wait_until(lambda: evicted(api, "bomb"), 90, lambda: f"bomb not evicted\n{lab.agent_log(2)}")
    print(f"[pids] fork bomb created -> Evicted in {time.monotonic() - start:.1f}s")
    assert pod["status"]["message"].startswith("The node was low on resource: pids. Threshold quantity: 150, "
                                               "available: ")
    assert_one_evicted_event(api, pod, "The node was low on resource: pids. ")
    assert node_condition(api, node, "PIDPressure") == "True"
    wait_condition(api, node, "PIDPressure", "False", TRANSITION + 20)
    delete_pods(api, "bomb")


def test_a_container_over_its_memory_limit_is_oomkilled(lab: Lab) -> None:
    api = lab.api()
    create_pod(api, pod_manifest("oom", lab.node_name(1), hog_command(100), limits={"memory": "50Mi"},
                                 restart="Never"))

    def terminated() -> Obj | None:
        pod = get_pod(api, "oom") or {}
        statuses: list[Any] = (pod.get("status") or {}).get("containerStatuses") or []
        return statuses[0]["state"].get("terminated") if statuses else None

    state = wait_until(terminated, 60, lambda: f"oom not terminated: {json.dumps(get_pod(api, 'oom'))[:2000]}")
    assert state["reason"] == "OOMKilled" and state["exitCode"] == 137, state
    assert phase(get_pod(api, "oom") or {}) == "Failed"
    delete_pods(api, "oom")
