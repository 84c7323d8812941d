"""The renderer: the whole ruleset for a fixed set of Services and EndpointSlices, exactly.

The inputs are API objects (as the informers deliver them), so parsing is covered too.
The expected text was checked rule by rule against kube-proxy's proxier.go and its
proxier_test.go; chain names are kube-proxy's own hashes (see `test_chain_names_are_kube_proxys`).
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent.proxy.iptables_rules import (
    LARGE_CLUSTER_ENDPOINTS,
    NodeInfo,
    Ruleset,
    endpoint_chain,
    render_ruleset,
    service_chain,
)
from node_agent.proxy.model import (
    Endpoint,
    EndpointsMap,
    ServicePort,
    ServicePortName,
    endpoints_from_slices,
    service_ports,
)
from node_agent.proxy.proxier import ProxyState, SyncStats

Obj = dict[str, Any]
NODE = NodeInfo("node-a")


def svc(name: str, ip: str, ports: list[Obj], type_: str = "ClusterIP", ns: str = "default", **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name},
            "spec": {"type": type_, "clusterIP": ip, "ports": ports, **spec}}


def eps(service: str, ports: list[Obj], endpoints: list[Obj], ns: str = "default", name: str | None = None) -> Obj:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": ns, "name": name or f"{service}-abc12",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints}


def ep(ip: str, node: str = "node-b", ready: bool = True, serving: bool | None = None,
       terminating: bool = False) -> Obj:
    return {"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": ready if serving is None else serving,
                           "terminating": terminating}}


SERVICES = [
    svc("web", "10.96.0.10", [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]),
    svc("nodeport", "10.96.0.11", [{"port": 80, "protocol": "TCP", "nodePort": 30080}], type_="NodePort",
        externalTrafficPolicy="Cluster"),
    svc("sticky", "10.96.0.12", [{"name": "https", "port": 443, "protocol": "TCP"}], sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}}),
    svc("empty", "10.96.0.13", [{"name": "dns", "port": 53, "protocol": "UDP"}]),
    svc("local", "10.96.0.14", [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30081}],
        type_="NodePort", externalTrafficPolicy="Local"),
    svc("headless", "None", [{"port": 80}]),
    svc("external", "", [], type_="ExternalName", externalName="example.com"),
]
SLICES = [
    eps("web", [{"name": "http", "port": 8080, "protocol": "TCP"}],
        [ep("10.244.1.2", "node-a"), ep("10.244.2.2"), ep("10.244.3.2", "node-c"),
         ep("10.244.1.9", "node-a", ready=False)]),
    eps("nodeport", [{"name": "", "port": 8080, "protocol": "TCP"}], [ep("10.244.2.3")]),
    eps("sticky", [{"name": "https", "port": 8443, "protocol": "TCP"}], [ep("10.244.1.4", "node-a"), ep("10.244.2.4")]),
    eps("empty", [{"name": "dns", "port": 5353, "protocol": "UDP"}], [ep("10.244.2.6", ready=False)]),
    eps("local", [{"name": "http", "port": 8080, "protocol": "TCP"}], [ep("10.244.1.5", "node-a"), ep("10.244.2.5")]),
]

EXPECTED = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A KUBE-SERVICES -m comment --comment "default/empty:dns has no endpoints" -m udp -p udp -d 10.96.0.13 --dport 53 -j REJECT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-EXT-3ENVKKDUT2EZ6WIE - [0:0]
:KUBE-SVC-3ENVKKDUT2EZ6WIE - [0:0]
:KUBE-SVL-3ENVKKDUT2EZ6WIE - [0:0]
:KUBE-SEP-SA5H4ODZBICXEPBI - [0:0]
:KUBE-SEP-VIUFGWCZLOCRRXY7 - [0:0]
:KUBE-EXT-IFSGUVPJVX5CWNQP - [0:0]
:KUBE-SVC-IFSGUVPJVX5CWNQP - [0:0]
:KUBE-SEP-HGQXBRO2AFHI3DPC - [0:0]
:KUBE-SVC-VUFIVQ7ZMC77NTPD - [0:0]
:KUBE-SEP-ESIY34USJ243EO4W - [0:0]
:KUBE-SEP-NEG6VM7T5HQ7KRAB - [0:0]
:KUBE-SVC-CDGGSHYLG3RE2FKL - [0:0]
:KUBE-SEP-UIQK3OSOSTRHRPBX - [0:0]
:KUBE-SEP-4EX2N4PG4ASNZOBF - [0:0]
:KUBE-SEP-UTFLDO4GY7FI2SFB - [0:0]
-A KUBE-SERVICES -m comment --comment "default/local:http cluster IP" -m tcp -p tcp -d 10.96.0.14 --dport 80 -j KUBE-SVC-3ENVKKDUT2EZ6WIE
-A KUBE-SERVICES -m comment --comment "default/nodeport cluster IP" -m tcp -p tcp -d 10.96.0.11 --dport 80 -j KUBE-SVC-IFSGUVPJVX5CWNQP
-A KUBE-SERVICES -m comment --comment "default/sticky:https cluster IP" -m tcp -p tcp -d 10.96.0.12 --dport 443 -j KUBE-SVC-VUFIVQ7ZMC77NTPD
-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-CDGGSHYLG3RE2FKL
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -m comment --comment "default/local:http" -m tcp -p tcp --dport 30081 -j KUBE-EXT-3ENVKKDUT2EZ6WIE
-A KUBE-NODEPORTS -m comment --comment "default/nodeport" -m tcp -p tcp --dport 30080 -j KUBE-EXT-IFSGUVPJVX5CWNQP
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-EXT-3ENVKKDUT2EZ6WIE -m comment --comment "pod traffic for default/local:http external destinations" -s 10.244.0.0/16 -j KUBE-SVC-3ENVKKDUT2EZ6WIE
-A KUBE-EXT-3ENVKKDUT2EZ6WIE -m comment --comment "masquerade LOCAL traffic for default/local:http external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-3ENVKKDUT2EZ6WIE -m comment --comment "route LOCAL traffic for default/local:http external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-3ENVKKDUT2EZ6WIE
-A KUBE-EXT-3ENVKKDUT2EZ6WIE -j KUBE-SVL-3ENVKKDUT2EZ6WIE
-A KUBE-SVC-3ENVKKDUT2EZ6WIE -m comment --comment "default/local:http cluster IP" -m tcp -p tcp -d 10.96.0.14 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-3ENVKKDUT2EZ6WIE -m comment --comment "default/local:http -> 10.244.1.5:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SA5H4ODZBICXEPBI
-A KUBE-SVC-3ENVKKDUT2EZ6WIE -m comment --comment "default/local:http -> 10.244.2.5:8080" -j KUBE-SEP-VIUFGWCZLOCRRXY7
-A KUBE-SVL-3ENVKKDUT2EZ6WIE -m comment --comment "default/local:http -> 10.244.1.5:8080" -j KUBE-SEP-SA5H4ODZBICXEPBI
-A KUBE-SEP-SA5H4ODZBICXEPBI -m comment --comment "default/local:http" -s 10.244.1.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-SA5H4ODZBICXEPBI -m comment --comment "default/local:http" -m tcp -p tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SEP-VIUFGWCZLOCRRXY7 -m comment --comment "default/local:http" -s 10.244.2.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-VIUFGWCZLOCRRXY7 -m comment --comment "default/local:http" -m tcp -p tcp -j DNAT --to-destination 10.244.2.5:8080
-A KUBE-EXT-IFSGUVPJVX5CWNQP -m comment --comment "masquerade traffic for default/nodeport external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-IFSGUVPJVX5CWNQP -j KUBE-SVC-IFSGUVPJVX5CWNQP
-A KUBE-SVC-IFSGUVPJVX5CWNQP -m comment --comment "default/nodeport cluster IP" -m tcp -p tcp -d 10.96.0.11 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-IFSGUVPJVX5CWNQP -m comment --comment "default/nodeport -> 10.244.2.3:8080" -j KUBE-SEP-HGQXBRO2AFHI3DPC
-A KUBE-SEP-HGQXBRO2AFHI3DPC -m comment --comment "default/nodeport" -s 10.244.2.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-HGQXBRO2AFHI3DPC -m comment --comment "default/nodeport" -m tcp -p tcp -j DNAT --to-destination 10.244.2.3:8080
-A KUBE-SVC-VUFIVQ7ZMC77NTPD -m comment --comment "default/sticky:https cluster IP" -m tcp -p tcp -d 10.96.0.12 --dport 443 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-VUFIVQ7ZMC77NTPD -m comment --comment "default/sticky:https -> 10.244.1.4:8443" -m recent --name KUBE-SEP-ESIY34USJ243EO4W --rcheck --seconds 600 --reap -j KUBE-SEP-ESIY34USJ243EO4W
-A KUBE-SVC-VUFIVQ7ZMC77NTPD -m comment --comment "default/sticky:https -> 10.244.2.4:8443" -m recent --name KUBE-SEP-NEG6VM7T5HQ7KRAB --rcheck --seconds 600 --reap -j KUBE-SEP-NEG6VM7T5HQ7KRAB
-A KUBE-SVC-VUFIVQ7ZMC77NTPD -m comment --comment "default/sticky:https -> 10.244.1.4:8443" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-ESIY34USJ243EO4W
-A KUBE-SVC-VUFIVQ7ZMC77NTPD -m comment --comment "default/sticky:https -> 10.244.2.4:8443" -j KUBE-SEP-NEG6VM7T5HQ7KRAB
-A KUBE-SEP-ESIY34USJ243EO4W -m comment --comment "default/sticky:https" -s 10.244.1.4 -j KUBE-MARK-MASQ
-A KUBE-SEP-ESIY34USJ243EO4W -m comment --comment "default/sticky:https" -m recent --name KUBE-SEP-ESIY34USJ243EO4W --set -m tcp -p tcp -j DNAT --to-destination 10.244.1.4:8443
-A KUBE-SEP-NEG6VM7T5HQ7KRAB -m comment --comment "default/sticky:https" -s 10.244.2.4 -j KUBE-MARK-MASQ
-A KUBE-SEP-NEG6VM7T5HQ7KRAB -m comment --comment "default/sticky:https" -m recent --name KUBE-SEP-NEG6VM7T5HQ7KRAB --set -m tcp -p tcp -j DNAT --to-destination 10.244.2.4:8443
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.1.2:8080" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-UIQK3OSOSTRHRPBX
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.2.2:8080" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-4EX2N4PG4ASNZOBF
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.3.2:8080" -j KUBE-SEP-UTFLDO4GY7FI2SFB
-A KUBE-SEP-UIQK3OSOSTRHRPBX -m comment --comment "default/web:http" -s 10.244.1.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-UIQK3OSOSTRHRPBX -m comment --comment "default/web:http" -m tcp -p tcp -j DNAT --to-destination 10.244.1.2:8080
-A KUBE-SEP-4EX2N4PG4ASNZOBF -m comment --comment "default/web:http" -s 10.244.2.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-4EX2N4PG4ASNZOBF -m comment --comment "default/web:http" -m tcp -p tcp -j DNAT --to-destination 10.244.2.2:8080
-A KUBE-SEP-UTFLDO4GY7FI2SFB -m comment --comment "default/web:http" -s 10.244.3.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-UTFLDO4GY7FI2SFB -m comment --comment "default/web:http" -m tcp -p tcp -j DNAT --to-destination 10.244.3.2:8080
COMMIT
"""


