"""Fixtures for CNI tests: a node namespace per test, container namespaces on demand.

Everything is deleted in teardown, even when the test fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cni_testlib import Namespaces, Node, suffix


def _require_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    for tool in ("ip", "nsenter", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    _require_root_and_tools()
    created = Namespaces()
    try:
        yield created
    finally:
        created.cleanup()


@pytest.fixture
def node(namespaces: Namespaces, tmp_path: Path) -> Iterator[Node]:
    data_dir = tmp_path / "ipam"
    try:
        yield Node(ns=namespaces.new("skcn"), bridge=f"skb{suffix()}", data_dir=data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
