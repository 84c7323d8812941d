"""Durability through the whole server: kill -9 while 8 clients write, restart on the
same data dir, and find every acknowledged write.

Each client owns its ConfigMaps, so writes to one name are sequential and the last
acknowledged value of each name is known. A write that was sent but not acknowledged
when the server died may or may not have landed; so after a restart each name must
hold its last acknowledged value at the acknowledged resourceVersion, or a value that
was attempted after it at a higher resourceVersion. Never anything older.

The server is killed after a random number of acknowledged writes (at least one, so
every round proves something), while the clients still have writes in flight.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from tests.conftest import ApiServer, ServerFactory

CLIENTS = 8
NAMES_PER_CLIENT = 4
ROUNDS = 20
MIN_ACKS, MAX_ACKS = 1, 120  # the server dies after a random number of acknowledged writes in this range
ROUND_DEADLINE = 30.0
NAMESPACE = "durability"


@dataclass
class NameState:
    """What the test knows about one ConfigMap."""

    exists: bool = False  # whether the client should PUT (True) or POST (False)
    acked_value: str | None = None
    acked_rv: int = 0
    attempted_since_ack: list[str] = field(default_factory=list)


@dataclass
class Ledger:
    names: dict[str, NameState] = field(default_factory=dict)
    acks: int = 0
    acks_this_round: int = 0
    max_acked_rv: int = 0
    kill_after: int = 0
    kill_now: asyncio.Event = field(default_factory=asyncio.Event)

    def ack(self, name: str, value: str, rv: int) -> None:
        state = self.names[name]
        state.exists = True
        state.acked_value = value
        state.acked_rv = rv
        state.attempted_since_ack.clear()
        self.acks += 1
        self.acks_this_round += 1
        self.max_acked_rv = max(self.max_acked_rv, rv)
        if self.acks_this_round >= self.kill_after:
            self.kill_now.set()


def session_for(server: ApiServer, limit: int) -> aiohttp.ClientSession:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.load_verify_locations(cadata=server.ca_pem.decode())
    return aiohttp.ClientSession(
        base_url=server.url, connector=aiohttp.TCPConnector(ssl=ctx, limit=limit),
        timeout=aiohttp.ClientTimeout(total=20),
        headers={"Authorization": f"Bearer {server.token}", "Accept": "application/json"})


def configmap(name: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NAMESPACE},
            "data": {"value": value}}


async def client_loop(session: aiohttp.ClientSession, client: int, ledger: Ledger, seq: list[int],
                      rng: random.Random) -> None:
    """Write this client's names until the server stops answering."""
    collection = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    mine = [f"c{client}-{i}" for i in range(NAMES_PER_CLIENT)]
    while True:
        name = rng.choice(mine)
        state = ledger.names[name]
        seq[0] += 1
        value = f"{client}-{seq[0]}"
        state.attempted_since_ack.append(value)
        try:
            if state.exists:
                resp_cm = session.put(f"{collection}/{name}", json=configmap(name, value))
            else:
                resp_cm = session.post(collection, json=configmap(name, value))
            async with resp_cm as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            return  # the server is gone: the kill happened
        if status in (200, 201):
            assert body["data"] == {"value": value}, body
            ledger.ack(name, value, int(body["metadata"]["resourceVersion"]))
        elif status == 409 and body.get("reason") == "AlreadyExists":
            state.exists = True  # an unacknowledged create from an earlier round did land
        else:
            raise AssertionError(f"client {client}: {name}: HTTP {status} {body}")


