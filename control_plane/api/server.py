"""The API server application: routes, middlewares, start-up and shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from control_plane.api import discovery, errors, openapi
from control_plane.api.allocators import ServiceAllocators
from control_plane.api.auth import TokenAuthenticator, UserInfo, is_anonymous_path
from control_plane.api.bootstrap import ensure_defaults
from control_plane.api.handlers import OBJECTS, ResourceHandler, respond
from control_plane.api.namespace_cache import NamespaceCache
from control_plane.api.objects import NAMESPACES, Objects
from control_plane.api.settings import ApiServerSettings
from control_plane.storage.interface import Store
from skiff.api.resources import REGISTRY

log = logging.getLogger(__name__)

VERSION_INFO = {
    "major": "1", "minor": "30", "gitVersion": "v1.30.0-skiff", "gitCommit": "skiff", "gitTreeState": "clean",
    "buildDate": "2026-11-23T00:00:00Z", "goVersion": "python", "compiler": "cpython", "platform": "linux/amd64",
}
USER: web.RequestKey[UserInfo] = web.RequestKey("user", UserInfo)
_PLURALS = frozenset(rt.plural for rt in REGISTRY.types)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    inflight: Gauge

    @classmethod
    def create(cls) -> Metrics:
        reg = CollectorRegistry()
        return cls(
            reg,
            Counter("apiserver_request_total", "Requests by verb, resource and HTTP code",
                    ["verb", "resource", "code"], registry=reg),
            Histogram("apiserver_request_duration_seconds", "Request latency by verb and resource",
                      ["verb", "resource"], registry=reg,
                      buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
            Gauge("apiserver_current_inflight_requests", "Requests being served", ["kind"], registry=reg),
        )


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
SETTINGS: web.AppKey[ApiServerSettings] = web.AppKey("settings", ApiServerSettings)


def _verb(request: web.Request) -> str:
    m = request.method
    if m == "GET":
        return "WATCH" if request.query.get("watch") in ("true", "1") else "GET"
    return m


def _long_running(request: web.Request, verb: str) -> bool:
    """Requests kube-apiserver exempts from in-flight limits: watches, followed logs,
    exec streams."""
    if verb == "WATCH":
        return True
    path = request.path
    return path.endswith("/exec") or (path.endswith("/log") and request.query.get("follow") in ("true", "1"))


def _resource(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    else:
        return ""
    if len(parts) >= 3 and parts[0] == "namespaces":
        parts = parts[2:]
    # Only known plurals become label values: user-chosen path parts must not grow the metric.
    return parts[0] if parts and parts[0] in _PLURALS else ""


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as a Kubernetes Status; an unexpected one is a 500 and a bug."""
    try:
        return await handler(request)
    except errors.ApiError as e:
        return respond(e.to_status(), e.code)
    except web.HTTPRequestEntityTooLarge:
        return respond(errors.too_large("Request entity too large: limit is 3145728").to_status(), 413)
    except web.HTTPException as e:
        if e.status == 404:
            err = errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        elif e.status == 405:
            err = errors.method_not_allowed(f"{request.method} is not supported on {request.path}")
        else:
            err = errors.ApiError(e.status, e.reason.replace(" ", ""), e.text or e.reason)
        return respond(err.to_status(), err.code)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        return respond(errors.internal("an internal error occurred; see the server log").to_status(), 500)


def auth_middleware(authn: TokenAuthenticator) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_anonymous_path(request.path):
            return await handler(request)
        user = authn.authenticate(request.headers.get("Authorization"))
        if user is None:
            raise errors.unauthorized()
        request[USER] = user
        return await handler(request)

    return middleware


def limits_middleware(settings: ApiServerSettings, metrics: Metrics) -> Any:
    """Max in-flight requests as kube-apiserver (--max-requests-inflight /
    --max-mutating-requests-inflight); long-running watches are exempt."""
    counts = {"readOnly": 0, "mutating": 0}
    caps = {"readOnly": settings.max_requests_inflight, "mutating": settings.max_mutating_requests_inflight}
    # Metric children by label values: ``labels()`` validates and locks on every call.
    counters: dict[tuple[str, str, str], Any] = {}
    latencies: dict[tuple[str, str], Any] = {}
    inflight = {kind: metrics.inflight.labels(kind) for kind in counts}

    def count(verb: str, resource: str, status: int) -> None:
        key = (verb, resource, str(status))
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = metrics.requests.labels(*key)
        counter.inc()

    def observe(verb: str, resource: str, seconds: float) -> None:
        key = (verb, resource)
        histogram = latencies.get(key)
        if histogram is None:
            histogram = latencies[key] = metrics.latency.labels(*key)
        histogram.observe(seconds)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        verb = _verb(request)
        resource = _resource(request.path)
        start = time.perf_counter()
        status = 500
        if _long_running(request, verb):
            try:
                response = await handler(request)
                status = response.status
                return response
            finally:
                count(verb, resource, status)
        kind = "readOnly" if request.method in ("GET", "HEAD", "OPTIONS") else "mutating"
        if counts[kind] >= caps[kind]:
            count(verb, resource, 429)
            resp = respond(errors.too_many_requests("Too many requests, please try again later.").to_status(), 429)
            resp.headers["Retry-After"] = "1"
            return resp
        counts[kind] += 1
        inflight[kind].inc()
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            counts[kind] -= 1
            inflight[kind].dec()
            count(verb, resource, status)
            observe(verb, resource, time.perf_counter() - start)

    return middleware


