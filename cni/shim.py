"""Compile ``shim.c`` (skiff-bridge's thin front end, see there) into a static binary, once per source version.

The binary is cached in a directory the caller names (see `skiff.static_binary`). A
static binary starts in well under a millisecond and runs in any mount namespace a
runtime might call it from.
"""

from __future__ import annotations

from pathlib import Path

from skiff.static_binary import ensure_static_binary

SHIM_SOURCE = Path(__file__).with_name("shim.c")


class ShimBuildError(RuntimeError):
    """The shim cannot be built here (no gcc, no static libc, or a compile error)."""


def ensure_shim_binary(cache: Path, source: Path = SHIM_SOURCE) -> Path:
    """The path of the compiled shim in cache, compiling it first if the cache lacks it."""
    return ensure_static_binary(source, cache, "skiff-bridge-shim", "skiff-bridge shim", ShimBuildError)
