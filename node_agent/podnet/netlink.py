"""The one place the pod-route code touches pyroute2: a route table adapter.

`NetlinkRouteTable` keeps one rtnetlink socket, used from one thread of its own (pyroute2
sockets are not meant to be shared between threads), and exposes async methods. A socket
stays in the network namespace it was opened in: by default the agent's own, or the
namespace at ``netns_path`` (entered by that thread for the ``socket()`` call only).

It lists and changes only routes of the main table that carry our protocol number; a
delete names that protocol too, so the kernel itself refuses to remove anybody else's.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from node_agent.podnet.routes import MAIN_TABLE, ROUTE_PROTOCOL, LocalNetwork, Route

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyroute2 import IPRoute

T = TypeVar("T")


class RouteError(Exception):
    """A route operation failed; the message names the route and the kernel's reason."""


class RouteExists(RouteError):
    """A route with the same destination and metric exists and is not ours (add refused)."""


class RouteTable(Protocol):
    """What the route controller needs from the kernel (a fake implements it in unit tests)."""

    async def local_networks(self) -> list[LocalNetwork]: ...

    async def list_routes(self) -> list[Route]: ...

    async def add(self, route: Route) -> None: ...

    async def replace(self, route: Route) -> None: ...

    async def delete(self, route: Route) -> None: ...

    def close(self) -> None: ...


class NetlinkRouteTable:
    def __init__(self, netns_path: str | None = None, protocol: int = ROUTE_PROTOCOL, table: int = MAIN_TABLE) -> None:
        self.netns_path = netns_path
        self.protocol = protocol
        self.table = table
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pod-routes")
        self._ipr: IPRoute | None = None
        self._closed = False

    # -- plumbing ----------------------------------------------------------------------------

    async def _call(self, fn: Callable[[IPRoute], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._socket()))

    def _socket(self) -> IPRoute:
        if self._ipr is None:
            from pyroute2.iproute.linux import IPRoute

            if self.netns_path is None:
                self._ipr = IPRoute()
            else:
                from cni.netlink import entered, open_netns

                fd = open_netns(self.netns_path)
                try:
                    with entered(fd, self.netns_path):
                        self._ipr = IPRoute()
                finally:
                    os.close(fd)
        return self._ipr

    def close(self) -> None:
        """Close the socket and the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None
        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)

    def _spec(self, route: Route) -> dict[str, Any]:
        return {"dst": str(route.dst), "gateway": str(route.gateway), "oif": route.ifindex,
                "priority": route.metric, "proto": self.protocol, "table": self.table}

    # -- reads -------------------------------------------------------------------------------

    async def local_networks(self) -> list[LocalNetwork]:
        def read(ipr: IPRoute) -> list[LocalNetwork]:
            names = {link["index"]: str(link.get("ifname") or "") for link in ipr.get_links()}
            out = []
            for msg in ipr.get_addr(family=socket.AF_INET):
                address = msg.get("local") or msg.get("address")
                if not address:
                    continue
                out.append(LocalNetwork(ipaddress.IPv4Interface(f"{address}/{msg['prefixlen']}"), int(msg["index"]),
                                        names.get(msg["index"], "")))
            return out
        return await self._call(read)

    async def list_routes(self) -> list[Route]:
        """Our routes (protocol and table), as Routes; one of ours the agent cannot express
        (multipath, no gateway) comes back with gateway 0.0.0.0, so that it is replaced or deleted."""
        def read(ipr: IPRoute) -> list[Route]:
            out = []
            for msg in ipr.get_routes(family=socket.AF_INET, table=self.table):
                if msg["proto"] != self.protocol or int(msg.get("table") or msg["table"]) != self.table:
                    continue
                dst = ipaddress.IPv4Network(f"{msg.get('dst') or '0.0.0.0'}/{msg['dst_len']}", strict=False)
                out.append(Route(dst, ipaddress.IPv4Address(msg.get("gateway") or "0.0.0.0"),
                                 int(msg.get("oif") or 0), int(msg.get("priority") or 0)))
            return out
        return await self._call(read)

    # -- writes ------------------------------------------------------------------------------

    async def add(self, route: Route) -> None:
        """Create the route; RouteExists if a route with its destination and metric is already there."""
        await self._write("add", route)

    async def replace(self, route: Route) -> None:
        await self._write("replace", route)

    async def delete(self, route: Route) -> None:
        """Remove our route; a route that is already gone is not an error."""
        await self._write("del", route)

    async def _write(self, action: str, route: Route) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        def write(ipr: IPRoute) -> None:
            try:
                ipr.route(action, **self._spec(route))
            except NetlinkError as exc:
                if action == "del" and exc.code == errno.ESRCH:
                    return
                if action == "add" and exc.code == errno.EEXIST:
                    raise RouteExists(f"route {route.dst} metric {route.metric} already exists and is not ours "
                                      f"(protocol {self.protocol}); leaving it") from None
                raise RouteError(f"{action} {route}: {os.strerror(exc.code)} (errno {exc.code})") from None
        await self._call(write)
