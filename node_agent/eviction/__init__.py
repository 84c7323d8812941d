"""Node-pressure eviction: kubelet's eviction manager.

A fixed pipeline, run every ``monitoring_period`` and when a memory cgroup threshold fires
(`manager.EvictionManager.synchronize`):

observe signals (`signals.observe`) -> thresholds met, counting those not yet reclaimed by
their minimum reclaim -> grace periods -> node conditions, held for the pressure transition
period -> local storage limits (emptyDir sizeLimit, ephemeral-storage) -> node-level reclaim
(disk: dead containers, unused images) -> rank pods (`ranking`) -> evict one pod -> wait for
its resources to be reclaimed.

Modules: `thresholds` (signals, thresholds and their flags), `stats` (the readings the
pipeline consumes, and the provider protocol), `signals` (the pure steps), `ranking` (the
order and the message), `manager` (the pipeline and its loop), `cgroup_stats` (readings from
cgroup v1, statvfs and /proc), `actions` (evicting through the agent, reclaiming through
Docker), `memcg` (cgroup v1 memory threshold notifications).
"""
