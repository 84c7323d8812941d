"""What the proxy reasons about: service ports and their endpoints, parsed from API objects.

This is the edge where Kubernetes JSON becomes typed values (STYLE habit 2), and the one
place that distrusts the API: every address is parsed as an IPv4 address and rendered in
canonical form, every port and protocol is range-checked, and anything that does not
parse is left out (with a log line) rather than passed on towards iptables. Names are
never validated away — a Service with an odd name is still proxied — but only names that
are DNS labels may be shown in rule comments (`comment_name`).

`categorize_endpoints` is kube-proxy's ``CategorizeEndpoints`` (pkg/proxy/topology.go)
without topology hints: Ready endpoints, falling back to Serving+Terminating ones,
separately for the Cluster and the Local traffic policy.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("skiff.proxy")

Obj = dict[str, Any]

LABEL_SERVICE_NAME = "kubernetes.io/service-name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
DEFAULT_STICKY_SECONDS = 10800  # Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds
MAX_STICKY_SECONDS = 86400  # the API's upper bound for timeoutSeconds

# A DNS-1123 label: what the API allows for namespaces, Service names and port names. Only
# these may be shown in a rule comment; the character set cannot end a quoted iptables word.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def is_dns_label(text: str) -> bool:
    return _DNS_LABEL.fullmatch(text) is not None


@dataclass(frozen=True, order=True)
class ServicePortName:
    """kube-proxy's ServicePortName: one port of one Service, keyed with its protocol."""

    namespace: str
    name: str
    port: str  # the port's name; "" for the single unnamed port
    protocol: str  # "TCP", "UDP" or "SCTP"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port}" if self.port else f"{self.namespace}/{self.name}"

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def comment_name(self) -> str | None:
        """``ns/name:port`` if every part is a DNS label (safe inside a quoted comment), else None."""
        if is_dns_label(self.namespace) and is_dns_label(self.name) and (not self.port or is_dns_label(self.port)):
            return str(self)
        return None


@dataclass(frozen=True)
class ServicePort:
    """One proxied port of a Service with a cluster IP (kube-proxy's ServicePort)."""

    name: ServicePortName
    cluster_ip: str  # canonical dotted IPv4
    port: int
    node_port: int = 0  # 0: none
    sticky_seconds: int = 0  # sessionAffinity ClientIP timeout; 0: no affinity
    external_policy_local: bool = False  # externalTrafficPolicy Local (only with a node port)
    internal_policy_local: bool = False  # internalTrafficPolicy Local

    @property
    def protocol(self) -> str:
        """The protocol as iptables spells it (``tcp``)."""
        return self.name.protocol.lower()

    @property
    def externally_accessible(self) -> bool:
        return self.node_port != 0

    @property
    def uses_cluster_endpoints(self) -> bool:
        # External traffic needs Cluster endpoints even under a Local policy, for the
        # short-circuit of pod -> node port traffic.
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (self.external_policy_local and self.externally_accessible)


@dataclass(frozen=True)
class Endpoint:
    """One backend address of a service port, with its EndpointSlice conditions."""

    ip: str  # canonical dotted IPv4
    port: int
    is_local: bool = False  # on this node
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    address: str = field(init=False, repr=False, compare=False)  # "ip:port", kube-proxy's Endpoint.String()

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", f"{self.ip}:{self.port}")

    def __str__(self) -> str:
        return self.address


EndpointsMap = dict[ServicePortName, tuple[Endpoint, ...]]


