"""Benchmark: pod create→Running through the whole stack, next to the raw Docker floor.

Brings up a one-node lab (a unique name, a temporary state dir; or uses the lab named by
``--lab``), then measures on that node, in one run:

- pods: the time from the return of a pod's POST to the first event of a watch on pods
  that shows it with phase Running, for 20 pods created one by one (each waits for the
  previous to run) and for 30 created at once. Pods are pinned with ``spec.nodeName`` and
  run ``skiff/app:1.0`` (imagePullPolicy Never) with ``sleep 3600``.
- the floor: the same containers made by hand through the raw Docker API on the node's
  dockerd (the docker SDK on its socket): per pod, create + start the pause container
  (``--network none``), create a veth pair in the node's namespace with pyroute2, move one
  end into the pause container's netns (``/proc/<pid>/ns/net``) as eth0, give it an
  address from a spare range (10.244.250.0/24, inside that netns only) and set both ends
  up, then create + start the app container in the pause container's network and IPC
  namespaces. 20 one by one, and 30 at once (one thread each).

It prints p50/p99 of both and their ratios against issue 3's targets: pods' p50 <= 1.3x
the floor's, pods' p99 <= 1.5 s. With 20 or 30 samples p99 (nearest rank) is the maximum.
For the rounds at once it also prints "all done", from the start to the last pod Running
(throughput: the floor starts all 30 together, so they share dockerd and all finish late,
while a pipeline finishes some early; its p50 is no floor for another schedule's p50). The
machine's load average is printed too: other work on the machine shows in every figure.
One pod of each kind is started first to warm caches and is not counted. One by one, floor
pods and pods take turns (so that load from elsewhere weighs on both alike); at once, the
floor goes first. Everything is removed (and waited for) between rounds, so each round
starts on an empty node.

Everything is cleaned up on the way out, also on failure or Ctrl-C: the pods, the floor's
containers and veths, and the lab if the benchmark brought it up.

Run from the repository root, as root:

    .venv/bin/python -m bench.pod_startup [--cni-plugin skiff|reference] [--one-by-one 20] [--at-once 30]
    .venv/bin/python -m bench.pod_startup --lab NAME [--state-dir DIR]     # reuse a running lab (node 1)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import math
import os
import secrets
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cni.netlink import entered, open_netns
from node_agent.lab.controlplane import skiff_command
from node_agent.lab.dockerd import docker_client
from node_agent.lab.network import netns_path
from node_agent.lab.state import LabState, load_state, resolve_state_dir
from skiff.client import ApiClient, ApiConnectionError, NotFound, load_kubeconfig

PAUSE_IMAGE = "skiff/pause:1.0"
APP_IMAGE = "skiff/app:1.0"
COMMAND = ["sleep", "3600"]
FLOOR_RANGE = ipaddress.IPv4Network("10.244.250.0/24")  # lab pod CIDRs are 10.244.<1..50>.0/24
RUN_LABEL = "skiff.bench/run"
FLOOR_LABEL = "io.skiff.bench.run"  # not io.skiff.managed: the agent leaves these alone
TARGET_P50_RATIO = 1.3
TARGET_P99 = 1.5
LAB_UP_TIMEOUT = 300.0
RUNNING_TIMEOUT = 60.0
DELETE_TIMEOUT = 90.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Round:
    label: str
    latencies: list[float] = field(default_factory=list)  # seconds
    makespan: float | None = None  # at once: from the start to the last one done

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)


# ---- the lab ------------------------------------------------------------------------------


@dataclass
class Node:
    lab: str
    state_dir: Path
    name: str
    netns: str
    docker_host: str
    kubeconfig: Path
    cni_plugin: str


def node_of(state: LabState) -> Node:
    node = state.node(1)
    if node is None:
        raise SystemExit(f"lab {state.name} has no node 1")
    return Node(state.name, Path(state.state_dir), node.name, node.netns, node.docker_host,
                state.layout.kubeconfig, state.cni_plugin)


def random_suffix(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def lab_command(*args: str, timeout: float) -> None:
    proc = subprocess.run([*skiff_command(), "lab", *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"skiff lab {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")


@contextlib.contextmanager
def bench_lab(args: argparse.Namespace) -> Iterator[Node]:
    """The given lab, or a fresh one-node lab that is taken down afterwards."""
    if args.lab:
        state = load_state(resolve_state_dir(args.lab, args.state_dir))
        if state is None:
            raise SystemExit(f"lab {args.lab} does not exist; run `skiff lab up --name {args.lab}`")
        if args.cni_plugin and args.cni_plugin != state.cni_plugin:
            print(f"note: lab {args.lab} uses the {state.cni_plugin} CNI plugin, not {args.cni_plugin}")
        yield node_of(state)
        return
    name = "b" + random_suffix(5)
    root = Path(tempfile.mkdtemp(prefix="skb-", dir="/tmp"))
    state_dir = root / name
    common = ("--name", name, "--state-dir", str(state_dir))
    try:
        print(f"bringing up lab {name} (1 node, CNI plugin {args.cni_plugin or 'skiff'}) in {state_dir} ...",
              flush=True)
        started = time.monotonic()
        lab_command("up", *common, "--nodes", "1", "--cni-plugin", args.cni_plugin or "skiff",
                    timeout=LAB_UP_TIMEOUT)
        print(f"lab up in {time.monotonic() - started:.1f}s", flush=True)
        state = load_state(state_dir)
        assert state is not None
        yield node_of(state)
    finally:
        print(f"taking lab {name} down ...", flush=True)
        try:
            lab_command("down", *common, timeout=LAB_UP_TIMEOUT)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"warning: {exc}; run `skiff lab down --name {name} --state-dir {state_dir}`", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)


# ---- the floor: raw Docker + a hand-made veth ------------------------------------------------


class Floor:
    """Pause + app containers and a veth made by hand on the node; everything labelled or named by run."""

    def __init__(self, node: Node, run: str) -> None:
        self.node = node
        self.run = run
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def _docker(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = docker_client(self.node.docker_host, timeout=60)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def host_veth(self, index: int) -> str:
        return f"fh{self.run}{index:03d}"

    def pod(self, index: int) -> tuple[float, float]:
        """One floor pod; returns when it began and when it was done (``time.perf_counter``)."""
        from pyroute2.iproute.linux import IPRoute

        client = self._docker()
        labels = {FLOOR_LABEL: self.run}
        started = time.perf_counter()
        pause = client.create_container(PAUSE_IMAGE, labels=labels, host_config=client.create_host_config(
            network_mode="none", ipc_mode="shareable"))["Id"]
        client.start(pause)
        pid = int(client.inspect_container(pause)["State"]["Pid"])

        host_name, peer_name = self.host_veth(index), f"fc{self.run}{index:03d}"
        node_fd = open_netns(str(netns_path(self.node.netns)))
        pod_fd = open_netns(f"/proc/{pid}/ns/net")
        try:
            with entered(node_fd):
                node_ipr = IPRoute()
            with entered(pod_fd):
                pod_ipr = IPRoute()
            try:
                node_ipr.link("add", ifname=host_name, kind="veth", peer=peer_name)
                peer = node_ipr.link_lookup(ifname=peer_name)[0]
                node_ipr.link("set", index=peer, net_ns_fd=pod_fd)
                inside = pod_ipr.link_lookup(ifname=peer_name)[0]
                pod_ipr.link("set", index=inside, ifname="eth0")
                address = FLOOR_RANGE.network_address + 2 + index
                pod_ipr.addr("add", index=inside, address=str(address), prefixlen=FLOOR_RANGE.prefixlen)
                pod_ipr.link("set", index=inside, state="up")
                node_ipr.link("set", index=node_ipr.link_lookup(ifname=host_name)[0], state="up")
            finally:
                node_ipr.close()
                pod_ipr.close()
        finally:
            os.close(node_fd)
            os.close(pod_fd)

        app = client.create_container(APP_IMAGE, command=COMMAND, labels=labels, host_config=client.create_host_config(
            network_mode=f"container:{pause}", ipc_mode=f"container:{pause}"))["Id"]
        client.start(app)
        return started, time.perf_counter()

    def at_once(self, count: int, first_index: int) -> Round:
        result = Round("floor, at once")
        barrier = threading.Barrier(count)

        def one(i: int) -> tuple[float, float]:
            self._docker()  # connect before the start line, as the API client is connected for pods
            barrier.wait()
            return self.pod(first_index + i)

        with ThreadPoolExecutor(count) as pool:
            spans = list(pool.map(one, range(count)))
        result.latencies = [done - began for began, done in spans]
        result.makespan = max(done for _, done in spans) - min(began for began, _ in spans)
        return result

    def clean(self) -> None:
        """Remove every container and veth of this run (idempotent)."""
        from pyroute2.iproute.linux import IPRoute

        client = self._docker()
        containers = client.containers(all=True, quiet=True, filters={"label": f"{FLOOR_LABEL}={self.run}"})
        # Apps first: a pause container cannot go while another container uses its namespaces.
        ids = [c["Id"] for c in containers]
        apps = [i for i in ids if client.inspect_container(i)["HostConfig"]["NetworkMode"].startswith("container:")]
        for cid in apps + [i for i in ids if i not in apps]:
            with contextlib.suppress(Exception):
                client.remove_container(cid, force=True)
        fd = open_netns(str(netns_path(self.node.netns)))
        try:
            with entered(fd):
                ipr = IPRoute()
        finally:
            os.close(fd)
        try:
            prefix = f"fh{self.run}"
            for link in ipr.get_links():
                name = link.get_attr("IFLA_IFNAME") or ""
                if name.startswith(prefix):
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=link["index"])
        finally:
            ipr.close()

    def close(self) -> None:
        for client in self._clients:
            client.close()


# ---- pods through the API -------------------------------------------------------------------


class PodWatch:
    """One watch on the run's pods: when each was first seen Running, and when each was deleted."""

    def __init__(self, client: ApiClient, namespace: str, run: str) -> None:
        self.client = client
        self.namespace = namespace
        self.selector = f"{RUN_LABEL}={run}"
        self.running: dict[str, float] = {}
        self.deleted: set[str] = set()
        self.changed = asyncio.Condition()
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listed = await self.client.list("pods", self.namespace, label_selector=self.selector)
        self._task = asyncio.create_task(self._follow(str(listed["metadata"]["resourceVersion"])))

    async def _follow(self, version: str) -> None:
        try:
            while True:  # the server may end a watch; resume from the last version seen
                try:
                    async for event in self.client.watch("pods", self.namespace, resource_version=version,
                                                         label_selector=self.selector):
                        now = time.perf_counter()
                        obj = event.object
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if event.type == "BOOKMARK":
                            continue
                        name = obj["metadata"]["name"]
                        async with self.changed:
                            if event.type == "DELETED":
                                self.deleted.add(name)
                            elif (obj.get("status") or {}).get("phase") == "Running":
                                self.running.setdefault(name, now)
                            self.changed.notify_all()
                except ApiConnectionError:
                    await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced by wait_for
            self.error = exc
            async with self.changed:
                self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
        async def wait() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: predicate() or self.error is not None)
            if self.error is not None:
                raise RuntimeError(f"the pod watch failed: {self.error!r}") from self.error

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what()}") from None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Pods:
    def __init__(self, client: ApiClient, watch: PodWatch, node: Node, namespace: str, run: str) -> None:
        self.client = client
        self.watch = watch
        self.node = node
        self.namespace = namespace
        self.run = run
        self.created: list[str] = []
        self.uids: set[str] = set()

    def manifest(self, name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {RUN_LABEL: self.run}},
                "spec": {"nodeName": self.node.name, "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "app", "image": APP_IMAGE, "imagePullPolicy": "Never",
                                         "command": COMMAND}]}}

    async def create(self, name: str) -> float:
        """POST the pod; returns the time the POST returned."""
        created = await self.client.create("pods", self.manifest(name), self.namespace)
        self.created.append(name)
        self.uids.add(str(created["metadata"]["uid"]))
        return time.perf_counter()

    async def wait_running(self, names: list[str]) -> None:
        await self.watch.wait_for(lambda: all(n in self.watch.running for n in names), RUNNING_TIMEOUT,
                                  lambda: "Running: " + ", ".join(n for n in names if n not in self.watch.running))

    async def one(self, name: str) -> float:
        """Create one pod and wait until it runs; returns create→Running in seconds."""
        posted = await self.create(name)
        await self.wait_running([name])
        return self.watch.running[name] - posted

    async def at_once(self, prefix: str, count: int) -> Round:
        names = [f"{prefix}-{i:02d}" for i in range(count)]
        began = time.perf_counter()
        posted = await asyncio.gather(*(self.create(n) for n in names))
        await self.wait_running(names)
        return Round("pods, at once", [self.watch.running[n] - t for n, t in zip(names, posted, strict=True)],
                     max(self.watch.running[n] for n in names) - began)

    async def delete_all(self) -> None:
        """Delete every pod this run made and wait until the agent has finished them (final delete)."""
        names = [n for n in self.created if n not in self.watch.deleted]
        for name in names:
            with contextlib.suppress(NotFound):
                await self.client.delete("pods", name, self.namespace)
        await self.watch.wait_for(lambda: all(n in self.watch.deleted for n in names), DELETE_TIMEOUT,
                                  lambda: "deletion of " + ", ".join(n for n in names if n not in self.watch.deleted))
        await asyncio.to_thread(self._wait_containers_gone)

    def _wait_containers_gone(self) -> None:
        client = docker_client(self.node.docker_host, timeout=30)
        deadline = time.monotonic() + DELETE_TIMEOUT

        def left() -> bool:
            found = client.containers(all=True, filters={"label": "io.skiff.managed=true"})
            return any((c.get("Labels") or {}).get("io.kubernetes.pod.uid") in self.uids for c in found)

        try:
            while left():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"containers of deleted pods still on {self.node.name}")
                time.sleep(0.1)
        finally:
            client.close()


