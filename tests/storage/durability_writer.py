"""Child process of test_durability: eight coroutines write to a store and print each
write only after the store acknowledged it, until the parent kills it (-9) or the
store fails under it (the parent killed every etcd member).

Usage: python durability_writer.py sqlite DB_PATH ROUND
       python durability_writer.py etcd ENDPOINTS PREFIX ROUND
Prints "ready", then lines "PUT|DELETE KEY REVISION VALUE".
"""

from __future__ import annotations

import asyncio
import sys

from control_plane.storage import SQLiteStore
from control_plane.storage.etcd import EtcdStore

Store = SQLiteStore | EtcdStore


async def write_forever(store: Store, round_: int, writer: int) -> None:
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


async def main(argv: list[str]) -> None:
    store: Store
    if argv[0] == "sqlite":
        store, round_ = SQLiteStore(argv[1], compaction_window=10**9), int(argv[2])
    else:
        store, round_ = EtcdStore(argv[1], prefix=argv[2], compaction_window=10**9), int(argv[3])
    async with store:
        print("ready", flush=True)
        await asyncio.gather(*(write_forever(store, round_, n) for n in range(8)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
