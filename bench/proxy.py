"""Benchmark: the service proxy's iptables syncs, in throwaway network namespaces (root).

For each size (services x endpoints, default 1,000 x 10 and 10,000 x 2) it renders hollow
Services and EndpointSlices (no API server: the proxier's sync is fed a snapshot directly)
and prints:

- the proxy's full sync into an empty namespace (render + ``iptables-restore`` in the
  ordered batches the applier uses), wall and CPU;
- the floor: one bare ``iptables-restore --noflush`` of the same rendered text into a second
  empty namespace (given ``--floor-timeout`` seconds: nf_tables' restore grows faster than
  linearly with its input, and at 10,000 x 2 one restore may not finish at all);
- the ratio of the two (issue 5's target: <= 1.2x the floor);
- one endpoint change at that size (5 samples; target <= 100 ms), a periodic sync with
  nothing changed, and a full resync over the rules already there.

Both namespaces are deleted at the end, whatever happens. Run from the repository root:

    .venv/bin/python -m bench.proxy [--sizes 1000x10,10000x2] [--floor-timeout 120]
"""

from __future__ import annotations

import argparse
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node_agent.proxy.conntrack import Conntrack
from node_agent.proxy.iptables_exec import IptablesExec
from node_agent.proxy.proxier import Proxier
from node_agent.proxy.settings import ProxySettings

NODE = "bench-node"
Snapshot = dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]


def cpu_seconds() -> float:
    """CPU of this process and its waited-for children (iptables-restore runs as one)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def address(base: int, n: int) -> str:
    return f"10.{base + n // 62500}.{n // 250 % 250}.{n % 250 + 1}"


def snapshot(services: int, endpoints: int) -> Snapshot:
    snap: Snapshot = {}
    for i in range(services):
        name = f"svc{i}"
        svc = {"metadata": {"namespace": "bench", "name": name},
               "spec": {"type": "ClusterIP", "clusterIP": address(96, i),
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
        eps = [{"addresses": [address(200, i * endpoints + j)], "conditions": {"ready": True}, "nodeName": NODE}
               for j in range(endpoints)]
        slice_ = {"metadata": {"namespace": "bench", "name": f"{name}-x",
                               "labels": {"kubernetes.io/service-name": name}},
                  "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                  "endpoints": eps}
        snap[f"bench/{name}"] = (svc, [slice_])
    return snap


@contextmanager
def namespaces(count: int) -> Iterator[list[str]]:
    names: list[str] = []
    try:
        for _ in range(count):
            name = "skbpx" + secrets.token_hex(4)
            subprocess.run(["ip", "netns", "add", name], check=True)
            names.append(name)
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def floor(netns: str, text: str, timeout: float) -> float | None:
    """One bare ``iptables-restore --noflush`` of ``text``: seconds, or None past ``timeout``."""
    start = time.perf_counter()
    try:
        subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "--", "iptables-restore", "--noflush", "-w", "5"],
                       input=text, text=True, check=True, timeout=timeout, capture_output=True)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - start


def run_size(services: int, endpoints: int, floor_timeout: float) -> None:
    snap = snapshot(services, endpoints)
    with namespaces(2) as (proxied, bare):
        proxier = Proxier(None, ProxySettings(node_name=NODE), ipt=IptablesExec(netns=f"/run/netns/{proxied}"),
                          conntrack=Conntrack(netns=f"/run/netns/{proxied}"))
        stats, wall, cpu = timed(proxier.sync_blocking, snap, full=True)
        applied = proxier.applier.applied
        assert applied is not None, "the full sync applied nothing"
        text = applied.restore_text()
        print(f"{services:,} services x {endpoints} endpoints ({text.count(chr(10)):,} rule lines)")
        print(f"  proxy full sync:        {wall:7.2f} s wall {cpu:7.2f} s CPU  (render {stats.render_seconds:.2f} s, "
              f"{stats.apply.transactions} restore batches)")
        bare_wall = floor(bare, text, floor_timeout)
        if bare_wall is None:
            print(f"  floor (one restore):    did not finish within {floor_timeout:.0f} s")
            print(f"  ratio to the floor:     < {wall / floor_timeout:.2f}x (target <= 1.2x)")
        else:
            print(f"  floor (one restore):    {bare_wall:7.2f} s wall")
            print(f"  ratio to the floor:     {wall / bare_wall:7.2f}x (target <= 1.2x)")
        changes = []
        for k in range(5):
            key = f"bench/svc{(services // 5) * k + 1}"
            svc, (slice_,) = snap[key]
            moved = {**slice_, "endpoints": slice_["endpoints"][:-1]
                     + [{"addresses": [f"10.250.{k}.1"], "conditions": {"ready": True}}]}
            snap[key] = (svc, [moved])
            _, change_wall, _ = timed(proxier.sync_blocking, {key: (svc, [moved])}, full=False)
            changes.append(change_wall * 1000)
        print(f"  one endpoint change:    {min(changes):.0f}-{max(changes):.0f} ms over 5 changes "
              f"(median {sorted(changes)[2]:.0f} ms; target <= 100 ms)")
        _, idle_wall, _ = timed(proxier.sync_blocking, {}, full=False, periodic=True)
        print(f"  periodic sync, no change: {idle_wall * 1000:5.0f} ms")
        _, resync_wall, _ = timed(proxier.sync_blocking, {}, full=True)
        print(f"  full resync over the rules: {resync_wall:5.2f} s")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        services, _, endpoints = part.strip().partition("x")
        sizes.append((int(services), int(endpoints)))
    return sizes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1000x10,10000x2"),
                   help="services x endpoints, comma-separated (default 1000x10,10000x2)")
    p.add_argument("--floor-timeout", type=float, default=120.0, help="seconds the bare restore may take")
    args = p.parse_args()
    for services, endpoints in args.sizes:
        run_size(services, endpoints, args.floor_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
