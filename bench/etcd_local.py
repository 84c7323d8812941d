"""etcd for the benchmarks: a local cluster of N members of Debian's etcd on free ports of
127.0.0.1 (data under the benchmark's directory, i.e. on the disk being measured),
EtcdStore's own durable writes/s, and running a benchmark once per store to print the
results side by side."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from control_plane.storage.etcd import EtcdStore
from control_plane.storage.etcd_member import EtcdMember, etcd_binary

READY_TIMEOUT = 60.0


@dataclass
class LocalEtcd:
    members: list[EtcdMember]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(10)


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def start_etcd(base: Path, size: int = 1) -> LocalEtcd:
    binary = etcd_binary()
    if binary is None:
        raise SystemExit("etcd is not installed (Debian: apt-get install etcd-server)")
    ports = _free_ports(2 * size)
    members = [EtcdMember(f"m{i}", base / f"member-{i}", f"http://127.0.0.1:{ports[2 * i]}",
                          f"http://127.0.0.1:{ports[2 * i + 1]}") for i in range(size)]
    etcd = LocalEtcd(members)
    base.mkdir(parents=True, exist_ok=True)
    for i, member in enumerate(members):
        with open(base / f"etcd-{i}.log", "wb") as log:
            etcd.procs.append(subprocess.Popen(member.argv(members, binary=binary, log_level="warn"),
                                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    deadline = time.monotonic() + READY_TIMEOUT
    for member, proc in zip(members, etcd.procs, strict=True):
        while True:
            if proc.poll() is not None:
                etcd.stop()
                raise RuntimeError(f"etcd {member.name} exited; see {base}/etcd-*.log")
            try:
                request = urllib.request.Request(f"{member.client_url}/v3/kv/range", data=b'{"key":"AA=="}',
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                etcd.stop()
                raise RuntimeError(f"etcd not ready after {READY_TIMEOUT}s; see {base}/etcd-*.log")
            time.sleep(0.05)
    return etcd


async def etcd_store_rate(endpoints: Sequence[str], writers: int, seconds: float, value: bytes) -> float:
    """EtcdStore's durable writes per second with ``writers`` concurrent writers (CAS updates)."""
    async with EtcdStore(endpoints, prefix=f"/bench-store-{os.urandom(3).hex()}") as store:
        deadline = time.perf_counter() + seconds

        async def write(n: int) -> int:
            done = 0
            revision = await store.create(f"/bench/{n}", value)
            while time.perf_counter() < deadline:
                revision = await store.update(f"/bench/{n}", value, expected_revision=revision)
                done += 1
            return done

        started = time.perf_counter()
        writes = sum(await asyncio.gather(*(write(n) for n in range(writers))))
        return writes / (time.perf_counter() - started)


def side_by_side(script: str, argv: Sequence[str], backends: Sequence[str], label_width: int = 24) -> int:
    """Run ``script`` once per backend (``--storage B``, one after the other, so they do
    not compete) and print the table rows of all runs side by side, then each run's
    other lines under its name."""
    outputs: dict[str, list[str]] = {}
    base = [a for i, a in enumerate(argv) if a != "--storage" and (i == 0 or argv[i - 1] != "--storage")]
    base = [a for a in base if not a.startswith("--storage=")]
    for backend in backends:
        print(f"running {Path(script).name} --storage {backend} ...", flush=True)
        proc = subprocess.run([sys.executable, script, *base, "--storage", backend], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr)
            return proc.returncode
        outputs[backend] = proc.stdout.splitlines()
    header = next((line for line in outputs[backends[0]] if line.startswith("op ")), "")
    rows: dict[str, dict[str, str]] = {}
    for backend, lines in outputs.items():
        for line in lines:
            if _is_row(line, label_width):
                rows.setdefault(line[:label_width].rstrip(), {})[backend] = line[label_width:]
    if header:
        columns = header[label_width:]
        print()
        print(f"{'':<{label_width}} " + " ".join(f"{b:<{len(columns)}}" for b in backends))
        print(f"{'op':<{label_width}} " + " ".join(columns for _ in backends))
        for label, by_backend in rows.items():
            print(f"{label:<{label_width}} " + " ".join(f"{by_backend.get(b, ''):<{len(columns)}}"
                                                        for b in backends))
    for backend, lines in outputs.items():
        print(f"\n[{backend}]")
        for line in lines:
            if line != header and line[:label_width].rstrip() not in rows:
                print(f"  {line}")
    return 0


def _is_row(line: str, label_width: int) -> bool:
    """A table row: a label, then five numbers."""
    values = line[label_width:].split()
    if not line[:label_width].strip() or len(values) != 5:
        return False
    try:
        [float(v.replace(",", "")) for v in values]
    except ValueError:
        return False
    return True
