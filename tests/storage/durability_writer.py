"""Child process of test_durability: eight coroutines write to a SQLiteStore and print
each write only after the store acknowledged it, until the parent kills it (-9).

Usage: python durability_writer.py DB_PATH ROUND
Prints "ready", then lines "PUT|DELETE KEY REVISION VALUE".
"""

from __future__ import annotations

import asyncio
import sys

from control_plane.storage import SQLiteStore


async def write_forever(store: SQLiteStore, round_: int, writer: int) -> None:
    mod_revisions: dict[str, int] = {}
    i = 0
    while True:
        key = f"/r{round_}/w{writer}/k{i % 5}"
        value = f"{round_}.{writer}.{i}"
        expected = mod_revisions.pop(key, None)
        if expected is None:
            revision = await store.create(key, value.encode())
        elif i % 7 == 0:
            revision, _ = await store.delete(key, expected_revision=expected)
            print("DELETE", key, revision, "-", flush=True)
            i += 1
            continue
        else:
            revision = await store.update(key, value.encode(), expected_revision=expected)
        mod_revisions[key] = revision
        print("PUT", key, revision, value, flush=True)
        i += 1


async def main(path: str, round_: int) -> None:
    async with SQLiteStore(path, compaction_window=10**9) as store:
        print("ready", flush=True)
        await asyncio.gather(*(write_forever(store, round_, n) for n in range(8)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
