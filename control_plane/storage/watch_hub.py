"""Fan-out of committed writes to watchers, with a ring buffer of recent events.

A backend publishes every committed batch here, in revision order, from the event-loop
thread, only after it is durable. A watch subscribes first and then replays history
up to the revision published at that moment (from the ring buffer when it reaches back
far enough, else from the backend's log), then follows its live queue, so there is no
gap or duplicate at the seam. Publishing never blocks: a watcher whose queue overflows
is cut off with WatcherTooSlowError and is expected to re-watch from its last revision.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from control_plane.storage.interface import CompactedError, StoreError, WatchEvent

# (prefix, after_revision, up_to_revision, limit) -> the events under prefix with
# after < revision <= up_to, oldest first, at most limit. Raises CompactedError.
HistoryLoader = Callable[[str, int, int, int], Awaitable[list[WatchEvent]]]

REPLAY_PAGE = 1000


class WatcherTooSlowError(StoreError):
    """The watcher fell ``backlog`` events behind; it must re-watch from the last
    revision it received (the API server ends the watch; clients then re-watch)."""

    def __init__(self, prefix: str, last_revision: int, backlog: int):
        super().__init__(f"watch on {prefix!r} fell {backlog} events behind after revision {last_revision}")
        self.prefix = prefix
        self.last_revision = last_revision
        self.backlog = backlog


class _Subscriber:
    """One watcher's bounded live queue."""

    __slots__ = ("prefix", "events", "max_backlog", "waiter", "overflowed", "closed")

    def __init__(self, prefix: str, max_backlog: int):
        self.prefix = prefix
        self.events: deque[WatchEvent] = deque()
        self.max_backlog = max_backlog
        self.waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.closed = False

    def push(self, event: WatchEvent) -> bool:
        """Queue ``event``; False when the backlog is full and the watcher was cut off."""
        if len(self.events) >= self.max_backlog:
            self.overflowed = True
            self.events.clear()
            self._wake()
            return False
        self.events.append(event)
        self._wake()
        return True

    def end(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self, last_revision: int) -> WatchEvent:
        while True:
            if self.overflowed:
                raise WatcherTooSlowError(self.prefix, last_revision, self.max_backlog)
            if self.events:
                return self.events.popleft()
            if self.closed:
                raise StopAsyncIteration
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None


class WatchHub:
    def __init__(self, load_history: HistoryLoader, *, ring_size: int = 10_000, max_backlog: int = 10_000):
        self._load_history = load_history
        self._ring: deque[WatchEvent] = deque(maxlen=ring_size)
        self._subs: dict[str, set[_Subscriber]] = {}
        self._max_backlog = max_backlog
        self.revision = 0  # last revision published (durable)
        self.compacted_revision = 0
        self.closed = False
        self.cut_off = 0  # watchers ended for falling behind

    def reset(self, revision: int, compacted: int, recent: Sequence[WatchEvent]) -> None:
        """Start from a backend's persisted state; ``recent`` must end at ``revision``."""
        self.revision = revision
        self.compacted_revision = compacted
        self._ring.clear()
        self._ring.extend(recent)

    @property
    def watcher_count(self) -> int:
        return sum(len(subs) for subs in self._subs.values())

    def watch(self, prefix: str, after_revision: int) -> WatchStream:
        return WatchStream(self, prefix, after_revision)

    def publish(self, events: Sequence[WatchEvent]) -> None:
        """Fan out committed events (in revision order); never blocks."""
        if not events:
            return
        self._ring.extend(events)
        self.revision = events[-1].revision
        overflowed: list[_Subscriber] = []
        for prefix, subs in self._subs.items():
            for event in events:
                if not event.key.startswith(prefix):
                    continue
                for sub in subs:
                    if not sub.overflowed and not sub.push(event):
                        overflowed.append(sub)
        for sub in overflowed:
            self.cut_off += 1
            self.unsubscribe(sub)

    def close(self) -> None:
        """End every watch (their iterators stop cleanly)."""
        self.closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub.end()
        self._subs.clear()

    def subscribe(self, prefix: str) -> _Subscriber:
        sub = _Subscriber(prefix, self._max_backlog)
        if self.closed:
            sub.end()
        else:
            self._subs.setdefault(prefix, set()).add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        subs = self._subs.get(sub.prefix)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.prefix]

    def recent(self, prefix: str, after_revision: int) -> list[WatchEvent] | None:
        """Events under ``prefix`` after ``after_revision`` from the ring buffer, or None
        when the ring does not reach back that far."""
        if after_revision >= self.revision:
            return []
        ring = self._ring
        if not ring or ring[0].revision > after_revision + 1:
            return None
        found: list[WatchEvent] = []
        # Most watches start near the head, so walk back from the newest event.
        for event in reversed(ring):
            if event.revision <= after_revision:
                break
            if event.key.startswith(prefix):
                found.append(event)
        found.reverse()
        return found

    async def load_history(self, prefix: str, after: int, up_to: int, limit: int) -> list[WatchEvent]:
        return await self._load_history(prefix, after, up_to, limit)


