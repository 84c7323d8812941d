"""The applier against the real iptables (nf_tables backend), in a namespace each test makes.

A restarted proxy leaves ``iptables-save`` unchanged, 100 syncs leave no duplicate rule,
deleting every Service leaves only the base chains, stale chains from an earlier proxy
go, batched and single-transaction applies agree, a flush behind our back is repaired,
and rules that are not ours are never touched.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from node_agent.proxy.applier import CANARY_CHAIN, IptablesApplier
from node_agent.proxy.iptables_exec import IptablesExec
from node_agent.proxy.iptables_rules import FILTER_BASE_CHAINS, JUMP_RULES, NAT_BASE_CHAINS, Ruleset
from node_agent.proxy.proxier import Proxier, Snapshot
from node_agent.proxy.settings import ProxySettings
from tests.proxy.netns import NEEDS_ROOT, NEEDS_TOOLS, Netns, NetnsFactory
from tests.proxy.test_render import SERVICES, SLICES, ep, eps, fixture_text, svc

pytestmark = [NEEDS_ROOT, NEEDS_TOOLS]

Obj = dict[str, Any]
SaveTables = dict[str, dict[str, list[str]]]


class NoConntrack:
    def __init__(self) -> None:
        self.flows: list[list[str]] = []

    def clear(self, flows: list[list[str]]) -> int:
        self.flows.extend(flows)
        return 0


def parse_save(text: str) -> SaveTables:
    tables: SaveTables = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            current.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            current.setdefault(line.split(" ", 2)[1], []).append(line)
    return tables


def owned(tables: SaveTables, table: str) -> dict[str, list[str]]:
    return {name: rules for name, rules in tables.get(table, {}).items() if name.startswith("KUBE-")}


def proxier_in(ns: Netns, **kw: Any) -> Proxier:
    return Proxier(None, ProxySettings(node_name="node-a"), ipt=IptablesExec(netns=ns.path),
                   conntrack=NoConntrack(), **kw)


def snapshot(services: list[Obj], slices: list[Obj], deleted: tuple[str, ...] = ()) -> Snapshot:
    """What `Proxier.sync` hands its thread: the changed Services (None: deleted) with their slices."""
    snap: dict[str, tuple[Obj | None, list[Obj]]] = {
        f"{s['metadata']['namespace']}/{s['metadata']['name']}": (s, []) for s in services}
    for sl in slices:
        key = f"{sl['metadata']['namespace']}/{sl['metadata']['labels']['kubernetes.io/service-name']}"
        snap.setdefault(key, (None, []))[1].append(sl)
    for key in deleted:
        snap[key] = (None, [])
    return snap


def assert_matches(saved: str, ruleset: Ruleset) -> None:
    """Every chain of the ruleset is there with as many rules, once; no other chain of ours; no duplicates."""
    tables = parse_save(saved)
    for table, chains in ruleset.tables():
        got = owned(tables, table)
        assert set(got) == set(chains) | {CANARY_CHAIN}, f"{table}: {set(got) ^ (set(chains) | {CANARY_CHAIN})}"
        for name, rules in chains.items():
            assert len(got[name]) == len(rules), f"{table} {name}: {got[name]} vs {rules}"
    dupes = [line for line, n in Counter(line for line in saved.splitlines() if line.startswith("-A ")).items()
             if n > 1]
    assert not dupes, dupes
    for jump in JUMP_RULES:
        assert saved.count(jump.save_line()) == 1, jump


def test_a_restarted_proxy_leaves_iptables_save_unchanged(netns: NetnsFactory) -> None:
    ns = netns.make("r")
    first = proxier_in(ns)
    first.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    before = ns.save()
    assert first.applier.applied is not None
    assert first.applier.applied.restore_text() == fixture_text()
    assert_matches(before, first.applier.applied)

    restarted = proxier_in(ns)
    stats = restarted.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    assert stats.apply is not None and stats.apply.full and stats.apply.jumps_added == 0
    assert stats.apply.stale_deleted == 0
    assert ns.save() == before


def test_a_hundred_syncs_leave_no_duplicate_rule(netns: NetnsFactory) -> None:
    ns = netns.make("d")
    proxier = proxier_in(ns)
    rng = random.Random(7)
    services = [svc(f"s{i}", f"10.96.1.{i + 1}", [{"name": "p", "port": 80, "nodePort": 30100 + i}],
                    type_="NodePort" if i % 2 else "ClusterIP", ns="t") for i in range(6)]
    full_syncs = 0
    for n in range(100):
        slices = [eps(f"s{i}", [{"name": "p", "port": 8080}],
                      [ep(f"10.244.{i}.{j}", node=rng.choice(["node-a", "node-b"]), ready=rng.random() > 0.2)
                       for j in range(1, rng.randint(0, 4) + 1)], ns="t") for i in range(6)]
        present = [s for s in services if rng.random() > 0.2]
        gone = tuple(f"t/{s['metadata']['name']}" for s in services if s not in present)
        full = n % 10 == 0
        full_syncs += full
        stats = proxier.sync_blocking(snapshot(present, slices, gone), full=full)
        assert stats.apply is not None
    assert proxier.applier.applied is not None
    assert_matches(ns.save(), proxier.applier.applied)
    assert full_syncs == 10


def test_deleting_every_service_leaves_only_the_base_chains(netns: NetnsFactory) -> None:
    ns = netns.make("e")
    proxier = proxier_in(ns)
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    keys = tuple(f"default/{s['metadata']['name']}" for s in SERVICES)
    proxier.sync_blocking(snapshot([], [], keys), full=False)
    tables = parse_save(ns.save())
    assert set(owned(tables, "nat")) == {*NAT_BASE_CHAINS, CANARY_CHAIN}
    assert set(owned(tables, "filter")) == {*FILTER_BASE_CHAINS, CANARY_CHAIN}
    assert owned(tables, "nat")["KUBE-NODEPORTS"] == []
    assert [r.split(" -j ")[-1] for r in owned(tables, "nat")["KUBE-SERVICES"]] == ["KUBE-NODEPORTS"]
    assert owned(tables, "filter")["KUBE-SERVICES"] == [] and owned(tables, "filter")["KUBE-EXTERNAL-SERVICES"] == []


def test_chains_an_earlier_proxy_left_are_removed_on_start(netns: NetnsFactory) -> None:
    ns = netns.make("s")
    proxier_in(ns).sync_blocking(snapshot(SERVICES, SLICES), full=True)
    web_only = proxier_in(ns)  # the other Services were deleted while no proxy ran
    stats = web_only.sync_blocking(snapshot(SERVICES[:1], SLICES[:1]), full=True)
    assert stats.apply is not None and stats.apply.stale_deleted > 0
    assert web_only.applier.applied is not None
    assert_matches(ns.save(), web_only.applier.applied)


def test_batched_and_single_transaction_applies_agree(netns: NetnsFactory) -> None:
    one, many = netns.make("o"), netns.make("m")
    single = proxier_in(one)
    single.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    batched = proxier_in(many)
    batched.applier.max_batch_lines = 10
    stats = batched.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    assert stats.apply is not None and stats.apply.transactions > 3
    assert many.save() == one.save()
    # and a partial sync that deletes and adds in batches too
    changed = [ep("10.244.7.7")]
    for p in (single, batched):
        p.sync_blocking(snapshot([], [eps("web", [{"name": "http", "port": 8080, "protocol": "TCP"}], changed)],
                                 ("default/sticky",)), full=False)
    assert many.save() == one.save()


def test_tables_flushed_behind_our_back_are_rewritten(netns: NetnsFactory) -> None:
    ns = netns.make("f")
    proxier = proxier_in(ns)
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    before = ns.save()
    stats = proxier.sync_blocking({}, full=False, periodic=True)
    assert stats.apply is not None and not stats.apply.changed
    for table in ("nat", "filter"):
        ns.run("iptables", "-t", table, "-F")
        ns.run("iptables", "-t", table, "-X")
    assert proxier.applier.rules_lost()
    stats = proxier.sync_blocking({}, full=False, periodic=True)
    assert stats.apply is not None and stats.apply.full
    assert ns.save() == before


def test_rules_that_are_not_ours_stay(netns: NetnsFactory) -> None:
    ns = netns.make("n")
    ns.run("iptables", "-t", "nat", "-N", "DOCKER")
    ns.run("iptables", "-t", "nat", "-A", "DOCKER", "-d", "192.0.2.1", "-j", "RETURN")
    ns.run("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.244.1.0/24", "!", "-d", "10.244.0.0/16",
           "-j", "MASQUERADE")
    ns.run("iptables", "-t", "filter", "-N", "KUBE-FIREWALL")  # kubelet's: not the proxy's to remove
    foreign = [line for line in ns.save().splitlines() if line.startswith(("-A", ":DOCKER", ":KUBE-FIREWALL"))]
    proxier = proxier_in(ns)
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    proxier.sync_blocking(snapshot([], [], ("default/web",)), full=False)
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    saved = ns.save().splitlines()
    assert all(line in saved for line in foreign)
    assert proxier.cleanup() > 0
    assert [line for line in ns.save().splitlines() if line.startswith(("-A", ":DOCKER", ":KUBE"))] == foreign


def test_cleanup_leaves_the_tables_as_they_were(netns: NetnsFactory) -> None:
    ns = netns.make("c")
    proxier = proxier_in(ns)
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    applier = IptablesApplier(IptablesExec(netns=ns.path))  # as `skiff proxy --cleanup` would
    assert applier.cleanup() > 0
    left = [line for line in ns.save().splitlines() if not line.startswith(("*", "COMMIT"))]
    assert sorted(left) == sorted([":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                                   ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                                   ":POSTROUTING ACCEPT [0:0]"])
    assert applier.cleanup() == 0  # idempotent
