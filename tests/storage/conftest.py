"""Fixtures running the same contract tests against every store backend: in-memory,
SQLite, and a real three-member etcd cluster.

One etcd cluster serves the whole session; each test's store lives under a key prefix
of its own. etcd's revisions are cluster-wide, so a store does not start at revision 0:
tests count revisions from ``store.current_revision`` at their start (``base``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.storage import MemoryStore, SQLiteStore
from control_plane.storage.etcd import EtcdStore
from control_plane.storage.etcd_member import etcd_binary

from .etcd_cluster import EtcdCluster

AnyStore = MemoryStore | SQLiteStore | EtcdStore
StoreFactory = Callable[..., Awaitable[AnyStore]]

NO_ETCD = "etcd is not installed (Debian: apt-get install etcd-server; scripts/setup.sh does)"
requires_etcd = pytest.mark.skipif(etcd_binary() is None, reason=NO_ETCD)


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Three etcd members for the session's contract tests (stores use their own prefixes)."""
    if etcd_binary() is None:
        pytest.skip(NO_ETCD)
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["memory", "sqlite", "etcd"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Opens a started store of the backend under test; all are closed at teardown.
    Stores opened in one test share their data (the same file, the same etcd prefix)."""
    opened: list[AnyStore] = []
    etcd: EtcdCluster | None = request.getfixturevalue("etcd_cluster") if backend == "etcd" else None
    prefix = f"/t-{os.urandom(4).hex()}"

    async def make(**options: Any) -> AnyStore:
        store: AnyStore
        if backend == "memory":
            store = MemoryStore(**options)
        elif backend == "sqlite":
            store = SQLiteStore(str(tmp_path / "store.db"), **options)
        else:
            assert etcd is not None
            store = EtcdStore(etcd.endpoints, prefix=prefix, **options)
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> AnyStore:
    return await make_store()
