"""host-local-style address allocation: one file per address, under a directory lock.

The layout is host-local's own, so either plugin (or an operator) can read it:
``<dataDir>/<network>/<ip>`` holds ``<containerID>\\r\\n<ifname>``,
``last_reserved_ip.0`` remembers where the round-robin stopped, and ``lock`` is
flock()ed around every read-modify-write. A reservation is created with O_EXCL, so
even a writer that ignored the lock could never take an address twice.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cni.config import IPRange
from cni.errors import DUPLICATE_ALLOCATION, IO_FAILURE, RANGE_EXHAUSTED, CniPluginError

LOCK_FILE = "lock"
LAST_RESERVED_FILE = "last_reserved_ip.0"  # host-local names it after the range set's index
LINE_BREAK = "\r\n"


@dataclass(frozen=True)
class Allocation:
    address: ipaddress.IPv4Interface  # the address with the subnet's prefix, e.g. 10.244.1.5/24
    gateway: ipaddress.IPv4Address
    range: IPRange


class HostLocalStore:
    """Reservations of one network in one data directory."""

    def __init__(self, data_dir: str | os.PathLike[str], network: str) -> None:
        self.dir = Path(data_dir) / network

    @contextmanager
    def locked(self) -> Iterator[None]:
        try:
            self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise CniPluginError(IO_FAILURE, f"cannot open IPAM lock {self.dir / LOCK_FILE}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
            yield
        finally:
            os.close(fd)

    def allocate(self, container_id: str, ifname: str, ranges: Sequence[IPRange]) -> Allocation:
        """Reserve the next free address after the last one handed out, wrapping around."""
        with self.locked():
            owned = self._owned_by(container_id, ifname)
            if owned:
                raise CniPluginError(
                    DUPLICATE_ALLOCATION,
                    f"{', '.join(map(str, owned))} already allocated to container {container_id} ifname {ifname} "
                    f"in {self.dir}; a second ADD needs a DEL first",
                )
            for ip, ip_range in self._candidates(ranges):
                if self._reserve(ip, container_id, ifname):
                    try:
                        self._write_last_reserved(ip)
                    except CniPluginError:
                        self._unlink(self.dir / str(ip))
                        raise
                    return Allocation(
                        address=ipaddress.IPv4Interface(f"{ip}/{ip_range.subnet.prefixlen}"),
                        gateway=ip_range.gateway,
                        range=ip_range,
                    )
        raise CniPluginError(
            RANGE_EXHAUSTED,
            f"no free address in {', '.join(map(str, ranges))} for container {container_id} "
            f"(all {sum(r.size() for r in ranges)} reserved in {self.dir})",
        )

    def release(self, container_id: str, ifname: str) -> list[ipaddress.IPv4Address]:
        """Free every address this (container, ifname) holds; nothing held is not an error."""
        with self.locked():
            released = []
            for ip, path in self._reservations():
                if self._matches(path, container_id, ifname):
                    self._unlink(path)
                    released.append(ip)
            return released

    def get(self, container_id: str, ifname: str) -> list[ipaddress.IPv4Address]:
        with self.locked():
            return self._owned_by(container_id, ifname)

    def owner(self, ip: ipaddress.IPv4Address) -> tuple[str, str] | None:
        """The (containerID, ifname) holding this address, if it is reserved."""
        try:
            content = (self.dir / str(ip)).read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CniPluginError(IO_FAILURE, f"cannot read reservation {self.dir / str(ip)}: {exc}") from exc
        container_id, _, ifname = content.partition(LINE_BREAK)
        return container_id.strip(), ifname.strip()

    def gc(self, valid: Iterable[tuple[str, str]]) -> list[ipaddress.IPv4Address]:
        """Free every reservation not held by one of the valid (containerID, ifname) attachments."""
        keep = set(valid)
        keep_ids = {container_id for container_id, _ in keep}
        with self.locked():
            released = []
            for ip, path in self._reservations():
                try:
                    content = path.read_bytes().decode(errors="replace")
                except FileNotFoundError:
                    continue
                container_id, sep, ifname = content.partition(LINE_BREAK)
                # Files from old host-local versions hold only the container id.
                held = (container_id.strip(), ifname.strip()) in keep if sep else container_id.strip() in keep_ids
                if not held:
                    self._unlink(path)
                    released.append(ip)
            return released

    def free(self, ranges: Sequence[IPRange]) -> int:
        """How many addresses are still free in these ranges."""
        with self.locked():
            taken = {ip for ip, _ in self._reservations()}
            return sum(1 for ip, _ in self._candidates(ranges) if ip not in taken)

    # -- helpers; callers hold the lock ------------------------------------------------

    def _candidates(self, ranges: Sequence[IPRange]) -> Iterator[tuple[ipaddress.IPv4Address, IPRange]]:
        """Every allocatable address once, starting right after the last reserved one (round-robin)."""
        # Number the addresses of all ranges 0..total-1 in order, then walk that circle.
        offsets, total = [], 0
        for r in ranges:
            offsets.append(total)
            total += int(r.range_end) - int(r.range_start) + 1
        start = 0
        last = self._read_last_reserved()
        for r, offset in zip(ranges, offsets, strict=True):
            if last is not None and last in r:
                start = (offset + int(last) - int(r.range_start) + 1) % total
                break
        index = 0
        for step in range(total):
            position = (start + step) % total
            while index + 1 < len(ranges) and position >= offsets[index + 1]:
                index += 1
            while position < offsets[index]:
                index -= 1
            r = ranges[index]
            ip = r.range_start + (position - offsets[index])
            if ip != r.gateway:
                yield ip, r

    def _reserve(self, ip: ipaddress.IPv4Address, container_id: str, ifname: str) -> bool:
        path = self.dir / str(ip)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise CniPluginError(IO_FAILURE, f"cannot reserve {ip} at {path}: {exc}") from exc
        try:
            os.write(fd, f"{container_id.strip()}{LINE_BREAK}{ifname}".encode())
        except OSError as exc:
            os.close(fd)
            self._unlink(path)
            raise CniPluginError(IO_FAILURE, f"cannot write reservation {path}: {exc}") from exc
        os.close(fd)
        return True

    def _reservations(self) -> Iterator[tuple[ipaddress.IPv4Address, Path]]:
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                ip = ipaddress.IPv4Address(entry.name)
            except ValueError:
                continue  # lock, last_reserved_ip.*, anything else
            yield ip, Path(entry.path)

    def _owned_by(self, container_id: str, ifname: str) -> list[ipaddress.IPv4Address]:
        return sorted(ip for ip, path in self._reservations() if self._matches(path, container_id, ifname))

    @staticmethod
    def _matches(path: Path, container_id: str, ifname: str) -> bool:
        try:
            content = path.read_bytes().decode(errors="replace").strip()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise CniPluginError(IO_FAILURE, f"cannot read reservation {path}: {exc}") from exc
        # Files from old host-local versions hold only the container id.
        return content in (f"{container_id.strip()}{LINE_BREAK}{ifname}", container_id.strip())

    def _read_last_reserved(self) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address((self.dir / LAST_RESERVED_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _write_last_reserved(self, ip: ipaddress.IPv4Address) -> None:
        path = self.dir / LAST_RESERVED_FILE
        try:
            path.write_text(str(ip))
        except OSError as exc:
            raise CniPluginError(IO_FAILURE, f"cannot write {path}: {exc}") from exc

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise CniPluginError(IO_FAILURE, f"cannot remove reservation {path}: {exc}") from exc
