"""The node agent's settings: one dataclass tree with kubelet's names and defaults.

Flags (`node_agent.main`) map onto it; everything else reads it and never argparse.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PAUSE_IMAGE = "skiff/pause:1.0"
KUBELET_VERSION = "v1.30.0-skiff"


@dataclass(frozen=True)
class CniSettings:
    conf_dir: Path = Path("/etc/cni/net.d")
    bin_dirs: tuple[Path, ...] = (Path("/opt/cni/bin"), Path("/usr/lib/cni"))
    plugin: str = "skiff"  # "skiff" (our skiff-bridge) or "reference" (bridge + host-local)
    bridge: str = "skiff0"
    network_name: str = "skiff"


@dataclass(frozen=True)
class CapacitySettings:
    """What the node advertises; None means measure the host (psutil / statvfs)."""

    cpu: str | None = None
    memory: str | None = None
    pods: int = 110  # kubelet's maxPods
    system_reserved: dict[str, str] = field(default_factory=dict)  # e.g. {"cpu": "100m", "memory": "256Mi"}


@dataclass(frozen=True)
class EvictionSettings:
    """kubelet's node-pressure eviction flags as given (``node_agent.eviction.thresholds`` parses them)."""

    hard: str = "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%"
    soft: str = ""  # --eviction-soft, e.g. memory.available<300Mi
    soft_grace_period: str = ""  # --eviction-soft-grace-period, e.g. memory.available=1m30s
    minimum_reclaim: str = ""  # --eviction-minimum-reclaim, e.g. memory.available=100Mi
    pressure_transition_period: float = 300.0  # --eviction-pressure-transition-period (5m0s)
    max_pod_grace_period: int = 0  # --eviction-max-pod-grace-period: soft evictions' grace
    monitoring_period: float = 10.0  # kubelet's evictionMonitoringPeriod (fixed at 10 s there)
    kernel_memcg_notification: bool = True  # also look at once when a memory threshold is crossed
    cgroup_root: str = ""  # the cgroup holding the pods' containers ("": found from the containers)
    local_storage_capacity_isolation: bool = True  # emptyDir sizeLimit and ephemeral-storage limits

    def validate(self) -> None:
        from node_agent.eviction.thresholds import parse_settings

        parse_settings(self)


@dataclass(frozen=True)
class AgentSettings:
    node_name: str
    kubeconfig: Path
    data_dir: Path = Path("/var/lib/skiff/agent")
    node_ip: str | None = None
    docker_host: str = "unix:///var/run/docker.sock"
    pod_cidr: str | None = None
    listen_address: str = "0.0.0.0"
    listen_port: int = 10250
    pause_image: str = DEFAULT_PAUSE_IMAGE
    cni: CniSettings = field(default_factory=CniSettings)
    capacity: CapacitySettings = field(default_factory=CapacitySettings)
    # kubelet's timing defaults (seconds)
    node_status_update_frequency: float = 10.0
    node_lease_duration_seconds: int = 40
    sync_frequency: float = 10.0  # full resync of every pod worker
    relist_period: float = 1.0  # PLEG: cheap list of managed containers
    image_pull_backoff_initial: float = 10.0
    image_pull_backoff_max: float = 300.0
    minimum_grace_period: float = 2.0  # kubelet's minimumGracePeriodInSeconds
    docker_workers: int = 32  # threads for blocking docker calls (stop/exec may block for a grace period)
    # pods' /etc/resolv.conf (node_agent/resolv_conf.py), kubelet's --cluster-dns, --cluster-domain, --resolv-conf
    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    resolv_conf: str = "/etc/resolv.conf"  # the node's, for dnsPolicy Default; "" for none
    # the pod network across nodes (node_agent/podnet)
    cluster_cidr: str = "10.244.0.0/16"  # holds every node's pod CIDR (kube-proxy's --cluster-cidr)
    pod_routes: bool = True  # host-gw routes to the other nodes' pod CIDRs; off when another plugin routes them
    # the service proxy (node_agent/proxy), kube-proxy's --proxy-mode; off when a kube-proxy runs on the node
    proxy_mode: str = "iptables"
    proxy: bool = True
    # node-pressure eviction (node_agent/eviction)
    eviction: EvictionSettings = field(default_factory=EvictionSettings)

    @property
    def node_lease_renew_interval(self) -> float:
        """kubelet renews its Lease every quarter of the lease duration (10 s by default)."""
        return self.node_lease_duration_seconds / 4

    @property
    def pods_dir(self) -> Path:
        return self.data_dir / "pods"

    @property
    def cni_cache_dir(self) -> Path:
        return self.data_dir / "cni-cache"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.data_dir / "cni-ipam"

    def pod_dir(self, uid: str) -> Path:
        return self.pods_dir / uid

    def validate(self) -> None:
        if not self.node_name:
            raise ValueError("--node-name is required")
        if self.pod_cidr:
            ipaddress.ip_network(self.pod_cidr, strict=False)
        ipaddress.ip_network(self.cluster_cidr, strict=False)
        for ip in self.cluster_dns:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"--cluster-dns {ip!r}: not an IP address") from None
        if self.proxy_mode not in ("iptables", "ipvs"):
            raise ValueError(f"--proxy-mode must be iptables or ipvs, not {self.proxy_mode!r}")
        if self.node_lease_duration_seconds < 1:
            raise ValueError("--node-lease-duration-seconds must be at least 1")
        if self.cni.plugin not in ("skiff", "reference"):
            raise ValueError(f"--cni-plugin must be skiff or reference, not {self.cni.plugin!r}")
        self.eviction.validate()
