"""Issue 4's restart-safety acceptance, in a real three-node lab with a split control plane
(``skiff lab up --control-plane split``: the API server alone, plus ``skiff scheduler`` and
``skiff controller-manager`` as processes of their own, leader-elected on the lab's short leases).

A Deployment is scaled through a sequence of sizes; in every step the test kills -9 the
controller manager and the scheduler, each at a moment when it has work in flight (the
ReplicaSet acting on the new size; pods waiting for a node, starting or terminating), and starts
it again the lab's way: mostly with the lab's own code, as ``skiff lab up`` would, and a few
times with ``skiff lab up`` itself. Each kill waits until the previous replacement holds its
Lease, so that every kill hits the acting leader. 10 kills of each.

At the end: exactly the desired pods, all owned by the Deployment's one ReplicaSet, Running,
Ready and on a node; nothing Pending, terminating or orphaned; the Deployment's status
complete. And, replaying every state the API showed, the ReplicaSet never created a pod beyond
its spec.replicas (what lost expectations after a restart would do, and what the end state alone
would hide, as the extra pods get deleted again), and the Deployment never got a second
ReplicaSet.

Then ``skiff lab status`` shows the split control plane and its lab timings, and ``skiff lab up
--control-plane single`` turns the lab into one ``skiff server`` again (the scheduler and controller
manager stop, the server's own act), a mode a later plain ``skiff lab up`` keeps.

The lab has its own name (``r`` + 4 random characters) and state dir under a fresh /tmp
directory, and is taken down in a ``finally``. The test waits on conditions with deadlines and
prints how long each step took (``pytest -s``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from node_agent.lab.controlplane import COMPONENTS, CONTROLLER_MANAGER, SCHEDULER, Component, KubeApi, node_ready
from node_agent.lab.processes import process_of, wait_gone
from node_agent.lab.state import lab_locked, load_state
from node_agent.lab.up import ensure_split_control_plane

from .labutil import (
    DOWN_TIMEOUT,
    LAB_SKIPS,
    READY_TIMEOUT,
    Lab,
    Obj,
    Stopwatch,
    WatchRecorder,
    api_get,
    api_items,
    api_write,
    brief,
    is_active,
    is_ready,
    phase,
    wait_until,
)

pytestmark = LAB_SKIPS

NS = "default"
NODES = 3
INITIAL = 3
SIZES = (9, 4, 12, 6, 10, 3, 11, 5, 8, 7)  # one step each; every step kills both components once
# Restarts done by `skiff lab up` itself (step index, component); the others use the lab's code in-process.
CLI_RESTARTS = {(3, "controller-manager"), (6, "scheduler")}
LEAD_TIMEOUT = 60.0  # a replacement taking its Lease: python start-up + the dead holder's 4 s lease
ACTING_TIMEOUT = 60.0  # the ReplicaSet acting on a new size (the controller manager may be starting)
BUSY_WAIT = 8.0  # how long to look for a moment with work in flight before killing anyway
CONVERGE_TIMEOUT = 150.0
KILL_TIMEOUT = 10.0
# The ReplicaSet controller may act on a spec.replicas a little older than the test's watch shows (its
# informer lags): a pod created while more are active than any spec.replicas of this many seconds is one too many.
SIZE_LAG = 10.0
FAST_POLL = 0.02  # polling the watches' state: no request
APP_COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


def suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="skr-", dir="/tmp"))
    lab = Lab("r" + suffix(), root / "lab", NODES)
    try:
        start = time.monotonic()
        lab.skiff("up", "--nodes", str(NODES), "--control-plane", "split", "--wait", str(READY_TIMEOUT))
        api = lab.api()
        names = {lab.node_name(i) for i in range(1, NODES + 1)}
        wait_until(lambda: names <= {n["metadata"]["name"] for n in api.nodes() if node_ready(n)}, READY_TIMEOUT,
                   lambda: f"nodes not Ready: {[n['metadata']['name'] for n in api.nodes() if not node_ready(n)]}")
        print(f"[lab {lab.name}] up (split control plane) with {NODES} Ready nodes in "
              f"{time.monotonic() - start:.1f}s")
        yield lab
    finally:
        try:
            lab.skiff("down", timeout=DOWN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(root, ignore_errors=True)


def deployment(name: str, replicas: int) -> Obj:
    labels = {"app": name}
    container = {"name": "app", "image": "skiff/app:1.0", "imagePullPolicy": "IfNotPresent", "command": APP_COMMAND}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]}}}}


def owner_uid(obj: Obj) -> str | None:
    ref = next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
    return None if ref is None else str(ref.get("uid"))


# -- what the API shows, as its watches show it -----------------------------------------------------


class Live:
    """The latest state a WatchRecorder has seen, brought up to date on each call from the events it
    recorded since (no request: cheap enough to poll every few milliseconds)."""

    def __init__(self, recorder: WatchRecorder) -> None:
        self.recorder = recorder
        self.seen = 0
        self.objs = {o["metadata"]["uid"]: o for o in recorder.initial}

    def objects(self) -> list[Obj]:
        events = self.recorder.events[self.seen:]
        self.seen += len(events)
        for event in events:
            uid = event.obj["metadata"]["uid"]
            if event.type == "DELETED":
                self.objs.pop(uid, None)
            else:
                self.objs[uid] = event.obj
        return list(self.objs.values())


def in_flight(pods: list[Obj]) -> str:
    """What the control plane or the agents are still doing with these pods, "" if nothing."""
    active = [p for p in pods if is_active(p)]
    unbound = [p for p in active if not p["spec"].get("nodeName")]
    starting = [p for p in active if p["spec"].get("nodeName") and not is_ready(p)]
    terminating = [p for p in pods if p["metadata"].get("deletionTimestamp")]
    return ", ".join(f"{len(ps)} {what}" for ps, what in ((unbound, "unbound"), (starting, "starting"),
                                                           (terminating, "terminating")) if ps)


def summary(rss: list[Obj], pods: list[Obj]) -> str:
    sets = ", ".join(f"{r['metadata']['name']} spec {r['spec'].get('replicas')} status "
                     f"{(r.get('status') or {}).get('replicas')}" for r in rss)
    return f"replica sets: [{sets}]; pods: {', '.join(sorted(brief(p) for p in pods))}"


# -- killing and restarting the control plane's processes ------------------------------------------


@dataclass
class Kill:
    component: Component
    step: int
    holder: str  # the Lease holder killed
    busy: str  # what was in flight
    at: float  # time.monotonic()


@dataclass
class ControlPlane:
    """Kills the lab's scheduler and controller manager and starts them again, keeping count.
    Who leads is read from a watch on the Leases in kube-system."""

    lab: Lab
    api: KubeApi
    leases: WatchRecorder
    kills: list[Kill] = field(default_factory=list)
    dead: dict[str, set[str]] = field(default_factory=lambda: {c.lease: set() for c in COMPONENTS})

    def __post_init__(self) -> None:
        self.live = Live(self.leases)

    def holder(self, component: Component) -> str:
        lease = next((o for o in self.live.objects() if o["metadata"]["name"] == component.lease), None)
        return "" if lease is None else str((lease.get("spec") or {}).get("holderIdentity") or "")

    def leading(self, component: Component) -> str | None:
        """The Lease holder if it is a live one (not a process this test killed)."""
        holder = self.holder(component)
        return holder if holder and holder not in self.dead[component.lease] else None

    def wait_leading(self, component: Component) -> str:
        return wait_until(lambda: self.leading(component), LEAD_TIMEOUT,
                          lambda: f"no live holder of the {component.lease} lease (holder "
                                  f"{self.holder(component)!r}); log:\n{self.log(component)}", poll=FAST_POLL)

    def log(self, component: Component, lines: int = 40) -> str:
        path = self.lab.state_dir / f"{component.command}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self, component: Component, step: int, busy: str) -> None:
        """kill -9 the recorded process, the Lease holder; wait until it is gone (a zombie is gone:
        PID 1 here does not reap); start it again."""
        holder = self.wait_leading(component)
        state = load_state(self.lab.state_dir)
        assert state is not None
        record = getattr(state, component.attr)
        proc = process_of(record)
        assert proc is not None, f"the lab's {component.command} is not running: {record}"
        os.kill(proc.pid, signal.SIGKILL)
        assert not wait_gone([proc], KILL_TIMEOUT), f"{component.command} pid {proc.pid} survived kill -9"
        self.dead[component.lease].add(holder)
        self.kills.append(Kill(component, step, holder, busy or "nothing in flight", time.monotonic()))
        if (step, component.command) in CLI_RESTARTS:
            self.lab.skiff("up", "--wait", str(READY_TIMEOUT))  # returns once the replacement holds the Lease
        else:
            self.restart_in_process()
        state = load_state(self.lab.state_dir)
        assert state is not None and process_of(getattr(state, component.attr)) is not None

    def restart_in_process(self) -> None:
        """What `skiff lab up` does for a dead scheduler or controller manager, without the rest of it."""
        state = load_state(self.lab.state_dir)
        assert state is not None
        with lab_locked(self.lab.state_dir), warnings.catch_warnings():
            # The child outlives its Popen object, on purpose (a detached process).
            warnings.simplefilter("ignore", ResourceWarning)
            ensure_split_control_plane(state, self.api)

    def takeovers(self, component: Component) -> list[float]:
        """Seconds from each kill of ``component`` to a new holder of its Lease, from the watch."""
        times = []
        kills = [k for k in self.kills if k.component is component]
        for kill in kills:
            dead = {k.holder for k in kills if k.at <= kill.at}
            new = next((e.at for e in self.leases.events
                        if e.at >= kill.at and e.obj["metadata"]["name"] == component.lease
                        and (holder := (e.obj.get("spec") or {}).get("holderIdentity")) and holder not in dead),
                       None)
            if new is not None:
                times.append(new - kill.at)
        return times

    def problems(self, component: Component) -> list[str]:
        """Tracebacks, errors and lost leaderships in the component's log (its processes share the file)."""
        path = self.lab.state_dir / f"{component.command}.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if "Traceback" in line or " ERROR " in line or "leadership lost" in line]


