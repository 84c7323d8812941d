"""Clear UDP conntrack entries that still point at endpoints the rules no longer use.

UDP has no connection end: without this, a client that keeps sending to a cluster IP
stays NATed to a removed backend until the entry times out. As kube-proxy does, after a
successful sync, for every UDP service port:
  * each endpoint that went away:  conntrack -D -p udp --orig-dst <cluster IP> --dst-nat <endpoint IP>
    (and --orig-port-dst <node port> --dst-nat <endpoint IP> for its node port);
  * a service port that had no endpoints and now has some: its entries to the cluster IP
    (and node port), which were made while it rejected traffic.
Arguments are validated (IPv4 addresses, ports 1-65535) and passed as a list, never to a shell.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from node_agent.proxy.model import ServicePort, ServicePortName

log = logging.getLogger("skiff.proxy")
_DELETED = re.compile(r"(\d+) flow entr")


@dataclass(frozen=True)
class UsedPort:
    """What one UDP service port sent traffic to at one sync."""

    port: ServicePort
    endpoint_ips: frozenset[str]


def stale_flows(before: Mapping[ServicePortName, UsedPort],
                after: Mapping[ServicePortName, UsedPort]) -> list[list[str]]:
    """The conntrack filters (argument lists after ``-D``) to clear going from ``before`` to ``after``."""
    out: list[list[str]] = []
    for spn, old in sorted(before.items()):
        new = after.get(spn)
        remaining = new.endpoint_ips if new is not None and new.port.cluster_ip == old.port.cluster_ip else frozenset()
        for ip in sorted(old.endpoint_ips - remaining):
            out.append(["-p", "udp", "--orig-dst", old.port.cluster_ip, "--dst-nat", ip])
            if old.port.node_port:
                out.append(["-p", "udp", "--orig-port-dst", str(old.port.node_port), "--dst-nat", ip])
    for spn, now in sorted(after.items()):
        was = before.get(spn)
        if now.endpoint_ips and (was is None or not was.endpoint_ips):
            out.append(["-p", "udp", "--orig-dst", now.port.cluster_ip])
            if now.port.node_port:
                out.append(["-p", "udp", "--orig-port-dst", str(now.port.node_port)])
    return out


def _validate(args: list[str]) -> None:
    """Only the shapes `stale_flows` makes: option names we chose, IPv4 addresses, port numbers."""
    if len(args) % 2 or args[:2] != ["-p", "udp"]:
        raise ValueError(f"unexpected conntrack filter {args!r}")
    for opt, value in zip(args[2::2], args[3::2], strict=True):
        if opt in ("--orig-dst", "--dst-nat"):
            ipaddress.IPv4Address(value)
        elif opt == "--orig-port-dst":
            if not value.isdigit() or not 1 <= int(value) <= 65535:
                raise ValueError(f"bad port {value!r}")
        else:
            raise ValueError(f"unexpected conntrack option {opt!r}")


class FlowCleaner(Protocol):
    def clear(self, flows: list[list[str]]) -> int: ...


class Conntrack:
    """The ``conntrack`` CLI (blocking); ``netns`` as in `IptablesExec`."""

    def __init__(self, netns: str | None = None, binary: str = "conntrack") -> None:
        self.netns = netns
        self.binary = binary

    def delete(self, args: list[str]) -> int:
        """Delete the flows matching one filter; returns how many went (0 is not an error)."""
        _validate(args)
        prefix = ["nsenter", f"--net={self.netns}", "--"] if self.netns else []
        try:
            proc = subprocess.run([*prefix, self.binary, "-D", *args], capture_output=True, text=True, timeout=30,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("conntrack -D %s failed: %s; stale UDP flows stay until they time out", " ".join(args), exc)
            return 0
        if proc.returncode not in (0, 1):  # 1: "0 flow entries have been deleted"
            log.warning("conntrack -D %s exited %d: %s; stale UDP flows stay until they time out", " ".join(args),
                        proc.returncode, proc.stderr.strip())
            return 0
        m = _DELETED.search(proc.stderr)
        return int(m.group(1)) if m else 0

    def clear(self, flows: list[list[str]]) -> int:
        return sum(self.delete(args) for args in flows)