async def write_until_killed(server: ApiServer, ledger: Ledger, kill_after: int, round_no: int) -> None:
    ledger.acks_this_round = 0
    ledger.kill_after = kill_after
    ledger.kill_now = asyncio.Event()
    seq = [round_no * 1_000_000]
    async with session_for(server, CLIENTS) as session:
        tasks = [asyncio.ensure_future(client_loop(session, c, ledger, seq, random.Random(round_no * 100 + c)))
                 for c in range(CLIENTS)]
        kill_now = asyncio.ensure_future(ledger.kill_now.wait())
        try:
            await asyncio.wait([kill_now, *tasks], timeout=ROUND_DEADLINE, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t.done():
                    t.result()  # a client's failed assertion or unexpected reply
                    raise AssertionError(f"round {round_no}: a client stopped while the server was up")
            assert kill_now.done(), (f"round {round_no}: only {ledger.acks_this_round}/{kill_after} writes "
                                     f"acknowledged in {ROUND_DEADLINE}s")
            server.kill()  # SIGKILL with writes in flight
            await asyncio.wait_for(asyncio.gather(*tasks), ROUND_DEADLINE)
        finally:
            kill_now.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def verify(server: ApiServer, ledger: Ledger, round_no: int) -> None:
    """Every acknowledged write survived; refresh which names exist."""
    async with session_for(server, 4) as session:
        async with session.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps") as resp:
            assert resp.status == 200, await resp.text()
            listed = await resp.json()
    list_rv = int(listed["metadata"]["resourceVersion"])
    assert list_rv >= ledger.max_acked_rv, (
        f"round {round_no}: the store's revision went back to {list_rv} after the restart; "
        f"revision {ledger.max_acked_rv} had been acknowledged")
    found = {item["metadata"]["name"]: item for item in listed["items"]}
    problems = []
    for name, state in sorted(ledger.names.items()):
        obj = found.get(name)
        if state.acked_value is None:
            state.exists = obj is not None
            continue
        if obj is None:
            problems.append(f"{name}: missing; acknowledged {state.acked_value!r} at {state.acked_rv}")
            continue
        value, rv = obj["data"]["value"], int(obj["metadata"]["resourceVersion"])
        if rv < state.acked_rv:
            problems.append(f"{name}: resourceVersion {rv} < acknowledged {state.acked_rv}")
        elif rv == state.acked_rv and value != state.acked_value:
            problems.append(f"{name}: {value!r} at the acknowledged resourceVersion {rv}, "
                            f"expected {state.acked_value!r}")
        elif rv > state.acked_rv and value not in state.attempted_since_ack:
            problems.append(f"{name}: {value!r} at {rv} is neither the acknowledged {state.acked_value!r} "
                            f"nor a later attempt {state.attempted_since_ack}")
        if value != state.acked_value and value in state.attempted_since_ack:
            # An unacknowledged write that landed is now the value to keep.
            state.acked_value, state.acked_rv = value, rv
        state.attempted_since_ack.clear()
        state.exists = True
    assert not problems, f"round {round_no}: acknowledged writes lost after kill -9:\n  " + "\n  ".join(problems)


def test_restart_with_the_first_service_ip_taken(server_factory: ServerFactory, tmp_path: Path) -> None:
    """The `kubernetes` Service's address held by another Service (or leaked by a crash
    between allocating it and storing the Service) must not stop the server from
    starting: kube-apiserver logs the failed reconcile and serves on."""
    data_dir = tmp_path / "server"
    server = server_factory.start(data_dir=data_dir)
    assert server.delete("/api/v1/namespaces/default/services/kubernetes").status == 200
    squatter = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "squatter"},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}
    resp = server.post("/api/v1/namespaces/default/services", squatter)
    assert resp.status == 201, str(resp)
    assert server.stop() == 0
    server = server_factory.start(data_dir=data_dir)
    assert server.get("/api/v1/namespaces/default/services/squatter").status == 200


def test_acknowledged_writes_survive_kill_9(server_factory: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    ledger = Ledger({f"c{c}-{i}": NameState() for c in range(CLIENTS) for i in range(NAMES_PER_CLIENT)})

    server = server_factory.start(data_dir=data_dir)
    resp = server.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": NAMESPACE}})
    assert resp.status == 201, str(resp)

    started = time.monotonic()
    for round_no in range(1, ROUNDS + 1):
        kill_after = rng.randint(MIN_ACKS, MAX_ACKS)
        asyncio.run(write_until_killed(server, ledger, kill_after, round_no))
        assert server.proc.returncode == -9, f"round {round_no} (seed {seed}): server exited {server.proc.returncode}"
        server = server_factory.start(data_dir=data_dir)  # waits for /readyz with a deadline
        asyncio.run(verify(server, ledger, round_no))
    elapsed = time.monotonic() - started
    print(f"\n{ROUNDS} kill -9 rounds, {ledger.acks} acknowledged writes, seed {seed}, {elapsed:.1f}s")
    assert ledger.acks >= ROUNDS * MIN_ACKS
