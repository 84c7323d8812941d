"""Root filesystems as tar archives, built in memory with ``tarfile``.

Archives are deterministic (sorted entries, fixed mtime, owner root) so the same inputs
give the same bytes, and the hash of the bytes can label the image built from them.
"""

from __future__ import annotations

import io
import struct
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from node_agent.images.errors import ImageBuildError

BUSYBOX = Path("/bin/busybox")
MTIME = 0  # the epoch: the archive must not depend on when it was built

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nnobody:x:65534:\n"
INDEX_HTML = ("<!doctype html>\n<html><head><title>skiff/app</title></head>\n"
              "<body><h1>Hello from skiff/app</h1></body></html>\n")


@dataclass
class RootFS:
    """Entries of a root filesystem, keyed by path without the leading slash."""

    entries: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)

    def _info(self, path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        name = str(PurePosixPath(path.lstrip("/")))
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def _parents(self, path: str) -> None:
        for parent in reversed(PurePosixPath(path.lstrip("/")).parents):
            if str(parent) != "." and str(parent) not in self.entries:
                self.entries[str(parent)] = self._info(str(parent), tarfile.DIRTYPE, 0o755)

    def dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        info = self._info(path, tarfile.DIRTYPE, mode)
        self.entries[info.name] = info

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._parents(path)
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.entries[info.name] = info
        self.contents[info.name] = data

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.entries[info.name] = info

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as archive:
            for name in sorted(self.entries):
                info = self.entries[name]
                data = self.contents.get(name)
                archive.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def pause_rootfs(pause_binary: Path) -> bytes:
    """A root filesystem holding only ``/pause``."""
    fs = RootFS()
    fs.file("/pause", pause_binary.read_bytes(), 0o755)
    return fs.tar()


def _is_static_elf(data: bytes) -> bool:
    """True if the ELF has no program interpreter (PT_INTERP), i.e. is statically linked."""
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit ELF only
        return False
    endian = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(endian + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from(endian + "I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def busybox_applets(busybox: Path) -> list[str]:
    """The applets' full paths (``usr/bin/wget``, ``bin/sh`` ...) as ``busybox --list-full`` gives them."""
    proc = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ImageBuildError(f"{busybox} --list-full failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return sorted({line.strip().lstrip("/") for line in proc.stdout.splitlines() if line.strip()})


def app_rootfs(busybox: Path = BUSYBOX) -> bytes:
    """A small userland: Debian's static busybox with a symlink per applet, root and nobody, /tmp, /var/www."""
    try:
        binary = busybox.read_bytes()
    except FileNotFoundError:
        raise ImageBuildError(f"{busybox} is missing: apt-get install busybox-static") from None
    if not _is_static_elf(binary):
        raise ImageBuildError(f"{busybox} is not a static binary (the dynamic busybox package?): "
                              "apt-get install busybox-static")
    fs = RootFS()
    for path in ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/etc", "/proc", "/sys", "/dev", "/var"):
        fs.dir(path)
    fs.dir("/root", 0o700)
    fs.dir("/tmp", 0o1777)
    fs.dir("/var/tmp", 0o1777)
    fs.file("/bin/busybox", binary, 0o755)
    for applet in busybox_applets(busybox):
        if applet not in ("bin/busybox", "linuxrc"):
            fs.symlink(applet, "/bin/busybox")
    fs.file("/etc/passwd", PASSWD.encode())
    fs.file("/etc/group", GROUP.encode())
    fs.file("/var/www/index.html", INDEX_HTML.encode())
    return fs.tar()
