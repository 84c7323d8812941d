"""Real clients against a real server: the pinned kubectl binaries from ``.tools/``.

``kubectl120`` and ``kubectl135`` are one version each; ``kubectl`` is parametrized
over both, so a test written once runs against the oldest and the newest client.
Each instance gets a fresh ``--cache-dir`` (kubectl caches discovery on disk) and a
fresh HOME, so nothing leaks between tests or from the developer's ~/.kube.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import ApiServer

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = REPO_ROOT / ".tools"
KUBECTL_VERSIONS = ("1.20", "1.35")
DEFAULT_TIMEOUT = 60.0


class Background:
    """A kubectl left running (``get -w``, ``rollout status``), its output read by
    threads so tests can wait for a line with a deadline instead of sleeping."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, env=env)
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream: IO[str], sink: list[str], notify: bool) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))
            if notify:
                self._new.put(line)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = DEFAULT_TIMEOUT,
                      what: str = "a matching line") -> str:
        """Return the first stdout line (already seen or new) that matches."""
        for line in list(self.stdout_lines):
            if predicate(line):
                return line
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} from {self.describe()}")
            try:
                line = self._new.get(timeout=min(remaining, 0.5)).rstrip("\n")
            except queue.Empty:
                if self.proc.poll() is not None and self._new.empty():
                    for t in self._threads:
                        t.join(1)
                    if self._new.empty():
                        raise AssertionError(f"kubectl exited before {what}: {self.describe()}") from None
                continue
            if predicate(line):
                return line

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s: {self.describe()}") from None
        for t in self._threads:
            t.join(5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def describe(self) -> str:
        return (f"{' '.join(self.argv)}\n  exit: {self.proc.poll()}\n  stdout:\n    "
                + "\n    ".join(self.stdout_lines) + "\n  stderr:\n    " + "\n    ".join(self.stderr_lines[-40:]))


class Kubectl:
    """Runs one pinned kubectl binary against the test server."""

    def __init__(self, version: str, binary: Path, kubeconfig: Path, workdir: Path):
        self.version = version
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.cache_dir = workdir / "cache"
        self.home = workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HOME": str(self.home), "KUBECONFIG": str(kubeconfig)}
        self.background: list[Background] = []

    def argv(self, *args: str) -> list[str]:
        return [str(self.binary), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir), *args]

    def __call__(self, *args: str, input: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), input=input, capture_output=True, text=True, timeout=timeout,
                              env=self.env, stdin=None if input is not None else subprocess.DEVNULL)

    def ok(self, *args: str, input: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Run, assert exit 0 (showing everything kubectl said if not), return stdout."""
        result = self(*args, input=input, timeout=timeout)
        assert result.returncode == 0, (
            f"kubectl {self.version} {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result.stdout

    def start(self, *args: str) -> Background:
        bg = Background(self.argv(*args), self.env)
        self.background.append(bg)
        return bg

    def stop_all(self) -> None:
        for bg in self.background:
            bg.stop()


def _kubectl(version: str, kubeconfig: Path, workdir: Path) -> Iterator[Kubectl]:
    binary = TOOLS / f"kubectl-{version}"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        reason = f"{binary} is missing: scripts/setup.sh fetches kubectl {version}"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI runs setup.sh, so a missing client is a set-up bug there
        pytest.skip(reason)
    kubectl = Kubectl(version, binary, kubeconfig, workdir)
    try:
        yield kubectl
    finally:
        kubectl.stop_all()


@pytest.fixture
def kubectl120(api_server: ApiServer, tmp_path: Path) -> Iterator[Kubectl]:
    yield from _kubectl("1.20", api_server.kubeconfig, tmp_path / "kubectl-1.20")


@pytest.fixture
def kubectl135(api_server: ApiServer, tmp_path: Path) -> Iterator[Kubectl]:
    yield from _kubectl("1.35", api_server.kubeconfig, tmp_path / "kubectl-1.35")


@pytest.fixture(params=KUBECTL_VERSIONS, ids=[f"kubectl-{v}" for v in KUBECTL_VERSIONS])
def kubectl(request: pytest.FixtureRequest) -> Kubectl:
    """Each of the pinned kubectl versions in turn."""
    fixture_name = "kubectl" + request.param.replace(".", "")
    return request.getfixturevalue(fixture_name)  # type: ignore[no-any-return]
