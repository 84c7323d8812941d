"""Controller manager settings, with kube-controller-manager's names and defaults.

Durations are seconds (floats); flags take Go durations (``40s``, ``5m``, ``500ms``).
`current_settings()` is what a controller uses when it is not handed settings of its own:
`skiff controller-manager` (and `skiff server`) install the flag values with
`use_settings()` before starting the controllers.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from dataclasses import dataclass, field

from skiff.api.durations import duration_flag

ALL_CONTROLLERS = "*"


@dataclass
class NodeLifecycleSettings:
    node_monitor_period: float = 5.0
    node_monitor_grace_period: float = 40.0
    node_startup_grace_period: float = 60.0
    node_eviction_rate: float = 0.1  # nodes per second tainted NoExecute, zone healthy
    secondary_node_eviction_rate: float = 0.01  # zone partially disrupted and large
    large_cluster_size_threshold: int = 50
    unhealthy_zone_threshold: float = 0.55
    # kube-apiserver's DefaultTolerationSeconds flags; kept here so one settings tree
    # describes the cluster's failure timing (the API server reads them from here).
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300


@dataclass
class NodeIpamSettings:
    allocate_node_cidrs: bool = True
    cluster_cidr: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network("10.244.0.0/16"))
    node_cidr_mask_size: int = 24

    def validate(self) -> None:
        if not self.cluster_cidr.prefixlen <= self.node_cidr_mask_size <= 32:
            raise ValueError(f"--node-cidr-mask-size {self.node_cidr_mask_size} does not fit in "
                             f"--cluster-cidr {self.cluster_cidr}")
        if self.node_cidr_mask_size - self.cluster_cidr.prefixlen > 16:
            raise ValueError("--node-cidr-mask-size: at most 65536 node CIDRs fit in the cluster CIDR")


@dataclass
class ConcurrencySettings:
    concurrent_deployment_syncs: int = 5
    concurrent_replicaset_syncs: int = 5
    concurrent_daemonset_syncs: int = 2
    concurrent_job_syncs: int = 5
    concurrent_endpoint_syncs: int = 5
    concurrent_service_endpoint_syncs: int = 5  # EndpointSlices
    concurrent_namespace_syncs: int = 10
    concurrent_gc_syncs: int = 20
    concurrent_serviceaccount_syncs: int = 5
    concurrent_resource_quota_syncs: int = 5
    concurrent_ttl_after_finished_syncs: int = 5


@dataclass
class LeaderElectionSettings:
    leader_elect: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    resource_namespace: str = "kube-system"
    resource_name: str = "kube-controller-manager"


@dataclass
class ControllerManagerSettings:
    controllers: list[str] = field(default_factory=lambda: [ALL_CONTROLLERS])
    node_lifecycle: NodeLifecycleSettings = field(default_factory=NodeLifecycleSettings)
    node_ipam: NodeIpamSettings = field(default_factory=NodeIpamSettings)
    concurrency: ConcurrencySettings = field(default_factory=ConcurrencySettings)
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    terminated_pod_gc_threshold: int = 12500
    min_resync_period: float = 12 * 3600.0

    def validate(self) -> None:
        nl = self.node_lifecycle
        for name in ("node_monitor_period", "node_monitor_grace_period", "node_startup_grace_period"):
            if getattr(nl, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")
        if nl.node_eviction_rate < 0 or nl.secondary_node_eviction_rate < 0:
            raise ValueError("eviction rates may not be negative")
        self.node_ipam.validate()

    def replace(self, **changes: object) -> ControllerManagerSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_current = ControllerManagerSettings()


def current_settings() -> ControllerManagerSettings:
    return _current


def use_settings(settings: ControllerManagerSettings) -> None:
    """Install the process-wide settings (from flags) for controllers built afterwards."""
    global _current
    settings.validate()
    _current = settings


# ---- flags ------------------------------------------------------------------------------

parse_duration = duration_flag  # the flags take Go durations or plain seconds


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "t"):
        return True
    if lowered in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def add_settings_arguments(p: argparse.ArgumentParser) -> None:
    """kube-controller-manager's flags for the settings above (defaults from the dataclasses)."""
    d = ControllerManagerSettings()
    nl, ipam, le = d.node_lifecycle, d.node_ipam, d.leader_election
    g = p.add_argument_group("node lifecycle")
    g.add_argument("--node-monitor-period", type=parse_duration, default=nl.node_monitor_period)
    g.add_argument("--node-monitor-grace-period", type=parse_duration, default=nl.node_monitor_grace_period)
    g.add_argument("--node-startup-grace-period", type=parse_duration, default=nl.node_startup_grace_period)
    g.add_argument("--node-eviction-rate", type=float, default=nl.node_eviction_rate)
    g.add_argument("--secondary-node-eviction-rate", type=float, default=nl.secondary_node_eviction_rate)
    g.add_argument("--large-cluster-size-threshold", type=int, default=nl.large_cluster_size_threshold)
    g.add_argument("--unhealthy-zone-threshold", type=float, default=nl.unhealthy_zone_threshold)
    g.add_argument("--default-not-ready-toleration-seconds", type=int,
                   default=nl.default_not_ready_toleration_seconds)
    g.add_argument("--default-unreachable-toleration-seconds", type=int,
                   default=nl.default_unreachable_toleration_seconds)
    g = p.add_argument_group("node IPAM")
    g.add_argument("--allocate-node-cidrs", type=_bool, nargs="?", const=True, default=ipam.allocate_node_cidrs)
    g.add_argument("--cluster-cidr", type=ipaddress.IPv4Network, default=ipam.cluster_cidr)
    g.add_argument("--node-cidr-mask-size", type=int, default=ipam.node_cidr_mask_size)
    g = p.add_argument_group("other controllers")
    g.add_argument("--terminated-pod-gc-threshold", type=int, default=d.terminated_pod_gc_threshold)
    for f in dataclasses.fields(ConcurrencySettings):
        g.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default)
    g = p.add_argument_group("leader election")
    g.add_argument("--leader-elect", type=_bool, nargs="?", const=True, default=le.leader_elect)
    g.add_argument("--leader-elect-lease-duration", type=parse_duration, default=le.lease_duration)
    g.add_argument("--leader-elect-renew-deadline", type=parse_duration, default=le.renew_deadline)
    g.add_argument("--leader-elect-retry-period", type=parse_duration, default=le.retry_period)
    g.add_argument("--leader-elect-resource-namespace", default=le.resource_namespace)
    g.add_argument("--leader-elect-resource-name", default=le.resource_name)


