"""Benchmark: pods scheduled per second over hollow nodes, end to end through the API.

Starts ``skiff server --controllers '' --disable-scheduler --cluster-dns-port 0`` (the
API server alone: the scheduler that binds is the bench's) on 127.0.0.1 in a temporary
data dir, creates N hollow nodes (Node objects with capacity, allocatable and Ready, plus their Leases in
kube-node-lease; no agents), then runs the scheduler in this process while a driver
process creates M pods through the API (concurrent clients over pooled connections)
and watches them get bound. Pods belong to --owners ReplicaSet-like owners (ownerReferences
only: no controller runs), so default spreading is exercised.

Prints:
- pods/s end to end: M / (first pod created -> last pod seen bound by the watch);
- pods/s created (the API's create rate while the scheduler runs alongside);
- the scheduler's own decisions/s: decisions / time spent deciding (filters, scores,
  assume), measured inside the scheduler;
- CPU seconds per pod of the API server, the scheduler and the driver (from /proc), and
  the binding latency (created -> bound) percentiles, to show where the time goes;
- the API requests served per pod (from the server's /metrics: creates, bindings, the
  scheduler's events, which are best-effort and dropped when its queue is full) and the
  server's CPU per request, which compares runs that wrote different numbers of events.

The bench's processes run with the garbage-collector settings of ``skiff server`` (where
the scheduler runs by default). On a shared machine, compare variants in one sitting:
``--server-source DIR`` runs the server from another checkout (e.g. a copy of the code
before a change) and ``--server-profile OUT`` samples it with py-spy (raw stacks;
``--server-profile-gil``: only samples holding the GIL), whose proportions stay
meaningful under load when rates do not.

With --precreate the pods are all created first and the scheduler started afterwards:
that measures scheduling + binding alone (pods/s from scheduler start to last bound).

Target (issue 4): >= 1,000 pods/s end to end with 5,000 nodes and 10,000 pods
(kube-scheduler's performance floor is 680 pods/s at 5,000 nodes).

Run from the repository root (smaller numbers first):

    .venv/bin/python -m bench.scheduler --nodes 500 --pods 1000
    .venv/bin/python -m bench.scheduler [--nodes 5000] [--pods 10000] [--owners 10] [--clients 64] [--precreate]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    from bench.api import cpu_seconds, free_port, skiff_command, stop_server
except ModuleNotFoundError:  # run as a script: bench/ itself is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.api import cpu_seconds, free_port, skiff_command, stop_server

from control_plane.api.server import GC_THRESHOLDS
from control_plane.scheduler.scheduler import Scheduler
from control_plane.scheduler.settings import SchedulerSettings
from skiff.client.api import ApiClient
from skiff.client.backoff import Backoff, RetryPolicy
from skiff.client.kubeconfig import load_kubeconfig

NAMESPACE = "bench"
READY_TIMEOUT = 60.0
TARGET_PODS_PER_SECOND = 1000.0


# ---- the server --------------------------------------------------------------------


def start_server(data_dir: Path, source: Path | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    """``source``: run the server from that checkout instead (A/B comparisons on a busy machine)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(source)) if source is not None else None
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "server.log", "wb")  # stays open as long as the server runs
    proc = subprocess.Popen([*skiff_command(), "server", "--data-dir", str(data_dir), "--port", str(port),
                             "--bind-address", "127.0.0.1", "--controllers", "", "--disable-scheduler",
                             "--cluster-dns-port", "0",
                             "--max-requests-inflight", "2000", "--max-mutating-requests-inflight", "1000"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    kubeconfig = data_dir / "admin.kubeconfig"
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"skiff server exited with {proc.returncode}; see {data_dir / 'server.log'}")
        if kubeconfig.exists():
            try:
                config = load_kubeconfig(kubeconfig)
                ctx = config.ssl_context()
                with urllib.request.urlopen(f"{config.server}/readyz", context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return proc, kubeconfig
            except (OSError, ValueError):
                pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"skiff server not ready after {READY_TIMEOUT}s; see {data_dir / 'server.log'}")
        time.sleep(0.05)


def client_for(kubeconfig: Path) -> ApiClient:
    return ApiClient(load_kubeconfig(kubeconfig), retry=RetryPolicy(attempts=8, backoff=Backoff(0.2, 2, 2)))


async def run_pool(count: int, concurrency: int, one: Any) -> None:
    """``one(i)`` for i in range(count), ``concurrency`` at a time."""
    it = iter(range(count))

    async def worker() -> None:
        for i in it:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def micro_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000000Z"


async def create_nodes(kubeconfig: Path, n: int, concurrency: int) -> None:
    now = micro_time(time.time())
    async with client_for(kubeconfig) as client:
        async def one(i: int) -> None:
            name = f"hollow-{i:05d}"
            await client.create("nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
                "status": {
                    "capacity": {"cpu": "32", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                    "allocatable": {"cpu": "32", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                    "lastHeartbeatTime": now[:19] + "Z", "lastTransitionTime": now[:19] + "Z"}]}})
            await client.create("leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}}, "kube-node-lease")

        await run_pool(n, concurrency, one)


# ---- the driver process: create pods, watch them get bound -------------------------


@dataclass
class DriverResult:
    created: int = 0
    bound: int = 0
    create_errors: int = 0
    first_create: float = 0.0  # time.monotonic(), shared by processes on Linux
    last_create: float = 0.0
    last_bound: float = 0.0
    latencies: list[float] = field(default_factory=list)  # created -> seen bound, seconds
    cpu_seconds: float = 0.0


def pod_body(i: int, owners: list[str]) -> dict[str, Any]:
    owner = owners[i % len(owners)]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"pod-{i:05d}", "labels": {"app": "bench", "owner": f"rs-{i % len(owners)}"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"rs-{owner[:8]}",
                                          "uid": owner, "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"containers": [{"name": "app", "image": "busybox",
                                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
    }


async def drive(kubeconfig: Path, pods: int, owners: list[str], clients: int, create: bool, watch_rv: str,
                ready: Any) -> DriverResult:
    result = DriverResult()
    created_at: dict[str, float] = {}
    bound: set[str] = set()
    all_bound = asyncio.Event()
    async with client_for(kubeconfig) as client:
        async def watch() -> None:
            rv = watch_rv
            while not all_bound.is_set():
                async for kind, pod in client.watch("pods", NAMESPACE, resource_version=rv, timeout_seconds=600):
                    rv = pod.get("metadata", {}).get("resourceVersion") or rv
                    name = pod.get("metadata", {}).get("name")
                    if kind in ("ADDED", "MODIFIED") and pod.get("spec", {}).get("nodeName") and name not in bound:
                        now = time.monotonic()
                        bound.add(name)
                        result.last_bound = now
                        if name in created_at:
                            result.latencies.append(now - created_at[name])
                        if len(bound) == pods:
                            all_bound.set()
                            return

        watcher = asyncio.create_task(watch())
        ready.set()
        if create:
            result.first_create = time.monotonic()

            async def one(i: int) -> None:
                name = f"pod-{i:05d}"
                created_at[name] = time.monotonic()
                try:
                    await client.create("pods", pod_body(i, owners), NAMESPACE)
                    result.created += 1
                except Exception as exc:  # noqa: BLE001 - count and go on
                    result.create_errors += 1
                    if result.create_errors <= 3:
                        print(f"create {name} failed: {exc}", file=sys.stderr)

            await run_pool(pods, clients, one)
            result.last_create = time.monotonic()
        await watcher
    result.bound = len(bound)
    result.cpu_seconds = time.process_time()
    return result


def tune_gc() -> None:
    """The collector settings ``skiff server`` runs with (see control_plane.api.server.gc_ctx):
    the scheduler runs in the server's process by default, and the driver is only load."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def driver_main(kubeconfig: str, pods: int, owners: list[str], clients: int, create: bool, watch_rv: str,
                ready: Any, out: Any) -> None:
    tune_gc()
    result = asyncio.run(drive(Path(kubeconfig), pods, owners, clients, create, watch_rv, ready))
    out.put(asdict(result))


# ---- main ----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def bench(args: argparse.Namespace, data_dir: Path) -> None:
    tune_gc()
    t0 = time.monotonic()
    server, kubeconfig = start_server(data_dir, args.server_source)
    try:
        print(f"server up in {time.monotonic() - t0:.1f}s (pid {server.pid}, data {data_dir})")
        t0 = time.monotonic()
        await create_nodes(kubeconfig, args.nodes, args.clients)
        print(f"{args.nodes} nodes + leases created in {time.monotonic() - t0:.1f}s")
        owners = [f"{i:08d}-0000-4000-8000-{i:012d}" for i in range(args.owners)]
        async with client_for(kubeconfig) as client:
            await client.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": NAMESPACE}})
            watch_rv = str((await client.list("pods", NAMESPACE))["metadata"]["resourceVersion"])
            ctx = multiprocessing.get_context("spawn")
            ready, out = ctx.Event(), ctx.Queue()
            if args.precreate:
                t0 = time.monotonic()
                creator = ctx.Process(target=precreate_main, args=(str(kubeconfig), args.pods, owners, args.clients))
                creator.start()
                await asyncio.to_thread(creator.join)
                print(f"{args.pods} pods pre-created in {time.monotonic() - t0:.1f}s")
            driver = ctx.Process(target=driver_main, args=(str(kubeconfig), args.pods, owners, args.clients,
                                                           not args.precreate, watch_rv, ready, out))
            spy = start_py_spy(server.pid, args.server_profile, args.server_profile_gil) if args.server_profile else None
            requests0 = await request_counts(client)
            server_cpu0 = cpu_seconds(server.pid)
            sched_cpu0 = time.process_time()
            driver.start()
            await asyncio.to_thread(ready.wait)
            scheduler = Scheduler(client, SchedulerSettings(bind_concurrency=args.bind_concurrency))
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            started = time.monotonic()
            task = asyncio.create_task(scheduler.run())
            progress = asyncio.create_task(report_progress(scheduler, started, args.progress))
            result = DriverResult(**(await asyncio.to_thread(out.get)))
            progress.cancel()
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            driver.join()
            server_cpu = cpu_seconds(server.pid) - server_cpu0
            if spy is not None:
                stop_py_spy(spy)
            requests1 = await request_counts(client)
            sched_cpu = time.process_time() - sched_cpu0
            stats = scheduler.stats
            events = scheduler.recorder.written, scheduler.recorder.dropped
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        stop_server(server)
    begin = started if args.precreate else result.first_create
    elapsed = result.last_bound - begin
    e2e = result.bound / elapsed if elapsed > 0 else 0.0
    print()
    print(f"nodes {args.nodes}, pods {args.pods} ({args.owners} owners), {args.clients} creating clients"
          f"{', pods pre-created' if args.precreate else ''}")
    if not args.precreate:
        create_rate = result.created / (result.last_create - result.first_create)
        print(f"pods created:            {result.created} ({result.create_errors} errors) at {create_rate:,.0f}/s")
    print(f"pods bound (watch):      {result.bound} in {elapsed:.2f}s")
    print(f"end to end:              {e2e:,.0f} pods/s   (target {TARGET_PODS_PER_SECOND:,.0f})")
    print(f"scheduler decisions:     {stats.decisions} in {stats.decide_seconds:.3f}s deciding = "
          f"{stats.decisions_per_second:,.0f} decisions/s wall, {stats.decisions_per_cpu_second:,.0f} per CPU "
          f"second ({scheduler.framework.stats.indexed} over the class index, "
          f"{scheduler.framework.stats.scanned} by scan)")
    print(f"bindings:                {stats.bound} ok, {stats.bind_failures} failed, mean round trip "
          f"{1000 * stats.bind_seconds / max(stats.bound, 1):.0f} ms; events written {events[0]}, dropped {events[1]}")
    if result.latencies:
        print(f"created -> bound:        p50 {1000 * percentile(result.latencies, 50):.0f} ms, "
              f"p99 {1000 * percentile(result.latencies, 99):.0f} ms")
    n = max(result.bound, 1)
    served = {k: v - requests0.get(k, 0) for k, v in requests1.items() if v - requests0.get(k, 0) > 0}
    total_requests = sum(served.values())
    print(f"API requests:            {total_requests} = {total_requests / n:.2f} per pod ("
          + ", ".join(f"{verb} {resource} {count}" for (verb, resource), count in sorted(served.items())) + f"); "
          f"{1000 * server_cpu / max(total_requests, 1):.2f} API server CPU ms per request")
    print(f"CPU ms per pod:          API server {1000 * server_cpu / n:.2f}, scheduler {1000 * sched_cpu / n:.2f}, "
          f"driver {1000 * result.cpu_seconds / n:.2f} (the machine has {os.cpu_count()} CPUs)")
    print(f"=> the API server alone could serve at most ~{n / server_cpu:,.0f} pods/s on one core; "
          f"the scheduler process ~{n / sched_cpu:,.0f} pods/s")


async def request_counts(client: ApiClient) -> dict[tuple[str, str], float]:
    """apiserver_request_total by (verb, resource), from the server's /metrics."""
    text = await client.request("GET", "/metrics", accept="text/plain")
    counts: dict[tuple[str, str], float] = {}
    for line in str(text).splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{"):].rpartition("} ")
        labels = dict(part.split("=", 1) for part in labels_text.split(","))
        key = (labels.get("verb", "").strip('"'), labels.get("resource", "").strip('"'))
        counts[key] = counts.get(key, 0) + float(value)
    return counts


async def report_progress(scheduler: Scheduler, started: float, every: float) -> None:
    """A line every ``every`` seconds: what the scheduler has seen, decided and bound."""
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every)
        s = scheduler.stats
        seen = s.decisions + sum(scheduler.queue.counts().values())
        print(f"  t={time.monotonic() - started:5.1f}s  pending seen {seen:6d}  decided {s.decisions:6d}  "
              f"bound {s.bound:6d}  bindings queued {scheduler.bindings_queued:5d}", flush=True)


