"""The Skiff CNI daemon: skiff-bridge's commands run inside a resident process.

Starting Python and importing pyroute2 costs a plugin process about 0.3 s of CPU, paid
on every pod start. As Cilium and Multus do, the plugin executable is therefore a thin
front end (``shim.c``, a static binary) that forwards the invocation over a unix
socket to this server, running in the node agent, where `cni.plugin.run` executes
with everything already imported. The CNI protocol is unchanged for the runtime:
env + stdin in, result on stdout, exit code. The socket path reaches the shim in the
network config (the plugin's ``"daemonSocket"`` key), because libcni passes plugins
no environment of their own.

Wire format (protocol 1), one request per connection, documented in shim.c too::

    request  {"protocol":1,"env":{"CNI_COMMAND":"ADD",...},"stdinLength":N}\\n + N bytes of stdin
             (with an fd of the caller's network namespace as SCM_RIGHTS on the header)
    reply    b"A" (accepted) or b"R" (refused: the shim runs the Python plugin instead);
             after b"A": {"exitCode":0,"stdoutLength":N,"stderrLength":M}\\n + stdout + stderr

Threads, not the event loop: the acceptor and every request run on threads of their
own, so a busy agent loop never delays a pod's network, and ``setns(2)``, which
switches only the calling thread, never touches a thread anybody else uses. Each
request's thread first enters the caller's network namespace (the namespace a plugin
process would have run in: where the bridge and the host ends of the veths live),
then says b"A". If the shim gave up waiting before that, the b"A" fails with EPIPE and
the request is dropped: one request never runs both here and in the fallback plugin.
Requests run concurrently up to ``max_workers``; IPAM stays safe because every
allocation takes the same flock() as the plugin processes do.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import io
import json
import logging
import os
import secrets
import selectors
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cni import netlink
from cni.errors import INTERNAL, CniPluginError

log = logging.getLogger("skiff.cni.daemon")

PROTOCOL = 1
SOCKET_NAME = "skiff-cni.sock"
ACCEPTED = b"A"
REFUSED = b"R"
DEFAULT_WORKERS = 8
READ_TIMEOUT = 10.0  # seconds for a client to send its whole request, and to take the reply
MAX_HEADER = 1 << 20
MAX_STDIN = 64 << 20
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL

Handler = Callable[[Mapping[str, str], IO[bytes], IO[str], IO[str]], int]


class ProtocolError(Exception):
    """The client sent something that is not a protocol-1 request; it is refused."""


@dataclass
class Request:
    env: dict[str, str]
    stdin: bytes
    netns_fd: int

    @property
    def what(self) -> str:
        command = self.env.get("CNI_COMMAND", "?")
        container = self.env.get("CNI_CONTAINERID")
        return f"{command} of container {container}" if container else command


@dataclass(frozen=True)
class Reply:
    exit_code: int
    stdout: bytes
    stderr: bytes

    def encode(self) -> bytes:
        header = {"exitCode": self.exit_code, "stdoutLength": len(self.stdout), "stderrLength": len(self.stderr)}
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.stdout + self.stderr


def _default_handler() -> Handler:
    from cni.plugin import run

    return run


class CniDaemon:
    """Serves CNI invocations on a unix socket until `stop`; see the module docstring for the contract."""

    def __init__(self, socket_path: str | os.PathLike[str], max_workers: int = DEFAULT_WORKERS,
                 handler: Handler | None = None) -> None:
        self.socket_path = Path(socket_path)
        self.max_workers = max_workers
        self.requests_served = 0
        self._handler = handler or _default_handler()
        self._slots = threading.BoundedSemaphore(max_workers)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._listener: socket.socket | None = None
        self._socket_id: tuple[int, int] | None = None
        self._wake_r, self._wake_w = -1, -1
        self._acceptor: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Listen on socket_path (replacing whatever is there, atomically) and serve in the background."""
        path = self.socket_path
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(3)}")
        for candidate in (path, tmp):
            if len(os.fsencode(candidate)) > SUN_PATH_MAX:
                raise OSError(f"CNI daemon socket path {candidate} is longer than {SUN_PATH_MAX} bytes")
        path.parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(str(tmp))
            os.chmod(tmp, 0o600)  # it sets up pod networks: root's only
            listener.listen(128)
            os.replace(tmp, path)  # a restarted agent takes over without a moment with no socket
            st = os.stat(path)
        except BaseException:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        listener.setblocking(False)
        pyroute2_log = logging.getLogger("pyroute2")
        if pyroute2_log.level == logging.NOTSET:
            # It logs every netlink message at DEBUG: in a resident process that would flood an agent run with -v.
            pyroute2_log.setLevel(logging.INFO)
        self._listener = listener
        self._socket_id = (st.st_dev, st.st_ino)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._acceptor = threading.Thread(target=self._accept_loop, name="cni-daemon", daemon=True)
        self._acceptor.start()
        threading.Thread(target=self._preload, name="cni-daemon-preload", daemon=True).start()
        log.info("CNI daemon listening on %s (%d requests at a time)", path, self.max_workers)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, remove the socket, wait up to timeout for requests in progress. Idempotent."""
        if self._acceptor is None or self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._acceptor.join(timeout)
        assert self._listener is not None
        self._listener.close()
        with contextlib.suppress(OSError):
            st = os.stat(self.socket_path)
            if (st.st_dev, st.st_ino) == self._socket_id:  # not a newer daemon's socket
                os.unlink(self.socket_path)
        os.close(self._wake_r)
        os.close(self._wake_w)
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        busy = sum(1 for w in workers if w.is_alive())
        if busy:
            log.warning("CNI daemon on %s stopped with %d requests still running; they finish on their own",
                        self.socket_path, busy)
        else:
            log.info("CNI daemon on %s stopped after %d requests; plugins now run stand-alone",
                     self.socket_path, self.requests_served)

    def __enter__(self) -> CniDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _preload(self) -> None:
        try:
            netlink.preload()
            import cni.bridge  # noqa: F401
            import cni.ipam  # noqa: F401
        except Exception as exc:  # the first request will fail the same way and say so
            log.warning("CNI daemon: preloading pyroute2 failed: %s", exc)

    # -- serving ------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fd == self._wake_r:
                        return
                    try:
                        conn, _ = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:  # EMFILE and friends: the shims fall back meanwhile
                        log.error("CNI daemon: accept on %s failed: %s; retrying in 0.1s", self.socket_path, exc)
                        time.sleep(0.1)
                        continue
                    self._spawn(conn)

    def _spawn(self, conn: socket.socket) -> None:
        worker = threading.Thread(target=self._serve, args=(conn,), name="cni-request", daemon=True)
        with self._lock:
            self._workers.add(worker)
        try:
            worker.start()
        except RuntimeError as exc:  # can't start new thread
            log.error("CNI daemon: cannot start a request thread: %s; that request falls back", exc)
            with self._lock:
                self._workers.discard(worker)
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        """One connection, on its own thread: read, enter the caller's netns, accept, run, reply."""
        try:
            with conn:
                conn.setblocking(True)
                conn.settimeout(READ_TIMEOUT)
                try:
                    self._check_peer(conn)
                    request = read_request(conn)
                except (ProtocolError, OSError) as exc:
                    log.warning("CNI daemon: refusing a request: %s", exc)
                    with contextlib.suppress(OSError):
                        conn.sendall(REFUSED)
                    return
                try:
                    self._serve_request(conn, request)
                finally:
                    os.close(request.netns_fd)
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _serve_request(self, conn: socket.socket, request: Request) -> None:
        with contextlib.ExitStack() as stack:
            if not netlink.same_netns(request.netns_fd):
                try:
                    stack.enter_context(netlink.entered(request.netns_fd, "the caller's network namespace"))
                except (OSError, netlink.NetnsGone) as exc:
                    log.warning("CNI daemon: cannot enter the caller's network namespace for %s: %s; refused, "
                                "the plugin runs stand-alone", request.what, exc)
                    with contextlib.suppress(OSError):
                        conn.sendall(REFUSED)
                    return
            try:
                conn.sendall(ACCEPTED)
            except OSError as exc:  # the shim gave up waiting and runs the plugin itself
                log.warning("CNI daemon: the caller of %s left before it was accepted (%s); dropped", request.what,
                            exc)
                return
            started, cpu = time.monotonic(), time.thread_time()
            with self._slots:
                reply = self._run(request)
        with self._lock:
            self.requests_served += 1
        log.debug("CNI daemon: %s took %.1f ms, %.1f ms CPU (exit %d)", request.what,
                  (time.monotonic() - started) * 1000, (time.thread_time() - cpu) * 1000, reply.exit_code)
        try:
            conn.sendall(reply.encode())
        except OSError as exc:
            log.warning("CNI daemon: the caller of %s left before its reply (exit %d): %s", request.what,
                        reply.exit_code, exc)

    def _run(self, request: Request) -> Reply:
        stdout, stderr = io.StringIO(), io.StringIO()
        try:
            code = self._handler(request.env, io.BytesIO(request.stdin), stdout, stderr)
        except Exception as exc:  # cni.plugin.run answers every failure itself; this is a last resort
            log.exception("CNI daemon: %s crashed", request.what)
            error = CniPluginError(INTERNAL, f"CNI daemon: {type(exc).__name__}: {exc}")
            return Reply(1, error.to_json("1.0.0").encode(), b"")
        return Reply(code, _encode(stdout.getvalue()), _encode(stderr.getvalue()))

    @staticmethod
    def _check_peer(conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _ = struct.unpack("3i", creds)
        if uid not in (0, os.geteuid()):
            raise ProtocolError(f"peer pid {pid} runs as uid {uid}, not root")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def read_request(conn: socket.socket) -> Request:
    """One protocol-1 request, with the caller's netns fd (which the caller of this function must close)."""
    fds: list[int] = []
    data = b""
    try:
        while b"\n" not in data:
            if len(data) > MAX_HEADER:
                raise ProtocolError(f"request header longer than {MAX_HEADER} bytes")
            chunk, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(4 * 4))
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
                    fds.extend(received)
            if not chunk:
                raise ProtocolError("connection closed inside the request header")
            data += chunk
        header_bytes, _, body = data.partition(b"\n")
        env, length = _parse_header(header_bytes)
        if not fds:
            raise ProtocolError("no network namespace fd came with the request")
        stdin = bytearray(body)
        while len(stdin) < length:
            chunk = conn.recv(min(1 << 20, length - len(stdin)))
            if not chunk:
                raise ProtocolError(f"connection closed after {len(stdin)} of {length} bytes of stdin")
            stdin += chunk
        if len(stdin) > length:
            raise ProtocolError(f"{len(stdin) - length} bytes after the announced stdin")
        netns_fd = fds.pop(0)
        return Request(env=env, stdin=bytes(stdin), netns_fd=netns_fd)
    finally:
        for fd in fds:
            os.close(fd)


