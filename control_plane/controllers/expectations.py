"""Kubernetes' ControllerExpectations (with UID-tracked deletions): what a controller has
asked the API for and not yet seen come back through its informer.

A ReplicaSet that has just created 3 pods must not create them again in a sync that
runs before the informer shows them. Before the creates it records ``expect_creations(key,
3)``; the pod informer's add handler calls ``creation_observed(key)`` per pod; until the
count reaches zero, `satisfied` is False and the sync only computes status. Deletions are
tracked by pod key, so a pod seen twice (update with deletionTimestamp, then delete) counts
once. Expectations expire after ``ttl`` (five minutes, as in Kubernetes), so a lost event
delays a controller but never wedges it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

EXPECTATIONS_TIMEOUT = 300.0  # seconds; controller.ExpectationsTimeout


@dataclass
class _Expectation:
    add: int
    delete: int
    at: float
    deleting: set[str] = field(default_factory=set)

    def fulfilled(self) -> bool:
        return self.add <= 0 and self.delete <= 0


class ControllerExpectations:
    def __init__(self, ttl: float = EXPECTATIONS_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._records: dict[str, _Expectation] = {}

    def satisfied(self, key: str) -> bool:
        """Whether a sync of ``key`` may act: nothing pending, expired, or never recorded."""
        record = self._records.get(key)
        if record is None or record.fulfilled():
            return True
        if self._clock() - record.at > self.ttl:
            log.info("%s: expectations (%d creates, %d deletes pending) expired after %gs; syncing anyway",
                     key, record.add, record.delete, self.ttl)
            return True
        return False

    def pending(self, key: str) -> tuple[int, int]:
        """(creates, deletes) still expected, for logs and tests."""
        record = self._records.get(key)
        return (record.add, record.delete) if record else (0, 0)

    def expect_creations(self, key: str, count: int) -> None:
        self._records[key] = _Expectation(count, 0, self._clock())

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        deleting = set(pod_keys)
        self._records[key] = _Expectation(0, len(deleting), self._clock(), deleting)

    def creation_observed(self, key: str) -> None:
        record = self._records.get(key)
        if record is not None:
            record.add -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        """Count a deletion once per pod we asked to delete; other pods are ignored."""
        record = self._records.get(key)
        if record is not None and pod_key in record.deleting:
            record.deleting.discard(pod_key)
            record.delete -= 1

    def delete(self, key: str) -> None:
        self._records.pop(key, None)