def model(services: list[Obj], slices: list[Obj], node_name: str = "node-a") -> tuple[list[ServicePort], EndpointsMap]:
    ports = [p for s in services for p in service_ports(s)]
    endpoints: EndpointsMap = {}
    for s in slices:
        endpoints.update(endpoints_from_slices([s], node_name))
    return ports, endpoints


def fixture_text() -> str:
    return render_ruleset(*model(SERVICES, SLICES), NODE).restore_text()


def test_full_ruleset_for_a_fixed_set_of_services() -> None:
    assert fixture_text() == EXPECTED


def test_rendering_is_deterministic_whatever_the_input_order() -> None:
    ports, endpoints = model(list(reversed(SERVICES)), list(reversed(SLICES)))
    assert render_ruleset(ports, endpoints, NODE).restore_text() == EXPECTED


def test_the_proxiers_cached_rendering_gives_the_same_text() -> None:
    """The proxier reuses the rules of unchanged service ports; the result must not differ."""
    state = ProxyState(NODE)
    snapshot = {f"default/{s['metadata']['name']}": (s, [x for x in SLICES if x["metadata"]["labels"][
        "kubernetes.io/service-name"] == s["metadata"]["name"]]) for s in SERVICES}
    state.update(snapshot)
    first = state.render(SyncStats())
    stats = SyncStats()
    second = state.render(stats)
    assert first.restore_text() == second.restore_text() == EXPECTED
    assert stats.rendered == 0, "nothing changed, so every service port should come from the cache"