class WatchStream:
    """The async iterator ``Store.watch`` returns.

    Subscribes on the first ``__anext__``. Ends (and unsubscribes) on ``aclose()``, when
    garbage-collected after a ``break``, when the consumer is cancelled while waiting
    (like an async generator), when the store closes, and on any error it raises."""

    def __init__(self, hub: WatchHub, prefix: str, after_revision: int):
        self._hub = hub
        self._prefix = prefix
        self._last = after_revision  # revision of the last event delivered
        self._sub: _Subscriber | None = None
        self._replay: deque[WatchEvent] = deque()
        self._loaded_to = 0  # history is loaded through this revision...
        self._replay_to = 0  # ...and must be loaded through this one; the live queue holds the rest
        self._done = False

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            return await self._next()
        except BaseException:
            # CancelledError included: it ends the watch and propagates.
            self._close()
            raise

    async def aclose(self) -> None:
        self._close()

    async def __aenter__(self) -> WatchStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def __del__(self) -> None:
        self._close()

    def _close(self) -> None:
        self._done = True
        if self._sub is not None:
            self._hub.unsubscribe(self._sub)
            self._sub = None
        self._replay.clear()

    def _start(self) -> _Subscriber:
        hub = self._hub
        if self._last < hub.compacted_revision:
            raise CompactedError(self._last, hub.compacted_revision)
        # Subscribe and note the published revision in one step (no await): everything at
        # or below it is history, everything above arrives in the live queue.
        sub = hub.subscribe(self._prefix)
        self._sub = sub
        self._replay_to = hub.revision
        recent = hub.recent(self._prefix, self._last)
        if recent is None:
            self._loaded_to = self._last
        else:
            self._replay.extend(recent)
            self._loaded_to = self._replay_to
        return sub

    def take_ready(self, limit: int) -> list[WatchEvent]:
        """At most ``limit`` of the events the next ``__anext__`` calls would return at once,
        without waiting; [] when the next one needs a wait, a history read or an error
        (which the next ``__anext__`` then does or raises). Lets a consumer handle all
        that a published batch brought in one go."""
        out: list[WatchEvent] = []
        sub = self._sub
        if self._done or sub is None:
            return out
        while len(out) < limit:
            if self._replay:
                event = self._replay.popleft()
            elif self._loaded_to < self._replay_to or sub.overflowed or not sub.events:
                break
            else:
                event = sub.events.popleft()
                if event.revision <= self._last:
                    continue  # as _next: a live event the start revision covers
            self._last = event.revision
            out.append(event)
        return out

    async def _next(self) -> WatchEvent:
        sub = self._sub or self._start()
        while True:
            if self._replay:
                event = self._replay.popleft()
                self._last = event.revision
                return event
            if self._loaded_to < self._replay_to:
                page = await self._hub.load_history(self._prefix, self._loaded_to, self._replay_to, REPLAY_PAGE)
                self._replay.extend(page)
                self._loaded_to = page[-1].revision if len(page) == REPLAY_PAGE else self._replay_to
                continue
            event = await sub.get(self._last)
            if event.revision > self._last:  # skips live events a future start revision covers
                self._last = event.revision
                return event
