"""`render_ruleset`: the whole iptables ruleset of the service proxy, as kube-proxy writes it.

A pure function of (service ports, endpoints, node): the same inputs give the same text,
byte for byte. The chains and rules follow pkg/proxy/iptables/proxier.go:

  nat     PREROUTING, OUTPUT -> KUBE-SERVICES: per service port, cluster IP:port ->
          KUBE-SVC-<hash> (or KUBE-SVL-<hash> for internalTrafficPolicy Local); last, any
          local address that is not loopback -> KUBE-NODEPORTS: node port -> KUBE-EXT-<hash>.
          KUBE-SVC-*: off-cluster sources -> KUBE-MARK-MASQ, then one rule per endpoint with
          ``-m statistic --mode random --probability 1/(n-i)`` (ClientIP affinity first
          checks ``-m recent --rcheck`` per endpoint) -> KUBE-SEP-<hash>: hairpin -> KUBE-MARK-MASQ,
          DNAT to ip:port. KUBE-EXT-*: masquerade (Cluster policy), or keep the client address
          and use only this node's endpoints (Local policy, with kube-proxy's short-circuit
          for pods and the node itself). KUBE-MARK-MASQ sets mark 0x4000; POSTROUTING ->
          KUBE-POSTROUTING masquerades marked packets.
  filter  OUTPUT, FORWARD -> KUBE-SERVICES and INPUT, FORWARD -> KUBE-EXTERNAL-SERVICES: REJECT
          for services without endpoints (DROP when a Local policy has none on this node);
          FORWARD -> KUBE-FORWARD accepts marked and established traffic.

Chain names come only from sha256/base32 hashes of the service port name (kube-proxy's
own, so chains are named as kube-proxy would name them). User strings appear only in
``-m comment`` and only when they are DNS labels (`ServicePortName.comment_name`); a
Service whose namespace, name or port name is anything else gets rules without comments.

Unlike kube-proxy's output, the lines are grouped chain by chain (iptables-restore does
not mind), so that one chain can be rewritten alone (`Ruleset.diff`).

Left out, on purpose: LoadBalancer ingress, loadBalancerSourceRanges (KUBE-FW-*,
KUBE-PROXY-FIREWALL) and healthCheckNodePort (filter KUBE-NODEPORTS), since there are
no load balancers here; externalIPs; topology hints; and kubelet's KUBE-FIREWALL chain,
which only guards ``route_localnet`` — never set by Skiff, so node ports never answer on
127.0.0.0/8 (``! -d 127.0.0.0/8``).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from node_agent.proxy.model import (
    Categorized,
    Endpoint,
    ServicePort,
    ServicePortName,
    categorize_endpoints,
)

# Top-level chains, in the order kube-proxy declares them.
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
FILTER_BASE_CHAINS = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD)
NAT_BASE_CHAINS = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)

# Per-service-port chains; a chain with one of these prefixes is the proxy's own.
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")

# Above this many endpoints the per-endpoint comments are dropped, as kube-proxy does
# (largeClusterEndpointsThreshold): they make up ~40% of the text at scale.
LARGE_CLUSTER_ENDPOINTS = 1000

MASQUERADE_MARK = "0x4000"  # kube-proxy's default --iptables-masquerade-bit 14


@dataclass(frozen=True)
class JumpRule:
    """A rule in a built-in chain that jumps to one of ours; ensured once, never by restore."""

    table: str
    chain: str  # built-in chain (INPUT, FORWARD, ...)
    target: str  # our chain
    comment: str
    extra: tuple[str, ...] = ()

    def args(self) -> list[str]:
        return [*self.extra, "-m", "comment", "--comment", self.comment, "-j", self.target]

    def save_line(self) -> str:
        """The rule as ``iptables-save`` prints it."""
        return " ".join(["-A", self.chain, *self.extra, "-m", "comment", "--comment", f'"{self.comment}"',
                         "-j", self.target])


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
JUMP_RULES = (
    JumpRule("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    JumpRule("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    JumpRule("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", _NEW),
    JumpRule("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", _NEW),
    JumpRule("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    JumpRule("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    JumpRule("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    JumpRule("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
)


@dataclass(frozen=True)
class NodeInfo:
    """What the ruleset depends on besides Services and EndpointSlices."""

    node_name: str
    cluster_cidr: str | None = "10.244.0.0/16"  # pod sources; others are masqueraded (kube-proxy --cluster-cidr)
    masquerade_mark: str = MASQUERADE_MARK
    random_fully: bool = True  # MASQUERADE --random-fully (iptables >= 1.6.2, which Debian 12 has)
    drop_invalid: bool = True  # False when net.netfilter.nf_conntrack_tcp_be_liberal is set


# ---- chain names -----------------------------------------------------------------------


@lru_cache(maxsize=262144)
def _hash16(text: str) -> str:
    # surrogatepass: a name decoded from hostile JSON may hold lone surrogates; hashing must not fail on it
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii")[:16]


def _hash_base(spn: ServicePortName) -> str:
    return str(spn) + spn.protocol.lower()


def port_proto_hash(spn: ServicePortName) -> str:
    """kube-proxy's portProtoHash(servicePortName.String(), lowercase protocol)."""
    return _hash16(_hash_base(spn))


