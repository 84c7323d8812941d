"""Compile ``pause.c`` into a static binary, once per source version.

The binary is cached under ``$SKIFF_CACHE_DIR`` (default ``$XDG_CACHE_HOME/skiff`` or
``~/.cache/skiff``) in a file named after the hash of the source and the compiler flags,
so a changed source is rebuilt and an unchanged one never is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from node_agent.images.errors import ImageBuildError

PAUSE_SOURCE = Path(__file__).with_name("pause.c")
CFLAGS = ("-static", "-Os", "-s", "-Wall")
COMPILE_TIMEOUT = 120.0


def cache_dir() -> Path:
    explicit = os.environ.get("SKIFF_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "skiff"


def source_key(source: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(source)
    digest.update(" ".join(CFLAGS).encode())
    return digest.hexdigest()[:16]


def ensure_pause_binary(cache: Path | None = None, source: Path = PAUSE_SOURCE) -> Path:
    """The path of the compiled pause binary, compiling it first if the cache lacks it."""
    try:
        code = source.read_bytes()
    except OSError as exc:
        raise ImageBuildError(f"cannot read the pause source {source}: {exc}") from exc
    cache = cache or cache_dir()
    target = cache / f"pause-{source_key(code)}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ImageBuildError("gcc is needed to build the pause binary: apt-get install gcc libc6-dev")
    cache.mkdir(parents=True, exist_ok=True)
    # Compile next to the target and rename: a concurrent build never sees half a binary.
    fd, tmp_name = tempfile.mkstemp(prefix=".pause-", dir=cache)
    os.close(fd)
    try:
        proc = subprocess.run([gcc, *CFLAGS, "-o", tmp_name, str(source)], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise ImageBuildError(f"compiling {source} failed (gcc exit {proc.returncode}); a static build needs "
                                  f"libc6-dev (apt-get install libc6-dev):\n{proc.stderr.strip()}")
        os.chmod(tmp_name, 0o755)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
