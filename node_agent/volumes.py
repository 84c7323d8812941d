"""Pod volumes on the node's filesystem, the way the kubelet's volume plugins lay them out.

Everything of a pod lives under its pod dir::

    <pod_dir>/volumes/empty-dir/<name>      emptyDir (medium Memory: a tmpfs mounted there)
    <pod_dir>/volumes/configmap/<name>      configMap   } files written by the atomic writer:
    <pod_dir>/volumes/secret/<name>         secret (tmpfs) } ``..<timestamp>`` dir, ``..data``
    <pod_dir>/volumes/downward-api/<name>   downwardAPI } symlink swapped by rename, one
    <pod_dir>/volumes/projected/<name>      projected (tmpfs) } ``<key> -> ..data/<key>`` link each
    <pod_dir>/containers/<container>/<n>    termination-message files

hostPath volumes are checked (absolute, no ``..``, ``type``) and bound as they are.

``prepare_volumes`` is idempotent: the agent calls it on every sync of a pod, so it never
wipes an existing emptyDir and rewrites configMap/secret files only when their content or
mode changed (that is also how updates reach running pods). Failures are ``VolumeError``
with reason ``FailedMount`` and the kubelet's messages; subPath problems found while
building a container's mounts are ``ContainerConfigError`` (``CreateContainerConfigError``),
as in the kubelet. ``teardown_volumes`` unmounts what was mounted and removes the pod dir.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import ctypes.util
import errno
import logging
import os
import posixpath
import shutil
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node_agent.runtime.container_spec import Mount
from node_agent.runtime.env import (
    ContainerConfigError,
    container_resource_value,
    decode_secret_data,
    expand,
    metadata_field_value,
)
from skiff.api.quantity import QuantityError, memory_bytes

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ObjectGetter = Callable[[str, str], Awaitable[Obj | None]]

FAILED_MOUNT = "FailedMount"
DEFAULT_MODE = 0o644
DATA_DIR = "..data"
DATA_DIR_TMP = "..data_tmp"
MAX_PATH_LENGTH = 4096
MAX_FILE_NAME_LENGTH = 255
EMPTY_DIR_MODE = 0o777
HOST_PATH_CREATE_DIR_MODE = 0o755
HOST_PATH_CREATE_FILE_MODE = 0o644
TERMINATION_LOG_MODE = 0o666
# SetVolumeOwnership's masks (pkg/volume/volume_linux.go)
RW_MASK = 0o660
RO_MASK = 0o440
EXEC_MASK = 0o110

KIND_DIRS = {
    "emptyDir": "empty-dir",
    "configMap": "configmap",
    "secret": "secret",
    "downwardAPI": "downward-api",
    "projected": "projected",
}


class VolumeError(Exception):
    """A volume that cannot be set up; ``message`` is the first failure, ``messages`` all."""

    def __init__(self, *, message: str, reason: str = FAILED_MOUNT, messages: list[str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.messages = messages if messages is not None else [message]


@dataclass(frozen=True)
class VolumeSource:
    """A prepared volume: the host path containers bind (``host_path``), whether the plugin
    always mounts it read-only (configMap, secret, downwardAPI, projected) and whether the
    host path is a tmpfs the agent mounted (emptyDir medium Memory, secret, projected)."""

    name: str
    kind: str
    host_path: str
    read_only: bool = False
    tmpfs: bool = False
    size_limit: int | None = None


# --- helpers ------------------------------------------------------------------------------------

def _setup_failed(volume: str, detail: str) -> str:
    return f'MountVolume.SetUp failed for volume "{volume}" : {detail}'


def validate_payload_path(path: str) -> str:
    """The atomic writer's ``validatePath`` after ``path.Clean``; returns the clean path or
    raises ValueError with Kubernetes' message. Run before anything touches the disk."""
    if path == "":
        return _raise(f'invalid path: must not be empty: "{path}"')
    if "\x00" in path:
        return _raise(f"invalid path: must not contain NUL: {path!r}")
    if posixpath.isabs(path):
        return _raise(f"invalid path: must be relative path: {path}")
    if len(path) > MAX_PATH_LENGTH:
        return _raise(f"invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters")
    items = path.split("/")
    for item in items:
        if item == "..":
            return _raise(f"invalid path: must not contain '..': {path}")
        if len(item) > MAX_FILE_NAME_LENGTH:
            return _raise(f"invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters")
    if items[0].startswith("..") and len(items[0]) > 2:
        return _raise(f"invalid path: must not start with '..': {path}")
    clean = posixpath.normpath(path)
    if clean in (".", "") or clean.startswith("../"):
        return _raise(f"invalid path: must name a file: {path}")
    return clean