# ---- the run --------------------------------------------------------------------------------


async def measure(node: Node, args: argparse.Namespace) -> list[tuple[Round, Round]]:
    run = random_suffix(4)
    namespace = "default"
    floor = Floor(node, run)
    rounds: list[tuple[Round, Round]] = []
    async with ApiClient(load_kubeconfig(node.kubeconfig)) as client:
        watch = PodWatch(client, namespace, run)
        pods = Pods(client, watch, node, namespace, run)
        await watch.start()
        try:
            # warm-up, not counted: the first pod pays for caches (images, the plugin's imports, ...)
            await asyncio.to_thread(floor.pod, 0)
            await asyncio.to_thread(floor.clean)
            await pods.create(f"bench-{run}-warm")
            await pods.wait_running([f"bench-{run}-warm"])
            await pods.delete_all()

            # One by one, a floor pod and a pod in turn, so that load from elsewhere on the machine
            # weighs on both alike.
            print(f"{args.one_by_one} one by one ...", flush=True)
            floor_seq, pods_seq = Round("floor, one by one"), Round("pods, one by one")
            for i in range(args.one_by_one):
                began, done = await asyncio.to_thread(floor.pod, 1 + i)
                floor_seq.latencies.append(done - began)
                pods_seq.latencies.append(await pods.one(f"bench-{run}-s-{i:02d}"))
            await asyncio.to_thread(floor.clean)
            await pods.delete_all()
            rounds.append((floor_seq, pods_seq))

            print(f"{args.at_once} at once ...", flush=True)
            floor_par = await asyncio.to_thread(floor.at_once, args.at_once, 1)
            await asyncio.to_thread(floor.clean)
            pods_par = await pods.at_once(f"bench-{run}-c", args.at_once)
            await pods.delete_all()
            rounds.append((floor_par, pods_par))
        finally:
            with contextlib.suppress(Exception):
                await pods.delete_all()
            await watch.stop()
            try:
                await asyncio.to_thread(floor.clean)
            finally:
                floor.close()
    return rounds


