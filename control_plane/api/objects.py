"""The generic object registry: Kubernetes semantics for every resource type on top of
the store (metadata, defaulting, validation, optimistic concurrency, graceful deletion,
finalizers, status subresources).

HTTP does not appear here: handlers parse requests into calls on ``Objects`` and render
what comes back, so the same rules serve every verb and every transport.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from control_plane.api import errors, json_codec
from control_plane.api.admission import DEFAULT_TOLERATION_SECONDS, default_tolerations
from control_plane.api.allocators import AllocationError, ServiceAllocators
from control_plane.api.defaults import apply_defaults
from control_plane.api.errors import ApiError, Cause
from control_plane.api.meta import decode_continue, encode_continue, generate_name, meta, new_uid, rfc3339
from control_plane.api.namespace_cache import NamespaceCache
from control_plane.api.patch import apply_patch
from control_plane.api.strategies import Strategy, strategy_for
from control_plane.api.validation import validate, validate_status_update
from control_plane.api.watch_cache import EventCache
from control_plane.storage.interface import (
    CompactedError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    RevisionConflictError,
    Store,
)
from skiff.api.resources import REGISTRY, ResourceType
from skiff.api.selectors import FieldSelector, LabelSelector, object_fields

log = logging.getLogger(__name__)

NAMESPACES = REGISTRY.require("", "v1", "namespaces")
SERVICES = REGISTRY.require("", "v1", "services")
PATCH_RETRIES = 5


ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"


def propagation_finalizers(rt: ResourceType, md: dict[str, Any], policy: str | None) -> list[str] | None:
    """Kubernetes' deletionFinalizersForGarbageCollection: the finalizers a DELETE with
    propagationPolicy ``policy`` leaves on the object (``orphan`` for Orphan,
    ``foregroundDeletion`` for Foreground, neither for Background; without a policy the
    object's own finalizer wins, else the type's default: Orphan for batch/v1 Jobs,
    Background for the rest), or None when they stay as they are. A graceful deletion
    under way keeps its finalizers, as rest.BeforeDelete refuses to change them."""
    if md.get("deletionTimestamp") and (md.get("deletionGracePeriodSeconds") or 0) > 0:
        return None
    current = [f for f in md.get("finalizers") or [] if isinstance(f, str)]
    if policy is None:
        if ORPHAN_FINALIZER in current or FOREGROUND_FINALIZER in current:
            return None
        policy = "Orphan" if (rt.group, rt.kind) == ("batch", "Job") else "Background"
    wanted = [f for f in current if f not in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)]
    if policy == "Orphan":
        wanted.append(ORPHAN_FINALIZER)
    elif policy == "Foreground":
        wanted.append(FOREGROUND_FINALIZER)
    return None if set(wanted) == set(current) else wanted


@dataclass
class ListOptions:
    label_selector: LabelSelector | None = None
    field_selector: FieldSelector | None = None
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


@dataclass
class WriteOptions:
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    precondition_uid: str | None = None
    precondition_resource_version: str | None = None
    dry_run: bool = False


def decode(kv: KeyValue) -> dict[str, Any]:
    obj: dict[str, Any] = json_codec.loads(kv.value, json_nesting=False)  # stored: json read it before
    obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
    return obj


def encode(obj: dict[str, Any]) -> bytes:
    stored = dict(obj)
    stored["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return json_codec.dumps(stored)


def matches(rt: ResourceType, obj: dict[str, Any], opts: ListOptions) -> bool:
    if opts.label_selector is not None and not opts.label_selector.matches(obj["metadata"].get("labels") or {}):
        return False
    if opts.field_selector is not None and not opts.field_selector.matches(object_fields(rt.kind, obj)):
        return False
    return True


def raise_invalid(rt: ResourceType, obj: dict[str, Any], causes: list[Cause]) -> None:
    if causes:
        name = obj["metadata"].get("name") or obj["metadata"].get("generateName") or ""
        raise errors.invalid(rt.kind, name, causes, rt.group)


def _parse_rv(value: str | None, what: str = "resourceVersion") -> int:
    if not value:
        return 0
    try:
        rv = int(value)
    except ValueError:
        raise errors.bad_request(f"invalid {what}: {value!r}") from None
    if rv < 0:
        raise errors.bad_request(f"invalid {what}: {value!r}")
    return rv


class Objects:
    def __init__(self, store: Store, allocators: ServiceAllocators, clock: Callable[[], float] = time.time,
                 toleration_seconds: tuple[int, int] = (DEFAULT_TOLERATION_SECONDS, DEFAULT_TOLERATION_SECONDS)):
        self.store = store
        self.toleration_seconds = toleration_seconds  # (not-ready, unreachable) for DefaultTolerationSeconds
        self.allocators = allocators
        self.clock = clock
        self._strategies: dict[str, Strategy] = {}
        self.namespaces: NamespaceCache | None = None  # set once the server has started it
        self.event_cache = EventCache()  # shared by the watches

    def strategy(self, rt: ResourceType) -> Strategy:
        key = rt.resource_prefix
        if key not in self._strategies:
            self._strategies[key] = strategy_for(rt)
        return self._strategies[key]

    # ---- reads -------------------------------------------------------------

    async def get_kv(self, rt: ResourceType, namespace: str | None, name: str) -> KeyValue:
        kv = await self.store.get(rt.storage_key(namespace, name))
        if kv is None:
            raise errors.not_found(rt.plural, name, rt.group)
        return kv

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        return decode(await self.get_kv(rt, namespace, name))

    async def list(self, rt: ResourceType, namespace: str | None, opts: ListOptions) -> dict[str, Any]:
        revision = 0
        start_key = ""
        prefix = rt.list_prefix(namespace)
        if opts.continue_token:
            decoded = decode_continue(opts.continue_token)
            if decoded is None:
                raise errors.bad_request("continue key is not valid: illegal base64 data or JSON")
            revision, start_key = decoded
            if not start_key.startswith(prefix):
                raise errors.bad_request("continue key is not valid: key is outside the requested prefix")
        elif opts.resource_version and opts.resource_version_match == "Exact":
            revision = _parse_rv(opts.resource_version)
        elif opts.resource_version:
            _parse_rv(opts.resource_version)  # NotOlderThan / unset: the newest state satisfies it
        items: list[dict[str, Any]] = []
        more = False
        next_key = ""
        try:
            while True:
                want = opts.limit - len(items) if opts.limit else 0
                batch = await self.store.list(prefix, revision=revision, start_key=start_key,
                                              limit=want + 1 if want else 0)
                revision = batch.revision
                kvs = batch.items
                if want and len(kvs) > want:
                    next_key = kvs[want].key
                    kvs = kvs[:want]
                    more = True
                else:
                    more = False
                for kv in kvs:
                    obj = decode(kv)
                    if matches(rt, obj, opts):
                        items.append(obj)
                if not more or not opts.limit or len(items) >= opts.limit:
                    break
                start_key = next_key  # filtered out too many: read on to fill the page
        except CompactedError:
            if opts.continue_token:
                raise errors.gone("The provided continue parameter is too old to display a consistent list "
                                  "result. You can start a new list without the continue parameter.") from None
            raise errors.gone(f"too old resource version: {opts.resource_version} ({revision})") from None
        except FutureRevisionError as e:
            raise errors.ApiError(504, "Timeout", f"Too large resource version: {e.requested}, "
                                  f"current resource version: {e.current}") from None
        list_meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if more:
            list_meta["continue"] = encode_continue(revision, next_key)
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": list_meta, "items": items}

    # ---- create ------------------------------------------------------------

    async def create(self, rt: ResourceType, namespace: str | None, obj: dict[str, Any],
                     opts: WriteOptions) -> dict[str, Any]:
        md = meta(obj)
        self._check_namespace_field(rt, namespace, md)
        if rt.namespaced:
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "selfLink", "generation", "managedFields"):
            md.pop(key, None)
        generated = not md.get("name") and isinstance(md.get("generateName"), str) and md["generateName"]
        if generated:
            md["name"] = generate_name(md["generateName"])
        md["uid"] = new_uid()
        md["creationTimestamp"] = rfc3339(self.clock())
        apply_defaults(rt, obj)
        if rt.kind == "Pod" and rt.group == "":
            default_tolerations(obj, *self.toleration_seconds)
        strategy = self.strategy(rt)
        strategy.prepare_for_create(obj)
        self._validate(rt, obj, None)
        if rt.namespaced:
            await self._check_namespace_open(namespace or "")
        allocated = await self._allocate(rt, obj, None)
        if opts.dry_run:
            await self._release(allocated)
            obj["metadata"]["resourceVersion"] = ""
            return obj
        try:
            for attempt in range(3 if generated else 1):
                try:
                    revision = await self.store.create(rt.storage_key(namespace, md["name"]), encode(obj))
                    break
                except KeyExistsError:
                    if not generated or attempt == 2:
                        raise errors.already_exists(rt.plural, md["name"], rt.group) from None
                    md["name"] = generate_name(md["generateName"])
        except Exception:  # not on cancellation: the write may have committed, and a leak beats a double grant
            await self._release(allocated)
            raise
        md["resourceVersion"] = str(revision)
        return obj

    def _check_namespace_field(self, rt: ResourceType, namespace: str | None, md: dict[str, Any]) -> None:
        body_ns = md.get("namespace")
        if rt.namespaced and body_ns and body_ns != namespace:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent "
                                     "on the request")

    async def _check_namespace_open(self, namespace: str) -> None:
        if self.namespaces is not None and self.namespaces.is_active(namespace):
            return
        kv = await self.store.get(NAMESPACES.storage_key(None, namespace))
        if kv is None:
            raise errors.not_found("namespaces", namespace)
        ns = json.loads(kv.value)
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.ApiError(
                403, "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
                {"name": namespace, "kind": "namespaces",
                 "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                             "message": f"namespace {namespace} is being terminated"}]})

    def _validate(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        raise_invalid(rt, obj, validate(rt, obj, old))


    # ---- update ------------------------------------------------------------

    async def update(self, rt: ResourceType, namespace: str | None, name: str, obj: dict[str, Any],
                     opts: WriteOptions, subresource: str | None = None) -> dict[str, Any]:
        md = meta(obj)
        if md.get("name") != name:
            raise errors.bad_request(f"the name of the object ({md.get('name') or ''}) does not match the name on "
                                     f"the URL ({name})")
        self._check_namespace_field(rt, namespace, md)
        kv = await self.get_kv(rt, namespace, name)
        old = decode(kv)
        expected = _parse_rv(md.get("resourceVersion"))
        if expected and expected != kv.mod_revision:
            raise errors.conflict(rt.plural, name, "the object has been modified; please apply your changes "
                                  "to the latest version and try again", rt.group)
        return await self._write_update(rt, namespace, name, obj, old, kv.mod_revision, opts, subresource)

    async def _write_update(self, rt: ResourceType, namespace: str | None, name: str, obj: dict[str, Any],
                            old: dict[str, Any], revision: int, opts: WriteOptions,
                            subresource: str | None) -> dict[str, Any]:
        strategy = self.strategy(rt)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if subresource == "status":
            obj = strategy.prepare_for_status_update(obj, old)
        md = meta(obj)
        old_md = old["metadata"]
        if md.get("uid") and md["uid"] != old_md["uid"]:
            raise errors.conflict(rt.plural, name, f"Precondition failed: UID in precondition: {md['uid']}, "
                                  f"UID in object meta: {old_md['uid']}", rt.group)
        md["name"] = name
        if rt.namespaced:
            md["namespace"] = namespace
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            if key in old_md:
                md[key] = old_md[key]
            else:
                md.pop(key, None)
        md.pop("selfLink", None)
        md.pop("managedFields", None)
        if subresource != "status":
            apply_defaults(rt, obj, old)
            strategy.prepare_for_update(obj, old)
            self._validate(rt, obj, old)
        else:
            raise_invalid(rt, obj, validate_status_update(rt, obj, old))
        md["resourceVersion"] = old_md["resourceVersion"]
        if obj == old:
            return old  # a no-op write is not a new revision
        if md.get("deletionTimestamp") and strategy.removable(obj):
            if opts.dry_run:
                return obj
            return await self._remove(rt, namespace, name, revision, obj)
        allocated = await self._allocate(rt, obj, old)
        if opts.dry_run:
            await self._release(allocated)
            return obj
        try:
            try:
                new_revision = await self.store.update(rt.storage_key(namespace, name), encode(obj), revision)
            except RevisionConflictError:
                raise errors.conflict(rt.plural, name, "the object has been modified; please apply your changes "
                                      "to the latest version and try again", rt.group) from None
            except KeyNotFoundError:
                raise errors.not_found(rt.plural, name, rt.group) from None
        except Exception:  # not on cancellation: the write may have committed, and a leak beats a double grant
            await self._release(allocated)
            raise
        await self._release(self._allocations(rt, old) - self._allocations(rt, obj))
        md["resourceVersion"] = str(new_revision)
        return obj

    # ---- patch -------------------------------------------------------------

    async def patch(self, rt: ResourceType, namespace: str | None, name: str, content_type: str, body: bytes,
                    opts: WriteOptions, subresource: str | None = None,
                    decode_body: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
        for attempt in range(PATCH_RETRIES):
            try:
                kv = await self.get_kv(rt, namespace, name)
            except ApiError as e:
                if e.code == 404 and content_type.startswith("application/apply-patch"):
                    obj = apply_patch(content_type, {}, body, rt.kind)
                    if decode_body:
                        obj = decode_body(obj)
                    meta(obj).setdefault("name", name)
                    return await self.create(rt, namespace, obj, opts)
                raise
            old = decode(kv)
            patched = apply_patch(content_type, copy.deepcopy(old), body, rt.kind)
            if not isinstance(patched, dict):
                raise errors.bad_request("the patch did not produce an object")
            if decode_body:
                patched = decode_body(patched)
            md = meta(patched)
            expected = _parse_rv(md.get("resourceVersion"))
            pinned = expected != kv.mod_revision  # the patch itself asks for a resourceVersion
            if pinned and expected:
                raise errors.conflict(rt.plural, name, "the object has been modified; please apply your "
                                      "changes to the latest version and try again", rt.group)
            md["resourceVersion"] = old["metadata"]["resourceVersion"]
            try:
                return await self._write_update(rt, namespace, name, patched, old, kv.mod_revision, opts,
                                                subresource)
            except ApiError as e:
                if e.reason != "Conflict" or attempt == PATCH_RETRIES - 1:
                    raise
                log.debug("patch of %s %s/%s raced a write; retrying (attempt %d/%d)", rt.kind, namespace, name,
                          attempt + 2, PATCH_RETRIES)
        raise AssertionError("unreachable")

    # ---- binding -----------------------------------------------------------

    async def bind(self, rt: ResourceType, namespace: str | None, name: str, node: str,
                   opts: WriteOptions) -> dict[str, Any]:
        """pods/binding: set spec.nodeName once, with PodScheduled=True."""
        for _ in range(PATCH_RETRIES):
            kv = await self.get_kv(rt, namespace, name)
            pod = decode(kv)
            spec = pod.setdefault("spec", {})
            if spec.get("nodeName"):
                raise errors.conflict(rt.plural, name, f'pod {name} is already assigned to node "{spec["nodeName"]}"')
            if pod["metadata"].get("deletionTimestamp"):
                raise errors.conflict(rt.plural, name, "pod is being deleted, cannot be assigned to a host")
            spec["nodeName"] = node
            status = pod.setdefault("status", {})
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                               "lastTransitionTime": rfc3339(self.clock())})
            status["conditions"] = conditions
            if opts.dry_run:
                return pod
            try:
                revision = await self.store.update(kv.key, encode(pod), kv.mod_revision)
            except RevisionConflictError:
                continue  # raced another write: look again
            pod["metadata"]["resourceVersion"] = str(revision)
            return pod
        raise errors.conflict(rt.plural, name, "the pod kept changing while being bound", rt.group)

    # ---- delete ------------------------------------------------------------

    async def delete(self, rt: ResourceType, namespace: str | None, name: str,
                     opts: DeleteOptions) -> tuple[dict[str, Any], bool]:
        """Returns (object, gone): ``gone`` is False when the object lingers with a
        deletionTimestamp (graceful deletion or finalizers)."""
        for _ in range(PATCH_RETRIES):
            kv = await self.get_kv(rt, namespace, name)
            obj = decode(kv)
            md = obj["metadata"]
            if opts.precondition_uid and opts.precondition_uid != md["uid"]:
                raise errors.conflict(rt.plural, name, f"Precondition failed: UID in precondition: "
                                      f"{opts.precondition_uid}, UID in object meta: {md['uid']}", rt.group)
            if opts.precondition_resource_version and opts.precondition_resource_version != md["resourceVersion"]:
                raise errors.conflict(rt.plural, name, "Precondition failed: ResourceVersion in precondition: "
                                      f"{opts.precondition_resource_version}, ResourceVersion in object meta: "
                                      f"{md['resourceVersion']}", rt.group)
            try:
                return await self._delete_once(rt, namespace, name, kv, obj, opts)
            except RevisionConflictError:
                continue  # raced another write: look again
        raise errors.conflict(rt.plural, name, "the object kept changing while being deleted", rt.group)

    async def _delete_once(self, rt: ResourceType, namespace: str | None, name: str, kv: KeyValue,
                           obj: dict[str, Any], opts: DeleteOptions) -> tuple[dict[str, Any], bool]:
        md = obj["metadata"]
        strategy = self.strategy(rt)
        gc_finalizers = propagation_finalizers(rt, md, opts.propagation_policy)
        if gc_finalizers is not None:
            if gc_finalizers:
                md["finalizers"] = gc_finalizers
            else:
                md.pop("finalizers", None)
        grace = strategy.graceful_delete_seconds(obj, opts.grace_period_seconds)
        lingers = grace is not None or bool(md.get("finalizers")) or rt.kind == "Namespace"
        if not lingers:
            if opts.dry_run:
                return obj, True
            return await self._remove(rt, namespace, name, kv.mod_revision, obj), True
        now = self.clock()
        changed = gc_finalizers is not None
        if not md.get("deletionTimestamp"):
            md["deletionTimestamp"] = rfc3339(now + (grace or 0))
            md["deletionGracePeriodSeconds"] = grace or 0
            changed = True
        elif grace is not None and grace < md.get("deletionGracePeriodSeconds", grace + 1):
            md["deletionTimestamp"] = rfc3339(now + grace)  # a shorter grace period wins
            md["deletionGracePeriodSeconds"] = grace
            changed = True
        if rt.kind == "Namespace" and (obj.get("status") or {}).get("phase") != "Terminating":
            obj.setdefault("status", {})["phase"] = "Terminating"
            changed = True
        if rt.kind == "Namespace" and strategy.removable(obj):
            if opts.dry_run:
                return obj, True
            return await self._remove(rt, namespace, name, kv.mod_revision, obj), True
        if changed and not opts.dry_run:
            revision = await self.store.update(kv.key, encode(obj), kv.mod_revision)
            md["resourceVersion"] = str(revision)
        return obj, False

    async def _remove(self, rt: ResourceType, namespace: str | None, name: str, revision: int,
                      obj: dict[str, Any]) -> dict[str, Any]:
        try:
            new_revision, _ = await self.store.delete(rt.storage_key(namespace, name), revision)
        except KeyNotFoundError:
            raise errors.not_found(rt.plural, name, rt.group) from None
        await self._release(self._allocations(rt, obj))
        obj["metadata"]["resourceVersion"] = str(new_revision)
        return obj

    # ---- service allocations ----------------------------------------------

    @staticmethod
    def _allocations(rt: ResourceType, obj: dict[str, Any] | None) -> set[tuple[str, Any]]:
        if rt is not SERVICES or not obj:
            return set()
        spec = obj.get("spec") or {}
        out: set[tuple[str, Any]] = set()
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            if ip and ip != "None":
                out.add(("ip", ip))
        for port in spec.get("ports") or []:
            if isinstance(port, dict) and port.get("nodePort"):
                out.add(("port", port["nodePort"]))
        return out

    async def _allocate(self, rt: ResourceType, obj: dict[str, Any],
                        old: dict[str, Any] | None) -> set[tuple[str, Any]]:
        """Give a Service its ClusterIP and NodePorts; returns what was newly taken."""
        if rt is not SERVICES:
            return set()
        spec = obj.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        held = self._allocations(rt, old)
        taken: set[tuple[str, Any]] = set()
        try:
            svc_type = spec.get("type", "ClusterIP")
            if svc_type == "ExternalName":
                pass
            elif old_spec.get("clusterIP") and not spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
                spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])
            elif spec.get("clusterIP") != "None":
                want = spec.get("clusterIP") or None
                if ("ip", want) not in held:
                    ip = await self._allocate_one("ip", want, "spec.clusterIPs", obj, rt)
                    taken.add(("ip", ip))
                    spec["clusterIP"] = ip
                    spec["clusterIPs"] = [ip]
            elif spec.get("clusterIP") == "None":
                spec["clusterIPs"] = ["None"]
            needs_node_ports = svc_type in ("NodePort", "LoadBalancer")
            old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                         for p in old_spec.get("ports") or [] if isinstance(p, dict)}
            for i, port in enumerate(spec.get("ports") or []):
                if not isinstance(port, dict):
                    continue
                if not needs_node_ports:
                    port.pop("nodePort", None)
                    continue
                want_port = port.get("nodePort") or old_ports.get((port.get("port"), port.get("protocol", "TCP")))
                if want_port and ("port", want_port) in held | taken:
                    port["nodePort"] = want_port
                    continue
                got = await self._allocate_one("port", want_port, f"spec.ports[{i}].nodePort", obj, rt)
                taken.add(("port", got))
                port["nodePort"] = got
        except Exception:
            await self._release(taken)
            raise
        return taken

    async def _allocate_one(self, what: str, want: Any, field_path: str, obj: dict[str, Any],
                            rt: ResourceType) -> Any:
        try:
            if what == "ip":
                return await self.allocators.allocate_ip(want)
            return await self.allocators.allocate_node_port(want if isinstance(want, int) else None)
        except AllocationError as e:
            value = f'[]string{{"{want}"}}' if what == "ip" else str(want)
            raise errors.invalid(rt.kind, obj["metadata"].get("name", ""),
                                 [Cause(field_path, "FieldValueInvalid", f"Invalid value: {value}: {e}")]) from None

    async def _release(self, allocations: set[tuple[str, Any]]) -> None:
        for what, value in allocations:
            try:
                if what == "ip":
                    await self.allocators.release_ip(value)
                else:
                    await self.allocators.release_node_port(value)
            except asyncio.CancelledError:
                raise
            except Exception:  # a leaked allocation is repairable; the write already succeeded or failed
                log.exception("releasing %s %s failed; it stays allocated", what, value)
