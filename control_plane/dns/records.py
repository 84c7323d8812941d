"""What cluster DNS knows: Services and their EndpointSlices, indexed for lookups by name.

`ClusterRecords` is fed whole API objects (``upsert_service``, ``delete_service``,
``upsert_slice``, ``delete_slice``): the server's informer handlers call them, tests call
them with plain dicts. Every change bumps ``generation``, which keys the server's answer
cache, and ``serial`` (the zone's SOA serial: the time of the last change).

Kubernetes' rules kept here (the DNS spec and CoreDNS's kubernetes plugin):
- A Service is headless when its clusterIP is ``None``; an ExternalName Service has only
  its ``externalName``; any other Service answers with its cluster IPs.
- An endpoint counts when it is ready: ``conditions.ready`` true or unset (the API's
  meaning of unset). publishNotReadyAddresses needs nothing here: the EndpointSlice
  controller already marks those endpoints ready.
- An endpoint's name is its ``hostname``, or else its address with dashes
  (``10-244-1-5``): the spec's "unique, system-assigned identifier", as CoreDNS does.
- Names compare case-insensitively: everything is kept lower-case.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

LABEL_SERVICE_NAME = "kubernetes.io/service-name"
ADDRESS_TYPES = ("IPv4", "IPv6")  # FQDN slices name no address DNS could answer with

ServiceKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Port:
    name: str  # "" for an unnamed port (no SRV record of its own)
    port: int
    protocol: str  # lower-case, as in SRV names: "tcp", "udp", "sctp"


@dataclass(frozen=True)
class ServiceEntry:
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]  # empty for headless and ExternalName Services
    headless: bool
    external_name: str  # "" unless the Service is of type ExternalName
    ports: tuple[Port, ...]


@dataclass(frozen=True)
class EndpointEntry:
    address: str
    hostname: str  # the endpoint's own hostname, "" when it has none
    ports: tuple[Port, ...]  # the ports of the slice it came from

    @property
    def label(self) -> str:
        """The endpoint's name under its Service: hostname, or the dashed address."""
        return self.hostname or self.address.replace(".", "-").replace(":", "-")


def _ports(raw: Any, number_field: str = "port") -> tuple[Port, ...]:
    out = []
    for p in raw or []:
        if not isinstance(p, Mapping) or not isinstance(p.get(number_field), int):
            continue
        out.append(Port(str(p.get("name") or "").lower(), int(p[number_field]),
                        str(p.get("protocol") or "TCP").lower()))
    return tuple(out)


def service_entry(svc: Mapping[str, Any]) -> ServiceEntry:
    md = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    external = str(spec.get("externalName") or "") if spec.get("type") == "ExternalName" else ""
    ips = [str(ip) for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip]
    headless = not external and "None" in ips
    valid = []
    for ip in ips:
        try:
            valid.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            continue
    return ServiceEntry(namespace=str(md.get("namespace") or "default").lower(), name=str(md.get("name")).lower(),
                        cluster_ips=() if external or headless else tuple(valid), headless=headless,
                        external_name=external.rstrip(".").lower(), ports=_ports(spec.get("ports")))


def slice_endpoints(slice_: Mapping[str, Any]) -> list[EndpointEntry]:
    """The ready endpoints of one EndpointSlice, one entry per address."""
    if slice_.get("addressType", "IPv4") not in ADDRESS_TYPES:
        return []
    ports = _ports(slice_.get("ports"))
    out = []
    for ep in slice_.get("endpoints") or []:
        if not isinstance(ep, Mapping):
            continue
        if (ep.get("conditions") or {}).get("ready") is False:
            continue
        hostname = str(ep.get("hostname") or "").lower()
        for address in ep.get("addresses") or []:
            try:
                out.append(EndpointEntry(str(ipaddress.ip_address(address)), hostname, ports))
            except ValueError:
                continue
    return out


