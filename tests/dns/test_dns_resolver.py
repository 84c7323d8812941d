"""The resolver's answers, from queries built with dnspython against records fed plain
Service and EndpointSlice dicts (the Kubernetes DNS spec's records, CoreDNS's behaviour)."""

from __future__ import annotations

import random
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from control_plane.dns.records import ClusterRecords
from control_plane.dns.resolver import ZoneConfig, resolve

ZONE = ZoneConfig.for_domain("cluster.local", nameserver_ips=["10.96.0.10"])
SOA_TEXT = "ns.dns.cluster.local. hostmaster.cluster.local."


def service(name: str, ns: str = "default", cluster_ip: str | None = "10.96.0.20",
            ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": ns},
                            "spec": {"ports": ports if ports is not None else [], **spec}}
    if cluster_ip is not None:
        body["spec"]["clusterIP"] = cluster_ip
    return body


def endpoint_slice(name: str, svc: str, endpoints: list[dict[str, Any]], ns: str = "default",
                   ports: list[dict[str, Any]] | None = None, address_type: str = "IPv4") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": address_type, "endpoints": endpoints, "ports": ports or []}


def ep(ip: str, hostname: str | None = None, ready: bool | None = True) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}}
    if hostname:
        out["hostname"] = hostname
    return out


@pytest.fixture
def records() -> ClusterRecords:
    r = ClusterRecords(clock=lambda: 1_700_000_000)
    r.upsert_service(service("web", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                           {"name": "dns", "port": 53, "protocol": "UDP"},
                                           {"port": 8080, "protocol": "TCP"}]))
    r.upsert_service(service("db", ns="data", cluster_ip="None", ports=[{"name": "pg", "port": 5432}]))
    r.upsert_slice(endpoint_slice("db-abc", "db", ns="data", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}],
                                  endpoints=[ep("10.244.1.5", "db-0"), ep("10.244.2.6", "db-1"),
                                             ep("10.244.3.7"), ep("10.244.3.8", "db-3", ready=False),
                                             ep("10.244.3.9", "db-4", ready=None)]))
    r.upsert_service(service("empty", ns="data", cluster_ip="None"))
    r.upsert_service(service("ext", cluster_ip=None, type="ExternalName", externalName="example.com."))
    r.upsert_service(service("alias", cluster_ip=None, type="ExternalName",
                             externalName="web.default.svc.cluster.local"))
    return r


