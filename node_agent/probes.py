"""Container probes: one probe run (``run_probe``) and the kubelet's prober worker.

``run_probe`` performs a single httpGet / tcpSocket / exec check and says, in the kubelet's
words, why it failed ("HTTP probe failed with statuscode: 500"). ``ProbeWorker`` turns the
stream of single results into the container's liveness / readiness / startup state with
the kubelet's rules (``pkg/kubelet/prober/worker.go``):

- the state starts as failure for readiness, success for liveness, unknown for startup;
- it changes only after ``successThreshold`` consecutive successes or ``failureThreshold``
  consecutive failures, and ``on_result`` is told only when it changes;
- nothing is probed before ``initialDelaySeconds`` after the container started;
- liveness and readiness wait until the container has started (its startup probe, if
  any, succeeded); a startup worker ends once it succeeded;
- after a liveness or startup failure the worker stops: the container will be
  restarted, and the new container gets a new worker.

Clock and sleep are injected, so tests step time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ProbeKind = Literal["liveness", "readiness", "startup"]
ExecInContainer = Callable[[list[str], float], Awaitable[tuple[int, bytes]]]

DEFAULT_TIMEOUT_SECONDS = 1
DEFAULT_PERIOD_SECONDS = 10
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_FAILURE_THRESHOLD = 3
MAX_RESPONSE_BODY = 10 * 1024  # pkg/probe/http: maxRespBodyLength
MAX_REDIRECTS = 10
USER_AGENT = "kube-probe/1.30"


@dataclass(frozen=True)
class ProbeResult:
    success: bool
    message: str = ""


# --- one probe ----------------------------------------------------------------------------------

def resolve_port(port: Any, container: Obj | None) -> int:
    """``ResolveContainerPort``: a number, or the name of one of the container's ports."""
    if isinstance(port, bool):
        raise ValueError(f"invalid port number: {port}")
    if isinstance(port, int):
        value = port
    else:
        name = str(port)
        value = -1
        for p in (container or {}).get("ports") or []:
            if p.get("name") == name:
                value = int(p.get("containerPort") or 0)
                break
        else:
            if name.isdigit():
                value = int(name)
            else:
                raise ValueError(f"port {name} not found")
    if not 0 < value < 65536:
        raise ValueError(f"invalid port number: {value}")
    return value


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _probe_timeout(probe: Obj, timeout: float | None) -> float:
    if timeout is not None:
        return timeout
    return float(probe.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)


async def run_probe(
    probe: Obj,
    *,
    pod_ip: str,
    exec_in_container: ExecInContainer,
    container: Obj | None = None,
    timeout: float | None = None,
) -> ProbeResult:
    """Run ``probe`` once. ``timeout`` overrides ``timeoutSeconds`` (default 1 s);
    ``container`` resolves named ports. Never raises for a failing target."""
    seconds = _probe_timeout(probe, timeout)
    try:
        if probe.get("exec") is not None:
            return await exec_probe([str(c) for c in probe["exec"].get("command") or []], seconds, exec_in_container)
        if probe.get("httpGet") is not None:
            action = probe["httpGet"]
            port = resolve_port(action.get("port"), container)
            return await http_probe(
                scheme=str(action.get("scheme") or "HTTP"),
                host=str(action.get("host") or pod_ip),
                port=port,
                path=str(action.get("path") or "/"),
                headers=[(str(h.get("name") or ""), str(h.get("value") or "")) for h in action.get("httpHeaders")
                         or []],
                timeout=seconds,
            )
        if probe.get("tcpSocket") is not None:
            action = probe["tcpSocket"]
            port = resolve_port(action.get("port"), container)
            return await tcp_probe(str(action.get("host") or pod_ip), port, seconds)
        if probe.get("grpc") is not None:
            return ProbeResult(False, "gRPC probes are not supported by this node")
        return ProbeResult(False, "missing probe handler")
    except ValueError as exc:
        return ProbeResult(False, str(exc))


async def exec_probe(command: list[str], timeout: float, exec_in_container: ExecInContainer) -> ProbeResult:
    """Exit code 0 is success; the output is the message; a timeout is a failure."""
    try:
        code, output = await asyncio.wait_for(exec_in_container(command, timeout), timeout)
    except TimeoutError:
        return ProbeResult(False, f'command "{" ".join(command)}" timed out')
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 — any exec failure is a failed probe, with its reason
        return ProbeResult(False, f"exec {command!r} failed: {exc}")
    text = output.decode("utf-8", errors="replace")
    return ProbeResult(code == 0, text)


def _go_dial_error(exc: BaseException, hostport: str) -> str:
    if isinstance(exc, TimeoutError):
        return f"dial tcp {hostport}: i/o timeout"
    if isinstance(exc, ConnectionRefusedError):
        return f"dial tcp {hostport}: connect: connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return f"dial tcp {hostport}: connect: {exc.strerror.lower()}"
    return f"dial tcp {hostport}: {exc}"


async def tcp_probe(host: str, port: int, timeout: float) -> ProbeResult:
    """Success when a TCP connection opens within ``timeout``; it is closed at once."""
    hostport = _join_host_port(host, port)
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.CancelledError:
        raise
    except (OSError, TimeoutError) as exc:
        return ProbeResult(False, _go_dial_error(exc, hostport))
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout)
    return ProbeResult(True, "")


