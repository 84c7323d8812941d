"""Issue 4's workload acceptance, in a real three-node lab: the scheduler, the controllers and the
agents together, driven by the pinned kubectl clients as a user would, observed through the API.

One lab for the module (``w`` + 4 random characters, state dir under a fresh /tmp directory),
taken down in a ``finally``. Every test waits on conditions with a deadline and prints how long
each step took (``pytest -s`` shows them).

- A Deployment of 6 spreads 2/2/2 over the nodes; ``kubectl scale`` to 10 and back to 2 ends with
  exactly that many pods, none left terminating.
- A RollingUpdate (maxSurge 1, maxUnavailable 1, 4 replicas) stays within its bounds in every
  state the store held (pods, ReplicaSets and the Deployment watched, replayed in resourceVersion
  order): strictly for the ReplicaSets and the Deployment's status, as the deployment controller
  guarantees them and Kubernetes' e2e checks them, and for the pods too (see `Bounds` for the one
  window Kubernetes leaves open); ``kubectl rollout status`` (1.20 and 1.35) returns 0;
  ``kubectl rollout undo`` brings back the first template as revision 3.
- A pod that fits nowhere stays Pending with kube-scheduler's message and a FailedScheduling event.
- nodeSelector, required node affinity, a NoSchedule taint and a matching toleration.
- A DaemonSet runs one pod per node; Jobs complete, or fail at their backoffLimit.
- Deleting a Deployment removes its ReplicaSets, pods and containers; deleting a namespace
  removes everything in it, then the namespace.
"""

from __future__ import annotations

import json
import secrets
import string
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_agent.lab.controlplane import KubeApi

from .labutil import (
    KUBECTL_SKIP,
    LAB_SKIPS,
    Kubectl,
    Lab,
    Obj,
    Stopwatch,
    WatchRecorder,
    api_delete,
    api_get,
    api_items,
    brief,
    condition,
    is_active,
    is_ready,
    kubectls,
    phase,
    replay,
    running_lab,
    wait_until,
)

docker = pytest.importorskip("docker")

pytestmark = [*LAB_SKIPS, KUBECTL_SKIP]

NODES = 3
NS = "default"
IMAGE = "skiff/app:1.0"
# Exits at once on SIGTERM (a plain `sleep` as PID 1 ignores it), so pods go quickly.
APP_COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
RUNNING_TIMEOUT = 90.0  # pods created -> Running and Ready, on a loaded machine
GONE_TIMEOUT = 90.0  # deletions: pods terminated and removed from the API
ROLLOUT_TIMEOUT = 120
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab("w", NODES) as lab:
        yield lab


@pytest.fixture(scope="module")
def kubectl(lab: Lab) -> Iterator[dict[str, Kubectl]]:
    with tempfile.TemporaryDirectory(prefix="skw-kubectl-") as workdir:
        yield kubectls(lab, Path(workdir))


@pytest.fixture
def api(lab: Lab) -> KubeApi:
    return lab.api()


# -- manifests -------------------------------------------------------------------------------------


def container(version: str = "1", **extra: Any) -> Obj:
    return {"name": "app", "image": IMAGE, "imagePullPolicy": "Never", "command": APP_COMMAND,
            "env": [{"name": "VERSION", "value": version}], **extra}


def pod_spec(version: str = "1", **extra: Any) -> Obj:
    return {"terminationGracePeriodSeconds": 5, "containers": [container(version)], **extra}


def deployment(name: str, replicas: int, version: str = "1", *, strategy: Obj | None = None,
               namespace: str = NS, **pod_extra: Any) -> Obj:
    spec: Obj = {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(version, **pod_extra)}}
    if strategy is not None:
        spec["strategy"] = strategy
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def bare_pod(name: str, **spec_extra: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": pod_spec(**spec_extra)}


def job(name: str, command: str, *, completions: int, parallelism: int, backoff_limit: int) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": backoff_limit,
                     "template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                                           "containers": [{"name": "work", "image": IMAGE,
                                                           "imagePullPolicy": "Never",
                                                           "command": ["sh", "-c", command]}]}}}}