def report(node: Node, rounds: list[tuple[Round, Round]], load: tuple[float, float]) -> bool:
    print(f"\npod startup on {node.name} (lab {node.lab}, CNI plugin {node.cni_plugin}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end); "
          f"create→Running as seen through a watch; floor = raw Docker API + veth by hand")
    print(f"{'':20} {'n':>3} {'p50':>8} {'p99':>8} {'mean':>8} {'all done':>9}")
    ok = True
    for floor, pods in rounds:
        for r in (floor, pods):
            total = f"{r.makespan:>8.3f}s" if r.makespan is not None else f"{'':>9}"
            print(f"{r.label:20} {len(r.latencies):>3} {r.p50:>7.3f}s {r.p99:>7.3f}s "
                  f"{statistics.fmean(r.latencies):>7.3f}s {total}")
    print()
    for floor, pods in rounds:
        ratio = pods.p50 / floor.p50
        ratio_ok, p99_ok = ratio <= TARGET_P50_RATIO, pods.p99 <= TARGET_P99
        ok = ok and ratio_ok and p99_ok
        what = pods.label.removeprefix("pods, ")
        print(f"{what:11}  p50 ratio pods/floor {ratio:.2f}x (target <= {TARGET_P50_RATIO}x: "
              f"{'met' if ratio_ok else 'MISSED'});  pods p99 {pods.p99:.3f}s "
              f"(target <= {TARGET_P99}s: {'met' if p99_ok else 'MISSED'});  p99 ratio {pods.p99 / floor.p99:.2f}x"
              + (f";  all done {pods.makespan / floor.makespan:.2f}x" if pods.makespan and floor.makespan else ""))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.pod_startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", default=None, help="use this running lab (its node 1) instead of a new one")
    parser.add_argument("--state-dir", type=Path, default=None, help="the state dir of --lab, if not the default")
    parser.add_argument("--cni-plugin", choices=("skiff", "reference"), default=None,
                        help="the CNI plugin of the new lab (default skiff)")
    parser.add_argument("--one-by-one", type=int, default=20, help="pods created one after the other")
    parser.add_argument("--at-once", type=int, default=30, help="pods created all at once")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.pod_startup needs root (a lab, network namespaces)", file=sys.stderr)
        return 2
    if not 1 <= args.one_by_one <= 200 or not 1 <= args.at_once <= 200:
        parser.error("--one-by-one and --at-once must be between 1 and 200")
    with bench_lab(args) as node:
        load_before = os.getloadavg()[0]
        rounds = asyncio.run(measure(node, args))
        report(node, rounds, (load_before, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
