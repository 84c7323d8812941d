"""PodSyncer and Killer against FakeDocker: Kubernetes' order, restarts, back-offs, failures, adoption."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock, FakeDocker, FakeNetwork, FakeRecorder

from node_agent.backoff import CrashBackoff
from node_agent.image_puller import ImagePuller
from node_agent.pleg import RuntimeCache
from node_agent.pod_kill import Killer
from node_agent.pod_status import ProbeView, SyncNotes, compute_status
from node_agent.pod_sync import PodSyncer, SyncDeps
from node_agent.prober_manager import ProberManager
from node_agent.runtime.docker_adapter import ExecResult
from node_agent.sandbox import Sandboxes

NODE = "node-1"
UID = "uid-1"
NS = "team"


def make_pod(containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None, **spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": NS, "uid": UID, "resourceVersion": "5"},
            "spec": {"nodeName": NODE, "containers": containers, "initContainers": init or [],
                     "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, **spec},
            "status": {"phase": "Pending", "qosClass": "BestEffort"}}


def app(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "skiff/app:1.0", "imagePullPolicy": "IfNotPresent", **extra}


class StubProbes(ProberManager):
    """Real bookkeeping, but liveness results are set by the test."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.dead: set[str] = set()

    def ensure(self, *args: Any) -> None:
        return None

    def liveness_failed(self, container_id: str) -> bool:
        return container_id in self.dead


@dataclass
class Env:
    clock: FakeClock
    docker: FakeDocker
    net: FakeNetwork
    recorder: FakeRecorder
    cache: RuntimeCache
    syncer: PodSyncer
    killer: Killer
    sandboxes: Sandboxes
    probes: StubProbes
    notes: SyncNotes
    objects: dict[tuple[str, str, str], dict[str, Any]]

    async def sync(self, pod: dict[str, Any]) -> float | None:
        runtime = await self.cache.refresh_pod(pod["metadata"]["uid"])
        return await self.syncer.sync(pod, runtime, self.notes)

    async def status(self, pod: dict[str, Any]) -> dict[str, Any]:
        runtime = await self.cache.refresh_pod(pod["metadata"]["uid"])
        return compute_status(pod, runtime, self.notes, ProbeView(), "10.0.0.10", self.clock())

    def ops(self) -> list[tuple[str, str]]:
        calls, self.docker.calls[:] = list(self.docker.calls), []
        return [(op, name.split("_")[1] + "#" + name.rsplit("_", 1)[1]) for op, name in calls
                if name.startswith("k8s_")]


def build(tmp_path: Path, clock: FakeClock, docker: FakeDocker | None = None,
          objects: dict[tuple[str, str, str], dict[str, Any]] | None = None) -> Env:
    docker = docker or FakeDocker(clock, node_name=NODE)
    net = FakeNetwork()
    recorder = FakeRecorder()
    objects = objects if objects is not None else {}

    def getter(kind: str) -> Any:
        async def get(namespace: str, name: str) -> dict[str, Any] | None:
            return objects.get((kind, namespace, name))
        return get

    sandboxes = Sandboxes(docker, net, tmp_path / "sandboxes", "skiff/pause:1.0", "10.0.0.10", NODE)  # type: ignore
    killer = Killer(docker, sandboxes, recorder)  # type: ignore[arg-type]
    puller = ImagePuller(docker, recorder, getter("secrets"), clock=clock)  # type: ignore[arg-type]
    cache = RuntimeCache(docker)  # type: ignore[arg-type]
    probes = StubProbes(docker, recorder, lambda uid: None)
    syncer = PodSyncer(SyncDeps(
        docker=docker, sandboxes=sandboxes, killer=killer, puller=puller, recorder=recorder,  # type: ignore
        probes=probes, backoff=CrashBackoff(clock=clock), get_configmap=getter("configmaps"),
        get_secret=getter("secrets"), refresh=cache.refresh_pod, pods_dir=tmp_path / "pods", node_ip="10.0.0.10",
        node_name=NODE, clock=clock))
    return Env(clock, docker, net, recorder, cache, syncer, killer, sandboxes, probes, SyncNotes(), objects)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return build(tmp_path, FakeClock())


