"""The lab's control plane: ``skiff server`` on the host, bound to the lab bridge address,
and a small synchronous HTTPS client for what the lab itself asks of it (readiness, nodes)."""

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
LAB_TIMINGS = ("--node-monitor-grace-period", "10s", "--default-not-ready-toleration-seconds", "5",
               "--default-unreachable-toleration-seconds", "5")


def server_argv(layout: LabLayout) -> list[str]:
    return [*skiff_command(), "server", "--data-dir", str(layout.server_dir),
            "--bind-address", str(layout.bridge_ip.ip), "--port", str(API_PORT), *LAB_TIMINGS]


def start_server(layout: LabLayout) -> ProcessRecord:
    layout.server_dir.mkdir(parents=True, exist_ok=True)
    return spawn_detached(server_argv(layout), layout.state_dir / "server.log", env=child_env(),
                          cwd=layout.state_dir)


def stop_server(record: ProcessRecord | None, timeout: float = STOP_TIMEOUT) -> None:
    proc = process_of(record)
    if proc is not None:
        stop_processes([proc], timeout)


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
