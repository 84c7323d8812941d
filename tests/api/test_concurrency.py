"""Optimistic concurrency over HTTPS: 20 writers doing read-modify-write on one ConfigMap.

Every writer GETs the object and PUTs it back with the resourceVersion it read. In a
lock-step round all 20 read the same resourceVersion, so exactly one PUT may win and
the other 19 must get 409 Conflict. In the free-running phase writers retry on
conflict; the counter must end equal to the number of wins (no lost update).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

if TYPE_CHECKING:
    from tests.conftest import ApiServer

WRITERS = 20
LOCKSTEP_ROUNDS = 25
FREE_RUN_WINS = 150  # stop the free-running phase once this many updates have won
DEADLINE = 90.0  # seconds for each phase


def tls_context(server: ApiServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.load_verify_locations(cadata=server.ca_pem.decode())
    return ctx


@pytest.fixture
async def session(api_server: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    """One keep-alive pool, verified against the server's CA, with the admin token."""
    connector = aiohttp.TCPConnector(ssl=tls_context(api_server), limit=WRITERS * 2)
    async with aiohttp.ClientSession(
        base_url=api_server.url, connector=connector, timeout=aiohttp.ClientTimeout(total=30),
        headers={"Authorization": f"Bearer {api_server.token}", "Accept": "application/json"},
    ) as s:
        yield s


async def call(session: aiohttp.ClientSession, method: str, path: str,
               body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    async with session.request(method, path, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def create_counter(session: aiohttp.ClientSession, path: str, name: str) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"counter": "0", "winner": ""}}
    status, created = await call(session, "POST", path, body)
    assert status == 201, f"creating ConfigMap {name}: HTTP {status} {created}"
    return created


def assert_conflict(status: int, body: dict[str, Any], name: str) -> None:
    assert status == 409, f"expected 409 Conflict, got HTTP {status}: {body}"
    assert body.get("kind") == "Status" and body.get("status") == "Failure", body
    assert body.get("reason") == "Conflict", body
    assert body.get("code") == 409, body
    assert name in body.get("message", ""), body
    assert body.get("details", {}).get("name") == name, body
    assert body.get("details", {}).get("kind") == "configmaps", body


async def test_lockstep_rounds_have_exactly_one_winner(session: aiohttp.ClientSession, namespace: str) -> None:
    name = "counter"
    collection = f"/api/v1/namespaces/{namespace}/configmaps"
    item = f"{collection}/{name}"
    await create_counter(session, collection, name)

    deadline = time.monotonic() + DEADLINE
    for round_no in range(1, LOCKSTEP_ROUNDS + 1):
        assert time.monotonic() < deadline, f"round {round_no} started after the {DEADLINE}s deadline"
        reads = await asyncio.gather(*(call(session, "GET", item) for _ in range(WRITERS)))
        assert all(status == 200 for status, _ in reads), [s for s, _ in reads]
        versions = {obj["metadata"]["resourceVersion"] for _, obj in reads}
        assert len(versions) == 1, f"round {round_no}: readers saw different versions {versions}"

        async def modify_and_write(writer: int, obj: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
            obj["data"]["counter"] = str(int(obj["data"]["counter"]) + 1)
            obj["data"]["winner"] = str(writer)
            status, body = await call(session, "PUT", item, obj)
            return writer, status, body

        results = await asyncio.gather(*(modify_and_write(w, obj) for w, (_, obj) in enumerate(reads)))
        winners = [(w, body) for w, status, body in results if status == 200]
        assert len(winners) == 1, (f"round {round_no}: {len(winners)} winners; statuses "
                                   f"{sorted(status for _, status, _ in results)}")
        for _, status, body in results:
            if status != 200:
                assert_conflict(status, body, name)
        winner, won = winners[0]
        assert int(won["metadata"]["resourceVersion"]) > int(versions.pop())

        status, stored = await call(session, "GET", item)
        assert status == 200
        assert stored["data"] == {"counter": str(round_no), "winner": str(winner)}, f"round {round_no}: {stored}"
        assert stored["metadata"]["resourceVersion"] == won["metadata"]["resourceVersion"]


async def test_free_running_writers_lose_no_update(session: aiohttp.ClientSession, namespace: str) -> None:
    name = "counter"
    collection = f"/api/v1/namespaces/{namespace}/configmaps"
    item = f"{collection}/{name}"
    await create_counter(session, collection, name)

    wins = [0] * WRITERS
    conflicts = [0] * WRITERS
    deadline = time.monotonic() + DEADLINE

    async def writer(w: int) -> None:
        while sum(wins) < FREE_RUN_WINS:
            assert time.monotonic() < deadline, f"writer {w}: {sum(wins)} wins after {DEADLINE}s"
            status, obj = await call(session, "GET", item)
            assert status == 200, obj
            obj["data"]["counter"] = str(int(obj["data"]["counter"]) + 1)
            obj["data"]["winner"] = str(w)
            status, body = await call(session, "PUT", item, obj)
            if status == 200:
                wins[w] += 1
            else:
                assert_conflict(status, body, name)
                conflicts[w] += 1

    await asyncio.gather(*(writer(w) for w in range(WRITERS)))

    status, stored = await call(session, "GET", item)
    assert status == 200
    assert int(stored["data"]["counter"]) == sum(wins), (
        f"counter {stored['data']['counter']} != {sum(wins)} acknowledged updates (lost updates); "
        f"conflicts {sum(conflicts)}")
    assert sum(conflicts) > 0, "20 concurrent writers never conflicted: the test did not exercise concurrency"
