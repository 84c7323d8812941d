"""One DNS answer from the cluster's records: `resolve(query, records, zone)`.

Kubernetes DNS-Based Service Discovery (schema 1.0.1), as CoreDNS's kubernetes plugin
serves it, under the cluster domain ``<zone>``:

- ``<svc>.<ns>.svc.<zone>``: A/AAAA with the cluster IPs; for a headless Service one
  record per ready endpoint (NXDOMAIN when it has none); CNAME to ``externalName`` for an
  ExternalName Service (followed when the target is in the zone).
- ``<endpoint>.<svc>.<ns>.svc.<zone>`` for headless Services: the endpoint's hostname,
  or its dashed address.
- ``_<port>._<proto>.<svc>.<ns>.svc.<zone>``: SRV per named port (per ready endpoint and
  port for headless Services) to the Service's or endpoint's name, whose A records go in
  the additional section. The bare Service name answers SRV for all its ports.
- ``<a>-<b>-<c>-<d>.<ns>.pod.<zone>``: A ``a.b.c.d`` (CoreDNS's ``pods insecure``).
- PTR for cluster IPs and named headless endpoints; ``dns-version.<zone>`` TXT; the
  apex's SOA and NS (``ns.dns.<zone>``, whose A records are the cluster DNS addresses).
- Names that exist with no record of the asked type get NOERROR with no answer (NODATA),
  names that do not exist NXDOMAIN; both carry the zone's SOA in the authority section.
- Anything outside the zone (and reverse names we have no PTR for) is REFUSED at once:
  this server has no upstream to forward to, and REFUSED is what an authority-only
  server answers for names it does not serve, which resolvers take as final for it
  instead of retrying as they do on SERVFAIL.

Answers are authoritative (AA) and never offer recursion (RA clear). Multi-record A/AAAA
answers come in random order, as CoreDNS's ``loadbalance`` plugin gives them.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from control_plane.dns.records import ClusterRecords, EndpointEntry, Port, ServiceEntry

IN = dns.rdataclass.IN
RdType = dns.rdatatype.RdataType
SCHEMA_VERSION = "1.0.1"
MAX_CNAME_CHAIN = 8
ADVERTISED_PAYLOAD = 1232  # EDNS UDP size we offer (DNS flag day 2020), as CoreDNS does
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400  # CoreDNS's values


@dataclass(frozen=True)
class ZoneConfig:
    """The cluster domain and how records in it are stamped."""

    domain: dns.name.Name = field(default_factory=lambda: dns.name.from_text("cluster.local"))
    ttl: int = 5  # CoreDNS's kubernetes plugin default
    nameserver_ips: tuple[str, ...] = ()  # A/AAAA of ns.dns.<zone>: the kube-dns Service's IPs

    @classmethod
    def for_domain(cls, domain: str, ttl: int = 5, nameserver_ips: Sequence[str] = ()) -> ZoneConfig:
        return cls(dns.name.from_text(domain.strip(".").lower() or "cluster.local"), ttl, tuple(nameserver_ips))


@dataclass
class Node:
    """The records at one name. A node with no records still exists (NODATA, not NXDOMAIN)."""

    records: dict[RdType, list[dns.rdata.Rdata]] = field(default_factory=dict)
    cname: dns.name.Name | None = None
    additional: list[dns.rrset.RRset] = field(default_factory=list)

    def add(self, rdata: dns.rdata.Rdata) -> None:
        self.records.setdefault(rdata.rdtype, []).append(rdata)


def _address(ip: str) -> dns.rdata.Rdata:
    if ":" in ip:
        return AAAA(IN, dns.rdatatype.AAAA, ip)
    return A(IN, dns.rdatatype.A, ip)


def _absolute(labels: Iterable[str], zone: ZoneConfig) -> dns.name.Name:
    return dns.name.Name([label.encode() for label in labels]).concatenate(zone.domain)


def _labels(name: dns.name.Name) -> tuple[str, ...]:
    return tuple(label.decode("ascii", "replace").lower() for label in name.labels)


class Resolver:
    """Looks names up in ``records``; `answer` fills a response for one question."""

    def __init__(self, records: ClusterRecords, zone: ZoneConfig, rng: random.Random | None = None,
                 memo_entries: int = 10_000) -> None:
        self.records = records
        self.zone = zone
        self.rng = rng or random.Random()
        self.memo_entries = memo_entries
        # Nodes built since the records last changed: building rdata is most of a lookup's cost.
        self._memo: dict[tuple[str, ...], Node | None] = {}
        self._soa: SOA | None = None
        self._memo_generation = -1

    # ---- names under the zone ----------------------------------------------------------

    def lookup(self, labels: tuple[str, ...]) -> Node | None:
        """The node at ``labels`` (under the zone, leftmost first), or None: NXDOMAIN.
        Nodes are shared between lookups until the records change: do not modify them."""
        self._check_generation()
        try:
            return self._memo[labels]
        except KeyError:
            pass
        node = self._build(labels)
        if len(self._memo) >= self.memo_entries:
            self._memo.clear()
        self._memo[labels] = node
        return node

    def _check_generation(self) -> None:
        if self._memo_generation != self.records.generation:
            self._memo.clear()
            self._soa = None
            self._memo_generation = self.records.generation

    def _build(self, labels: tuple[str, ...]) -> Node | None:
        n = len(labels)
        if n == 0:
            return self._apex()
        top = labels[-1]
        if top == "svc":
            if n == 1:
                return Node()
            if n == 2:
                return Node() if self.records.has_namespace(labels[0]) else None
            svc = self.records.service(labels[-2], labels[-3])
            if svc is None:
                return None
            if n == 3:
                return self._service_node(svc)
            if n == 4:
                return self._endpoint_node(svc, labels[0])
            if n == 5:
                return self._srv_node(svc, labels[0], labels[1])
            return None
        if top == "pod":
            if n <= 2:
                return Node()
            if n == 3:
                return self._pod_node(labels[0])
            return None
        if labels == ("dns-version",):
            node = Node()
            node.add(TXT(IN, dns.rdatatype.TXT, [SCHEMA_VERSION.encode()]))
            return node
        if labels == ("dns",):
            return Node()
        if labels == ("ns", "dns"):
            node = Node()
            for ip in self.zone.nameserver_ips:
                node.add(_address(ip))
            return node
        return None

    def _apex(self) -> Node:
        node = Node()
        node.add(self.soa())
        node.add(NS(IN, dns.rdatatype.NS, _absolute(("ns", "dns"), self.zone)))
        return node

    def soa(self) -> SOA:
        self._check_generation()
        if self._soa is None:
            self._soa = SOA(IN, dns.rdatatype.SOA, _absolute(("ns", "dns"), self.zone),
                            _absolute(("hostmaster",), self.zone), self.records.serial, SOA_REFRESH, SOA_RETRY,
                            SOA_EXPIRE, self.zone.ttl)
        return self._soa

    def _service_node(self, svc: ServiceEntry) -> Node | None:
        node = Node()
        if svc.external_name:
            try:
                node.cname = dns.name.from_text(svc.external_name)
            except dns.exception.DNSException:
                return None  # validation should have refused it; nothing sane to point at
            return node
        own = _absolute((svc.name, svc.namespace, "svc"), self.zone)
        if not svc.headless:
            for ip in svc.cluster_ips:
                node.add(_address(ip))
            for port in svc.ports:
                node.add(SRV(IN, dns.rdatatype.SRV, 0, _weight(len(svc.ports)), port.port, own))
            node.additional = self._address_rrsets(own, svc.cluster_ips)
            return node
        endpoints = self.records.endpoints(svc.namespace, svc.name)
        if not endpoints:
            return None  # the spec: a headless Service with no ready endpoint is NXDOMAIN
        for ip in dict.fromkeys(ep.address for ep in endpoints):
            node.add(_address(ip))
        targets = [(ep, port) for ep in endpoints for port in ep.ports]
        self._add_endpoint_srvs(node, svc, targets)
        return node

    def _endpoint_node(self, svc: ServiceEntry, label: str) -> Node | None:
        if label.startswith("_"):
            # `_<proto>.<svc>...`: the empty parent of SRV names; it exists when they do.
            protocol = label[1:]
            ports = svc.ports if not svc.headless else [p for ep in self.records.endpoints(svc.namespace, svc.name)
                                                          for p in ep.ports]
            return Node() if any(p.protocol == protocol and p.name for p in ports) else None
        if not svc.headless:
            return None
        matches = [ep for ep in self.records.endpoints(svc.namespace, svc.name) if ep.label == label]
        if not matches:
            return None
        node = Node()
        for ip in dict.fromkeys(ep.address for ep in matches):
            node.add(_address(ip))
        return node

    def _srv_node(self, svc: ServiceEntry, port_label: str, proto_label: str) -> Node | None:
        if not (port_label.startswith("_") and proto_label.startswith("_")):
            return None
        name, protocol = port_label[1:], proto_label[1:]
        node = Node()
        if svc.headless:
            targets = [(ep, port) for ep in self.records.endpoints(svc.namespace, svc.name) for port in ep.ports
                       if port.name == name and port.protocol == protocol]
            if not targets:
                return None
            self._add_endpoint_srvs(node, svc, targets)
            return node
        ports = [p for p in svc.ports if p.name and p.name == name and p.protocol == protocol]
        if not ports or svc.external_name:
            return None
        own = _absolute((svc.name, svc.namespace, "svc"), self.zone)
        for port in ports:
            node.add(SRV(IN, dns.rdatatype.SRV, 0, _weight(len(ports)), port.port, own))
        node.additional = self._address_rrsets(own, svc.cluster_ips)
        return node

    def _add_endpoint_srvs(self, node: Node, svc: ServiceEntry, targets: list[tuple[EndpointEntry, Port]]) -> None:
        by_target: dict[dns.name.Name, list[str]] = {}
        weight = _weight(len(targets))
        for ep, port in targets:
            target = _absolute((ep.label, svc.name, svc.namespace, "svc"), self.zone)
            node.add(SRV(IN, dns.rdatatype.SRV, 0, weight, port.port, target))
            by_target.setdefault(target, [])
            if ep.address not in by_target[target]:
                by_target[target].append(ep.address)
        for target, ips in by_target.items():
            node.additional.extend(self._address_rrsets(target, ips))

    def _pod_node(self, label: str) -> Node | None:
        try:
            ip = ipaddress.IPv4Address(label.replace("-", "."))
        except ValueError:
            try:
                ip6 = ipaddress.IPv6Address(label.replace("-", ":"))
            except ValueError:
                return None
            node = Node()
            node.add(_address(str(ip6)))
            return node
        node = Node()
        node.add(_address(str(ip)))
        return node

    def _address_rrsets(self, name: dns.name.Name, ips: Iterable[str]) -> list[dns.rrset.RRset]:
        out: dict[RdType, dns.rrset.RRset] = {}
        for ip in ips:
            rdata = _address(ip)
            rrset = out.setdefault(rdata.rdtype, dns.rrset.RRset(name, IN, rdata.rdtype))
            rrset.add(rdata, self.zone.ttl)
        return list(out.values())

    # ---- the answer --------------------------------------------------------------------

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The response to ``query`` (which must have been parsed without error)."""
        response = dns.message.make_response(query, our_payload=ADVERTISED_PAYLOAD)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if question.rdclass not in (IN, dns.rdataclass.ANY):
            response.set_rcode(dns.rcode.REFUSED)
        elif qname.is_subdomain(self.zone.domain):
            self._answer_in_zone(response, qname, qtype)
        elif qtype in (dns.rdatatype.PTR, dns.rdatatype.ANY) and self._answer_reverse(response, qname):
            response.flags |= dns.flags.AA
        else:
            response.set_rcode(dns.rcode.REFUSED)
        return response

    def _answer_in_zone(self, response: dns.message.Message, qname: dns.name.Name, qtype: RdType) -> None:
        response.flags |= dns.flags.AA
        name = qname
        answered = False
        for _ in range(MAX_CNAME_CHAIN):
            node = self.lookup(_labels(name.relativize(self.zone.domain)))
            if node is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                break
            if node.cname is not None and qtype != dns.rdatatype.CNAME:
                rrset = dns.rrset.RRset(name, IN, dns.rdatatype.CNAME)
                rrset.add(CNAME(IN, dns.rdatatype.CNAME, node.cname), self.zone.ttl)
                response.answer.append(rrset)
                if qtype == dns.rdatatype.ANY or not node.cname.is_subdomain(self.zone.domain):
                    return  # the client's resolver follows it elsewhere
                name = node.cname
                continue
            answered = self._add_answers(response, name, node, qtype)
            break
        if not answered:  # NXDOMAIN or NODATA: the SOA says how long to remember that
            rrset = dns.rrset.RRset(self.zone.domain, IN, dns.rdatatype.SOA)
            rrset.add(self.soa(), self.zone.ttl)
            response.authority.append(rrset)

    def _add_answers(self, response: dns.message.Message, name: dns.name.Name, node: Node, qtype: RdType) -> bool:
        records = node.records
        if node.cname is not None:  # asked for the CNAME itself (any other type followed it)
            records = {dns.rdatatype.CNAME: [CNAME(IN, dns.rdatatype.CNAME, node.cname)]}
        types = list(records) if qtype == dns.rdatatype.ANY else [qtype]
        answered = False
        for rdtype in types:
            rdatas = records.get(rdtype)
            if not rdatas:
                continue
            if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and len(rdatas) > 1:
                rdatas = self.rng.sample(rdatas, len(rdatas))
            rrset = dns.rrset.RRset(name, IN, rdtype)
            for rdata in rdatas:
                rrset.add(rdata, self.zone.ttl)
            response.answer.append(rrset)
            answered = True
            if rdtype == dns.rdatatype.SRV:
                response.additional.extend(node.additional)
        return answered

    def _answer_reverse(self, response: dns.message.Message, qname: dns.name.Name) -> bool:
        try:
            address = str(ipaddress.ip_address(dns.reversename.to_address(qname)))
        except (dns.exception.DNSException, ValueError):
            return False
        names = self.records.reverse(address)
        if not names:
            return False
        rrset = dns.rrset.RRset(qname, IN, dns.rdatatype.PTR)
        for labels in names:
            rrset.add(PTR(IN, dns.rdatatype.PTR, _absolute(labels, self.zone)), self.zone.ttl)
        response.answer.append(rrset)
        return True


def _weight(count: int) -> int:
    """Equal shares of 100 among records of one priority, as CoreDNS weighs them."""
    return max(1, 100 // max(1, count))


def resolve(query: dns.message.Message, records: ClusterRecords, zone: ZoneConfig,
            rng: random.Random | None = None) -> dns.message.Message:
    """The answer to one parsed query (see the module docstring)."""
    return Resolver(records, zone, rng).answer(query)
