"""cgroup v1 memory threshold notifications (kubelet's --kernel-memcg-notification).

The kernel signals an eventfd when the cgroup's ``memory.usage_in_bytes`` crosses a value
registered through ``cgroup.event_control``; the eviction manager then runs a pass at once
instead of at the end of its monitoring period. The value is where the working set meets
the threshold: capacity - threshold + inactive file pages (kubelet's UpdateThreshold), so
it is re-armed after every pass as the page cache moves. cgroup v2 has no such interface;
there the periodic pass is all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("skiff.agent.eviction.memcg")
REARM_STEP = 1 << 20  # re-register only when the value moves by more than 1 MiB


def usage_threshold(capacity: int, threshold: int, usage: int, working_set: int) -> int:
    """The memory.usage_in_bytes at which memory.available falls to ``threshold``."""
    return max(0, capacity - threshold + max(0, usage - working_set))


class MemcgThresholdNotifier:
    """One registration on one cgroup; ``on_cross`` is called on the event loop when it fires."""

    def __init__(self, on_cross: Callable[[], None]) -> None:
        self.on_cross = on_cross
        self.cgroup: Path | None = None
        self.value: int | None = None
        self._eventfd: int | None = None
        self._usage_fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed = False  # the kernel refused once: do not try again every pass

    def update(self, cgroup: Path, value: int) -> None:
        """(Re-)register ``value`` on ``cgroup``'s memory usage, if it moved."""
        if self.failed:
            return
        if self.cgroup == cgroup and self.value is not None and abs(self.value - value) <= REARM_STEP:
            return
        self.close()
        try:
            self._register(cgroup, value)
        except OSError as exc:
            self.close()
            self.failed = True
            log.info("memory threshold notifications are not available on %s (%s); the eviction manager "
                     "looks every monitoring period only", cgroup, exc)
            return
        log.debug("memory threshold notification armed on %s at usage %d", cgroup, value)

    def _register(self, cgroup: Path, value: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._usage_fd = os.open(cgroup / "memory.usage_in_bytes", os.O_RDONLY | os.O_CLOEXEC)
        control = os.open(cgroup / "cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(control, f"{self._eventfd} {self._usage_fd} {value}".encode())
        finally:
            os.close(control)
        self._loop.add_reader(self._eventfd, self._fired)
        self.cgroup, self.value = cgroup, value

    def _fired(self) -> None:
        if self._eventfd is None:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.eventfd_read(self._eventfd)
        log.debug("memory usage of %s crossed %s bytes; running an eviction pass now", self.cgroup, self.value)
        self.on_cross()

    def close(self) -> None:
        if self._eventfd is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._eventfd)
            os.close(self._eventfd)
        if self._usage_fd is not None:
            os.close(self._usage_fd)
        self._eventfd = self._usage_fd = None
        self.cgroup = self.value = None