async def test_new_pod_runs_sandbox_then_init_containers_then_apps(env: Env) -> None:
    pod = make_pod([app("a", command=["sleep", "1"]), app("b")], init=[app("i1"), app("i2")])
    assert await env.sync(pod) is None
    assert env.ops() == [("create", "POD#0"), ("start", "POD#0"), ("create", "i1#0"), ("start", "i1#0")]
    pause = env.docker.by_name(f"k8s_POD_web_{NS}_{UID}_0")
    assert env.net.calls == [("ADD", pause["Id"], f"/proc/{pause['State']['Pid']}/ns/net")]
    assert env.notes.pod_ip == "10.244.1.2"

    await env.sync(pod)  # i1 still running: nothing to do
    assert env.ops() == []
    env.docker.exit(env.docker.by_name(f"k8s_i1_web_{NS}_{UID}_0")["Id"], 0)
    await env.sync(pod)
    assert env.ops() == [("create", "i2#0"), ("start", "i2#0")]
    env.docker.exit(env.docker.by_name(f"k8s_i2_web_{NS}_{UID}_0")["Id"], 0)
    await env.sync(pod)
    assert env.ops() == [("create", "a#0"), ("start", "a#0"), ("create", "b#0"), ("start", "b#0")]
    await env.sync(pod)
    assert env.ops() == []  # idempotent

    a = env.docker.by_name(f"k8s_a_web_{NS}_{UID}_0")
    labels = a["Config"]["Labels"]
    assert labels["io.kubernetes.container.restartCount"] == "0"
    assert labels["io.kubernetes.sandbox.id"] == pause["Id"]
    assert labels["io.skiff.node"] == NODE and labels["io.skiff.container.type"] == "app"
    assert a["HostConfig"]["network_mode"] == f"container:{pause['Id']}"
    assert a["Config"]["Entrypoint"] == ["sleep", "1"]

    status = await env.status(pod)
    assert status["phase"] == "Running" and status["podIP"] == "10.244.1.2"
    assert [s["state"]["terminated"]["reason"] for s in status["initContainerStatuses"]] == ["Completed"] * 2
    assert [r for r in env.recorder.reasons() if r in ("Created", "Started")] == ["Created", "Started"] * 4


