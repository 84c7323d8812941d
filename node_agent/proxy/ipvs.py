"""IPVS mode: detect whether the kernel has IPVS, and refuse the mode with a clear message.

Detection, in kube-proxy's spirit (it checks the ip_vs modules): ``/proc/net/ip_vs``
exists, or ``modprobe ip_vs`` makes it appear, or the kernel answers on the IPVS
generic-netlink family (pyroute2). Skiff has no IPVS proxier yet, so even where IPVS
exists the mode is refused, with a different message; only iptables mode runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PROC_IP_VS = Path("/proc/net/ip_vs")


class ProxyModeError(Exception):
    """The requested proxy mode cannot run here; the message says why and what to use."""


def ipvs_unavailable_reason(proc_path: Path = PROC_IP_VS) -> str | None:
    """None if this kernel has IPVS, else why not."""
    if proc_path.exists():
        return None
    why = [f"{proc_path} does not exist"]
    modprobe = shutil.which("modprobe")
    if modprobe is None:
        why.append("modprobe is not installed")
    else:
        proc = subprocess.run([modprobe, "ip_vs"], capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode == 0 and proc_path.exists():
            return None
        why.append(f"modprobe ip_vs: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    try:
        from pyroute2 import IPVS

        IPVS().close()
        return None
    except Exception as exc:  # NetlinkError(2) when the family is unknown; ImportError without pyroute2
        why.append(f"no IPVS generic-netlink family ({type(exc).__name__}: {exc})")
    return "; ".join(why)


def check_proxy_mode(mode: str, proc_path: Path = PROC_IP_VS) -> None:
    """Raise `ProxyModeError` unless ``mode`` can run on this machine."""
    if mode == "iptables":
        return
    if mode != "ipvs":
        raise ProxyModeError(f"unknown proxy mode {mode!r}; use --proxy-mode iptables")
    reason = ipvs_unavailable_reason(proc_path)
    if reason is not None:
        raise ProxyModeError(f"IPVS is not available in this kernel: {reason}; use --proxy-mode iptables")
    raise ProxyModeError("this kernel has IPVS, but Skiff has no IPVS proxier yet; use --proxy-mode iptables")
