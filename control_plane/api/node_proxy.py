"""``pods/log`` and ``pods/exec``: served by the pod's node agent, proxied by the API server.

As kube-apiserver does, the API server picks the container (the pod's only one, or the one
named), finds the node's address and port in its Node object (``status.addresses``,
``status.daemonEndpoints.kubeletEndpoint.Port``), and calls the agent's kubelet-style paths
(``/containerLogs/...``, ``/exec/...``) with its own client certificate
(``kube-apiserver-kubelet-client``, signed by the cluster CA); the agents' certificates are
self-signed and not verified, like kube-apiserver without ``--kubelet-certificate-authority``.

Logs come back as a chunked text/plain stream. Exec is a WebSocket (``v5.channel.k8s.io``,
``v4.channel.k8s.io``, ...) relayed frame by frame to a WebSocket opened to the agent with
the protocol the agent chose. SPDY (kubectl before 1.30) is not spoken.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from control_plane.api import errors
from control_plane.api.certs import Pki, ensure_client_cert
from control_plane.api.objects import Objects
from skiff.api.resources import REGISTRY

log = logging.getLogger(__name__)

DEFAULT_KUBELET_PORT = 10250
ADDRESS_TYPES = ("InternalIP", "Hostname", "ExternalIP", "InternalDNS", "ExternalDNS")
# Remote-command protocols relayed to agents, best first. The relay does not look inside
# frames, so whatever the agent accepts works end to end.
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io",
                  "base64.channel.k8s.io")
JSON_STATUS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io")
ERROR_CHANNEL = 3
MAX_MESSAGE = 16 * 1024 * 1024
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class KubeletClient:
    """How the API server calls node agents: TLS with its kubelet-client certificate."""

    ssl: ssl.SSLContext
    connect_timeout: float = CONNECT_TIMEOUT

    @classmethod
    def from_pki(cls, pki_dir: Path, ca: Pki) -> KubeletClient:
        cert, key = ensure_client_cert(pki_dir, ca)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # agents serve self-signed certificates
        ctx.load_cert_chain(cert, key)
        return cls(ctx)

    def session(self, trace: aiohttp.TraceConfig | None = None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=None),
            trace_configs=[trace] if trace else None)


KUBELET_CLIENT: web.AppKey[KubeletClient] = web.AppKey("kubelet_client", KubeletClient)


# ---- what the pod says ------------------------------------------------------------------


def _names(containers: list[dict[str, Any]]) -> str:
    return " ".join(str(c.get("name", "")) for c in containers)


def choose_container(pod: dict[str, Any], requested: str) -> str:
    """The named container (which must exist), or the pod's only one (kube-apiserver's rules)."""
    spec = pod.get("spec") or {}
    name = pod["metadata"]["name"]
    containers = spec.get("containers") or []
    init = spec.get("initContainers") or []
    if not requested:
        if len(containers) == 1:
            return str(containers[0]["name"])
        if not containers:
            raise errors.bad_request(f"a container name must be specified for pod {name}")
        message = f"a container name must be specified for pod {name}, choose one of: [{_names(containers)}]"
        if init:
            message += f" or one of the init containers: [{_names(init)}]"
        raise errors.bad_request(message)
    if not any(c.get("name") == requested for c in [*containers, *init]):
        raise errors.bad_request(f"container {requested} is not valid for pod {name}")
    return requested


def _container_status(pod: dict[str, Any], container: str) -> tuple[dict[str, Any] | None, bool]:
    """The container's status, and whether the pod reports any container status at all."""
    status = pod.get("status") or {}
    lists = [status.get(k) or [] for k in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")]
    for statuses in lists:
        for s in statuses:
            if s.get("name") == container:
                return s, True
    return None, any(lists)


def _waiting(container: str, pod: str, reason: str) -> errors.ApiError:
    text = {"ErrImagePull": "image can't be pulled",
            "ImagePullBackOff": "trying and failing to pull image"}.get(reason, reason)
    return errors.bad_request(f'container "{container}" in pod "{pod}" is waiting to start: {text}')


def check_log_status(pod: dict[str, Any], container: str, previous: bool) -> None:
    """The kubelet's checks (validateContainerLogStatus) on the pod's reported status: is
    there a container instance, current or previous, to read the log of?"""
    name = pod["metadata"]["name"]
    cstatus, any_status = _container_status(pod, container)
    if cstatus is None:
        if not any_status:  # the agent has not reported yet: it is still creating the pod
            raise _waiting(container, name, "ContainerCreating")
        raise errors.bad_request(f'container "{container}" in pod "{name}" is not available')
    state = cstatus.get("state") or {}
    last_terminated = (cstatus.get("lastState") or {}).get("terminated")
    if previous:
        if last_terminated is None:
            raise errors.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        return
    if state.get("running") is not None or state.get("terminated") is not None or last_terminated is not None:
        return
    if state.get("waiting") is not None:
        raise _waiting(container, name, str(state["waiting"].get("reason") or "ContainerCreating"))
    raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start - no logs yet')


def check_exec_status(pod: dict[str, Any], container: str) -> None:
    """Refuse early what surely is not running; anything else the agent decides."""
    name = pod["metadata"]["name"]
    cstatus, any_status = _container_status(pod, container)
    if cstatus is None and not any_status:
        raise _waiting(container, name, "ContainerCreating")
    waiting = ((cstatus or {}).get("state") or {}).get("waiting")
    if waiting is not None:
        raise _waiting(container, name, str(waiting.get("reason") or "ContainerCreating"))


async def node_endpoint(objects: Objects, node_name: str) -> str:
    """``host:port`` of the node's agent, from its Node object."""
    nodes = REGISTRY.by_plural("", "v1", "nodes")
    assert nodes is not None
    node = await objects.get(nodes, None, node_name)
    status = node.get("status") or {}
    addresses = [a for a in status.get("addresses") or [] if a.get("address")]
    host = next((a["address"] for t in ADDRESS_TYPES for a in addresses if a.get("type") == t), None)
    if host is None:
        raise errors.ApiError(503, "ServiceUnavailable",
                              f'no preferred addresses found for node "{node_name}"; known addresses: []')
    endpoint = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {})
    port = int(endpoint.get("Port") or DEFAULT_KUBELET_PORT)
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"{host}:{port}"