# ---- non-resource endpoints ------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    if request.query.get("verbose") is not None:
        return web.Response(text="[+]ping ok\n[+]etcd ok\nhealthz check passed\n")
    return web.Response(text="ok")


async def version(request: web.Request) -> web.Response:
    return respond(VERSION_INFO)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def api_root(request: web.Request) -> web.Response:
    return respond(discovery.api_versions(request.app[SETTINGS].advertise_url_host))


async def apis_root(request: web.Request) -> web.Response:
    return respond(discovery.api_group_list(REGISTRY))


async def api_group(request: web.Request) -> web.Response:
    doc = discovery.api_group(REGISTRY, request.match_info["group"])
    if doc is None:
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    return respond(doc)


async def api_resources(request: web.Request) -> web.Response:
    group = request.match_info.get("group", "")
    doc = discovery.api_resource_list(REGISTRY, group, request.match_info["version"])
    if doc is None:
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    return respond(doc)


async def openapi_v2(request: web.Request) -> web.Response:
    accept = request.headers.get("Accept", "")
    if "protobuf" in accept:
        return web.Response(body=openapi.openapi_v2_protobuf(),
                            headers={"Content-Type": openapi.PROTOBUF_CONTENT_TYPE})
    return respond(openapi.openapi_v2_json())


async def openapi_v3_root(request: web.Request) -> web.Response:
    return respond(openapi.openapi_v3_root())


async def openapi_v3_doc(request: web.Request) -> web.Response:
    doc = openapi.openapi_v3_group(request.match_info["gv"])
    if doc is None:
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    return respond(doc)


# ---- the app ---------------------------------------------------------------------

# Python's cyclic garbage collector runs its young generation every 700 net container
# allocations; serving a request allocates hundreds (decoded bodies and objects), so it
# would run every few requests and rescan the objects of every request in flight, and
# its full collections would walk the whole heap (caches included). The server makes
# almost no cyclic garbage, so it runs the collector less often and leaves the objects
# of start-up (modules, schemas) out of it.
GC_THRESHOLDS = (20_000, 10, 10)


async def gc_ctx(app: web.Application) -> AsyncIterator[None]:
    """The collector tuned while the app runs; as it was afterwards."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def build_app(settings: ApiServerSettings, store: Store, authn: TokenAuthenticator) -> web.Application:
    metrics = Metrics.create()
    app = web.Application(
        client_max_size=4 * 1024 * 1024,  # bodies.read_raw enforces the 3 MiB limit with a Status
        middlewares=[error_middleware, auth_middleware(authn), limits_middleware(settings, metrics)],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    allocators = ServiceAllocators(store, settings.service_cidr, settings.node_port_range)
    objects = Objects(store, allocators, toleration_seconds=(settings.default_not_ready_toleration_seconds,
                                                             settings.default_unreachable_toleration_seconds))
    app[OBJECTS] = objects
    handler = ResourceHandler(objects)

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        await store.start()
        await ensure_defaults(objects, settings)
        namespaces = NamespaceCache(store, NAMESPACES.list_prefix(None))
        await namespaces.start()
        objects.namespaces = namespaces
        yield
        objects.namespaces = None
        await namespaces.stop()
        await store.close()

    app.cleanup_ctx.append(gc_ctx)
    app.cleanup_ctx.append(storage_ctx)
    r = app.router
    for path in ("/healthz", "/livez", "/readyz"):
        r.add_get(path, health)
        r.add_get(path + "/{check:.*}", health)
    r.add_get("/version", version)
    r.add_get("/metrics", metrics_endpoint)
    r.add_get("/openapi/v2", openapi_v2)
    r.add_get("/openapi/v3", openapi_v3_root)
    r.add_get("/openapi/v3/{gv:.+}", openapi_v3_doc)
    r.add_get("/api", api_root)
    r.add_get("/api/", api_root)
    r.add_get("/apis", apis_root)
    r.add_get("/apis/", apis_root)
    r.add_get("/api/{version}", api_resources)
    r.add_get("/apis/{group}", api_group)
    r.add_get("/apis/{group}/{version}", api_resources)
    r.add_route("*", "/api/{version}/{tail:.+}", handler.core)
    r.add_route("*", "/apis/{group}/{version}/{tail:.+}", handler.grouped)
    return app