def ask(records: ClusterRecords, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
    return resolve(dns.message.make_query(name, rdtype, **kw), records, ZONE, rng=random.Random(1))


def answers(response: dns.message.Message) -> list[str]:
    """Answer records as zone-file lines, sorted (order is random for A/AAAA)."""
    return sorted(line for rrset in response.answer for line in rrset.to_text().splitlines())


def section(rrsets: list[Any]) -> list[str]:
    return sorted(line for rrset in rrsets for line in rrset.to_text().splitlines())


def assert_negative(response: dns.message.Message, rcode: dns.rcode.Rcode, records: ClusterRecords) -> None:
    assert response.rcode() == rcode
    assert response.answer == []
    assert section(response.authority) == [f"cluster.local. 5 IN SOA {SOA_TEXT} {records.serial} 7200 1800 86400 5"]


def test_clusterip_service_a_record(records: ClusterRecords) -> None:
    r = ask(records, "web.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA and not r.flags & dns.flags.RA
    assert answers(r) == ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"]


def test_names_are_case_insensitive_and_keep_the_askers_case(records: ClusterRecords) -> None:
    r = ask(records, "WEB.Default.SVC.cluster.LOCAL")
    assert answers(r) == ["WEB.Default.SVC.cluster.LOCAL. 5 IN A 10.96.0.20"]


def test_existing_name_without_that_type_is_nodata_with_soa(records: ClusterRecords) -> None:
    assert_negative(ask(records, "web.default.svc.cluster.local", "AAAA"), dns.rcode.NOERROR, records)
    assert_negative(ask(records, "web.default.svc.cluster.local", "TXT"), dns.rcode.NOERROR, records)


@pytest.mark.parametrize("name", ["nope.default.svc.cluster.local", "web.other.svc.cluster.local",
                                  "x.web.default.svc.cluster.local", "a.b.c.d.e.svc.cluster.local",
                                  "whatever.cluster.local", "db.data.pod.cluster.local.extra.cluster.local"])
def test_unknown_names_in_the_zone_are_nxdomain_with_soa(records: ClusterRecords, name: str) -> None:
    assert_negative(ask(records, name), dns.rcode.NXDOMAIN, records)


@pytest.mark.parametrize("name", ["svc.cluster.local", "default.svc.cluster.local", "data.svc.cluster.local",
                                  "pod.cluster.local", "default.pod.cluster.local",
                                  "_tcp.web.default.svc.cluster.local",
                                  "dns.cluster.local"])
def test_empty_non_terminals_exist(records: ClusterRecords, name: str) -> None:
    assert_negative(ask(records, name), dns.rcode.NOERROR, records)


def test_headless_service_one_a_per_ready_endpoint(records: ClusterRecords) -> None:
    r = ask(records, "db.data.svc.cluster.local")
    assert answers(r) == [f"db.data.svc.cluster.local. 5 IN A {ip}"
                          for ip in ("10.244.1.5", "10.244.2.6", "10.244.3.7", "10.244.3.9")]


def test_headless_answers_are_shuffled(records: ClusterRecords) -> None:
    orders = {tuple(str(rd) for rd in resolve(dns.message.make_query("db.data.svc.cluster.local", "A"), records,
                                              ZONE, rng=random.Random(seed)).answer[0])
              for seed in range(20)}
    assert len(orders) > 1


def test_headless_without_ready_endpoints_is_nxdomain(records: ClusterRecords) -> None:
    assert_negative(ask(records, "empty.data.svc.cluster.local"), dns.rcode.NXDOMAIN, records)


def test_endpoint_hostnames_and_dashed_addresses(records: ClusterRecords) -> None:
    assert answers(ask(records, "db-0.db.data.svc.cluster.local")) == [
        "db-0.db.data.svc.cluster.local. 5 IN A 10.244.1.5"]
    assert answers(ask(records, "10-244-3-7.db.data.svc.cluster.local")) == [
        "10-244-3-7.db.data.svc.cluster.local. 5 IN A 10.244.3.7"]
    assert_negative(ask(records, "db-3.db.data.svc.cluster.local"), dns.rcode.NXDOMAIN, records)  # not ready
    assert_negative(ask(records, "db-0.web.default.svc.cluster.local"), dns.rcode.NXDOMAIN, records)  # not headless


def test_srv_for_a_named_port_of_a_clusterip_service(records: ClusterRecords) -> None:
    r = ask(records, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert answers(r) == ["_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."]
    assert section(r.additional) == ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"]
    assert answers(ask(records, "_dns._udp.web.default.svc.cluster.local", "SRV")) == [
        "_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local."]


def test_srv_names_that_do_not_match_a_named_port(records: ClusterRecords) -> None:
    assert_negative(ask(records, "_http._udp.web.default.svc.cluster.local", "SRV"), dns.rcode.NXDOMAIN, records)
    assert_negative(ask(records, "_nope._tcp.web.default.svc.cluster.local", "SRV"), dns.rcode.NXDOMAIN, records)
    assert_negative(ask(records, "_http._tcp.web.default.svc.cluster.local", "A"), dns.rcode.NOERROR, records)


def test_srv_for_headless_is_one_record_per_endpoint_and_port(records: ClusterRecords) -> None:
    r = ask(records, "_pg._tcp.db.data.svc.cluster.local", "SRV")
    targets = ["db-0", "db-1", "10-244-3-7", "db-4"]
    assert answers(r) == sorted(f"_pg._tcp.db.data.svc.cluster.local. 5 IN SRV 0 25 5432 {t}.db.data.svc.cluster.local."
                                for t in targets)
    assert section(r.additional) == sorted(f"{t}.db.data.svc.cluster.local. 5 IN A {ip}" for t, ip in
                                           zip(targets, ("10.244.1.5", "10.244.2.6", "10.244.3.7", "10.244.3.9"),
                                               strict=True))


def test_srv_on_the_service_name_lists_every_port(records: ClusterRecords) -> None:
    assert answers(ask(records, "web.default.svc.cluster.local", "SRV")) == sorted(
        f"web.default.svc.cluster.local. 5 IN SRV 0 33 {port} web.default.svc.cluster.local."
        for port in (80, 53, 8080))


def test_externalname_is_a_cname(records: ClusterRecords) -> None:
    r = ask(records, "ext.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR
    assert answers(r) == ["ext.default.svc.cluster.local. 5 IN CNAME example.com."]


def test_externalname_inside_the_zone_is_followed(records: ClusterRecords) -> None:
    assert answers(ask(records, "alias.default.svc.cluster.local")) == [
        "alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
        "web.default.svc.cluster.local. 5 IN A 10.96.0.20"]
    assert answers(ask(records, "alias.default.svc.cluster.local", "CNAME")) == [
        "alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local."]


def test_cname_loops_end(records: ClusterRecords) -> None:
    for name, target in (("a", "b"), ("b", "a")):
        records.upsert_service(service(name, cluster_ip=None, type="ExternalName",
                                       externalName=f"{target}.default.svc.cluster.local"))
    r = ask(records, "a.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR and 1 < len(r.answer) <= 8


@pytest.mark.parametrize("name,rdtype", [("example.com", "A"), ("kubernetes.io", "AAAA"), ("local", "SOA"),
                                         ("cluster.local.example.com", "A"), ("9.9.9.9.in-addr.arpa", "PTR"),
                                         ("20.0.96.10.in-addr.arpa", "A")])
def test_names_outside_the_zone_are_refused(records: ClusterRecords, name: str, rdtype: str) -> None:
    r = ask(records, name, rdtype)
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.flags & dns.flags.AA and r.answer == [] and r.authority == []


def test_ptr_for_cluster_ips_and_named_headless_endpoints(records: ClusterRecords) -> None:
    assert answers(ask(records, "20.0.96.10.in-addr.arpa", "PTR")) == [
        "20.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."]
    assert answers(ask(records, "5.1.244.10.in-addr.arpa", "PTR")) == [
        "5.1.244.10.in-addr.arpa. 5 IN PTR db-0.db.data.svc.cluster.local."]
    assert ask(records, "7.3.244.10.in-addr.arpa", "PTR").rcode() == dns.rcode.REFUSED  # no hostname: no PTR


def test_pod_records(records: ClusterRecords) -> None:
    assert answers(ask(records, "10-244-1-9.anything.pod.cluster.local")) == [
        "10-244-1-9.anything.pod.cluster.local. 5 IN A 10.244.1.9"]
    assert_negative(ask(records, "10-244-1-999.default.pod.cluster.local"), dns.rcode.NXDOMAIN, records)


def test_apex_schema_version_and_nameserver(records: ClusterRecords) -> None:
    assert answers(ask(records, "cluster.local", "SOA")) == [
        f"cluster.local. 5 IN SOA {SOA_TEXT} {records.serial} 7200 1800 86400 5"]
    assert records.serial >= 1_700_000_000  # the time of the last change
    assert answers(ask(records, "cluster.local", "NS")) == ["cluster.local. 5 IN NS ns.dns.cluster.local."]
    assert answers(ask(records, "ns.dns.cluster.local")) == ["ns.dns.cluster.local. 5 IN A 10.96.0.10"]
    assert answers(ask(records, "dns-version.cluster.local", "TXT")) == ['dns-version.cluster.local. 5 IN TXT "1.0.1"']


def test_any_returns_every_type_at_the_name(records: ClusterRecords) -> None:
    types = {rrset.rdtype for rrset in ask(records, "web.default.svc.cluster.local", "ANY").answer}
    assert types == {dns.rdatatype.A, dns.rdatatype.SRV}


def test_other_opcodes_are_not_implemented(records: ClusterRecords) -> None:
    query = dns.message.make_query("web.default.svc.cluster.local", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    assert resolve(query, records, ZONE).rcode() == dns.rcode.NOTIMP


def test_edns_is_answered_with_our_payload(records: ClusterRecords) -> None:
    r = ask(records, "web.default.svc.cluster.local", use_edns=0, payload=4096)
    assert r.edns == 0 and r.payload == 1232


def test_another_cluster_domain() -> None:
    records = ClusterRecords()
    records.upsert_service(service("web"))
    zone = ZoneConfig.for_domain("corp.example.")
    r = resolve(dns.message.make_query("web.default.svc.corp.example", "A"), records, zone)
    assert answers(r) == ["web.default.svc.corp.example. 5 IN A 10.96.0.20"]
    assert resolve(dns.message.make_query("web.default.svc.cluster.local", "A"), records,
                   zone).rcode() == dns.rcode.REFUSED


def test_changes_are_seen_at_once(records: ClusterRecords) -> None:
    generation = records.generation
    records.upsert_service(service("web", cluster_ip="10.96.0.99"))
    assert answers(ask(records, "web.default.svc.cluster.local")) == [
        "web.default.svc.cluster.local. 5 IN A 10.96.0.99"]
    records.delete_service(service("web"))
    assert_negative(ask(records, "web.default.svc.cluster.local"), dns.rcode.NXDOMAIN, records)
    records.upsert_service(service("only", ns="solo"))
    assert_negative(ask(records, "solo.svc.cluster.local"), dns.rcode.NOERROR, records)
    records.delete_service(service("only", ns="solo"))
    assert_negative(ask(records, "solo.svc.cluster.local"), dns.rcode.NXDOMAIN, records)  # no Service left there
    assert records.generation == generation + 4
