"""Carries DNS queries over UDP and TCP to the resolver (RFC 1035 §4.2, RFC 7766).

`DnsServer.handle(wire, udp)` turns one query message into one response message;
the transports only frame them. UDP answers are cut to what the client can take (512
bytes, or its EDNS payload size) with the TC bit set, so it asks again over TCP; TCP
takes any number of length-prefixed queries per connection until it idles out.

Answers are cached as wire bytes, keyed by the query without its ID and by the
transport; the cache is dropped whenever the records change (their ``generation``), so a
repeated question costs one dict lookup. Answers whose A/AAAA records are shuffled are
not cached: each asker gets a fresh order.

Until the records are synced (``ready()``), every query gets SERVFAIL rather than a
false NXDOMAIN, so clients retry instead of caching a negative answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from control_plane.dns.records import ClusterRecords
from control_plane.dns.resolver import Resolver, ZoneConfig

log = logging.getLogger("skiff.dns")

UDP_MIN_SIZE = 512  # RFC 1035: what every client takes
TCP_MAX_SIZE = 65535
TCP_IDLE_TIMEOUT = 10.0  # seconds a TCP client may stay silent between queries (CoreDNS: 10 s)
CACHE_MAX_ENTRIES = 10_000
HEADER_SIZE = 12


@dataclass
class DnsStats:
    queries: int = 0
    cache_hits: int = 0
    truncated: int = 0
    malformed: int = 0


class DnsServer:
    def __init__(self, records: ClusterRecords, zone: ZoneConfig, *, ready: Callable[[], bool] = lambda: True,
                 cache_entries: int = CACHE_MAX_ENTRIES, tcp_idle_timeout: float = TCP_IDLE_TIMEOUT) -> None:
        self.records = records
        self.zone = zone
        self.resolver = Resolver(records, zone)
        self.ready = ready
        self.stats = DnsStats()
        self.cache_entries = cache_entries
        self.tcp_idle_timeout = tcp_idle_timeout
        self._cache: dict[tuple[bytes, bool], bytes] = {}
        self._cache_generation = -1
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    # ---- one message -------------------------------------------------------------------

    def handle(self, wire: bytes, udp: bool) -> bytes | None:
        """The response to one query message, cut to fit a UDP datagram the client takes
        when ``udp``. None when there is nothing to answer (no header, or not a query)."""
        if len(wire) < HEADER_SIZE or wire[2] & 0x80:  # too short for a header, or a response (QR set)
            return None
        self.stats.queries += 1
        if self._cache_generation != self.records.generation:
            self._cache.clear()
            self._cache_generation = self.records.generation
        key = (wire[2:], udp)
        cached = self._cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return wire[:2] + cached[2:]
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            self.stats.malformed += 1
            return self._error(wire, dns.rcode.FORMERR)
        if not self.ready():
            return self._error(wire, dns.rcode.SERVFAIL, query)
        try:
            response = self.resolver.answer(query)
        except Exception:  # a bug, or data no name can hold: say so, answer SERVFAIL, keep serving
            log.exception("cluster DNS: answering %s failed", query.question[0] if query.question else "a query")
            return self._error(wire, dns.rcode.SERVFAIL, query)
        limit = TCP_MAX_SIZE
        if udp:
            limit = max(UDP_MIN_SIZE, min(query.payload, TCP_MAX_SIZE)) if query.edns >= 0 else UDP_MIN_SIZE
        out = response.to_wire(max_size=limit, prefer_truncation=True)
        if out[2] & 0x02:  # TC
            self.stats.truncated += 1
        if self._cacheable(response):
            if len(self._cache) >= self.cache_entries:
                self._cache.clear()
            self._cache[key] = out
        return out

    @staticmethod
    def _cacheable(response: dns.message.Message) -> bool:
        return not any(len(rrset) > 1 and rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
                       for rrset in response.answer)

    @staticmethod
    def _error(wire: bytes, rcode: dns.rcode.Rcode, query: dns.message.Message | None = None) -> bytes:
        if query is not None:
            response = dns.message.make_response(query)
        else:  # unparseable: answer with its ID, opcode and RD, and nothing else
            (qid, flags) = struct.unpack("!HH", wire[:4])
            response = dns.message.Message(id=qid)
            response.flags = dns.flags.QR | (flags & (0x7800 | dns.flags.RD))
        response.set_rcode(rcode)
        return response.to_wire()

    # ---- transports --------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host``:``port`` over UDP and TCP; port 0 picks one free for both.
        Returns the port. Raises OSError when either cannot be bound (nothing stays open)."""
        loop = asyncio.get_running_loop()
        for _ in range(20 if port == 0 else 1):
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=(host, port),
                                                               family=socket.AF_INET6 if ":" in host else 0)
            bound = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, bound, reuse_address=True)
            except OSError:
                transport.close()
                if port != 0:
                    raise
                continue  # the port UDP got is taken for TCP: draw another
            self._udp = transport
            return bound
        raise OSError(f"no port free for both UDP and TCP on {host}")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                try:
                    header = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout)
                    (length,) = struct.unpack("!H", header)
                    wire = await asyncio.wait_for(reader.readexactly(length), self.tcp_idle_timeout)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                out = self.handle(wire, udp=False)
                if out is not None:
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
        except ConnectionError:
            return
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class _UdpProtocol(asyncio.DatagramProtocol):
    """Answers each datagram at once, in the event loop's callback: no task per query."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # the selector transport is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        out = self.server.handle(data, udp=True)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("cluster DNS: UDP error: %s", exc)
