"""The asyncio client every Skiff component uses to talk to the API server.

One `ApiClient` owns one aiohttp session. Typed verbs (`get`, `list`, `create`, `patch`,
`watch`...) build paths from `ResourceType`; `request` is the raw escape hatch.

Retries: connection errors and 429/5xx replies are retried with bounded backoff, for
idempotent methods only (a POST or PATCH may already have been applied). Once a
streaming body (watch, logs) has started, errors propagate: resuming is the caller's
decision (the informer resumes from its last resourceVersion).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import aiohttp

from skiff.api.resources import REGISTRY, ResourceType
from skiff.client import json_codec
from skiff.client.backoff import RetryPolicy, Sleep, default_sleep
from skiff.client.errors import ApiConnectionError, ApiStatusError, error_from_status
from skiff.client.kubeconfig import ClientConfig
from skiff.client.watchstream import ERROR, NdjsonDecoder, StreamDecodeError, WatchEvent, to_event

logger = logging.getLogger("skiff.client")

PatchType = Literal["merge", "strategic", "json", "apply"]
PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)
# A watch may legitimately be quiet; only a read silence well past its own timeout means a dead peer.
WATCH_READ_SLACK = 30.0

ParamValue = str | int | float | bool | None
Params = Mapping[str, ParamValue] | Iterable[tuple[str, ParamValue]]
ResourceArg = ResourceType | str


def resolve_type(rt: ResourceArg) -> ResourceType:
    if isinstance(rt, ResourceType):
        return rt
    found = REGISTRY.resolve(rt)
    if found is None:
        raise ValueError(f'the server doesn\'t have a resource type "{rt}"')
    return found


def _encode_params(params: Params | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    out: list[tuple[str, str]] = []
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        else:
            out.append((key, str(value)))
    return out


def _selector(value: str | Mapping[str, str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    return ",".join(f"{k}={v}" for k, v in value.items()) or None


def _is_retriable_status(code: int) -> bool:
    return code == 429 or (code >= 500 and code != 501)


class ApiClient:
    """``async with ApiClient(config) as client: await client.get("pods", "web-0")``."""

    def __init__(self, config: ClientConfig, *, retry: RetryPolicy | None = None, sleep: Sleep = default_sleep,
                 user_agent: str = "skiff/0.1", timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._user_agent = user_agent
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ssl = config.ssl_context()
        self._refused_upgrades: dict[str, bytes] = {}

    async def __aenter__(self) -> ApiClient:
        self._ensure_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def namespace(self) -> str:
        """The default namespace (the kubeconfig context's)."""
        return self.config.namespace

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True, limit=100)
            trace = aiohttp.TraceConfig()
            trace.on_request_end.append(self._keep_refused_upgrade_body)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers={"User-Agent": self._user_agent},
                trace_configs=[trace],
            )
        return self._session

    async def _keep_refused_upgrade_body(self, session: aiohttp.ClientSession, ctx: Any,
                                         params: aiohttp.TraceRequestEndParams) -> None:
        # aiohttp drops the body of a refused WebSocket handshake, but it holds the server's
        # Status (why exec was refused); read it before that happens.
        if params.response.status >= 400 and params.headers.get("Upgrade", "").lower() == "websocket":
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                self._refused_upgrades[str(params.url)] = await params.response.read()

    def url(self, path: str) -> str:
        return self.config.server + path

    def _headers(self, accept: str | None, content_type: str | None,
                 extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(self.config.auth_headers())
        headers["Accept"] = accept or "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        if extra:
            headers.update(extra)
        return headers

    # ---- transport -------------------------------------------------------------------

    @asynccontextmanager
    async def open(self, method: str, path: str, *, params: Params | None = None, body: Any = None,
                   content_type: str | None = None, accept: str | None = None,
                   headers: Mapping[str, str] | None = None, timeout: aiohttp.ClientTimeout | None = None,
                   retry: bool | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request and yield the successful response with its body unread.

        Raises `ApiStatusError` (subclass per code) for replies >= 400 and
        `ApiConnectionError` when the server stays unreachable. ``retry`` defaults to
        whether ``method`` is idempotent.
        """
        method = method.upper()
        session = self._ensure_session()
        data: bytes | None = None
        if body is not None:
            if isinstance(body, bytes):
                data = body
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = json_codec.dumps(body)
                content_type = content_type or "application/json"
        retriable = method in IDEMPOTENT_METHODS if retry is None else retry
        attempts = self.retry.attempts if retriable else 1
        query = _encode_params(params)
        url = self.url(path)
        req_headers = self._headers(accept, content_type, headers)
        extra: dict[str, Any] = {}
        if self.config.tls_server_name:
            extra["server_hostname"] = self.config.tls_server_name
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = await session.request(method, url, params=query, data=data, headers=req_headers,
                                             timeout=timeout or self._timeout, **extra)
            except asyncio.CancelledError:
                raise
            except aiohttp.ClientSSLError as exc:  # a certificate problem does not go away by retrying
                raise ApiConnectionError(f"{method} {url}: {_describe_transport_error(exc)}", url) from exc
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                why = _describe_transport_error(exc)
                if attempt >= attempts:
                    if attempts > 1:
                        logger.warning("%s %s: attempt %d/%d failed: %s; giving up",
                                       method, path, attempt, attempts, why)
                    raise ApiConnectionError(f"{method} {url}: {why}", url) from exc
                delay = self.retry.backoff.delay(attempt)
                logger.warning("%s %s: attempt %d/%d failed: %s; retrying in %gs",
                               method, path, attempt, attempts, why, delay)
                await self._sleep(delay)
                continue
            if resp.status < 400:
                break
            error = await _read_error(resp)
            if attempt < attempts and _is_retriable_status(resp.status):
                delay = self.retry.backoff.delay(attempt)
                if error.retry_after is not None:
                    delay = min(max(delay, error.retry_after), self.retry.backoff.maximum)
                logger.warning("%s %s: attempt %d/%d failed: %d %s: %s; retrying in %gs",
                               method, path, attempt, attempts, error.code, error.reason, error.message, delay)
                await self._sleep(delay)
                continue
            if attempts > 1 and _is_retriable_status(resp.status):
                logger.warning("%s %s: attempt %d/%d failed: %d %s: %s; giving up",
                               method, path, attempt, attempts, error.code, error.reason, error.message)
            raise error
        try:
            yield resp
        finally:
            resp.release()

    async def request(self, method: str, path: str, *, params: Params | None = None, body: Any = None,
                      content_type: str | None = None, accept: str | None = None,
                      headers: Mapping[str, str] | None = None, timeout: aiohttp.ClientTimeout | None = None,
                      retry: bool | None = None) -> Any:
        """Send a request; return the decoded JSON reply, its text if not JSON, or None if empty."""
        async with self.open(method, path, params=params, body=body, content_type=content_type, accept=accept,
                             headers=headers, timeout=timeout, retry=retry) as resp:
            try:
                raw = await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise ApiConnectionError(f"{method} {path}: reading the reply failed: "
                                         f"{_describe_transport_error(exc)}", self.url(path)) from exc
            if not raw:
                return None
            if "json" in (resp.content_type or ""):
                return json_codec.loads(raw, json_nesting=False)
            return raw.decode(resp.charset or "utf-8", errors="replace")

    # ---- typed verbs -----------------------------------------------------------------

    def _namespace(self, rt: ResourceType, namespace: str | None, obj: Mapping[str, Any] | None = None) -> str | None:
        if not rt.namespaced:
            return None
        if namespace:
            return namespace
        if obj is not None:
            ns = (obj.get("metadata") or {}).get("namespace")
            if ns:
                return str(ns)
        return self.config.namespace

    async def get(self, rt: ResourceArg, name: str, namespace: str | None = None, *,
                  accept: str | None = None) -> dict[str, Any]:
        rt = resolve_type(rt)
        result: dict[str, Any] = await self.request("GET", rt.path(self._namespace(rt, namespace), name),
                                                    accept=accept)
        return result

    async def list(self, rt: ResourceArg, namespace: str | None = None,
                   label_selector: str | Mapping[str, str] | None = None, field_selector: str | None = None,
                   limit: int | None = None, continue_: str | None = None, resource_version: str | None = None,
                   resource_version_match: str | None = None, *, accept: str | None = None) -> dict[str, Any]:
        """One page of a list. ``namespace=None`` lists across all namespaces."""
        rt = resolve_type(rt)
        params = {
            "labelSelector": _selector(label_selector), "fieldSelector": field_selector, "limit": limit,
            "continue": continue_, "resourceVersion": resource_version,
            "resourceVersionMatch": resource_version_match,
        }
        result: dict[str, Any] = await self.request("GET", rt.path(namespace if rt.namespaced else None),
                                                    params=params, accept=accept)
        return result

    async def list_all(self, rt: ResourceArg, namespace: str | None = None, *,
                       label_selector: str | Mapping[str, str] | None = None, field_selector: str | None = None,
                       page_size: int | None = 500, resource_version: str | None = None) -> dict[str, Any]:
        """Every page of a list, merged; metadata (resourceVersion) is the last page's."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.list(rt, namespace, label_selector=label_selector, field_selector=field_selector,
                                   limit=page_size, continue_=token,
                                   resource_version=resource_version if token is None else None)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                page["items"] = items
                page.setdefault("metadata", {}).pop("continue", None)
                return page

    async def create(self, rt: ResourceArg, obj: Mapping[str, Any], namespace: str | None = None,
                     dry_run: bool = False, *, field_manager: str | None = None,
                     field_validation: str | None = None) -> dict[str, Any]:
        rt = resolve_type(rt)
        params = {"dryRun": "All" if dry_run else None, "fieldManager": field_manager,
                  "fieldValidation": field_validation}
        result: dict[str, Any] = await self.request("POST", rt.path(self._namespace(rt, namespace, obj)),
                                                    params=params, body=dict(obj))
        return result

    async def replace(self, rt: ResourceArg, obj: Mapping[str, Any], namespace: str | None = None, *,
                      subresource: str | None = None, dry_run: bool = False,
                      field_manager: str | None = None) -> dict[str, Any]:
        """PUT the whole object; its metadata.resourceVersion makes this a compare-and-swap."""
        rt = resolve_type(rt)
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            raise ValueError("replace needs metadata.name")
        params = {"dryRun": "All" if dry_run else None, "fieldManager": field_manager}
        result: dict[str, Any] = await self.request(
            "PUT", rt.path(self._namespace(rt, namespace, obj), str(name), subresource),
            params=params, body=dict(obj))
        return result

    async def update_status(self, rt: ResourceArg, obj: Mapping[str, Any],
                            namespace: str | None = None) -> dict[str, Any]:
        return await self.replace(rt, obj, namespace, subresource="status")

    async def patch(self, rt: ResourceArg, name: str, patch: Any, namespace: str | None = None,
                    patch_type: PatchType = "merge", subresource: str | None = None, *, dry_run: bool = False,
                    field_manager: str | None = None, force: bool | None = None) -> dict[str, Any]:
        rt = resolve_type(rt)
        if patch_type not in PATCH_CONTENT_TYPES:
            raise ValueError(f"unknown patch type {patch_type!r}")
        if patch_type == "apply" and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        params = {"dryRun": "All" if dry_run else None, "fieldManager": field_manager, "force": force}
        result: dict[str, Any] = await self.request(
            "PATCH", rt.path(self._namespace(rt, namespace), name, subresource), params=params,
            body=json_codec.dumps(patch), content_type=PATCH_CONTENT_TYPES[patch_type])
        return result

    async def delete(self, rt: ResourceArg, name: str, namespace: str | None = None,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None, *,
                     preconditions: Mapping[str, str] | None = None, dry_run: bool = False) -> dict[str, Any]:
        """DELETE; returns the server's reply (the object while finalizers/grace run, else a Status)."""
        rt = resolve_type(rt)
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = dict(preconditions)
        if dry_run:
            options["dryRun"] = ["All"]
        result: dict[str, Any] = await self.request("DELETE", rt.path(self._namespace(rt, namespace), name),
                                                    body=options) or {}
        return result

    async def get_subresource(self, rt: ResourceArg, name: str, subresource: str, namespace: str | None = None, *,
                              params: Params | None = None, accept: str | None = None) -> Any:
        rt = resolve_type(rt)
        return await self.request("GET", rt.path(self._namespace(rt, namespace), name, subresource),
                                  params=params, accept=accept)

    # ---- streams ---------------------------------------------------------------------

    async def watch(self, rt: ResourceArg, namespace: str | None = None, resource_version: str | None = None,
                    label_selector: str | Mapping[str, str] | None = None, field_selector: str | None = None,
                    allow_bookmarks: bool = True, timeout_seconds: int | None = None, *,
                    send_initial_events: bool | None = None, resource_version_match: str | None = None,
                    accept: str | None = None) -> AsyncGenerator[WatchEvent, None]:
        """Yield ``(type, object)`` events until the server ends the stream.

        An ERROR event is raised as the matching `ApiStatusError` (`Gone` for 410); a broken
        stream raises `ApiConnectionError`. ``namespace=None`` watches all namespaces.
        """
        rt = resolve_type(rt)
        params = {
            "watch": "true", "resourceVersion": resource_version, "labelSelector": _selector(label_selector),
            "fieldSelector": field_selector, "allowWatchBookmarks": True if allow_bookmarks else None,
            "timeoutSeconds": timeout_seconds, "sendInitialEvents": send_initial_events,
            "resourceVersionMatch": resource_version_match,
        }
        read_timeout = timeout_seconds + WATCH_READ_SLACK if timeout_seconds else None
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=read_timeout)
        path = rt.path(namespace if rt.namespaced else None)
        async with self.open("GET", path, params=params, timeout=timeout, accept=accept) as resp:
            decoder = NdjsonDecoder()
            try:
                async for chunk in resp.content.iter_any():
                    for raw in decoder.feed(chunk):
                        yield _checked(to_event(raw))
                for raw in decoder.close():
                    yield _checked(to_event(raw))
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise ApiConnectionError(f"watch {path} broke: {_describe_transport_error(exc)}",
                                         self.url(path)) from exc
            except StreamDecodeError as exc:
                raise ApiConnectionError(f"watch {path}: {exc}", self.url(path)) from exc

    async def stream_log(self, name: str, namespace: str | None = None, *, container: str | None = None,
                         follow: bool = False, tail_lines: int | None = None, previous: bool = False,
                         timestamps: bool = False, since_seconds: int | None = None,
                         limit_bytes: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield the bytes of ``pods/NAME/log`` as they arrive (endless with ``follow``)."""
        rt = resolve_type("pods")
        params = {
            "container": container, "follow": True if follow else None, "tailLines": tail_lines,
            "previous": True if previous else None, "timestamps": True if timestamps else None,
            "sinceSeconds": since_seconds, "limitBytes": limit_bytes,
        }
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=None if follow else 60)
        path = rt.path(self._namespace(rt, namespace), name, "log")
        async with self.open("GET", path, params=params, timeout=timeout, accept="*/*") as resp:
            try:
                async for chunk in resp.content.iter_any():
                    yield chunk
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise ApiConnectionError(f"log stream {path} broke: {_describe_transport_error(exc)}",
                                         self.url(path)) from exc

    async def ws_connect(self, path: str, *, params: Params | None = None,
                         protocols: Iterable[str] = ()) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket (exec, attach, port-forward) with this client's credentials."""
        session = self._ensure_session()
        headers = self.config.auth_headers()
        extra: dict[str, Any] = {}
        if self.config.tls_server_name:
            extra["server_hostname"] = self.config.tls_server_name
        try:
            return await session.ws_connect(self.url(path), params=_encode_params(params),
                                            protocols=tuple(protocols), headers=headers, **extra)
        except aiohttp.WSServerHandshakeError as exc:
            body = self._refused_upgrades.pop(str(exc.request_info.url), b"").decode(errors="replace")
            raise _error_from_body(exc.status, body or exc.message) from exc
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise ApiConnectionError(f"GET {self.url(path)}: {_describe_transport_error(exc)}",
                                     self.url(path)) from exc


def _checked(event: WatchEvent) -> WatchEvent:
    if event.type == ERROR:
        raise error_from_status(event.object, int(event.object.get("code") or 500))
    return event


async def _read_error(resp: aiohttp.ClientResponse) -> ApiStatusError:
    try:
        text = await resp.text(errors="replace")
    except (TimeoutError, aiohttp.ClientError):
        text = ""
    finally:
        resp.release()
    error = _error_from_body(resp.status, text)
    retry_after = resp.headers.get("Retry-After")
    if retry_after and error.retry_after is None and retry_after.isdigit():
        error.status.setdefault("details", {})["retryAfterSeconds"] = int(retry_after)
    return error


def _error_from_body(code: int, text: str) -> ApiStatusError:
    status: dict[str, Any] | None = None
    try:
        parsed = json.loads(text) if text else None
        status = parsed if isinstance(parsed, dict) else None
    except ValueError:
        pass
    return error_from_status(status, code, text)


def _describe_transport_error(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text


__all__ = [
    "ApiClient",
    "ApiConnectionError",
    "ApiStatusError",
    "PATCH_CONTENT_TYPES",
    "TABLE_ACCEPT",
    "WatchEvent",
    "resolve_type",
]
