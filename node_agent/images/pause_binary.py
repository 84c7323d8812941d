"""Compile ``pause.c`` into a static binary, once per source version.

The binary is cached under ``$SKIFF_CACHE_DIR`` (default ``$XDG_CACHE_HOME/skiff`` or
``~/.cache/skiff``) in a file named after the hash of the source and the compiler flags
(see `skiff.static_binary`), so a changed source is rebuilt and an unchanged one never is.
"""

from __future__ import annotations

import os
from pathlib import Path

from node_agent.images.errors import ImageBuildError
from skiff.static_binary import ensure_static_binary

PAUSE_SOURCE = Path(__file__).with_name("pause.c")


def cache_dir() -> Path:
    explicit = os.environ.get("SKIFF_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "skiff"


def ensure_pause_binary(cache: Path | None = None, source: Path = PAUSE_SOURCE) -> Path:
    """The path of the compiled pause binary, compiling it first if the cache lacks it."""
    return ensure_static_binary(source, cache or cache_dir(), "pause", "pause binary", ImageBuildError)