def settings_from_args(args: argparse.Namespace) -> ControllerManagerSettings:
    controllers = [c.strip() for c in str(getattr(args, "controllers", "*") or "").split(",") if c.strip()]
    settings = ControllerManagerSettings(
        controllers=controllers,
        node_lifecycle=NodeLifecycleSettings(
            node_monitor_period=args.node_monitor_period, node_monitor_grace_period=args.node_monitor_grace_period,
            node_startup_grace_period=args.node_startup_grace_period, node_eviction_rate=args.node_eviction_rate,
            secondary_node_eviction_rate=args.secondary_node_eviction_rate,
            large_cluster_size_threshold=args.large_cluster_size_threshold,
            unhealthy_zone_threshold=args.unhealthy_zone_threshold,
            default_not_ready_toleration_seconds=args.default_not_ready_toleration_seconds,
            default_unreachable_toleration_seconds=args.default_unreachable_toleration_seconds),
        node_ipam=NodeIpamSettings(allocate_node_cidrs=args.allocate_node_cidrs, cluster_cidr=args.cluster_cidr,
                                   node_cidr_mask_size=args.node_cidr_mask_size),
        concurrency=ConcurrencySettings(**{f.name: getattr(args, f.name)
                                           for f in dataclasses.fields(ConcurrencySettings)}),
        leader_election=LeaderElectionSettings(
            leader_elect=args.leader_elect, lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline, retry_period=args.leader_elect_retry_period,
            resource_namespace=args.leader_elect_resource_namespace,
            resource_name=args.leader_elect_resource_name),
        terminated_pod_gc_threshold=args.terminated_pod_gc_threshold,
    )
    settings.validate()
    return settings