def start_py_spy(pid: int, out: Path, gil_only: bool) -> subprocess.Popen[bytes]:
    """Sample the server's stacks (py-spy, raw format: one folded stack and count a line)
    until ``stop_py_spy``; proportions stay meaningful on a loaded machine."""
    spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(spy if spy.exists() else "py-spy"), "record", "-p", str(pid), "-f", "raw",
                             "-o", str(out), "--nonblocking", *(["--gil"] if gil_only else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def precreate_main(kubeconfig: str, pods: int, owners: list[str], clients: int) -> None:
    """Create the pods (in a child process, as the driver does) and return."""
    async def go() -> None:
        async with client_for(Path(kubeconfig)) as client:
            await run_pool(pods, clients, lambda i: client.create("pods", pod_body(i, owners), NAMESPACE))
    asyncio.run(go())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--owners", type=int, default=10, help="controllers the pods belong to (for spreading)")
    p.add_argument("--clients", type=int, default=64, help="concurrent creating clients")
    p.add_argument("--precreate", action="store_true", help="create all pods before the scheduler starts")
    p.add_argument("--bind-concurrency", type=int, default=SchedulerSettings().bind_concurrency,
                   help="bindings in flight at once")
    p.add_argument("--dir", type=Path, default=None, help="where the temporary data dir goes")
    p.add_argument("--keep", action="store_true", help="keep the data dir (server.log) afterwards")
    p.add_argument("--profile", type=Path, default=None, help="write a cProfile of the scheduler process here")
    p.add_argument("--server-profile", type=Path, default=None,
                   help="sample the API server with py-spy during the pod phase; raw stacks written here")
    p.add_argument("--server-profile-gil", action="store_true",
                   help="with --server-profile: only samples holding the GIL (the Python work that serializes)")
    p.add_argument("--server-source", type=Path, default=None,
                   help="run the server from this source tree (PYTHONPATH), e.g. a copy of the code before a change")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines (0: none)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = Path(tempfile.mkdtemp(prefix="skiff-bench-scheduler-", dir=args.dir))
    try:
        asyncio.run(bench(args, data_dir))
    finally:
        if args.keep:
            print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
