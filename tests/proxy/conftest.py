"""Fixtures of the proxy's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proxy.netns import NetnsFactory, netns_factory


@pytest.fixture
def netns() -> Iterator[NetnsFactory]:
    """Make namespaces with ``netns.make()``; all of them (and processes started in them) go afterwards."""
    with netns_factory() as factory:
        yield factory
