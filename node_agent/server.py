"""The agent's HTTPS API, on kubelet's port and paths, for the API server only.

``GET /containerLogs/{namespace}/{pod}/{container}`` streams a container's log from Docker;
``GET /exec/{namespace}/{pod}/{container}?command=...`` runs a command over a WebSocket
speaking the remote-command protocol (``v5.channel.k8s.io``, also v4 and the original
``channel.k8s.io``): every message starts with a channel byte — 0 stdin, 1 stdout,
2 stderr, 3 the final Status, 4 terminal resize, and (v5) 255 to close one channel.

Only the API server may call it: TLS verifies client certificates against the cluster CA,
and the middleware lets in only the common name the API server uses
(``kube-apiserver-kubelet-client``). Errors are plain text with kubelet's wording; the API
server turns them into a Status.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import docker
from aiohttp import WSMsgType, web

from node_agent.runtime import docker_streams
from node_agent.runtime.docker_streams import ExecSession, LogOptions
from node_agent.tls import ensure_serving_cert, server_context

log = logging.getLogger(__name__)

API_SERVER_CN = "kube-apiserver-kubelet-client"
V5, V4, V1 = "v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"
PROTOCOLS = (V5, V4, V1)  # our preference; the client's order decides among these
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
MAX_MESSAGE = 16 * 1024 * 1024

DOCKER: web.AppKey[docker.APIClient] = web.AppKey("docker", docker.APIClient)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AgentServerSettings(Protocol):
    @property
    def listen_address(self) -> str: ...
    @property
    def listen_port(self) -> int: ...
    @property
    def data_dir(self) -> Path | str: ...
    @property
    def node_name(self) -> str: ...
    @property
    def node_ip(self) -> str | None: ...


def _http_error(status: int, message: str) -> web.HTTPException:
    cls: type[web.HTTPException] = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
                                    404: web.HTTPNotFound}.get(status, web.HTTPInternalServerError)
    return cls(text=message, content_type="text/plain")


# ---- authentication ------------------------------------------------------------------------


def _common_name(peercert: dict[str, Any]) -> str:
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The TLS layer already verified any certificate; here: is it the API server's?"""
    peercert = request.transport.get_extra_info("peercert") if request.transport is not None else None
    if not peercert:
        raise _http_error(401, "Unauthorized")
    user = _common_name(peercert)
    if user != API_SERVER_CN:
        verb = "get" if request.method in ("GET", "HEAD") else "create"
        log.warning("refused %s %s from %r: only %s may use the node API", request.method, request.path, user,
                    API_SERVER_CN)
        raise _http_error(403, f"Forbidden (user={user}, verb={verb}, resource=nodes, subresource=proxy)")
    return await handler(request)


# ---- query parsing ---------------------------------------------------------------------------


def _flag(q: Any, key: str) -> bool:
    value = q.get(key)
    if value in (None, "", "false", "0", "False"):
        return False
    if value in ("true", "1", "True"):
        return True
    raise _http_error(400, f"invalid value for {key}: {value!r}")


def _number(q: Any, key: str, minimum: int) -> int | None:
    value = q.get(key)
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except ValueError:
        raise _http_error(400, f"invalid value for {key}: {value!r}") from None
    if n < minimum:
        raise _http_error(400, f"{key}: must be greater than or equal to {minimum}")
    return n


def _since(q: Any) -> float | None:
    seconds = _number(q, "sinceSeconds", 1)
    since_time = q.get("sinceTime")
    if seconds is not None and since_time:
        raise _http_error(400, "at most one of `sinceTime` or `sinceSeconds` may be specified")
    if seconds is not None:
        return datetime.datetime.now(datetime.UTC).timestamp() - seconds
    if since_time:
        try:
            return datetime.datetime.fromisoformat(since_time).timestamp()
        except ValueError:
            raise _http_error(400, f"invalid value for sinceTime: {since_time!r} (must be RFC 3339)") from None
    return None


