"""``skiff agent``'s eviction flags, with kubelet's names and defaults, onto `EvictionSettings`."""

from __future__ import annotations

import argparse

from node_agent.eviction.thresholds import parse_duration
from node_agent.settings import EvictionSettings

DEFAULTS = EvictionSettings()


def _duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def add_eviction_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("node-pressure eviction (kubelet's flags)")
    g.add_argument("--eviction-hard", default=DEFAULTS.hard, metavar="SIGNAL<QUANTITY,...",
                   help=f"thresholds that evict at once (default {DEFAULTS.hard.replace('%', '%%')}); signals: memory.available, "
                        "nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available; "
                        "a quantity or a percentage of capacity; '' for none")
    g.add_argument("--eviction-soft", default="", metavar="SIGNAL<QUANTITY,...",
                   help="thresholds that evict once met for their grace period")
    g.add_argument("--eviction-soft-grace-period", default="", metavar="SIGNAL=DURATION,...",
                   help="grace period of each soft threshold, e.g. memory.available=1m30s")
    g.add_argument("--eviction-minimum-reclaim", default="", metavar="SIGNAL=QUANTITY,...",
                   help="how much more than the threshold must be free before a threshold met is resolved")
    g.add_argument("--eviction-pressure-transition-period", type=_duration, metavar="DURATION",
                   default=DEFAULTS.pressure_transition_period,
                   help="how long a pressure condition stays True after its threshold was last met (default 5m0s)")
    g.add_argument("--eviction-max-pod-grace-period", type=int, default=DEFAULTS.max_pod_grace_period,
                   metavar="SECONDS", help="grace period of soft evictions, at most the pod's own "
                                           "(negative: the pod's own; default 0)")
    g.add_argument("--eviction-monitoring-period", type=_duration, metavar="DURATION",
                   default=DEFAULTS.monitoring_period,
                   help="how often the eviction manager looks (kubelet: fixed at 10s)")
    g.add_argument("--kernel-memcg-notification", action=argparse.BooleanOptionalAction,
                   default=DEFAULTS.kernel_memcg_notification,
                   help="also look at once when the pods' memory crosses a memory.available threshold "
                        "(cgroup v1 only)")
    g.add_argument("--cgroup-root", default=DEFAULTS.cgroup_root, metavar="CGROUP",
                   help="the cgroup holding the pods' containers, whose memory and pids the eviction manager "
                        "reads (default: the parent of the containers' cgroups)")
    g.add_argument("--local-storage-capacity-isolation", action=argparse.BooleanOptionalAction,
                   default=DEFAULTS.local_storage_capacity_isolation,
                   help="evict pods over their emptyDir sizeLimit or ephemeral-storage limits")


def eviction_settings(args: argparse.Namespace) -> EvictionSettings:
    return EvictionSettings(
        hard=args.eviction_hard, soft=args.eviction_soft, soft_grace_period=args.eviction_soft_grace_period,
        minimum_reclaim=args.eviction_minimum_reclaim,
        pressure_transition_period=args.eviction_pressure_transition_period,
        max_pod_grace_period=args.eviction_max_pod_grace_period, monitoring_period=args.eviction_monitoring_period,
        kernel_memcg_notification=args.kernel_memcg_notification, cgroup_root=args.cgroup_root,
        local_storage_capacity_isolation=args.local_storage_capacity_isolation)