def _raise(message: str) -> str:
    raise ValueError(message)


@dataclass
class FileProjection:
    data: bytes
    mode: int


Payload = dict[str, FileProjection]


# --- mounting -----------------------------------------------------------------------------------

_libc: Any = None
MNT_DETACH = 2
MS_NOSUID = 2
MS_NODEV = 4


def _libc_call() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def mount_tmpfs(target: Path, size: int | None = None) -> None:
    """Mount a fresh tmpfs on ``target`` unless one is mounted there already."""
    if os.path.ismount(target):
        return
    options = "mode=0777" + (f",size={size}" if size else "")
    rc = _libc_call().mount(b"tmpfs", os.fsencode(target), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {target}: {os.strerror(err)}")


def unmount(target: str) -> None:
    rc = _libc_call().umount2(os.fsencode(target), 0)
    if rc != 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL:  # not a mount point (any more)
            return
        if err == errno.EBUSY:
            rc = _libc_call().umount2(os.fsencode(target), MNT_DETACH)
            if rc == 0:
                return
            err = ctypes.get_errno()
        raise OSError(err, f"unmount {target}: {os.strerror(err)}")


def _unescape_mountinfo(path: str) -> str:
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory``, deepest first (from /proc/self/mountinfo)."""
    root = os.path.realpath(directory)
    found: list[str] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 5:
                    continue
                point = _unescape_mountinfo(parts[4])
                if point == root or point.startswith(root + "/"):
                    found.append(point)
    except FileNotFoundError:
        return []
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


# --- the atomic writer --------------------------------------------------------------------------

def _expected_mode(mode: int, fs_group: int | None) -> int:
    return (mode | RO_MASK) if fs_group is not None else mode


def _current_payload_matches(data_dir: Path, payload: Payload, fs_group: int | None) -> bool:
    """True when ``..data`` already holds exactly ``payload`` (kubelet's shouldWritePayload)."""
    if not data_dir.is_dir():
        return False
    existing: set[str] = set()
    for dirpath, _dirs, files in os.walk(data_dir):
        for name in files:
            existing.add(os.path.relpath(os.path.join(dirpath, name), data_dir))
    if existing != set(payload):
        return False
    for rel, proj in payload.items():
        path = data_dir / rel
        try:
            st = path.lstat()
            if stat.S_IMODE(st.st_mode) != _expected_mode(proj.mode, fs_group):
                return False
            if fs_group is not None and st.st_gid != fs_group:
                return False
            if path.read_bytes() != proj.data:
                return False
        except OSError:
            return False
    return True


def _user_visible(payload: Mapping[str, Any]) -> set[str]:
    return {p.split("/", 1)[0] for p in payload}


def write_atomically(target: Path, payload: Payload, *, fs_group: int | None = None) -> bool:
    """Kubelet's ``AtomicWriter.Write``: the new files go into a fresh ``..<timestamp>``
    dir, ``..data`` is switched to it with one rename, top-level names are symlinks into
    ``..data``, and the previous timestamped dir is removed. Readers see the old or the
    new set of files, never a mix. Returns False when nothing had to change."""
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / DATA_DIR
    old_ts: str | None = None
    if data_link.is_symlink():
        old_ts = os.readlink(data_link)
    old_visible: set[str] = set()
    if old_ts is not None and (target / old_ts).is_dir():
        old_visible = {name for name in os.listdir(target / old_ts)}
        if _current_payload_matches(target / old_ts, payload, fs_group):
            _ensure_user_visible(target, payload)
            return False

    ts_dir = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=target))
    try:
        os.chmod(ts_dir, 0o755)
        for rel, proj in sorted(payload.items()):
            path = ts_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            with open(path, "wb") as f:
                f.write(proj.data)
            os.chmod(path, proj.mode & 0o7777)
        if fs_group is not None:
            set_volume_ownership(ts_dir, fs_group, read_only=True)
        tmp_link = target / DATA_DIR_TMP
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(ts_dir.name, tmp_link)
        os.rename(tmp_link, data_link)
    except BaseException:
        shutil.rmtree(ts_dir, ignore_errors=True)
        raise

    _ensure_user_visible(target, payload)
    for name in old_visible - _user_visible(payload):
        link = target / name
        if link.is_symlink():
            link.unlink()
    if old_ts is not None and old_ts != ts_dir.name and old_ts.startswith(".."):
        shutil.rmtree(target / old_ts, ignore_errors=True)
    return True


