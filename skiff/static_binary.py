"""Compile a small C program into a static binary, once per source version.

The binary is cached in a directory the caller names, in a file named after the hash
of the source and the compiler flags: a changed source is rebuilt, an unchanged one
never is. A static binary starts in well under a millisecond and runs in any mount
namespace or image it is copied into.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

CFLAGS = ("-static", "-Os", "-s", "-Wall")
COMPILE_TIMEOUT = 120.0


def source_key(source: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(source)
    digest.update(" ".join(CFLAGS).encode())
    return digest.hexdigest()[:16]


def ensure_static_binary(source: Path, cache: Path, name: str, what: str,
                         error: Callable[[str], Exception]) -> Path:
    """The path of ``<cache>/<name>-<source key>``, compiling ``source`` first if the cache lacks it.

    ``what`` names the binary in messages; every failure is raised as ``error(message)``.
    """
    try:
        code = source.read_bytes()
    except OSError as exc:
        raise error(f"cannot read the {what} source {source}: {exc}") from exc
    target = cache / f"{name}-{source_key(code)}"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise error(f"gcc is needed to build the {what}: apt-get install gcc libc6-dev")
    cache.mkdir(parents=True, exist_ok=True)
    # Compile next to the target and rename: a concurrent build never sees half a binary.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-", dir=cache)
    os.close(fd)
    try:
        proc = subprocess.run([gcc, *CFLAGS, "-o", tmp_name, str(source)], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT, check=False)
        if proc.returncode != 0:
            raise error(f"compiling {source} failed (gcc exit {proc.returncode}); a static build needs "
                        f"libc6-dev (apt-get install libc6-dev):\n{proc.stderr.strip()}")
        os.chmod(tmp_name, 0o755)
        os.replace(tmp_name, target)
    except (OSError, subprocess.SubprocessError) as exc:
        raise error(f"compiling {source}: {exc}") from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
