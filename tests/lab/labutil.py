"""Helpers for lab tests: a lab for a test module, the pinned kubectl clients against it, the API
through the lab's small synchronous client, waiting on conditions, and recording watch events.

A module brings its lab up with ``running_lab("w")`` in a module-scoped fixture: a random name
(the prefix + 4 characters), a state dir under a fresh /tmp directory, and ``skiff lab down`` in a
``finally`` even when a test fails. ``LAB_SKIPS`` are the skip markers for a machine that cannot
run a lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import secrets
import shutil
import string
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest

from node_agent.lab.controlplane import KubeApi, node_ready, skiff_command
from skiff.client import ApiClient, WatchEvent, load_kubeconfig

REPO = Path(__file__).resolve().parents[2]
KUBECTL_VERSIONS = ("1.20", "1.35")
UP_TIMEOUT = 150.0
DOWN_TIMEOUT = 90.0
READY_TIMEOUT = 60.0
POLL = 0.2

T = TypeVar("T")
Obj = dict[str, Any]


def _agent_missing() -> str | None:
    try:
        importlib.import_module("node_agent.main")
    except ImportError as exc:
        return f"skiff agent is not available: {exc}"
    return None


def _kubectl_missing() -> str | None:
    missing = [v for v in KUBECTL_VERSIONS if not os.access(REPO / ".tools" / f"kubectl-{v}", os.X_OK)]
    return f"the pinned kubectl {', '.join(missing)} missing from .tools/ (run scripts/setup.sh)" if missing else None


LAB_SKIPS = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, links, iptables, cgroups)"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("ip", "iptables", "nsenter", "dockerd", "gcc")),
                       reason="the lab needs ip, iptables, nsenter, dockerd and gcc"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="the lab needs busybox-static"),
    pytest.mark.skipif(_agent_missing() is not None, reason=str(_agent_missing())),
]
KUBECTL_SKIP = pytest.mark.skipif(_kubectl_missing() is not None, reason=str(_kubectl_missing()))


def wait_until(check: Callable[[], T | None], timeout: float, what: Callable[[], str], poll: float = POLL) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what()`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f}s: {what()}")
        time.sleep(poll)


class Stopwatch:
    """Prints how long each step of a test took (run pytest with -s to see them)."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.start = self.last = time.monotonic()

    def lap(self, step: str) -> float:
        now = time.monotonic()
        took = now - self.last
        self.last = now
        print(f"[{self.test}] {step}: {took:.1f}s (total {now - self.start:.1f}s)")
        return took


# -- the lab -------------------------------------------------------------------------------------


@dataclass
class Lab:
    name: str
    state_dir: Path
    nodes: int = 3

    def skiff(self, *args: str, timeout: float = UP_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*skiff_command(), "lab", *args, "--name", self.name, "--state-dir", str(self.state_dir)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if check:
            assert proc.returncode == 0, f"skiff lab {' '.join(args)} exited {proc.returncode}:\n" \
                                         f"{proc.stdout}{proc.stderr}"
        return proc

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def node_name(self, i: int) -> str:
        return f"{self.name}-node-{i}"

    def node_index(self, node_name: str) -> int:
        return int(node_name.rsplit("-", 1)[1])

    def docker_host(self, i: int) -> str:
        return f"unix://{self.state_dir}/{self.node_name(i)}/docker.sock"

    def api(self) -> KubeApi:
        return KubeApi.from_kubeconfig(self.kubeconfig)

    def agent_log(self, i: int, lines: int = 30) -> str:
        return _tail(self.state_dir / self.node_name(i) / "agent.log", lines)

    def server_log(self, lines: int = 60) -> str:
        return _tail(self.state_dir / "server.log", lines)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def running_lab(prefix: str, nodes: int = 3) -> Iterator[Lab]:
    """A lab of ``nodes`` Ready nodes, taken down afterwards whatever happened."""
    root = Path(tempfile.mkdtemp(prefix=f"sk{prefix}-", dir="/tmp"))
    name = prefix + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    lab = Lab(name, root / name, nodes)
    try:
        start = time.monotonic()
        lab.skiff("up", "--nodes", str(nodes), "--wait", str(READY_TIMEOUT))
        api = lab.api()
        names = {lab.node_name(i) for i in range(1, nodes + 1)}
        wait_until(lambda: names <= {n["metadata"]["name"] for n in api.nodes() if node_ready(n)}, READY_TIMEOUT,
                   lambda: f"nodes not Ready: {[n['metadata']['name'] for n in api.nodes() if not node_ready(n)]}")
        print(f"[lab {name}] up with {nodes} Ready nodes in {time.monotonic() - start:.1f}s")
        yield lab
    finally:
        try:
            lab.skiff("down", timeout=DOWN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(root, ignore_errors=True)


# -- kubectl -------------------------------------------------------------------------------------


@dataclass
class Kubectl:
    """One pinned kubectl against the lab, with a discovery cache of its own."""

    version: str
    kubeconfig: Path
    cache_dir: Path

    @property
    def binary(self) -> Path:
        return REPO / ".tools" / f"kubectl-{self.version}"

    def argv(self, *args: str) -> list[str]:
        return [str(self.binary), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir), *args]

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), input=stdin, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"kubectl-{self.version} {' '.join(args)} exited {proc.returncode}:\n" \
                                         f"{proc.stdout}{proc.stderr}"
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def apply(self, manifest: str | list[Obj] | Obj, *extra: str) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": manifest} if isinstance(manifest, list) else manifest)
        return self.run("apply", "-f", "-", *extra, stdin=text)


