"""The DNS server's transports on real sockets (127.0.0.1, a free port): UDP and TCP,
truncation of big UDP answers, the answer cache, SERVFAIL before sync, bad input."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest

from control_plane.dns.records import ClusterRecords
from control_plane.dns.resolver import ZoneConfig
from control_plane.dns.server import DnsServer

HOST = "127.0.0.1"
TIMEOUT = 5.0


def headless(records: ClusterRecords, count: int) -> None:
    records.upsert_service({"metadata": {"name": "big", "namespace": "ns"}, "spec": {"clusterIP": "None"}})
    records.upsert_slice({"metadata": {"name": "big-1", "namespace": "ns",
                                       "labels": {"kubernetes.io/service-name": "big"}},
                          "addressType": "IPv4", "ports": [],
                          "endpoints": [{"addresses": [f"10.244.{i // 250}.{i % 250 + 1}"],
                                         "conditions": {"ready": True}} for i in range(count)]})


class Running:
    def __init__(self, server: DnsServer, port: int, ready: list[bool]) -> None:
        self.server = server
        self.port = port
        self.ready = ready
        self.records = server.records

    async def udp(self, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
        return await dns.asyncquery.udp(dns.message.make_query(name, rdtype, **kw), HOST, port=self.port,
                                        timeout=TIMEOUT, ignore_trailing=True)

    async def tcp(self, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
        return await dns.asyncquery.tcp(dns.message.make_query(name, rdtype, **kw), HOST, port=self.port,
                                        timeout=TIMEOUT)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    records = ClusterRecords()
    records.upsert_service({"metadata": {"name": "web", "namespace": "default"},
                            "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}})
    ready = [True]
    server = DnsServer(records, ZoneConfig.for_domain("cluster.local"), ready=lambda: ready[0], tcp_idle_timeout=1.0)
    port = await server.start(HOST, 0)
    try:
        yield Running(server, port, ready)
    finally:
        await server.stop()


async def test_udp_and_tcp_answer_the_same(running: Running) -> None:
    for ask in (running.udp, running.tcp):
        r = await ask("web.default.svc.cluster.local")
        assert r.rcode() == dns.rcode.NOERROR
        assert [rrset.to_text() for rrset in r.answer] == ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"]
        r = await ask("example.com")
        assert r.rcode() == dns.rcode.REFUSED


async def test_tcp_takes_several_queries_on_one_connection(running: Running) -> None:
    reader, writer = await asyncio.open_connection(HOST, running.port)
    try:
        queries = [dns.message.make_query(name, "A") for name in
                   ("web.default.svc.cluster.local", "nope.default.svc.cluster.local", "web.default.svc.cluster.local")]
        writer.write(b"".join(q.to_wire(prepend_length=True) for q in queries))  # pipelined
        await writer.drain()
        rcodes = []
        for q in queries:
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TIMEOUT))
            r = dns.message.from_wire(await reader.readexactly(length))
            assert r.id == q.id
            rcodes.append(r.rcode())
        assert rcodes == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.NOERROR]
        # An idle connection is closed by the server (idle timeout 1 s here).
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()


async def test_big_udp_answers_are_truncated_and_complete_over_tcp(running: Running) -> None:
    headless(running.records, 100)  # 100 A records: ~1.6 kB
    small = await running.udp("big.ns.svc.cluster.local")
    assert small.flags & dns.flags.TC and small.answer == []
    assert small.rcode() == dns.rcode.NOERROR
    full = await running.tcp("big.ns.svc.cluster.local")
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 100
    # A client that says (EDNS) it takes 4096 bytes gets it all over UDP.
    edns = await running.udp("big.ns.svc.cluster.local", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 100
    assert running.server.stats.truncated == 1


async def test_answers_are_cached_until_the_records_change(running: Running) -> None:
    await running.udp("web.default.svc.cluster.local")
    hits = running.server.stats.cache_hits
    again = await running.udp("web.default.svc.cluster.local")
    assert running.server.stats.cache_hits == hits + 1
    assert again.answer[0].to_text() == "web.default.svc.cluster.local. 5 IN A 10.96.0.20"
    running.records.upsert_service({"metadata": {"name": "web", "namespace": "default"},
                                    "spec": {"clusterIP": "10.96.0.21"}})
    changed = await running.udp("web.default.svc.cluster.local")
    assert changed.answer[0].to_text() == "web.default.svc.cluster.local. 5 IN A 10.96.0.21"


async def test_shuffled_answers_are_not_cached(running: Running) -> None:
    headless(running.records, 5)
    orders = set()
    for _ in range(20):
        r = await running.udp("big.ns.svc.cluster.local")
        orders.add(tuple(str(rd) for rd in r.answer[0]))
    assert len(orders) > 1


async def test_servfail_until_synced(running: Running) -> None:
    running.ready[0] = False
    r = await running.udp("web.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.SERVFAIL
    running.ready[0] = True
    assert (await running.udp("web.default.svc.cluster.local")).rcode() == dns.rcode.NOERROR


async def test_garbage_gets_formerr_or_nothing(running: Running) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((HOST, running.port))
        # A header that announces a question that is not there: FORMERR, same ID.
        await loop.sock_sendall(sock, struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x03abc")
        reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(sock, 512), TIMEOUT))
        assert reply.id == 0xBEEF and reply.rcode() == dns.rcode.FORMERR and reply.flags & dns.flags.QR
        # Too short for a header, and a response (QR set): no answer at all; the server still serves.
        await loop.sock_sendall(sock, b"\x01\x02\x03")
        response = dns.message.make_response(dns.message.make_query("web.default.svc.cluster.local", "A"))
        await loop.sock_sendall(sock, response.to_wire())
        query = dns.message.make_query("web.default.svc.cluster.local", "A")
        await loop.sock_sendall(sock, query.to_wire())
        reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(sock, 512), TIMEOUT))
        assert reply.id == query.id
    assert running.server.stats.malformed == 1


async def test_a_taken_port_is_an_error(running: Running) -> None:
    other = DnsServer(ClusterRecords(), ZoneConfig())
    with pytest.raises(OSError):
        await other.start(HOST, running.port)
    await other.stop()


async def test_a_failing_answer_is_servfail_and_the_server_goes_on(running: Running) -> None:
    running.records.upsert_service({"metadata": {"name": "odd", "namespace": "ns"}, "spec": {"clusterIP": "None"}})
    running.records.upsert_slice({"metadata": {"name": "odd-1", "namespace": "ns",
                                               "labels": {"kubernetes.io/service-name": "odd"}},
                                  "addressType": "IPv4", "ports": [{"name": "p", "port": 1, "protocol": "TCP"}],
                                  "endpoints": [{"addresses": ["10.244.0.1"], "hostname": "h" * 70}]})
    for ask in (running.udp, running.tcp):  # a 70-character label cannot be put in a name
        assert (await ask("_p._tcp.odd.ns.svc.cluster.local", "SRV")).rcode() == dns.rcode.SERVFAIL
        assert (await ask("web.default.svc.cluster.local")).rcode() == dns.rcode.NOERROR