def service_chain(spn: ServicePortName) -> str:
    return "KUBE-SVC-" + port_proto_hash(spn)


def local_chain(spn: ServicePortName) -> str:
    return "KUBE-SVL-" + port_proto_hash(spn)


def external_chain(spn: ServicePortName) -> str:
    return "KUBE-EXT-" + port_proto_hash(spn)


def endpoint_chain(spn: ServicePortName, endpoint: str) -> str:
    """kube-proxy's servicePortEndpointChainName: the hash also covers ``ip:port``."""
    return "KUBE-SEP-" + _hash16(_hash_base(spn) + endpoint)


def is_service_chain(name: str) -> bool:
    return name.startswith(SERVICE_CHAIN_PREFIXES)


def chain_level(table: str, name: str) -> int:
    """How far a chain is from the leaves of the jump graph: a chain only jumps to chains of
    lower levels, so writing level by level keeps every intermediate state consistent."""
    if table == "nat":
        if name.startswith("KUBE-SEP-") or name in (KUBE_MARK_MASQ, KUBE_POSTROUTING):
            return 0
        if name.startswith(("KUBE-SVC-", "KUBE-SVL-")):
            return 1
        if name.startswith(("KUBE-EXT-", "KUBE-FW-")):
            return 2
    return 3  # the roots (KUBE-SERVICES, KUBE-NODEPORTS) and the filter chains


@lru_cache(maxsize=4096)
def probability(n: int) -> str:
    """1/n as kube-proxy formats it (``%0.10f``)."""
    return f"{1.0 / n:0.10f}"


# ---- the ruleset -----------------------------------------------------------------------

Chains = dict[str, tuple[str, ...]]  # chain name -> its rules as iptables-restore lines, in order


@dataclass(frozen=True)
class ChainDiff:
    """What turns one ruleset into another: chains to (re)write and chains to delete, per table."""

    write: dict[str, list[str]]
    delete: dict[str, list[str]]

    def __bool__(self) -> bool:
        return any(self.write.values()) or any(self.delete.values())


@dataclass(frozen=True)
class ServicePortRules:
    """What one service port contributes: rules in the shared chains, and chains of its own."""

    nat_services: tuple[str, ...] = ()  # rules in nat KUBE-SERVICES
    nat_nodeports: tuple[str, ...] = ()  # rules in nat KUBE-NODEPORTS
    filter_services: tuple[str, ...] = ()  # REJECT/DROP in filter KUBE-SERVICES
    filter_external: tuple[str, ...] = ()  # REJECT/DROP in filter KUBE-EXTERNAL-SERVICES
    chains: tuple[tuple[str, tuple[str, ...]], ...] = ()  # nat chains of its own, in order
    endpoints: tuple[Endpoint, ...] = ()  # the endpoints traffic can be sent to from this node


