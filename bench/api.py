"""Benchmark: the API server's durable writes/s and latencies against the disk's fsync floor.

Starts ``skiff server`` on 127.0.0.1 in a temporary data dir (under --dir, which must be
on the disk you want to measure), then prints:
- the floor: raw SQLite single-row commits/s (WAL, synchronous=FULL, one fsync each);
- durable writes/s through the HTTPS API: ConfigMap creates from 50 concurrent clients
  (a create is acknowledged only once it is fsynced), and its ratio to the floor;
- p50/p99 latency of create, update, get, and list (of 100 objects) at 50 clients;
- the server process's CPU time per request (from /proc), which does not depend on
  what else the machine is doing: 1000 / (CPU ms per request) is the most one core
  can serve;
- for comparison, SQLiteStore's own durable writes/s with 50 writers (no HTTP).

Targets (issue 2): >= 3,000 durable writes/s with group commit; mutating p99 <= 50 ms.
Clients share one aiohttp session with a keep-alive pool; with --processes N the
clients are split over N processes, so that one client process's CPU is not the cap
(on a small machine the clients and the server compete for the same cores).

Run from the repository root:

    .venv/bin/python -m bench.api [--dir .] [--seconds 5] [--clients 50] [--processes 1]
        [--storage sqlite|etcd|sqlite,etcd] [--etcd-members 1]

``--storage etcd`` runs the server on a local etcd started under --dir (``--etcd-members``
of them); ``--storage sqlite,etcd`` runs the whole benchmark once per store, one after the
other, and prints the figures side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import random
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

try:
    from bench.etcd_local import LocalEtcd, etcd_store_rate, side_by_side, start_etcd
    from bench.store_fsync import fsync_floor, store_rate
except ModuleNotFoundError:  # run as a script: bench/ itself is on sys.path
    from etcd_local import LocalEtcd, etcd_store_rate, side_by_side, start_etcd  # type: ignore[no-redef]
    from store_fsync import fsync_floor, store_rate  # type: ignore[no-redef]

READY_TIMEOUT = 60.0
LIST_SIZE = 100
VALUE = "x" * 512
TARGET_WRITES = 3000.0
TARGET_MUTATING_P99_MS = 50.0


@dataclass
class Target:
    url: str
    token: str
    ca_pem: str


@dataclass
class Result:
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds
    elapsed: float = 0.0

    def merge(self, other: Result) -> None:
        self.ok += other.ok
        self.errors += other.errors
        self.error_samples += other.error_samples[: max(0, 3 - len(self.error_samples))]
        self.latencies += other.latencies
        self.elapsed = max(self.elapsed, other.elapsed)

    def percentile_ms(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0


# ---- the server -----------------------------------------------------------------


def skiff_command() -> list[str]:
    script = Path(sys.executable).parent / "skiff"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from skiff.cli.main import main; sys.exit(main())"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], Target]:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "server.log", "wb")  # stays open as long as the server runs
    proc = subprocess.Popen([*skiff_command(), "server", "--data-dir", str(data_dir), "--port", str(port),
                             "--bind-address", "127.0.0.1", "--cluster-dns-port", "0", *extra_args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    kubeconfig = data_dir / "admin.kubeconfig"
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no kubeconfig yet"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"skiff server exited with {proc.returncode}; see {data_dir / 'server.log'}")
        if kubeconfig.exists():
            try:
                config = yaml.safe_load(kubeconfig.read_text())
                ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
                target = Target(f"https://127.0.0.1:{port}", config["users"][0]["user"]["token"], ca)
                ctx = ssl.create_default_context(cadata=ca)
                with urllib.request.urlopen(f"{target.url}/readyz", context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return proc, target
            except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
                last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"skiff server not ready after {READY_TIMEOUT}s ({last})")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), or NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---- the load -------------------------------------------------------------------


def session_for(target: Target, clients: int) -> aiohttp.ClientSession:
    ctx = ssl.create_default_context(cadata=target.ca_pem)
    return aiohttp.ClientSession(
        base_url=target.url, connector=aiohttp.TCPConnector(ssl=ctx, limit=max(50, clients), limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=60),
        headers={"Authorization": f"Bearer {target.token}", "Accept": "application/json"})


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"value": VALUE}}


async def run_phase(target: Target, op: str, clients: int, seconds: float, worker_id: int) -> Result:
    """``clients`` concurrent loops doing ``op`` for ``seconds``."""
    result = Result()
    names = [f"cm-{i}" for i in range(LIST_SIZE)]
    async with session_for(target, clients) as session:

        async def one(client: int) -> None:
            n = 0
            rng = random.Random(worker_id * 1000 + client)
            while time.perf_counter() < deadline:
                n += 1
                if op == "create":
                    req = session.post("/api/v1/namespaces/bench-writes/configmaps",
                                       json=configmap(f"w{worker_id}-c{client}-{n}"))
                elif op == "update":
                    name = f"cm-{(client * 2 + worker_id) % LIST_SIZE}"  # one object per client: no conflicts
                    req = session.put(f"/api/v1/namespaces/bench-list/configmaps/{name}", json=configmap(name))
                elif op == "get":
                    req = session.get(f"/api/v1/namespaces/bench-list/configmaps/{rng.choice(names)}")
                else:
                    req = session.get("/api/v1/namespaces/bench-list/configmaps")
                started = time.perf_counter()
                async with req as resp:
                    await resp.read()
                    status = resp.status
                latency = time.perf_counter() - started
                if 200 <= status < 300:
                    result.ok += 1
                    result.latencies.append(latency)
                else:
                    result.errors += 1
                    if len(result.error_samples) < 3:
                        result.error_samples.append(f"HTTP {status}: {(await resp.text())[:200]}")

        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(one(c) for c in range(clients)))
        result.elapsed = time.perf_counter() - started
    return result


def _phase_in_process(args: tuple[Target, str, int, float, int]) -> Result:
    return asyncio.run(run_phase(*args))


def phase(target: Target, op: str, clients: int, seconds: float, processes: int) -> Result:
    if processes <= 1:
        return asyncio.run(run_phase(target, op, clients, seconds, 0))
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        parts = pool.map(_phase_in_process, [(target, op, share, seconds, i) for i, share in enumerate(shares)])
    total = Result()
    for part in parts:
        total.merge(part)
    return total


async def prepare(target: Target) -> None:
    async with session_for(target, 10) as session:
        for ns in ("bench-writes", "bench-list"):
            async with session.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                                 "metadata": {"name": ns}}) as resp:
                assert resp.status == 201, await resp.text()
        for i in range(LIST_SIZE):
            async with session.post("/api/v1/namespaces/bench-list/configmaps", json=configmap(f"cm-{i}")) as resp:
                assert resp.status == 201, await resp.text()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dir", default=".", help="where to put the temporary data dir (the disk to measure)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each phase")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--processes", type=int, default=1, help="client processes sharing the clients")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (and server.log)")
    parser.add_argument("--storage", default="sqlite",
                        help="sqlite, etcd (a local etcd started under --dir), or sqlite,etcd: both, side by side")
    parser.add_argument("--etcd-members", type=int, default=1, help="members of the local etcd cluster")
    args = parser.parse_args()
    if "," in args.storage:
        raise SystemExit(side_by_side(__file__, sys.argv[1:], args.storage.split(",")))

    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-api-", dir=args.dir)).resolve()
    proc: subprocess.Popen[bytes] | None = None
    etcd: LocalEtcd | None = None
    try:
        floor = fsync_floor(tmp / "floor.db", 3.0, VALUE.encode())
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; data dir {tmp}")
        print(f"fsync floor (raw SQLite, WAL, synchronous=FULL, 1 row/commit): {floor:,.0f} commits/s")
        store_args: tuple[str, ...] = ()
        if args.storage == "etcd":
            etcd = start_etcd(tmp / "etcd", args.etcd_members)
            store_args = ("--storage", "etcd", "--etcd-servers", ",".join(etcd.endpoints))
            print(f"store: etcd, {args.etcd_members} member(s) on 127.0.0.1, data under {tmp / 'etcd'}")
        proc, target = start_server(tmp / "server", store_args)
        asyncio.run(prepare(target))
        print(f"{args.clients} concurrent clients over HTTPS (keep-alive), {args.processes} client process(es), "
              f"{args.seconds:.0f}s per phase")
        print(f"{'op':<24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'server CPU ms/req':>18}")
        results = {}
        for op, label in (("create", "create (durable)"), ("update", "update (durable)"), ("get", "get"),
                          ("list", f"list ({LIST_SIZE} objects)")):
            cpu_before = cpu_seconds(proc.pid)
            r = phase(target, op, args.clients, args.seconds, args.processes)
            cpu_ms = 1000 * (cpu_seconds(proc.pid) - cpu_before) / max(1, r.ok + r.errors)
            results[op] = r
            print(f"{label:<24} {r.rate:>9,.0f} {r.percentile_ms(50):>8.1f} {r.percentile_ms(99):>8.1f} "
                  f"{r.errors:>7} {cpu_ms:>18.2f}")
            for sample in r.error_samples:
                print(f"    e.g. {sample}")
        writes = results["create"].rate
        mutating_p99 = max(results["create"].percentile_ms(99), results["update"].percentile_ms(99))
        print(f"durable writes/s (creates): {writes:,.0f} = {writes / floor:.2f} x the fsync floor; "
              f"target >= {TARGET_WRITES:,.0f}: {'met' if writes >= TARGET_WRITES else 'NOT met'}")
        print(f"mutating p99: {mutating_p99:.1f} ms; target <= {TARGET_MUTATING_P99_MS:.0f} ms: "
              f"{'met' if mutating_p99 <= TARGET_MUTATING_P99_MS else 'NOT met'}")
        if etcd is not None:
            store_writes = asyncio.run(etcd_store_rate(etcd.endpoints, args.clients, args.seconds, VALUE.encode()))
            print(f"EtcdStore alone, {args.clients} writers (no HTTP): {store_writes:,.0f} durable writes/s "
                  f"= {store_writes / floor:.2f} x the floor")
        else:
            store_writes, per_commit = asyncio.run(store_rate(tmp / "store.db", args.clients, args.seconds,
                                                              VALUE.encode()))
            print(f"SQLiteStore alone, {args.clients} writers (no HTTP): {store_writes:,.0f} durable writes/s "
                  f"({per_commit:.1f} writes per commit) = {store_writes / floor:.2f} x the floor")
        print(f"create/get p50 ratio: {results['create'].percentile_ms(50) / results['get'].percentile_ms(50):.1f}; "
              f"list/get p50 ratio: {results['list'].percentile_ms(50) / results['get'].percentile_ms(50):.1f}; "
              f"mean latency create {1000 * statistics.fmean(results['create'].latencies or [0]):.1f} ms")
    finally:
        if proc is not None:
            stop_server(proc)
        if etcd is not None:
            etcd.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
