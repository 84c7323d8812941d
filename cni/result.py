"""The spec's Success result, typed, and its JSON for each supported cniVersion.

1.x results drop the per-IP ``version`` field that 0.3.x/0.4.0 require; everything
else Skiff produces has the same shape in all of them. ``from_dict`` accepts any of
those versions, so a ``prevResult`` from another plugin parses too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cni.errors import DECODE_FAILURE, CniPluginError

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""  # netns path for container interfaces; empty for host interfaces
    mtu: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.mtu:
            out["mtu"] = self.mtu
        if self.sandbox:
            out["sandbox"] = self.sandbox
        return out


@dataclass
class IPConfig:
    address: IPInterface  # address with prefix, e.g. 10.244.1.5/24
    gateway: IPAddress | None = None
    interface: int | None = None  # index into Result.interfaces

    def to_dict(self, legacy: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if legacy:
            out["version"] = str(self.address.version)
        out["address"] = str(self.address)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        if self.interface is not None:
            out["interface"] = self.interface
        return out


@dataclass
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        return out


@dataclass
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "dns") -> DNS:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise CniPluginError(DECODE_FAILURE, f"{where} must be an object, got {raw!r}")
        return cls(
            nameservers=_str_list(raw.get("nameservers"), f"{where}.nameservers"),
            domain=str(raw.get("domain") or ""),
            search=_str_list(raw.get("search"), f"{where}.search"),
            options=_str_list(raw.get("options"), f"{where}.options"),
        )


@dataclass
class Result:
    cni_version: str
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

    def to_dict(self, cni_version: str | None = None) -> dict[str, Any]:
        version = cni_version or self.cni_version
        legacy = not version.startswith("1.")
        out: dict[str, Any] = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [i.to_dict() for i in self.interfaces]
        out["ips"] = [ip.to_dict(legacy) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_dict() for r in self.routes]
        out["dns"] = self.dns.to_dict()
        return out

    def container_interface(self, ifname: str, netns: str) -> tuple[int, Interface] | None:
        """The (index, interface) with this name inside this sandbox, if listed."""
        for index, iface in enumerate(self.interfaces):
            if iface.name == ifname and iface.sandbox and (not netns or iface.sandbox == netns):
                return index, iface
        return None

    @classmethod
    def from_dict(cls, raw: Any, where: str = "prevResult") -> Result:
        if not isinstance(raw, dict):
            raise CniPluginError(DECODE_FAILURE, f"{where} must be an object, got {type(raw).__name__}")
        try:
            interfaces = [
                Interface(
                    name=str(i["name"]),
                    mac=str(i.get("mac") or ""),
                    sandbox=str(i.get("sandbox") or ""),
                    mtu=int(i["mtu"]) if i.get("mtu") else None,
                )
                for i in raw.get("interfaces") or []
            ]
            ips = [
                IPConfig(
                    address=ipaddress.ip_interface(ip["address"]),
                    gateway=ipaddress.ip_address(ip["gateway"]) if ip.get("gateway") else None,
                    interface=int(ip["interface"]) if ip.get("interface") is not None else None,
                )
                for ip in raw.get("ips") or []
            ]
            routes = [
                Route(
                    dst=ipaddress.ip_network(r["dst"], strict=False),
                    gw=ipaddress.ip_address(r["gw"]) if r.get("gw") else None,
                )
                for r in raw.get("routes") or []
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CniPluginError(DECODE_FAILURE, f"cannot decode {where}: {exc!r}") from exc
        return cls(
            cni_version=str(raw.get("cniVersion") or ""),
            interfaces=interfaces,
            ips=ips,
            routes=routes,
            dns=DNS.from_dict(raw.get("dns"), f"{where}.dns"),
        )


def _str_list(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise CniPluginError(DECODE_FAILURE, f"{where} must be a list of strings, got {raw!r}")
    return list(raw)