# -- observing -------------------------------------------------------------------------------------


def pods_path(namespace: str = NS) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def apps_path(resource: str, namespace: str = NS) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/{resource}"


def pods_of(api: KubeApi, selector: str, namespace: str = NS) -> list[Obj]:
    return api_items(api, pods_path(namespace), labelSelector=selector)


def env_version(pod: Obj) -> str | None:
    env = pod["spec"]["containers"][0].get("env") or []
    return next((e.get("value") for e in env if e.get("name") == "VERSION"), None)


def wait_pods(lab: Lab, api: KubeApi, selector: str, count: int, *, namespace: str = NS,
              version: str | None = None, timeout: float = RUNNING_TIMEOUT) -> list[Obj]:
    """Exactly ``count`` pods match (terminating ones included), each Running and Ready,
    and of the template ``version`` when given."""
    def check() -> list[Obj] | None:
        pods = pods_of(api, selector, namespace)
        good = [p for p in pods if is_active(p) and phase(p) == "Running" and is_ready(p)
                and (version is None or env_version(p) == version)]
        return pods if len(pods) == count and len(good) == count else None

    return wait_until(check, timeout, lambda: f"want {count} pods {selector} Running and Ready"
                      f"{f' (VERSION={version})' if version else ''}, have: "
                      + "; ".join(brief(p) for p in pods_of(api, selector, namespace))
                      + f"\nserver log:\n{lab.server_log(30)}")


def wait_gone(api: KubeApi, path: str, selector: str, timeout: float = GONE_TIMEOUT) -> None:
    wait_until(lambda: not api_items(api, path, labelSelector=selector), timeout,
               lambda: f"{path}?labelSelector={selector} still lists "
                       f"{[o['metadata']['name'] for o in api_items(api, path, labelSelector=selector)]}")


def deployment_complete(api: KubeApi, name: str, replicas: int, namespace: str = NS) -> Obj | None:
    """What ``kubectl rollout status`` waits for, and no old pods left."""
    d = api_get(api, f"{apps_path('deployments', namespace)}/{name}")
    if d is None:
        return None
    status = d.get("status") or {}
    done = (status.get("observedGeneration") == d["metadata"]["generation"]
            and status.get("replicas") == status.get("updatedReplicas") == status.get("readyReplicas")
            == status.get("availableReplicas") == replicas)
    return d if done else None


def replica_sets(api: KubeApi, app: str, namespace: str = NS) -> list[Obj]:
    return api_items(api, apps_path("replicasets", namespace), labelSelector=f"app={app}")


def annotations_of(obj: Obj) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


def containers_of(lab: Lab, uids: set[str]) -> dict[int, list[str]]:
    """node index -> names of the containers (running or not) that belong to the pods ``uids``."""
    found: dict[int, list[str]] = {}
    for i in range(1, NODES + 1):
        client = docker.APIClient(base_url=lab.docker_host(i), timeout=30)
        try:
            names = [c["Names"][0] for c in client.containers(all=True)
                     if (c.get("Labels") or {}).get("io.kubernetes.pod.uid") in uids]
        finally:
            client.close()
        if names:
            found[i] = names
    return found


def suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))


# -- 1. spreading and scaling --------------------------------------------------------------------------


