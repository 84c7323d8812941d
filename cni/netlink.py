"""The one place that touches pyroute2 and setns(2).

A plugin process needs two rtnetlink sockets: one in the namespace it was started in
(the node: bridge, host veth ends) and one in the container's. A netlink socket stays
in the namespace it was created in, so the container socket is made by switching
this thread into the container's netns for the duration of one ``socket()`` call,
which is far cheaper than pyroute2's own fork-per-namespace helper.

pyroute2 is imported on first use only: VERSION, and every error path that fails
before touching a link, never pay for it.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000

_libc: Any = None
_minimal_import = False


class NetnsGone(Exception):
    """The netns path does not exist, or is not (any longer) a network namespace."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"network namespace {path}: {reason}")
        self.path = path


def use_minimal_import() -> None:
    """Import only pyroute2's rtnetlink modules, not its package ``__init__``.

    ``import pyroute2`` also loads NDB, IPDB, conntrack, nftables and more: about
    0.15 s of CPU, paid by every pod start. When nothing in the process has imported
    pyroute2 yet, a bare package object lets ``pyroute2.iproute.linux`` load on its
    own. Only the plugin's entry point asks for this (it takes effect on first use):
    in a shared process other code may expect the full package.
    """
    global _minimal_import
    _minimal_import = True


def _install_bare_package() -> None:
    import importlib.util
    import types

    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("pyroute2")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["pyroute2"] = package


def _iproute_class() -> type[IPRoute]:
    if _minimal_import:
        _install_bare_package()
    from pyroute2.iproute.linux import IPRoute

    return IPRoute


def preload() -> None:
    """Import pyroute2's rtnetlink code now, so that the first request of a resident process does not pay."""
    _iproute_class()
    import pyroute2.netlink.exceptions  # noqa: F401


def same_netns(fd: int) -> bool:
    """Whether the netns fd refers to is the one the calling thread is in."""
    mine = os.stat("/proc/thread-self/ns/net")
    theirs = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def netlink_errno(exc: BaseException) -> int | None:
    """The errno of a pyroute2 NetlinkError (or OSError), None for anything else."""
    from pyroute2.netlink.exceptions import NetlinkError

    if isinstance(exc, NetlinkError):
        return int(exc.code)
    if isinstance(exc, OSError):
        return exc.errno
    return None


def is_netlink_error(exc: BaseException) -> bool:
    if "pyroute2.netlink.exceptions" not in sys.modules:
        return False
    from pyroute2.netlink.exceptions import NetlinkError

    return isinstance(exc, NetlinkError)


def _setns(fd: int) -> None:
    import ctypes

    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_netns(path: str) -> int:
    """An O_RDONLY fd on the netns at path; NetnsGone if there is nothing there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsGone(path, "no such file") from None
    except OSError as exc:
        raise NetnsGone(path, exc.strerror or str(exc)) from exc
    return fd


@contextmanager
def entered(netns_fd: int, path: str = "") -> Iterator[None]:
    """Run the block with this thread inside the netns, then come back, whatever happens."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(netns_fd)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # the file exists but is no netns (unmounted, or a plain file)
                raise NetnsGone(path, "not a network namespace") from exc
            raise
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


@dataclass
class Session:
    """rtnetlink sockets for the plugin's own namespace and, if given, the container's."""

    host: IPRoute
    container: IPRoute | None
    netns_fd: int | None
    netns_path: str

    def close(self) -> None:
        for ipr in (self.container, self.host):
            if ipr is not None:
                with suppress(Exception):
                    ipr.close()
        if self.netns_fd is not None:
            os.close(self.netns_fd)
            self.netns_fd = None


@contextmanager
def session(netns_path: str = "") -> Iterator[Session]:
    """Open the sockets; NetnsGone if netns_path names no namespace."""
    iproute = _iproute_class()
    fd = open_netns(netns_path) if netns_path else None
    container = None
    try:
        if fd is not None:
            with entered(fd, netns_path):
                container = iproute()
        host = iproute()
    except BaseException:
        if container is not None:
            container.close()
        if fd is not None:
            os.close(fd)
        raise
    s = Session(host=host, container=container, netns_fd=fd, netns_path=netns_path)
    try:
        yield s
    finally:
        s.close()


def write_sysctl(path: str, value: str) -> bool:
    """Best effort: True if written. Paths under /proc/sys/net follow the calling thread's netns."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        return False
    return True


def read_sysctl(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""