@dataclass
class Ruleset:
    """The rendered state of the filter and nat tables: the base chains, and each service
    port's rules (`ServicePortRules`, in render order), which also own their nat chains.

    ``filter`` and ``nat`` are the whole tables, chain by chain in declaration order.
    `diff` compares service ports by identity first: the proxier reuses the rules of
    unchanged service ports, so a sync at 10,000 Services only looks at what changed.
    """

    base_filter: Chains = field(default_factory=dict)
    base_nat: Chains = field(default_factory=dict)
    parts: tuple[ServicePortRules, ...] = ()
    _nat: Chains | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def filter(self) -> Chains:
        return self.base_filter

    @property
    def nat(self) -> Chains:
        if self._nat is None:
            self._nat = {**self.base_nat, **{name: rules for part in self.parts for name, rules in part.chains}}
        return self._nat

    def tables(self) -> tuple[tuple[str, Chains], ...]:
        return (("filter", self.filter), ("nat", self.nat))

    def table(self, name: str) -> Chains:
        return self.filter if name == "filter" else self.nat

    def restore_text(self, stale: Mapping[str, Iterable[str]] | None = None) -> str:
        """Everything, as one ``iptables-restore --noflush`` input; chains named in
        ``stale[table]`` are flushed and deleted in the same transaction."""
        out: list[str] = []
        for table, chains in self.tables():
            gone = sorted((stale or {}).get(table, ()))
            out.append(f"*{table}")
            out.extend(f":{name} - [0:0]" for name in (*chains, *gone))
            for rules in chains.values():
                out.extend(rules)
            out.extend(f"-X {name}" for name in gone)
            out.append("COMMIT")
        out.append("")
        return "\n".join(out)

    def diff(self, applied: Ruleset | None, stale: Mapping[str, Iterable[str]] | None = None) -> ChainDiff:
        """Chains whose rules differ from ``applied`` (all, when it is None), and chains
        ``applied`` had (or ``stale`` names) that this ruleset has not."""
        stale = stale or {}
        if applied is None:
            return ChainDiff({table: list(chains) for table, chains in self.tables()},
                             {table: sorted(stale.get(table, ())) for table, _ in self.tables()})
        write = {"filter": [n for n, rules in self.base_filter.items() if applied.base_filter.get(n) != rules],
                 "nat": [n for n, rules in self.base_nat.items() if applied.base_nat.get(n) != rules]}
        delete = {"filter": {*stale.get("filter", ()), *(n for n in applied.base_filter if n not in self.base_filter)},
                  "nat": {*stale.get("nat", ()), *(n for n in applied.base_nat if n not in self.base_nat)}}
        kept = {id(part) for part in self.parts}
        before = {id(part) for part in applied.parts}
        old = {name: rules for part in applied.parts if id(part) not in kept for name, rules in part.chains}
        new: set[str] = set()
        for part in self.parts:
            if id(part) in before:
                continue
            for name, rules in part.chains:
                new.add(name)
                if old.get(name) != rules:
                    write["nat"].append(name)
        delete["nat"].update(name for name in old if name not in new)
        return ChainDiff(write, {table: sorted(names) for table, names in delete.items()})


def _comment(text: str | None) -> str:
    return f'-m comment --comment "{text}" ' if text else ""