def test_deployment_spreads_over_the_nodes_and_scales(lab: Lab, kubectl: dict[str, Kubectl], api: KubeApi) -> None:
    sw = Stopwatch("spread")
    name = "web"
    try:
        kubectl["1.35"].apply(deployment(name, 6))
        pods = wait_pods(lab, api, f"app={name}", 6)
        sw.lap("6 replicas Running and Ready")
        per_node = Counter(p["spec"]["nodeName"] for p in pods)
        print(f"[spread] 6 replicas per node: {dict(sorted(per_node.items()))}")
        assert set(per_node) == {lab.node_name(i) for i in range(1, NODES + 1)}, per_node
        assert sorted(per_node.values()) == [2, 2, 2], per_node

        kubectl["1.20"].run("scale", f"deployment/{name}", "--replicas=10")
        pods = wait_pods(lab, api, f"app={name}", 10)
        wait_until(lambda: deployment_complete(api, name, 10), RUNNING_TIMEOUT,
                   lambda: f"deployment status: {api_get(api, apps_path('deployments') + '/' + name)}")
        sw.lap("scaled to 10")
        per_node = Counter(p["spec"]["nodeName"] for p in pods)
        print(f"[spread] 10 replicas per node: {dict(sorted(per_node.items()))}")
        assert len(per_node) == NODES and max(per_node.values()) - min(per_node.values()) <= 1, per_node

        kubectl["1.35"].run("scale", f"deployment/{name}", "--replicas=2")
        wait_pods(lab, api, f"app={name}", 2, timeout=GONE_TIMEOUT)  # the 8 others gone, not just terminating
        wait_until(lambda: deployment_complete(api, name, 2), RUNNING_TIMEOUT,
                   lambda: f"deployment status: {api_get(api, apps_path('deployments') + '/' + name)}")
        sw.lap("scaled to 2, the other 8 pods gone")
        sets = replica_sets(api, name)
        assert [rs["spec"]["replicas"] for rs in sets] == [2], [(rs["metadata"]["name"], rs["spec"]) for rs in sets]
        assert sets[0]["status"].get("readyReplicas") == 2
    finally:
        api_delete(api, f"{apps_path('deployments')}/{name}")


# -- 2. rolling update and undo --------------------------------------------------------------------------


class Bounds:
    """Replays a rollout's recorded pods, ReplicaSets and Deployment in the order the store wrote
    them (see `replay`) and checks its bounds in every state.

    What the deployment controller guarantees, and Kubernetes' e2e checks during a rollout
    (``checkRollingUpdateStatus`` in test/e2e/framework/deployment), is on its own objects: the
    ReplicaSets' spec.replicas sum to at most replicas + maxSurge, and the Deployment's
    status.availableReplicas stays at least replicas - maxUnavailable. Checked strictly.

    On the pods (active = no deletionTimestamp and not finished, as controller.FilterActivePods
    counts them; available = active with Ready=True):

    - Ready pods >= replicas - maxUnavailable, strictly: old ReplicaSets are only scaled down by
      pods the controller saw available, and those stay Ready.
    - Active pods <= replicas + maxSurge + the pods already condemned: those of a ReplicaSet
      beyond its spec.replicas, which its controller is about to mark deleted. The deployment
      controller sizes the new ReplicaSet by the old ones' spec, not by their pods, so it may grow
      it in the instant between an old ReplicaSet's scale-down and that ReplicaSet's controller
      deleting the pod (Kubernetes has the same window). Without condemned pods the bound is strict.
    """

    def __init__(self, replicas: int, max_surge: int, max_unavailable: int) -> None:
        self.max_total = replicas + max_surge
        self.min_available = replicas - max_unavailable

    def check(self, pods: WatchRecorder, sets: WatchRecorder, deployments: WatchRecorder) -> dict[str, int]:
        """Violations fail; returns what was seen at the extremes."""
        seen = {"states": 0, "mixed": 0, "most_active": 0, "fewest_ready": 1 << 30, "most_rs_replicas": 0,
                "fewest_available": 1 << 30, "states_with_condemned": 0}
        for where, state in replay({"pods": pods, "replicasets": sets, "deployments": deployments}):
            spec = {uid: int(rs["spec"].get("replicas") or 0) for uid, rs in state["replicasets"].items()}
            active = [p for p in state["pods"].values() if is_active(p)]
            ready = [p for p in active if is_ready(p)]
            per_rs = Counter(owner_uid(p) or "" for p in active)
            condemned = sum(max(0, n - spec.get(uid, 0)) for uid, n in per_rs.items())
            available = [int((d.get("status") or {}).get("availableReplicas") or 0)
                         for d in state["deployments"].values()]

            assert sum(spec.values()) <= self.max_total, \
                f"ReplicaSets over {self.max_total} {describe_state(where, state)}"
            assert min(available) >= self.min_available, \
                f"Deployment available < {self.min_available} {describe_state(where, state)}"
            assert len(ready) >= self.min_available, \
                f"{len(ready)} Ready pods < {self.min_available} {describe_state(where, state)}"
            assert len(active) <= self.max_total + condemned, \
                f"{len(active)} active pods > {self.max_total} + {condemned} condemned {describe_state(where, state)}"
            seen["fewest_available"] = min(seen["fewest_available"], *available)
            seen["states"] += 1
            seen["mixed"] += int(len({env_version(p) for p in active}) > 1)
            seen["most_active"] = max(seen["most_active"], len(active))
            seen["fewest_ready"] = min(seen["fewest_ready"], len(ready))
            seen["most_rs_replicas"] = max(seen["most_rs_replicas"], sum(spec.values()))
            seen["states_with_condemned"] += int(condemned > 0)
        return seen