def _ensure_user_visible(target: Path, payload: Mapping[str, Any]) -> None:
    for name in _user_visible(payload):
        link = target / name
        if not link.is_symlink():
            if link.exists():
                # Something that is not ours sits where the key must appear.
                if link.is_dir():
                    shutil.rmtree(link)
                else:
                    link.unlink()
            os.symlink(posixpath.join(DATA_DIR, name), link)


def set_volume_ownership(root: Path, fs_group: int, *, read_only: bool) -> None:
    """``SetVolumeOwnership``: group ``fs_group`` on everything, group access added, and the
    setgid bit on directories so new files inherit the group."""
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files, None]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            st = os.lstat(path)
            os.lchown(path, -1, fs_group)
            if stat.S_ISLNK(st.st_mode):
                continue
            mask = RO_MASK if read_only else RW_MASK
            if stat.S_ISDIR(st.st_mode):
                mask |= stat.S_ISGID | EXEC_MASK
            os.chmod(path, stat.S_IMODE(st.st_mode) | mask)


# --- payloads -----------------------------------------------------------------------------------

def _mode(value: Any, default: int) -> int:
    if value is None:
        return default
    return int(value) & 0o7777


def _configmap_data(cm: Obj) -> dict[str, bytes]:
    data = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
    for k, v in (cm.get("binaryData") or {}).items():
        try:
            data[k] = base64.b64decode(v or "")
        except (binascii.Error, ValueError, TypeError):
            continue
    return data


def make_payload(items: list[Obj] | None, data: Mapping[str, bytes], default_mode: int, optional: bool,
                 what: str) -> Payload:
    """``MakePayload`` of the configMap/secret plugins: all keys, or the listed items."""
    payload: Payload = {}
    if not items:
        for key, value in data.items():
            payload[key] = FileProjection(value, default_mode)
        return payload
    for item in items:
        key = str(item.get("key") or "")
        if key not in data:
            if optional:
                continue
            if what == "configmap":
                raise ValueError(f"configmap references non-existent config key: {key}")
            raise ValueError(f"references non-existent secret key: {key}")
        payload[str(item.get("path") or key)] = FileProjection(data[key], _mode(item.get("mode"), default_mode))
    return payload


def downward_api_payload(pod: Obj, items: list[Obj], default_mode: int,
                         node_allocatable: Mapping[str, Any] | None) -> Payload:
    payload: Payload = {}
    errors: list[str] = []
    containers = {c.get("name"): c for c in ((pod.get("spec") or {}).get("containers") or [])
                  + ((pod.get("spec") or {}).get("initContainers") or [])}
    for item in items:
        path = str(item.get("path") or "")
        mode = _mode(item.get("mode"), default_mode)
        try:
            if item.get("fieldRef") is not None:
                value = metadata_field_value(pod, str(item["fieldRef"].get("fieldPath") or ""))
            elif item.get("resourceFieldRef") is not None:
                selector = item["resourceFieldRef"]
                container = containers.get(selector.get("containerName"))
                if container is None:
                    raise ValueError(f"container {selector.get('containerName')} not found")
                value = container_resource_value(selector, container, node_allocatable=node_allocatable)
            else:
                continue
        except (ValueError, QuantityError) as exc:
            errors.append(str(exc))
            continue
        payload[path] = FileProjection(value.encode(), mode)
    if errors:
        raise ValueError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    return payload


