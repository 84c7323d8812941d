"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does, so
that of several schedulers (or controller managers) only one acts.

The Lease (``kube-system/kube-scheduler``, ``kube-system/kube-controller-manager``)
records holderIdentity, leaseDurationSeconds, acquireTime, renewTime and
leaseTransitions. Every write is a compare-and-swap on the Lease's resourceVersion.

- A candidate takes the lease when it is free or has not been renewed for
  leaseDuration, timed on the candidate's own clock from when it last saw the lease
  change (not from renewTime, so clock skew between hosts does not matter); it tries
  every retryPeriod (with jitter).
- The leader renews every retryPeriod; if it cannot renew within renewDeadline it has
  lost the lease, and the work it runs is cancelled.
- On an orderly stop the leader releases the lease (holder "", duration 1 s), so the
  next candidate need not wait out the lease.

Defaults are kube-scheduler's: 15 s lease, 10 s renew deadline, 2 s retry period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from skiff.client.api import ApiClient
from skiff.client.errors import AlreadyExists, ApiClientError, NotFound

log = logging.getLogger(__name__)

Obj = dict[str, Any]
JITTER_FACTOR = 1.2  # wait.JitterUntil(..., JitterFactor 1.2)


@dataclass(frozen=True)
class LeaderElectionSettings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    namespace: str = "kube-system"
    release_on_cancel: bool = True


