"""How to run one member of an etcd cluster (Debian's ``etcd-server``, etcd 3.4): the
command line from a member's name, data dir and URLs. Used by the tests' local
clusters and meant for anything else that starts etcd for Skiff (a lab, a host)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EtcdServerTls:
    """etcd's client-facing TLS: its serving certificate, and the CA client certificates
    must be signed by (``--client-cert-auth``: no certificate, no access)."""

    cert_file: Path
    key_file: Path
    trusted_ca_file: Path
    client_cert_auth: bool = True


@dataclass(frozen=True)
class EtcdMember:
    name: str
    data_dir: Path
    client_url: str  # http(s)://address:port that clients use
    peer_url: str  # http://address:port that the other members use

    def argv(self, cluster: Sequence[EtcdMember], *, tls: EtcdServerTls | None = None, binary: str = "etcd",
             cluster_token: str = "skiff-etcd", log_level: str = "info") -> list[str]:
        """The ``etcd`` command line. On a restart the data dir already holds the
        membership and the ``--initial-*`` flags are ignored, so one command line
        serves both the first start and every later one."""
        argv = [
            binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster(cluster),
            "--initial-cluster-state", "new",
            "--initial-cluster-token", cluster_token,
            "--logger", "zap",
            "--log-outputs", "stderr",
            "--log-level", log_level,
        ]
        if tls is not None:
            argv += ["--cert-file", str(tls.cert_file), "--key-file", str(tls.key_file),
                     "--trusted-ca-file", str(tls.trusted_ca_file)]
            if tls.client_cert_auth:
                argv.append("--client-cert-auth")
        return argv


def initial_cluster(members: Sequence[EtcdMember]) -> str:
    return ",".join(f"{m.name}={m.peer_url}" for m in members)


def etcd_binary() -> str | None:
    """The etcd server on PATH (Debian: ``apt-get install etcd-server``), or None."""
    return shutil.which("etcd")