def render_service_port(sp: ServicePort, endpoints: Sequence[Endpoint], node: NodeInfo,
                        large_cluster: bool = False) -> ServicePortRules:
    """The rules of one service port (the body of kube-proxy's per-service loop)."""
    spn = sp.name
    base = _hash_base(spn)
    cat = categorize_endpoints(endpoints, sp)
    name = spn.comment_name()  # None: no comments for this service port at all
    proto, cip, port = sp.protocol, sp.cluster_ip, sp.port
    svc_hash = _hash16(base)
    svc_chain, svl_chain, ext_chain = "KUBE-SVC-" + svc_hash, "KUBE-SVL-" + svc_hash, "KUBE-EXT-" + svc_hash
    sep_of = {ep.address: "KUBE-SEP-" + _hash16(base + ep.address) for ep in cat.reachable}
    uses_cluster_chain = bool(cat.cluster) and sp.uses_cluster_endpoints
    uses_local_chain = bool(cat.local) and sp.uses_local_endpoints

    internal_chain, has_internal = svc_chain, cat.has_any
    if sp.internal_policy_local:
        internal_chain, has_internal = svl_chain, bool(cat.local)
    external_policy_chain, has_external = svc_chain, cat.has_any
    if sp.external_policy_local:
        external_policy_chain, has_external = svl_chain, bool(cat.local)
    uses_ext_chain = cat.has_any and sp.externally_accessible

    internal_target = external_target = ""
    internal_reason = external_reason = ""
    if not cat.has_any:
        internal_target = external_target = "REJECT"
        internal_reason = external_reason = f"{name} has no endpoints" if name else ""
    else:
        if not has_internal:
            internal_target, internal_reason = "DROP", f"{name} has no local endpoints" if name else ""
        if not has_external:
            external_target, external_reason = "DROP", f"{name} has no local endpoints" if name else ""

    match_vip = f"-m {proto} -p {proto} -d {cip} --dport {port}"
    cluster_ip_comment = _comment(f"{name} cluster IP" if name else None)
    nat_services: list[str] = []
    filter_services: list[str] = []
    if has_internal:
        nat_services.append(f"-A {KUBE_SERVICES} {cluster_ip_comment}{match_vip} -j {internal_chain}")
    else:
        filter_services.append(f"-A {KUBE_SERVICES} {_comment(internal_reason)}{match_vip} -j {internal_target}")

    nat_nodeports: list[str] = []
    filter_external: list[str] = []
    if sp.node_port:
        if cat.has_any:
            nat_nodeports.append(f"-A {KUBE_NODEPORTS} {_comment(name)}-m {proto} -p {proto} "
                                 f"--dport {sp.node_port} -j {ext_chain}")
        if not has_external:
            filter_external.append(f"-A {KUBE_EXTERNAL_SERVICES} {_comment(external_reason)}-m addrtype "
                                   f"--dst-type LOCAL -m {proto} -p {proto} --dport {sp.node_port} "
                                   f"-j {external_target}")

    chains: list[tuple[str, tuple[str, ...]]] = []
    masq_off_cluster = (f"-A {internal_chain} {cluster_ip_comment}{match_vip} ! -s {node.cluster_cidr} "
                        f"-j {KUBE_MARK_MASQ}") if has_internal and node.cluster_cidr else None
    if uses_ext_chain:
        chains.append((ext_chain, _external_rules(sp, name, ext_chain, svc_chain, external_policy_chain,
                                                  has_external, node)))
    if uses_cluster_chain:
        head = (masq_off_cluster,) if masq_off_cluster and internal_chain == svc_chain else ()
        chains.append((svc_chain, head + _dispatch_rules(sp, svc_chain, cat.cluster, sep_of, name, large_cluster)))
    if uses_local_chain:
        head = (masq_off_cluster,) if masq_off_cluster and internal_chain == svl_chain else ()
        chains.append((svl_chain, head + _dispatch_rules(sp, svl_chain, cat.local, sep_of, name, large_cluster)))
    for ep in cat.reachable:
        chains.append(_endpoint_chain(sp, ep, sep_of[ep.address], name, large_cluster))
    return ServicePortRules(tuple(nat_services), tuple(nat_nodeports), tuple(filter_services),
                            tuple(filter_external), tuple(chains), cat.reachable)


def _external_rules(sp: ServicePort, name: str | None, ext_chain: str, svc_chain: str, policy_chain: str,
                    has_external: bool, node: NodeInfo) -> tuple[str, ...]:
    def rule(comment: str, rest: str) -> str:
        return f"-A {ext_chain} {_comment(comment.format(name) if name else None)}{rest}"

    rules: list[str] = []
    if not sp.external_policy_local:
        # the endpoint may be on another node: masquerade so the reply comes back through us
        rules.append(rule("masquerade traffic for {} external destinations", f"-j {KUBE_MARK_MASQ}"))
    else:
        if node.cluster_cidr:
            # pods reaching a node port behave as if through an external load balancer: any endpoint
            rules.append(rule("pod traffic for {} external destinations", f"-s {node.cluster_cidr} -j {svc_chain}"))
        # the node itself reaches its own address: the source is local, so masquerade and use any endpoint
        rules.append(rule("masquerade LOCAL traffic for {} external destinations",
                          f"-m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"))
        rules.append(rule("route LOCAL traffic for {} external destinations",
                          f"-m addrtype --src-type LOCAL -j {svc_chain}"))
    if has_external:
        rules.append(f"-A {ext_chain} -j {policy_chain}")
    return tuple(rules)


