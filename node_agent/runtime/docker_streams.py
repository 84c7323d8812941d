"""Docker's long-lived streams (container logs, exec sessions) as asyncio objects.

The docker SDK is blocking. Short calls (list, inspect, exec create/resize) run through
``asyncio.to_thread``; a stream that can block for hours (``logs -f``, an idle shell) gets a
thread of its own, so it never occupies a slot of the loop's shared executor. Closing a
stream shuts its socket down, which wakes and ends that thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import docker

log = logging.getLogger(__name__)

T = TypeVar("T")

LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_RESTART_COUNT = "io.kubernetes.container.restartCount"

STDOUT, STDERR = 1, 2  # docker's stream ids, which are also the remote-command channels
READ_SIZE = 65536
PUMP_SLOTS = 16  # chunks a stream thread may read ahead of its consumer
EXIT_CODE_WAIT = 5.0  # seconds to wait for dockerd to record an exec's exit code after its stream ended


def low_level(client: docker.DockerClient | docker.APIClient) -> docker.APIClient:
    return client.api if isinstance(client, docker.DockerClient) else client


# ---- finding a pod's containers ---------------------------------------------------------


@dataclass(frozen=True)
class ContainerRef:
    id: str
    pod_uid: str
    restart_count: int
    running: bool
    created: int  # unix seconds


async def find_containers(api: docker.APIClient, namespace: str, pod: str, container: str) -> list[ContainerRef]:
    """Every instance of one container of one pod, newest pod first, then highest restart
    count first. Instances of an older pod of the same name (being torn down) come last."""
    filters = {"label": [f"{LABEL_NAMESPACE}={namespace}", f"{LABEL_POD_NAME}={pod}",
                         f"{LABEL_CONTAINER_NAME}={container}"]}
    listed: list[dict[str, Any]] = await asyncio.to_thread(api.containers, all=True, filters=filters)
    refs = []
    for c in listed:
        labels = c.get("Labels") or {}
        try:
            restarts = int(labels.get(LABEL_RESTART_COUNT, "0"))
        except ValueError:
            restarts = 0
        refs.append(ContainerRef(c["Id"], labels.get(LABEL_POD_UID, ""), restarts, c.get("State") == "running",
                                 int(c.get("Created") or 0)))
    newest_by_uid: dict[str, int] = {}
    for r in refs:
        newest_by_uid[r.pod_uid] = max(newest_by_uid.get(r.pod_uid, 0), r.created)
    refs.sort(key=lambda r: (newest_by_uid[r.pod_uid], r.pod_uid, r.restart_count, r.created), reverse=True)
    return refs


# ---- a blocking iterator drained by a thread of its own -----------------------------------


class _End:
    pass


@dataclass
class _Failed:
    error: BaseException


class ThreadedStream(Generic[T]):
    """Runs a blocking iterator in a dedicated thread and hands its items to asyncio, at
    most ``PUMP_SLOTS`` ahead of the consumer. ``close`` unblocks the thread through
    ``interrupt`` (which must make the iterator stop, e.g. by shutting its socket)."""

    def __init__(self, items: Iterator[T], interrupt: Callable[[], None], name: str):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[T | _End | _Failed] = asyncio.Queue()
        self._slots = threading.Semaphore(PUMP_SLOTS)
        self._stop = threading.Event()
        self._interrupt = interrupt
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _hand_over(self, item: T | _End | _Failed) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                while not self._slots.acquire(timeout=0.5):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                self._hand_over(item)
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which decides
            if not self._stop.is_set():
                self._hand_over(_Failed(e))
            return
        self._hand_over(_End())

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                if self._stop.is_set():
                    return
                raise item.error
            self._slots.release()
            yield item

    def close(self) -> None:
        """Stop the thread; idempotent and non-blocking."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            self._interrupt()
        except Exception:  # noqa: BLE001 - closing is best effort; the thread is a daemon
            log.debug("interrupting stream thread %s failed", self._thread.name, exc_info=True)


# ---- logs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    since: float | None = None  # unix seconds
    timestamps: bool = False


async def open_logs(api: docker.APIClient, container_id: str, opts: LogOptions) -> ThreadedStream[bytes]:
    """The container's stdout and stderr as Docker recorded them (json-file), interleaved
    in order, as chunks of bytes. Close the stream when done."""
    kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "stream": True, "follow": opts.follow,
                              "timestamps": opts.timestamps,
                              "tail": opts.tail_lines if opts.tail_lines is not None else "all"}
    if opts.since is not None:
        kwargs["since"] = max(float(opts.since), 1e-9)
    chunks = await asyncio.to_thread(api.logs, container_id, **kwargs)
    return ThreadedStream(iter(chunks), chunks.close, f"logs-{container_id[:12]}")


# ---- exec ---------------------------------------------------------------------------------


def _raw_socket(sock: Any) -> socket.socket:
    """The socket under what ``exec_start(socket=True)`` returns (a SocketIO for unix
    sockets and plain TCP, the SSL socket itself for TLS)."""
    return getattr(sock, "_sock", sock)  # type: ignore[no-any-return]