# ---- logs ------------------------------------------------------------------------------------


async def container_logs(request: web.Request) -> web.StreamResponse:
    ns, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
    q = request.query
    opts = LogOptions(follow=_flag(q, "follow"), tail_lines=_number(q, "tailLines", 0), since=_since(q),
                      timestamps=_flag(q, "timestamps"))
    limit = _number(q, "limitBytes", 1)
    api = request.app[DOCKER]
    refs = await docker_streams.find_containers(api, ns, pod, container)
    if not refs:
        raise _http_error(404, f'container "{container}" in pod "{pod}" is not available')
    instances = [r for r in refs if r.pod_uid == refs[0].pod_uid]
    if _flag(q, "previous"):
        if len(instances) < 2:
            raise _http_error(400, f'previous terminated container "{container}" in pod "{pod}" not found')
        target = instances[1]
    else:
        target = instances[0]
    try:
        stream = await docker_streams.open_logs(api, target.id, opts)
    except docker.errors.NotFound:
        raise _http_error(404, f'container "{container}" in pod "{pod}" is not available') from None
    except docker.errors.APIError as e:
        raise _http_error(500, f"failed to get logs of container {target.id[:12]}: {e.explanation or e}") from None
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        async for chunk in stream:
            if limit is not None:
                chunk = chunk[:limit]
                limit -= len(chunk)
            await resp.write(chunk)
            if limit == 0:
                break
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the API server went away (its client stopped following)
    except docker.errors.DockerException as e:
        log.warning("log stream of %s/%s/%s broke: %s", ns, pod, container, e)
    finally:
        stream.close()
    return resp


# ---- exec ------------------------------------------------------------------------------------