def describe_state(where: str, state: dict[str, dict[str, Obj]]) -> str:
    sets = [(rs["metadata"]["name"], rs["spec"].get("replicas")) for rs in state["replicasets"].values()]
    status = [d.get("status") for d in state["deployments"].values()]
    return (f"after {where}: ReplicaSets {sets}; Deployment status {status}; pods "
            + "; ".join(brief(p) for p in state["pods"].values()))


def owner_uid(obj: Obj) -> str | None:
    return next((o.get("uid") for o in obj["metadata"].get("ownerReferences") or [] if o.get("controller")), None)


def record_rollout(lab: Lab, name: str) -> tuple[WatchRecorder, WatchRecorder, WatchRecorder]:
    return (WatchRecorder(lab.kubeconfig, "pods", NS, label_selector=f"app={name}"),
            WatchRecorder(lab.kubeconfig, "replicasets", NS, label_selector=f"app={name}"),
            WatchRecorder(lab.kubeconfig, "deployments", NS, field_selector=f"metadata.name={name}"))


def rollout_status_with_both(kubectl: dict[str, Kubectl], name: str) -> None:
    """``kubectl rollout status`` of 1.20 and 1.35 at once, while the rollout runs; both must exit 0."""
    procs = {v: k.start("rollout", "status", f"deployment/{name}", f"--timeout={ROLLOUT_TIMEOUT}s")
             for v, k in kubectl.items()}
    for version, proc in procs.items():
        out, _ = proc.communicate(timeout=ROLLOUT_TIMEOUT + 30)
        assert proc.returncode == 0, f"kubectl-{version} rollout status exited {proc.returncode}:\n{out}"
        assert "successfully rolled out" in out, out


