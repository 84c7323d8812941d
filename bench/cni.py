"""Benchmark: CNI ADD/DEL cost of skiff-bridge via its shim + daemon, stand-alone (Python), and the reference plugin.

In a private "node" network namespace with one container namespace per pod, each
plugin is executed the way the agent executes it (a process started from a thread in
the node's namespace, CNI_* env, config on stdin):

- ``skiff: shim + daemon``: ``skiff-bridge`` as install_skiff_plugin lays it out, with
  ``daemonSocket`` in the config and the daemon running in a process of its own
  (``python -m cni.daemon``, as the agent would host it);
- ``skiff: python``: ``skiff-bridge-py``, the stand-alone Python plugin (what the shim
  falls back to, and what every call cost before the daemon);
- ``reference``: Debian's ``/usr/lib/cni/bridge`` with ``host-local``.

For each: one ADD + DEL to warm up (it also creates the bridge), then N ADDs one by one
and N DELs one by one, then N ADDs at once and N DELs at once. It prints wall p50/p99
per call (nearest rank: with 30 samples p99 is the maximum) and CPU per call: the
plugin processes' own (RUSAGE_CHILDREN) plus, for the daemon, the daemon process's
(/proc/<pid>/stat) over the same calls. Every namespace (and with it every link), the
daemon and the temporary files are removed on the way out, also on failure.

Run from the repository root, as root:

    .venv/bin/python -m bench.cni [--pods 30] [--skip-python]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cni.netlink import entered, open_netns
from node_agent.runtime.cni import install_skiff_plugin

REFERENCE_BIN_DIR = Path("/usr/lib/cni")
DAEMON_READY_TIMEOUT = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Plugin:
    label: str
    executable: Path
    conf: dict[str, Any]
    daemon_pid: int | None = None  # whose CPU counts too


@dataclass
class Round:
    add_wall: list[float]
    del_wall: list[float]
    add_cpu: float  # seconds per call
    del_cpu: float


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def netconf(plugin_type: str, bridge: str, subnet_index: int, data_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0", "name": "bench", "type": plugin_type, "bridge": bridge, "isGateway": True,
        "ipMasq": False, "hairpinMode": True, **extra,
        "ipam": {"type": "host-local",
                 "ranges": [[{"subnet": f"10.244.{subnet_index}.0/24", "gateway": f"10.244.{subnet_index}.1"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(data_dir)},
    }


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=60)


@contextmanager
def namespaces(prefix: str, count: int) -> Iterator[tuple[str, list[str]]]:
    """A node netns and count container netns, all deleted at the end (links go with them)."""
    created: list[str] = []
    try:
        for name in [f"{prefix}-n", *(f"{prefix}-{i}" for i in range(count))]:
            ip("netns", "add", name)
            created.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        yield created[0], created[1:]
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=60)


@contextmanager
def daemon_process(socket_path: Path) -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-m", "cni.daemon", str(socket_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + DAEMON_READY_TIMEOUT
        while not socket_path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the CNI daemon did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
        time.sleep(1.0)  # let it finish preloading pyroute2, as a long-running agent would have
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def process_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Runner:
    def __init__(self, node_ns: str) -> None:
        self.node_path = f"/run/netns/{node_ns}"
        self.node_fd = open_netns(self.node_path)

    def close(self) -> None:
        os.close(self.node_fd)

    def call(self, plugin: Plugin, command: str, container_id: str, netns: str) -> float:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": f"/run/netns/{netns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": str(REFERENCE_BIN_DIR), "PATH": os.environ.get("PATH", "")}
        data = json.dumps(plugin.conf).encode()
        with entered(self.node_fd, self.node_path):  # the process starts in the node's netns, as the agent's do
            started = time.perf_counter()
            done = subprocess.run([str(plugin.executable)], input=data, env=env, capture_output=True, timeout=120)
            elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{plugin.label} {command} {container_id}: exit {done.returncode}: "
                               f"{done.stdout.decode()} {done.stderr.decode()[-2000:]}")
        return elapsed

    def measure(self, plugin: Plugin, command: str, pods: list[str], at_once: bool) -> tuple[list[float], float]:
        """Wall per call, and CPU per call (the plugin processes', plus the daemon's)."""
        cpu = children_cpu() + process_cpu(plugin.daemon_pid)

        def one(i: int) -> float:
            return self.call(plugin, command, f"bench-{i}", pods[i])

        if at_once:
            with ThreadPoolExecutor(max_workers=len(pods)) as pool:
                walls = list(pool.map(one, range(len(pods))))
        else:
            walls = [one(i) for i in range(len(pods))]
        cpu = children_cpu() + process_cpu(plugin.daemon_pid) - cpu
        return walls, cpu / len(pods)

    def round(self, plugin: Plugin, pods: list[str], at_once: bool) -> Round:
        add_wall, add_cpu = self.measure(plugin, "ADD", pods, at_once)
        del_wall, del_cpu = self.measure(plugin, "DEL", pods, at_once)
        return Round(add_wall, del_wall, add_cpu, del_cpu)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def report(results: list[tuple[str, str, Round]], pods: int) -> None:
    load = os.getloadavg()[0]
    print(f"\nCNI ADD/DEL, {pods} pods per round, wall and CPU in ms per call "
          f"({os.cpu_count()} CPUs, load average {load:.2f})")
    print(f"{'plugin':<22} {'round':<12} {'ADD p50':>7} {'ADD p99':>7} {'DEL p50':>7} {'DEL p99':>7} "
          f"{'CPU/ADD':>7} {'CPU/DEL':>7}")
    for label, kind, r in results:
        print(f"{label:<22} {kind:<12} {ms(percentile(r.add_wall, 50))} {ms(percentile(r.add_wall, 99))} "
              f"{ms(percentile(r.del_wall, 50))} {ms(percentile(r.del_wall, 99))} {ms(r.add_cpu)} {ms(r.del_cpu)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cni", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=30, help="container namespaces per round (default 30)")
    parser.add_argument("--skip-python", action="store_true", help="leave out the stand-alone Python plugin")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.cni needs root (network namespaces)", file=sys.stderr)
        return 2
    if not (REFERENCE_BIN_DIR / "bridge").exists():
        print(f"the reference plugins are missing from {REFERENCE_BIN_DIR} (apt-get install containernetworking-plugins)",
              file=sys.stderr)
        return 2

    prefix = f"skbn{secrets.token_hex(2)}"
    work = Path(tempfile.mkdtemp(prefix="skcnib-", dir="/tmp"))  # short: it holds the daemon's socket
    results: list[tuple[str, str, Round]] = []
    try:
        with ExitStack() as stack:
            bin_dir = install_skiff_plugin(work / "bin").parent
            socket_path = work / "d.sock"
            daemon_pid = stack.enter_context(daemon_process(socket_path))
            node, pods = stack.enter_context(namespaces(prefix, args.pods))
            runner = Runner(node)
            stack.callback(runner.close)
            plugins = [Plugin("skiff: shim + daemon", bin_dir / "skiff-bridge",
                              netconf("skiff-bridge", "skbd0", 201, work / "ipam-d", daemonSocket=str(socket_path)),
                              daemon_pid)]
            if not args.skip_python:
                plugins.append(Plugin("skiff: python", bin_dir / "skiff-bridge-py",
                                      netconf("skiff-bridge", "skbp0", 202, work / "ipam-p")))
            plugins.append(Plugin("reference (Go)", REFERENCE_BIN_DIR / "bridge",
                                  netconf("bridge", "skbr0", 203, work / "ipam-r")))
            rounds: list[tuple[str, Callable[[Plugin], Round]]] = [
                ("one by one", lambda p: runner.round(p, pods, at_once=False)),
                (f"{args.pods} at once", lambda p: runner.round(p, pods, at_once=True)),
            ]
            for plugin in plugins:
                runner.round(plugin, pods[:1], at_once=False)  # warm-up: bridge, page cache
                for kind, run_round in rounds:
                    print(f"{plugin.label}: {kind} ...", file=sys.stderr, flush=True)
                    results.append((plugin.label, kind, run_round(plugin)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args.pods)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
