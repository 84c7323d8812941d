"""The lab's control plane: ``skiff server`` on the host, bound to the lab bridge address,
and a small synchronous HTTPS client for what the lab itself asks of it (readiness, nodes, leases).

Two modes (``skiff lab up --control-plane``): ``single``, one ``skiff server`` process that runs
the scheduler and the controllers in-process, as k3s does; ``split``, a server that only serves
the API (``--disable-scheduler --controllers=``) plus ``skiff scheduler`` and ``skiff
controller-manager`` as processes of their own, leader-elected on short lab timings, so that
killing one of them costs seconds, not the 15 s of Kubernetes' default lease.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from node_agent.lab.layout import API_PORT, LabError, LabLayout
from node_agent.lab.processes import is_alive, log_tail, process_of, spawn_detached, stop_processes
from node_agent.lab.state import ProcessRecord

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def skiff_command() -> list[str]:
    """The ``skiff`` console script next to this interpreter (the venv's), else on PATH."""
    script = Path(sys.executable).parent / "skiff"
    if script.exists():
        return [str(script)]
    found = shutil.which("skiff")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from skiff.cli.main import main; sys.exit(main())"]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


# Short node-failure timings, so that chaos in the lab shows within seconds (Kubernetes'
# defaults: 40 s grace period, 300 s tolerations).
LAB_TIMINGS = ("--node-monitor-grace-period", "10s", "--node-monitor-period", "1s",
               "--default-not-ready-toleration-seconds", "5",
               "--default-unreachable-toleration-seconds", "5")


# Leader election of the split control plane's scheduler and controller manager (both take the
# same flags; Kubernetes' defaults: 15 s lease, 10 s renew deadline, 2 s retry period). A replacement
# for a process killed -9 waits out the lease of the dead one: here about 4-6 s.
LAB_LEADER_ELECTION = ("--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s",
                       "--leader-elect-retry-period", "1s")
LEASE_NAMESPACE = "kube-system"
# What makes `skiff server` serve the API only: no in-process scheduler, an empty controller list.
SPLIT_SERVER_FLAGS = ("--disable-scheduler", "--controllers=")

SINGLE = "single"
SPLIT = "split"


@dataclass(frozen=True)
class Component:
    """A control-plane process of its own in split mode."""

    command: str  # the `skiff` subcommand, also the log file's name
    attr: str  # its ProcessRecord's field in LabState
    lease: str  # the Lease it takes in kube-system
    flags: tuple[str, ...] = ()


SCHEDULER = Component("scheduler", "scheduler", "kube-scheduler")
CONTROLLER_MANAGER = Component("controller-manager", "controller_manager", "kube-controller-manager", LAB_TIMINGS)
COMPONENTS = (SCHEDULER, CONTROLLER_MANAGER)


def server_argv(layout: LabLayout, mode: str = SINGLE) -> list[str]:
    argv = [*skiff_command(), "server", "--data-dir", str(layout.server_dir),
            "--bind-address", str(layout.bridge_ip.ip), "--port", str(API_PORT), *LAB_TIMINGS]
    if mode == SPLIT:
        argv += SPLIT_SERVER_FLAGS
    return argv


def server_mode(record: ProcessRecord | None) -> str | None:
    """The mode a recorded server was started in (None: no record, or one without its command line)."""
    if record is None or not record.argv:
        return None
    return SPLIT if "--disable-scheduler" in record.argv else SINGLE


def start_server(layout: LabLayout, mode: str = SINGLE) -> ProcessRecord:
    layout.server_dir.mkdir(parents=True, exist_ok=True)
    return spawn_detached(server_argv(layout, mode), layout.state_dir / "server.log", env=child_env(),
                          cwd=layout.state_dir)


def component_argv(layout: LabLayout, component: Component) -> list[str]:
    # The server's own admin kubeconfig: it names the state dir, so teardown's sweep finds the process.
    return [*skiff_command(), component.command, "--kubeconfig", str(server_kubeconfig(layout)),
            *LAB_LEADER_ELECTION, *component.flags]


def component_log(layout: LabLayout, component: Component) -> Path:
    return layout.state_dir / f"{component.command}.log"


def start_component(layout: LabLayout, component: Component) -> ProcessRecord:
    return spawn_detached(component_argv(layout, component), component_log(layout, component), env=child_env(),
                          cwd=layout.state_dir)


def stop_server(record: ProcessRecord | None, timeout: float = STOP_TIMEOUT) -> None:
    proc = process_of(record)
    if proc is not None:
        stop_processes([proc], timeout)


def stop_component(record: ProcessRecord | None, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (the component releases its Lease), then SIGKILL after ``timeout``."""
    stop_server(record, timeout)


@dataclass
class KubeApi:
    """Just enough of a client for the lab: GET/POST JSON with the admin token over verified TLS."""

    host: str
    port: int
    token: str
    context: ssl.SSLContext

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeApi:
        config = yaml.safe_load(path.read_text())
        cluster = config["clusters"][0]["cluster"]
        url = urlsplit(cluster["server"])
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        return cls(url.hostname or "127.0.0.1", url.port or 443, config["users"][0]["user"]["token"], ctx)

    def request(self, method: str, path: str, body: Any = None, auth: bool = True,
                timeout: float = 10.0) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")

    def ready(self) -> bool:
        try:
            status, _ = self.request("GET", "/readyz", auth=False, timeout=2.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def nodes(self) -> list[dict[str, Any]]:
        status, body = self.request("GET", "/api/v1/nodes")
        if status != 200:
            raise LabError(f"listing nodes failed: HTTP {status}: {body}")
        return list(body.get("items", []))

    def lease_holder(self, name: str, namespace: str = LEASE_NAMESPACE) -> str:
        """The holderIdentity of a Lease ("" when it is free or does not exist)."""
        status, body = self.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
        if status == 404:
            return ""
        if status != 200:
            raise LabError(f"reading lease {namespace}/{name} failed: HTTP {status}: {body}")
        return str((body.get("spec") or {}).get("holderIdentity") or "")


def node_ready(node: dict[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def server_kubeconfig(layout: LabLayout) -> Path:
    return layout.server_dir / "admin.kubeconfig"


def api_for(layout: LabLayout) -> KubeApi | None:
    """A client from the server's kubeconfig, or None while the server has not written it."""
    path = server_kubeconfig(layout)
    if not path.exists():
        return None
    try:
        return KubeApi.from_kubeconfig(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError, yaml.YAMLError, ssl.SSLError):
        return None  # written but not complete yet


def wait_ready(layout: LabLayout, record: ProcessRecord, timeout: float = START_TIMEOUT) -> KubeApi:
    """Poll until the kubeconfig exists and ``/readyz`` answers 200; fail at once if the server exits."""
    deadline = time.monotonic() + timeout
    while True:
        api = api_for(layout)
        if api is not None and api.ready():
            return api
        if not is_alive(record):
            raise LabError(f"skiff server (pid {record.pid}) exited before it was ready; "
                           f"last lines of {record.log}:\n{log_tail(record.log)}")
        if time.monotonic() > deadline:
            raise LabError(f"skiff server (pid {record.pid}) not ready within {timeout:.0f}s; "
                           f"last lines of {record.log}:\n{log_tail(record.log)}")
        time.sleep(0.1)


def ensure_user_kubeconfig(layout: LabLayout) -> Path:
    """Copy the server's admin kubeconfig (server URL on the bridge address) to ``<state>/kubeconfig``."""
    source = server_kubeconfig(layout)
    data = source.read_bytes()
    target = layout.kubeconfig
    if not target.exists() or target.read_bytes() != data:
        tmp = target.with_name(".kubeconfig.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    return target


def wait_leaders(api: KubeApi, started: dict[Component, tuple[ProcessRecord, str]],
                 timeout: float = START_TIMEOUT) -> None:
    """Poll until each started component holds its Lease under a new identity (not the holder
    seen before it started: that one is dead); fail at once if one of them exits."""
    deadline = time.monotonic() + timeout
    pending = dict(started)
    while pending:
        for component, (record, before) in list(pending.items()):
            try:
                holder = api.lease_holder(component.lease)
            except (OSError, http.client.HTTPException, LabError):
                holder = ""
            if holder and holder != before:
                del pending[component]
            elif not is_alive(record):
                raise LabError(f"skiff {component.command} (pid {record.pid}) exited; "
                               f"last lines of {record.log}:\n{log_tail(record.log)}")
        if pending and time.monotonic() > deadline:
            names = ", ".join(f"{LEASE_NAMESPACE}/{c.lease}" for c in pending)
            raise LabError(f"no new holder of {names} within {timeout:.0f}s")
        if pending:
            time.sleep(0.2)
