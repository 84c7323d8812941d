"""The one module that touches the blocking Docker SDK.

Every call runs on a private thread pool (stop and exec may block for a whole grace
period, so the loop's default executor would starve). Errors come out as `DockerError`
(or `NotFoundError`/`ConflictError`), never as SDK types. `events` is an async iterator
of this node's managed containers that survives dockerd restarts: it reconnects with backoff and yields a synthetic
``{"Type": "skiff", "Action": "connected"}`` after each (re)connection, because events
were lost in between and the caller must relist.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import docker.errors
import requests

from node_agent.runtime.containers import LABEL_NODE, LABEL_POD_UID, MANAGED_FILTER

log = logging.getLogger("skiff.agent.docker")
T = TypeVar("T")

CONNECTED = {"Type": "skiff", "Action": "connected"}
EVENT_ACTIONS = ("start", "die", "oom", "destroy")


class DockerError(Exception):
    """A Docker call failed; ``status`` is the HTTP status when Docker answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(DockerError):
    pass


class ConflictError(DockerError):
    pass


def _convert(exc: Exception, what: str) -> DockerError:
    if isinstance(exc, docker.errors.NotFound):
        return NotFoundError(f"{what}: {exc.explanation or exc}", 404)
    if isinstance(exc, docker.errors.APIError):
        code = exc.status_code
        cls = ConflictError if code == 409 else DockerError
        return cls(f"{what}: {exc.explanation or exc}", code)
    return DockerError(f"{what}: {exc}")


@dataclass(frozen=True)
class ContainerSummary:
    """A row of ``docker ps -a`` for a managed container (cheap: no inspect)."""

    id: str
    name: str
    labels: dict[str, str]
    state: str


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: bytes