def _validated(payload: Payload) -> Payload:
    clean: Payload = {}
    for path, proj in payload.items():
        clean[validate_payload_path(path)] = proj
    paths = sorted(clean)
    for i, p in enumerate(paths[:-1]):
        if paths[i + 1].startswith(p + "/"):
            raise ValueError(f"invalid path: {p} is both a file and a directory")
    return clean


# --- preparing a pod's volumes ------------------------------------------------------------------

@dataclass
class _Ctx:
    pod: Obj
    pod_dir: Path
    namespace: str
    get_configmap: ObjectGetter
    get_secret: ObjectGetter
    fs_group: int | None
    node_allocatable: Mapping[str, Any] | None
    cache: dict[tuple[str, str], Obj | None] = field(default_factory=dict)

    async def configmap(self, name: str) -> Obj | None:
        key = ("configmap", name)
        if key not in self.cache:
            self.cache[key] = await self.get_configmap(self.namespace, name)
        return self.cache[key]

    async def secret(self, name: str) -> Obj | None:
        key = ("secret", name)
        if key not in self.cache:
            self.cache[key] = await self.get_secret(self.namespace, name)
        return self.cache[key]


def volume_dir(pod_dir: Path, kind: str, name: str) -> Path:
    return pod_dir / "volumes" / KIND_DIRS[kind] / name


def _pod_memory_limit(pod: Obj) -> int | None:
    """The pod's memory limit when every app container has one (else None)."""
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
        if limit is None:
            return None
        try:
            total += memory_bytes(limit)
        except QuantityError:
            return None
    return total or None


