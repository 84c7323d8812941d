"""Fixtures shared by every test folder: a real ``skiff server`` in a subprocess.

``api_server`` is one server for the whole session; tests that write use their own
``namespace`` so they never see each other's objects. Tests that need a server of
their own (restarts, kill -9, compaction) use ``server_factory``. When a test fails,
the part of the server log written during that test is attached to its report.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0  # seconds from spawn until /readyz answers ok
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL on teardown
LOG_TAIL_LINES = 150


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def skiff_command() -> list[str]:
    """The ``skiff`` console script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "skiff"
    if script.exists():
        return [str(script)]
    found = shutil.which("skiff")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from skiff.cli.main import main; sys.exit(main())"]


@dataclass(repr=False)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def __repr__(self) -> str:  # pytest shows repr() of assertion messages
        return f"HTTP {self.status}: {self.text[:2000]}"


@dataclass
class ApiServer:
    """A running ``skiff server`` and what a client needs to reach it."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    token: str = field(default="", repr=False)
    ca_pem: bytes = field(default=b"", repr=False)
    _ssl: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"ApiServer({self.url}, pid {self.proc.pid}, data_dir={str(self.data_dir)!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # hypothesis prints dataclasses field by field (token included) unless told this.
        printer.text(repr(self))

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    # -- lifecycle -------------------------------------------------------------

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll until the kubeconfig exists and ``/readyz`` answers 200 over verified TLS."""
        deadline = time.monotonic() + timeout
        last = "nothing yet"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"skiff server exited with {code} before it was ready:\n{self.log_tail()}")
            if self.kubeconfig.exists():
                try:
                    self._load_kubeconfig()
                    resp = self.request("GET", "/readyz", auth=False, timeout=2)
                    if resp.status == 200:
                        return
                    last = str(resp)
                except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError, http.client.HTTPException) as e:
                    last = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"skiff server not ready after {timeout}s (last: {last}):\n{self.log_tail()}")
            time.sleep(0.05)

    def _load_kubeconfig(self) -> None:
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.token = config["users"][0]["user"]["token"]
        self.ca_pem = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.load_verify_locations(cadata=self.ca_pem.decode())
        self._ssl = ctx

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a grace period. Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def log_text(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_tail(self, lines: int = LOG_TAIL_LINES, offset: int = 0) -> str:
        return "\n".join(self.log_text(offset).splitlines()[-lines:])

    # -- raw HTTPS -------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                headers: dict[str, str] | None = None, auth: bool = True, timeout: float = 30) -> Response:
        """One HTTPS request with the admin token. ``body`` may be bytes, str or JSON-able."""
        if self._ssl is None:
            self._load_kubeconfig()
        hdrs = {"Accept": "application/json"}
        if auth:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = None
        if body is not None:
            if isinstance(body, bytes):
                data = body
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = json.dumps(body).encode()
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ssl, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any, content_type: str = "application/merge-patch+json", **kw: Any) -> Response:
        return self.request("PATCH", path, body, content_type=content_type, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)


def start_server(data_dir: Path, port: int | None = None, extra_args: tuple[str, ...] = (),
                 ready_timeout: float = READY_TIMEOUT, scheduler: bool = False) -> ApiServer:
    """Spawn ``skiff server`` on 127.0.0.1 and wait until it is ready. The same
    ``data_dir`` may be passed again to restart a server on its old data. The embedded
    scheduler is off unless asked for: tests bind pods themselves, or expect them Pending."""
    if not scheduler:
        extra_args = (*extra_args, "--disable-scheduler")
    if not any(str(a).startswith("--cluster-dns-port") for a in extra_args):
        extra_args = (*extra_args, "--cluster-dns-port", "0")  # port 53 on 127.0.0.1 is not the tests' to take
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or unused_port()
    log_path = data_dir / "server.log"
    argv = [*skiff_command(), "server", "--data-dir", str(data_dir), "--port", str(port),
            "--bind-address", "127.0.0.1", *extra_args]
    with open(log_path, "ab") as log:
        log.write(f"\n=== {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = ApiServer(data_dir=data_dir, port=port, proc=proc, log_path=log_path)
    _LIVE.append(server)
    try:
        server.wait_ready(ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server


# Servers started by fixtures, so a failing test's report can show their logs.
_LIVE: list[ApiServer] = []
_LOG_OFFSETS = pytest.StashKey[dict[int, int]]()


class ServerFactory:
    """``start()`` servers on demand; the fixture stops all of them afterwards."""

    def __init__(self, base: Path):
        self._base = base
        self.servers: list[ApiServer] = []

    def start(self, data_dir: Path | None = None, port: int | None = None,
              extra_args: tuple[str, ...] = ()) -> ApiServer:
        if data_dir is None:
            data_dir = self._base / f"server-{len(self.servers)}"
        server = start_server(data_dir, port, extra_args)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One ``skiff server`` for the session. Write only inside your own ``namespace``.
    Only the namespace controller runs in it: the API's own behaviour is under test,
    and other controllers would write to the objects the tests write. Controller tests
    start their own servers (``server_factory``) with the controllers they test."""
    server = start_server(tmp_path_factory.mktemp("skiff-server"), extra_args=("--controllers", "namespace"))
    try:
        yield server
    finally:
        code = server.proc.poll()
        if code is not None:
            print(f"\nskiff server had exited early with {code}; log tail:\n{server.log_tail()}")
        server.stop()
        _LIVE.remove(server)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
        for server in factory.servers:
            if server in _LIVE:
                _LIVE.remove(server)


def _dns_label(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-")


@pytest.fixture
def namespace(api_server: ApiServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards."""
    name = f"{_dns_label(request.node.name, 48) or 't'}-{uuid.uuid4().hex[:8]}"
    resp = api_server.post("/api/v1/namespaces",
                           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert resp.status == 201, f"creating namespace {name}: {resp}"
    yield name
    api_server.delete(f"/api/v1/namespaces/{name}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    offsets = item.stash.setdefault(_LOG_OFFSETS, {})
    if report.when == "setup":
        # Fixtures are up: remember where each log ends, to show only this test's part.
        for server in _LIVE:
            offsets.setdefault(id(server), server.log_size())
    if report.failed:
        for server in _LIVE:
            tail = server.log_tail(offset=offsets.get(id(server), 0))
            if tail.strip():
                report.sections.append((f"skiff server log ({server.data_dir.name}, port {server.port})", tail))


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    """``wait_until(predicate, timeout, what)`` for tests, which cannot import conftest."""
    return wait_until
