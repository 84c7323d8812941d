"""Unmount whatever is mounted under the lab's state dir (overlay rootfs, netns bind mounts,
the data root dockerd binds onto itself), deepest first, lazily (``umount -l``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
from pathlib import Path

MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _unescape(field: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [_unescape(line.split()[4]) for line in f if line.strip()]


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    base = os.path.realpath(root)
    found = {m for m in mount_points() if m == base or m.startswith(base.rstrip("/") + "/")}
    return sorted(found, key=lambda m: (m.count("/"), m), reverse=True)


def umount_lazy(path: str) -> None:
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
            raise OSError(err, f"umount -l {path}: {os.strerror(err)}")


def unmount_all_under(root: Path, attempts: int = 5) -> list[str]:
    """Unmount everything under ``root`` (stacked mounts need several passes); returns what remains."""
    for _ in range(attempts):
        remaining = mounts_under(root)
        if not remaining:
            return []
        for path in remaining:
            umount_lazy(path)
    return mounts_under(root)
