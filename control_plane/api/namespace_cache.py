"""Namespaces kept in memory from a store watch, for the create path's
NamespaceLifecycle check (as kube-apiserver's admission uses an informer).

Only a hit on an active namespace is trusted; a miss or a terminating namespace is
looked up in the store, so a namespace created a moment ago is never refused."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from control_plane.storage.interface import Store, StoreError

log = logging.getLogger(__name__)


class NamespaceCache:
    def __init__(self, store: Store, prefix: str):
        self.store = store
        self.prefix = prefix
        self._active: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def is_active(self, name: str) -> bool:
        return name in self._active

    def _apply(self, key: str, value: bytes | None) -> None:
        name = key[len(self.prefix):]
        ns: dict[str, Any] | None = json.loads(value) if value is not None else None
        if ns is not None and not ns["metadata"].get("deletionTimestamp"):
            self._active.add(name)
        else:
            self._active.discard(name)

    async def start(self) -> None:
        listed = await self.store.list(self.prefix)
        for kv in listed.items:
            self._apply(kv.key, kv.value)
        self._task = asyncio.create_task(self._follow(listed.revision), name="namespace-cache")

    async def _follow(self, revision: int) -> None:
        """Apply every namespace write; after a broken watch, relist and go on."""
        while True:
            try:
                async for event in self.store.watch(self.prefix, revision):
                    revision = event.revision
                    self._apply(event.key, event.value)
            except asyncio.CancelledError:
                raise
            except StoreError as e:
                log.info("namespace cache watch ended (%s); relisting", e)
            listed = await self.store.list(self.prefix)
            self._active = set()
            for kv in listed.items:
                self._apply(kv.key, kv.value)
            revision = listed.revision

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
