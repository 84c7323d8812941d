"""A small in-memory fake of the Kubernetes API for client and CLI tests.

It serves every type of the registry with create/get/list (paging, simple selectors,
Tables)/replace/patch (merge semantics)/delete, watch (history replay from a
resourceVersion, 410 as an HTTP reply or an ERROR event, bookmarks, byte-wise chunking),
pod logs and a ``v5.channel.k8s.io`` exec endpoint. Tests steer it through attributes
(``fail_next``, ``compacted_rv``, ``watch_chunk_size``...) and read ``requests``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from skiff.api.resources import REGISTRY, ResourceType

Obj = dict[str, Any]


def status(code: int, reason: str, message: str, **details: Any) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code, **({"details": details} if details else {})}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ExecCall:
    pod: str
    query: list[tuple[str, str]]
    protocol: str | None
    stdin: bytes = b""
    resizes: list[Obj] = field(default_factory=list)


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}  # (plural, namespace, name)
        self.rv = 100
        self.history: list[tuple[int, str, str, Obj]] = []  # (rv, plural, type, object)
        self.compacted_rv = 0  # watches from an older resourceVersion get 410
        self.gone_as_event = True  # 410 as an ERROR event in a 200 stream (else an HTTP 410)
        self.watch_chunk_size: int | None = None  # split each event's bytes into chunks this big
        self.watch_end_after_history = False  # end the stream once history is replayed
        self.fail_next: list[int] = []  # status codes for the next requests (0 = drop the connection)
        self.requests: list[Request] = []
        self.logs: dict[str, bytes] = {}
        self.exec_script: Callable[[web.WebSocketResponse, ExecCall], Awaitable[None]] | None = None
        self.exec_calls: list[ExecCall] = []
        self.exec_refusal: tuple[int, Obj] | None = None  # refuse the WebSocket handshake with this Status
        self.serve_tables = True
        self.url = ""  # set once the test server listens
        self._watchers: list[asyncio.Queue[tuple[str, Obj] | None]] = []

    # ---- state ------------------------------------------------------------------

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def add(self, obj: Obj, event: bool = True) -> Obj:
        rt = REGISTRY.by_kind(obj["apiVersion"], obj["kind"])
        assert rt is not None
        obj = copy.deepcopy(obj)
        m = obj.setdefault("metadata", {})
        if rt.namespaced:
            m.setdefault("namespace", "default")
        m.setdefault("uid", str(uuid.uuid4()))
        m.setdefault("creationTimestamp", (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30))
                     .strftime("%Y-%m-%dT%H:%M:%SZ"))
        m["resourceVersion"] = self.next_rv()
        key = (rt.plural, m.get("namespace", "") if rt.namespaced else "", m["name"])
        kind = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = obj
        if event:
            self._emit(rt, kind, obj)
        return obj

    def remove(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.objects.pop((rt.plural, namespace, name))
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self.next_rv()
        self._emit(rt, "DELETED", obj)
        return obj

    def _emit(self, rt: ResourceType, kind: str, obj: Obj) -> None:
        self.history.append((int(obj["metadata"]["resourceVersion"]), rt.plural, kind, copy.deepcopy(obj)))
        for q in self._watchers:
            q.put_nowait((kind, copy.deepcopy(obj)))

    def bookmark(self) -> None:
        for q in self._watchers:
            q.put_nowait(("BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                                       "metadata": {"resourceVersion": str(self.rv)}}))

    def close_watches(self) -> None:
        for q in self._watchers:
            q.put_nowait(None)

    def send_error(self, code: int, reason: str, message: str) -> None:
        for q in self._watchers:
            q.put_nowait(("ERROR", status(code, reason, message)))

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    async def wait_for_watchers(self, n: int = 1) -> None:
        for _ in range(500):
            if len(self._watchers) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {n} watchers, have {len(self._watchers)}")

    # ---- HTTP -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def _route(self, path: str) -> tuple[ResourceType, str | None, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        rt = REGISTRY.by_plural(group, version, rest[0])
        if rt is None:
            raise web.HTTPNotFound(text=json.dumps(status(404, "NotFound", "the server could not find the requested "
                                                                           "resource")),
                                   content_type="application/json")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return rt, ns, name, sub

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Request(request.method, request.path, dict(request.query), dict(request.headers), body))
        if self.fail_next:
            code = self.fail_next.pop(0)
            if code == 0:
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("dropped by the fake")
            return web.json_response(status(code, "InternalError" if code >= 500 else "TooManyRequests",
                                            f"injected {code}"), status=code)
        rt, ns, name, sub = self._route(request.path)
        if sub == "log":
            return await self.handle_log(request, name or "")
        if sub == "exec":
            return await self.handle_exec(request, name or "")
        if name is None:
            if request.method == "GET":
                if request.query.get("watch") in ("true", "1"):
                    return await self.handle_watch(request, rt, ns)
                return self.handle_list(request, rt, ns)
            if request.method == "POST":
                return self.handle_create(rt, ns, json.loads(body))
        else:
            key = (rt.plural, ns or "" if rt.namespaced else "", name)
            if request.method == "GET":
                if key not in self.objects:
                    return self.not_found(rt, name)
                obj = self.objects[key]
                if self._wants_table(request):
                    return web.json_response(self.table(rt, [obj]))
                return web.json_response(obj)
            if request.method == "PUT":
                return self.handle_replace(rt, key, json.loads(body))
            if request.method == "PATCH":
                if key not in self.objects:
                    return self.not_found(rt, name)
                patched = merge_patch(self.objects[key], json.loads(body))
                patched["metadata"].pop("resourceVersion", None)
                return web.json_response(self.add(patched))
            if request.method == "DELETE":
                if key not in self.objects:
                    return self.not_found(rt, name)
                gone = self.remove(rt, key[1], name)
                return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                          "details": {"name": name, "kind": rt.plural,
                                                      "uid": gone["metadata"]["uid"]}})
        return web.json_response(status(405, "MethodNotAllowed", "method not allowed"), status=405)

    def not_found(self, rt: ResourceType, name: str) -> web.Response:
        res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        return web.json_response(status(404, "NotFound", f'{res} "{name}" not found', name=name, kind=rt.plural),
                                 status=404)

    def _wants_table(self, request: web.Request) -> bool:
        return self.serve_tables and "as=Table" in request.headers.get("Accept", "")

    def _select(self, request: web.Request, rt: ResourceType, ns: str | None) -> list[Obj]:
        items = [o for (plural, o_ns, _), o in sorted(self.objects.items())
                 if plural == rt.plural and (ns is None or o_ns == ns)]
        for term in filter(None, request.query.get("labelSelector", "").split(",")):
            k, _, v = term.partition("=")
            items = [o for o in items if (o["metadata"].get("labels") or {}).get(k) == v]
        for term in filter(None, request.query.get("fieldSelector", "").split(",")):
            k, _, v = term.partition("=")
            items = [o for o in items if _field(o, k) == v]
        return items

    def handle_list(self, request: web.Request, rt: ResourceType, ns: str | None) -> web.Response:
        items = self._select(request, rt, ns)
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0)
        page = items[start:start + limit] if limit else items[start:]
        meta: Obj = {"resourceVersion": str(self.rv)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        if self._wants_table(request):
            table = self.table(rt, page)
            table["metadata"] = meta
            return web.json_response(table)
        return web.json_response({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
                                  "items": [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                                            for o in page]})

    def table(self, rt: ResourceType, objs: list[Obj]) -> Obj:
        rows = []
        for o in objs:
            m = o["metadata"]
            rows.append({"cells": [m["name"], (o.get("status") or {}).get("phase", "<none>"), "5m",
                                   m.get("labels", {}).get("app", "<none>")],
                         "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                    "metadata": {k: m[k] for k in ("name", "namespace") if k in m}}})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(self.rv)},
                "columnDefinitions": [
                    {"name": "Name", "type": "string", "format": "name", "priority": 0},
                    {"name": "Status", "type": "string", "format": "", "priority": 0},
                    {"name": "Age", "type": "string", "format": "", "priority": 0},
                    {"name": "App", "type": "string", "format": "", "priority": 1},
                ], "rows": rows}

    def handle_create(self, rt: ResourceType, ns: str | None, obj: Obj) -> web.Response:
        m = obj.setdefault("metadata", {})
        if rt.namespaced:
            m["namespace"] = ns or m.get("namespace") or "default"
        key = (rt.plural, m.get("namespace", "") if rt.namespaced else "", m.get("name"))
        if key in self.objects:
            res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            return web.json_response(status(409, "AlreadyExists", f'{res} "{m["name"]}" already exists'), status=409)
        obj.setdefault("apiVersion", rt.api_version)
        obj.setdefault("kind", rt.kind)
        m.pop("creationTimestamp", None)
        return web.json_response(self.add(obj), status=201)

    def handle_replace(self, rt: ResourceType, key: tuple[str, str, str], obj: Obj) -> web.Response:
        current = self.objects.get(key)
        if current is None:
            return self.not_found(rt, key[2])
        if obj["metadata"].get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
            res = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            return web.json_response(status(409, "Conflict", f'Operation cannot be fulfilled on {res} "{key[2]}": '
                                                             "the object has been modified"), status=409)
        return web.json_response(self.add(obj))

    async def handle_watch(self, request: web.Request, rt: ResourceType, ns: str | None) -> web.StreamResponse:
        rv_param = request.query.get("resourceVersion")
        if rv_param and int(rv_param) < self.compacted_rv and not self.gone_as_event:
            return web.json_response(status(410, "Expired", f"too old resource version: {rv_param} "
                                                            f"({self.compacted_rv})"), status=410)
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def send(kind: str, obj: Obj) -> None:
            data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            size = self.watch_chunk_size or len(data)
            for i in range(0, len(data), size):
                await resp.write(data[i:i + size])
                await asyncio.sleep(0)

        def matches(obj: Obj) -> bool:
            m = obj.get("metadata") or {}
            if ns is not None and m.get("namespace") not in (ns, None):
                return False
            for term in filter(None, request.query.get("fieldSelector", "").split(",")):
                k, _, v = term.partition("=")
                if _field(obj, k) != v:
                    return False
            return True

        queue: asyncio.Queue[tuple[str, Obj] | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            if rv_param and int(rv_param) < self.compacted_rv:
                await send("ERROR", status(410, "Expired", f"too old resource version: {rv_param}"))
                return resp
            if not rv_param:
                for obj in self._select(request, rt, ns):
                    await send("ADDED", obj)
            else:
                for rv, plural, kind, obj in self.history:
                    if plural == rt.plural and rv > int(rv_param) and matches(obj):
                        await send(kind, obj)
            if self.watch_end_after_history:
                return resp
            timeout = float(request.query.get("timeoutSeconds") or 30)
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    return resp
                if item is None:
                    return resp
                kind, obj = item
                if kind in ("BOOKMARK", "ERROR") or (obj.get("kind") == rt.kind and matches(obj)):
                    if kind not in ("BOOKMARK", "ERROR") and self._wants_table(request):
                        obj = self.table(rt, [obj])
                    await send(kind, obj)
        finally:
            self._watchers.remove(queue)

    async def handle_log(self, request: web.Request, name: str) -> web.StreamResponse:
        if name not in self.logs:
            return web.json_response(status(404, "NotFound", f'pods "{name}" not found'), status=404)
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        data = self.logs[name]
        if request.query.get("tailLines"):
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(request.query["tailLines"]):])
        for line in data.splitlines(keepends=True):
            await resp.write(line)
        await resp.write_eof()
        return resp

    async def handle_exec(self, request: web.Request, name: str) -> web.StreamResponse:
        if self.exec_refusal is not None:
            return web.json_response(self.exec_refusal[1], status=self.exec_refusal[0])
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        await ws.prepare(request)
        call = ExecCall(name, list(request.query.items()), ws.ws_protocol)
        self.exec_calls.append(call)
        if self.exec_script is not None:
            await self.exec_script(ws, call)
        await ws.close()
        return ws


def _field(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


async def read_stdin_until_eof(ws: web.WebSocketResponse, call: ExecCall) -> None:
    """Collect channel-0 frames until the v5 close frame ``ff 00``; record resizes."""
    async for msg in ws:
        if msg.type != WSMsgType.BINARY:
            continue
        channel, payload = msg.data[0], msg.data[1:]
        if channel == 0:
            call.stdin += payload
        elif channel == 4:
            call.resizes.append(json.loads(payload))
        elif channel == 255 and payload == b"\x00":
            return


class FakeSleep:
    """Records requested delays and returns at once, so backoff schedules are asserted, not waited."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def pod(name: str, namespace: str = "default", **labels: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                             **({"labels": labels} if labels else {})},
            "spec": {"containers": [{"name": "main", "image": "nginx"}]}, "status": {"phase": "Running"}}
