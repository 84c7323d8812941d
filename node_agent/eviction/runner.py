"""The eviction manager of a running agent: its real parts, put together.

`build_eviction_manager` gives the manager the cgroup stats provider, the agent's evictor,
Docker's container and image GC, the event recorder and the pod informer's active pods;
`run_eviction` runs its loop, with a memory threshold notification re-armed after every pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from node_agent.events import ObjectRef
from node_agent.eviction.actions import AgentEvictor, DockerReclaimer
from node_agent.eviction.cgroup_stats import CgroupStatsProvider
from node_agent.eviction.manager import EvictionManager, ManagerConfig
from node_agent.eviction.memcg import MemcgThresholdNotifier, usage_threshold
from node_agent.eviction.ranking import uid_of
from node_agent.eviction.thresholds import MEMORY_AVAILABLE, Threshold, parse_settings
from node_agent.pod_status import TERMINAL

if TYPE_CHECKING:
    from node_agent.agent import Agent

Obj = dict[str, Any]


def active_pods(list_pods: Callable[[], list[Obj]]) -> Callable[[], list[Obj]]:
    """The pods bound here that are not over (kubelet's activePods)."""
    def active() -> list[Obj]:
        return [p for p in list_pods() if (p.get("status") or {}).get("phase") not in TERMINAL]
    return active


def build_eviction_manager(agent: Agent) -> EvictionManager:
    settings = agent.settings
    eviction = settings.eviction
    config = ManagerConfig(thresholds=tuple(parse_settings(eviction)),
                           pressure_transition_period=eviction.pressure_transition_period,
                           max_pod_grace_period=eviction.max_pod_grace_period,
                           monitoring_period=eviction.monitoring_period,
                           local_storage_capacity_isolation=eviction.local_storage_capacity_isolation)
    stats = CgroupStatsProvider(docker=agent.docker, cache=agent.cache, memory_capacity=agent.facts.memory_bytes,
                                cgroup_root=eviction.cgroup_root, nodefs=settings.data_dir, pods_dir=settings.pods_dir)
    active = active_pods(agent.informer.list)
    return EvictionManager(
        config, stats=stats,
        evictor=AgentEvictor(agent.client, agent.docker, agent.cache, agent.manager,
                             minimum_grace=settings.minimum_grace_period),
        reclaimer=DockerReclaimer(agent.docker, agent.cache, lambda: [uid_of(p) for p in agent.informer.list()],
                                  pinned_images=(settings.pause_image,)),
        recorder=agent.recorder, node_ref=ObjectRef(kind="Node", name=settings.node_name, uid=settings.node_name),
        active_pods=active, clock=time.monotonic,
        on_conditions_changed=lambda _conditions: agent.reporter.trigger())


async def run_eviction(manager: EvictionManager, memcg_notification: bool = True) -> None:
    """The manager's loop; with memcg notification, a pass also runs when the pods' memory usage
    crosses a memory.available threshold."""
    stats = manager.stats
    notifiers: list[tuple[Threshold, MemcgThresholdNotifier]] = []
    if memcg_notification and isinstance(stats, CgroupStatsProvider) and not stats.v2:
        notifiers = [(t, MemcgThresholdNotifier(manager.wake.set)) for t in manager.config.thresholds
                     if t.signal == MEMORY_AVAILABLE]

    def rearm() -> None:
        node = manager.last_node_stats
        if not notifiers or node is None or node.memory_capacity is None or node.memory_working_set is None:
            return
        assert isinstance(stats, CgroupStatsProvider)
        cgroup = stats.memory_cgroup_dir()
        if cgroup is None or not cgroup.exists():
            return
        for threshold, notifier in notifiers:
            notifier.update(cgroup, usage_threshold(node.memory_capacity, threshold.quantity(node.memory_capacity),
                                                    stats.last_memory_usage or 0, node.memory_working_set))

    manager.after_pass = rearm
    try:
        await manager.run()
    finally:
        for _, notifier in notifiers:
            notifier.close()
