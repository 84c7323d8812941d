"""Real etcd clusters for tests: N members of Debian's etcd on free ports of 127.0.0.1,
their data under one directory, optionally with TLS client certificates."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.storage.etcd_member import EtcdMember, EtcdServerTls, etcd_binary
from control_plane.storage.etcd_pki import ensure_etcd_pki

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on right now (bound at once, so distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class ClientTls:
    """What a client needs to reach the cluster: the CA and a client certificate."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class EtcdCluster:
    def __init__(self, base: Path, size: int = 1, *, tls: bool = False):
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.size = size
        self.tls = tls
        self.members: list[EtcdMember] = []
        self.procs: list[subprocess.Popen[bytes] | None] = []
        self.server_tls: EtcdServerTls | None = None
        self.client_tls: ClientTls | None = None
        if tls:
            pki = ensure_etcd_pki(base / "pki", ["127.0.0.1", "localhost"])
            self.server_tls = EtcdServerTls(pki.server_cert, pki.server_key, pki.ca_cert)
            self.client_tls = ClientTls(pki.ca_cert, pki.client_cert, pki.client_key)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoints_flag(self) -> str:
        return ",".join(self.endpoints)

    def log_path(self, index: int) -> Path:
        return self.base / f"etcd-{index}.log"

    # ---- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> EtcdCluster:
        """Start every member on fresh ports and wait for a quorum read through each.
        A member that exits at once (a port taken meanwhile) makes a new attempt."""
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        last = ""
        for _attempt in range(3):
            scheme = "https" if self.tls else "http"
            ports = free_ports(2 * self.size)
            run = os.urandom(3).hex()
            self.members = [
                EtcdMember(f"m{i}", self.base / f"member-{i}-{run}",
                           f"{scheme}://127.0.0.1:{ports[2 * i]}", f"http://127.0.0.1:{ports[2 * i + 1]}")
                for i in range(self.size)
            ]
            self.procs = [None] * self.size
            for i in range(self.size):
                self.restart(i)
            try:
                self.wait_ready(timeout=timeout)
                return self
            except RuntimeError as exc:
                last = str(exc)
                exited = any(p is not None and p.poll() is not None for p in self.procs)
                self.stop()
                if not exited:
                    break
        raise RuntimeError(f"etcd cluster of {self.size} did not start: {last}")

    def restart(self, index: int) -> None:
        """Start member ``index`` (again, on its data dir) unless it runs."""
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            return
        member = self.members[index]
        binary = etcd_binary() or "etcd"
        argv = member.argv(self.members, tls=self.server_tls, binary=binary, cluster_token=f"t-{self.base.name}")
        with open(self.log_path(index), "ab") as log:
            log.write(f"\n=== {' '.join(argv)}\n".encode())
            log.flush()
            self.procs[index] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill(self, index: int) -> None:
        """kill -9, as a crash would; reaped here (no zombie left)."""
        proc = self.procs[index]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc is not None:
            proc.wait(STOP_TIMEOUT)

    def stop(self, graceful: bool = False) -> None:
        """Stop every member (SIGKILL; ``graceful``: SIGTERM first, SIGKILL after a grace
        period). Idempotent."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        for index, proc in enumerate(self.procs):
            if proc is None:
                continue
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill(index)

    def alive(self, index: int) -> bool:
        proc = self.procs[index]
        return proc is not None and proc.poll() is None

    # ---- talking to members ------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | None:
        if self.client_tls is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.client_tls.ca_file))
        ctx.load_cert_chain(str(self.client_tls.cert_file), str(self.client_tls.key_file))
        return ctx

    def call(self, index: int, path: str, body: dict[str, Any], timeout: float = 5.0) -> tuple[int, Any]:
        """POST to member ``index``'s JSON gateway; (status, JSON reply)."""
        url = self.members[index].client_url
        host, port = url.split("://")[1].split(":")
        conn: http.client.HTTPConnection
        if self.tls:
            conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=self._ssl())
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request("POST", f"/v3/{path}", json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def ready(self, index: int) -> bool:
        """A quorum (linearizable) read through member ``index`` succeeds."""
        try:
            status, _ = self.call(index, "kv/range", {"key": "AA=="}, timeout=2)
        except (OSError, ValueError, http.client.HTTPException):
            return False
        return status == 200

    def wait_ready(self, timeout: float = START_TIMEOUT, members: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(range(self.size)) if members is None else members
        while waiting:
            for index in list(waiting):
                proc = self.procs[index]
                if proc is None or proc.poll() is not None:
                    raise RuntimeError(f"etcd member {index} exited:\n{self.log_tail(index)}")
                if self.ready(index):
                    waiting.remove(index)
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"etcd members {waiting} not ready after {timeout}s:\n"
                                   f"{self.log_tail(waiting[0])}")
            if waiting:
                time.sleep(0.05)

    def leader(self) -> int:
        """Index of the member that leads now (asked of the live members)."""
        ids: dict[str, int] = {}
        leader_id = ""
        for index in range(self.size):
            if not self.alive(index):
                continue
            try:
                status, reply = self.call(index, "maintenance/status", {}, timeout=2)
            except (OSError, ValueError, http.client.HTTPException):
                continue
            if status != 200:
                continue
            ids[reply["header"]["member_id"]] = index
            leader_id = reply.get("leader", leader_id)
        if leader_id not in ids:
            raise RuntimeError("no live member knows a live leader")
        return ids[leader_id]

    def member_id(self, index: int) -> str:
        status, reply = self.call(index, "maintenance/status", {})
        assert status == 200, reply
        return str(reply["header"]["member_id"])

    def move_leader(self, index: int, timeout: float = 30.0) -> None:
        """Make member ``index`` the leader (etcd's MoveLeader, asked of the leader)."""
        deadline = time.monotonic() + timeout
        target = self.member_id(index)
        while (leader := self.leader()) != index:
            status, reply = self.call(leader, "maintenance/transfer-leadership", {"targetID": target})
            if status != 200 and time.monotonic() > deadline:
                raise RuntimeError(f"moving the leader to member {index} failed: {reply}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"member {index} did not become the leader in {timeout}s")
            time.sleep(0.1)

    def log_tail(self, index: int, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path(index).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
