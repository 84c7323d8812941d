"""ClusterIP and NodePort allocation for Services.

Each allocated value is one key in the store (``/registry/ranges/...``), taken with an
exclusive create, so two API servers sharing one store can never hand out the same
value and a release is a delete. Probing starts at a random offset, as Kubernetes does.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from control_plane.storage.interface import KeyExistsError, KeyNotFoundError, Store

IP_PREFIX = "/registry/ranges/serviceips/"
PORT_PREFIX = "/registry/ranges/servicenodeports/"


class AllocationError(Exception):
    """The value is taken, out of range, or the range is full. The message is
    Kubernetes' wording."""


@dataclass
class ServiceAllocators:
    store: Store
    service_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.96.0.0/12")
    node_port_range: tuple[int, int] = (30000, 32767)

    @property
    def first_ip(self) -> ipaddress.IPv4Address:
        """The address of the ``kubernetes`` service: the first in the range."""
        return self.service_cidr.network_address + 1

    async def allocate_ip(self, requested: str | None = None) -> str:
        if requested:
            try:
                ip = ipaddress.ip_address(requested)
            except ValueError as e:
                raise AllocationError(f"failed to allocate IP {requested}: {e}") from None
            if ip not in self.service_cidr or ip in (self.service_cidr.network_address,
                                                     self.service_cidr.broadcast_address):
                raise AllocationError(
                    f"failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. "
                    f"The range of valid IPs is {self.service_cidr}")
            if not await self._take(IP_PREFIX + str(ip)):
                raise AllocationError(f"failed to allocate IP {requested}: provided IP is already allocated")
            return str(ip)
        size = self.service_cidr.num_addresses - 2
        start = random.randrange(size)
        for i in range(size):
            ip = self.service_cidr.network_address + 1 + (start + i) % size
            if await self._take(IP_PREFIX + str(ip)):
                return str(ip)
        raise AllocationError("failed to allocate a serviceIP: range is full")

    async def allocate_node_port(self, requested: int | None = None) -> int:
        low, high = self.node_port_range
        if requested:
            if not low <= requested <= high:
                raise AllocationError(
                    f"provided port is not in the valid range. The range of valid ports is {low}-{high}")
            if not await self._take(PORT_PREFIX + str(requested)):
                raise AllocationError("provided port is already allocated")
            return requested
        size = high - low + 1
        start = random.randrange(size)
        for i in range(size):
            port = low + (start + i) % size
            if await self._take(PORT_PREFIX + str(port)):
                return port
        raise AllocationError("range is full")

    async def release_ip(self, ip: str) -> None:
        await self._release(IP_PREFIX + ip)

    async def release_node_port(self, port: int) -> None:
        await self._release(PORT_PREFIX + str(port))

    async def _take(self, key: str) -> bool:
        try:
            await self.store.create(key, b"{}")
        except KeyExistsError:
            return False
        return True

    async def _release(self, key: str) -> None:
        try:
            await self.store.delete(key)
        except KeyNotFoundError:
            pass
