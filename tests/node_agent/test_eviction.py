"""The eviction manager's pipeline on a fake clock and fake stats: thresholds, soft grace
periods, minimum reclaim, the pressure transition period, ranking, node-level reclaim,
local storage limits and the wait for cleanup, each asserted exactly (pods evicted, grace
periods, messages, node conditions and the moments they change)."""

from __future__ import annotations

import asyncio

import pytest

from node_agent.eviction.manager import CLEANUP_TIMEOUT, EvictionManager
from node_agent.eviction.ranking import rank_memory_pressure, rank_pid_pressure
from node_agent.eviction.stats import POD_DISK, POD_MEMORY, POD_PROCESSES, ContainerStats, PodStats
from node_agent.node_status import NodeHealth, render_conditions
from tests.node_agent.eviction_fakes import GI, MI, fs, memory_stats, pod, rig

BE_MESSAGE = ("The node was low on resource: memory. Threshold quantity: 100Mi, available: 90116Ki. "
              "Container app was using 500Mi, request is 0, has larger consumption of memory. ")


def three_qos_pods() -> tuple[list[dict], dict[str, PodStats]]:
    pods = [pod("guaranteed", requests={"memory": "200Mi", "cpu": "100m"}, limits={"memory": "200Mi", "cpu": "100m"}),
            pod("burstable", requests={"memory": "100Mi"}, limits={"memory": "1Gi"}),
            pod("besteffort")]
    stats = {s.uid: s for s in (memory_stats("guaranteed", 190 * MI), memory_stats("burstable", 150 * MI),
                                memory_stats("besteffort", 500 * MI))}
    return pods, stats


# -- thresholds --------------------------------------------------------------------------------------


async def test_no_threshold_met_no_condition_no_eviction() -> None:
    pods, stats = three_qos_pods()
    r = rig(pods)
    r.stats.pods = stats
    r.stats.set_available(100 * MI)  # exactly the threshold: not below it
    assert await r.sync() == []
    assert r.manager.conditions == [] and r.condition_changes == [] and r.recorder.events == []
    assert r.stats.pod_calls == []  # no pod stats read without pressure


async def test_hard_threshold_evicts_the_besteffort_pod_first_with_kubelets_message() -> None:
    pods, stats = three_qos_pods()
    r = rig(pods)
    r.stats.pods = stats
    r.stats.set_available(88 * MI + 4096)
    assert await r.sync() == ["besteffort"]
    assert r.manager.conditions == ["MemoryPressure"]
    assert r.condition_changes == [["MemoryPressure"]]
    assert [(e.name, e.grace, e.message) for e in r.evictor.evicted] == [("besteffort", 1, BE_MESSAGE)]
    assert r.recorder.events == [
        ("node-1", "Warning", "EvictionThresholdMet", "Attempting to reclaim memory"),
        ("besteffort", "Warning", "Evicted", BE_MESSAGE),
    ]
    assert r.stats.pod_calls == [(("guaranteed", "burstable", "besteffort"), frozenset({POD_MEMORY}))]


async def test_one_pod_per_pass_in_rank_order_while_the_shortage_lasts() -> None:
    pods, stats = three_qos_pods()
    r = rig(pods)
    r.stats.pods = stats
    r.stats.set_available(50 * MI)
    assert await r.at(0) == ["besteffort"]
    assert await r.at(10) == ["burstable"]
    r.stats.set_available(500 * MI)
    assert await r.at(20) == []
    assert r.evictor.names == ["besteffort", "burstable"]
    assert [e.message for e in r.evictor.evicted][1] == (
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "
        "Container app was using 150Mi, request is 100Mi, has larger consumption of memory. ")


@pytest.mark.parametrize(("available", "met"), [(100 * MI, False), (100 * MI - 1, True), (100 * MI + 1, False)])
async def test_a_threshold_is_met_only_below_its_quantity(available: int, met: bool) -> None:
    r = rig([pod("a")])
    r.stats.pods = {"uid-a": memory_stats("a", 10 * MI)}
    r.stats.set_available(available)
    assert await r.sync() == (["a"] if met else [])