class DockerAdapter:
    def __init__(self, base_url: str = "unix:///var/run/docker.sock", *, node_name: str = "", workers: int = 32,
                 timeout: int = 60, reconnect_max: float = 5.0) -> None:
        self.base_url = base_url
        self.node_name = node_name  # only containers labelled for this node are listed and watched
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docker")
        self.api = docker.APIClient(base_url=base_url, version="auto", timeout=timeout, max_pool_size=workers)
        self.reconnect_max = reconnect_max

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.api.close()

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise _convert(exc, what) from exc

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run any blocking callable (e.g. a streaming read for logs) on the docker pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    # ---- daemon --------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping", self.api.ping))
        except DockerError:
            return False

    async def version(self) -> dict[str, Any]:
        return await self._call("version", self.api.version)

    async def info(self) -> dict[str, Any]:
        return await self._call("info", self.api.info)

    # ---- containers ----------------------------------------------------------------

    async def list_managed(self, pod_uid: str | None = None) -> list[ContainerSummary]:
        """Every container the agent created (of one pod, with ``pod_uid``), running or not."""
        labels = self._label_filter() + ([f"{LABEL_POD_UID}={pod_uid}"] if pod_uid else [])
        rows = await self._call("list containers", self.api.containers, all=True, filters={"label": labels})
        return [ContainerSummary(id=r["Id"], name=(r.get("Names") or ["/"])[0].lstrip("/"),
                                 labels=r.get("Labels") or {}, state=r.get("State", "")) for r in rows]

    def _label_filter(self) -> list[str]:
        return [MANAGED_FILTER["label"]] + ([f"{LABEL_NODE}={self.node_name}"] if self.node_name else [])

    async def inspect(self, container_id: str) -> dict[str, Any]:
        return await self._call(f"inspect {container_id[:12]}", self.api.inspect_container, container_id)

    async def create(self, kwargs: Mapping[str, Any]) -> str:
        """``create_container(**kwargs)``; kwargs come from `container_spec.to_docker_kwargs`."""
        result = await self._call(f"create {kwargs.get('name', '')}", self.api.create_container, **kwargs)
        return str(result["Id"])

    async def create_from(self, build: Callable[[docker.APIClient], Mapping[str, Any]]) -> str:
        """Create from a builder that needs the SDK client (host configs are built by it)."""
        return await self.create(build(self.api))

    async def start(self, container_id: str) -> None:
        await self._call(f"start {container_id[:12]}", self.api.start, container_id)

    async def stop(self, container_id: str, timeout: float) -> None:
        """SIGTERM (or the image's StopSignal), then SIGKILL after ``timeout`` seconds."""
        # Docker takes whole seconds: round up, so a container never gets less than its grace period.
        await self._call(f"stop {container_id[:12]}", self.api.stop, container_id,
                         timeout=max(0, math.ceil(timeout)))

    async def kill(self, container_id: str, signal: str = "SIGKILL") -> None:
        await self._call(f"kill {container_id[:12]}", self.api.kill, container_id, signal=signal)

    async def remove(self, container_id: str, force: bool = True) -> None:
        """Remove a container and its anonymous volumes; a missing container is fine."""
        try:
            await self._call(f"remove {container_id[:12]}", self.api.remove_container, container_id,
                             v=True, force=force)
        except NotFoundError:
            pass

    async def exec(self, container_id: str, cmd: list[str], timeout: float | None = None) -> ExecResult:
        """Run ``cmd`` in a running container; raises `TimeoutError` after ``timeout``."""
        def run() -> ExecResult:
            exec_id = self.api.exec_create(container_id, cmd, stdout=True, stderr=True)["Id"]
            output = self.api.exec_start(exec_id)
            code = self.api.exec_inspect(exec_id).get("ExitCode")
            return ExecResult(int(code if code is not None else -1), output or b"")

        return await asyncio.wait_for(self._call(f"exec in {container_id[:12]}", run), timeout)

    # ---- images --------------------------------------------------------------------

    async def inspect_image(self, ref: str) -> dict[str, Any] | None:
        try:
            return await self._call(f"inspect image {ref}", self.api.inspect_image, ref)
        except NotFoundError:
            return None

    async def pull(self, ref: str, auth_config: dict[str, str] | None = None) -> None:
        repo, tag = _split_ref(ref)

        def run() -> None:
            for line in self.api.pull(repo, tag=tag, stream=True, decode=True, auth_config=auth_config):
                if isinstance(line, dict) and line.get("error"):
                    raise docker.errors.APIError(str(line["error"]))

        await self._call(f"pull {ref}", run)

    # ---- events --------------------------------------------------------------------

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Container events of managed containers, forever; see the module docstring."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        stop = threading.Event()
        holder: dict[str, Any] = {}

        def deliver(item: dict[str, Any] | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def pump() -> None:
            failures = 0
            client: docker.APIClient | None = None
            while not stop.is_set():
                try:
                    client = docker.APIClient(base_url=self.base_url, version="auto", timeout=self._timeout)
                    stream = client.events(decode=True, filters={
                        "type": "container", "label": self._label_filter(), "event": list(EVENT_ACTIONS)})
                    holder["stream"] = stream
                    failures = 0
                    deliver(dict(CONNECTED))
                    for event in stream:
                        if stop.is_set():
                            break
                        deliver(event)
                    raise ConnectionError("event stream ended")
                except Exception as exc:
                    if stop.is_set():
                        break
                    failures += 1
                    delay = min(self.reconnect_max, 0.2 * 2 ** (failures - 1))
                    log.warning("docker event stream broke (%s); reconnecting in %.1fs (attempt %d)",
                                exc, delay, failures)
                    stop.wait(delay)
                finally:
                    if client is not None:
                        with contextlib.suppress(Exception):
                            client.close()

        thread = threading.Thread(target=pump, name="docker-events", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            stream = holder.get("stream")
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()


def _split_ref(ref: str) -> tuple[str, str | None]:
    """``repo[:tag][@digest]`` -> (repo, tag or digest)."""
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        return repo, digest
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"
