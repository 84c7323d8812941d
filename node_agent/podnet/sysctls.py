"""The kernel switches the pod network and the service proxy need, per network namespace.

- ``net.ipv4.ip_forward = 1``: the node routes its pods' packets to other nodes.
- ``net.bridge.bridge-nf-call-iptables = 1``: packets between two pods on the node's bridge
  pass iptables, so a service's DNAT to a pod on the same bridge is undone on the reply
  (kube-proxy's requirement). The key exists only once ``br_netfilter`` is loaded; since
  Linux 5.3 it is per network namespace, so a lab node sets its own.

``net.ipv4.conf.*.route_localnet`` is never written: it lets packets to 127.0.0.0/8 be
routed off the node, which kube-proxy needs only for NodePorts on localhost (CVE-2020-8558).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("skiff.agent.podnet")

PROC_SYS = Path("/proc/sys")
FORWARDING_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
}
BR_NETFILTER = "br_netfilter"


@dataclass
class SysctlReport:
    changed: list[str] = field(default_factory=list)  # "key=value" written
    failed: dict[str, str] = field(default_factory=dict)  # key -> why


def modprobe(module: str) -> bool:
    try:
        proc = subprocess.run(["modprobe", module], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("modprobe %s: %s", module, exc)
        return False
    return proc.returncode == 0


def sysctl_path(key: str, proc_sys: Path = PROC_SYS) -> Path:
    return proc_sys / key.replace(".", "/")


def ensure_forwarding_sysctls(proc_sys: Path = PROC_SYS, load_module: Callable[[str], bool] = modprobe,
                              wanted: dict[str, str] | None = None) -> SysctlReport:
    """Set each wanted sysctl of the calling thread's network namespace; idempotent, never raises.

    A missing ``net/bridge`` directory means br_netfilter is not loaded: it is loaded once
    (``modprobe``), and if that fails the key is reported as failed with the reason.
    """
    report = SysctlReport()
    for key, value in (wanted or FORWARDING_SYSCTLS).items():
        path = sysctl_path(key, proc_sys)
        if not path.exists() and key.startswith("net.bridge.") and not path.parent.is_dir():
            load_module(BR_NETFILTER)
            if not path.exists():
                report.failed[key] = f"{path.parent} does not exist: the {BR_NETFILTER} module is not loaded " \
                                     f"and `modprobe {BR_NETFILTER}` did not load it"
                continue
        try:
            if path.read_text().strip() == value:
                continue
            path.write_text(value)
            now = path.read_text().strip()
        except OSError as exc:
            report.failed[key] = f"cannot write {path}: {exc.strerror or exc}"
            continue
        if now != value:
            report.failed[key] = f"{path} reads {now!r} after writing {value!r}"
        else:
            report.changed.append(f"{key}={value}")
    return report