def _exit_status(command: list[str], code: int | None) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    if code is None:
        return {"metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": f"error executing command [{' '.join(command)}]: the exit code was not recorded"}
    return {"metadata": {}, "status": "Failure",
            "message": (f"command terminated with non-zero exit code: error executing command "
                        f"[{' '.join(command)}], exit code {code}"),
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def _status_frame(protocol: str, status: dict[str, Any]) -> bytes | None:
    """v4/v5 always send the Status as JSON; the original protocol sends only a failure's
    message, as text."""
    if protocol in (V4, V5):
        return bytes([ERROR]) + json.dumps(status, separators=(",", ":")).encode()
    if status.get("status") == "Success":
        return None
    return bytes([ERROR]) + str(status.get("message", "")).encode()


def _offered_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


async def exec_in_container(request: web.Request) -> web.StreamResponse:
    ns, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
    q = request.query
    command = q.getall("command", [])
    stdin, stdout, stderr, tty = (_flag(q, k) for k in ("stdin", "stdout", "stderr", "tty"))
    if tty and stderr:
        stderr = False  # as the kubelet: a terminal has one output stream
    if not command:
        raise _http_error(400, "you must specify at least one command for the container")
    if not (stdin or stdout or stderr):
        raise _http_error(400, "you must specify at least 1 of stdin, stdout, stderr")
    ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True, max_msg_size=MAX_MESSAGE, compress=False)
    if not ws.can_prepare(request).ok:
        raise _http_error(400, "this node serves exec only over WebSocket (v5.channel.k8s.io)")
    offered = _offered_protocols(request)
    if offered and not set(offered) & set(PROTOCOLS):
        raise _http_error(400, f"requested protocol(s) are not supported: {offered}; supported protocols are "
                               f"{list(PROTOCOLS)}")
    api = request.app[DOCKER]
    uid = request.match_info.get("uid")
    refs = [r for r in await docker_streams.find_containers(api, ns, pod, container)
            if r.running and (uid is None or r.pod_uid == uid)]
    if not refs:
        raise _http_error(404, f'container not found ("{container}")')
    try:
        session = await ExecSession.start(api, refs[0].id, command, stdin=stdin, stdout=stdout, stderr=stderr,
                                          tty=tty)
    except docker.errors.NotFound:
        raise _http_error(404, f'container not found ("{container}")') from None
    except docker.errors.APIError as e:
        if e.status_code == 409:  # stopped between the listing and the exec
            raise _http_error(404, f'container not found ("{container}")') from None
        raise _http_error(500, f"error executing command in container: {e.explanation or e}") from None
    try:
        await ws.prepare(request)
        await _run_session(ws, session, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
    finally:
        session.close()
    return ws


async def _run_session(ws: web.WebSocketResponse, session: ExecSession, *, stdin: bool, stdout: bool,
                       stderr: bool, tty: bool) -> None:
    protocol = ws.ws_protocol or ""
    # Like the kubelet: an empty message on the lowest writable channel says "connected".
    await ws.send_bytes(bytes([STDOUT if stdout else STDERR if stderr else ERROR]))

    async def pump_output() -> None:
        async for channel, data in session.output():
            await ws.send_bytes(bytes([channel]) + data)

    async def pump_input() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data: bytes = msg.data
            elif msg.type == WSMsgType.TEXT:  # the Python client sends str stdin as text frames
                data = msg.data.encode()
            else:
                continue
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and stdin:
                await session.write_stdin(payload)
            elif channel == RESIZE and tty:
                for width, height in docker_streams.parse_resize(payload):
                    await session.resize(width, height)
            elif channel == CLOSE and protocol == V5 and payload[:1] == bytes([STDIN]):
                await session.close_stdin()

    output = asyncio.create_task(pump_output())
    client = asyncio.create_task(pump_input())
    try:
        done, _ = await asyncio.wait({output, client}, return_when=asyncio.FIRST_COMPLETED)
        if output not in done:
            return  # the client hung up; nobody is left to tell the exit code
        if output.exception() is not None:
            log.warning("exec %s: output stream broke: %s", session.exec_id[:12], output.exception())
        frame = _status_frame(protocol, _exit_status(session.command, await session.exit_code()))
        with contextlib.suppress(ConnectionError):
            if frame is not None:
                await ws.send_bytes(frame)
            await ws.close()
    finally:
        for task in (output, client):
            task.cancel()
        await asyncio.gather(output, client, return_exceptions=True)


# ---- the app -------------------------------------------------------------------------------


def build_agent_app(api: docker.APIClient) -> web.Application:
    app = web.Application(middlewares=[authenticate])
    app[DOCKER] = api
    r = app.router
    r.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    for path in ("/exec/{namespace}/{pod}/{container}", "/exec/{namespace}/{pod}/{uid}/{container}"):
        r.add_get(path, exec_in_container)
        r.add_post(path, exec_in_container)
    return app


async def start_agent_server(settings: AgentServerSettings, client: docker.DockerClient | docker.APIClient,
                             client_ca_pem: bytes) -> web.AppRunner:
    """Serve the node API on ``listen_address:listen_port`` over TLS with a self-signed
    certificate kept under ``<data_dir>/pki``; ``client_ca_pem`` is the cluster CA (the
    kubeconfig's certificate-authority-data). Port 0 picks a free port: read it from
    ``runner.addresses``. Stop it with ``await runner.cleanup()``."""
    addresses = [a for a in (settings.node_ip, settings.listen_address) if a and a not in ("0.0.0.0", "::")]
    cert, key = ensure_serving_cert(Path(settings.data_dir) / "pki", settings.node_name, addresses)
    tls = server_context(cert, key, client_ca_pem)
    runner = web.AppRunner(build_agent_app(docker_streams.low_level(client)), handler_cancellation=True,
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.listen_address, settings.listen_port, ssl_context=tls)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("node API serving on https://%s:%d (logs, exec)", settings.listen_address,
             runner.addresses[0][1] if runner.addresses else settings.listen_port)
    return runner
