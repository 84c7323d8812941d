"""Throwaway network namespaces for the proxy's tests: random names, removed in ``finally``.

Everything a test makes lives inside namespaces it created (links included: a veth
whose one end is in a namespace disappears with it), so a failed or parallel run never
touches the host's interfaces, routes or iptables.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root")
NEEDS_TOOLS = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("ip", "iptables", "iptables-restore", "iptables-save", "nsenter")),
    reason="needs ip, iptables, iptables-restore, iptables-save and nsenter")


def run(argv: Sequence[str], check: bool = True, timeout: float = 60.0,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=stdin, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc


@dataclass
class Netns:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def argv(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 60.0,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*argv), check=check, timeout=timeout, stdin=stdin)

    def popen(self, *argv: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def save(self) -> str:
        """``iptables-save`` of the namespace without its timestamp comments."""
        text = self.run("iptables-save").stdout
        return "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"


@dataclass
class NetnsFactory:
    prefix: str = field(default_factory=lambda: "pxt" + secrets.token_hex(3))
    made: list[Netns] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def make(self, role: str = "") -> Netns:
        ns = Netns(f"{self.prefix}{role}{len(self.made)}")
        run(["ip", "netns", "add", ns.name])
        self.made.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def start(self, ns: Netns, *argv: str) -> subprocess.Popen[bytes]:
        proc = ns.popen(*argv)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self.made):
            run(["ip", "netns", "del", ns.name], check=False)


@contextmanager
def netns_factory() -> Iterator[NetnsFactory]:
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()
