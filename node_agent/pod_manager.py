"""Desired pods (the informer) against actual containers (the runtime cache), one pod at a time.

`sync(uid)` is what each pod worker runs: a live pod goes through `PodSyncer` and gets its
status written; a pod being deleted, or gone from the API, or never known (an orphan) is
killed, its network torn down, its containers and directory removed, and, if it still
exists, finally deleted through the API with grace 0 and a uid precondition. Nothing
is synced before the informer has listed once, so no running pod is mistaken for an orphan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from node_agent.backoff import CrashBackoff
from node_agent.image_puller import ImagePuller
from node_agent.pleg import RuntimeCache
from node_agent.pod_kill import Killer, grace_period
from node_agent.pod_status import TERMINAL, SyncNotes, compute_status, write_status
from node_agent.pod_sync import PodSyncer
from node_agent.pod_worker import DONE, PodWorkers, SyncResult
from node_agent.prober_manager import ProberManager
from node_agent.runtime.containers import PodRuntime
from node_agent.sandbox import Sandboxes
from node_agent.settings import AgentSettings
from node_agent.volumes import teardown_volumes
from skiff.client import ApiClient, Conflict, NotFound

log = logging.getLogger("skiff.agent.pods")

Obj = dict[str, Any]


def _uid(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("uid", ""))


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _name(pod: Obj | None, runtime: PodRuntime | None = None) -> str:
    if pod is not None:
        md = pod.get("metadata") or {}
        return f"{md.get('namespace')}/{md.get('name')}"
    if runtime is not None and runtime.name:
        return f"{runtime.namespace}/{runtime.name}"
    return "?"


class PodManager:
    def __init__(self, client: ApiClient, settings: AgentSettings, cache: RuntimeCache, syncer: PodSyncer,
                 killer: Killer, sandboxes: Sandboxes, probes: ProberManager, backoff: CrashBackoff,
                 puller: ImagePuller, host_ip: str, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.settings = settings
        self.cache = cache
        self.syncer = syncer
        self.killer = killer
        self.sandboxes = sandboxes
        self.probes = probes
        self.backoff = backoff
        self.puller = puller
        self.host_ip = host_ip
        self._clock = clock
        self.workers = PodWorkers(self.sync)
        self.synced = asyncio.Event()  # the informer listed once: orphans can be told apart
        self._pods: dict[str, Obj] = {}
        self._last_known: dict[str, Obj] = {}
        self._notes: dict[str, SyncNotes] = {}
        self._written: dict[str, Obj] = {}

    # ---- triggers --------------------------------------------------------------------

    def trigger(self, uid: str, delay: float = 0.0) -> None:
        if self.synced.is_set():
            self.workers.enqueue(uid, delay)

    def on_pod(self, pod: Obj) -> None:
        uid = _uid(pod)
        self._pods[uid] = pod
        self._last_known[uid] = pod
        self.trigger(uid)

    def on_pod_update(self, old: Obj, new: Obj) -> None:
        self.on_pod(new)

    def on_pod_delete(self, pod: Obj) -> None:
        uid = _uid(pod)
        self._pods.pop(uid, None)
        self._last_known[uid] = pod
        self.trigger(uid)

    def mark_synced(self) -> None:
        """The informer has listed: start syncing every known pod and every pod in Docker."""
        self.synced.set()
        for uid in set(self._pods) | self.cache.uids():
            self.workers.enqueue(uid)

    async def relist_once(self) -> None:
        for uid in await self.cache.relist():
            self.trigger(uid)

    async def relist_loop(self) -> None:
        """Relist every relist_period (changes wake their pods); every sync_frequency, wake pods without a worker."""
        last_full = self._clock()
        while True:
            try:
                await self.relist_once()
                if self._clock() - last_full >= self.settings.sync_frequency:
                    last_full = self._clock()
                    # Workers resync themselves; this catches pods that have none (e.g. a leftover after DONE).
                    for uid in (set(self._pods) | self.cache.uids()) - self.workers.uids():
                        self.trigger(uid)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("relisting containers failed: %s; trying again in %.0fs", exc,
                            self.settings.relist_period)
            await asyncio.sleep(self.settings.relist_period)

    async def clean_leftover_networks(self) -> None:
        """Sandboxes whose network was set up but whose container is gone: CNI DEL them."""
        known = self.cache.container_ids()
        for sandbox_id in self.sandboxes.leftover_ids():
            if sandbox_id not in known:
                log.info("sandbox %s is gone but its network is not; tearing it down", sandbox_id[:12])
                try:
                    await self.sandboxes.teardown(sandbox_id, 0)
                except Exception as exc:
                    log.warning("tearing down the network of sandbox %s failed: %s; retrying at the next start",
                                sandbox_id[:12], exc)

    # ---- one pod ---------------------------------------------------------------------

    async def sync(self, uid: str) -> SyncResult:
        pod = self._pods.get(uid)
        runtime = await self.cache.refresh_pod(uid)
        if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
            return await self._terminate(uid, pod, runtime)
        started = time.monotonic()
        notes = self._notes.setdefault(uid, SyncNotes())
        phase = (pod.get("status") or {}).get("phase")
        if phase in TERMINAL or notes.terminal:
            notes.terminal = notes.terminal or phase
            await self._finish(pod, runtime, notes)
            delay = None
        else:
            delay = await self.syncer.sync(pod, runtime, notes)
            runtime = await self.cache.refresh_pod(uid)
        pod = self._freshest(uid, pod)
        status = compute_status(pod, runtime, notes, self.probes, self.host_ip, self._clock())
        if status["phase"] in TERMINAL and not notes.terminal:
            log.info("pod %s is %s; stopping its sandbox", _name(pod), status["phase"])
            notes.terminal = status["phase"]
            await self._finish(pod, runtime, notes)
        synced = time.monotonic()
        await self._write_status(uid, pod, status, notes, runtime)
        log.debug("pod %s synced in %.3fs (status %s, written in %.3fs)", _name(pod), synced - started,
                  status["phase"], time.monotonic() - synced)
        return delay if delay is not None else self.settings.sync_frequency

    def _freshest(self, uid: str, pod: Obj) -> Obj:
        """The informer's pod, with our own last status write if the informer has not seen it yet."""
        written = self._written.get(uid)
        if written is None or _rv(written) <= _rv(pod):
            return pod
        return {**pod, "metadata": {**pod["metadata"], "resourceVersion": written["metadata"]["resourceVersion"]},
                "status": written.get("status") or {}}

    async def _write_status(self, uid: str, pod: Obj, status: Obj, notes: SyncNotes, runtime: PodRuntime) -> None:
        if status == (pod.get("status") or {}):
            return

        def recompute(fresh: Obj) -> Obj:
            return compute_status(fresh, runtime, notes, self.probes, self.host_ip, self._clock())

        stored = await write_status(self.client, pod, status, recompute=recompute)
        if stored is not None:
            self._written[uid] = stored
            log.debug("pod %s status written: %s", _name(pod), stored.get("status", {}).get("phase"))

    async def _finish(self, pod: Obj, runtime: PodRuntime, notes: SyncNotes) -> None:
        """A pod that is over: no probes, no sandbox, no network; its containers stay for logs."""
        self.probes.remove_pod(_uid(pod))
        notes.waiting = {}
        notes.sandbox_ready = False
        for sandbox in runtime.sandboxes:
            if sandbox.running or self.sandboxes.recorded_ip(sandbox.id) is not None:
                await self.killer.kill_pod(pod, runtime, grace_period(pod), notes.pod_ip)
                break

    async def _terminate(self, uid: str, pod: Obj | None, runtime: PodRuntime) -> SyncResult:
        last = pod or self._last_known.get(uid)
        if pod is not None:
            grace = float(grace_period(pod))
        elif last is not None:  # force-deleted: its deletionGracePeriodSeconds, at least the minimum
            grace = max(self.settings.minimum_grace_period, float(grace_period(last)))
        else:  # an orphan nobody knows about
            grace = self.settings.minimum_grace_period
        notes = self._notes.get(uid)
        if runtime.all:
            log.info("pod %s: %s; killing its containers (grace %.0fs)", _name(last, runtime),
                     "deleted" if pod is not None else "no longer exists" if last else "is unknown (orphan)", grace)
            self.probes.remove_pod(uid)
            await self.killer.kill_pod(last, runtime, grace, notes.pod_ip if notes else None)
            await self.killer.remove_pod(await self.cache.refresh_pod(uid))
            await self.cache.refresh_pod(uid)
        self.probes.remove_pod(uid)
        await teardown_volumes(self.settings.pod_dir(uid))
        if pod is not None:
            try:
                await self.client.delete("pods", pod["metadata"]["name"], pod["metadata"]["namespace"],
                                         grace_period_seconds=0, preconditions={"uid": uid})
                log.info("pod %s: containers removed; deleted it from the API", _name(pod))
            except (NotFound, Conflict):
                pass  # already gone, or a new pod of the same name
        self.backoff.forget_pod(uid)
        self.puller.forget(uid)
        for table in (self._notes, self._written, self._last_known):
            table.pop(uid, None)
        return DONE
