"""The service proxy's settings, with kube-proxy's names and defaults."""

from __future__ import annotations

import argparse
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node_agent.settings import AgentSettings

MODES = ("iptables", "ipvs")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration (``1s``, ``500ms``, ``1m30s``) or plain seconds -> seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 1s, 30s, 500ms)")
    return total


@dataclass(frozen=True)
class ProxySettings:
    node_name: str
    mode: str = "iptables"  # --proxy-mode
    cluster_cidr: str | None = "10.244.0.0/16"  # --cluster-cidr: traffic from outside it is masqueraded
    min_sync_period: float = 1.0  # --iptables-min-sync-period (kube-proxy's default since 1.19)
    sync_period: float = 30.0  # --iptables-sync-period: a periodic check even without changes
    full_sync_period: float = 3600.0  # kube-proxy's FullSyncPeriod: rewrite every chain at least this often

    def validate(self) -> None:
        if not self.node_name:
            raise ValueError("the node name is required (--hostname-override)")
        if self.mode not in MODES:
            raise ValueError(f"--proxy-mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.cluster_cidr:
            net = ipaddress.ip_network(self.cluster_cidr, strict=False)
            if net.version != 4:
                raise ValueError(f"--cluster-cidr must be IPv4, not {self.cluster_cidr!r}")
        if not 0 <= self.min_sync_period <= self.sync_period:
            raise ValueError("--iptables-min-sync-period must be between 0 and --iptables-sync-period")


def agent_proxy_settings(agent: AgentSettings) -> ProxySettings:
    """The proxy that `skiff agent` runs in its own process, from the agent's flags."""
    return ProxySettings(node_name=agent.node_name, mode=agent.proxy_mode, cluster_cidr=agent.cluster_cidr)
