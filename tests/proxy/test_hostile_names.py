"""Names the API should never allow, if it ever let them through, never reach the rule text.

The proxy does not trust the API: chain names are hashes, addresses are parsed, and a
namespace, Service or port name is shown in a comment only when it is a DNS label. Here
every such name is hostile (quotes, spaces, newlines, iptables options, non-ASCII, lone
surrogates, 300 characters); the services must still be proxied, under hashed chains
and without comments, and the text must still load into a real iptables.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from node_agent.proxy.iptables_rules import NodeInfo, render_ruleset
from node_agent.proxy.model import EndpointsMap, endpoints_from_slices, service_ports
from tests.proxy.netns import NEEDS_ROOT, NEEDS_TOOLS, NetnsFactory

Obj = dict[str, Any]

HOSTILE = [
    'web"; -j ACCEPT',
    "a b",
    "x\n-A INPUT -j ACCEPT",
    "-j ACCEPT",
    "' --comment '",
    "$(reboot)",
    "wéb",
    "\ud800",
    "n" * 300,
    "KUBE-SVC-AAAAAAAAAAAAAAAA",
    "Web",
    "",
]


def hostile_objects() -> tuple[list[Obj], list[Obj]]:
    services: list[Obj] = []
    slices: list[Obj] = []
    for i, bad in enumerate(HOSTILE):
        cases = [("default", bad or "x", "http"), (bad or "y", "svc", "http"), ("default", f"s{i}", bad)]
        for j, (ns, name, port) in enumerate(cases):
            ip = f"10.96.{i}.{j + 1}"
            services.append({"metadata": {"namespace": ns, "name": name},
                             "spec": {"type": "NodePort", "clusterIP": ip, "sessionAffinity": "ClientIP",
                                      "ports": [{"name": port, "port": 80, "protocol": "TCP",
                                                 "nodePort": 30000 + 3 * i + j}]}})
            slices.append({"metadata": {"namespace": ns, "name": f"{name}-x",
                                        "labels": {"kubernetes.io/service-name": name}},
                           "addressType": "IPv4", "ports": [{"name": port, "port": 8080, "protocol": "TCP"}],
                           "endpoints": [{"addresses": [f"10.244.{i}.{j + 1}"], "nodeName": "node-a"},
                                         {"addresses": ["10.244.0.1 -j ACCEPT"]},
                                         {"addresses": ["10.244.0.2\n-A INPUT -j ACCEPT"]}]})
    # a hostile cluster IP and a hostile endpoint port, with a harmless name
    services.append({"metadata": {"namespace": "default", "name": "badip"},
                     "spec": {"clusterIP": "10.96.9.9 -j ACCEPT", "ports": [{"port": 80}]}})
    slices.append({"metadata": {"namespace": "default", "name": "badport-x",
                                "labels": {"kubernetes.io/service-name": "badport"}},
                   "ports": [{"name": "", "port": "80 -j ACCEPT"}], "endpoints": [{"addresses": ["10.244.9.9"]}]})
    return services, slices


def render_hostile() -> str:
    services, slices = hostile_objects()
    endpoints: EndpointsMap = {}
    for s in slices:
        endpoints.update(endpoints_from_slices([s], "node-a"))
    return render_ruleset([p for s in services for p in service_ports(s)], endpoints, NodeInfo("node-a")).restore_text()


SAFE_COMMENT = re.compile(r'-m comment --comment "[a-zA-Z0-9/:. >;-]+" ')
FIXED_COMMENT_WORDS = re.compile(r"[a-zA-Z0-9 ;.:/>-]+")


def test_hostile_names_never_appear_in_the_rules() -> None:
    text = render_hostile()
    own_accepts = [line for line in text.splitlines() if line.endswith("-j ACCEPT")]
    assert own_accepts == [line for line in text.splitlines() if line.startswith("-A KUBE-FORWARD -m comment")]
    for bad in HOSTILE:
        if bad and bad not in ("Web", "-j ACCEPT"):
            assert bad not in text, f"{bad!r} leaked into the rules"
    assert "-A INPUT" not in text and "reboot" not in text and "'" not in text
    for line in text.splitlines():
        if line.startswith("-A "):
            # every comment is a quoted run of safe characters; without them, only plain tokens remain
            rest = SAFE_COMMENT.sub("", line)
            assert '"' not in rest, line
            assert re.fullmatch(r"[A-Za-z0-9 :./!_,-]+", rest), line
            for comment in re.findall(r'--comment "([^"]*)"', line):
                assert FIXED_COMMENT_WORDS.fullmatch(comment), line
        else:
            assert re.fullmatch(r"\*(filter|nat)|COMMIT|:[A-Z0-9-]+ - \[0:0\]|", line), line


def test_hostile_services_are_still_proxied_under_hashed_chains_without_comments() -> None:
    text = render_hostile()
    for i in range(len(HOSTILE)):
        for j in range(3):
            assert f"-d 10.96.{i}.{j + 1} --dport 80 -j KUBE-SVC-" in text, f"service 10.96.{i}.{j + 1} not proxied"
            assert f"--to-destination 10.244.{i}.{j + 1}:8080" in text
    # the harmless names keep their comments
    assert '-m comment --comment "default/s10:http cluster IP"' not in text  # "Web" as a port name: not a DNS label
    assert '-m comment --comment "default/s11 cluster IP"' in text  # "" as a port name: the unnamed port
    assert "10.96.9.9" not in text and "10.244.9.9" not in text


@NEEDS_ROOT
@NEEDS_TOOLS
def test_the_hostile_ruleset_loads_into_iptables(netns: NetnsFactory) -> None:
    ns = netns.make("h")
    ns.run("iptables-restore", "--noflush", stdin=render_hostile())
    saved = ns.save()
    accepts = [line for line in saved.splitlines() if line.startswith("-A") and "ACCEPT" in line]
    assert accepts and all(line.startswith("-A KUBE-FORWARD ") for line in accepts), accepts
    for bad in ('web"', "a b", "reboot", "wéb", "-A INPUT"):
        assert bad not in saved


@pytest.mark.parametrize("name", ["a" * 63, "a-b", "0a"])
def test_dns_label_names_keep_their_comments(name: str) -> None:
    svc = {"metadata": {"namespace": name, "name": name},
           "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": name, "port": 80}]}}
    text = render_ruleset(service_ports(svc), {}, NodeInfo("n")).restore_text()
    assert f'--comment "{name}/{name}:{name} has no endpoints"' in text
