"""`PodSyncer.sync`: converge one live pod, in kubelet's SyncPod order.

volumes -> sandbox (pause container + CNI ADD) -> init containers in order, each to
completion -> app containers in order -> probes. Level-triggered and idempotent: it reads
the pod and its containers, does the next steps, and returns how soon it wants to look
again (None: only on the next event or periodic resync). What it could not do goes into
`SyncNotes.waiting` as the container's waiting reason, and into events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_agent.backoff import CrashBackoff, go_duration
from node_agent.etc_hosts import etc_hosts_mount
from node_agent.events import NORMAL, WARNING, EventRecorder, container_field_path
from node_agent.hooks import run_handler
from node_agent.image_puller import ImagePuller, ImagePullError
from node_agent.pod_kill import Killer
from node_agent.pod_status import SyncNotes
from node_agent.prober_manager import ProberManager
from node_agent.resolv_conf import DnsConfigurer, resolv_conf_mount
from node_agent.runtime.container_spec import container_create_kwargs, format_pod, hash_container, to_docker_kwargs
from node_agent.runtime.containers import APP, INIT, LABEL_NODE, LABEL_SANDBOX_ID, ContainerRecord, PodRuntime
from node_agent.runtime.docker_adapter import ConflictError, DockerAdapter, DockerError
from node_agent.runtime.env import ContainerConfigError, resolve_env
from node_agent.sandbox import SandboxError, Sandboxes, SandboxInfo
from node_agent.volumes import VolumeError, VolumeSource, mounts_for, prepare_termination_log, prepare_volumes

log = logging.getLogger("skiff.agent.sync")

Obj = dict[str, Any]
Getter = Callable[[str, str], Awaitable[Obj | None]]
Refresh = Callable[[str], Awaitable[PodRuntime]]
RETRY = 5.0  # seconds before retrying a step that failed for a reason outside our control
KEEP_DEAD = 1  # dead instances kept per container, besides the latest (for lastState and logs --previous)


@dataclass
class SyncDeps:
    docker: DockerAdapter
    sandboxes: Sandboxes
    killer: Killer
    puller: ImagePuller
    recorder: EventRecorder
    probes: ProberManager
    backoff: CrashBackoff
    get_configmap: Getter
    get_secret: Getter
    refresh: Refresh
    pods_dir: Path
    node_ip: str
    node_name: str = ""
    allocatable: Mapping[str, Any] | None = None
    clock: Callable[[], float] = time.monotonic
    dns: DnsConfigurer | None = None  # None: containers keep the resolv.conf Docker gives them


class _Wait(Exception):
    """Stop this sync here; look again after ``delay`` seconds (None: on the next event)."""

    def __init__(self, delay: float | None = None) -> None:
        self.delay = delay


def _meta(pod: Mapping[str, Any]) -> tuple[str, str, str]:
    md = pod.get("metadata") or {}
    return str(md.get("namespace", "")), str(md.get("name", "")), str(md.get("uid", ""))


def should_restart(policy: str, record: ContainerRecord) -> bool:
    if policy == "Always":
        return True
    return policy == "OnFailure" and record.exit_code != 0


class PodSyncer:
    def __init__(self, deps: SyncDeps) -> None:
        self.d = deps

    async def sync(self, pod: Obj, runtime: PodRuntime, notes: SyncNotes) -> float | None:
        notes.waiting = {}
        try:
            volumes = await self._volumes(pod, notes)
            sandbox, runtime = await self._sandbox(pod, runtime, notes)
            await self._init_containers(pod, runtime, sandbox, volumes, notes)
            return await self._app_containers(pod, runtime, sandbox, volumes, notes)
        except _Wait as wait:
            return wait.delay
        finally:
            await self._collect_garbage(runtime)

    # ---- volumes -----------------------------------------------------------------------

    async def _volumes(self, pod: Obj, notes: SyncNotes) -> dict[str, VolumeSource]:
        ns, name, uid = _meta(pod)
        try:
            volumes = await prepare_volumes(pod, self.d.pods_dir / uid, get_configmap=self.d.get_configmap,
                                            get_secret=self.d.get_secret, node_allocatable=self.d.allocatable)
        except VolumeError as exc:
            notes.mount_failures += 1
            delay = min(60.0, 2.0 * 2 ** (notes.mount_failures - 1))
            for message in exc.messages:
                self.d.recorder.record(pod, WARNING, exc.reason, message)
            log.info("pod %s/%s: volumes not ready (%s); retrying in %.0fs", ns, name, exc.message, delay)
            raise _Wait(delay) from exc
        notes.mount_failures = 0
        return volumes

    # ---- sandbox -----------------------------------------------------------------------

    async def _sandbox(self, pod: Obj, runtime: PodRuntime, notes: SyncNotes) -> tuple[SandboxInfo, PodRuntime]:
        ns, name, uid = _meta(pod)
        current = runtime.sandbox
        if current is not None and current.running:
            try:
                info = await self.d.sandboxes.ensure_network(pod, current)
            except SandboxError as exc:
                self.d.recorder.record(pod, WARNING, exc.reason, str(exc))
                await self.d.sandboxes.stop(current)  # the next sync creates a fresh one
                raise _Wait(RETRY) from exc
        else:
            if current is not None and not self._needs_new_sandbox(pod, runtime):
                await self.d.sandboxes.stop(current)
                raise _Wait(None)  # everything ran and nothing restarts: the pod is done
            if current is not None:
                self.d.recorder.record(pod, NORMAL, "SandboxChanged",
                                       "Pod sandbox changed, it will be killed and re-created.")
                log.info("pod %s/%s: sandbox %s is gone; killing the pod's containers and recreating it",
                         ns, name, current.id[:12])
                await self.d.killer.kill_pod(pod, runtime, 0)
            wait = notes.sandbox_retry_at - self.d.clock()
            if wait > 0:  # a failed attempt's own Docker events must not turn into a hot loop
                raise _Wait(wait)
            try:
                info = await self.d.sandboxes.create(pod, current.restart_count + 1 if current else 0)
            except SandboxError as exc:
                notes.sandbox_failures += 1
                delay = min(60.0, RETRY * 2 ** (notes.sandbox_failures - 1))
                notes.sandbox_retry_at = self.d.clock() + delay
                self.d.recorder.record(pod, WARNING, exc.reason, str(exc))
                log.warning("pod %s/%s: %s; retrying in %.0fs", ns, name, exc, delay)
                raise _Wait(delay) from exc
            notes.sandbox_failures = 0
            runtime = await self.d.refresh(uid)
        notes.pod_ip, notes.sandbox_ready = info.ip, True
        for old in runtime.sandboxes:
            if old.id != info.id and (old.running or self.d.sandboxes.recorded_ip(old.id) is not None):
                await self.d.sandboxes.stop(old)
        for stale in [r for r in runtime.containers if r.running and r.sandbox_id != info.id]:
            await self.d.killer.kill_container(pod, stale, 0, "Container is in a stale pod sandbox")
        return info, runtime

    def _needs_new_sandbox(self, pod: Obj, runtime: PodRuntime) -> bool:
        """kubelet's computePodActions: no new sandbox for a pod that is done."""
        spec = pod.get("spec") or {}
        policy = spec.get("restartPolicy", "Always")
        if policy == "Never" and runtime.containers:
            return False
        to_start = [c for c in spec.get("containers") or []
                    if not (policy == "OnFailure" and (r := runtime.latest(c["name"], APP)) is not None
                            and r.exited and r.exit_code == 0)]
        return bool(to_start)

    # ---- containers --------------------------------------------------------------------

    async def _init_containers(self, pod: Obj, runtime: PodRuntime, sandbox: SandboxInfo,
                               volumes: dict[str, VolumeSource], notes: SyncNotes) -> None:
        policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
        if any(r.sandbox_id == sandbox.id for c in (pod.get("spec") or {}).get("containers") or []
               for r in runtime.records(c["name"], APP)):
            return  # the app containers of this sandbox started: initialization is over
        for c in (pod.get("spec") or {}).get("initContainers") or []:
            records = runtime.records(c["name"], INIT)
            here = next((r for r in records if r.sandbox_id == sandbox.id), None)
            if here is None:
                raise _Wait(await self._start(pod, c, INIT, records[0].restart_count + 1 if records else 0, sandbox,
                                              volumes, notes))
            if here.running:
                raise _Wait(None)
            if here.exited and here.exit_code == 0:
                continue
            if not here.exited:  # created, never started (a crash in between)
                await self._start_existing(pod, c, here, INIT)
                raise _Wait(None)
            if policy == "Never":
                raise _Wait(None)  # the pod has failed
            raise _Wait(await self._restart(pod, c, INIT, here, sandbox, volumes, notes))

    async def _app_containers(self, pod: Obj, runtime: PodRuntime, sandbox: SandboxInfo,
                              volumes: dict[str, VolumeSource], notes: SyncNotes) -> float | None:
        policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
        wake: float | None = None
        running: set[str] = set()
        for c in (pod.get("spec") or {}).get("containers") or []:
            latest = runtime.latest(c["name"], APP)
            if latest is not None and latest.running:
                why = self._kill_reason(c, latest)
                if why is None:
                    self.d.probes.ensure(pod, c, latest, notes.pod_ip)
                    running.add(latest.id)
                    continue
                await self.d.killer.kill_container(pod, latest, _grace(pod), why, notes.pod_ip)
                latest = await self._reread(latest)
            if latest is not None and not latest.exited and latest.sandbox_id == sandbox.id:
                await self._start_existing(pod, c, latest, APP)
                continue
            if latest is not None and not should_restart(policy, latest):
                continue
            delay = await self._restart(pod, c, APP, latest, sandbox, volumes, notes)
            if delay is not None:
                wake = delay if wake is None else min(wake, delay)
        self.d.probes.retain(_meta(pod)[2], running)
        return wake

    def _kill_reason(self, c: Obj, record: ContainerRecord) -> str | None:
        name = c["name"]
        if self.d.probes.liveness_failed(record.id):
            return f"Container {name} failed liveness probe, will be restarted"
        if self.d.probes.startup_failed(record.id):
            return f"Container {name} failed startup probe, will be restarted"
        if record.spec_hash and record.spec_hash != hash_container(c):
            return f"Container {name} definition changed, will be restarted"
        return None

    async def _reread(self, record: ContainerRecord) -> ContainerRecord:
        try:
            return ContainerRecord.from_inspect(await self.d.docker.inspect(record.id))
        except DockerError:
            return record

    async def _restart(self, pod: Obj, c: Obj, kind: str, previous: ContainerRecord | None, sandbox: SandboxInfo,
                       volumes: dict[str, VolumeSource], notes: SyncNotes) -> float | None:
        """Start the next instance unless the crash back-off says wait; returns the wait."""
        ns, name, uid = _meta(pod)
        key = (uid, c["name"])
        if previous is not None:
            remaining = self.d.backoff.in_backoff(key, previous.finished_at)
            if remaining > 0:
                message = (f"back-off {go_duration(self.d.backoff.next_delay(key))} restarting failed "
                           f"container={c['name']} pod={format_pod(pod)}")
                notes.waiting[c["name"]] = ("CrashLoopBackOff", message)
                self.d.recorder.record(pod, WARNING, "BackOff", f"Back-off restarting failed container {c['name']} "
                                       f"in pod {format_pod(pod)}", container_field_path(c["name"], kind == INIT))
                return remaining
            self.d.backoff.record_start(key, previous.finished_at)
        return await self._start(pod, c, kind, previous.restart_count + 1 if previous else 0, sandbox, volumes, notes)

    async def _start(self, pod: Obj, c: Obj, kind: str, restart_count: int, sandbox: SandboxInfo,
                     volumes: dict[str, VolumeSource], notes: SyncNotes) -> float | None:
        """kubelet's startContainer: image, config, create, start, postStart. Returns a retry delay on failure."""
        ns, name, uid = _meta(pod)
        cname = c["name"]
        field_path = container_field_path(cname, kind == INIT)

        def fail(reason: str, message: str, event_message: str, delay: float | None) -> float | None:
            notes.waiting[cname] = (reason, message)
            self.d.recorder.record(pod, WARNING, "Failed", event_message, field_path)
            log.info("pod %s/%s: container %s cannot start (%s: %s); retrying in %s", ns, name, cname, reason,
                     message, f"{delay:.0f}s" if delay else "the next sync")
            return delay

        try:
            image = await self.d.puller.ensure_image(pod, c, field_path)
        except ImagePullError as exc:
            return fail(exc.reason, exc.message, f"Error: {exc.reason}", RETRY)
        try:
            env = await resolve_env(pod, c, get_configmap=self.d.get_configmap, get_secret=self.d.get_secret,
                                    pod_ip=notes.pod_ip or "", host_ip=self.d.node_ip,
                                    node_allocatable=self.d.allocatable)
            mounts = mounts_for(c, volumes, env=env)
            hosts = etc_hosts_mount(pod, self.d.pods_dir / uid, notes.pod_ip, c)
            if hosts is not None:
                mounts.append(hosts)
            if self.d.dns is not None:
                resolv, dns_warnings = resolv_conf_mount(self.d.dns, pod, self.d.pods_dir / uid, c)
                if resolv is not None:
                    mounts.append(resolv)
                for warning in dns_warnings:
                    self.d.recorder.record(pod, WARNING, warning.reason, warning.message)
            log_file = prepare_termination_log(self.d.pods_dir / uid, cname, restart_count)
            spec = container_create_kwargs(
                pod, c, kind="init" if kind == INIT else "app", pause_id=sandbox.id, restart_count=restart_count,
                attempt=restart_count, mounts=mounts, env=env, image_ref=str(c.get("image")),
                termination_log=str(log_file), image_user=str((image.get("Config") or {}).get("User") or ""))
        except ContainerConfigError as exc:
            return fail(exc.reason, exc.message, f"Error: {exc.message}", RETRY)
        spec.labels[LABEL_SANDBOX_ID] = sandbox.id
        if self.d.node_name:
            spec.labels[LABEL_NODE] = self.d.node_name
        try:
            container_id = await self._create(spec)
        except DockerError as exc:
            return fail("CreateContainerError", str(exc), f"Error: {exc}", RETRY)
        self.d.recorder.record(pod, NORMAL, "Created", f"Created container {cname}", field_path)
        try:
            await self.d.docker.start(container_id)
        except DockerError as exc:
            self.d.recorder.record(pod, WARNING, "Failed", f"Error: failed to start container \"{cname}\": {exc}",
                                   field_path)
            return None  # the container shows as terminated (ContainerCannotRun); restarts follow the policy
        self.d.recorder.record(pod, NORMAL, "Started", f"Started container {cname}", field_path)
        log.info("pod %s/%s: started %s container %s (restart %d)", ns, name, kind, cname, restart_count)
        post_start = (c.get("lifecycle") or {}).get("postStart")
        if post_start:
            failure = await run_handler(self.d.docker, post_start, c, container_id, notes.pod_ip, _grace(pod))
            if failure:
                self.d.recorder.record(pod, WARNING, "FailedPostStartHook", failure, field_path)
                record = ContainerRecord.from_inspect(await self.d.docker.inspect(container_id))
                await self.d.killer.kill_container(pod, record, _grace(pod), "FailedPostStartHook", notes.pod_ip)
        return None

    async def _create(self, spec: Any) -> str:
        kwargs = to_docker_kwargs(self.d.docker.api, spec)
        try:
            return await self.d.docker.create(kwargs)
        except ConflictError:
            # A leftover with the same name (a crash between create and label read): replace it.
            log.info("container name %s is taken by a leftover; removing it and creating again", spec.name)
            await self.d.docker.remove(spec.name)
            return await self.d.docker.create(kwargs)

    async def _start_existing(self, pod: Obj, c: Obj, record: ContainerRecord, kind: str) -> None:
        try:
            await self.d.docker.start(record.id)
            self.d.recorder.record(pod, NORMAL, "Started", f"Started container {c['name']}",
                                   container_field_path(c["name"], kind == INIT))
        except DockerError as exc:
            log.warning("starting created container %s failed: %s; removing it", record.name, exc)
            await self.d.docker.remove(record.id)

    async def _collect_garbage(self, runtime: PodRuntime) -> None:
        """Keep the latest instance of each container plus KEEP_DEAD dead ones, and only the latest sandbox."""
        by_name: dict[tuple[str, str], list[ContainerRecord]] = {}
        for r in runtime.containers:
            by_name.setdefault((r.kind, r.container), []).append(r)
        doomed = [r for recs in by_name.values() for r in recs[1 + KEEP_DEAD:] if not r.running]
        doomed += [s for s in runtime.sandboxes[1:] if not s.running and self.d.sandboxes.recorded_ip(s.id) is None]
        for r in doomed:
            try:
                await self.d.docker.remove(r.id)
            except DockerError as exc:
                log.warning("removing old container %s failed: %s; the next sync retries", r.name, exc)


def _grace(pod: Mapping[str, Any]) -> int:
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return int(value) if value is not None else 30