def test_rolling_update_keeps_its_bounds_and_undo_restores(lab: Lab, kubectl: dict[str, Kubectl],
                                                           api: KubeApi) -> None:
    sw = Stopwatch("rollout")
    name, replicas = "roll", 4
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    bounds = Bounds(replicas, 1, 1)
    try:
        kubectl["1.35"].apply(deployment(name, replicas, "1", strategy=strategy))
        kubectl["1.35"].run("rollout", "status", f"deployment/{name}", f"--timeout={ROLLOUT_TIMEOUT}s",
                            timeout=ROLLOUT_TIMEOUT + 30)
        wait_pods(lab, api, f"app={name}", replicas, version="1")
        (first,) = replica_sets(api, name)
        assert annotations_of(first)[REVISION] == "1"
        first_hash = first["metadata"]["labels"]["pod-template-hash"]
        sw.lap(f"{replicas} replicas of revision 1 Running")

        pods, sets, deploys = record_rollout(lab, name)
        with pods, sets, deploys:
            kubectl["1.20"].apply(deployment(name, replicas, "2", strategy=strategy))
            rollout_status_with_both(kubectl, name)
            wait_pods(lab, api, f"app={name}", replicas, version="2", timeout=GONE_TIMEOUT)
        sw.lap("rolled out revision 2 (rollout status 1.20 and 1.35 returned 0)")
        seen = bounds.check(pods, sets, deploys)
        print(f"[rollout] revision 2, every state checked: {seen}")
        assert seen["mixed"] > 0, "the watch saw no state with pods of both templates: nothing was checked"

        by_name = {rs["metadata"]["name"]: rs for rs in replica_sets(api, name)}
        second = next(rs for n, rs in by_name.items() if n != first["metadata"]["name"])
        assert annotations_of(second)[REVISION] == "2"
        assert by_name[first["metadata"]["name"]]["spec"]["replicas"] == 0
        d = api_get(api, f"{apps_path('deployments')}/{name}")
        assert d is not None and annotations_of(d)[REVISION] == "2"

        pods, sets, deploys = record_rollout(lab, name)
        with pods, sets, deploys:
            kubectl["1.20"].run("rollout", "undo", f"deployment/{name}")
            rollout_status_with_both(kubectl, name)
            back = wait_pods(lab, api, f"app={name}", replicas, version="1", timeout=GONE_TIMEOUT)
        sw.lap("rollout undo back to the first template")
        seen = bounds.check(pods, sets, deploys)
        print(f"[rollout] undo, every state checked: {seen}")
        assert seen["mixed"] > 0, "the watch saw no state with pods of both templates: nothing was checked"

        assert {p["metadata"]["labels"]["pod-template-hash"] for p in back} == {first_hash}
        assert all(p["spec"]["containers"][0]["command"] == APP_COMMAND for p in back)
        by_name = {rs["metadata"]["name"]: rs for rs in replica_sets(api, name)}
        assert set(by_name) == {first["metadata"]["name"], second["metadata"]["name"]}
        reused = by_name[first["metadata"]["name"]]
        assert reused["metadata"]["uid"] == first["metadata"]["uid"], "undo made a new ReplicaSet"
        assert annotations_of(reused)[REVISION] == "3"
        assert annotations_of(reused).get(REVISION_HISTORY) == "1"
        assert reused["spec"]["replicas"] == replicas
        assert by_name[second["metadata"]["name"]]["spec"]["replicas"] == 0
        d = api_get(api, f"{apps_path('deployments')}/{name}")
        assert d is not None and annotations_of(d)[REVISION] == "3"
        assert d["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "VERSION", "value": "1"}]
        history = kubectl["1.35"].run("rollout", "history", f"deployment/{name}").stdout
        assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"], history
    finally:
        api_delete(api, f"{apps_path('deployments')}/{name}")


# -- 3. a pod that fits nowhere -------------------------------------------------------------------------


def test_a_pod_that_fits_nowhere_stays_pending_with_the_schedulers_message(
        lab: Lab, kubectl: dict[str, Kubectl], api: KubeApi) -> None:
    sw = Stopwatch("unschedulable")
    name = "hog"
    manifest = bare_pod(name)
    manifest["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1000", "memory": "64Mi"}}
    # kube-scheduler's FitError.Error() with DefaultPreemption's PostFilter message: Insufficient
    # cpu is a reason preemption could resolve, but there are no lower-priority victims.
    expected = ("0/3 nodes are available: 3 Insufficient cpu. "
                "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")
    try:
        kubectl["1.35"].apply(manifest)

        def unschedulable() -> Obj | None:
            pod = api_get(api, f"{pods_path()}/{name}")
            cond = condition(pod, "PodScheduled") if pod else None
            return pod if cond and cond.get("status") == "False" else None

        pod = wait_until(unschedulable, RUNNING_TIMEOUT, lambda: f"pod: {api_get(api, pods_path() + '/' + name)}")
        sw.lap("PodScheduled=False")
        cond = condition(pod, "PodScheduled")
        assert cond is not None and cond["reason"] == "Unschedulable", cond
        assert cond["message"] == expected, cond
        assert phase(pod) == "Pending" and not pod["spec"].get("nodeName"), brief(pod)

        def failed_scheduling() -> list[Obj]:
            return [e for e in api_items(api, f"/api/v1/namespaces/{NS}/events",
                                         fieldSelector=f"involvedObject.name={name}")
                    if e.get("reason") == "FailedScheduling"]

        events = wait_until(failed_scheduling, RUNNING_TIMEOUT, lambda: "no FailedScheduling event")
        assert events[0]["type"] == "Warning" and events[0]["message"] == expected, events[0]
        assert events[0]["involvedObject"]["uid"] == pod["metadata"]["uid"]
        described = kubectl["1.20"].run("describe", "pod", name).stdout
        assert "FailedScheduling" in described and "0/3 nodes are available: 3 Insufficient cpu." in described, \
            described
        still = api_get(api, f"{pods_path()}/{name}")
        assert still is not None
        assert phase(still) == "Pending" and not still["spec"].get("nodeName"), brief(still)
    finally:
        api_delete(api, f"{pods_path()}/{name}")


