"""List-then-watch informers: a local cache of one resource type kept in step with the server.

Contract of `Informer.run` (the only endless loop, kept thin on purpose):
  * list (paged), replace the cache, dispatch add/update/delete for the difference,
    mark the informer synced;
  * watch from the list's resourceVersion with bookmarks; every event (bookmarks too)
    advances the resourceVersion to resume from;
  * a stream that ends or breaks is resumed from the last seen resourceVersion, after a
    backoff if it failed or ended suspiciously fast;
  * 410 Gone (HTTP reply or ERROR event) discards the resourceVersion and relists;
  * `CancelledError` always propagates; handler exceptions are logged, never fatal.

Each step (`relist`, `watch_once`, `run_once`) is a plain coroutine, testable on its own.
Handlers receive the cached objects themselves: copy before mutating.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from skiff.api.resources import ResourceType
from skiff.client.api import ApiClient, ResourceArg, resolve_type
from skiff.client.backoff import Backoff, Clock, Sleep, default_sleep
from skiff.client.errors import ApiClientError, Gone
from skiff.client.watchstream import ADDED, BOOKMARK, DELETED, MODIFIED

logger = logging.getLogger("skiff.client.informer")

Obj = dict[str, Any]
AddHandler = Callable[[Obj], Awaitable[None] | None]
UpdateHandler = Callable[[Obj, Obj], Awaitable[None] | None]
DeleteHandler = Callable[[Obj], Awaitable[None] | None]

DEFAULT_WATCH_TIMEOUT = 300  # seconds; the server ends the stream and we re-watch, so dead peers are noticed
MIN_HEALTHY_WATCH = 1.0  # a watch that ends quicker than this with no events counts as a failure


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _rv(obj: Mapping[str, Any]) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


@dataclass
class WatchResult:
    """How one watch stream ended: where to resume, and how much it delivered."""

    resource_version: str
    events: int


class Informer:
    def __init__(self, client: ApiClient, rt: ResourceArg, namespace: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None,
                 resync_period: float | None = None, *, page_size: int = 500,
                 watch_timeout: int = DEFAULT_WATCH_TIMEOUT, backoff: Backoff | None = None,
                 sleep: Sleep = default_sleep, clock: Clock = time.monotonic) -> None:
        self.client = client
        self.rt: ResourceType = resolve_type(rt)
        self.namespace = namespace if self.rt.namespaced else None
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff(initial=0.8, factor=2.0, maximum=30.0)
        self._sleep = sleep
        self._clock = clock
        self._cache: dict[str, Obj] = {}
        self._synced = asyncio.Event()
        self._add: list[AddHandler] = []
        self._update: list[UpdateHandler] = []
        self._delete: list[DeleteHandler] = []
        self._task: asyncio.Task[None] | None = None
        self.resource_version: str | None = None
        self.failures = 0

    def __repr__(self) -> str:
        scope = self.namespace or "*"
        return f"<Informer {self.rt.plural} ns={scope} ls={self.label_selector!r} fs={self.field_selector!r}>"

    # ---- handlers and cache ----------------------------------------------------------

    def on_add(self, handler: AddHandler) -> AddHandler:
        self._add.append(handler)
        return handler

    def on_update(self, handler: UpdateHandler) -> UpdateHandler:
        self._update.append(handler)
        return handler

    def on_delete(self, handler: DeleteHandler) -> DeleteHandler:
        self._delete.append(handler)
        return handler

    def add_handlers(self, *, on_add: AddHandler | None = None, on_update: UpdateHandler | None = None,
                     on_delete: DeleteHandler | None = None) -> None:
        """Register several handlers at once. Register before `start`: objects already
        cached are not replayed to handlers added later."""
        if on_add:
            self._add.append(on_add)
        if on_update:
            self._update.append(on_update)
        if on_delete:
            self._delete.append(on_delete)

    def get(self, key: str) -> Obj | None:
        """The cached object for ``namespace/name`` (or ``name`` when cluster-scoped)."""
        return self._cache.get(key)

    def keys(self) -> list[str]:
        return sorted(self._cache)

    def list(self) -> list[Obj]:
        """Every cached object, ordered by key."""
        return [self._cache[k] for k in sorted(self._cache)]

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first complete list; False on timeout."""
        if self._synced.is_set():
            return True
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"informer-{self.rt.plural}")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def run(self) -> None:
        """Keep the cache current forever (see the module docstring for the contract)."""
        resync = asyncio.create_task(self._resync_loop()) if self.resync_period else None
        try:
            while True:
                await self.run_once()
        finally:
            if resync is not None:
                resync.cancel()

    async def run_once(self) -> None:
        """One cycle: relist if there is no resourceVersion, then one watch stream; on
        failure, count it and sleep the backoff. Never raises except `CancelledError`."""
        started = self._clock()
        try:
            if self.resource_version is None:
                await self.relist()
            result = await self.watch_once(self.resource_version or "")
        except asyncio.CancelledError:
            raise
        except Gone as exc:
            if self.resource_version is None:  # the list itself was refused: not something a relist fixes
                await self._fail(f"Gone: {exc}")
                return
            logger.info("%s: resourceVersion %s is gone (%s); relisting", self, self.resource_version, exc)
            self.resource_version = None
            return
        except ApiClientError as exc:
            await self._fail(f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # a bug or an unexpected payload: keep the informer alive, but say so
            logger.exception("%s: unexpected error", self)
            await self._fail(f"{type(exc).__name__}: {exc}")
            return
        if result.events == 0 and self._clock() - started < MIN_HEALTHY_WATCH:
            await self._fail("watch ended immediately without events")
        else:
            self.failures = 0

    async def _fail(self, why: str) -> None:
        self.failures += 1
        delay = self.backoff.delay(self.failures)
        action = "relisting" if self.resource_version is None else f"resuming from {self.resource_version}"
        logger.warning("%s: attempt %d failed: %s; %s in %gs", self, self.failures, why, action, delay)
        await self._sleep(delay)

    # ---- steps -----------------------------------------------------------------------

    async def relist(self) -> str:
        """List everything, replace the cache, dispatch the differences; return the list's RV."""
        result = await self.client.list_all(self.rt, self.namespace, label_selector=self.label_selector,
                                            field_selector=self.field_selector, page_size=self.page_size)
        fresh: dict[str, Obj] = {}
        for item in result.get("items") or []:
            # Items of a list carry no kind/apiVersion; handlers expect whole objects.
            item.setdefault("apiVersion", self.rt.api_version)
            item.setdefault("kind", self.rt.kind)
            fresh[object_key(item)] = item
        old = self._cache
        self._cache = dict(fresh)
        for key, obj in old.items():
            if key not in fresh:
                await self._dispatch_delete(obj)
        for key, obj in fresh.items():
            if key not in old:
                await self._dispatch_add(obj)
            elif _rv(old[key]) != _rv(obj):
                await self._dispatch_update(old[key], obj)
        rv = str((result.get("metadata") or {}).get("resourceVersion") or "")
        self.resource_version = rv or None
        self._synced.set()
        logger.debug("%s: listed %d objects at resourceVersion %s", self, len(fresh), rv)
        return rv

    async def watch_once(self, resource_version: str) -> WatchResult:
        """Consume one watch stream from ``resource_version`` into the cache."""
        events = 0
        stream = self.client.watch(self.rt, self.namespace, resource_version=resource_version or None,
                                   label_selector=self.label_selector, field_selector=self.field_selector,
                                   allow_bookmarks=True, timeout_seconds=self.watch_timeout)
        async with aclosing(stream):
            async for event_type, obj in stream:
                events += 1
                await self.apply_event(event_type, obj)
        return WatchResult(self.resource_version or resource_version, events)

    async def apply_event(self, event_type: str, obj: Obj) -> None:
        rv = _rv(obj)
        if event_type == BOOKMARK:
            if rv:
                self.resource_version = rv
            return
        key = object_key(obj)
        if event_type in (ADDED, MODIFIED):
            old = self._cache.get(key)
            self._cache[key] = obj
            if rv:
                self.resource_version = rv
            if old is None:
                await self._dispatch_add(obj)
            else:
                await self._dispatch_update(old, obj)
        elif event_type == DELETED:
            old = self._cache.pop(key, None)
            if rv:
                self.resource_version = rv
            await self._dispatch_delete(obj if obj.get("metadata") else (old or obj))
        else:
            logger.warning("%s: ignoring watch event of unknown type %r", self, event_type)

    async def resync(self) -> None:
        """Re-deliver every cached object as an update (old == new), so level-triggered
        handlers re-check state that may have drifted outside the API."""
        for key in sorted(self._cache):
            obj = self._cache.get(key)
            if obj is not None:
                await self._dispatch_update(obj, obj)

    async def _resync_loop(self) -> None:
        assert self.resync_period
        while True:
            await self._sleep(self.resync_period)
            if self.has_synced:
                await self.resync()

    # ---- dispatch --------------------------------------------------------------------

    async def _dispatch_add(self, obj: Obj) -> None:
        for handler in self._add:
            await self._call(handler, obj)

    async def _dispatch_update(self, old: Obj, new: Obj) -> None:
        for handler in self._update:
            await self._call(handler, old, new)

    async def _dispatch_delete(self, obj: Obj) -> None:
        for handler in self._delete:
            await self._call(handler, obj)

    async def _call(self, handler: Callable[..., Awaitable[None] | None], *args: Obj) -> None:
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: handler %s failed for %s", self, getattr(handler, "__qualname__", handler),
                             object_key(args[-1]))


