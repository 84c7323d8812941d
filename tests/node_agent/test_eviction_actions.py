"""What an eviction does through the agent's parts (with stand-ins): the status is written
first and handed to the pod manager, then the app containers are stopped within the grace
period; and what disk-pressure reclaim removes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node_agent.eviction.actions import AgentEvictor, DockerReclaimer
from node_agent.eviction.ranking import EvictionNote
from node_agent.runtime.containers import ContainerRecord, PodRuntime

Obj = dict[str, Any]
MESSAGE = "The node was low on resource: memory. "


def record(cid: str, uid: str, container: str, kind: str = "app", running: bool = True) -> ContainerRecord:
    return ContainerRecord(id=cid, name=cid, pod_uid=uid, pod_name=uid, namespace="default", container=container,
                           kind=kind, restart_count=0, sandbox_id="", status="running" if running else "exited")


@dataclass
class Journal:
    """One ordered list of what every stand-in was asked to do."""

    steps: list[tuple[str, ...]] = field(default_factory=list)


class Client:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def update_status(self, plural: str, body: Obj, namespace: str) -> Obj:
        self.journal.steps.append(("write status", body["status"]["phase"], body["status"]["reason"]))
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "8"}}


class Cache:
    def __init__(self, journal: Journal, records: list[ContainerRecord]) -> None:
        self.journal = journal
        self.records = records

    async def refresh_pod(self, uid: str) -> PodRuntime:
        return self.pod(uid)

    async def relist(self) -> set[str]:
        return set()

    def pod(self, uid: str) -> PodRuntime:
        return PodRuntime.group(r for r in self.records if r.pod_uid == uid).get(uid) or PodRuntime(uid)

    def uids(self) -> set[str]:
        return {r.pod_uid for r in self.records}


class Docker:
    def __init__(self, journal: Journal, cache: Cache) -> None:
        self.journal = journal
        self.cache = cache

    async def stop(self, cid: str, timeout: float) -> None:
        self.journal.steps.append(("stop", cid, f"{timeout:g}"))
        self.cache.records = [r for r in self.cache.records if r.id != cid]

    async def remove(self, cid: str, force: bool = True) -> None:
        self.journal.steps.append(("remove", cid))


class Pods:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def on_pod(self, pod: Obj) -> None:
        self.journal.steps.append(("pod manager gets", pod["status"]["phase"], pod["metadata"]["resourceVersion"]))

    def trigger(self, uid: str, delay: float = 0.0) -> None:
        self.journal.steps.append(("sync", uid))


async def test_evict_writes_the_status_first_then_stops_the_app_containers() -> None:
    journal = Journal()
    cache = Cache(journal, [record("pause", "u1", "POD", kind="pause"), record("app", "u1", "app"),
                            record("old", "u1", "app", running=False), record("other", "u2", "app")])
    evictor = AgentEvictor(Client(journal), Docker(journal, cache), cache, Pods(journal),  # type: ignore[arg-type]
                           minimum_grace=2.0, clock=lambda: 0.0)
    pod = {"metadata": {"name": "hog", "namespace": "default", "uid": "u1", "resourceVersion": "7"},
           "status": {"phase": "Running"}}
    await evictor.evict(pod, 1, EvictionNote(MESSAGE, {}))
    assert journal.steps == [("write status", "Failed", "Evicted"), ("pod manager gets", "Failed", "8"),
                             ("stop", "app", "2"), ("sync", "u1")]
    assert not await evictor.cleaned_up(pod)  # the sandbox still runs: the pod worker takes it down
    cache.records = [r for r in cache.records if r.id != "pause"]
    assert await evictor.cleaned_up(pod)


async def test_disk_reclaim_removes_dead_containers_of_pods_gone_from_the_api_only() -> None:
    journal = Journal()
    cache = Cache(journal, [record("gone-app", "gone", "app", running=False),
                            record("gone-pause", "gone", "POD", kind="pause", running=False),
                            record("failed-app", "failed", "app", running=False),
                            record("live-old", "live", "app", running=False), record("live-app", "live", "app")])
    reclaimer = DockerReclaimer(Docker(journal, cache), cache, lambda: ["failed", "live"])  # type: ignore[arg-type]
    await reclaimer.delete_unused_containers()
    assert sorted(journal.steps) == [("remove", "gone-app"), ("remove", "gone-pause")]