async def prepare_volumes(
    pod: Obj,
    pod_dir: Path,
    *,
    get_configmap: ObjectGetter,
    get_secret: ObjectGetter,
    node_allocatable: Mapping[str, Any] | None = None,
    kinds: frozenset[str] | None = None,
) -> dict[str, VolumeSource]:
    """Set up every volume of ``pod`` under ``pod_dir``; returns them by volume name.

    All volumes are attempted; if any failed, VolumeError carries every message (the first
    one as ``message``). ``kinds`` restricts the work to some volume kinds (see
    ``update_volumes``). Idempotent: safe on every sync.
    """
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    fs_group_raw = (spec.get("securityContext") or {}).get("fsGroup")
    ctx = _Ctx(pod=pod, pod_dir=Path(pod_dir), namespace=str(meta.get("namespace") or "default"),
               get_configmap=get_configmap, get_secret=get_secret,
               fs_group=int(fs_group_raw) if fs_group_raw is not None else None,
               node_allocatable=node_allocatable)
    result: dict[str, VolumeSource] = {}
    errors: list[str] = []
    for volume in spec.get("volumes") or []:
        name = str(volume.get("name") or "")
        kind = next((k for k in ("emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected")
                     if volume.get(k) is not None), None)
        if kind is None:
            if not any(k for k in volume if k != "name"):
                kind = "emptyDir"  # the API default for a volume without a source
            else:
                unsupported = next(k for k in volume if k != "name")
                errors.append(_setup_failed(name, f"volume type {unsupported} is not supported by this node"))
                continue
        if kinds is not None and kind not in kinds:
            continue
        try:
            result[name] = await _prepare_one(ctx, name, kind, volume.get(kind) or {})
        except VolumeError as exc:
            errors.extend(exc.messages)
        except ValueError as exc:
            errors.append(_setup_failed(name, str(exc)))
        except OSError as exc:
            errors.append(_setup_failed(name, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")))
    if errors:
        raise VolumeError(message=errors[0], messages=errors)
    return result


async def update_volumes(
    pod: Obj,
    pod_dir: Path,
    *,
    get_configmap: ObjectGetter,
    get_secret: ObjectGetter,
    node_allocatable: Mapping[str, Any] | None = None,
) -> dict[str, VolumeSource]:
    """Re-render the configMap, secret, downwardAPI and projected volumes of a running pod
    (the kubelet's periodic remount); unchanged content is left untouched."""
    return await prepare_volumes(pod, pod_dir, get_configmap=get_configmap, get_secret=get_secret,
                                 node_allocatable=node_allocatable,
                                 kinds=frozenset({"configMap", "secret", "downwardAPI", "projected"}))


async def _prepare_one(ctx: _Ctx, name: str, kind: str, source: Obj) -> VolumeSource:
    if kind == "emptyDir":
        return await asyncio.to_thread(_prepare_empty_dir, ctx, name, source)
    if kind == "hostPath":
        return await asyncio.to_thread(_prepare_host_path, name, source)
    if kind == "configMap":
        payload = await _configmap_payload(ctx, source, int(_mode(source.get("defaultMode"), DEFAULT_MODE)))
        return await asyncio.to_thread(_write_volume, ctx, name, kind, payload, False)
    if kind == "secret":
        payload = await _secret_payload(ctx, source, int(_mode(source.get("defaultMode"), DEFAULT_MODE)))
        return await asyncio.to_thread(_write_volume, ctx, name, kind, payload, True)
    if kind == "downwardAPI":
        payload = downward_api_payload(ctx.pod, source.get("items") or [],
                                       _mode(source.get("defaultMode"), DEFAULT_MODE), ctx.node_allocatable)
        return await asyncio.to_thread(_write_volume, ctx, name, kind, payload, False)
    if kind == "projected":
        payload = await _projected_payload(ctx, source)
        return await asyncio.to_thread(_write_volume, ctx, name, kind, payload, True)
    raise ValueError(f"volume type {kind} is not supported")


async def _configmap_payload(ctx: _Ctx, source: Obj, default_mode: int) -> Payload:
    cm_name = str(source.get("name") or "")
    optional = bool(source.get("optional"))
    cm = await ctx.configmap(cm_name)
    if cm is None:
        if not optional:
            raise ValueError(f'configmap "{cm_name}" not found')
        return {}
    return make_payload(source.get("items"), _configmap_data(cm), default_mode, optional, "configmap")


async def _secret_payload(ctx: _Ctx, source: Obj, default_mode: int) -> Payload:
    secret_name = str(source.get("secretName") or source.get("name") or "")
    optional = bool(source.get("optional"))
    secret = await ctx.secret(secret_name)
    if secret is None:
        if not optional:
            raise ValueError(f'secret "{secret_name}" not found')
        return {}
    return make_payload(source.get("items"), decode_secret_data(secret), default_mode, optional, "secret")


async def _projected_payload(ctx: _Ctx, source: Obj) -> Payload:
    """``projectedVolumeMounter.collectData``: every source into one payload; errors of
    all sources are aggregated as the kubelet does."""
    default_mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
    payload: Payload = {}
    errors: list[str] = []
    for item in source.get("sources") or []:
        try:
            if item.get("configMap") is not None:
                payload.update(await _configmap_payload(ctx, item["configMap"], default_mode))
            elif item.get("secret") is not None:
                payload.update(await _secret_payload(ctx, item["secret"], default_mode))
            elif item.get("downwardAPI") is not None:
                payload.update(downward_api_payload(ctx.pod, item["downwardAPI"].get("items") or [], default_mode,
                                                    ctx.node_allocatable))
            elif item.get("serviceAccountToken") is not None:
                errors.append("serviceAccountToken projection is not supported by this node")
            else:
                unsupported = next(iter(item), "unknown")
                errors.append(f"projected source {unsupported} is not supported by this node")
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ValueError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    return payload


def _write_volume(ctx: _Ctx, name: str, kind: str, payload: Payload, memory_backed: bool) -> VolumeSource:
    payload = _validated(payload)
    target = volume_dir(ctx.pod_dir, kind, name)
    target.mkdir(parents=True, exist_ok=True)
    if memory_backed:
        # Secrets never touch the node's disk (the kubelet wraps them in a memory emptyDir).
        mount_tmpfs(target)
    write_atomically(target, payload, fs_group=ctx.fs_group)
    return VolumeSource(name=name, kind=kind, host_path=str(target), read_only=True, tmpfs=memory_backed)


def _prepare_empty_dir(ctx: _Ctx, name: str, source: Obj) -> VolumeSource:
    target = volume_dir(ctx.pod_dir, "emptyDir", name)
    memory = source.get("medium") == "Memory"
    size: int | None = None
    if memory:
        if source.get("sizeLimit") is not None:
            size = memory_bytes(source["sizeLimit"])
        else:
            size = _pod_memory_limit(ctx.pod)
    existed = target.is_dir()
    target.mkdir(parents=True, exist_ok=True)
    if memory:
        mount_tmpfs(target, size)
    if not existed or memory:
        os.chmod(target, EMPTY_DIR_MODE)
    if ctx.fs_group is not None:
        set_volume_ownership(target, ctx.fs_group, read_only=False)
    return VolumeSource(name=name, kind="emptyDir", host_path=str(target), tmpfs=memory, size_limit=size)


def _host_path_error(name: str, detail: str) -> VolumeError:
    return VolumeError(message=_setup_failed(name, detail))


def _prepare_host_path(name: str, source: Obj) -> VolumeSource:
    path = str(source.get("path") or "")
    if not path:
        raise _host_path_error(name, "hostPath path must not be empty")
    if not path.startswith("/"):
        raise _host_path_error(name, f'hostPath path "{path}" must be an absolute path')
    if ".." in path.split("/"):
        raise _host_path_error(name, f"hostPath path \"{path}\" must not contain '..'")
    if ":" in path:
        raise _host_path_error(name, f'hostPath path "{path}" must not contain \':\'')
    path_type = str(source.get("type") or "")
    try:
        check_host_path_type(path, path_type)
    except ValueError as exc:
        raise _host_path_error(name, str(exc)) from exc
    return VolumeSource(name=name, kind="hostPath", host_path=path)


def check_host_path_type(path: str, path_type: str) -> None:
    """``checkTypeInternal`` of the hostPath plugin, with its messages."""
    if path_type == "":
        return

    def mode() -> int | None:
        try:
            return os.stat(path).st_mode
        except FileNotFoundError:
            return None

    current = mode()
    if path_type == "DirectoryOrCreate":
        if current is None:
            os.makedirs(path, mode=HOST_PATH_CREATE_DIR_MODE, exist_ok=True)
            return
        path_type = "Directory"
    elif path_type == "FileOrCreate":
        if current is None:
            os.makedirs(os.path.dirname(path) or "/", mode=HOST_PATH_CREATE_DIR_MODE, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, HOST_PATH_CREATE_FILE_MODE)
            os.close(fd)
            return
        path_type = "File"
    checks = {
        "Directory": (stat.S_ISDIR, "is not a directory"),
        "File": (stat.S_ISREG, "is not a file"),
        "Socket": (stat.S_ISSOCK, "is not a socket file"),
        "CharDevice": (stat.S_ISCHR, "is not a character device"),
        "BlockDevice": (stat.S_ISBLK, "is not a block device"),
    }
    if path_type not in checks:
        raise ValueError(f"{path_type} is an invalid volume type")
    test, what = checks[path_type]
    if current is None or not test(current):
        raise ValueError(f"hostPath type check failed: {path} {what}")


# --- container mounts ---------------------------------------------------------------------------

_PROPAGATION = {None: "", "None": "", "HostToContainer": "rslave", "Bidirectional": "rshared"}


def mounts_for(container: Obj, volumes: Mapping[str, VolumeSource], *,
               env: Mapping[str, str] | None = None) -> list[Mount]:
    """The container's volumeMounts as Mounts (kubelet's ``makeMounts``).

    subPath / subPathExpr (expanded with ``env``) are resolved here: the path must stay
    inside the volume after following symlinks, and is created as a directory when it does
    not exist. Problems are ContainerConfigError, as in the kubelet."""
    mounts: list[Mount] = []
    privileged = bool((container.get("securityContext") or {}).get("privileged"))
    for vm in container.get("volumeMounts") or []:
        vol_name = str(vm.get("name") or "")
        volume = volumes.get(vol_name)
        if volume is None:
            raise ContainerConfigError(message=f"cannot find volume \"{vol_name}\" to mount into container "
                                               f"\"{container.get('name')}\"")
        propagation_key = vm.get("mountPropagation")
        if propagation_key not in _PROPAGATION:
            raise ContainerConfigError(message=f"invalid MountPropagation mode: {propagation_key}")
        if propagation_key == "Bidirectional" and not privileged:
            raise ContainerConfigError(
                message="Bidirectional mount propagation is available only to privileged containers")
        sub_path = str(vm.get("subPath") or "")
        if vm.get("subPathExpr"):
            sub_path = _expand_sub_path_expr(str(vm["subPathExpr"]), env or {})
        source = volume.host_path
        if sub_path:
            source = _resolve_sub_path(volume, sub_path)
        mounts.append(Mount(
            source=source,
            target=str(vm.get("mountPath") or ""),
            read_only=bool(vm.get("readOnly")) or volume.read_only,
            tmpfs=False,
            sub_path=sub_path,
            propagation=_PROPAGATION[propagation_key],
        ))
    return mounts


def _expand_sub_path_expr(expr: str, env: Mapping[str, str]) -> str:
    missing: set[str] = set()

    def lookup(key: str) -> str:
        value = env.get(key, "")
        if not value:
            missing.add(key)
        return value

    expanded = expand(expr, lookup)
    if missing:
        raise ContainerConfigError(message=f"missing value for {', '.join(sorted(missing))}")
    return expanded


def _resolve_sub_path(volume: VolumeSource, sub_path: str) -> str:
    if posixpath.isabs(sub_path):
        raise ContainerConfigError(message=f"error SubPath `{sub_path}` must not be an absolute path")
    if ".." in sub_path.split("/"):
        raise ContainerConfigError(message=f"unable to provision SubPath `{sub_path}`: must not contain '..'")
    base = os.path.realpath(volume.host_path)
    candidate = os.path.join(volume.host_path, sub_path)
    resolved = os.path.realpath(candidate)
    if resolved != base and not resolved.startswith(base + "/"):
        raise ContainerConfigError(message=f"subpath {resolved!r} not within volume path {base!r}")
    if not os.path.lexists(candidate):
        try:
            mode = stat.S_IMODE(os.stat(base).st_mode)
            os.makedirs(candidate, mode=mode, exist_ok=True)
            os.chmod(candidate, mode)
        except OSError as exc:
            raise ContainerConfigError(message=f"failed to create subPath directory for volumeMount "
                                               f"\"{volume.name}\": {exc.strerror}") from exc
    return resolved


# --- termination log and teardown ---------------------------------------------------------------

def prepare_termination_log(pod_dir: Path, container_name: str, attempt: int) -> Path:
    """An empty, world-writable file for the container's terminationMessagePath, under
    ``<pod_dir>/containers/<name>/`` (kubelet's PodContainerDir), one per attempt."""
    directory = Path(pod_dir) / "containers" / container_name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / str(attempt)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, TERMINATION_LOG_MODE)
    os.close(fd)
    os.chmod(path, TERMINATION_LOG_MODE)
    return path


async def teardown_volumes(pod_dir: Path) -> None:
    """Unmount every tmpfs under ``pod_dir`` and remove the dir; idempotent. Refuses to
    delete anything while a mount below it remains."""
    await asyncio.to_thread(_teardown, Path(pod_dir))


def _teardown(pod_dir: Path) -> None:
    if not pod_dir.exists():
        return
    for point in mounts_under(pod_dir):
        unmount(point)
    left = mounts_under(pod_dir)
    if left:
        raise OSError(errno.EBUSY, f"mounts remain under {pod_dir}: {', '.join(left)}")
    shutil.rmtree(pod_dir)