def _kubelet_client(request: web.Request) -> KubeletClient:
    client = request.app.get(KUBELET_CLIENT)
    if client is None:
        raise errors.ApiError(503, "ServiceUnavailable",
                              "this API server has no client certificate for node agents (KUBELET_CLIENT unset)")
    return client


def _agent_error(status: int, body: str) -> errors.ApiError:
    """An agent's plain-text refusal as a Status, as kube-apiserver's response checker does."""
    message = body.strip() or f"the node agent answered {status}"
    with contextlib.suppress(ValueError, AttributeError):
        decoded = json.loads(message)
        if isinstance(decoded, dict) and decoded.get("kind") == "Status":
            message = str(decoded.get("message") or message)
    reason = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}.get(status, "InternalError")
    return errors.ApiError(status if status in (400, 404) else 500, reason, message)


def _dial_error(url: str, exc: BaseException) -> errors.ApiError:
    return errors.ApiError(500, "InternalError", f"error dialing backend: {url}: {exc or type(exc).__name__}")


# ---- logs ---------------------------------------------------------------------------------


def log_params(pod_name: str, q: Any) -> dict[str, str]:
    """Validated PodLogOptions, as the query for the agent."""
    params: dict[str, str] = {}
    for key in ("follow", "previous", "timestamps"):
        value = q.get(key)
        if value in ("true", "1", "True"):
            params[key] = "true"
        elif value not in (None, "", "false", "0", "False"):
            raise errors.bad_request(f"invalid value for {key}: {value!r} (must be true or false)")
    numbers: dict[str, int] = {}
    for key in ("tailLines", "limitBytes", "sinceSeconds"):
        value = q.get(key)
        if value in (None, ""):
            continue
        try:
            numbers[key] = int(value)
        except ValueError:
            raise errors.bad_request(f"invalid value for {key}: {value!r} (must be an integer)") from None
    since_time = q.get("sinceTime") or ""
    causes = []
    if numbers.get("tailLines", 0) < 0:
        causes.append(errors.Cause("tailLines", "FieldValueInvalid",
                                   f"Invalid value: {numbers['tailLines']}: must be greater than or equal to 0"))
    for key in ("limitBytes", "sinceSeconds"):
        if key in numbers and numbers[key] < 1:
            causes.append(errors.Cause(key, "FieldValueInvalid",
                                       f"Invalid value: {numbers[key]}: must be greater than 0"))
    if since_time and "sinceSeconds" in numbers:
        causes.append(errors.Cause("", "FieldValueForbidden",
                                   "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"))
    if causes:
        raise errors.invalid("PodLogOptions", pod_name, causes)
    if since_time:
        try:
            datetime.datetime.fromisoformat(since_time)
        except ValueError:
            raise errors.bad_request(f"invalid value for sinceTime: {since_time!r} (must be RFC 3339)") from None
        params["sinceTime"] = since_time
    params.update({k: str(v) for k, v in numbers.items()})
    return params