def _parse_header(raw: bytes) -> tuple[dict[str, str], int]:
    try:
        header = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError as exc:
        raise ProtocolError(f"request header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("protocol") != PROTOCOL:
        got = header.get("protocol") if isinstance(header, dict) else header
        raise ProtocolError(f"protocol {got!r} is not {PROTOCOL}")
    env, length = header.get("env"), header.get("stdinLength")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ProtocolError("env must be an object of strings")
    if not isinstance(length, int) or isinstance(length, bool) or not 0 <= length <= MAX_STDIN:
        raise ProtocolError(f"stdinLength {length!r} is not a size up to {MAX_STDIN}")
    return {k: v for k, v in env.items() if k.startswith("CNI_")}, length


def start_cni_daemon(socket_path: str | os.PathLike[str], max_workers: int = DEFAULT_WORKERS) -> CniDaemon:
    """A running daemon on socket_path; call ``stop()`` on the handle when done. OSError if it cannot listen."""
    daemon = CniDaemon(socket_path, max_workers=max_workers)
    daemon.start()
    return daemon


@contextlib.contextmanager
def running(socket_path: str | os.PathLike[str], max_workers: int = DEFAULT_WORKERS) -> Iterator[CniDaemon]:
    daemon = start_cni_daemon(socket_path, max_workers)
    try:
        yield daemon
    finally:
        daemon.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m cni.daemon SOCKET``: serve until SIGTERM/SIGINT (the agent embeds the daemon instead)."""
    parser = argparse.ArgumentParser(prog="python -m cni.daemon", description="Serve skiff-bridge's CNI requests on "
                                     "a unix socket until SIGTERM or SIGINT.")
    parser.add_argument("socket", help="unix socket path; the same as daemonSocket in the network config")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="requests run at a time")
    parser.add_argument("--debug", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if args.debug else logging.INFO)
    # Blocked before any thread starts, so that every thread inherits the mask and sigwait gets them.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    with running(args.socket, args.workers):
        signal.sigwait(signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
