"""The scheduler's settings, with kube-scheduler's defaults and names
(KubeSchedulerConfiguration v1: podInitialBackoffSeconds, podMaxBackoffSeconds,
percentageOfNodesToScore, the default plugin weights)."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_SCHEDULER_NAME = "default-scheduler"


@dataclass(frozen=True)
class ScoreWeights:
    """The default profile's score plugin weights."""

    node_resources_fit: int = 1  # LeastAllocated on cpu and memory, weight 1 each
    balanced_allocation: int = 1
    image_locality: int = 1
    taint_toleration: int = 3
    node_affinity: int = 2
    pod_topology_spread: int = 2


@dataclass(frozen=True)
class SchedulerSettings:
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    pod_initial_backoff_seconds: float = 1.0
    pod_max_backoff_seconds: float = 10.0
    # Unschedulable pods go back to the active queue after this long even without a cluster event.
    pod_max_in_unschedulable_pods_seconds: float = 300.0
    # 0 = adaptive, as kube-scheduler: 50% minus 1% per 125 nodes, at least 5%, at least 100 nodes.
    percentage_of_nodes_to_score: int = 0
    # Bindings in flight at once: a binding is one HTTP round trip, so throughput needs many.
    bind_concurrency: int = 64
    # Writers of events and status patches. Events are best-effort: beyond the queue they are
    # dropped, as client-go's event broadcaster drops them (maxQueuedEvents 1000).
    event_writers: int = 4
    event_queue_size: int = 1000
    # The system default spreading constraint on kubernetes.io/hostname (maxSkew 3, ScheduleAnyway).
    default_spread_max_skew: int = 3
    # Kubernetes 1.35 (kubernetes#134740) stopped naming the untolerated taint in messages;
    # True restores the older "node(s) had untolerated taint {key: value}" wording.
    name_taints_in_messages: bool = False
    weights: ScoreWeights = field(default_factory=ScoreWeights)