async def test_crash_loop_back_off_doubles(env: Env) -> None:
    pod = make_pod([app("c")])
    await env.sync(pod)
    env.ops()

    def latest() -> dict[str, Any]:
        return max(env.docker.named(f"k8s_c_web_{NS}_{UID}_"), key=lambda c: c["Name"])

    env.docker.exit(latest()["Id"], 1)
    assert await env.sync(pod) is None  # first restart is immediate
    assert env.ops() == [("create", "c#1"), ("start", "c#1")]
    assert latest()["Config"]["Labels"]["io.kubernetes.container.restartCount"] == "1"

    env.clock.advance(2)
    env.docker.exit(latest()["Id"], 1)
    delay = await env.sync(pod)
    assert delay == pytest.approx(10)
    assert env.ops() == []
    assert env.notes.waiting["c"] == ("CrashLoopBackOff",
                                      f"back-off 10s restarting failed container=c pod=web_{NS}({UID})")
    assert env.recorder.find("BackOff")[-1].message == f"Back-off restarting failed container c in pod web_{NS}({UID})"
    status = await env.status(pod)
    cs = status["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 1 and cs["restartCount"] == 1
    assert status["phase"] == "Running"

    env.clock.advance(10)
    await env.sync(pod)
    assert env.ops() == [("create", "c#2"), ("start", "c#2")]
    env.docker.exit(latest()["Id"], 1)
    assert await env.sync(pod) == pytest.approx(20)
    assert env.notes.waiting["c"][1].startswith("back-off 20s")
    # Old instances are collected: the latest and one dead one stay.
    assert sorted(c["Name"][-1] for c in env.docker.named(f"k8s_c_web_{NS}_{UID}_")) == ["1", "2"]


@pytest.mark.parametrize(("policy", "code", "restarted"), [
    ("Never", 1, False), ("Never", 0, False), ("OnFailure", 0, False), ("OnFailure", 2, True), ("Always", 0, True)])
async def test_restart_policy(env: Env, policy: str, code: int, restarted: bool) -> None:
    pod = make_pod([app("c")], restartPolicy=policy)
    await env.sync(pod)
    env.docker.exit(env.docker.by_name(f"k8s_c_web_{NS}_{UID}_0")["Id"], code)
    env.ops()
    await env.sync(pod)
    assert (env.ops() == [("create", "c#1"), ("start", "c#1")]) is restarted
    if not restarted:
        status = await env.status(pod)
        assert status["phase"] == ("Succeeded" if code == 0 else "Failed")


async def test_failed_init_container_with_never_fails_the_pod(env: Env) -> None:
    pod = make_pod([app("c")], init=[app("i")], restartPolicy="Never")
    await env.sync(pod)
    env.docker.exit(env.docker.by_name(f"k8s_i_web_{NS}_{UID}_0")["Id"], 1)
    env.ops()
    await env.sync(pod)
    assert env.ops() == []
    status = await env.status(pod)
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"


async def test_agent_restart_adopts_running_containers(env: Env, tmp_path: Path) -> None:
    pod = make_pod([app("a"), app("b")])
    await env.sync(pod)
    fresh = build(tmp_path, env.clock, env.docker)  # a new agent: new caches, same Docker, same data dir
    env.docker.calls.clear()
    assert await fresh.sync(pod) is None
    assert fresh.ops() == []
    assert fresh.net.calls == []  # the network was recorded; no second ADD
    status = await fresh.status(pod)
    assert status["podIP"] == "10.244.1.2"
    assert [s["restartCount"] for s in status["containerStatuses"]] == [0, 0]


async def test_dead_sandbox_is_recreated_and_containers_restart(env: Env) -> None:
    pod = make_pod([app("c")], init=[app("i")])
    await env.sync(pod)
    env.docker.exit(env.docker.by_name(f"k8s_i_web_{NS}_{UID}_0")["Id"], 0)
    await env.sync(pod)
    old_pause = env.docker.by_name(f"k8s_POD_web_{NS}_{UID}_0")["Id"]
    env.ops()
    env.docker.die_all()  # dockerd restarted: every container exited
    await env.sync(pod)
    assert "SandboxChanged" in env.recorder.reasons()
    assert ("DEL", old_pause, "") in env.net.calls  # no netns left: the plugin releases the IP
    assert env.ops() == [("create", "POD#1"), ("start", "POD#1"), ("create", "i#1"), ("start", "i#1"),
                         ("remove", "POD#0")]  # the old sandbox, its network gone, is collected
    env.docker.exit(env.docker.by_name(f"k8s_i_web_{NS}_{UID}_1")["Id"], 0)
    await env.sync(pod)
    assert env.ops() == [("create", "c#1"), ("start", "c#1")]
    assert not list(env.sandboxes.state_dir.glob(f"{old_pause}.json"))


async def test_image_never_pulled(env: Env) -> None:
    pod = make_pod([app("c", image="skiff/missing:1.0", imagePullPolicy="Never"), app("ok")])
    await env.sync(pod)
    assert env.notes.waiting["c"] == (
        "ErrImageNeverPull", 'Container image "skiff/missing:1.0" is not present with pull policy of Never')
    assert ("start", "ok#0") in env.ops()  # the other container is not held back
    assert [e.message for e in env.recorder.find("Failed")] == ["Error: ErrImageNeverPull"]
    assert env.recorder.find("ErrImageNeverPull")[0].type == "Warning"
    status = await env.status(pod)
    assert status["phase"] == "Pending"


async def test_image_pull_error_then_back_off(env: Env) -> None:
    pod = make_pod([app("c", image="example.com/app:2")])
    await env.sync(pod)
    assert env.notes.waiting["c"][0] == "ErrImagePull"
    assert [e.reason for e in env.recorder.events if e.reason in ("Pulling", "Failed")] == ["Pulling", "Failed",
                                                                                             "Failed"]
    env.clock.advance(3)
    await env.sync(pod)
    assert env.notes.waiting["c"] == ("ImagePullBackOff", 'Back-off pulling image "example.com/app:2"')
    assert env.docker.calls.count(("pull", "example.com/app:2")) == 1
    env.clock.advance(10)
    await env.sync(pod)
    assert env.docker.calls.count(("pull", "example.com/app:2")) == 2


async def test_missing_configmap_volume_is_failed_mount(env: Env) -> None:
    pod = make_pod([app("c")], volumes=[{"name": "v", "configMap": {"name": "nope"}}])
    delay = await env.sync(pod)
    assert delay == 2.0
    event = env.recorder.find("FailedMount")[0]
    assert event.type == "Warning" and 'configmap "nope" not found' in event.message
    assert env.docker.containers == {}  # nothing started without its volumes
    status = await env.status(pod)
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert await env.sync(pod) == 4.0  # backing off


async def test_missing_env_reference_is_config_error(env: Env) -> None:
    pod = make_pod([app("c", env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}])])
    await env.sync(pod)
    reason, message = env.notes.waiting["c"]
    assert reason == "CreateContainerConfigError" and message == 'configmap "cm" not found'
    env.objects[("configmaps", NS, "cm")] = {"data": {"k": "v"}}
    await env.sync(pod)
    assert "X=v" in env.docker.by_name(f"k8s_c_web_{NS}_{UID}_0")["Config"]["Env"]


