"""CrashLoopBackOff: the kubelet's per-container restart back-off (``flowcontrol.Backoff``).

How the kubelet uses it (``kuberuntime_manager.doBackOff``), and how the agent should:

1. A container exited and is due for a restart. Ask ``in_backoff(key, finished_at)``: the
   seconds left of the back-off window that opened when the container *finished*. While
   it is positive the container stays ``Waiting`` with reason ``CrashLoopBackOff`` and the
   message ``back-off 20s restarting failed container=... pod=...`` (``next_delay`` gives
   the 20s), and the pod is synced again when the window closes.
2. Otherwise call ``record_start(key, finished_at)`` and start the container: the window
   doubles (10 s, 20 s, 40 s ... capped at 300 s) for the next exit.
3. A container that ran longer than ``reset_after`` (600 s: twice the cap) before it
   exited starts again from the initial delay.

No jitter, like the kubelet's container back-off. Times are on ``clock``'s scale
(seconds; inject a fake clock in tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

INITIAL_BACKOFF = 10.0
MAX_BACKOFF = 300.0
RESET_AFTER = 600.0


@dataclass
class _Entry:
    backoff: float
    last_update: float


class CrashBackoff:
    """Back-off windows keyed by (pod uid, container name)."""

    def __init__(
        self,
        initial: float = INITIAL_BACKOFF,
        maximum: float = MAX_BACKOFF,
        reset_after: float = RESET_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}

    def _expired(self, entry: _Entry, event_time: float) -> bool:
        # kubelet's hasExpired: stable if it ran for longer than twice the cap
        return event_time - entry.last_update > self.reset_after

    def in_backoff(self, key: Hashable, finished_at: float | None = None) -> float:
        """Seconds until the container may restart after exiting at ``finished_at``
        (default: now); 0.0 when it may restart now (``IsInBackOffSince``)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        event_time = self._clock() if finished_at is None else finished_at
        if self._expired(entry, event_time):
            return 0.0
        remaining = event_time + entry.backoff - self._clock()
        return remaining if remaining > 0 else 0.0

    def record_start(self, key: Hashable, finished_at: float | None = None) -> float:
        """The container is being (re)started after exiting at ``finished_at``: move the
        window to its next size (``Next``) and return it."""
        now = self._clock()
        event_time = now if finished_at is None else finished_at
        entry = self._entries.get(key)
        if entry is None or self._expired(entry, event_time):
            entry = _Entry(backoff=self.initial, last_update=now)
        else:
            entry = _Entry(backoff=min(entry.backoff * 2, self.maximum), last_update=now)
        self._entries[key] = entry
        return entry.backoff

    def next_delay(self, key: Hashable) -> float:
        """The window that applies to the container's next exit (``Get``); 0.0 when the
        container has never been restarted."""
        entry = self._entries.get(key)
        return entry.backoff if entry is not None else 0.0

    def forget(self, key: Hashable) -> None:
        """Drop a key (the pod is gone)."""
        self._entries.pop(key, None)

    def forget_pod(self, pod_uid: str) -> None:
        """Drop every container of a pod (keys are ``(pod_uid, container)`` tuples)."""
        for key in [k for k in self._entries if isinstance(k, tuple) and k and k[0] == pod_uid]:
            del self._entries[key]

    def gc(self) -> None:
        """Drop entries that have been stable long enough to be reset anyway (``GC``)."""
        now = self._clock()
        for key in [k for k, e in self._entries.items() if now - e.last_update > self.reset_after]:
            del self._entries[key]


def go_duration(seconds: float) -> str:
    """A duration as Go prints it (``time.Duration.String``) for whole and fractional
    seconds: ``10s``, ``1m20s``, ``5m0s``, ``1h0m0s``, ``1.5s``."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:.9f}".rstrip("0").rstrip(".")
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{sec_text}s"
    if minutes:
        return f"{sign}{int(minutes)}m{sec_text}s"
    return f"{sign}{sec_text}s"
