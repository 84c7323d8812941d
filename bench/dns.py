"""Benchmark: cluster DNS queries per second over UDP from one client.

The server (`control_plane.dns.server.DnsServer`, as `skiff server` runs it) runs in a
child process on 127.0.0.1, a free port, with ``--services`` ClusterIP Services, one
headless Service with 3 ready endpoints, in its records (fed directly: the API and the
informers are not what is measured). The client is this process, one UDP socket:

- ``sequential``: one query in flight at a time; qps and latency p50/p99;
- ``window 32``: up to 32 queries in flight on the same socket (a busy pod's resolver
  library, or several at once); qps.

Each for three query mixes: ``cached`` (one name, asked again and again: the wire answer
cache), ``uncached`` (a different Service name each time, a wire cache of one entry:
dnspython parses the query and encodes the answer every time; the resolver's per-name
memo is warm after the first round of names) and ``headless`` (3 shuffled A records,
never cached as wire). Both processes share the machine: on a 2-core box the client's own cost
is part of the figure.

Run from the repository root:

    .venv/bin/python -m bench.dns [--services 1000] [--queries 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time
from collections.abc import Callable

import dns.message

from control_plane.dns.records import ClusterRecords
from control_plane.dns.resolver import ZoneConfig
from control_plane.dns.server import DnsServer

HOST = "127.0.0.1"


def fill(records: ClusterRecords, services: int) -> None:
    for i in range(services):
        records.upsert_service({"metadata": {"name": f"svc-{i}", "namespace": "bench"},
                                "spec": {"clusterIP": f"10.96.{1 + i // 250}.{1 + i % 250}",
                                         "ports": [{"name": "http", "port": 80}]}})
    records.upsert_service({"metadata": {"name": "headless", "namespace": "bench"}, "spec": {"clusterIP": "None"}})
    records.upsert_slice({"metadata": {"name": "headless-1", "namespace": "bench",
                                       "labels": {"kubernetes.io/service-name": "headless"}},
                          "addressType": "IPv4", "ports": [],
                          "endpoints": [{"addresses": [f"10.244.0.{i}"], "conditions": {"ready": True}}
                                        for i in (1, 2, 3)]})


def serve(services: int, cache_entries: int, port_out: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        records = ClusterRecords()
        fill(records, services)
        server = DnsServer(records, ZoneConfig.for_domain("cluster.local"), cache_entries=cache_entries)
        port_out.put(await server.start(HOST, 0))
        await asyncio.Event().wait()

    asyncio.run(main())


def queries(names: Callable[[int], str], count: int) -> list[bytes]:
    return [dns.message.make_query(names(i), "A").to_wire() for i in range(count)]


def sequential(sock: socket.socket, wires: list[bytes]) -> tuple[float, list[float]]:
    latencies = []
    started = time.perf_counter()
    for wire in wires:
        t0 = time.perf_counter()
        sock.send(wire)
        while sock.recv(4096)[:2] != wire[:2]:
            pass
        latencies.append(time.perf_counter() - t0)
    return len(wires) / (time.perf_counter() - started), latencies


def windowed(sock: socket.socket, wires: list[bytes], window: int) -> float:
    started = time.perf_counter()
    sent = received = 0
    while received < len(wires):
        while sent < len(wires) and sent - received < window:
            sock.send(wires[sent])
            sent += 1
        sock.recv(4096)
        received += 1
    return len(wires) / (time.perf_counter() - started)


def run_mix(label: str, cache_entries: int, names: Callable[[int], str], args: argparse.Namespace) -> None:
    ctx = multiprocessing.get_context("spawn")
    port_q = ctx.SimpleQueue()
    proc = ctx.Process(target=serve, args=(args.services, cache_entries, port_q), daemon=True)
    proc.start()
    try:
        port = port_q.get()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((HOST, port))
            sock.settimeout(5)
            wires = queries(names, args.queries)
            sequential(sock, wires[: min(500, len(wires))])  # warm up
            qps, lat = sequential(sock, wires)
            lat.sort()
            p50 = statistics.median(lat) * 1e6
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6
            wqps = windowed(sock, wires, 32)
        print(f"{label:<10} sequential {qps:8.0f} q/s  p50 {p50:6.0f} us  p99 {p99:6.0f} us   "
              f"window 32 {wqps:8.0f} q/s")
    finally:
        proc.terminate()
        proc.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=5000)
    args = parser.parse_args()
    print(f"cluster DNS over UDP, one client, {args.services} services, {args.queries} queries per run")
    run_mix("cached", 10_000, lambda i: "svc-1.bench.svc.cluster.local", args)
    run_mix("uncached", 1, lambda i: f"svc-{i % args.services}.bench.svc.cluster.local", args)
    run_mix("headless", 10_000, lambda i: "headless.bench.svc.cluster.local", args)


if __name__ == "__main__":
    main()