# -- the end state and its history -----------------------------------------------------------------


def converged(api: KubeApi, app: str, size: int) -> tuple[Obj, Obj, list[Obj]] | None:
    """(Deployment, ReplicaSet, pods) once exactly ``size`` pods of its one ReplicaSet run Ready and
    nothing else of it is left, and its status says so; None until then."""
    d = api_get(api, f"/apis/apps/v1/namespaces/{NS}/deployments/{app}")
    rss = api_items(api, f"/apis/apps/v1/namespaces/{NS}/replicasets", labelSelector=f"app={app}")
    pods = api_items(api, f"/api/v1/namespaces/{NS}/pods", labelSelector=f"app={app}")
    if d is None or len(rss) != 1 or owner_uid(rss[0]) != d["metadata"]["uid"]:
        return None
    if rss[0]["spec"].get("replicas") != size:
        return None
    if len(pods) != size or in_flight(pods):
        return None
    if not all(owner_uid(p) == rss[0]["metadata"]["uid"] and phase(p) == "Running" for p in pods):
        return None
    status = d.get("status") or {}
    if status.get("observedGeneration") != d["metadata"].get("generation"):
        return None
    if any(status.get(k) != size for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")):
        return None
    return d, rss[0], pods


def rv(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


def duplicate_creations(pods: WatchRecorder, rss: WatchRecorder, rs_uid: str) -> list[str]:
    """Pods of the ReplicaSet created while more were active than its spec.replicas had asked for.

    The ReplicaSet controller works from its own informer, which may lag the test's watch, and a
    slow-start batch decided on one spec goes on after the spec changed: a create is measured against
    every spec.replicas in force at some moment of the ``SIZE_LAG`` seconds before it. resourceVersions
    order the two watches (revisions of one store)."""
    specs = [(rv(r), time.monotonic() - 1e9, int(r["spec"].get("replicas") or 0)) for r in rss.initial
             if r["metadata"]["uid"] == rs_uid]
    specs += [(rv(e.obj), e.at, int(e.obj["spec"].get("replicas") or 0)) for e in rss.events
              if e.obj["metadata"]["uid"] == rs_uid and e.type != "DELETED"]
    specs.sort()

    def allowed(revision: int, at: float) -> int:
        """The largest spec.replicas in force at some moment of the window before the create."""
        earlier = [(at_, replicas) for rv_, at_, replicas in specs if rv_ < revision]
        before_window = [replicas for at_, replicas in earlier if at_ < at - SIZE_LAG]
        in_window = [replicas for at_, replicas in earlier if at_ >= at - SIZE_LAG]
        return max([*before_window[-1:], *in_window], default=0)

    found = []
    for event, state in pods.states():
        if event is None or event.type != "ADDED" or owner_uid(event.obj) != rs_uid:
            continue
        active = len([p for p in state.values() if owner_uid(p) == rs_uid and is_active(p)])
        limit = allowed(rv(event.obj), event.at)
        if active > limit:
            found.append(f"{event.obj['metadata']['name']}: {active} active, spec.replicas at most {limit} "
                         f"in the {SIZE_LAG:.0f}s before")
    return found


# -- the test --------------------------------------------------------------------------------------


def test_deployment_scales_exactly_while_scheduler_and_controller_manager_are_killed(lab: Lab) -> None:
    api = lab.api()
    app = "restart-" + suffix()
    watch = Stopwatch("restart safety")
    dpath = f"/apis/apps/v1/namespaces/{NS}/deployments"
    with WatchRecorder(lab.kubeconfig, "pods", NS, label_selector=f"app={app}") as pods, \
            WatchRecorder(lab.kubeconfig, "replicasets", NS, label_selector=f"app={app}") as rss, \
            WatchRecorder(lab.kubeconfig, "leases", "kube-system") as leases:
        cp = ControlPlane(lab, api, leases)
        live_pods, live_rss = Live(pods), Live(rss)

        def state() -> str:
            return summary(live_rss.objects(), live_pods.objects())

        api_write(api, "POST", dpath, deployment(app, INITIAL))
        wait_until(lambda: converged(api, app, INITIAL), CONVERGE_TIMEOUT,
                   lambda: f"{app} did not reach {INITIAL} Ready pods: {state()}")
        watch.lap(f"deployment of {INITIAL} Running")

        for step, size in enumerate(SIZES):
            first, second = (CONTROLLER_MANAGER, SCHEDULER) if step % 2 == 0 else (SCHEDULER, CONTROLLER_MANAGER)
            cp.wait_leading(first)
            before = len([p for p in live_pods.objects() if is_active(p)])
            api_write(api, "PUT", f"{dpath}/{app}/scale", {"apiVersion": "autoscaling/v1", "kind": "Scale",
                                                           "metadata": {"name": app, "namespace": NS},
                                                           "spec": {"replicas": size}})

            def acting(before: int = before, size: int = size) -> str | None:
                """The first kill's moment: the ReplicaSet has begun creating or deleting pods for the new size."""
                objs = live_pods.objects()
                count = len([p for p in objs if is_active(p)])
                return f"{count} active of {size}: {in_flight(objs) or 'nothing in flight'}" \
                    if count != before or count == size else None

            def stuck(size: int = size) -> str:
                return f"the replica set never acted on size {size}: {state()}"

            busy = wait_until(acting, ACTING_TIMEOUT, stuck, poll=FAST_POLL)
            cp.kill(first, step, busy)

            # The second kill's moment: it leads, and pods are waiting for a node, starting or terminating.
            cp.wait_leading(second)
            deadline = time.monotonic() + BUSY_WAIT
            while not (busy := in_flight(live_pods.objects())) and time.monotonic() < deadline:
                time.sleep(FAST_POLL)
            cp.kill(second, step, busy)
            watch.lap(f"step {step + 1}/{len(SIZES)}: {before} -> {size}; killed {first.command} "
                      f"({cp.kills[-2].busy}), then {second.command} ({cp.kills[-1].busy})")

        final = SIZES[-1]
        d, rs, final_pods = wait_until(
            lambda: converged(api, app, final), CONVERGE_TIMEOUT,
            lambda: f"{app} did not settle at {final} Ready pods: {state()}\n"
                    f"scheduler log:\n{cp.log(SCHEDULER)}\ncontroller-manager log:\n{cp.log(CONTROLLER_MANAGER)}")
        watch.lap(f"settled at exactly {final} Running and Ready pods")
        for component in COMPONENTS:
            cp.wait_leading(component)  # so that the last replacements' takeovers are in the record

    # Exactly the desired pods, all of the one ReplicaSet, each Running and Ready on a node; nothing else.
    assert owner_uid(rs) == d["metadata"]["uid"]
    assert len(final_pods) == final and all(owner_uid(p) == rs["metadata"]["uid"] for p in final_pods)
    assert all(phase(p) == "Running" and is_ready(p) and p["spec"].get("nodeName") for p in final_pods)
    pending = [p["metadata"]["name"] for p in api_items(api, f"/api/v1/namespaces/{NS}/pods")
               if phase(p) == "Pending"]
    assert not pending, f"pods still Pending: {pending}"
    orphans = [r["metadata"]["name"] for r in api_items(api, f"/apis/apps/v1/namespaces/{NS}/replicasets")
               if owner_uid(r) != d["metadata"]["uid"]]
    assert not orphans, f"replica sets without the deployment as owner: {orphans}"

    # Never a second ReplicaSet, and never a pod created beyond what was asked for.
    ever = {e.obj["metadata"]["uid"] for e in rss.events} | {r["metadata"]["uid"] for r in rss.initial}
    assert ever == {rs["metadata"]["uid"]}, f"{len(ever)} replica sets seen"
    duplicates = duplicate_creations(pods, rss, rs["metadata"]["uid"])
    assert not duplicates, duplicates

    for component in COMPONENTS:
        kills = [k for k in cp.kills if k.component is component]
        assert len(kills) == len(SIZES), f"{component.command}: {len(kills)} kills"
        took = cp.takeovers(component)
        assert len(took) == len(kills), f"{component.command}: {len(took)} takeovers seen for {len(kills)} kills"
        with_work = sum(1 for k in kills if k.busy != "nothing in flight")
        print(f"[restart safety] {component.command}: {len(kills)} kills ({with_work} with work in flight); "
              f"a replacement held the lease after {min(took):.1f}-{max(took):.1f}s "
              f"(mean {sum(took) / len(took):.1f}s)")
        for line in cp.problems(component)[:20]:
            print(f"[restart safety] {component.command} log: {line}")
    created = sum(1 for e in pods.events if e.type == "ADDED")
    print(f"[restart safety] {created} pods created in all; total {time.monotonic() - watch.start:.1f}s")


def test_lab_status_shows_the_split_control_plane(lab: Lab) -> None:
    proc = lab.skiff("status", check=False)
    out = " ".join(proc.stdout.split())  # rich wraps long lines
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "control plane (split)" in out
    state = load_state(lab.state_dir)
    assert state is not None
    for component in COMPONENTS:
        record = getattr(state, component.attr)
        assert f"{component.command} (pid {record.pid}): running yes" in out, out
        assert psutil.pid_exists(record.pid)
    assert "--leader-elect-lease-duration 4s --leader-elect-renew-deadline 3s --leader-elect-retry-period 1s" in out


def test_up_switches_to_a_single_process_and_keeps_that_mode(lab: Lab) -> None:
    """``--control-plane single`` on a split lab: the scheduler and controller manager stop, the server
    comes back running both in-process (the data survives), and a later plain ``up`` keeps the mode."""
    api = lab.api()
    before = load_state(lab.state_dir)
    assert before is not None and before.control_plane == "split" and before.server is not None
    components = [p for p in (process_of(getattr(before, c.attr)) for c in COMPONENTS) if p is not None]
    assert len(components) == 2

    lab.skiff("up", "--control-plane", "single", "--wait", str(READY_TIMEOUT))
    after = load_state(lab.state_dir)
    assert after is not None and after.control_plane == "single"
    assert after.scheduler is None and after.controller_manager is None
    assert not wait_gone(components, KILL_TIMEOUT), "the split components still run"
    assert after.server is not None and after.server.pid != before.server.pid
    assert "--disable-scheduler" not in after.server.argv

    # The server's own scheduler and controllers act on the Deployment the first test left.
    [d] = api_items(api, f"/apis/apps/v1/namespaces/{NS}/deployments")
    app, size = d["metadata"]["name"], int(d["spec"]["replicas"]) + 1
    api_write(api, "PUT", f"/apis/apps/v1/namespaces/{NS}/deployments/{app}/scale",
              {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": app, "namespace": NS},
               "spec": {"replicas": size}})
    wait_until(lambda: converged(api, app, size), CONVERGE_TIMEOUT,
               lambda: f"{app} did not reach {size} Ready pods under the single-process control plane")

    lab.skiff("up", "--wait", str(READY_TIMEOUT))
    again = load_state(lab.state_dir)
    assert again is not None and again.control_plane == "single" and again.server == after.server
    out = " ".join(lab.skiff("status").stdout.split())
    assert "control plane (single)" in out and "leader election" not in out, out
