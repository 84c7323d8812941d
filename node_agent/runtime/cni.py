"""How the agent calls CNI plugins, the way the CNI spec (1.0.0, section 3) tells runtimes to.

A network is the first ``*.conflist`` of the config dir. Attaching a container runs
each plugin of the list in order, as an executable found on the bin dirs, with the
CNI_* environment and the derived per-plugin config on stdin, chaining each result
into the next plugin's ``prevResult``. The final result is cached per attachment
(``<cache_dir>/results/<network>-<containerID>-<ifname>``, libcni's layout), because
DEL and CHECK must be given it as ``prevResult``; DEL runs the list in reverse.

`CniNetwork.add` is all-or-nothing: when a plugin fails, the whole list is DELeted
before the error is raised, so a caller never has to clean up after a failed ADD.
Operations on one attachment are serialised; different containers run in parallel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import ipaddress
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cni.shim import ShimBuildError

if TYPE_CHECKING:
    from cni.daemon import CniDaemon

log = logging.getLogger("skiff.agent.cni")

StrPath = str | os.PathLike[str]

DEFAULT_CONF_DIR = Path("/etc/cni/net.d")
DEFAULT_BIN_DIRS = (Path("/opt/cni/bin"),)
DEFAULT_CACHE_DIR = Path("/var/lib/cni")  # libcni's default; results/ lives under it
DEFAULT_TIMEOUT = 60.0  # seconds per plugin execution
SKIFF_PLUGIN_TYPE = "skiff-bridge"
SKIFF_FALLBACK_NAME = "skiff-bridge-py"  # the Python plugin; shim.c derives it as <skiff-bridge's path>-py
SKIFF_SHIM_NAME = "skiff-bridge-shim"
SHEBANG_MAX = 128  # what kernels before 5.1 read of a script's first line (BINPRM_BUF_SIZE; 256 since)
REFERENCE_PLUGIN_TYPE = "bridge"
CACHE_KIND = "cniCacheV1"

# The runtime's own failures have negative codes, so they never collide with a plugin's
# (the spec's 1-99, plugin-specific 100+, which CniError.code passes through unchanged).
NO_NETWORK_CONFIG = -1  # no usable *.conflist in the config dir
PLUGIN_NOT_FOUND = -2  # no executable named after the plugin type on the bin dirs
PLUGIN_FAILED = -3  # exited non-zero without an error result, or was killed
PLUGIN_TIMEOUT = -4  # did not finish within the timeout and was killed
INVALID_RESULT = -5  # stdout was not a result we can read, or it had no IP for the pod
NO_CACHED_RESULT = -6  # CHECK of an attachment that has no cached ADD result


class CniError(Exception):
    """A CNI operation failed: the plugin's error result (code > 0), or the runtime's own failure (code < 0)."""

    def __init__(self, code: int, msg: str, details: str = "", plugin: str = "", command: str = "") -> None:
        self.code = code
        self.msg = msg
        self.details = details
        self.plugin = plugin
        self.command = command
        where = f"{plugin} {command}: " if plugin else ""
        super().__init__(f"{where}{msg}" + (f": {details}" if details else "") + f" (code {code})")


# -- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CniInterface:
    name: str
    mac: str = ""
    sandbox: str = ""


@dataclass(frozen=True)
class CniIPConfig:
    address: str  # with prefix, "10.244.1.5/24"
    gateway: str = ""
    interface: int | None = None

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]


@dataclass(frozen=True)
class CniResult:
    """A plugin chain's final Success result."""

    cni_version: str
    interfaces: tuple[CniInterface, ...] = ()
    ips: tuple[CniIPConfig, ...] = ()
    routes: tuple[Mapping[str, Any], ...] = ()
    dns: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CniResult:
        try:
            interfaces = tuple(
                CniInterface(name=str(i["name"]), mac=str(i.get("mac") or ""), sandbox=str(i.get("sandbox") or ""))
                for i in raw.get("interfaces") or []
            )
            ips = tuple(
                CniIPConfig(
                    address=str(ipaddress.ip_interface(ip["address"])),
                    gateway=str(ip.get("gateway") or ""),
                    interface=int(ip["interface"]) if ip.get("interface") is not None else None,
                )
                for ip in raw.get("ips") or []
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CniError(INVALID_RESULT, "cannot read the plugin result", f"{exc!r} in {json.dumps(raw)[:500]}") \
                from exc
        return cls(
            cni_version=str(raw.get("cniVersion") or ""),
            interfaces=interfaces,
            ips=ips,
            routes=tuple(raw.get("routes") or ()),
            dns=dict(raw.get("dns") or {}),
            raw=dict(raw),
        )

    def _pod_ips(self) -> list[CniIPConfig]:
        """IPs on an interface inside the sandbox (or without an interface index), IPv4 first."""
        def in_sandbox(ip: CniIPConfig) -> bool:
            if ip.interface is None or not 0 <= ip.interface < len(self.interfaces):
                return True
            return bool(self.interfaces[ip.interface].sandbox)

        chosen = [ip for ip in self.ips if in_sandbox(ip)] or list(self.ips)
        return sorted(chosen, key=lambda ip: ipaddress.ip_interface(ip.address).version)

    @property
    def ip(self) -> str:
        """The pod IP (status.podIP): the first address of the container's interface, "" if none."""
        ips = self._pod_ips()
        return ips[0].ip if ips else ""

    @property
    def pod_ips(self) -> list[str]:
        """status.podIPs: one address per family, the primary first."""
        seen: set[int] = set()
        out = []
        for ip in self._pod_ips():
            version = ipaddress.ip_interface(ip.address).version
            if version not in seen:
                seen.add(version)
                out.append(ip.ip)
        return out

    @property
    def gateway(self) -> str:
        ips = self._pod_ips()
        return ips[0].gateway if ips else ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


@dataclass(frozen=True)
class CachedAttachment:
    """What the runtime remembers about one ADDed attachment."""

    container_id: str
    ifname: str
    network: str
    netns: str
    result: Mapping[str, Any]
    conflist: Mapping[str, Any] | None
    cni_args: Mapping[str, str]
    capability_args: Mapping[str, Any]


@dataclass
class _KeyedLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


_ATTACHMENT_LOCKS: dict[tuple[str, str, str, str], _KeyedLock] = {}


# -- the network -----------------------------------------------------------------------


@dataclass
class CniNetwork:
    """One network configuration list and how to execute it."""

    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    conflist: dict[str, Any]
    disable_check: bool = False
    bin_dirs: tuple[Path, ...] = DEFAULT_BIN_DIRS
    cache_dir: Path = DEFAULT_CACHE_DIR
    timeout: float = DEFAULT_TIMEOUT
    path: Path | None = None

    @classmethod
    def load(
        cls,
        conf_dir: StrPath = DEFAULT_CONF_DIR,
        bin_dirs: Sequence[StrPath] = DEFAULT_BIN_DIRS,
        cache_dir: StrPath = DEFAULT_CACHE_DIR,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> CniNetwork:
        """The first ``*.conflist`` in conf_dir, in lexical order (as libcni picks the default network)."""
        directory = Path(conf_dir)
        try:
            files = sorted(p for p in directory.glob("*.conflist") if p.is_file())
        except OSError as exc:
            raise CniError(NO_NETWORK_CONFIG, f"cannot read CNI config dir {directory}", str(exc)) from exc
        if not files:
            raise CniError(NO_NETWORK_CONFIG, f"no *.conflist in {directory}")
        try:
            conflist = json.loads(files[0].read_text())
        except (OSError, ValueError) as exc:
            raise CniError(NO_NETWORK_CONFIG, f"cannot load {files[0]}", str(exc)) from exc
        return cls.from_conflist(conflist, bin_dirs=bin_dirs, cache_dir=cache_dir, timeout=timeout, path=files[0])

    @classmethod
    def from_conflist(
        cls,
        conflist: Mapping[str, Any],
        bin_dirs: Sequence[StrPath] = DEFAULT_BIN_DIRS,
        cache_dir: StrPath = DEFAULT_CACHE_DIR,
        timeout: float = DEFAULT_TIMEOUT,
        path: Path | None = None,
    ) -> CniNetwork:
        source = str(path) if path else "conflist"
        if not isinstance(conflist, Mapping):
            raise CniError(NO_NETWORK_CONFIG, f"{source} is not a JSON object")
        name, version, plugins = conflist.get("name"), conflist.get("cniVersion"), conflist.get("plugins")
        if not isinstance(name, str) or not name:
            raise CniError(NO_NETWORK_CONFIG, f"{source} has no name")
        if not isinstance(version, str) or not version:
            raise CniError(NO_NETWORK_CONFIG, f"{source} has no cniVersion")
        if not isinstance(plugins, list) or not plugins:
            raise CniError(NO_NETWORK_CONFIG, f"{source} has no plugins")
        for i, plugin in enumerate(plugins):
            kind = plugin.get("type") if isinstance(plugin, dict) else None
            if not isinstance(kind, str) or not kind or "/" in kind:
                raise CniError(NO_NETWORK_CONFIG, f"{source}: plugins[{i}] needs a type naming a binary")
        return cls(
            name=name,
            cni_version=version,
            plugins=[dict(p) for p in plugins],
            conflist=dict(conflist),
            disable_check=bool(conflist.get("disableCheck", False)),
            bin_dirs=tuple(Path(d) for d in bin_dirs),
            cache_dir=Path(cache_dir),
            timeout=timeout,
            path=path,
        )

    # -- operations --------------------------------------------------------------------

    async def add(
        self,
        container_id: str,
        netns_path: str,
        ifname: str = "eth0",
        args: Mapping[str, str] | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> CniResult:
        """Attach the container; on any failure everything is DELeted again before CniError is raised."""
        async with self._attachment(container_id, ifname):
            prev: dict[str, Any] | None = None
            try:
                for plugin in self.plugins:
                    out = await self._exec(plugin, "ADD", container_id, netns_path, ifname, args, capability_args,
                                           prev)
                    if out is None:
                        raise CniError(INVALID_RESULT, "plugin printed no result", plugin=plugin["type"],
                                       command="ADD")
                    prev = out
                assert prev is not None
                result = CniResult.from_dict(prev)
                if not result.ip:
                    raise CniError(INVALID_RESULT, "the plugin chain assigned no IP address",
                                   json.dumps(prev)[:500], plugin=self.plugins[-1]["type"], command="ADD")
                self._write_cache(container_id, ifname, netns_path, prev, args, capability_args)
            except BaseException as exc:
                log.warning("CNI ADD of %s/%s to network %s failed (%s); deleting the partial attachment",
                            container_id, ifname, self.name, exc)
                await self._undo_add(container_id, netns_path, ifname, args, capability_args, prev)
                raise
            log.debug("CNI ADD %s/%s in network %s: %s", container_id, ifname, self.name, result.ip)
            return result

    async def delete(
        self,
        container_id: str,
        netns_path: str,
        ifname: str = "eth0",
        args: Mapping[str, str] | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        """Detach: every plugin in reverse order, with the cached ADD result; idempotent.

        A netns that no longer exists is passed as an empty CNI_NETNS, which tells plugins
        to release what they can (addresses) and not look for interfaces.
        """
        async with self._attachment(container_id, ifname):
            await self._delete_unlocked(container_id, netns_path, ifname, args, capability_args)

    async def check(
        self,
        container_id: str,
        netns_path: str,
        ifname: str = "eth0",
        args: Mapping[str, str] | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        """Ask every plugin whether the attachment is still as ADD left it; CniError if not."""
        if self.disable_check or _version(self.cni_version) < (0, 4, 0):
            return
        async with self._attachment(container_id, ifname):
            cached = self.cached(container_id, ifname)
            if cached is None:
                raise CniError(NO_CACHED_RESULT, f"no cached ADD result for {container_id}/{ifname} in network "
                               f"{self.name}", str(self._cache_path(container_id, ifname)), command="CHECK")
            for plugin in self.plugins:
                await self._exec(plugin, "CHECK", container_id, netns_path, ifname, args, capability_args,
                                 dict(cached.result))

    async def status(self) -> None:
        """CNI 1.1 STATUS of every plugin (CniError 50/51 when one cannot take ADDs); no-op before 1.1."""
        if _version(self.cni_version) < (1, 1, 0):
            return
        for plugin in self.plugins:
            await self._exec(plugin, "STATUS", "", "", "", None, None, None)

    async def gc(self, valid: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Delete every cached attachment not in valid (containerID, ifname) pairs; returns those deleted.

        For cniVersion 1.1+ the plugins then get a GC with the valid list, which also
        frees reservations the cache never knew about (a crash between ADD and caching).
        Must not race with add() of attachments missing from valid.
        """
        keep = set(valid)
        removed = []
        for attachment in self.cached_attachments():
            key = (attachment.container_id, attachment.ifname)
            if key in keep:
                continue
            try:
                await self.delete(attachment.container_id, attachment.netns, attachment.ifname,
                                  attachment.cni_args, attachment.capability_args)
                removed.append(key)
            except CniError as exc:
                log.warning("CNI GC: DEL of stale attachment %s/%s failed: %s; will retry on the next GC",
                            key[0], key[1], exc)
        if _version(self.cni_version) >= (1, 1, 0):
            attachments = [{"containerID": c, "ifname": i} for c, i in sorted(keep)]
            extra = {"cni.dev/valid-attachments": attachments, "cni.dev/attachments": attachments}
            for plugin in self.plugins:
                await self._exec({**plugin, **extra}, "GC", "", "", "", None, None, None)
        return removed

    # -- cache -------------------------------------------------------------------------

    def cached(self, container_id: str, ifname: str = "eth0") -> CachedAttachment | None:
        return self._read_cache(self._cache_path(container_id, ifname))

    def cached_result(self, container_id: str, ifname: str = "eth0") -> CniResult | None:
        cached = self.cached(container_id, ifname)
        return CniResult.from_dict(cached.result) if cached else None

    def cached_attachments(self) -> list[CachedAttachment]:
        """Every attachment of this network with a cached ADD result."""
        directory = self.cache_dir / "results"
        try:
            paths = sorted(directory.glob(f"{self.name}-*"))
        except OSError:
            return []
        found = [self._read_cache(p) for p in paths]
        return [a for a in found if a is not None and a.network == self.name]

    def _cache_path(self, container_id: str, ifname: str) -> Path:
        return self.cache_dir / "results" / f"{self.name}-{container_id}-{ifname}"

    def _write_cache(
        self,
        container_id: str,
        ifname: str,
        netns_path: str,
        result: Mapping[str, Any],
        args: Mapping[str, str] | None,
        capability_args: Mapping[str, Any] | None,
    ) -> None:
        record = {
            "kind": CACHE_KIND,
            "containerId": container_id,
            "config": base64.b64encode(json.dumps(self.conflist).encode()).decode(),
            "ifName": ifname,
            "networkName": self.name,
            "netns": netns_path,
            "cniArgs": [[k, v] for k, v in (args or {}).items()],
            "capabilityArgs": dict(capability_args or {}),
            "result": dict(result),
        }
        path = self._cache_path(container_id, ifname)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, path)
        except OSError as exc:
            raise CniError(INVALID_RESULT, f"cannot cache the ADD result at {path}", str(exc), command="ADD") from exc

    @staticmethod
    def _read_cache(path: Path) -> CachedAttachment | None:
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable CNI cache file %s: %s", path, exc)
            return None
        if not isinstance(record, dict) or record.get("kind") != CACHE_KIND:
            return None
        conflist = None
        with contextlib.suppress(ValueError, TypeError):
            conflist = json.loads(base64.b64decode(record.get("config") or ""))
        return CachedAttachment(
            container_id=str(record.get("containerId", "")),
            ifname=str(record.get("ifName", "")),
            network=str(record.get("networkName", "")),
            netns=str(record.get("netns", "")),
            result=dict(record.get("result") or {}),
            conflist=conflist if isinstance(conflist, dict) else None,
            cni_args={str(k): str(v) for k, v in record.get("cniArgs") or []},
            capability_args=dict(record.get("capabilityArgs") or {}),
        )

    # -- execution ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _attachment(self, container_id: str, ifname: str) -> AsyncIterator[None]:
        """The spec forbids parallel operations on one attachment; this serialises them.

        The locks are shared by every CniNetwork of the process (keyed by cache dir and
        network), so reloading the conflist into a new object does not lose them.
        """
        key = (str(self.cache_dir), self.name, container_id, ifname)
        entry = _ATTACHMENT_LOCKS.setdefault(key, _KeyedLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and _ATTACHMENT_LOCKS.get(key) is entry:
                del _ATTACHMENT_LOCKS[key]

    async def _undo_add(
        self,
        container_id: str,
        netns_path: str,
        ifname: str,
        args: Mapping[str, str] | None,
        capability_args: Mapping[str, Any] | None,
        prev: dict[str, Any] | None,
    ) -> None:
        try:
            await self._run_delete(self.plugins, container_id, netns_path, ifname, args, capability_args, prev)
            with contextlib.suppress(FileNotFoundError):
                self._cache_path(container_id, ifname).unlink()
        except BaseException as exc:  # keep the ADD's error; this one is only logged
            log.error("CNI DEL after the failed ADD of %s/%s failed too: %s; the agent's next DEL retries it",
                      container_id, ifname, exc)

    async def _delete_unlocked(
        self,
        container_id: str,
        netns_path: str,
        ifname: str,
        args: Mapping[str, str] | None,
        capability_args: Mapping[str, Any] | None,
    ) -> None:
        cached = self.cached(container_id, ifname)
        plugins = self.plugins
        prev = None
        if cached is not None:
            prev = dict(cached.result)
            # DEL with the configuration the container was ADDed with, even if the conflist changed since.
            if cached.conflist and isinstance(cached.conflist.get("plugins"), list) and cached.conflist["plugins"]:
                plugins = [dict(p) for p in cached.conflist["plugins"]]
        await self._run_delete(plugins, container_id, netns_path, ifname, args, capability_args, prev)
        with contextlib.suppress(FileNotFoundError):
            self._cache_path(container_id, ifname).unlink()

    async def _run_delete(
        self,
        plugins: Sequence[dict[str, Any]],
        container_id: str,
        netns_path: str,
        ifname: str,
        args: Mapping[str, str] | None,
        capability_args: Mapping[str, Any] | None,
        prev: dict[str, Any] | None,
    ) -> None:
        netns = netns_path if netns_path and os.path.exists(netns_path) else ""
        for plugin in reversed(plugins):
            await self._exec(plugin, "DEL", container_id, netns, ifname, args, capability_args, prev)

    def find_plugin(self, plugin_type: str) -> Path:
        for directory in self.bin_dirs:
            candidate = directory / plugin_type
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        raise CniError(PLUGIN_NOT_FOUND, f"no plugin binary {plugin_type!r}",
                       f"searched {':'.join(map(str, self.bin_dirs))}", plugin=plugin_type)

    def plugin_config(
        self,
        plugin: Mapping[str, Any],
        capability_args: Mapping[str, Any] | None,
        prev_result: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The execution config of one plugin (spec section 3, "Deriving execution configuration")."""
        conf = {k: v for k, v in plugin.items() if k != "capabilities"}
        conf["cniVersion"] = self.cni_version
        conf["name"] = self.name
        capabilities = plugin.get("capabilities") or {}
        runtime_config = {k: v for k, v in (capability_args or {}).items() if capabilities.get(k)}
        if runtime_config:
            conf["runtimeConfig"] = runtime_config
        if prev_result is not None:
            conf["prevResult"] = dict(prev_result)
        return conf

    async def _exec(
        self,
        plugin: Mapping[str, Any],
        command: str,
        container_id: str,
        netns_path: str,
        ifname: str,
        args: Mapping[str, str] | None,
        capability_args: Mapping[str, Any] | None,
        prev_result: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Run one plugin once; its parsed stdout (None if empty), or CniError."""
        kind = str(plugin["type"])
        binary = self.find_plugin(kind)
        stdin = json.dumps(self.plugin_config(plugin, capability_args, prev_result)).encode()
        env = dict(os.environ)
        env.update({
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns_path,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": ";".join(f"{k}={v}" for k, v in (args or {}).items()),
            "CNI_PATH": ":".join(map(str, self.bin_dirs)),
        })
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                str(binary), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env,
            )
        except OSError as exc:
            raise CniError(PLUGIN_FAILED, f"cannot execute {binary}", str(exc), plugin=kind, command=command) from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except BaseException as exc:  # timeout, or the caller was cancelled: do not leave the plugin running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError):
                raise CniError(PLUGIN_TIMEOUT, f"did not finish within {self.timeout:g}s and was killed",
                               f"container {container_id} ifname {ifname}", plugin=kind, command=command) from None
            raise
        elapsed = time.monotonic() - started
        stderr_text = err.decode(errors="replace").strip()
        if stderr_text:
            log.debug("CNI %s %s %s/%s stderr: %s", kind, command, container_id, ifname, stderr_text[-2000:])
        if proc.returncode != 0:
            raise _plugin_error(kind, command, proc.returncode, out, stderr_text)
        log.debug("CNI %s %s %s/%s took %.3fs", kind, command, container_id, ifname, elapsed)
        text = out.decode(errors="replace").strip()
        if not text:
            return None
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise CniError(INVALID_RESULT, "stdout is not JSON", text[:500], plugin=kind, command=command) from exc
        if not isinstance(parsed, dict):
            raise CniError(INVALID_RESULT, "stdout is not a JSON object", text[:500], plugin=kind, command=command)
        return parsed


def _plugin_error(kind: str, command: str, returncode: int | None, out: bytes, stderr_text: str) -> CniError:
    with contextlib.suppress(ValueError):
        reply = json.loads(out)
        if isinstance(reply, dict) and isinstance(reply.get("code"), int):
            return CniError(int(reply["code"]), str(reply.get("msg") or "error"), str(reply.get("details") or ""),
                            plugin=kind, command=command)
    how = f"killed by signal {-returncode}" if returncode is not None and returncode < 0 else f"exit {returncode}"
    detail = (stderr_text or out.decode(errors="replace")).strip()[-1000:]
    return CniError(PLUGIN_FAILED, f"failed ({how}) without an error result", detail, plugin=kind, command=command)


def _version(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


# -- configuration and installation --------------------------------------------------


def render_conflist(
    plugin: Literal["skiff", "reference"],
    pod_cidr: str,
    bridge: str,
    data_dir: str,
    name: str = "skiff",
    daemon_socket: str | None = None,
) -> dict[str, Any]:
    """The node's network: a bridge with the pod CIDR's first address as gateway, host-local IPAM.

    Skiff's plugin and the reference plugins read the same config; only ``type`` differs.
    With daemon_socket, skiff-bridge's entry also names the CNI daemon (``daemonSocket``)
    that its shim forwards invocations to; the reference plugins never get it.
    """
    if plugin not in ("skiff", "reference"):
        raise ValueError(f"plugin must be 'skiff' or 'reference', not {plugin!r}")
    subnet = ipaddress.ip_network(pod_cidr, strict=False)
    entry: dict[str, Any] = {
        "type": SKIFF_PLUGIN_TYPE if plugin == "skiff" else REFERENCE_PLUGIN_TYPE,
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(subnet), "gateway": str(subnet.network_address + 1)}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(data_dir),
        },
    }
    if daemon_socket and plugin == "skiff":
        entry["daemonSocket"] = str(daemon_socket)
    return {"cniVersion": "1.0.0", "name": name, "plugins": [entry]}


def write_conflist(
    conf_dir: StrPath,
    plugin: Literal["skiff", "reference"],
    pod_cidr: str,
    bridge: str,
    data_dir: str,
    name: str = "skiff",
    daemon_socket: str | None = None,
) -> Path:
    """Write ``<conf_dir>/10-<name>.conflist`` (atomically, only if it changed); returns its path."""
    path = Path(conf_dir) / f"10-{name}.conflist"
    text = json.dumps(render_conflist(plugin, pod_cidr, bridge, data_dir, name, daemon_socket), indent=2) + "\n"
    _write_if_changed(path, text, 0o644)
    return path


def install_skiff_plugin(bin_dir: StrPath, shim_cache: StrPath | None = None) -> Path:
    """Install ``<bin_dir>/skiff-bridge``; returns its path. Idempotent; every file is replaced atomically.

    Three files: ``skiff-bridge-py``, the Python plugin itself (see `_python_wrapper`);
    ``skiff-bridge-shim``, the static front end compiled from ``cni/shim.c`` (cached in
    shim_cache, by default Skiff's build cache); and ``skiff-bridge``, a two-line script
    whose interpreter is the shim. The shim forwards each invocation to the CNI daemon
    named by ``daemonSocket`` in the config, and execs ``<its script>-py`` when there is
    none or it does not answer. Where the shim cannot be built (no gcc), skiff-bridge is
    the Python plugin.
    """
    directory = Path(bin_dir)
    wrapper = _python_wrapper()
    _write_if_changed(directory / SKIFF_FALLBACK_NAME, wrapper, 0o755)
    path = directory / SKIFF_PLUGIN_TYPE
    try:
        shim = _install_shim(directory, shim_cache)
    except ShimBuildError as exc:
        log.warning("cannot build the skiff-bridge shim (%s); %s runs the Python plugin directly, ~0.3s of CPU "
                    "per call", exc, path)
        _write_if_changed(path, wrapper, 0o755)
        return path
    interpreter = str(shim)
    if len(f"#!{interpreter}\n") < SHEBANG_MAX and not any(c.isspace() for c in interpreter):
        head = f"#!{interpreter}\n"
    else:  # the kernel cannot take it as an interpreter line: one sh in between (~1 ms)
        head = f'#!/bin/sh\nexec {shlex.quote(interpreter)} "$0" "$@"\n'
    text = (
        f"{head}"
        "# Skiff's CNI plugin (written by node_agent.runtime.cni.install_skiff_plugin): the shim above forwards\n"
        f"# each call to the CNI daemon named in the config (daemonSocket), or runs {SKIFF_FALLBACK_NAME}.\n"
    )
    _write_if_changed(path, text, 0o755)
    return path


def start_skiff_cni_daemon(directory: StrPath) -> CniDaemon | None:
    """Serve skiff-bridge's calls in this process, on ``<directory>/skiff-cni.sock``; stop() it on the way out.

    Give the socket path to `write_conflist` (daemon_socket) so the plugin finds it. None,
    logged, when it cannot listen: the plugin then runs stand-alone, only slower.
    """
    from cni.daemon import SOCKET_NAME, start_cni_daemon

    path = Path(directory) / SOCKET_NAME
    try:
        return start_cni_daemon(path)
    except OSError as exc:
        log.error("cannot start the CNI daemon on %s: %s; %s runs stand-alone, ~0.3 s of CPU per pod start",
                  path, exc, SKIFF_PLUGIN_TYPE)
        return None


def _python_wrapper() -> str:
    """A script that runs Skiff's plugin with this interpreter and this checkout.

    Python starts isolated and without ``site`` (-I -S: a few tens of ms less per call),
    with exactly two import roots: the directory holding the ``cni`` package and the one
    holding pyroute2.
    """
    roots = []
    for module in ("cni.plugin", "pyroute2"):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            raise RuntimeError(f"cannot locate {module} to install {SKIFF_PLUGIN_TYPE}")
        # cni/plugin.py -> its package's parent; pyroute2/__init__.py -> site-packages
        root = str(Path(spec.origin).resolve().parent.parent)
        if root not in roots:
            roots.append(root)
    code = f"import sys; sys.path[:0] = {json.dumps(roots)}; from cni.plugin import main; main()"
    return (
        "#!/bin/sh\n"
        "# Skiff's CNI plugin (written by node_agent.runtime.cni.install_skiff_plugin).\n"
        f"exec {shlex.quote(sys.executable)} -I -S -c {shlex.quote(code)} \"$@\"\n"
    )


def _install_shim(directory: Path, cache: StrPath | None) -> Path:
    from cni.shim import ensure_shim_binary
    from node_agent.images.pause_binary import cache_dir

    built = ensure_shim_binary(Path(cache) if cache is not None else cache_dir())
    target = directory / SKIFF_SHIM_NAME
    data = built.read_bytes()
    with contextlib.suppress(OSError):
        if target.read_bytes() == data and (target.stat().st_mode & 0o777) == 0o755:
            return target
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target


def _write_if_changed(path: Path, text: str, mode: int) -> None:
    with contextlib.suppress(OSError):
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