class ClusterRecords:
    """The index. Reads are plain dict lookups; writes rebuild only what they touch."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._services: dict[ServiceKey, ServiceEntry] = {}
        self._namespaces: Counter[str] = Counter()  # namespace -> number of Services in it
        self._slices: dict[ServiceKey, dict[str, list[EndpointEntry]]] = {}  # service -> slice name -> endpoints
        self._slice_owner: dict[tuple[str, str], ServiceKey] = {}  # (namespace, slice name) -> service
        self._endpoints: dict[ServiceKey, tuple[EndpointEntry, ...]] = {}
        self._reverse: dict[str, list[tuple[str, ...]]] | None = None
        self.generation = 0
        self.serial = int(self._clock())

    # ---- writes ------------------------------------------------------------------------

    def _changed(self) -> None:
        self.generation += 1
        self.serial = max(self.serial + 1, int(self._clock())) & 0xFFFFFFFF
        self._reverse = None

    def upsert_service(self, svc: Mapping[str, Any]) -> None:
        entry = service_entry(svc)
        key = (entry.namespace, entry.name)
        old = self._services.get(key)
        if old == entry:
            return
        if old is None:
            self._namespaces[entry.namespace] += 1
        self._services[key] = entry
        self._changed()

    def delete_service(self, svc: Mapping[str, Any]) -> None:
        md = svc.get("metadata") or {}
        key = (str(md.get("namespace") or "default").lower(), str(md.get("name")).lower())
        if self._services.pop(key, None) is None:
            return
        self._namespaces[key[0]] -= 1
        if self._namespaces[key[0]] <= 0:
            del self._namespaces[key[0]]
        self._changed()

    def upsert_slice(self, slice_: Mapping[str, Any]) -> None:
        md = slice_.get("metadata") or {}
        namespace = str(md.get("namespace") or "default").lower()
        slice_key = (namespace, str(md.get("name")))
        service = str((md.get("labels") or {}).get(LABEL_SERVICE_NAME) or "").lower()
        previous = self._slice_owner.get(slice_key)
        if previous is not None and previous != (namespace, service):
            self._drop_slice(slice_key)  # relabelled to another Service (or to none)
        if not service:
            return
        owner = (namespace, service)
        endpoints = slice_endpoints(slice_)
        slices = self._slices.setdefault(owner, {})
        if previous == owner and slices.get(slice_key[1]) == endpoints:
            return
        slices[slice_key[1]] = endpoints
        self._slice_owner[slice_key] = owner
        self._rebuild_endpoints(owner)

    def delete_slice(self, slice_: Mapping[str, Any]) -> None:
        md = slice_.get("metadata") or {}
        self._drop_slice((str(md.get("namespace") or "default").lower(), str(md.get("name"))))

    def _drop_slice(self, slice_key: tuple[str, str]) -> None:
        owner = self._slice_owner.pop(slice_key, None)
        if owner is None:
            return
        slices = self._slices.get(owner, {})
        slices.pop(slice_key[1], None)
        if not slices:
            self._slices.pop(owner, None)
        self._rebuild_endpoints(owner)

    def _rebuild_endpoints(self, owner: ServiceKey) -> None:
        seen: set[EndpointEntry] = set()
        merged = []
        for name in sorted(self._slices.get(owner, {})):
            for ep in self._slices[owner][name]:
                if ep not in seen:  # an endpoint may sit in two slices for a moment
                    seen.add(ep)
                    merged.append(ep)
        if merged:
            self._endpoints[owner] = tuple(merged)
        else:
            self._endpoints.pop(owner, None)
        self._changed()

    # ---- reads -------------------------------------------------------------------------

    def service(self, namespace: str, name: str) -> ServiceEntry | None:
        return self._services.get((namespace, name))

    def endpoints(self, namespace: str, name: str) -> tuple[EndpointEntry, ...]:
        """The ready endpoints of a Service, in a stable order. An address shows once per
        port set it serves (pods resolving a named port differently sit in different slices)."""
        return self._endpoints.get((namespace, name), ())

    def has_namespace(self, namespace: str) -> bool:
        """True when the namespace has a Service (so ``<ns>.svc.<zone>`` exists)."""
        return namespace in self._namespaces

    def reverse(self, address: str) -> list[tuple[str, ...]]:
        """Names (labels under the zone) whose address this is: Services by cluster IP,
        and endpoints of headless Services by their hostname (the spec's PTR records)."""
        if self._reverse is None:
            index: dict[str, list[tuple[str, ...]]] = {}
            for (ns, name), svc in self._services.items():
                for ip in svc.cluster_ips:
                    index.setdefault(ip, []).append((name, ns, "svc"))
                if svc.headless:
                    for ep in self.endpoints(ns, name):
                        if ep.hostname:
                            index.setdefault(ep.address, []).append((ep.hostname, name, ns, "svc"))
            self._reverse = index
        return self._reverse.get(address, [])