def _dispatch_rules(sp: ServicePort, chain: str, endpoints: Sequence[Endpoint], sep_of: Mapping[str, str],
                    name: str | None, large_cluster: bool) -> tuple[str, ...]:
    """kube-proxy's writeServiceToEndpointRules: affinity checks, then the random spread."""
    comments = [""] * len(endpoints) if large_cluster or not name else \
        [_comment(f"{name} -> {ep.address}") for ep in endpoints]
    rules: list[str] = []
    if sp.sticky_seconds:
        for ep, comment in zip(endpoints, comments, strict=True):
            sep = sep_of[ep.address]
            rules.append(f"-A {chain} {comment}-m recent --name {sep} --rcheck --seconds {sp.sticky_seconds} "
                         f"--reap -j {sep}")
    n = len(endpoints)
    for i, (ep, comment) in enumerate(zip(endpoints, comments, strict=True)):
        spread = f"-m statistic --mode random --probability {probability(n - i)} " if i < n - 1 else ""
        rules.append(f"-A {chain} {comment}{spread}-j {sep_of[ep.address]}")
    return tuple(rules)


def _endpoint_chain(sp: ServicePort, ep: Endpoint, sep: str, name: str | None,
                    large_cluster: bool) -> tuple[str, tuple[str, ...]]:
    comment = "" if large_cluster else _comment(name)
    affinity = f"-m recent --name {sep} --set " if sp.sticky_seconds else ""
    return sep, (f"-A {sep} {comment}-s {ep.ip} -j {KUBE_MARK_MASQ}",  # hairpin: a pod reaching itself
                 f"-A {sep} {comment}{affinity}-m {sp.protocol} -p {sp.protocol} -j DNAT --to-destination {ep.address}")


def assemble(parts: Sequence[ServicePortRules], node: NodeInfo) -> Ruleset:
    """The base chains around the service ports' rules, in the given order."""
    mark = node.masquerade_mark
    f_services: list[str] = []
    f_external: list[str] = []
    n_services: list[str] = []
    n_nodeports: list[str] = []
    for part in parts:
        if part.filter_services:
            f_services.extend(part.filter_services)
        if part.filter_external:
            f_external.extend(part.filter_external)
        if part.nat_services:
            n_services.extend(part.nat_services)
        if part.nat_nodeports:
            n_nodeports.extend(part.nat_nodeports)
    n_services.append(f'-A {KUBE_SERVICES} -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                      f'the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {KUBE_NODEPORTS}')
    forward = [f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP"] if node.drop_invalid else []
    forward += [f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark}/{mark} '
                f'-j ACCEPT',
                f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
                f'--ctstate RELATED,ESTABLISHED -j ACCEPT']
    masquerade = f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
    filter_chains: Chains = {KUBE_SERVICES: tuple(f_services), KUBE_EXTERNAL_SERVICES: tuple(f_external),
                             KUBE_FORWARD: tuple(forward)}
    nat_chains: Chains = {
        KUBE_SERVICES: tuple(n_services),
        KUBE_NODEPORTS: tuple(n_nodeports),
        KUBE_POSTROUTING: (f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
                           f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}",
                           masquerade + (" --random-fully" if node.random_fully else "")),
        KUBE_MARK_MASQ: (f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}",),
    }
    return Ruleset(base_filter=filter_chains, base_nat=nat_chains, parts=tuple(parts))


def is_large_cluster(ports: Iterable[ServicePort],
                     endpoints: Mapping[ServicePortName, Sequence[Endpoint]]) -> bool:
    return sum(len(endpoints.get(sp.name, ())) for sp in ports) > LARGE_CLUSTER_ENDPOINTS


def render_ruleset(ports: Iterable[ServicePort], endpoints: Mapping[ServicePortName, Sequence[Endpoint]],
                   node: NodeInfo) -> Ruleset:
    """The whole ruleset; service ports are written in ServicePortName order."""
    ordered = sorted(ports, key=lambda sp: sp.name)
    large = is_large_cluster(ordered, endpoints)
    return assemble([render_service_port(sp, endpoints.get(sp.name, ()), node, large) for sp in ordered], node)


__all__ = ["Categorized", "ChainDiff", "JUMP_RULES", "NodeInfo", "Ruleset", "ServicePortRules", "assemble",
           "render_ruleset", "render_service_port"]