def micro_time(ts: float) -> str:
    """metav1.MicroTime: ``2026-11-23T15:04:05.000000Z``."""
    whole = int(ts)
    micros = min(int(round((ts - whole) * 1e6)), 999_999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


@dataclass(frozen=True)
class LeaderElectionRecord:
    holder_identity: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    leader_transitions: int = 0

    @classmethod
    def of_lease(cls, lease: Obj) -> LeaderElectionRecord:
        spec = lease.get("spec") or {}
        return cls(holder_identity=str(spec.get("holderIdentity") or ""),
                   lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   leader_transitions=int(spec.get("leaseTransitions") or 0))

    def to_spec(self) -> Obj:
        return {"holderIdentity": self.holder_identity, "leaseDurationSeconds": self.lease_duration_seconds,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time,
                "leaseTransitions": self.leader_transitions}


class LeaderElector:
    """One candidate for one lease. `try_acquire_or_renew` is one step; `acquire` and
    `renew` are the loops around it."""

    def __init__(self, client: ApiClient, name: str, identity: str, settings: LeaderElectionSettings | None = None,
                 *, wall_clock: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.name = name
        self.identity = identity
        self.settings = settings or LeaderElectionSettings()
        self._wall_clock = wall_clock
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lease: Obj | None = None  # the Lease as last read or written (its resourceVersion)
        self.observed = LeaderElectionRecord()
        self._observed_time = 0.0
        self._reported_leader = ""

    @property
    def description(self) -> str:
        return f"{self.settings.namespace}/{self.name}"

    def is_leader(self) -> bool:
        return self.observed.holder_identity == self.identity

    def _lease_valid(self) -> bool:
        return self._observed_time + self.observed.lease_duration_seconds > self._clock()

    def _observe(self, record: LeaderElectionRecord) -> None:
        self.observed = record
        self._observed_time = self._clock()
        if record.holder_identity and record.holder_identity != self._reported_leader:
            self._reported_leader = record.holder_identity
            if record.holder_identity != self.identity:
                log.info("lease %s: new leader elected: %s", self.description, record.holder_identity)

    async def _write(self, record: LeaderElectionRecord) -> None:
        assert self._lease is not None
        lease = {**self._lease, "spec": {**(self._lease.get("spec") or {}), **record.to_spec()}}
        self._lease = await self.client.replace("leases", lease, self.settings.namespace)
        self._observe(record)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True if this candidate holds the lease afterwards."""
        now = micro_time(self._wall_clock())
        duration = int(self.settings.lease_duration)
        desired = LeaderElectionRecord(self.identity, duration, now, now)
        if self.is_leader() and self._lease_valid() and self._lease is not None:
            # Fast path: assume the lease is as we last wrote it; the resourceVersion checks that.
            try:
                await self._write(LeaderElectionRecord(self.identity, duration, self.observed.acquire_time, now,
                                                       self.observed.leader_transitions))
                return True
            except ApiClientError as exc:
                log.debug("lease %s: optimistic renewal failed (%s); reading it again", self.description, exc)
        try:
            self._lease = await self.client.get("leases", self.name, self.settings.namespace)
        except NotFound:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.settings.namespace},
                    "spec": desired.to_spec()}
            try:
                self._lease = await self.client.create("leases", body, self.settings.namespace)
            except (AlreadyExists, ApiClientError) as exc:
                log.debug("lease %s: creating it failed: %s", self.description, exc)
                return False
            self._observe(desired)
            return True
        except ApiClientError as exc:
            log.warning("lease %s: reading it failed: %s", self.description, exc)
            return False
        current = LeaderElectionRecord.of_lease(self._lease)
        if current != self.observed:
            self._observe(current)
        if current.holder_identity and self._lease_valid() and not self.is_leader():
            return False
        if self.is_leader():
            record = LeaderElectionRecord(self.identity, duration, current.acquire_time, now,
                                          current.leader_transitions)
        else:
            record = LeaderElectionRecord(self.identity, duration, now, now, current.leader_transitions + 1)
        try:
            await self._write(record)
        except ApiClientError as exc:
            log.debug("lease %s: taking it failed: %s", self.description, exc)
            return False
        return True

    async def acquire(self) -> None:
        """Try every retryPeriod (jittered) until this candidate holds the lease."""
        log.info("lease %s: %s is trying to acquire it", self.description, self.identity)
        while not await self.try_acquire_or_renew():
            period = self.settings.retry_period
            await self._sleep(period + self._rng.random() * JITTER_FACTOR * period)
        log.info("lease %s: acquired by %s", self.description, self.identity)

    async def renew(self) -> None:
        """Renew every retryPeriod; return when renewing failed for renewDeadline (lost)."""
        while True:
            deadline = self._clock() + self.settings.renew_deadline
            while not await self._attempt_until(deadline):
                if self._clock() + self.settings.retry_period > deadline:
                    log.warning("lease %s: %s could not renew it within %gs; leadership lost", self.description,
                                self.identity, self.settings.renew_deadline)
                    return
                await self._sleep(self.settings.retry_period)
            await self._sleep(self.settings.retry_period)

    async def _attempt_until(self, deadline: float) -> bool:
        """One attempt, abandoned at ``deadline`` (a request retrying against an unreachable
        server must not keep a leader that cannot renew believing it leads)."""
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), max(deadline - self._clock(), 0.001))
        except TimeoutError:
            return False

    async def release(self) -> bool:
        """Give the lease up (only if still held): holder "", duration 1 s."""
        try:
            self._lease = await self.client.get("leases", self.name, self.settings.namespace)
        except ApiClientError as exc:
            log.warning("lease %s: could not release it: %s", self.description, exc)
            return False
        self._observe(LeaderElectionRecord.of_lease(self._lease))
        if not self.is_leader():
            return True
        now = micro_time(self._wall_clock())
        try:
            await self._write(LeaderElectionRecord("", 1, now, now, self.observed.leader_transitions))
        except ApiClientError as exc:
            log.warning("lease %s: could not release it: %s", self.description, exc)
            return False
        log.info("lease %s: released by %s", self.description, self.identity)
        return True


async def run_with_leader_election(client: ApiClient, name: str, identity: str, run: Callable[[], Awaitable[None]],
                                   settings: LeaderElectionSettings | None = None, *,
                                   elector: LeaderElector | None = None) -> None:
    """Run ``run()`` only while holding the lease ``name``.

    When leadership is lost, ``run()`` is cancelled and the candidate goes back to
    waiting for the lease (a fresh ``run()`` each term). Returns when ``run()`` returns;
    on cancellation the lease is released (unless ``release_on_cancel`` is off).
    """
    elector = elector or LeaderElector(client, name, identity, settings)
    while True:
        await elector.acquire()
        work = asyncio.ensure_future(run())
        renewing = asyncio.ensure_future(elector.renew())
        try:
            done, _ = await asyncio.wait({work, renewing}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            for task in (work, renewing):
                task.cancel()
            await asyncio.gather(work, renewing, return_exceptions=True)
            if elector.settings.release_on_cancel:
                with contextlib.suppress(Exception):
                    await asyncio.shield(elector.release())
            raise
        if work in done:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await elector.release()
            work.result()  # re-raise what the work raised
            return
        log.warning("lease %s: %s stopped leading; stopping its work", elector.description, identity)
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
