"""No acknowledged write is lost when the store's process is killed with SIGKILL.

A child process writes from eight coroutines and prints each write once acknowledged;
we kill it at a random moment, reopen the store and look for every printed write in
the revision log (same key, revision and value) and check the current state agrees
with the log. Power loss is not simulated: that rests on WAL + synchronous=FULL.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from control_plane.storage import SQLiteStore, WatchEvent

from .streams import take

ROUNDS = 20
CHILD = Path(__file__).with_name("durability_writer.py")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ack:
    type: str
    key: str
    revision: int
    value: bytes | None


def run_and_kill(db: Path, round_: int, rng: random.Random) -> list[Ack]:
    """Run the writer child, SIGKILL it at a random moment, return what it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(round_)],
        stdout=subprocess.PIPE,
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
        time.sleep(rng.uniform(0.0, 0.25))
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


async def read_log(db: Path, after: int) -> tuple[list[WatchEvent], dict[str, bytes]]:
    """The log after ``after`` and the current values, read back through the store."""
    async with SQLiteStore(str(db), compaction_window=10**9) as store:
        log = await take(store.watch("", after), store.current_revision - after, timeout=30)
        current = {kv.key: kv.value for kv in (await store.list("")).items}
    return log, current


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    rng = random.Random()
    revision = 0
    acked = 0
    started = time.monotonic()
    for round_ in range(ROUNDS):
        acks = run_and_kill(db, round_, rng)
        log, current = asyncio.run(read_log(db, revision))
        by_revision = {event.revision: event for event in log}
        assert sorted(by_revision) == list(range(revision + 1, revision + 1 + len(log)))
        for ack in acks:
            event = by_revision.get(ack.revision)
            assert event is not None, f"round {round_}: acknowledged {ack} is missing"
            assert (event.type, event.key, event.value) == (ack.type, ack.key, ack.value), f"round {round_}"
        # The current-state table agrees with the log.
        last: dict[str, WatchEvent] = {event.key: event for event in log}
        for key, event in last.items():
            assert current.get(key) == event.value, f"round {round_}: {key}"
        revision += len(log)
        acked += len(acks)
    assert acked > ROUNDS * 10, "the child barely wrote anything; the test proves little"
    assert time.monotonic() - started < 60