# -- 4. selectors, affinity, taints ----------------------------------------------------------------------


def test_node_selector_affinity_taints_and_tolerations(lab: Lab, kubectl: dict[str, Kubectl], api: KubeApi) -> None:
    sw = Stopwatch("placement")
    node1, node2, node3 = (lab.node_name(i) for i in (1, 2, 3))
    key = f"skiff-test-{suffix()}"
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node3]}]}]}}}
    tolerating = bare_pod("tolerating", nodeSelector={"kubernetes.io/hostname": node1},
                          tolerations=[{"key": key, "operator": "Equal", "value": "x", "effect": "NoSchedule"}])
    created = ["selected", "affine", "tolerating"]
    try:
        kubectl["1.35"].apply([bare_pod("selected", nodeSelector={"kubernetes.io/hostname": node2}),
                               bare_pod("affine", affinity=affinity)])
        for pod_name, node in (("selected", node2), ("affine", node3)):
            (pod,) = wait_pods(lab, api, f"app={pod_name}", 1)
            assert pod["spec"]["nodeName"] == node, brief(pod)
        sw.lap("nodeSelector -> node 2, node affinity -> node 3")

        kubectl["1.20"].run("taint", "nodes", node1, f"{key}=x:NoSchedule")
        tainted = api_get(api, f"/api/v1/nodes/{node1}")
        assert tainted is not None and {"key": key, "value": "x", "effect": "NoSchedule"} in tainted["spec"]["taints"]
        kubectl["1.35"].apply([deployment("avoid", 3), tolerating])
        pods = wait_pods(lab, api, "app=avoid", 3)
        assert node1 not in {p["spec"]["nodeName"] for p in pods}, [brief(p) for p in pods]
        (tolerated,) = wait_pods(lab, api, "app=tolerating", 1)
        assert tolerated["spec"]["nodeName"] == node1, brief(tolerated)
        sw.lap("taint: a Deployment avoids node 1, the tolerating pod runs there")
        print(f"[placement] 'avoid' on {sorted(p['spec']['nodeName'] for p in pods)}")
    finally:
        kubectl["1.35"].run("taint", "nodes", node1, f"{key}=x:NoSchedule-", check=False)
        api_delete(api, f"{apps_path('deployments')}/avoid")
        for pod_name in created:
            api_delete(api, f"{pods_path()}/{pod_name}")
    untainted = api_get(api, f"/api/v1/nodes/{node1}")
    assert untainted is not None
    assert not any(t["key"] == key for t in untainted["spec"].get("taints") or []), untainted["spec"]