def test_chain_names_are_kube_proxys() -> None:
    # the values kube-proxy's own proxier_test.go expects for ns1/svc1:p80 and endpoint 10.180.0.1:80
    spn = ServicePortName("ns1", "svc1", "p80", "TCP")
    assert service_chain(spn) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert endpoint_chain(spn, "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"


def _spn(name: str, port: str = "p80", proto: str = "TCP") -> ServicePortName:
    return ServicePortName("ns", name, port, proto)


def test_internal_traffic_policy_local_uses_only_local_endpoints_and_drops_without_them() -> None:
    with_local = ServicePort(_spn("a"), "10.96.1.1", 80, internal_policy_local=True)
    without_local = ServicePort(_spn("b"), "10.96.1.2", 80, internal_policy_local=True)
    endpoints = {with_local.name: (Endpoint("10.244.1.1", 80, is_local=True), Endpoint("10.244.2.1", 80)),
                 without_local.name: (Endpoint("10.244.2.2", 80),)}
    rs = render_ruleset([with_local, without_local], endpoints, NODE)
    svl = "KUBE-SVL-" + service_chain(with_local.name).removeprefix("KUBE-SVC-")
    assert f"-A KUBE-SERVICES -m comment --comment \"ns/a:p80 cluster IP\" -m tcp -p tcp -d 10.96.1.1 --dport 80 -j {svl}" \
        in rs.nat["KUBE-SERVICES"]
    assert rs.nat[svl][-1] == f"-A {svl} -m comment --comment \"ns/a:p80 -> 10.244.1.1:80\" -j " \
        f"{endpoint_chain(with_local.name, '10.244.1.1:80')}"
    assert not any("10.244.2.1" in line for rules in rs.nat.values() for line in rules), "remote endpoint used"
    assert rs.filter["KUBE-SERVICES"] == (
        "-A KUBE-SERVICES -m comment --comment \"ns/b:p80 has no local endpoints\" -m tcp -p tcp -d 10.96.1.2 "
        "--dport 80 -j DROP",)


def test_terminating_endpoints_serve_only_when_no_endpoint_is_ready() -> None:
    sp = ServicePort(_spn("a"), "10.96.1.1", 80)
    terminating = Endpoint("10.244.1.1", 80, ready=False, serving=True, terminating=True)
    not_serving = Endpoint("10.244.1.2", 80, ready=False, serving=False, terminating=True)
    ready = Endpoint("10.244.1.3", 80)
    only_terminating = render_ruleset([sp], {sp.name: (terminating, not_serving)}, NODE)
    assert "--to-destination 10.244.1.1:80" in only_terminating.restore_text()
    assert "10.244.1.2" not in only_terminating.restore_text()
    with_ready = render_ruleset([sp], {sp.name: (terminating, ready)}, NODE).restore_text()
    assert "--to-destination 10.244.1.3:80" in with_ready and "10.244.1.1" not in with_ready


def test_endpoint_conditions_default_as_in_kubernetes() -> None:
    """Absent ready means ready; absent serving means the value of ready; absent terminating means false."""
    slice_ = eps("a", [{"name": "p", "port": 80}],
                 [{"addresses": ["10.244.1.1"]}, {"addresses": ["10.244.1.2"], "conditions": {"ready": False}},
                  {"addresses": ["not-an-ip"]}, {"addresses": []}, {"addresses": ["10.244.1.3"], "nodeName": "node-a"}],
                 ns="ns")
    got = endpoints_from_slices([slice_], "node-a")[_spn("a", "p")]
    assert got == (Endpoint("10.244.1.1", 80), Endpoint("10.244.1.2", 80, ready=False, serving=False),
                   Endpoint("10.244.1.3", 80, is_local=True))


def test_an_endpoint_in_two_slices_counts_once_preferring_the_non_terminating_copy() -> None:
    ports = [{"name": "p", "port": 80}]
    old = eps("a", ports, [ep("10.244.1.1", ready=False, serving=True, terminating=True)], ns="ns", name="a-1")
    new = eps("a", ports, [ep("10.244.1.1")], ns="ns", name="a-2")
    for order in ([old, new], [new, old]):
        assert endpoints_from_slices(order, "node-a")[_spn("a", "p")] == (Endpoint("10.244.1.1", 80),)


def test_invalid_service_fields_are_left_out() -> None:
    bad = [svc("a", "10.96.0.300", [{"port": 80}], ns="ns"),
           svc("b", "fd00::1", [{"port": 80}], ns="ns"),
           svc("c", "10.96.0.3", [{"port": 0}, {"port": 70000}, {"port": "80"}, {"port": True},
                                  {"port": 80, "protocol": "ICMP"}, {"port": 81, "name": 5}], ns="ns")]
    assert [p for s in bad for p in service_ports(s)] == []
    assert service_ports(svc("d", "010.096.000.004", [{"port": 80}], ns="ns")) == []  # ambiguous octal-looking
    cluster_ip_only = service_ports(svc("e", "10.96.0.5", [{"port": 80, "nodePort": 30000}], ns="ns",
                                        externalTrafficPolicy="Local"))
    assert [(p.node_port, p.external_policy_local) for p in cluster_ip_only] == [(0, False)]


def test_large_clusters_drop_per_endpoint_comments() -> None:
    ports, endpoints = [], {}
    for i in range(LARGE_CLUSTER_ENDPOINTS // 2 + 1):
        sp = ServicePort(_spn(f"s{i}"), f"10.96.{i // 250}.{i % 250 + 1}", 80)
        ports.append(sp)
        endpoints[sp.name] = (Endpoint(f"10.244.{i // 250}.{i % 250 + 1}", 80),
                              Endpoint(f"10.245.{i // 250}.{i % 250 + 1}", 80))
    text = render_ruleset(ports, endpoints, NODE).restore_text()
    sep_lines = [line for line in text.splitlines() if line.startswith("-A KUBE-SEP-")]
    assert sep_lines and not any("--comment" in line for line in sep_lines)
    assert '-m comment --comment "ns/s0:p80 cluster IP"' in text  # the service-level comments stay


# ---- the jump graph is consistent for any input (kube-proxy's checkIPTablesRuleJumps) ----

BUILTIN_TARGETS = {"ACCEPT", "REJECT", "DROP", "MARK", "RETURN", "DNAT", "MASQUERADE"}
ROOTS = {"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-POSTROUTING",
         "KUBE-MARK-MASQ"}


def check_jumps(rs: Ruleset) -> None:
    for table, chains in rs.tables():
        jumped = set()
        for name, rules in chains.items():
            for line in rules:
                assert line.startswith(f"-A {name} "), line
                m = re.search(r" -j (\S+)", line)
                assert m, line
                jumped.add(m.group(1))
        jumped -= BUILTIN_TARGETS
        assert jumped <= set(chains), f"{table}: jumps to chains never created: {jumped - set(chains)}"
        empty = {c for c in jumped if not chains[c]} - {"KUBE-NODEPORTS"}
        assert not empty, f"{table}: jumps to empty chains {empty}"
        unused = set(chains) - jumped - ROOTS
        assert not unused, f"{table}: chains nothing jumps to: {unused}"


endpoint_st = st.builds(
    Endpoint, ip=st.sampled_from([f"10.244.{i}.{j}" for i in range(3) for j in range(1, 4)]),
    port=st.sampled_from([80, 8080]), is_local=st.booleans(), ready=st.booleans(), serving=st.booleans(),
    terminating=st.booleans())


@st.composite
def service_port_st(draw: st.DrawFn, index: int) -> tuple[ServicePort, tuple[Endpoint, ...]]:
    node_port = draw(st.sampled_from([0, 30000 + index]))
    sp = ServicePort(ServicePortName("ns", f"s{index}", draw(st.sampled_from(["", "http"])),
                                     draw(st.sampled_from(["TCP", "UDP", "SCTP"]))),
                     f"10.96.0.{index + 1}", 80, node_port=node_port,
                     sticky_seconds=draw(st.sampled_from([0, 10800])),
                     external_policy_local=node_port != 0 and draw(st.booleans()),
                     internal_policy_local=draw(st.booleans()))
    raw = draw(st.lists(endpoint_st, max_size=5))
    unique = {e.address: e for e in raw}
    return sp, tuple(unique[k] for k in sorted(unique))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=6).flatmap(
    lambda n: st.tuples(*(service_port_st(i) for i in range(n)))))
def test_every_jump_lands_in_a_created_nonempty_chain(services: tuple[tuple[ServicePort, tuple[Endpoint, ...]], ...]
                                                      ) -> None:
    rs = render_ruleset([sp for sp, _ in services], {sp.name: e for sp, e in services}, NODE)
    check_jumps(rs)
    for sp, eps_ in services:
        alone = render_ruleset([sp], {sp.name: eps_}, NODE).restore_text()
        for e in eps_:
            if not e.ready and not (e.serving and e.terminating):
                assert f"--to-destination {e.address}\n" not in alone, f"unusable endpoint {e} receives traffic"


def test_the_fixture_ruleset_has_a_consistent_jump_graph() -> None:
    check_jumps(render_ruleset(*model(SERVICES, SLICES), NODE))
