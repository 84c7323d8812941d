"""Cluster DNS inside ``skiff server``: informers on Services and EndpointSlices (the
process's own client, like any other client of the API) feed `ClusterRecords`, and a
`DnsServer` answers on the server's bind address.

Contract of `ClusterDns.run` (until cancelled): start the informers; bind UDP and TCP,
retrying every ``rebind_delay`` seconds while the port is taken (the API server serves on
without DNS meanwhile, and says so); answer SERVFAIL until both caches are synced; on
cancellation close the sockets and stop the informers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from control_plane.dns.records import ClusterRecords
from control_plane.dns.resolver import ZoneConfig
from control_plane.dns.server import DnsServer
from skiff.client.api import ApiClient
from skiff.client.informer import Informer

log = logging.getLogger("skiff.dns")

REBIND_DELAY = 30.0  # seconds between attempts to bind a port something else holds


class ClusterDns:
    def __init__(self, client: ApiClient, *, bind_address: str, port: int, domain: str = "cluster.local",
                 nameserver_ips: Sequence[str] = (), rebind_delay: float = REBIND_DELAY) -> None:
        self.bind_address = bind_address
        self.port = port
        self.rebind_delay = rebind_delay
        self.records = ClusterRecords()
        self.services = Informer(client, "services")
        self.slices = Informer(client, "endpointslices")
        self.services.add_handlers(on_add=self.records.upsert_service,
                                   on_update=lambda old, new: self.records.upsert_service(new),
                                   on_delete=self.records.delete_service)
        self.slices.add_handlers(on_add=self.records.upsert_slice,
                                 on_update=lambda old, new: self.records.upsert_slice(new),
                                 on_delete=self.records.delete_slice)
        self.zone = ZoneConfig.for_domain(domain, nameserver_ips=nameserver_ips)
        self.server = DnsServer(self.records, self.zone, ready=self.synced)
        self.bound_port: int | None = None

    def synced(self) -> bool:
        return self.services.has_synced and self.slices.has_synced

    async def run(self) -> None:
        self.services.start()
        self.slices.start()
        try:
            await self._bind()
            await self.services.wait_synced()
            await self.slices.wait_synced()
            log.info("cluster DNS: serving %s from %d service(s)", self.zone.domain.to_text(omit_final_dot=True),
                     len(self.services.keys()))
            await asyncio.Event().wait()
        finally:
            await self.server.stop()
            await self.services.stop()
            await self.slices.stop()

    async def _bind(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                self.bound_port = await self.server.start(self.bind_address, self.port)
            except OSError as exc:
                log.error("cluster DNS: cannot listen on %s:%d (udp+tcp): %s; attempt %d failed, retrying in %gs "
                          "(the API serves on without cluster DNS meanwhile)", self.bind_address, self.port,
                          exc.strerror or exc, attempt, self.rebind_delay)
                await asyncio.sleep(self.rebind_delay)
                continue
            log.info("cluster DNS: listening on %s:%d udp+tcp for %s", self.bind_address, self.bound_port,
                     self.zone.domain.to_text(omit_final_dot=True))
            return
