"""Fixtures for client and CLI tests: a fake API server on 127.0.0.1 and a fake sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer
from fakeapi import FakeApi, FakeSleep

from skiff.client.kubeconfig import ClientConfig


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    server = TestServer(api.app(), host="127.0.0.1")
    await server.start_server()
    api.url = f"http://127.0.0.1:{server.port}"
    try:
        yield api
    finally:
        api.close_watches()
        await server.close()


@pytest.fixture
def config(fake_api: FakeApi) -> ClientConfig:
    return ClientConfig(server=fake_api.url, token="secret-token")


@pytest.fixture
def fake_sleep() -> FakeSleep:
    return FakeSleep()
