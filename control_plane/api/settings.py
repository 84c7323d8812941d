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
    extra_sans: list[str] = field(default_factory=list)
    # DefaultTolerationSeconds admission (kube-apiserver's flags of the same names)
    default_not_ready_toleration_seconds: int = 300
    default_unreachable_toleration_seconds: int = 300

    @property
    def advertise_url_host(self) -> str:
        return f"{self.advertise_address}:{self.secure_port}"

    @property
    def kubernetes_service_ip(self) -> str:
        return str(self.service_cidr.network_address + 1)
