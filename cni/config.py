"""What the runtime asked for: the CNI_* environment and the network config on stdin.

Both are parsed once into frozen dataclasses; every problem becomes the spec's error
code (4 for the environment, 6 for undecodable JSON, 7 for an invalid config, 1 for
a version we do not speak, 2 for a field Skiff's plugin does not implement) with the
offending variable or key named in the details.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cni.errors import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    UNSUPPORTED_FIELD,
    CniPluginError,
)
from cni.result import DNS, Result, Route

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
DEFAULT_DATA_DIR = "/var/lib/cni/networks"  # host-local's default
DEFAULT_BRIDGE = "cni0"  # the reference bridge plugin's default

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NETWORK_NAME = _CONTAINER_ID
_IFNAME_FORBIDDEN = re.compile(r"[/:\s]")


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def valid_ifname(name: str) -> bool:
    """Linux's rules, as the spec states them for CNI_IFNAME."""
    return bool(name) and name not in (".", "..") and len(name) < 16 and not _IFNAME_FORBIDDEN.search(name)


@dataclass(frozen=True)
class CniArgs:
    """The protocol parameters from the environment."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: Mapping[str, str] = field(default_factory=dict)  # CNI_ARGS, "K=V;K2=V2"
    path: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CniArgs:
        command = environ.get("CNI_COMMAND", "")
        if command not in COMMANDS:
            raise CniPluginError(
                INVALID_ENVIRONMENT, f"CNI_COMMAND={command!r} is not one of {', '.join(COMMANDS)}"
            )
        container_id = environ.get("CNI_CONTAINERID", "")
        netns = environ.get("CNI_NETNS", "")
        ifname = environ.get("CNI_IFNAME", "")
        required = {"ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
                    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
                    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME")}.get(command, ())
        missing = [name for name in required if not environ.get(name)]
        if missing:
            raise CniPluginError(INVALID_ENVIRONMENT, f"{command} requires {', '.join(missing)} to be set")
        if container_id and not _CONTAINER_ID.match(container_id):
            raise CniPluginError(
                INVALID_ENVIRONMENT,
                f"CNI_CONTAINERID={container_id!r} must start with an alphanumeric character "
                "and contain only alphanumerics, '_', '.' and '-'",
            )
        if ifname and not valid_ifname(ifname):
            raise CniPluginError(
                INVALID_ENVIRONMENT,
                f"CNI_IFNAME={ifname!r} is not a valid interface name (1-15 characters, no '/', ':' or whitespace)",
            )
        return cls(
            command=command,
            container_id=container_id,
            netns=netns,
            ifname=ifname,
            args=_parse_cni_args(environ.get("CNI_ARGS", "")),
            path=tuple(p for p in environ.get("CNI_PATH", "").split(":") if p),
        )


def _parse_cni_args(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniPluginError(INVALID_ENVIRONMENT, f"CNI_ARGS: {pair!r} is not a KEY=VALUE pair")
        out[key] = value
    return out


@dataclass(frozen=True)
class IPRange:
    """One host-local range: allocate from [range_start, range_end] in subnet, except the gateway."""

    subnet: ipaddress.IPv4Network
    range_start: ipaddress.IPv4Address
    range_end: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, ipaddress.IPv4Address) and self.range_start <= ip <= self.range_end

    def __str__(self) -> str:
        return f"{self.subnet} ({self.range_start}-{self.range_end})"

    def size(self) -> int:
        """How many addresses this range can hand out."""
        total = int(self.range_end) - int(self.range_start) + 1
        return total - (1 if self.gateway in self else 0)


@dataclass(frozen=True)
class IpamConf:
    type: str
    ranges: tuple[IPRange, ...]  # one range set: the first range with a free address wins
    routes: tuple[Route, ...] = ()
    data_dir: str = DEFAULT_DATA_DIR


@dataclass(frozen=True)
class NetConf:
    """One plugin's execution configuration, as the runtime derived it from the conflist."""

    cni_version: str
    name: str
    type: str
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    hairpin_mode: bool = False
    mtu: int = 0
    ipam: IpamConf | None = None
    dns: DNS = field(default_factory=DNS)
    prev_result: Result | None = None
    valid_attachments: frozenset[tuple[str, str]] | None = None  # GC: (containerID, ifname)


