"""The actual state: managed containers in Docker, grouped by pod uid (kubelet's PLEG + cache).

`relist` is the cheap periodic look (``docker ps -a`` filtered by label, inspecting only
containers that are new or changed state) and returns the pods that changed; `refresh_pod`
does the same for one pod and is what every pod sync starts with, so a sync never acts
on a stale view. `watch_events` turns Docker's event stream into wake-ups.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from node_agent.runtime.containers import LABEL_POD_UID, ContainerRecord, PodRuntime
from node_agent.runtime.docker_adapter import CONNECTED, ContainerSummary, DockerAdapter, NotFoundError

log = logging.getLogger("skiff.agent.pleg")


class RuntimeCache:
    def __init__(self, docker: DockerAdapter) -> None:
        self.docker = docker
        self._records: dict[str, ContainerRecord] = {}
        self._states: dict[str, str] = {}

    async def _apply(self, rows: list[ContainerSummary], uid: str | None) -> set[str]:
        changed: set[str] = set()
        seen: set[str] = set()
        for row in rows:
            seen.add(row.id)
            if row.id in self._records and self._states.get(row.id) == row.state:
                continue
            try:
                record = ContainerRecord.from_inspect(await self.docker.inspect(row.id))
            except NotFoundError:
                continue  # removed between list and inspect
            self._records[row.id] = record
            self._states[row.id] = row.state
            changed.add(record.pod_uid)
        for cid, record in list(self._records.items()):
            if cid not in seen and (uid is None or record.pod_uid == uid):
                del self._records[cid]
                self._states.pop(cid, None)
                changed.add(record.pod_uid)
        changed.discard("")
        return changed

    async def relist(self) -> set[str]:
        """Refresh every managed container; returns the uids of pods whose containers changed."""
        return await self._apply(await self.docker.list_managed(), None)

    async def refresh_pod(self, uid: str) -> PodRuntime:
        """Refresh one pod's containers and return them."""
        await self._apply(await self.docker.list_managed(uid), uid)
        return self.pod(uid)

    def pod(self, uid: str) -> PodRuntime:
        return PodRuntime.group(r for r in self._records.values() if r.pod_uid == uid).get(uid) or PodRuntime(uid)

    def uids(self) -> set[str]:
        return {r.pod_uid for r in self._records.values() if r.pod_uid}

    def container_ids(self) -> set[str]:
        return set(self._records)


async def watch_events(docker: DockerAdapter, on_pod: Callable[[str], None], on_reconnect: Callable[[], None]) -> None:
    """Forever: a container event of a managed container wakes its pod; a (re)connection
    wakes everything (events were missed while disconnected)."""
    async for event in docker.events():
        if event.get("Type") == CONNECTED["Type"]:
            log.info("docker event stream connected; relisting")
            on_reconnect()
            continue
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        uid = attrs.get(LABEL_POD_UID)
        if uid:
            log.debug("docker event %s for %s (pod %s/%s)", event.get("Action"), attrs.get("name"),
                      attrs.get("io.kubernetes.pod.namespace"), attrs.get("io.kubernetes.pod.name"))
            on_pod(uid)
        await asyncio.sleep(0)