async def test_liveness_failure_kills_and_restarts(env: Env) -> None:
    pod = make_pod([app("c")])
    await env.sync(pod)
    first = env.docker.by_name(f"k8s_c_web_{NS}_{UID}_0")["Id"]
    env.probes.dead.add(first)
    env.ops()
    await env.sync(pod)
    assert env.ops() == [("stop", "c#0"), ("create", "c#1"), ("start", "c#1")]
    assert env.recorder.find("Killing")[0].message == "Container c failed liveness probe, will be restarted"


async def test_sandbox_network_failure_backs_off(env: Env) -> None:
    env.net.fail_add = True
    pod = make_pod([app("c")])
    assert await env.sync(pod) == 5.0
    assert env.recorder.find("FailedCreatePodSandBox")
    assert env.docker.containers == {}  # the pause container was removed again
    env.clock.advance(1)
    assert await env.sync(pod) == 4.0  # an event-triggered sync does not retry early
    assert len([c for c in env.net.calls if c[0] == "ADD"]) == 1
    env.clock.advance(4)
    assert await env.sync(pod) == 10.0  # tried again, failed again: twice the wait


async def test_kill_pod_runs_pre_stop_then_stops_then_tears_down_network(env: Env) -> None:
    pod = make_pod([app("c", lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "echo bye"]}}})])
    await env.sync(pod)
    env.docker.exec_results[("sh", "-c", "echo bye")] = ExecResult(0, b"bye")
    runtime = await env.cache.refresh_pod(UID)
    env.ops()
    await env.killer.kill_pod(pod, runtime, 30, "10.244.1.2")
    assert env.ops() == [("exec", "c#0"), ("stop", "c#0"), ("stop", "POD#0")]
    pause_id = runtime.sandbox.id if runtime.sandbox else ""
    assert env.net.calls[-1][:2] == ("DEL", pause_id)
    assert not list(env.sandboxes.state_dir.glob("*.json"))
    assert env.recorder.find("Killing")[0].message == "Stopping container c"
    await env.killer.remove_pod(await env.cache.refresh_pod(UID))
    assert env.docker.containers == {}


async def test_a_container_with_a_readiness_probe_is_not_ready_before_the_probe_passes(env: Env) -> None:
    """The status written right after the sync that started a container comes before its probe
    workers exist (the next sync creates them): a declared readiness (or startup) probe must read
    as "no result yet", not as "no probe". It read as ready, so the pod went Ready True, False (the
    worker appeared), True (its first probe passed), and a Deployment's availableReplicas went back."""
    probes = ProberManager(env.docker, env.recorder, lambda uid: None)  # type: ignore[arg-type]
    env.syncer.d.probes = probes
    probe = {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 2}
    pod = make_pod([app("web", readinessProbe=probe), app("slow", startupProbe=probe), app("plain")])

    def ready(status: dict[str, Any]) -> dict[str, tuple[bool, bool]]:
        return {s["name"]: (s["started"], s["ready"]) for s in status["containerStatuses"]}

    async def status() -> dict[str, Any]:  # what PodManager.sync writes after each sync
        runtime = await env.cache.refresh_pod(UID)
        return compute_status(pod, runtime, env.notes, probes, "10.0.0.10", env.clock())

    try:
        await env.sync(pod)  # starts the containers; their probe workers do not exist yet
        first = await status()
        assert ready(first) == {"web": (True, False), "slow": (False, False), "plain": (True, True)}
        assert {c["type"]: c["status"] for c in first["conditions"]}["Ready"] == "False"
        await env.sync(pod)  # sees them running: starts the workers, whose results start as "not yet"
        assert ready(await status()) == {"web": (True, False), "slow": (False, False), "plain": (True, True)}
        ids = {name: env.docker.by_name(f"k8s_{name}_web_{NS}_{UID}_0")["Id"] for name in ("web", "slow")}
        deadline = asyncio.get_running_loop().time() + 30
        while not (probes.ready(ids["web"], pod["spec"]["containers"][0])
                   and probes.started(ids["slow"], pod["spec"]["containers"][1])):
            assert asyncio.get_running_loop().time() < deadline, "the probes never passed"
            await asyncio.sleep(0.01)
        assert ready(await status()) == {"web": (True, True), "slow": (True, True), "plain": (True, True)}
    finally:
        await probes.stop_all()