def peek_version(data: bytes) -> str:
    """The cniVersion of a config for error replies, or "" if it cannot be read."""
    try:
        raw = json.loads(data)
    except ValueError:
        return ""
    version = raw.get("cniVersion") if isinstance(raw, dict) else None
    return version if isinstance(version, str) and version in SUPPORTED_VERSIONS else ""


def parse_netconf(data: bytes) -> NetConf:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise CniPluginError(DECODE_FAILURE, f"network config on stdin is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise CniPluginError(DECODE_FAILURE, f"network config must be a JSON object, got {type(raw).__name__}")

    version = raw.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniPluginError(INVALID_NETWORK_CONFIG, "cniVersion is missing")
    if version not in SUPPORTED_VERSIONS:
        raise CniPluginError(
            INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported (supported: {', '.join(SUPPORTED_VERSIONS)})"
        )
    name = _get(raw, "name", str, "")
    if not _NETWORK_NAME.match(name):
        raise CniPluginError(
            INVALID_NETWORK_CONFIG, f"name={name!r}: must start with an alphanumeric character and contain only "
            "alphanumerics, '_', '.' and '-'",
        )
    bridge = _get(raw, "bridge", str, DEFAULT_BRIDGE)
    if not valid_ifname(bridge):
        raise CniPluginError(INVALID_NETWORK_CONFIG, f"bridge={bridge!r} is not a valid interface name")
    if _get(raw, "ipMasq", bool, False):
        raise CniPluginError(UNSUPPORTED_FIELD, "ipMasq=true: skiff-bridge does not masquerade; use the reference "
                             "bridge plugin or leave ipMasq false")
    if _get(raw, "promiscMode", bool, False):
        raise CniPluginError(UNSUPPORTED_FIELD, "promiscMode=true is not implemented by skiff-bridge")
    if _get(raw, "vlan", int, 0):
        raise CniPluginError(UNSUPPORTED_FIELD, f"vlan={raw['vlan']!r} is not implemented by skiff-bridge")
    mtu = _get(raw, "mtu", int, 0)
    if mtu and not 68 <= mtu <= 65535:
        raise CniPluginError(INVALID_NETWORK_CONFIG, f"mtu={mtu}: must be between 68 and 65535")
    is_default_gateway = _get(raw, "isDefaultGateway", bool, False)

    prev_result = None
    if raw.get("prevResult") is not None:
        prev_result = Result.from_dict(raw["prevResult"])

    valid_attachments = None
    attachments = raw.get("cni.dev/valid-attachments", raw.get("cni.dev/attachments"))
    if attachments is not None:
        valid_attachments = _parse_attachments(attachments)

    return NetConf(
        cni_version=version,
        name=name,
        type=_get(raw, "type", str, ""),
        bridge=bridge,
        is_gateway=_get(raw, "isGateway", bool, False) or is_default_gateway,
        is_default_gateway=is_default_gateway,
        hairpin_mode=_get(raw, "hairpinMode", bool, False),
        mtu=mtu,
        ipam=_parse_ipam(raw["ipam"]) if raw.get("ipam") else None,
        dns=DNS.from_dict(raw.get("dns")),
        prev_result=prev_result,
        valid_attachments=valid_attachments,
    )


def _parse_ipam(raw: Any) -> IpamConf:
    if not isinstance(raw, dict):
        raise CniPluginError(INVALID_NETWORK_CONFIG, f"ipam must be an object, got {raw!r}")
    ipam_type = _get(raw, "type", str, "", where="ipam.type")
    if ipam_type != "host-local":
        raise CniPluginError(UNSUPPORTED_FIELD, f"ipam.type={ipam_type!r}: skiff-bridge implements host-local only")

    if "ranges" in raw:
        range_sets = raw["ranges"]
        if not isinstance(range_sets, list) or not all(isinstance(s, list) and s for s in range_sets):
            raise CniPluginError(INVALID_NETWORK_CONFIG, "ipam.ranges must be a non-empty list of non-empty lists")
        if len(range_sets) != 1:
            raise CniPluginError(
                UNSUPPORTED_FIELD, f"ipam.ranges has {len(range_sets)} range sets: skiff-bridge allocates one IPv4 "
                "address per attachment, from a single range set",
            )
        ranges = tuple(_parse_range(r, f"ipam.ranges[0][{i}]") for i, r in enumerate(range_sets[0]))
    elif "subnet" in raw:  # host-local's older flat form
        ranges = (_parse_range(raw, "ipam"),)
    else:
        raise CniPluginError(INVALID_NETWORK_CONFIG, "ipam needs ranges (or subnet)")
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            if a.range_start <= b.range_end and b.range_start <= a.range_end:
                raise CniPluginError(INVALID_NETWORK_CONFIG, f"ipam ranges {a} and {b} overlap")

    routes = []
    for i, r in enumerate(raw.get("routes") or []):
        try:
            dst = ipaddress.ip_network(r["dst"], strict=False)
            gw = ipaddress.ip_address(r["gw"]) if r.get("gw") else None
        except (KeyError, TypeError, ValueError) as exc:
            raise CniPluginError(INVALID_NETWORK_CONFIG, f"ipam.routes[{i}]={r!r}: {exc}") from exc
        if dst.version != 4 or (gw is not None and gw.version != 4):
            raise CniPluginError(UNSUPPORTED_FIELD, f"ipam.routes[{i}]={r!r}: skiff-bridge is IPv4 only")
        routes.append(Route(dst=dst, gw=gw))
    return IpamConf(
        type=ipam_type,
        ranges=ranges,
        routes=tuple(routes),
        data_dir=_get(raw, "dataDir", str, DEFAULT_DATA_DIR, where="ipam.dataDir") or DEFAULT_DATA_DIR,
    )


def _parse_range(raw: Any, where: str) -> IPRange:
    if not isinstance(raw, dict):
        raise CniPluginError(INVALID_NETWORK_CONFIG, f"{where} must be an object, got {raw!r}")
    try:
        subnet = ipaddress.ip_network(raw.get("subnet", ""), strict=False)
    except ValueError as exc:
        raise CniPluginError(INVALID_NETWORK_CONFIG, f"{where}.subnet={raw.get('subnet')!r}: {exc}") from exc
    if not isinstance(subnet, ipaddress.IPv4Network):
        raise CniPluginError(UNSUPPORTED_FIELD, f"{where}.subnet={raw['subnet']!r}: skiff-bridge is IPv4 only")
    if subnet.prefixlen > 30:
        raise CniPluginError(INVALID_NETWORK_CONFIG, f"{where}.subnet={subnet}: network too small to allocate from")

    def address(key: str, default: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        if not raw.get(key):
            return default
        try:
            ip = ipaddress.IPv4Address(raw[key])
        except ValueError as exc:
            raise CniPluginError(INVALID_NETWORK_CONFIG, f"{where}.{key}={raw[key]!r}: {exc}") from exc
        if ip not in subnet:
            raise CniPluginError(INVALID_NETWORK_CONFIG, f"{where}.{key}={ip} is outside subnet {subnet}")
        return ip

    first, last = subnet.network_address + 1, subnet.broadcast_address - 1
    start, end = address("rangeStart", first), address("rangeEnd", last)
    if not first <= start <= end <= last:
        raise CniPluginError(
            INVALID_NETWORK_CONFIG, f"{where}: rangeStart {start} .. rangeEnd {end} is not a range of hosts in {subnet}"
        )
    return IPRange(subnet=subnet, range_start=start, range_end=end, gateway=address("gateway", first))


def _parse_attachments(raw: Any) -> frozenset[tuple[str, str]]:
    if not isinstance(raw, list):
        raise CniPluginError(INVALID_NETWORK_CONFIG, f"cni.dev/valid-attachments must be a list, got {raw!r}")
    out = set()
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str):
            raise CniPluginError(INVALID_NETWORK_CONFIG, f"cni.dev/valid-attachments: bad entry {item!r}")
        out.add((item["containerID"], str(item.get("ifname") or "")))
    return frozenset(out)


def _get(raw: Mapping[str, Any], key: str, kind: type, default: Any, where: str | None = None) -> Any:
    value = raw.get(key, default)
    if value is None:
        return default
    # bool is an int subclass: do not let `"mtu": true` through as 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CniPluginError(
            INVALID_NETWORK_CONFIG, f"{where or key}={value!r}: expected {kind.__name__}, got {type(value).__name__}"
        )
    return value
