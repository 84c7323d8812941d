"""The service proxy's settings, with kube-proxy's names and defaults."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skiff.api.durations import duration_flag

if TYPE_CHECKING:
    from node_agent.settings import AgentSettings

MODES = ("iptables", "ipvs")

parse_duration = duration_flag  # the flags take Go durations or plain seconds


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