def parse_ipv4(value: Any) -> str | None:
    """The canonical form of an IPv4 address, or None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        return None


def _port_number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return None
    return value


def _protocol(value: Any) -> str | None:
    proto = "TCP" if value is None else value
    return proto if proto in PROTOCOLS else None


def _sticky_seconds(spec: Mapping[str, Any]) -> int:
    if spec.get("sessionAffinity") != "ClientIP":
        return 0
    config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
    seconds = config.get("timeoutSeconds", DEFAULT_STICKY_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_STICKY_SECONDS:
        return DEFAULT_STICKY_SECONDS
    return seconds


def service_ports(svc: Mapping[str, Any]) -> list[ServicePort]:
    """The proxied ports of one Service; none for headless, ExternalName or invalid ones."""
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    svc_type = spec.get("type") or "ClusterIP"
    if not namespace or not name or svc_type == "ExternalName":
        return []
    raw_ip = spec.get("clusterIP")
    if raw_ip in (None, "", "None"):
        return []
    cluster_ip = parse_ipv4(raw_ip)
    if cluster_ip is None:
        log.warning("service %r/%r: cluster IP %r is not an IPv4 address; not proxied", namespace, name, raw_ip)
        return []
    external_capable = svc_type in ("NodePort", "LoadBalancer")
    out: list[ServicePort] = []
    for raw in spec.get("ports") or []:
        if not isinstance(raw, dict):
            continue
        port, protocol = _port_number(raw.get("port")), _protocol(raw.get("protocol"))
        port_name = raw.get("name") or ""
        if port is None or protocol is None or not isinstance(port_name, str):
            log.warning("service %r/%r: port %r is invalid; not proxied", namespace, name, raw)
            continue
        node_port = (_port_number(raw.get("nodePort")) or 0) if external_capable else 0
        out.append(ServicePort(
            name=ServicePortName(namespace, name, port_name, protocol), cluster_ip=cluster_ip, port=port,
            node_port=node_port, sticky_seconds=_sticky_seconds(spec),
            external_policy_local=node_port != 0 and spec.get("externalTrafficPolicy") == "Local",
            internal_policy_local=spec.get("internalTrafficPolicy") == "Local"))
    return out


def slice_service_key(slice_: Mapping[str, Any]) -> str | None:
    """``namespace/service`` of the Service an EndpointSlice belongs to (its service-name label)."""
    meta = slice_.get("metadata") or {}
    service = (meta.get("labels") or {}).get(LABEL_SERVICE_NAME)
    namespace = meta.get("namespace")
    if not isinstance(service, str) or not service or not isinstance(namespace, str) or not namespace:
        return None
    return f"{namespace}/{service}"


def _condition(conditions: Mapping[str, Any], key: str, default: bool) -> bool:
    value = conditions.get(key)
    return default if value is None else value is True


def endpoints_from_slices(slices: Iterable[Mapping[str, Any]], node_name: str) -> EndpointsMap:
    """Endpoints per service port from one Service's EndpointSlices (kube-proxy's EndpointSliceCache).

    An address that appears in two slices (while it moves between them) counts once,
    preferring the copy that is not terminating; endpoints are sorted by ``ip:port``.
    """
    merged: dict[ServicePortName, dict[str, Endpoint]] = {}
    for slice_ in slices:
        key = slice_service_key(slice_)
        if key is None or slice_.get("addressType", "IPv4") != "IPv4":
            continue
        namespace, service = key.split("/", 1)
        for raw_port in slice_.get("ports") or []:
            if not isinstance(raw_port, dict):
                continue
            number, protocol = _port_number(raw_port.get("port")), _protocol(raw_port.get("protocol"))
            port_name = raw_port.get("name") or ""
            if number is None or protocol is None or not isinstance(port_name, str):
                continue
            spn = ServicePortName(namespace, service, port_name, protocol)
            merged.setdefault(spn, {})
            _add_endpoints(merged[spn], number, slice_.get("endpoints") or [], node_name)
    return {spn: tuple(eps[k] for k in sorted(eps)) for spn, eps in merged.items() if eps}


def _add_endpoints(into: dict[str, Endpoint], port: int, raw_endpoints: Sequence[Any], node_name: str) -> None:
    for raw in raw_endpoints:
        if not isinstance(raw, dict):
            continue
        addresses = raw.get("addresses") or []
        ip = parse_ipv4(addresses[0]) if addresses else None
        if ip is None:
            continue
        conditions = raw.get("conditions") or {}
        ready = _condition(conditions, "ready", True)
        ep = Endpoint(ip=ip, port=port, is_local=bool(node_name) and raw.get("nodeName") == node_name,
                      ready=ready, serving=_condition(conditions, "serving", ready),
                      terminating=_condition(conditions, "terminating", False))
        key = str(ep)
        if key not in into or not ep.terminating:
            into[key] = ep


@dataclass(frozen=True)
class Categorized:
    """Which endpoints each traffic policy uses, as kube-proxy's CategorizeEndpoints returns them."""

    cluster: tuple[Endpoint, ...]
    local: tuple[Endpoint, ...]
    reachable: tuple[Endpoint, ...]  # union of the two, in ip:port order: the KUBE-SEP chains to write
    has_any: bool  # some usable endpoint exists anywhere in the cluster


def categorize_endpoints(endpoints: Sequence[Endpoint], sp: ServicePort) -> Categorized:
    cluster: tuple[Endpoint, ...] = ()
    local: tuple[Endpoint, ...] = ()
    has_any = False
    if sp.uses_cluster_endpoints:
        cluster = tuple(ep for ep in endpoints if ep.ready)
        if not cluster:  # no Ready endpoint anywhere: keep serving through terminating ones
            cluster = tuple(ep for ep in endpoints if ep.serving and ep.terminating)
        has_any = bool(cluster)
    if not sp.uses_local_endpoints:
        return Categorized(cluster, local, cluster, has_any)
    local_ready = False
    local_serving_terminating = False
    for ep in endpoints:
        if ep.ready:
            has_any = True
            local_ready = local_ready or ep.is_local
        elif ep.serving and ep.terminating:
            has_any = True
            local_serving_terminating = local_serving_terminating or ep.is_local
    if local_ready:
        local = tuple(ep for ep in endpoints if ep.is_local and ep.ready)
    elif local_serving_terminating:
        local = tuple(ep for ep in endpoints if ep.is_local and ep.serving and ep.terminating)
    if not sp.uses_cluster_endpoints:
        return Categorized(cluster, local, local, has_any)
    if not local_serving_terminating or local_ready:
        return Categorized(cluster, local, cluster, has_any)  # local ⊆ cluster: both are Ready endpoints
    union = {str(ep): ep for ep in (*cluster, *local)}
    return Categorized(cluster, local, tuple(union[k] for k in sorted(union)), has_any)