async def test_a_percentage_is_of_the_capacity_as_kubelet_computes_it_in_float32() -> None:
    # 10% is 0.100000001490116 in float32: of 10Gi that is 1073741840 bytes, 16 more than 1Gi.
    r = rig([pod("a")], hard="nodefs.available<10%", nodefs=fs(10 * GI, GI))
    r.stats.pods = {"uid-a": PodStats("uid-a", (ContainerStats("app", rootfs_bytes=MI, logs_bytes=0),))}
    assert await r.sync() == ["a"]
    assert r.evictor.evicted[0].message == (
        "The node was low on resource: ephemeral-storage. Threshold quantity: 1073741840, available: 1Gi. "
        "Container app was using 1Mi, request is 0, has larger consumption of ephemeral-storage. ")
    assert r.manager.conditions == ["DiskPressure"]


# -- soft thresholds and their grace periods ---------------------------------------------------------


async def test_a_soft_threshold_evicts_only_once_met_for_its_grace_period() -> None:
    pods, stats = three_qos_pods()
    r = rig(pods, hard="", soft="memory.available<300Mi", grace="memory.available=30s", max_grace=5)
    r.stats.pods = stats
    r.stats.set_available(200 * MI)
    assert await r.at(0) == []
    assert r.manager.conditions == ["MemoryPressure"]  # the condition does not wait for the grace period
    assert await r.at(29.9) == []
    assert await r.at(30) == ["besteffort"]
    # the soft grace: --eviction-max-pod-grace-period, at most the pod's own (30 s by default)
    assert [(e.name, e.grace) for e in r.evictor.evicted] == [("besteffort", 5)]
    assert r.evictor.evicted[0].message.startswith("The node was low on resource: memory. Threshold quantity: "
                                                    "300Mi, available: 200Mi. ")


async def test_the_soft_grace_period_starts_again_when_the_signal_recovers() -> None:
    r = rig([pod("a")], hard="", soft="memory.available<300Mi", grace="memory.available=30s")
    r.stats.pods = {"uid-a": memory_stats("a", 100 * MI)}
    r.stats.set_available(200 * MI)
    assert await r.at(0) == []
    r.stats.set_available(400 * MI)
    assert await r.at(20) == []
    r.stats.set_available(200 * MI)
    assert await r.at(25) == []
    assert await r.at(54.9) == []
    assert await r.at(55) == ["a"]


@pytest.mark.parametrize(("max_grace", "pod_grace", "expected"), [(0, None, 0), (10, None, 10), (10, 4, 4),
                                                                  (-1, 45, 45), (-1, None, 30)])
async def test_soft_evictions_use_the_max_pod_grace_period_capped_by_the_pods_own(
        max_grace: int, pod_grace: int | None, expected: int) -> None:
    r = rig([pod("a", grace=pod_grace)], hard="", soft="memory.available<300Mi", grace="memory.available=1s",
            max_grace=max_grace)
    r.stats.pods = {"uid-a": memory_stats("a", 100 * MI)}
    r.stats.set_available(200 * MI)
    assert await r.at(0) == []
    assert await r.at(1) == ["a"]
    assert r.evictor.evicted[0].grace == expected


# -- minimum reclaim ------------------------------------------------------------------------------------


async def test_a_threshold_met_stays_met_until_its_minimum_reclaim_is_free() -> None:
    pods = [pod(f"p{i}") for i in range(4)]
    r = rig(pods, reclaim="memory.available=200Mi")
    r.stats.pods = {f"uid-p{i}": memory_stats(f"p{i}", (40 - i) * MI) for i in range(4)}
    r.stats.set_available(90 * MI)
    assert await r.at(0) == ["p0"]
    r.stats.set_available(250 * MI)  # above 100Mi, below 100Mi + 200Mi
    assert await r.at(10) == ["p1"]
    r.stats.set_available(300 * MI)  # exactly 100Mi + 200Mi: resolved
    assert await r.at(20) == []
    r.stats.set_available(250 * MI)  # resolved, so only the 100Mi threshold counts again
    assert await r.at(30) == []
    assert r.evictor.names == ["p0", "p1"]


# -- node conditions and the transition period ----------------------------------------------------------