def kubectls(lab: Lab, workdir: Path) -> dict[str, Kubectl]:
    return {v: Kubectl(v, lab.kubeconfig, workdir / f"kubectl-{v}-cache") for v in KUBECTL_VERSIONS}


# -- the API -------------------------------------------------------------------------------------


def api_get(api: KubeApi, path: str, **params: str) -> Obj | None:
    """The object at ``path``, or None for a 404."""
    status, body = api.request("GET", path + ("?" + urlencode(params) if params else ""))
    if status == 404:
        return None
    assert status == 200, f"GET {path}: HTTP {status}: {body}"
    return dict(body)


def api_items(api: KubeApi, path: str, **params: str) -> list[Obj]:
    body = api_get(api, path, **params)
    assert body is not None, f"GET {path}: 404"
    return list(body.get("items") or [])


def api_write(api: KubeApi, method: str, path: str, body: Any = None) -> Obj:
    status, reply = api.request(method, path, body)
    assert status in (200, 201, 202), f"{method} {path}: HTTP {status}: {reply}"
    return dict(reply or {})


def api_delete(api: KubeApi, path: str) -> None:
    status, reply = api.request("DELETE", path, {"propagationPolicy": "Background"})
    assert status in (200, 202, 404), f"DELETE {path}: HTTP {status}: {reply}"


def condition(obj: Obj, kind: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def is_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def phase(pod: Obj) -> str | None:
    return (pod.get("status") or {}).get("phase")


def is_active(pod: Obj) -> bool:
    """controller.FilterActivePods: not being deleted and not finished."""
    return not pod["metadata"].get("deletionTimestamp") and phase(pod) not in ("Succeeded", "Failed")


def brief(pod: Obj) -> str:
    status = pod.get("status") or {}
    return (f"{pod['metadata']['name']}@{pod['spec'].get('nodeName') or '-'} {status.get('phase')}"
            f"{' ready' if is_ready(pod) else ''}{' terminating' if pod['metadata'].get('deletionTimestamp') else ''}")


# -- watching ------------------------------------------------------------------------------------


@dataclass
class Recorded:
    at: float  # time.monotonic()
    type: str
    obj: Obj


@dataclass
class WatchRecorder:
    """Lists a resource, then watches it from the list's resourceVersion in a thread of its own,
    keeping every event, so that a test can replay each state the API server showed.

    ``initial`` is the list; ``events`` the changes after it, in the order the server sent them."""

    kubeconfig: Path
    resource: str
    namespace: str
    label_selector: str | None = None
    field_selector: str | None = None
    initial: list[Obj] = field(default_factory=list)
    events: list[Recorded] = field(default_factory=list)
    error: BaseException | None = None
    _listed: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task[None] | None = None

    def __enter__(self) -> WatchRecorder:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.resource}", daemon=True)
        self._thread.start()
        if not self._listed.wait(30):
            raise TimeoutError(f"listing {self.resource} took over 30s")
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None and self._task is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(10)
        if self.error is not None:
            raise AssertionError(f"watching {self.resource} failed: {self.error!r}")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        try:
            async with ApiClient(load_kubeconfig(str(self.kubeconfig))) as client:
                listed = await client.list(self.resource, self.namespace, label_selector=self.label_selector,
                                           field_selector=self.field_selector)
                self.initial = list(listed.get("items") or [])
                rv = str(listed["metadata"]["resourceVersion"])
                self._listed.set()
                while not self._stop.is_set():
                    async for event in client.watch(self.resource, self.namespace, resource_version=rv,
                                                    label_selector=self.label_selector,
                                                    field_selector=self.field_selector, timeout_seconds=300):
                        rv = str(event.object.get("metadata", {}).get("resourceVersion") or rv)
                        self._record(event)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self._listed.set()

    def _record(self, event: WatchEvent) -> None:
        if event.type != "BOOKMARK":
            self.events.append(Recorded(time.monotonic(), event.type, event.object))

    def states(self) -> Iterator[tuple[Recorded | None, dict[str, Obj]]]:
        """Every state seen, as (the event that led to it, uid -> object); the list first."""
        state = {o["metadata"]["uid"]: o for o in self.initial}
        yield None, dict(state)
        for event in list(self.events):
            uid = event.obj["metadata"]["uid"]
            if event.type == "DELETED":
                state.pop(uid, None)
            else:
                state[uid] = event.obj
            yield event, dict(state)


def resource_version(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


def replay(recorders: dict[str, WatchRecorder]) -> Iterator[tuple[str, dict[str, dict[str, Obj]]]]:
    """Every state the store held, over several recorded resources at once: their events merged
    in resourceVersion order (one revision counter for the whole store, so this is the order the
    writes happened in), each yielded with the state after it (resource -> uid -> object).

    The lists must come before any of the events (start the recorders, then make changes)."""
    state = {name: {o["metadata"]["uid"]: o for o in rec.initial} for name, rec in recorders.items()}
    yield "the initial lists", {name: dict(objs) for name, objs in state.items()}
    merged = sorted(((resource_version(e.obj), name, e) for name, rec in recorders.items() for e in rec.events),
                    key=lambda t: (t[0], t[1]))
    for rv, name, event in merged:
        uid = event.obj["metadata"]["uid"]
        if event.type == "DELETED":
            state[name].pop(uid, None)
        else:
            state[name][uid] = event.obj
        yield f"{event.type} {name}/{event.obj['metadata']['name']} at {rv}", {n: dict(o) for n, o in state.items()}
