"""Lease-based leader election against a real API server, with short timings
(lease 3 s, renew deadline 2 s, retry 0.25 s: short, yet slack enough for a busy CI machine)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from control_plane.leaderelection import (
    LeaderElectionSettings,
    LeaderElector,
    micro_time,
    run_with_leader_election,
)
from skiff.client.api import ApiClient
from skiff.client.errors import Conflict
from skiff.client.kubeconfig import load_kubeconfig

if TYPE_CHECKING:
    from tests.conftest import ApiServer

FAST = LeaderElectionSettings(lease_duration=3, renew_deadline=2, retry_period=0.25)
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_micro_time_format() -> None:
    assert micro_time(1795446245.25) == "2026-11-23T15:04:05.250000Z"


@pytest.fixture
async def client(api_server: ApiServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(api_server.kubeconfig)) as c:
        yield c


async def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Contender:
    """A candidate whose work marks itself running until cancelled."""

    def __init__(self, client: ApiClient, lease: str, identity: str, settings: LeaderElectionSettings) -> None:
        self.identity = identity
        self.running = False
        self.terms = 0
        self.elector = LeaderElector(client, lease, identity, settings)
        self.task = asyncio.create_task(run_with_leader_election(client, lease, identity, self.work,
                                                                 elector=self.elector))

    async def work(self) -> None:
        self.running = True
        self.terms += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.running = False

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def lease_spec(client: ApiClient, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = (await client.get("leases", name, "kube-system"))["spec"]
    return spec


async def test_of_two_contenders_only_one_runs(client: ApiClient) -> None:
    lease = f"sched-{uuid.uuid4().hex[:8]}"
    a, b = Contender(client, lease, "a", FAST), Contender(client, lease, "b", FAST)
    try:
        leader = await wait_for(lambda: a if a.running else b if b.running else None, 5, "a leader")
        follower = b if leader is a else a
        spec = await lease_spec(client, lease)
        assert spec["holderIdentity"] == leader.identity
        assert (spec["leaseDurationSeconds"], spec["leaseTransitions"]) == (3, 0)
        assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
        # Through several lease durations of renewals the follower never runs.
        renewed = spec["renewTime"]
        deadline = time.monotonic() + 2 * FAST.lease_duration
        while time.monotonic() < deadline:
            assert leader.running and not follower.running
            await asyncio.sleep(0.05)
        spec = await lease_spec(client, lease)
        assert spec["renewTime"] > renewed and spec["holderIdentity"] == leader.identity
    finally:
        await a.stop()
        await b.stop()


async def test_a_dead_leader_is_replaced_once_its_lease_expires(client: ApiClient) -> None:
    lease = f"sched-{uuid.uuid4().hex[:8]}"
    crashing = LeaderElectionSettings(lease_duration=3, renew_deadline=2, retry_period=0.25,
                                      release_on_cancel=False)
    a = Contender(client, lease, "a", crashing)
    await wait_for(lambda: a.running, 5, "a to lead")
    b = Contender(client, lease, "b", FAST)
    try:
        await wait_for(lambda: b.elector.observed.holder_identity == "a", 5, "b to see a's lease")
        assert not b.running
        await a.stop()  # dies without releasing: b must wait the lease out
        died = time.monotonic()
        await wait_for(lambda: b.running, 10, "b to take over")
        waited = time.monotonic() - died
        assert 1.5 <= waited <= 2 * FAST.lease_duration + 1.0, waited
        spec = await lease_spec(client, lease)
        assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)
    finally:
        await a.stop()
        await b.stop()


async def test_an_orderly_stop_releases_the_lease_for_a_quick_handover(client: ApiClient) -> None:
    lease = f"sched-{uuid.uuid4().hex[:8]}"
    a = Contender(client, lease, "a", LeaderElectionSettings(lease_duration=15, renew_deadline=10, retry_period=0.2))
    await wait_for(lambda: a.running, 5, "a to lead")
    b = Contender(client, lease, "b", LeaderElectionSettings(lease_duration=15, renew_deadline=10, retry_period=0.2))
    try:
        await a.stop()
        started = time.monotonic()
        await wait_for(lambda: b.running, 5, "b to take over")
        assert time.monotonic() - started < 5  # far less than the 15 s lease
        spec = await lease_spec(client, lease)
        assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("b", 15, 1)
    finally:
        await b.stop()


async def test_a_leader_that_cannot_renew_stops_its_work(client: ApiClient) -> None:
    lease = f"sched-{uuid.uuid4().hex[:8]}"
    a = Contender(client, lease, "a", FAST)
    try:
        await wait_for(lambda: a.running, 5, "a to lead")
        # Someone else takes the lease by force (as if a's renewals had not reached the server);
        # a renews concurrently, so the write may need a few tries.
        for _ in range(20):
            obj = await client.get("leases", lease, "kube-system")
            obj["spec"].update({"holderIdentity": "usurper", "leaseDurationSeconds": 60,
                                "renewTime": micro_time(time.time())})
            try:
                await client.replace("leases", obj, "kube-system")
                break
            except Conflict:
                continue
        await wait_for(lambda: not a.running, 5, "a to stop its work")
        assert a.terms == 1 and not a.task.done()  # a keeps waiting for the lease
        assert a.elector.observed.holder_identity == "usurper"
    finally:
        await a.stop()