async def test_pressure_holds_for_the_transition_period_after_the_threshold_was_last_met() -> None:
    r = rig([], transition=60)
    r.stats.set_available(50 * MI)
    await r.at(0)
    r.stats.set_available(50 * MI)
    await r.at(10)  # met again: the period counts from here
    r.stats.set_available(1 * GI)
    for t in (20, 40, 69.9):
        await r.at(t)
        assert r.manager.conditions == ["MemoryPressure"], t
    await r.at(70)
    assert r.manager.conditions == []
    assert r.condition_changes == [["MemoryPressure"], []]


async def test_each_signal_sets_its_own_condition_and_node_status_shows_them() -> None:
    r = rig([], hard="memory.available<100Mi,nodefs.inodesFree<5%,pid.available<100",
            nodefs=fs(10 * GI, 5 * GI, inodes=1000, inodes_free=40), imagefs=fs(10 * GI, 5 * GI),
            max_pid=1000, processes=950)
    r.stats.set_available(50 * MI)
    await r.sync()
    assert r.manager.conditions == ["DiskPressure", "MemoryPressure", "PIDPressure"]
    conditions = render_conditions(NodeHealth(pressure=tuple(r.manager.conditions)), [], 0)
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in conditions] == [
        ("MemoryPressure", "True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
        ("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure"),
        ("PIDPressure", "True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]


# -- ranking ------------------------------------------------------------------------------------------------


def test_memory_ranking_exceeding_requests_then_priority_then_usage_above_requests() -> None:
    pods = [
        pod("guaranteed", requests={"memory": "200Mi"}, limits={"memory": "200Mi"}),
        pod("burstable-under", requests={"memory": "200Mi"}),
        pod("besteffort-important", priority=1000),
        pod("burstable-over", requests={"memory": "100Mi"}),
        pod("besteffort"),
        pod("no-stats"),
    ]
    usage = {"guaranteed": 190, "burstable-under": 100, "besteffort-important": 600, "burstable-over": 150,
             "besteffort": 500}
    stats = {f"uid-{n}": memory_stats(n, u * MI) for n, u in usage.items()}
    ranked = [p["metadata"]["name"] for p in rank_memory_pressure(pods, stats)]
    # Without stats first; then those over their requests (by priority, then by how far over);
    # then the rest, the one closest to its request (190Mi of 200Mi) before the one further under.
    assert ranked == ["no-stats", "besteffort", "burstable-over", "besteffort-important", "guaranteed",
                      "burstable-under"]


def test_pid_ranking_priority_then_processes() -> None:
    pods = [pod("few"), pod("many"), pod("many-important", priority=10), pod("some")]
    counts = {"few": 3, "many": 300, "many-important": 900, "some": 30}
    stats = {f"uid-{n}": PodStats(f"uid-{n}", process_count=c) for n, c in counts.items()}
    assert [p["metadata"]["name"] for p in rank_pid_pressure(pods, stats)] == ["many", "some", "few",
                                                                               "many-important"]


async def test_pid_pressure_evicts_the_pod_with_most_processes() -> None:
    pods = [pod("quiet"), pod("forks")]
    r = rig(pods, hard="pid.available<100", max_pid=1000, processes=950)
    r.stats.pods = {"uid-quiet": PodStats("uid-quiet", process_count=2),
                    "uid-forks": PodStats("uid-forks", process_count=900)}
    assert await r.sync() == ["forks"]
    assert r.evictor.evicted[0].message == "The node was low on resource: pids. Threshold quantity: 100, " \
                                           "available: 50. "
    assert r.manager.conditions == ["PIDPressure"]
    assert r.stats.pod_calls[-1][1] == frozenset({POD_PROCESSES})


async def test_pods_without_containers_are_no_candidates() -> None:
    r = rig([pod("pending"), pod("a")])
    r.stats.pods = {"uid-a": memory_stats("a", 10 * MI)}
    r.stats.set_available(50 * MI)
    assert await r.sync() == ["a"]


async def test_a_critical_pod_is_never_evicted() -> None:
    pods = [pod("system", priority=2_000_000_000), pod("static"), pod("user", requests={"memory": "1Gi"})]
    pods[1]["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    r = rig(pods)
    r.stats.pods = {"uid-system": memory_stats("system", 900 * MI), "uid-static": memory_stats("static", 800 * MI),
                    "uid-user": memory_stats("user", 10 * MI)}
    r.stats.set_available(50 * MI)
    assert await r.sync() == ["user"]
    assert [e[2] for e in r.recorder.events] == ["EvictionThresholdMet", "Evicted"]


# -- disk ---------------------------------------------------------------------------------------------------


def disk_stats(name: str, rootfs: int, logs: int = 0, volumes: dict[str, int] | None = None) -> PodStats:
    return PodStats(f"uid-{name}", (ContainerStats("app", rootfs_bytes=rootfs, logs_bytes=logs,
                                                   rootfs_inodes=1, logs_inodes=1),),
                    volume_bytes=volumes or {})


async def test_disk_pressure_first_reclaims_dead_containers_and_unused_images() -> None:
    r = rig([pod("a")], hard="imagefs.available<15%", nodefs=fs(10 * GI, GI), imagefs=fs(10 * GI, GI))
    r.reclaimer.on_images = lambda: setattr(r.stats, "imagefs", fs(10 * GI, 3 * GI))
    r.stats.nodefs = r.stats.imagefs = fs(10 * GI, GI)
    assert await r.sync() == []
    assert r.reclaimer.calls == ["containers", "images"]
    assert r.evictor.evicted == [] and r.stats.pod_calls == []
    assert r.manager.conditions == ["DiskPressure"]  # set by the pass that found the pressure


async def test_disk_pressure_evicts_the_biggest_user_when_reclaiming_is_not_enough() -> None:
    pods = [pod("small"), pod("big", requests={"ephemeral-storage": "100Mi"}), pod("writer")]
    r = rig(pods, hard="nodefs.available<10%", nodefs=fs(10 * GI, 512 * MI), imagefs=fs(10 * GI, 512 * MI))
    r.stats.pods = {"uid-small": disk_stats("small", MI), "uid-big": disk_stats("big", 300 * MI),
                    "uid-writer": disk_stats("writer", MI, logs=MI, volumes={"cache": 200 * MI})}
    assert await r.sync() == ["writer"]  # 202Mi over its request of 0, before big's 200Mi over 100Mi
    assert r.reclaimer.calls == ["containers", "images"]
    assert r.stats.pod_calls == [(("small", "big", "writer"), frozenset({POD_DISK}))]
    assert r.evictor.evicted[0].message == (
        "The node was low on resource: ephemeral-storage. Threshold quantity: 1073741840, available: 512Mi. "
        "Container app was using 2Mi, request is 0, has larger consumption of ephemeral-storage. ")


async def test_with_a_dedicated_imagefs_nodefs_pressure_reclaims_nothing_and_counts_logs_and_volumes() -> None:
    pods = [pod("layer"), pod("logger")]
    r = rig(pods, hard="nodefs.available<10%", nodefs=fs(10 * GI, 512 * MI, device=1),
            imagefs=fs(10 * GI, 5 * GI, device=2))
    r.stats.pods = {"uid-layer": disk_stats("layer", 900 * MI), "uid-logger": disk_stats("logger", MI, logs=50 * MI)}
    assert await r.sync() == ["logger"]
    assert r.reclaimer.calls == []


# -- local storage limits ---------------------------------------------------------------------------------


async def test_an_emptydir_over_its_size_limit_is_evicted_without_node_pressure() -> None:
    pods = [pod("filler", volumes=[{"name": "cache", "emptyDir": {"sizeLimit": "50Mi"}}]), pod("other")]
    r = rig(pods)
    r.stats.set_available(GI)
    r.stats.pods = {"uid-filler": disk_stats("filler", 0, volumes={"cache": 50 * MI})}
    assert await r.at(0) == []  # at the limit is not over it
    assert r.stats.pod_calls == [(("filler",), frozenset({POD_DISK}))]  # only pods with limits are measured
    r.stats.pods = {"uid-filler": disk_stats("filler", 0, volumes={"cache": 50 * MI + 4096})}
    assert await r.at(10) == ["filler"]
    assert [(e.name, e.grace, e.message) for e in r.evictor.evicted] == [
        ("filler", 1, 'Usage of EmptyDir volume "cache" exceeds the limit "50Mi". ')]
    assert r.manager.conditions == []


async def test_ephemeral_storage_limits_of_a_container_and_of_the_pod() -> None:
    # c's containers stay within their 110Mi together, but app is over its own 10Mi
    container = pod("c", limits={"ephemeral-storage": "10Mi"})
    container["spec"]["containers"].append({"name": "side", "resources": {"limits": {"ephemeral-storage": "100Mi"}}})
    whole = pod("p", limits={"ephemeral-storage": "20Mi"}, volumes=[{"name": "v", "emptyDir": {}}])
    r = rig([container, whole])
    r.stats.set_available(GI)
    r.stats.pods = {"uid-c": disk_stats("c", 8 * MI, logs=3 * MI), "uid-p": disk_stats("p", MI, volumes={"v": 20 * MI})}
    assert await r.sync() == ["c", "p"]
    assert [e.message for e in r.evictor.evicted] == [
        'Container app exceeded its local ephemeral storage limit "10Mi". ',
        "Pod ephemeral local storage usage exceeds the total limit of containers 20Mi. "]


async def test_local_storage_limits_can_be_switched_off() -> None:
    r = rig([pod("filler", volumes=[{"name": "cache", "emptyDir": {"sizeLimit": "1Mi"}}])], local_storage=False)
    r.stats.set_available(GI)
    r.stats.pods = {"uid-filler": disk_stats("filler", 0, volumes={"cache": 50 * MI})}
    assert await r.sync() == []


# -- stale readings, the cleanup wait and the loop -----------------------------------------------------


async def test_a_reading_is_acted_on_once() -> None:
    r = rig([pod("a"), pod("b")])
    r.stats.pods = {"uid-a": memory_stats("a", 20 * MI), "uid-b": memory_stats("b", 10 * MI)}
    r.stats.set_available(50 * MI)
    r.stats.frozen_time = 5.0
    assert await r.at(0) == ["a"]
    assert await r.at(10) == []  # the same reading again: no second eviction on it
    r.stats.frozen_time = 6.0
    assert await r.at(20) == ["b"]


async def test_after_an_eviction_it_waits_for_the_pod_to_be_cleaned_up_polling_every_second() -> None:
    r = rig([pod("a")])
    r.evictor.clean_after = 3
    assert await r.manager.wait_for_cleanup([pod("a")]) is True
    assert r.clock.now == 1004.0 and r.evictor.checks == 4
    r.evictor.clean_after, r.evictor.checks = 10**6, 0
    start = r.clock.now
    assert await r.manager.wait_for_cleanup([pod("a")]) is False
    assert r.clock.now - start == CLEANUP_TIMEOUT and r.evictor.checks == 30


async def test_the_loop_evicts_waits_for_cleanup_then_looks_again_when_woken() -> None:
    r = rig([pod("a"), pod("b")])
    r.stats.pods = {"uid-a": memory_stats("a", 20 * MI), "uid-b": memory_stats("b", 10 * MI)}
    r.stats.set_available(50 * MI)
    manager: EvictionManager = r.manager
    manager.config = type(manager.config)(**{**manager.config.__dict__, "monitoring_period": 3600.0})
    passes: list[float] = []
    manager.after_pass = lambda: passes.append(r.clock.now)
    task = asyncio.create_task(manager.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0)
            if len(passes) == 2:
                break
        # pass 1 evicted a, the cleanup wait took one poll (1 s), pass 2 evicted b, then a wait for cleanup
        assert r.evictor.names == ["a", "b"]
        assert passes == [1000.0, 1001.0]
        r.stats.set_available(GI)
        for _ in range(200):
            await asyncio.sleep(0)
        assert len(passes) == 3  # resting now, for the monitoring period or a wake-up
        manager.wake.set()
        for _ in range(200):
            await asyncio.sleep(0)
            if len(passes) == 4:
                break
        assert len(passes) == 4
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