# -- 5. DaemonSet --------------------------------------------------------------------------------------------


def test_a_daemonset_runs_one_pod_per_node(lab: Lab, kubectl: dict[str, Kubectl], api: KubeApi) -> None:
    sw = Stopwatch("daemonset")
    name = "everywhere"
    manifest = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec()}}}
    try:
        kubectl["1.20"].apply(manifest)
        pods = wait_pods(lab, api, f"app={name}", NODES)
        assert sorted(p["spec"]["nodeName"] for p in pods) == [lab.node_name(i) for i in range(1, NODES + 1)]

        def status_settled() -> Obj | None:
            ds = api_get(api, f"{apps_path('daemonsets')}/{name}")
            status = (ds or {}).get("status") or {}
            want = {"desiredNumberScheduled": NODES, "currentNumberScheduled": NODES, "numberReady": NODES,
                    "numberAvailable": NODES, "updatedNumberScheduled": NODES}
            return ds if all(status.get(k) == v for k, v in want.items()) else None

        ds = wait_until(status_settled, RUNNING_TIMEOUT,
                        lambda: f"status: {(api_get(api, apps_path('daemonsets') + '/' + name) or {}).get('status')}")
        assert (ds["status"].get("numberMisscheduled") or 0) == 0, ds["status"]
        sw.lap("one pod per node, status settled")
        # Nothing more comes: the same pods, still exactly one per node.
        again = pods_of(api, f"app={name}")
        assert {p["metadata"]["uid"] for p in again} == {p["metadata"]["uid"] for p in pods}
        kubectl["1.35"].run("rollout", "status", f"daemonset/{name}", f"--timeout={ROLLOUT_TIMEOUT}s",
                            timeout=ROLLOUT_TIMEOUT + 30)
    finally:
        api_delete(api, f"{apps_path('daemonsets')}/{name}")


# -- 6. Jobs -------------------------------------------------------------------------------------------------


def test_jobs_complete_or_fail_at_their_backoff_limit(lab: Lab, kubectl: dict[str, Kubectl], api: KubeApi) -> None:
    sw = Stopwatch("jobs")
    jobs = f"/apis/batch/v1/namespaces/{NS}/jobs"
    ok = job("ok", "sleep 1", completions=3, parallelism=2, backoff_limit=6)
    # Two pods fail (the first, and one retry after the 10 s pod-failure backoff), then the Job does.
    failing = job("failing", "exit 1", completions=1, parallelism=1, backoff_limit=1)
    recorder = WatchRecorder(lab.kubeconfig, "pods", NS, label_selector="batch.kubernetes.io/job-name=ok")
    try:
        with recorder:
            kubectl["1.35"].apply([ok, failing])
            kubectl["1.20"].run("wait", "--for=condition=complete", "job/ok", "--timeout=120s", timeout=150)
            sw.lap("job ok Complete (kubectl 1.20 wait)")
        done = api_get(api, f"{jobs}/ok")
        assert done is not None
        complete = condition(done, "Complete")
        assert complete is not None and complete["status"] == "True", done["status"]
        assert done["status"].get("succeeded") == 3 and not done["status"].get("failed"), done["status"]
        assert not done["status"].get("active"), done["status"]
        pods = pods_of(api, "batch.kubernetes.io/job-name=ok")
        assert sorted(phase(p) or "" for p in pods) == ["Succeeded"] * 3, [brief(p) for p in pods]
        most = max(sum(is_active(p) for p in state.values()) for _e, state in recorder.states())
        print(f"[jobs] ok: at most {most} pods active at once (parallelism 2)")
        assert most <= 2

        kubectl["1.35"].run("wait", "--for=condition=failed", "job/failing", "--timeout=120s", timeout=150)
        sw.lap("job failing Failed (kubectl 1.35 wait)")
        failed = api_get(api, f"{jobs}/failing")
        assert failed is not None
        cond = condition(failed, "Failed")
        assert cond is not None and cond["status"] == "True" and cond["reason"] == "BackoffLimitExceeded", \
            failed["status"]
        assert failed["status"].get("failed") == 2 and not failed["status"].get("succeeded"), failed["status"]
        pods = pods_of(api, "batch.kubernetes.io/job-name=failing")
        assert sorted(phase(p) or "" for p in pods) == ["Failed", "Failed"], [brief(p) for p in pods]
    finally:
        for name in ("ok", "failing"):
            api_delete(api, f"{jobs}/{name}")


