"""compute_status: phases, conditions and container statuses as kubelet reports them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fakes import docker_time

from node_agent.pod_status import ProbeView, SyncNotes, compute_status
from node_agent.runtime.containers import ContainerRecord, PodRuntime

T0 = 1_800_000_000.0
UID = "u1"


def pod(containers: list[str], init: list[str] | None = None, policy: str = "Always",
        status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": UID},
            "spec": {"restartPolicy": policy, "containers": [{"name": c, "image": "img:1"} for c in containers],
                     "initContainers": [{"name": c, "image": "img:1"} for c in init or []]},
            "status": status or {"phase": "Pending", "qosClass": "Burstable"}}


def rec(name: str, kind: str = "app", status: str = "running", exit_code: int = 0, restart: int = 0,
        started: float = T0, finished: float | None = None, oom: bool = False) -> ContainerRecord:
    return ContainerRecord.from_inspect({
        "Id": f"{name}-{restart}", "Name": f"/k8s_{name}_p_ns_{UID}_{restart}", "Created": docker_time(started - 1),
        "Image": "sha256:abc",
        "Config": {"Image": "img:1", "Labels": {
            "io.kubernetes.pod.uid": UID, "io.kubernetes.pod.name": "p", "io.kubernetes.pod.namespace": "ns",
            "io.kubernetes.container.name": name, "io.kubernetes.container.restartCount": str(restart),
            "io.skiff.container.type": kind, "io.skiff.managed": "true"}},
        "State": {"Status": status, "ExitCode": exit_code, "OOMKilled": oom, "Pid": 1 if status == "running" else 0,
                  "StartedAt": docker_time(started),
                  "FinishedAt": docker_time(finished) if finished else "0001-01-01T00:00:00Z"},
    })


def sandbox() -> ContainerRecord:
    return rec("POD", kind="pause")


def runtime(*records: ContainerRecord) -> PodRuntime:
    return PodRuntime.group([sandbox(), *records]).get(UID) or PodRuntime(UID)


class Unready(ProbeView):
    def ready(self, container_id: str, container: Mapping[str, Any]) -> bool:
        return False


def notes(**kw: Any) -> SyncNotes:
    return SyncNotes(pod_ip="10.244.1.7", sandbox_ready=True, **kw)


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c.get("reason", ""), c.get("message", "")) for c in status["conditions"]}


def test_nothing_started_yet_is_pending_container_creating() -> None:
    s = compute_status(pod(["a"]), PodRuntime(UID), SyncNotes(), ProbeView(), "10.0.0.1", T0)
    assert s["phase"] == "Pending"
    assert s["containerStatuses"] == [{"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}},
                                       "lastState": {}, "ready": False, "restartCount": 0, "image": "img:1",
                                       "imageID": "", "started": False}]
    assert "podIP" not in s and s["hostIP"] == "10.0.0.1" and s["hostIPs"] == [{"ip": "10.0.0.1"}]
    assert s["qosClass"] == "Burstable" and s["startTime"] == "2027-01-15T08:00:00Z"
    assert conds(s)["PodReadyToStartContainers"][0] == "False"
    assert conds(s)["ContainersReady"] == ("False", "ContainersNotReady", "containers with unready status: [a]")


def test_running_and_ready() -> None:
    s = compute_status(pod(["a", "b"]), runtime(rec("a"), rec("b")), notes(), ProbeView(), "10.0.0.1", T0)
    assert s["phase"] == "Running" and s["podIP"] == "10.244.1.7" and s["podIPs"] == [{"ip": "10.244.1.7"}]
    a = s["containerStatuses"][0]
    assert a["state"] == {"running": {"startedAt": "2027-01-15T08:00:00Z"}}
    assert a["ready"] is True and a["started"] is True and a["containerID"] == "docker://a-0"
    assert a["imageID"] == "docker://sha256:abc"
    assert {k: v[0] for k, v in conds(s).items()} == {"PodReadyToStartContainers": "True", "Initialized": "True",
                                                      "Ready": "True", "ContainersReady": "True",
                                                      "PodScheduled": "True"}
    assert [c["type"] for c in s["conditions"]] == ["PodReadyToStartContainers", "Initialized", "Ready",
                                                    "ContainersReady", "PodScheduled"]


def test_unready_container() -> None:
    s = compute_status(pod(["a", "b"]), runtime(rec("a"), rec("b")), notes(), Unready(), "10.0.0.1", T0)
    assert conds(s)["Ready"] == ("False", "ContainersNotReady", "containers with unready status: [a b]")


def test_crash_loop_shows_waiting_with_last_state() -> None:
    msg = "back-off 10s restarting failed container=a pod=p_ns(u1)"
    rt = runtime(rec("a", status="exited", exit_code=2, restart=1, finished=T0 + 5),
                 rec("a", status="exited", exit_code=1, restart=0, finished=T0 + 1))
    s = compute_status(pod(["a"]), rt, notes(waiting={"a": ("CrashLoopBackOff", msg)}), ProbeView(), "h", T0)
    a = s["containerStatuses"][0]
    assert a["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
    assert a["lastState"]["terminated"] == {"exitCode": 2, "reason": "Error", "startedAt": "2027-01-15T08:00:00Z",
                                            "finishedAt": "2027-01-15T08:00:05Z", "containerID": "docker://a-1"}
    assert a["restartCount"] == 1 and s["phase"] == "Running"


def test_previous_instance_is_last_state_of_a_running_container() -> None:
    rt = runtime(rec("a", restart=1), rec("a", status="exited", exit_code=137, restart=0, finished=T0, oom=True))
    a = compute_status(pod(["a"]), rt, notes(), ProbeView(), "h", T0)["containerStatuses"][0]
    assert a["lastState"]["terminated"]["reason"] == "OOMKilled" and a["restartCount"] == 1


def test_succeeded_and_failed() -> None:
    done = runtime(rec("a", status="exited", finished=T0), rec("b", status="exited", finished=T0))
    s = compute_status(pod(["a", "b"], policy="OnFailure"), done, notes(), ProbeView(), "h", T0)
    assert s["phase"] == "Succeeded"
    assert conds(s)["Ready"][:2] == ("False", "PodCompleted")
    assert s["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    failed = runtime(rec("a", status="exited", exit_code=1, finished=T0), rec("b", status="exited", finished=T0))
    assert compute_status(pod(["a", "b"], policy="Never"), failed, notes(), ProbeView(), "h", T0)["phase"] == "Failed"
    assert compute_status(pod(["a", "b"], policy="Always"), failed, notes(), ProbeView(), "h", T0)["phase"] == \
        "Running"


def test_init_containers() -> None:
    p = pod(["a"], init=["i1", "i2"])
    s = compute_status(p, runtime(rec("i1", kind="init", status="exited", finished=T0), rec("i2", kind="init")),
                       notes(), ProbeView(), "h", T0)
    assert s["phase"] == "Pending"
    assert conds(s)["Initialized"] == ("False", "ContainersNotInitialized", "containers with incomplete status: [i2]")
    init = s["initContainerStatuses"]
    assert init[0]["state"]["terminated"]["reason"] == "Completed" and init[0]["ready"] is True
    assert "running" in init[1]["state"] and init[1]["ready"] is False
    assert s["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    failed = runtime(rec("i1", kind="init", status="exited", exit_code=1, finished=T0))
    assert compute_status(pod(["a"], init=["i1"], policy="Never"), failed, notes(), ProbeView(), "h", T0)[
        "phase"] == "Failed"


def test_transition_times_are_kept_while_status_is_unchanged() -> None:
    first = compute_status(pod(["a"]), runtime(rec("a")), notes(), ProbeView(), "h", T0)
    later = compute_status(pod(["a"], status=first), runtime(rec("a")), notes(), ProbeView(), "h", T0 + 60)
    assert later == first  # nothing changed: nothing to write
    unready = compute_status(pod(["a"], status=first), runtime(rec("a")), notes(), Unready(), "h", T0 + 60)
    times = {c["type"]: c["lastTransitionTime"] for c in unready["conditions"]}
    assert times["Ready"] == "2027-01-15T08:01:00Z" and times["Initialized"] == "2027-01-15T08:00:00Z"


def test_terminal_phase_sticks() -> None:
    s = compute_status(pod(["a"], status={"phase": "Succeeded", "podIP": "10.244.1.9"}), PodRuntime(UID),
                       SyncNotes(), ProbeView(), "h", T0)
    assert s["phase"] == "Succeeded" and s["podIP"] == "10.244.1.9"