InformerKey = tuple[str, str, str, str | None, str | None, str | None]


class SharedInformerFactory:
    """One informer per (type, namespace, selectors) for everything built on one client.

    Create one factory per process and hand it to every controller, so they share list
    and watch streams instead of opening their own.
    """

    def __init__(self, client: ApiClient, *, resync_period: float | None = None, **informer_options: Any) -> None:
        self.client = client
        self.resync_period = resync_period
        self._options = informer_options
        self._informers: dict[InformerKey, Informer] = {}

    def informer_for(self, rt: ResourceArg, namespace: str | None = None, *, label_selector: str | None = None,
                     field_selector: str | None = None, resync_period: float | None = None) -> Informer:
        resolved = resolve_type(rt)
        ns = namespace if resolved.namespaced else None
        key: InformerKey = (resolved.group, resolved.version, resolved.plural, ns, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(self.client, resolved, ns, label_selector=label_selector,
                                field_selector=field_selector,
                                resync_period=resync_period if resync_period is not None else self.resync_period,
                                **self._options)
            self._informers[key] = informer
        return informer

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    def start(self) -> None:
        """Start every informer created so far that is not running yet."""
        for informer in self._informers.values():
            informer.start()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        results = await asyncio.gather(*(i.wait_synced(timeout) for i in self._informers.values()))
        return all(results)

    async def stop(self) -> None:
        for informer in reversed(list(self._informers.values())):
            await informer.stop()
