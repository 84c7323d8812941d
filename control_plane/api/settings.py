"""API server settings, with kube-apiserver's names and defaults."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ApiServerSettings:
    data_dir: Path
    bind_address: str = "0.0.0.0"
    secure_port: int = 6443
    advertise_address: str = "127.0.0.1"
    service_cidr: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network("10.96.0.0/12"))
    node_port_range: tuple[int, int] = (30000, 32767)
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    compaction_window: int = 100_000  # revisions of history kept for watches
    # The store: "sqlite" (embedded, DATA_DIR/state.db) or "etcd" (kube-apiserver's --etcd-* flags).
    storage: str = "sqlite"
    etcd_servers: list[str] = field(default_factory=list)  # http(s)://host:port of the members
    etcd_cafile: str | None = None  # CA of etcd's serving certificates
    etcd_certfile: str | None = None  # client certificate and key, for etcd's --client-cert-auth
    etcd_keyfile: str | None = None
    etcd_prefix: str = ""  # prepended to every key (keys are /registry/<group>/<resource>/...)
    extra_sans: list[str] = field(default_factory=list)
    # DefaultTolerationSeconds admission (kube-apiserver's flags of the same names)
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300
    # Cluster DNS (control_plane/dns): served on bind_address:cluster_dns_port (0: not at all),
    # published as the kube-dns Service at cluster_dns (kubelet's --cluster-dns), for cluster_domain.
    cluster_dns_port: int = 53
    cluster_dns: str = "10.96.0.10"
    cluster_domain: str = "cluster.local"

    @property
    def advertise_url_host(self) -> str:
        return f"{self.advertise_address}:{self.secure_port}"

    @property
    def kubernetes_service_ip(self) -> str:
        return str(self.service_cidr.network_address + 1)

    def validate(self) -> None:
        """Raise ValueError naming the flag whose value cannot work."""
        self.validate_storage()
        if not 0 <= self.cluster_dns_port <= 65535:
            raise ValueError(f"--cluster-dns-port {self.cluster_dns_port}: not a port number (0 disables DNS)")
        if self.cluster_dns_port:
            try:
                ip = ipaddress.ip_address(self.cluster_dns)
            except ValueError:
                raise ValueError(f"--cluster-dns {self.cluster_dns!r}: not an IP address") from None
            if ip not in self.service_cidr or str(ip) in (self.kubernetes_service_ip,
                                                           str(self.service_cidr.network_address),
                                                           str(self.service_cidr.broadcast_address)):
                raise ValueError(f"--cluster-dns {ip}: must be a free address of the service range "
                                 f"{self.service_cidr} (not the kubernetes Service's {self.kubernetes_service_ip})")
        labels = self.cluster_domain.strip(".").split(".")
        if not all(labels) or any(len(label) > 63 for label in labels):
            raise ValueError(f"--cluster-domain {self.cluster_domain!r}: not a domain name")

    def validate_storage(self) -> None:
        if self.storage not in ("sqlite", "etcd"):
            raise ValueError(f"--storage {self.storage!r}: must be sqlite or etcd")
        if self.storage != "etcd":
            return
        if not self.etcd_servers:
            raise ValueError("--storage etcd needs --etcd-servers URL[,URL...]")
        for url in self.etcd_servers:
            scheme, sep, rest = url.partition("://")
            if scheme not in ("http", "https") or not sep or not rest.strip("/"):
                raise ValueError(f"--etcd-servers {url!r}: not an http:// or https:// URL")
        if bool(self.etcd_certfile) != bool(self.etcd_keyfile):
            raise ValueError("--etcd-certfile and --etcd-keyfile go together")