async def proxy_log(request: web.Request, objects: Objects, pod: dict[str, Any]) -> web.StreamResponse:
    """``GET pods/NAME/log``: the container's log from its node, streamed as it comes."""
    if request.method != "GET":
        raise errors.method_not_allowed(f"{request.method} is not supported on pods/log")
    md = pod["metadata"]
    container = choose_container(pod, request.query.get("container") or "")
    params = log_params(md["name"], request.query)
    headers = {"Content-Type": "text/plain", "Cache-Control": "no-cache, private"}
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:  # not scheduled: no log yet (kube-apiserver answers empty)
        return web.Response(body=b"", headers=headers)
    check_log_status(pod, container, params.get("previous") == "true")
    client = _kubelet_client(request)
    url = f"https://{await node_endpoint(objects, node_name)}/containerLogs/{md['namespace']}/{md['name']}/{container}"
    async with client.session() as session:
        try:
            upstream = await session.get(url, params=params)
        except (aiohttp.ClientError, OSError) as exc:
            raise _dial_error(url, exc) from exc
        async with upstream:
            if upstream.status != 200:
                raise _agent_error(upstream.status, await upstream.text(errors="replace"))
            resp = web.StreamResponse(headers=headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except (aiohttp.ClientError, ConnectionError) as exc:
                # Mid-stream nothing can be reported any more: end the response.
                log.info("log stream %s/%s/%s ended early: %s", md["namespace"], md["name"], container, exc)
            return resp


# ---- exec ---------------------------------------------------------------------------------


def _offered(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _exec_params(q: Any) -> list[tuple[str, str]]:
    command = q.getall("command", [])
    if not command:
        raise errors.bad_request("you must specify at least one command for the container")
    flags = {}
    for key in ("stdin", "stdout", "stderr", "tty"):
        value = q.get(key)
        if value not in (None, "", "false", "0", "False", "true", "1", "True"):
            raise errors.bad_request(f"invalid value for {key}: {value!r} (must be true or false)")
        flags[key] = value in ("true", "1", "True")
    if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    return [("command", c) for c in command] + [(k, "1") for k, on in flags.items() if on]


async def proxy_exec(request: web.Request, objects: Objects, pod: dict[str, Any]) -> web.StreamResponse:
    """``pods/NAME/exec`` over WebSocket, relayed to the node agent."""
    if request.method not in ("GET", "POST"):
        raise errors.method_not_allowed(f"{request.method} is not supported on pods/exec")
    md = pod["metadata"]
    container = choose_container(pod, request.query.get("container") or "")
    params = _exec_params(request.query)
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise errors.bad_request(f"pod {md['name']} does not have a host assigned")
    check_exec_status(pod, container)
    if not web.WebSocketResponse(protocols=EXEC_PROTOCOLS).can_prepare(request).ok:
        # kubectl 1.30+ tries a WebSocket first and falls back to SPDY only when that fails.
        raise errors.bad_request("pods/exec is served over WebSocket only (subprotocol v5.channel.k8s.io); "
                                 "SPDY is not supported: use kubectl v1.30 or newer")
    offered = _offered(request)
    wanted = [p for p in offered if p in EXEC_PROTOCOLS]
    if offered and not wanted:
        raise errors.bad_request(f"requested protocol(s) are not supported: {offered}; supported protocols are "
                                 f"{list(EXEC_PROTOCOLS)}")
    client = _kubelet_client(request)
    url = f"https://{await node_endpoint(objects, node_name)}/exec/{md['namespace']}/{md['name']}/{container}"

    refused: dict[str, bytes] = {}

    async def keep_refusal(session: aiohttp.ClientSession, ctx: Any, end: aiohttp.TraceRequestEndParams) -> None:
        # aiohttp drops the body of a refused handshake; it holds the agent's reason.
        if end.response.status != 101:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                refused["body"] = await end.response.read()

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(keep_refusal)
    async with client.session(trace) as session:
        failure: errors.ApiError | None = None
        agent_ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            agent_ws = await session.ws_connect(url, params=params, protocols=wanted, autoping=True,
                                                max_msg_size=MAX_MESSAGE)
        except aiohttp.WSServerHandshakeError as exc:
            failure = _agent_error(exc.status, refused.get("body", b"").decode(errors="replace") or exc.message)
        except (aiohttp.ClientError, OSError) as exc:
            failure = _dial_error(url, exc)
        if agent_ws is None:
            assert failure is not None
            return await _refuse_in_band(request, wanted, failure)
        async with agent_ws:
            client_ws = web.WebSocketResponse(protocols=(agent_ws.protocol,) if agent_ws.protocol else (),
                                              autoping=True, max_msg_size=MAX_MESSAGE, compress=False)
            await client_ws.prepare(request)
            await _relay(client_ws, agent_ws)
            return client_ws


async def _refuse_in_band(request: web.Request, wanted: list[str], failure: errors.ApiError) -> web.StreamResponse:
    """The agent refused or could not be reached. The reason goes on the error channel of
    an accepted WebSocket rather than as an HTTP error: kubectl answers a refused WebSocket
    by retrying with SPDY, and would then show only that SPDY is not spoken here."""
    ws = web.WebSocketResponse(protocols=wanted[:1], autoping=True, compress=False)
    await ws.prepare(request)
    protocol = ws.ws_protocol or ""
    status = failure.to_status()
    payload = (json.dumps(status, separators=(",", ":")) if protocol in JSON_STATUS_PROTOCOLS
               else failure.message).encode()
    with contextlib.suppress(ConnectionError):
        if "base64" in protocol:
            await ws.send_str(str(ERROR_CHANNEL) + base64.b64encode(payload).decode())
        else:
            await ws.send_bytes(bytes([ERROR_CHANNEL]) + payload)
        await ws.close()
    return ws


async def _relay(client_ws: web.WebSocketResponse, agent_ws: aiohttp.ClientWebSocketResponse) -> None:
    """Copy messages both ways until either side closes, then close the other."""

    async def client_to_agent() -> None:
        async for msg in client_ws:
            if msg.type == WSMsgType.BINARY:
                await agent_ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await agent_ws.send_str(msg.data)

    async def agent_to_client() -> None:
        async for msg in agent_ws:
            if msg.type == WSMsgType.BINARY:
                await client_ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await client_ws.send_str(msg.data)

    tasks = [asyncio.create_task(client_to_agent()), asyncio.create_task(agent_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, ConnectionError | aiohttp.ClientError):
                log.warning("exec relay: %s: %s", type(result).__name__, result)
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await agent_ws.close()
        with contextlib.suppress(ConnectionError):
            await client_ws.close()