def _take_buffered(sock: Any, raw: socket.socket) -> bytes:
    """Bytes of the stream that http.client's buffered reader pulled in along with the
    101 response headers; reading only from the raw socket would lose them."""
    response = getattr(sock, "_response", None)
    fp = getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None)
    if fp is None or not hasattr(fp, "peek"):
        return b""
    timeout = raw.gettimeout()
    raw.settimeout(0.0)  # peek on an empty buffer must not wait for the socket
    try:
        pending = fp.peek()
    except (BlockingIOError, OSError):
        pending = b""
    finally:
        raw.settimeout(timeout)
    return fp.read(len(pending)) if pending else b""


class _SocketReader:
    """Reads a hijacked Docker connection: first what was already buffered, then the socket."""

    def __init__(self, raw: socket.socket, buffered: bytes):
        self._raw = raw
        self._buffered = buffered

    def read(self, n: int) -> bytes:
        if self._buffered:
            chunk, self._buffered = self._buffered[:n], self._buffered[n:]
            return chunk
        try:
            return self._raw.recv(n)
        except OSError:  # shut down under us by close(): the end of the stream
            return b""

    def read_exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.read(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data


def _frames(reader: _SocketReader, tty: bool) -> Iterator[tuple[int, bytes]]:
    """Docker's attach stream: raw bytes with a TTY, otherwise frames with an 8-byte
    header (stream id, 3 bytes padding, big-endian length)."""
    if tty:
        while chunk := reader.read(READ_SIZE):
            yield STDOUT, chunk
        return
    while (header := reader.read_exactly(8)) is not None:
        stream, length = header[0], int.from_bytes(header[4:8], "big")
        while length > 0:
            chunk = reader.read(min(length, READ_SIZE))
            if not chunk:
                return
            length -= len(chunk)
            yield (STDERR if stream == STDERR else STDOUT), chunk


class ExecSession:
    """One Docker exec with its hijacked connection: output frames in, stdin out."""

    def __init__(self, api: docker.APIClient, exec_id: str, sock: Any, tty: bool, command: list[str]):
        self.api = api
        self.exec_id = exec_id
        self.tty = tty
        self.command = command
        self._sock = sock
        self._raw = _raw_socket(sock)
        self._raw.settimeout(None)  # the API client's request timeout must not end an idle shell
        reader = _SocketReader(self._raw, _take_buffered(sock, self._raw))
        # One writer thread per session keeps stdin writes ordered and gives backpressure
        # (a process that does not read its stdin stalls only its own session).
        self._stdin_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                                 thread_name_prefix=f"exec-stdin-{exec_id[:12]}")
        self._stdin_closed = False
        self._closed = False
        self._output: ThreadedStream[tuple[int, bytes]] = ThreadedStream(
            _frames(reader, tty), self._shutdown, f"exec-{exec_id[:12]}")

    @classmethod
    async def start(cls, client: docker.DockerClient | docker.APIClient, container_id: str, command: list[str], *,
                    stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecSession:
        """Create the exec and attach to it (the process starts now)."""
        api = low_level(client)

        def create_and_start() -> tuple[str, Any]:
            created = api.exec_create(container_id, command, stdout=stdout, stderr=stderr, stdin=stdin, tty=tty)
            exec_id = created["Id"]
            return exec_id, api.exec_start(exec_id, tty=tty, socket=True)

        exec_id, sock = await asyncio.to_thread(create_and_start)
        return cls(api, exec_id, sock, tty, command)

    def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """``(STDOUT|STDERR, data)`` until the process's streams close (with a TTY all of
        it comes as STDOUT)."""
        return aiter(self._output)

    async def write_stdin(self, data: bytes) -> None:
        if self._stdin_closed or self._closed or not data:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._stdin_pool, self._raw.sendall, data)
        except (OSError, RuntimeError):  # closed under us, or the pool is shut down
            self._stdin_closed = True

    async def close_stdin(self) -> None:
        """Half-close the connection: dockerd closes the process's stdin (EOF)."""
        if self._stdin_closed or self._closed:
            return
        self._stdin_closed = True
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, RuntimeError):
            await loop.run_in_executor(self._stdin_pool, self._raw.shutdown, socket.SHUT_WR)

    async def resize(self, width: int, height: int) -> None:
        try:
            await asyncio.to_thread(self.api.exec_resize, self.exec_id, height=height, width=width)
        except docker.errors.APIError as e:  # the process may have just exited
            log.debug("exec %s: resize to %dx%d failed: %s", self.exec_id[:12], width, height, e)

    async def exit_code(self) -> int | None:
        """The exit code once dockerd has recorded it (None if it never did)."""
        deadline = time.monotonic() + EXIT_CODE_WAIT
        delay = 0.01
        while True:
            info = await asyncio.to_thread(self.api.exec_inspect, self.exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Drop the connection; the process keeps running if it ignores its stdin closing,
        as with ``docker exec``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._output.close()
        self._stdin_pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            self._raw.close()
        with contextlib.suppress(OSError):
            self._sock.close()
        response = getattr(self._sock, "_response", None)
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()


def parse_resize(payload: bytes) -> list[tuple[int, int]]:
    """Terminal sizes from a resize-channel message: one or more JSON objects
    ``{"Width": w, "Height": h}``; anything malformed is skipped."""
    sizes = []
    text = payload.decode("utf-8", "replace").strip()
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(text):
        try:
            obj, end = decoder.raw_decode(text, pos)
        except ValueError:
            break
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if isinstance(obj, dict):
            w, h = obj.get("Width"), obj.get("Height")
            if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
                sizes.append((w, h))
    return sizes
