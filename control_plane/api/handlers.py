"""HTTP handlers for resource paths: /api/v1/... and /apis/<group>/<version>/...

A request is resolved to a ``Target`` (type, namespace, name, subresource), its query
turned into option objects, the verb dispatched to ``Objects``, and the result
rendered as JSON, a Table, or a watch stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from control_plane.api import bodies, errors, json_codec, tables
from control_plane.api.objects import DeleteOptions, ListOptions, Objects, WriteOptions
from control_plane.api.patch import apply_patch
from control_plane.api.watch import WatchOptions, WatchStream
from skiff.api.resources import REGISTRY, Registry, ResourceType
from skiff.api.selectors import (
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
    validate_field_selector,
)

log = logging.getLogger(__name__)

OBJECTS: web.AppKey[Objects] = web.AppKey("objects", Objects)
SCALE_UPDATE_ATTEMPTS = 5  # an unconditional scale racing other writers (status updates) reads again


@dataclass(frozen=True)
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    sub: str | None


def resolve(registry: Registry, group: str, version: str, segments: list[str]) -> Target:
    """Map the path segments after the group/version onto a resource."""
    not_found = errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    namespace = None
    if len(segments) >= 3 and segments[0] == "namespaces":
        rt = registry.by_plural(group, version, segments[2])
        if rt is not None and rt.namespaced:
            namespace = segments[1]
            segments = segments[2:]
    if not segments or len(segments) > 3 or any(not s for s in segments):
        raise not_found
    rt = registry.by_plural(group, version, segments[0])
    if rt is None:
        raise not_found
    name = segments[1] if len(segments) > 1 else None
    sub = segments[2] if len(segments) > 2 else None
    if sub is not None and sub not in rt.subresources:
        raise not_found
    if rt.namespaced and name is not None and namespace is None:
        raise not_found  # namespaced objects are addressed under /namespaces/<ns>/
    return Target(rt, namespace, name, sub)


# ---- query parsing ------------------------------------------------------------


def _bool(q: Any, key: str) -> bool | None:
    value = q.get(key)
    if value is None:
        return None
    if value in ("true", "1", "True"):
        return True
    if value in ("false", "0", "False", ""):
        return False
    raise errors.bad_request(f"invalid value for {key}: {value!r} (must be true or false)")


def _int(q: Any, key: str, minimum: int = 0) -> int | None:
    value = q.get(key)
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except ValueError:
        raise errors.bad_request(f"invalid value for {key}: {value!r} (must be an integer)") from None
    if n < minimum:
        raise errors.bad_request(f"invalid value for {key}: {value!r} (must be >= {minimum})")
    return n


def list_options(rt: ResourceType, q: Any) -> ListOptions:
    opts = ListOptions()
    try:
        if q.get("labelSelector"):
            opts.label_selector = parse_label_selector(q["labelSelector"])
        if q.get("fieldSelector"):
            opts.field_selector = validate_field_selector(rt.kind, parse_field_selector(q["fieldSelector"]))
    except SelectorError as e:
        raise errors.bad_request(str(e)) from None
    opts.limit = _int(q, "limit") or 0
    opts.continue_token = q.get("continue", "")
    opts.resource_version = q.get("resourceVersion", "")
    opts.resource_version_match = q.get("resourceVersionMatch", "")
    if opts.resource_version_match not in ("", "NotOlderThan", "Exact"):
        raise errors.bad_request(f"invalid resourceVersionMatch: {opts.resource_version_match!r}")
    if opts.resource_version_match and not opts.resource_version and not q.get("watch"):
        raise errors.invalid("ListOptions", "", [errors.Cause(
            "resourceVersionMatch", "FieldValueForbidden",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided")])
    if opts.continue_token and opts.resource_version not in ("", "0"):
        raise errors.invalid("ListOptions", "", [errors.Cause(
            "resourceVersion", "FieldValueForbidden",
            "Forbidden: specifying resource version is not allowed when using continue")])
    return opts


def write_options(q: Any) -> WriteOptions:
    dry_run = q.getall("dryRun", [])
    for value in dry_run:
        if value != "All":
            raise errors.bad_request(f'invalid dry run value: "{value}"; supported values: "All"')
    return WriteOptions(dry_run=bool(dry_run))


def field_validation(q: Any) -> str:
    value = q.get("fieldValidation", "Warn") or "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise errors.bad_request(f'fieldValidation must be one of "Ignore", "Warn", "Strict"; got "{value}"')
    return value


def delete_options(q: Any, body: Any) -> DeleteOptions:
    opts = DeleteOptions()
    if body is not None:
        if not isinstance(body, dict):
            raise errors.bad_request("DeleteOptions must be a JSON object")
        grace = body.get("gracePeriodSeconds")
        if grace is not None:
            if not isinstance(grace, int) or isinstance(grace, bool):
                raise errors.bad_request("DeleteOptions.gracePeriodSeconds must be an integer")
            opts.grace_period_seconds = max(grace, 0)
        opts.propagation_policy = body.get("propagationPolicy")
        orphan = body.get("orphanDependents")  # deprecated; the policy wins when both are given
        if opts.propagation_policy is None and isinstance(orphan, bool):
            opts.propagation_policy = "Orphan" if orphan else "Background"
        pre = body.get("preconditions") or {}
        if isinstance(pre, dict):
            opts.precondition_uid = pre.get("uid")
            opts.precondition_resource_version = pre.get("resourceVersion")
        if body.get("dryRun"):
            opts.dry_run = body.get("dryRun") == ["All"]
    grace_q = q.get("gracePeriodSeconds")
    if grace_q not in (None, ""):
        try:
            opts.grace_period_seconds = max(int(grace_q), 0)
        except ValueError:
            raise errors.bad_request(f"invalid gracePeriodSeconds: {grace_q!r}") from None
    opts.propagation_policy = q.get("propagationPolicy", opts.propagation_policy)
    if opts.propagation_policy is None and q.get("orphanDependents") in ("true", "false"):
        opts.propagation_policy = "Orphan" if q["orphanDependents"] == "true" else "Background"
    if opts.propagation_policy not in (None, "Orphan", "Background", "Foreground"):
        raise errors.bad_request(f"invalid propagationPolicy: {opts.propagation_policy!r}; supported values: "
                                 '"Orphan", "Background", "Foreground"')
    if q.getall("dryRun", []):
        opts.dry_run = write_options(q).dry_run
    return opts


# ---- rendering ----------------------------------------------------------------


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first and "g=meta.k8s.io" in first


def wants_partial_metadata(request: web.Request) -> bool:
    first = request.headers.get("Accept", "").split(",")[0]
    return "as=PartialObjectMetadata" in first and "g=meta.k8s.io" in first


def partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def watch_line(etype: str, encoded_object: bytes) -> bytes:
    """One watch event on the wire: ``{"type":...,"object":...}`` and a newline."""
    return b'{"type":"' + etype.encode() + b'","object":' + encoded_object + b'}\n'


def warning_header(text: str) -> str:
    """RFC 7234 warning with the text quoted; user-chosen field names may hold any
    character, and a header may not carry control or non-ASCII characters."""
    escaped = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else
                      ("\\" + c if c in '"\\' else f"\\u{ord(c):04x}") for c in text[:512])
    return f'299 - "{escaped}"'


def respond(obj: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    resp = web.Response(body=json_codec.dumps(obj), status=status, content_type="application/json", charset="utf-8")
    for w in warnings or []:
        resp.headers.add("Warning", warning_header(w))
    return resp


def include_object(request: web.Request) -> str:
    value = request.query.get("includeObject", "Metadata") or "Metadata"
    if value not in tables.INCLUDE_OBJECT_VALUES:
        raise errors.bad_request(f"includeObject must be one of {', '.join(tables.INCLUDE_OBJECT_VALUES)}; "
                                 f"got {value!r:.60}")
    return value


def render_list(request: web.Request, rt: ResourceType, listed: dict[str, Any]) -> dict[str, Any]:
    if wants_table(request):
        return tables.to_table(rt, listed["items"], list_metadata=listed["metadata"],
                               include_object=include_object(request))
    if wants_partial_metadata(request):
        return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": listed["metadata"], "items": [partial(o) for o in listed["items"]]}
    return listed


def render_object(request: web.Request, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    if wants_table(request):
        return tables.to_table(rt, [obj], list_metadata={"resourceVersion": obj["metadata"]["resourceVersion"]},
                               include_object=include_object(request))
    if wants_partial_metadata(request):
        return partial(obj)
    return obj


# ---- the handler -----------------------------------------------------------------


class ResourceHandler:
    def __init__(self, objects: Objects, registry: Registry = REGISTRY):
        self.objects = objects
        self.registry = registry

    async def core(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, "", request.match_info["version"], request.match_info["tail"])

    async def grouped(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, request.match_info["group"], request.match_info["version"],
                                    request.match_info["tail"])

    async def _dispatch(self, request: web.Request, group: str, version: str, tail: str) -> web.StreamResponse:
        target = resolve(self.registry, group, version, tail.strip("/").split("/"))
        method = request.method
        rt, ns, name, sub = target.rt, target.namespace, target.name, target.sub
        if sub in ("log", "exec"):
            return await self._node_proxy(request, target)
        if sub == "scale":
            return await self._scale(request, target)
        if sub in ("binding", "eviction"):
            if method != "POST":
                raise errors.method_not_allowed(f"{method} is not supported on {rt.plural}/{sub}")
            return await (self._binding(request, target) if sub == "binding" else self._eviction(request, target))
        if name is None:
            if method == "GET":
                if _bool(request.query, "watch"):
                    return await self._watch(request, rt, ns)
                return respond(render_list(request, rt, await self.objects.list(rt, ns, list_options(
                    rt, request.query))))
            if method == "POST":
                return await self._create(request, rt, ns)
            if method == "DELETE" and "deletecollection" in rt.verbs:
                return await self._delete_collection(request, rt, ns)
            raise errors.method_not_allowed(f"{method} is not supported on a collection of {rt.plural}")
        if method == "GET":
            if _bool(request.query, "watch"):
                raise errors.bad_request("watch a single object with a list and fieldSelector=metadata.name=...")
            return respond(render_object(request, rt, await self.objects.get(rt, ns, name)))
        if method == "PUT":
            return await self._update(request, rt, ns, name, sub)
        if method == "PATCH":
            return await self._patch(request, rt, ns, name, sub)
        if method == "DELETE" and sub is None:
            return await self._delete(request, rt, ns, name)
        raise errors.method_not_allowed(f"{method} is not supported on {rt.plural}{'/' + sub if sub else ''}")

    async def _body(self, request: web.Request, rt: ResourceType, opts: WriteOptions) -> dict[str, Any]:
        raw = await bodies.read_raw(request)
        obj = bodies.check_kind(rt, bodies.parse_document(raw, bodies.media_type(request)))
        return bodies.decode_object(rt, obj, field_validation(request.query), opts.warnings)

    async def _create(self, request: web.Request, rt: ResourceType, ns: str | None) -> web.Response:
        opts = write_options(request.query)
        obj = await self._body(request, rt, opts)
        created = await self.objects.create(rt, ns, obj, opts)
        return respond(render_object(request, rt, created), 201, opts.warnings)

    async def _update(self, request: web.Request, rt: ResourceType, ns: str | None, name: str,
                      sub: str | None) -> web.Response:
        if sub not in (None, "status", "finalize"):
            raise errors.method_not_allowed(f"PUT is not supported on {rt.plural}/{sub}")
        opts = write_options(request.query)
        obj = await self._body(request, rt, opts)
        updated = await self.objects.update(rt, ns, name, obj, opts, "status" if sub == "status" else None)
        return respond(render_object(request, rt, updated), 200, opts.warnings)

    async def _patch(self, request: web.Request, rt: ResourceType, ns: str | None, name: str,
                     sub: str | None) -> web.Response:
        if sub not in (None, "status"):
            raise errors.method_not_allowed(f"PATCH is not supported on {rt.plural}/{sub}")
        content_type = bodies.media_type(request)
        if content_type not in bodies.PATCH_TYPES:
            raise errors.unsupported_media_type(content_type)
        opts = write_options(request.query)
        raw = await bodies.read_raw(request)
        validation = field_validation(request.query)

        escaped = b"\\u" in raw or b"\\U" in raw  # may hold lone surrogates, which cannot be stored

        def decode_patched(obj: dict[str, Any]) -> dict[str, Any]:
            if escaped:
                obj = bodies.scrub_surrogates(obj)
            return bodies.decode_object(rt, bodies.check_kind(rt, obj), validation, opts.warnings)

        patched = await self.objects.patch(rt, ns, name, content_type, raw, opts, sub, decode_patched)
        return respond(render_object(request, rt, patched), 200, opts.warnings)

    async def _delete(self, request: web.Request, rt: ResourceType, ns: str | None, name: str) -> web.Response:
        raw = await bodies.read_raw(request)
        body = bodies.parse_document(raw, "application/json") if raw.strip() else None
        obj, _ = await self.objects.delete(rt, ns, name, delete_options(request.query, body))
        return respond(obj)  # 200 whether gone now or lingering, as Kubernetes answers

    async def _delete_collection(self, request: web.Request, rt: ResourceType, ns: str | None) -> web.Response:
        raw = await bodies.read_raw(request)
        body = bodies.parse_document(raw, "application/json") if raw.strip() else None
        dopts = delete_options(request.query, body)
        listed = await self.objects.list(rt, ns, list_options(rt, request.query))
        items = []
        for obj in listed["items"]:
            md = obj["metadata"]
            try:
                deleted, _ = await self.objects.delete(rt, md.get("namespace"), md["name"], dopts)
                items.append(deleted)
            except errors.ApiError as e:
                if e.code != 404:
                    raise
        return respond({"kind": rt.list_kind, "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(self.objects.store.current_revision)}, "items": items})

    async def _watch(self, request: web.Request, rt: ResourceType, ns: str | None) -> web.StreamResponse:
        q = request.query
        timeout = _int(q, "timeoutSeconds")
        opts = WatchOptions(list_options=list_options(rt, q), allow_bookmarks=bool(_bool(q, "allowWatchBookmarks")),
                            send_initial_events=_bool(q, "sendInitialEvents"),
                            timeout_seconds=float(timeout) if timeout else 1800.0)
        stream = WatchStream(self.objects, rt, ns, opts)
        stream.validate()
        as_table = wants_table(request)
        include = include_object(request)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        first_row = True
        try:
            async for batch in stream.batches():
                lines: list[bytes] = []
                for etype, obj, encoded in batch:
                    if as_table and etype not in ("ERROR", "BOOKMARK"):
                        table = tables.to_table(rt, [obj], list_metadata={
                            "resourceVersion": obj["metadata"].get("resourceVersion", "")}, include_object=include)
                        if not first_row:
                            table["columnDefinitions"] = []
                        first_row = False
                        obj, encoded = table, None
                    lines.append(watch_line(etype, encoded if encoded is not None else json_codec.dumps(obj)))
                await resp.write(b"".join(lines))
        except errors.ApiError as e:
            await resp.write(watch_line("ERROR", json_codec.dumps(e.to_status())))
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
        return resp

    # ---- subresources -------------------------------------------------------

    async def _node_proxy(self, request: web.Request, target: Target) -> web.StreamResponse:
        from control_plane.api import node_proxy

        pod = await self.objects.get(target.rt, target.namespace, target.name or "")
        if target.sub == "log":
            return await node_proxy.proxy_log(request, self.objects, pod)
        return await node_proxy.proxy_exec(request, self.objects, pod)

    async def _binding(self, request: web.Request, target: Target) -> web.Response:
        opts = write_options(request.query)
        raw = await bodies.read_raw(request)
        body = bodies.check_kind(target.rt, bodies.parse_document(raw, bodies.media_type(request)), "Binding", "v1")
        body = bodies.decode_object(target.rt, body, field_validation(request.query), opts.warnings, "V1Binding")
        node = (body.get("target") or {}).get("name")
        if not node:
            raise errors.invalid("Binding", target.name or "", [errors.Cause("target.name", "FieldValueRequired",
                                                                             "Required value")])
        await self.objects.bind(target.rt, target.namespace, target.name or "", node, opts)
        return respond({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
                       201)

    async def _eviction(self, request: web.Request, target: Target) -> web.Response:
        raw = await bodies.read_raw(request)
        body = bodies.parse_document(raw, bodies.media_type(request)) if raw.strip() else {}
        dopts = delete_options(request.query, (body or {}).get("deleteOptions") if isinstance(body, dict) else None)
        await self.objects.delete(target.rt, target.namespace, target.name or "", dopts)
        return respond({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
                       201)

    async def _scale(self, request: web.Request, target: Target) -> web.Response:
        rt, ns, name = target.rt, target.namespace, target.name or ""
        obj = await self.objects.get(rt, ns, name)
        if request.method == "GET":
            return respond(to_scale(obj))
        if request.method not in ("PUT", "PATCH"):
            raise errors.method_not_allowed(f"{request.method} is not supported on {rt.plural}/scale")
        opts = write_options(request.query)
        raw = await bodies.read_raw(request)
        scale = to_scale(obj)
        if request.method == "PUT":
            new_scale = bodies.parse_document(raw, bodies.media_type(request))
        else:
            new_scale = apply_patch(bodies.media_type(request), scale, raw, "Scale")
        if not isinstance(new_scale, dict):
            raise errors.bad_request("the body must be a Scale object")
        new_scale = bodies.decode_object(rt, new_scale, field_validation(request.query), opts.warnings, "V1Scale")
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid("Scale", name, [errors.Cause("spec.replicas", "FieldValueInvalid",
                                                              f"Invalid value: {replicas}: must be greater than or "
                                                              "equal to 0")], "autoscaling")
        rv = (new_scale.get("metadata") or {}).get("resourceVersion") or ""
        # A Scale without a resourceVersion applies to whatever is current (Kubernetes' unconditional
        # update): write against the version just read, never over a newer one (that would revert what
        # another writer changed meanwhile, its labels or annotations), and on a race read again and retry.
        for attempt in range(SCALE_UPDATE_ATTEMPTS):
            obj["spec"]["replicas"] = replicas
            obj["metadata"]["resourceVersion"] = rv or obj["metadata"].get("resourceVersion") or ""
            try:
                updated = await self.objects.update(rt, ns, name, obj, opts)
            except errors.ApiError as e:
                if rv or e.reason != "Conflict" or attempt == SCALE_UPDATE_ATTEMPTS - 1:
                    raise
                obj = await self.objects.get(rt, ns, name)
                continue
            return respond(to_scale(updated))
        raise AssertionError("unreachable")


def to_scale(obj: dict[str, Any]) -> dict[str, Any]:
    md = obj["metadata"]
    selector = ((obj.get("spec") or {}).get("selector") or {})
    try:
        sel = str(LabelSelector.from_dict(selector))
    except (SelectorError, AttributeError, TypeError, ValueError):
        sel = ""
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in md},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": sel}}