def _no_verify_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def http_probe(
    *, scheme: str, host: str, port: int, path: str, headers: list[tuple[str, str]], timeout: float
) -> ProbeResult:
    """``DoHTTPProbe``: 200–399 is success. Redirects are followed on the same host only;
    a redirect elsewhere ends the probe as a success with a warning, as in the kubelet.
    HTTPS certificates are not verified."""
    scheme = scheme.lower()
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{_join_host_port(host, port)}{path}"
    first_host = host
    request_headers: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        if name:
            request_headers.add(name, value)
    # The user's User-Agent, Accept and Host replace the defaults, as in buildHeader.
    request_headers.setdefault("User-Agent", USER_AGENT)
    request_headers.setdefault("Accept", "*/*")
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(ssl=_no_verify_context() if scheme == "https" else False, force_close=True)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
            for _ in range(MAX_REDIRECTS + 1):
                async with session.get(url, headers=request_headers, allow_redirects=False) as resp:
                    body = await resp.content.read(MAX_RESPONSE_BODY)
                    status = resp.status
                    location = resp.headers.get("Location")
                if 300 <= status < 400 and location:
                    target = urljoin(url, location)
                    if urlsplit(target).hostname != first_host:
                        text = body.decode("utf-8", errors="replace")
                        return ProbeResult(True, f"Probe terminated redirects, Response body: {text}")
                    url = target
                    continue
                if 200 <= status < 400:
                    return ProbeResult(True, body.decode("utf-8", errors="replace"))
                return ProbeResult(False, f"HTTP probe failed with statuscode: {status}")
            return ProbeResult(False, f'Get "{url}": stopped after {MAX_REDIRECTS} redirects')
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        return ProbeResult(False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting '
                                  f"headers)")
    except aiohttp.ClientConnectorError as exc:
        return ProbeResult(False, f'Get "{url}": {_go_dial_error(exc.os_error, _join_host_port(host, port))}')
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return ProbeResult(False, f'Get "{url}": {exc}')


# --- the worker ---------------------------------------------------------------------------------

class ProbeWorker:
    """The kubelet's prober worker for one probe of one container instance.

    ``run`` performs one probe; ``on_result(success, message)`` is called whenever the
    probe's state changes (only on threshold crossings); ``on_probe`` (optional) sees every
    single result, for the ``Unhealthy`` events the kubelet records on each failure.
    ``is_started`` says whether the container has started (gates liveness/readiness);
    ``started_at`` is the container's start on ``clock``'s scale (default: now).
    """

    def __init__(
        self,
        kind: ProbeKind,
        probe: Obj,
        run: Callable[[], Awaitable[ProbeResult]],
        on_result: Callable[[bool, str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        started_at: float | None = None,
        is_started: Callable[[], bool] | None = None,
        on_probe: Callable[[ProbeResult], None] | None = None,
    ) -> None:
        self.kind = kind
        self.probe = probe
        self._run = run
        self._on_result = on_result
        self._on_probe = on_probe
        self._clock = clock
        self._sleep = sleep
        self._is_started = is_started or (lambda: True)
        self.started_at = clock() if started_at is None else started_at
        self.initial_delay = float(probe.get("initialDelaySeconds") or 0)
        self.period = float(probe.get("periodSeconds") or DEFAULT_PERIOD_SECONDS)
        self.success_threshold = int(probe.get("successThreshold") or DEFAULT_SUCCESS_THRESHOLD)
        self.failure_threshold = int(probe.get("failureThreshold") or DEFAULT_FAILURE_THRESHOLD)
        # readiness: not ready until proven; liveness: alive until proven dead; startup: unknown
        self.result: bool | None = {"readiness": False, "liveness": True, "startup": None}[kind]
        self.message = ""
        self.last_result: bool | None = None
        self.result_run = 0
        self.on_hold = False
        self.stopped = False
        self.probes_run = 0
        self._trigger = asyncio.Event()

    @property
    def started(self) -> bool:
        """For a startup worker: the startup probe has succeeded."""
        return self.kind == "startup" and self.result is True

    def trigger(self) -> None:
        """Probe now instead of at the next period (the kubelet does this for readiness
        once a container has started)."""
        self._trigger.set()

    def stop(self) -> None:
        self.stopped = True
        self._trigger.set()

    def _delay_remaining(self) -> float:
        return self.started_at + self.initial_delay - self._clock()

    async def tick(self) -> bool:
        """One ``doProbe``; returns False once the worker has nothing left to do."""
        if self.stopped or self.on_hold:
            return False
        if self._delay_remaining() > 0:
            return True
        if self.kind == "startup":
            if self.started:
                return False  # its job is done for this container instance
        elif not self._is_started():
            return True
        result = await self._run()
        self.probes_run += 1
        if self._on_probe is not None:
            self._on_probe(result)
        if self.last_result == result.success:
            self.result_run += 1
        else:
            self.last_result = result.success
            self.result_run = 1
        if (not result.success and self.result_run < self.failure_threshold) or (
                result.success and self.result_run < self.success_threshold):
            return True
        changed = self.result != result.success
        self.result = result.success
        self.message = result.message
        if changed:
            self._on_result(result.success, result.message)
        if self.kind == "startup" and result.success:
            return False
        if self.kind in ("liveness", "startup") and not result.success:
            # The container will be killed; probing it while it stops only adds noise.
            self.on_hold = True
            self.result_run = 0
            return False
        return True

    async def _wait(self, delay: float) -> None:
        if self._trigger.is_set():
            self._trigger.clear()
            return
        sleeper = asyncio.ensure_future(self._sleep(max(0.0, delay)))
        waker = asyncio.ensure_future(self._trigger.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                if not task.done():
                    task.cancel()
            self._trigger.clear()

    async def run_forever(self) -> None:
        """Probe every ``periodSeconds`` until stopped, put on hold, or cancelled. The first
        probe runs as soon as ``initialDelaySeconds`` have passed."""
        while not self.stopped:
            if not await self.tick():
                return
            remaining = self._delay_remaining()
            await self._wait(remaining if remaining > 0 else self.period)
