"""Compile ``shim.c`` (skiff-bridge's thin front end, see there) into a static binary, once per source version.

The binary is cached in a directory the caller names, in a file named after the hash
of the source and the compiler flags: a changed source is rebuilt, an unchanged one
never is. A static binary starts in well under a millisecond and runs in any mount
namespace a runtime might call it from.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SHIM_SOURCE = Path(__file__).with_name("shim.c")
CFLAGS = ("-static", "-Os", "-s", "-Wall")
COMPILE_TIMEOUT = 120.0


class ShimBuildError(RuntimeError):
    """The shim cannot be built here (no gcc, no static libc, or a compile error)."""


def source_key(source: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(source)
    digest.update(" ".join(CFLAGS).encode())
    return digest.hexdigest()[:16]


def ensure_shim_binary(cache: Path, source: Path = SHIM_SOURCE) -> Path:
    """The path of the compiled shim in cache, compiling it first if the cache lacks it."""
    try:
        code = source.read_bytes()
    except OSError as exc:
        raise ShimBuildError(f"cannot read the shim source {source}: {exc}") from exc
    target = cache / f"skiff-bridge-shim-{source_key(code)}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ShimBuildError("gcc is needed to build the skiff-bridge shim: apt-get install gcc libc6-dev")
    cache.mkdir(parents=True, exist_ok=True)
    # Compile next to the target and rename: a concurrent build never sees half a binary.
    fd, tmp_name = tempfile.mkstemp(prefix=".skiff-bridge-shim-", dir=cache)
    os.close(fd)
    try:
        proc = subprocess.run([gcc, *CFLAGS, "-o", tmp_name, str(source)], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise ShimBuildError(f"compiling {source} failed (gcc exit {proc.returncode}); a static build needs "
                                 f"libc6-dev:\n{proc.stderr.strip()}")
        os.chmod(tmp_name, 0o755)
        os.replace(tmp_name, target)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ShimBuildError(f"compiling {source}: {exc}") from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
