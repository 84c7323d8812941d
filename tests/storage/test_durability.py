"""No acknowledged write is lost when the store crashes (SIGKILL).

A child process writes from eight coroutines and prints each write once acknowledged;
at a random moment we crash the store: for SQLite the child itself (the store lives in
it), for etcd every member of a three-member cluster at once (then the child, which is
only a client). Then we reopen the store and look for every printed write in the
revision log (same key, revision and value), and check that the current state agrees
with the log. Power loss is not simulated: that rests on fsync (SQLite's WAL with
synchronous=FULL; etcd's WAL, fsynced before a write is acknowledged).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from control_plane.storage import SQLiteStore, WatchEvent
from control_plane.storage.etcd import EtcdStore

from .conftest import requires_etcd
from .etcd_cluster import EtcdCluster
from .streams import take

CHILD = Path(__file__).with_name("durability_writer.py")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ack:
    type: str
    key: str
    revision: int
    value: bytes | None


def run_and_crash(args: list[str], rng: random.Random, crash: Callable[[], None] | None = None,
                  min_wait: float = 0.0) -> list[Ack]:
    """Run the writer child, at a random moment call ``crash`` (if given) and SIGKILL the
    child; return what it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(child.stdout or ()))
        reader.start()
        time.sleep(min_wait + rng.uniform(0.0, 0.25))
        if crash is not None:
            crash()
        child.kill()
        child.wait(timeout=10)
        reader.join(timeout=10)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    acks = []
    for line in lines:
        if not line.endswith("\n"):
            continue  # cut off by the kill: not acknowledged
        kind, key, revision, value = line.split()
        acks.append(Ack(kind, key, int(revision), None if kind == "DELETE" else value.encode()))
    return acks


async def read_log(store: SQLiteStore | EtcdStore, after: int) -> tuple[list[WatchEvent], dict[str, bytes]]:
    """The log after ``after`` and the current values, read back through the store."""
    async with store:
        log = await take(store.watch("", after), store.current_revision - after, timeout=60)
        current = {kv.key: kv.value for kv in (await store.list("")).items}
    return log, current


def check_round(round_: int, acks: list[Ack], log: list[WatchEvent], current: dict[str, bytes], after: int) -> None:
    by_revision = {event.revision: event for event in log}
    assert sorted(by_revision) == list(range(after + 1, after + 1 + len(log)))
    for ack in acks:
        event = by_revision.get(ack.revision)
        assert event is not None, f"round {round_}: acknowledged {ack} is missing"
        assert (event.type, event.key, event.value) == (ack.type, ack.key, ack.value), f"round {round_}"
    # The current state agrees with the log.
    last: dict[str, WatchEvent] = {event.key: event for event in log}
    for key, event in last.items():
        assert current.get(key) == event.value, f"round {round_}: {key}"


def test_acknowledged_writes_survive_sigkill_sqlite(tmp_path: Path) -> None:
    rounds = 20
    db = tmp_path / "store.db"
    rng = random.Random()
    revision = 0
    acked = 0
    started = time.monotonic()
    for round_ in range(rounds):
        acks = run_and_crash(["sqlite", str(db), str(round_)], rng)  # the store dies with the child
        log, current = asyncio.run(read_log(SQLiteStore(str(db), compaction_window=10**9), revision))
        check_round(round_, acks, log, current, revision)
        revision += len(log)
        acked += len(acks)
    assert acked > rounds * 10, "the child barely wrote anything; the test proves little"
    assert time.monotonic() - started < 60


@requires_etcd
@pytest.mark.timeout(300)
def test_acknowledged_writes_survive_sigkill_etcd(tmp_path: Path) -> None:
    """Every member of three is killed at once, mid-write, and started again."""
    rounds = 6
    cluster = EtcdCluster(tmp_path / "etcd", size=3)
    try:
        cluster.start()
        rng = random.Random()
        acked = 0

        def kill_every_member() -> None:
            for index in range(cluster.size):
                cluster.kill(index)

        for round_ in range(rounds):
            revision = asyncio.run(_current_revision(cluster))
            acks = run_and_crash(["etcd", cluster.endpoints_flag, "/durability", str(round_)], rng,
                                 kill_every_member, min_wait=0.1)
            for index in range(cluster.size):
                cluster.restart(index)
            cluster.wait_ready()
            store = EtcdStore(cluster.endpoints, prefix="/durability", compaction_window=10**9)
            log, current = asyncio.run(read_log(store, revision))
            check_round(round_, acks, log, current, revision)
            acked += len(acks)
        assert acked > rounds * 10, "the child barely wrote anything; the test proves little"
    finally:
        cluster.stop()


async def _current_revision(cluster: EtcdCluster) -> int:
    async with EtcdStore(cluster.endpoints, prefix="/durability") as store:
        return store.current_revision