# -- 7. deletion ---------------------------------------------------------------------------------------------


def test_deleting_a_deployment_removes_its_replica_sets_pods_and_containers(
        lab: Lab, kubectl: dict[str, Kubectl], api: KubeApi) -> None:
    sw = Stopwatch("delete-deployment")
    name = "doomed"
    kubectl["1.35"].apply(deployment(name, 3))
    pods = wait_pods(lab, api, f"app={name}", 3)
    uids = {p["metadata"]["uid"] for p in pods}
    assert len(replica_sets(api, name)) == 1
    assert sum(len(v) for v in containers_of(lab, uids).values()) == 2 * 3  # a pause and an app container each
    sw.lap("3 replicas Running")

    kubectl["1.20"].run("delete", "deployment", name, "--timeout=120s", timeout=150)
    wait_gone(api, apps_path("replicasets"), f"app={name}")
    wait_gone(api, pods_path(), f"app={name}")
    wait_until(lambda: not containers_of(lab, uids), GONE_TIMEOUT,
               lambda: f"containers left on the nodes: {containers_of(lab, uids)}")
    sw.lap("ReplicaSet, pods and containers gone")


def test_deleting_a_namespace_removes_everything_in_it(lab: Lab, kubectl: dict[str, Kubectl], api: KubeApi) -> None:
    sw = Stopwatch("delete-namespace")
    ns = f"doomed-{suffix()}"
    # kubectl 1.32+ `create namespace` POSTs a protobuf body, which the API server does not read yet.
    kubectl["1.20"].run("create", "namespace", ns)
    try:
        kubectl["1.35"].apply([
            deployment("inside", 2, namespace=ns),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": ns},
             "data": {"colour": "blue"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "inside", "namespace": ns},
             "spec": {"selector": {"app": "inside"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        ])
        pods = wait_pods(lab, api, "app=inside", 2, namespace=ns)
        uids = {p["metadata"]["uid"] for p in pods}
        assert containers_of(lab, uids)
        sw.lap("deployment, configmap and service in the namespace")

        kubectl["1.20"].run("delete", "namespace", ns, "--timeout=120s", timeout=150)
        wait_until(lambda: api_get(api, f"/api/v1/namespaces/{ns}") is None, GONE_TIMEOUT,
                   lambda: f"namespace: {json.dumps(api_get(api, f'/api/v1/namespaces/{ns}'))}")
        sw.lap("namespace gone")
        for path in (pods_path(ns), apps_path("deployments", ns), apps_path("replicasets", ns),
                     f"/api/v1/namespaces/{ns}/configmaps", f"/api/v1/namespaces/{ns}/services",
                     f"/api/v1/namespaces/{ns}/endpoints", f"/api/v1/namespaces/{ns}/serviceaccounts",
                     f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"):
            assert api_items(api, path) == [], f"{path} still lists objects"
        wait_until(lambda: not containers_of(lab, uids), GONE_TIMEOUT,
                   lambda: f"containers left on the nodes: {containers_of(lab, uids)}")
        sw.lap("containers gone")
    finally:
        api_delete(api, f"/api/v1/namespaces/{ns}")
