"""The proxier's sync logic with a fake iptables: what is written when, and what happens on failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent.proxy.conntrack import Conntrack, UsedPort, stale_flows
from node_agent.proxy.iptables_exec import IptablesError
from node_agent.proxy.iptables_rules import JUMP_RULES, endpoint_chain, service_chain
from node_agent.proxy.model import ServicePort, ServicePortName
from node_agent.proxy.proxier import Proxier
from node_agent.proxy.settings import ProxySettings
from tests.proxy.fakes import FakeConntrack, FakeIptables
from tests.proxy.test_iptables_netns import snapshot
from tests.proxy.test_render import EXPECTED, SERVICES, SLICES, ep, eps, svc

Obj = dict[str, Any]
WEB = ServicePortName("default", "web", "http", "TCP")


def make() -> tuple[Proxier, FakeIptables, FakeConntrack]:
    ipt, ct = FakeIptables(), FakeConntrack()
    return Proxier(None, ProxySettings(node_name="node-a"), ipt=ipt, conntrack=ct), ipt, ct


def test_the_first_sync_writes_the_rendered_text_and_each_jump_once() -> None:
    proxier, ipt, _ = make()
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    assert ipt.restores == [EXPECTED]
    assert [c for c in ipt.calls if c.startswith("insert")] == [f"insert {j.table} {j.chain}" for j in JUMP_RULES]
    proxier.sync_blocking({}, full=True)
    assert ipt.restores[1] == EXPECTED
    assert len([c for c in ipt.calls if c.startswith("insert")]) == len(JUMP_RULES)


def test_nothing_runs_when_nothing_changed() -> None:
    proxier, ipt, _ = make()
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    calls = len(ipt.calls)
    stats = proxier.sync_blocking(snapshot(SERVICES, SLICES), full=False)
    assert stats.apply is not None and not stats.apply.changed and stats.rendered == 0
    assert len(ipt.calls) == calls


def test_an_endpoint_change_writes_only_the_chains_it_changes() -> None:
    proxier, ipt, _ = make()
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    web = eps("web", [{"name": "http", "port": 8080, "protocol": "TCP"}], [ep("10.244.1.2", "node-a"), ep("10.244.2.2")])
    stats = proxier.sync_blocking(snapshot(SERVICES[:1], [web]), full=False)
    assert stats.rendered == 1
    svc_chain = service_chain(WEB)
    gone = endpoint_chain(WEB, "10.244.3.2:8080")
    keep = [endpoint_chain(WEB, "10.244.1.2:8080"), endpoint_chain(WEB, "10.244.2.2:8080")]
    assert ipt.restores[-1] == "\n".join([
        "*nat",
        f":{svc_chain} - [0:0]",
        f":{gone} - [0:0]",
        f'-A {svc_chain} -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 '
        f"! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
        f'-A {svc_chain} -m comment --comment "default/web:http -> 10.244.1.2:8080" -m statistic --mode random '
        f"--probability 0.5000000000 -j {keep[0]}",
        f'-A {svc_chain} -m comment --comment "default/web:http -> 10.244.2.2:8080" -j {keep[1]}',
        f"-X {gone}",
        "COMMIT", ""])


def test_a_deleted_service_loses_its_rules_and_chains() -> None:
    proxier, ipt, _ = make()
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    proxier.sync_blocking(snapshot([], [], ("default/web",)), full=False)
    text = ipt.restores[-1]
    assert f"-X {service_chain(WEB)}" in text and "10.96.0.10" not in text
    assert service_chain(WEB) not in ipt.save("nat")


def test_a_failed_apply_makes_the_next_sync_full() -> None:
    proxier, ipt, _ = make()
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    ipt.fail_next = "iptables-restore: line 3 failed"
    with pytest.raises(IptablesError):
        proxier.sync_blocking(snapshot([], [], ("default/web",)), full=False)
    assert proxier.applier.applied is None
    ipt.calls.clear()
    stats = proxier.sync_blocking({}, full=False)
    assert stats.apply is not None and stats.apply.full and "save nat" in ipt.calls
    assert service_chain(WEB) not in ipt.save("nat")


def test_a_missing_canary_on_a_periodic_sync_rewrites_everything() -> None:
    proxier, ipt, _ = make()
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    del ipt.tables["nat"]["KUBE-PROXY-CANARY"]
    stats = proxier.sync_blocking({}, full=False, periodic=True)
    assert stats.apply is not None and stats.apply.full
    assert "KUBE-PROXY-CANARY" in ipt.tables["nat"]


def udp_service(*ips: str) -> tuple[list[Obj], list[Obj]]:
    return ([svc("dns", "10.96.0.53", [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}],
                 type_="NodePort")],
            [eps("dns", [{"name": "dns", "port": 5353, "protocol": "UDP"}], [ep(ip) for ip in ips])])


def test_removed_udp_endpoints_get_their_flows_cleared() -> None:
    proxier, _, ct = make()
    proxier.sync_blocking(snapshot(*udp_service("10.244.1.1", "10.244.1.2")), full=True)
    assert ct.flows == [["-p", "udp", "--orig-dst", "10.96.0.53"], ["-p", "udp", "--orig-port-dst", "30053"]]
    ct.flows.clear()
    proxier.sync_blocking(snapshot(*udp_service("10.244.1.1")), full=False)
    assert ct.flows == [["-p", "udp", "--orig-dst", "10.96.0.53", "--dst-nat", "10.244.1.2"],
                        ["-p", "udp", "--orig-port-dst", "30053", "--dst-nat", "10.244.1.2"]]
    ct.flows.clear()
    proxier.sync_blocking(snapshot([], [], ("default/dns",)), full=False)
    assert ct.flows == [["-p", "udp", "--orig-dst", "10.96.0.53", "--dst-nat", "10.244.1.1"],
                        ["-p", "udp", "--orig-port-dst", "30053", "--dst-nat", "10.244.1.1"]]


def test_tcp_endpoints_leave_conntrack_alone() -> None:
    proxier, _, ct = make()
    proxier.sync_blocking(snapshot(SERVICES, SLICES), full=True)
    proxier.sync_blocking(snapshot([], [], ("default/web", "default/sticky")), full=False)
    assert ct.flows == []


def test_stale_flows_follow_a_changed_cluster_ip() -> None:
    spn = ServicePortName("ns", "s", "", "UDP")
    before = {spn: UsedPort(ServicePort(spn, "10.96.0.1", 53), frozenset({"10.244.0.1"}))}
    after = {spn: UsedPort(ServicePort(spn, "10.96.0.2", 53), frozenset({"10.244.0.1"}))}
    assert stale_flows(before, after) == [["-p", "udp", "--orig-dst", "10.96.0.1", "--dst-nat", "10.244.0.1"]]


# ---- informer events -> dirty services -> one sync ------------------------------------


class FakeInformer:
    def __init__(self, objects: list[Obj]) -> None:
        self.objects = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in objects}

    def get(self, key: str) -> Obj | None:
        return self.objects.get(key)

    def keys(self) -> list[str]:
        return sorted(self.objects)


async def test_events_mark_services_and_one_sync_takes_them_all() -> None:
    proxier, ipt, _ = make()
    services = FakeInformer(SERVICES)
    proxier.services = services  # type: ignore[assignment]
    for slice_ in SLICES:
        proxier.on_slice(slice_)
    await proxier.sync()  # the first sync is full: every known Service
    assert ipt.restores == [EXPECTED]
    assert proxier._dirty == set()

    moved = {**SLICES[0], "metadata": {**SLICES[0]["metadata"], "labels": {"kubernetes.io/service-name": "sticky"}}}
    proxier.on_slice_update(SLICES[0], moved)
    assert proxier._dirty == {"default/web", "default/sticky"}
    assert "default/web" not in proxier._slices_by_service
    proxier.on_slice_delete(moved)
    del services.objects["default/empty"]
    proxier.on_service({"metadata": {"namespace": "default", "name": "empty"}})
    await proxier.sync()
    assert proxier._dirty == set()
    assert "10.96.0.13" not in ipt.save("filter")  # the deleted Service's REJECT went with it
    assert "10.244.1.2:8080" not in ipt.save("nat")  # web lost its only slice...
    assert "default/web:http has no endpoints" in ipt.save("filter")  # ...so it refuses


async def test_a_failed_sync_keeps_its_changes_for_the_retry() -> None:
    proxier, ipt, _ = make()
    services = FakeInformer(SERVICES)
    proxier.services = services  # type: ignore[assignment]
    await proxier.sync()
    del services.objects["default/web"]
    proxier.mark("default/web")
    ipt.fail_next = "boom"
    with pytest.raises(IptablesError):
        await proxier.sync()
    assert "default/web" in proxier._dirty and proxier._force_full
    await proxier.sync()
    assert proxier._dirty == set() and not proxier._force_full
    assert "10.96.0.10" not in ipt.save("nat") + ipt.save("filter")


async def test_the_proxy_syncs_through_the_runner_when_events_arrive() -> None:
    proxier, ipt, _ = make()
    proxier.services = FakeInformer(SERVICES)  # type: ignore[assignment]
    for slice_ in SLICES:
        proxier.on_slice(slice_)
    proxier.runner.min_interval = 0.01
    proxier.runner.max_interval = 30
    task = asyncio.create_task(proxier.runner.run())
    try:
        proxier.runner.request()
        for _ in range(500):
            if ipt.restores:
                break
            await asyncio.sleep(0.01)
        assert ipt.restores == [EXPECTED]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("args", [
    ["-p", "udp", "--orig-dst", "10.96.0.1; reboot"],
    ["-p", "udp", "--orig-dst", "10.96.0.1", "--dst-nat", "10.244.0.1 -F"],
    ["-p", "udp", "--orig-port-dst", "0"],
    ["-p", "udp", "--orig-port-dst", "70000"],
    ["-p", "tcp", "--orig-dst", "10.96.0.1"],
    ["-p", "udp", "-F", "10.96.0.1"],
    ["-p", "udp", "--orig-dst"],
])
def test_conntrack_refuses_anything_but_addresses_and_ports(args: list[str]) -> None:
    never_run = Conntrack(binary="/nonexistent/conntrack-must-not-run")
    with pytest.raises(ValueError):
        never_run.delete(args)


# ---- incremental syncs end where a fresh full sync would --------------------------------

def _service_obj(i: int, variant: int) -> Obj:
    spec: Obj = {"sessionAffinity": "ClientIP"} if variant == 2 else {}
    return svc(f"s{i}", f"10.96.3.{i + 1}", [{"name": "p", "port": 80 + variant % 2,
                                              "protocol": "UDP" if i % 3 == 0 else "TCP",
                                              "nodePort": 30200 + i}],
               type_="NodePort" if variant == 1 else "ClusterIP", ns="h",
               **({"externalTrafficPolicy": "Local"} if variant == 1 and i % 2 else {}), **spec)


def _slice_obj(i: int, ips: tuple[int, ...], ready_mask: int) -> Obj:
    return eps(f"s{i}", [{"name": "p", "port": 8080, "protocol": "UDP" if i % 3 == 0 else "TCP"}],
               [ep(f"10.244.{i}.{x}", node="node-a" if x % 2 else "node-b", ready=bool(ready_mask >> k & 1))
                for k, x in enumerate(ips)], ns="h")


change_st = st.tuples(st.integers(0, 4), st.sampled_from([None, 0, 1, 2]),
                      st.lists(st.integers(1, 5), max_size=4, unique=True).map(tuple), st.integers(0, 15))


@settings(max_examples=80, deadline=None)
@given(st.lists(change_st, min_size=1, max_size=12), st.integers(0, 3), st.sampled_from([2000, 7, 1]))
def test_incremental_syncs_converge_to_what_a_full_sync_writes(changes: list[tuple[int, int | None, tuple[int, ...],
                                                                                   int]], full_every: int,
                                                               batch_lines: int) -> None:
    """Whatever the sequence of changes (and however small the batches), every transaction
    is valid on its own and the tables end as a full sync of the final state leaves them."""
    proxier, ipt, _ = make()
    proxier.applier.max_batch_lines = batch_lines
    services: dict[str, Obj | None] = {}
    slices: dict[str, Obj] = {}
    for n, (i, variant, ips, mask) in enumerate(changes):
        key = f"h/s{i}"
        services[key] = None if variant is None else _service_obj(i, variant)
        slices[key] = _slice_obj(i, ips, mask)
        proxier.sync_blocking({key: (services[key], [slices[key]])}, full=bool(full_every) and n % full_every == 0)
    fresh, fresh_ipt, _ = make()
    fresh.sync_blocking({k: (v, [slices[k]]) for k, v in services.items()}, full=True)
    assert proxier.applier.applied is not None and fresh.applier.applied is not None
    assert proxier.applier.applied.restore_text() == fresh.applier.applied.restore_text()
    assert ipt.tables == fresh_ipt.tables  # every chain with the same rules, none missing, none left over
