"""Fixtures running the same contract tests against every store backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from control_plane.storage import MemoryStore, SQLiteStore

AnyStore = MemoryStore | SQLiteStore
StoreFactory = Callable[..., Awaitable[AnyStore]]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(backend: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens a started store of the backend under test; all are closed at teardown."""
    opened: list[AnyStore] = []

    async def make(**options: Any) -> AnyStore:
        store: AnyStore
        if backend == "memory":
            store = MemoryStore(**options)
        else:
            store = SQLiteStore(str(tmp_path / "store.db"), **options)
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> AnyStore:
    return await make_store()
