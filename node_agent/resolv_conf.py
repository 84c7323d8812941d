"""The /etc/resolv.conf every container of a pod gets, per the pod's dnsPolicy, as the
kubelet forms it (pkg/kubelet/network/dns/dns.go):

- ``ClusterFirst`` (the default): the cluster DNS addresses (``--cluster-dns``), search
  ``<ns>.svc.<domain> svc.<domain> <domain>`` followed by the node's own search list,
  ``options ndots:5``. A hostNetwork pod falls back to ``Default``, and so does any pod
  while the agent has no cluster DNS address (with a MissingClusterDNS warning).
- ``ClusterFirstWithHostNet``: the same as ClusterFirst, for hostNetwork pods too.
- ``Default``: the node's resolv.conf (``--resolv-conf``) as parsed: nameservers, the
  last search line, the last options line. With ``--resolv-conf=""`` the pod gets
  ``nameserver 127.0.0.1`` and ``search .``, which disables lookups.
- ``None``: nothing but the pod's dnsConfig.

``spec.dnsConfig`` is then appended: nameservers and searches without duplicates,
options merged by name (the pod's value wins). Limits are the kubelet's: 3 nameservers,
32 search domains, 2048 characters of search line, no domain over 253 characters; what
exceeds them is dropped with a DNSConfigForming warning.

`resolv_conf_mount` writes ``<pod dir>/resolv.conf`` atomically and returns the bind
mount at /etc/resolv.conf (over Docker's own), unless the container mounts something
there itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node_agent.runtime.container_spec import Mount
from node_agent.settings import AgentSettings

log = logging.getLogger("skiff.agent.dns")

MAX_NAMESERVERS = 3  # validation.MaxDNSNameservers (glibc's MAXNS)
MAX_SEARCH_PATHS = 32  # validation.MaxDNSSearchPathsExpanded
MAX_SEARCH_LINE_CHARS = 2048  # validation.MaxDNSSearchListCharsExpanded
MAX_DOMAIN_LENGTH = 253  # DNS1123SubdomainMaxLength: glibc 2.28 aborts on longer search paths
MAX_RESOLV_CONF_BYTES = 10 << 20
DEFAULT_OPTIONS = ("ndots:5",)
RESOLV_CONF_PATH = "/etc/resolv.conf"
FILE_NAME = "resolv.conf"


@dataclass(frozen=True)
class DnsConfig:
    """What a resolv.conf says (the CRI's DNSConfig)."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class DnsWarning:
    """An event the kubelet would record: ``reason`` and ``message``."""

    reason: str
    message: str


@dataclass
class PodDns:
    config: DnsConfig
    warnings: list[DnsWarning] = field(default_factory=list)


def parse_resolv_conf(text: str) -> DnsConfig:
    """kubelet's parseResolvConf: nameserver lines accumulate; the last search line and the
    last options line win; search domains lose a trailing dot; comments are skipped."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.strip().split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] == "nameserver" and len(fields) >= 2:
            nameservers.append(fields[1])
        elif fields[0] == "search":
            searches = [s.removesuffix(".") for s in fields[1:]]
        elif fields[0] == "options":
            options = fields[1:]
    return DnsConfig(tuple(nameservers), tuple(searches), tuple(options))


def render_resolv_conf(config: DnsConfig) -> str:
    """The file, in the order container runtimes write it: search, nameservers, options."""
    lines = []
    if config.searches:
        lines.append("search " + " ".join(config.searches))
    lines.extend(f"nameserver {ns}" for ns in config.nameservers)
    if config.options:
        lines.append("options " + " ".join(config.options))
    return "\n".join(lines) + "\n"


def _unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def merge_options(existing: Sequence[str], pod_options: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """kubelet's mergeDNSOptions, keeping first-seen order (Go's map order is random)."""
    merged: dict[str, str] = {}
    for option in existing:
        name, _, value = option.partition(":")
        merged[name] = value
    for pod_option in pod_options:
        if isinstance(pod_option, Mapping) and pod_option.get("name"):
            merged[str(pod_option["name"])] = str(pod_option.get("value") or "")
    return tuple(f"{name}:{value}" if value else name for name, value in merged.items())


def pod_dns_type(policy: str, host_network: bool) -> str:
    """kubelet's getPodDNSType: "cluster", "host" or "none". An unknown policy counts as
    ClusterFirst (validation should have refused it)."""
    if policy == "None":
        return "none"
    if policy == "Default" or (policy == "ClusterFirst" and host_network):
        return "host"
    return "cluster"


class DnsConfigurer:
    """kubelet's dns.Configurer: the node's DNS settings, and `pod_dns` for one pod."""

    def __init__(self, cluster_dns: Sequence[str] = (), cluster_domain: str = "cluster.local",
                 resolv_conf: Path | None = Path(RESOLV_CONF_PATH), node_ips: Sequence[str] = ()) -> None:
        self.cluster_dns = tuple(cluster_dns)
        self.cluster_domain = cluster_domain.strip(".")
        self.resolv_conf = resolv_conf
        self.node_ips = tuple(node_ips)

    def host_config(self) -> DnsConfig:
        """The node's resolv.conf, parsed; an unreadable file counts as empty (and is logged)."""
        if self.resolv_conf is None:
            return DnsConfig()
        try:
            with open(self.resolv_conf, encoding="utf-8", errors="replace") as f:
                return parse_resolv_conf(f.read(MAX_RESOLV_CONF_BYTES))
        except OSError as exc:
            log.warning("cannot read the node's resolv.conf %s: %s; pods with dnsPolicy Default get no nameserver",
                        self.resolv_conf, exc)
            return DnsConfig()

    def pod_dns(self, pod: Mapping[str, Any]) -> PodDns:
        spec = pod.get("spec") or {}
        namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
        policy = str(spec.get("dnsPolicy") or "ClusterFirst")
        kind = pod_dns_type(policy, bool(spec.get("hostNetwork")))
        warnings: list[DnsWarning] = []
        if kind == "none":
            config = DnsConfig()
        elif kind == "cluster" and self.cluster_dns:
            host = self.host_config()
            config = DnsConfig(self.cluster_dns, self._cluster_searches(namespace, host.searches), DEFAULT_OPTIONS)
        else:
            if kind == "cluster":
                warnings.append(DnsWarning("MissingClusterDNS", (
                    f'kubelet does not have ClusterDNS IP configured and cannot create Pod using "{policy}" policy. '
                    'Falling back to "Default" policy.')))
            config = self._host_default()
        pod_config = spec.get("dnsConfig") or {}
        if pod_config:
            config = DnsConfig(
                _unique([*config.nameservers, *(str(n) for n in pod_config.get("nameservers") or [])]),
                _unique([*config.searches, *(str(s) for s in pod_config.get("searches") or [])]),
                merge_options(config.options, pod_config.get("options") or []))
        return self._fit_limits(config, warnings)

    def _host_default(self) -> DnsConfig:
        if self.resolv_conf is None:
            # --resolv-conf="": lookups effectively disabled, as the kubelet does it.
            servers = tuple(dict.fromkeys("::1" if ":" in ip else "127.0.0.1" for ip in self.node_ips)) or (
                "127.0.0.1",)
            return DnsConfig(servers, (".",), ())
        return self.host_config()

    def _cluster_searches(self, namespace: str, host_searches: Sequence[str]) -> tuple[str, ...]:
        if not self.cluster_domain:
            return tuple(host_searches)
        domain = self.cluster_domain
        return _unique([f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *host_searches])

    @staticmethod
    def _fit_limits(config: DnsConfig, warnings: list[DnsWarning]) -> PodDns:
        nameservers = config.nameservers
        if len(nameservers) > MAX_NAMESERVERS:
            nameservers = nameservers[:MAX_NAMESERVERS]
            warnings.append(DnsWarning("DNSConfigForming", (
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line "
                f"is: {' '.join(nameservers)}")))
        searches = list(config.searches)
        exceeded = False
        if len(searches) > MAX_SEARCH_PATHS:
            searches, exceeded = searches[:MAX_SEARCH_PATHS], True
        if any(len(s) > MAX_DOMAIN_LENGTH for s in searches):
            searches, exceeded = [s for s in searches if len(s) <= MAX_DOMAIN_LENGTH], True
        while searches and len(" ".join(searches)) > MAX_SEARCH_LINE_CHARS:
            searches.pop()  # the kubelet cuts from the end until the line fits
            exceeded = True
        if exceeded:
            warnings.append(DnsWarning("DNSConfigForming", (
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line "
                f"is: {' '.join(searches)}")))
        return PodDns(DnsConfig(nameservers, tuple(searches), config.options), warnings)


def configurer_for(settings: AgentSettings, node_ip: str) -> DnsConfigurer:
    return DnsConfigurer(settings.cluster_dns, settings.cluster_domain,
                         Path(settings.resolv_conf) if settings.resolv_conf else None, [node_ip] if node_ip else [])


def resolv_conf_mount(configurer: DnsConfigurer, pod: Mapping[str, Any], pod_dir: Path,
                      container: Mapping[str, Any]) -> tuple[Mount | None, list[DnsWarning]]:
    """Write ``<pod_dir>/resolv.conf`` (atomically) and return its mount, with the warnings
    to record when the file's content changed (so a restarting container does not repeat
    them). No mount when the container mounts a volume at /etc/resolv.conf itself."""
    if any(isinstance(m, Mapping) and m.get("mountPath") == RESOLV_CONF_PATH
           for m in container.get("volumeMounts") or []):
        return None, []
    result = configurer.pod_dns(pod)
    content = render_resolv_conf(result.config)
    path = Path(pod_dir) / FILE_NAME
    try:
        changed = path.read_text() != content
    except OSError:
        changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return Mount(source=str(path), target=RESOLV_CONF_PATH), result.warnings if changed else []
