"""Reading watch streams in tests, with a timeout so a missing event fails fast."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from control_plane.storage import WatchEvent


async def take(events: AsyncIterator[WatchEvent], count: int, timeout: float = 10.0) -> list[WatchEvent]:
    """The next ``count`` events of a watch."""
    taken: list[WatchEvent] = []
    async with asyncio.timeout(timeout):
        while len(taken) < count:
            taken.append(await anext(events))
    return taken


async def take_until(events: AsyncIterator[WatchEvent], revision: int, timeout: float = 10.0) -> list[WatchEvent]:
    """Events of a watch up to and including the one at ``revision``."""
    taken: list[WatchEvent] = []
    async with asyncio.timeout(timeout):
        while not taken or taken[-1].revision < revision:
            taken.append(await anext(events))
    return taken
