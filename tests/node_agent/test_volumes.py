"""Pod volumes on a real filesystem (under tmp_path); tmpfs mounts are undone by the fixture."""

from __future__ import annotations

import base64
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node_agent.runtime.env import ContainerConfigError
from node_agent.volumes import (
    FileProjection,
    VolumeError,
    VolumeSource,
    mounts_for,
    mounts_under,
    prepare_termination_log,
    prepare_volumes,
    teardown_volumes,
    update_volumes,
    validate_payload_path,
    write_atomically,
)

Obj = dict[str, Any]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root")


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class Store:
    def __init__(self) -> None:
        self.configmaps: dict[str, Obj] = {
            "cfg": {"data": {"app.conf": "port=80\n", "color": "blue"}, "binaryData": {"blob": b64("\x00\x01")}},
        }
        self.secrets: dict[str, Obj] = {"creds": {"data": {"user": b64("admin"), "pass": b64("hunter2")}}}

    async def get_configmap(self, namespace: str, name: str) -> Obj | None:
        assert namespace == "ns1"
        return self.configmaps.get(name)

    async def get_secret(self, namespace: str, name: str) -> Obj | None:
        assert namespace == "ns1"
        return self.secrets.get(name)


@pytest.fixture
async def pod_dir(tmp_path: Path) -> AsyncIterator[Path]:
    d = tmp_path / "pods" / "uid-1"
    try:
        yield d
    finally:
        await teardown_volumes(d)
        assert mounts_under(tmp_path) == []


@pytest.fixture
def store() -> Store:
    return Store()


def make_pod(volumes: list[Obj], **spec: Any) -> Obj:
    return {
        "metadata": {"name": "web", "namespace": "ns1", "uid": "uid-1", "labels": {"app": "web"},
                     "annotations": {"a": "1"}},
        "spec": {"containers": [{"name": "app", "image": "i", "resources": {"limits": {"memory": "64Mi"}}}],
                 "volumes": volumes, **spec},
    }


async def prepare(pod: Obj, pod_dir: Path, store: Store) -> dict[str, VolumeSource]:
    return await prepare_volumes(pod, pod_dir, get_configmap=store.get_configmap, get_secret=store.get_secret)


def tree(root: Path) -> dict[str, str]:
    """Every user-visible file under ``root`` (through the ..data links) with its content."""
    out = {}
    for name in sorted(os.listdir(root)):
        if name.startswith(".."):
            continue
        p = root / name
        if p.is_dir():
            for sub, content in tree(p).items():
                out[f"{name}/{sub}"] = content
        else:
            out[name] = p.read_bytes().decode("latin-1")
    return out


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


async def test_empty_dir_is_kept_across_prepares(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "data", "emptyDir": {}}])
    vols = await prepare(pod, pod_dir, store)
    path = pod_dir / "volumes" / "empty-dir" / "data"
    assert vols["data"] == VolumeSource(name="data", kind="emptyDir", host_path=str(path))
    assert mode(path) == 0o777
    (path / "keep").write_text("x")
    await prepare(pod, pod_dir, store)
    assert (path / "keep").read_text() == "x"


@needs_root
async def test_memory_empty_dir_is_a_tmpfs(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    {"name": "mem2", "emptyDir": {"medium": "Memory"}}])
    vols = await prepare(pod, pod_dir, store)
    assert vols["mem"].tmpfs and vols["mem"].size_limit == 16 * 1024 * 1024
    assert vols["mem2"].size_limit == 64 * 1024 * 1024  # the pod's memory limit
    path = Path(vols["mem"].host_path)
    assert os.path.ismount(path)
    st = os.statvfs(path)
    assert st.f_blocks * st.f_frsize == 16 * 1024 * 1024
    (path / "f").write_text("in memory")
    await prepare(pod, pod_dir, store)  # idempotent: no second mount, content kept
    assert (path / "f").read_text() == "in memory"
    assert len([m for m in mounts_under(pod_dir) if m == str(path)]) == 1


async def test_configmap_volume_layout(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "config", "configMap": {"name": "cfg", "defaultMode": 0o640}}])
    vols = await prepare(pod, pod_dir, store)
    root = pod_dir / "volumes" / "configmap" / "config"
    assert vols["config"] == VolumeSource(name="config", kind="configMap", host_path=str(root), read_only=True)
    assert tree(root) == {"app.conf": "port=80\n", "blob": "\x00\x01", "color": "blue"}
    data = root / "..data"
    assert data.is_symlink() and os.readlink(data).startswith("..") and os.readlink(data) != "..data"
    assert os.readlink(root / "color") == "..data/color"
    assert mode(root / "color") == 0o640
    assert sorted(os.listdir(root)) == sorted(["..data", os.readlink(data), "app.conf", "blob", "color"])


async def test_configmap_items_and_modes(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "config", "configMap": {"name": "cfg", "items": [
        {"key": "app.conf", "path": "etc/app/app.conf", "mode": 0o600},
        {"key": "color", "path": "color.txt"},
    ]}}])
    await prepare(pod, pod_dir, store)
    root = pod_dir / "volumes" / "configmap" / "config"
    assert tree(root) == {"color.txt": "blue", "etc/app/app.conf": "port=80\n"}
    assert mode(root / "etc" / "app" / "app.conf") == 0o600
    assert mode(root / "color.txt") == 0o644
    assert os.readlink(root / "etc") == "..data/etc"


async def test_update_swaps_atomically_and_removes_old(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "config", "configMap": {"name": "cfg"}}])
    await prepare(pod, pod_dir, store)
    root = pod_dir / "volumes" / "configmap" / "config"
    first = os.readlink(root / "..data")
    # Unchanged content: nothing is rewritten.
    await update_volumes(pod, pod_dir, get_configmap=store.get_configmap, get_secret=store.get_secret)
    assert os.readlink(root / "..data") == first
    store.configmaps["cfg"] = {"data": {"color": "red", "new": "yes"}}
    await update_volumes(pod, pod_dir, get_configmap=store.get_configmap, get_secret=store.get_secret)
    second = os.readlink(root / "..data")
    assert second != first
    assert tree(root) == {"color": "red", "new": "yes"}
    assert not (root / first).exists()
    assert not os.path.lexists(root / "app.conf")


@needs_root
async def test_secret_volume_on_tmpfs(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "s", "secret": {"secretName": "creds", "defaultMode": 0o400,
                                             "items": [{"key": "pass", "path": "password"}]}}])
    vols = await prepare(pod, pod_dir, store)
    root = pod_dir / "volumes" / "secret" / "s"
    assert vols["s"] == VolumeSource(name="s", kind="secret", host_path=str(root), read_only=True, tmpfs=True)
    assert os.path.ismount(root)
    assert tree(root) == {"password": "hunter2"}
    assert mode(root / "password") == 0o400


async def test_fs_group_ownership(pod_dir: Path, store: Store) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    pod = make_pod([{"name": "config", "configMap": {"name": "cfg", "defaultMode": 0o400}},
                    {"name": "data", "emptyDir": {}}], securityContext={"fsGroup": 4321})
    await prepare(pod, pod_dir, store)
    f = pod_dir / "volumes" / "configmap" / "config" / "color"
    assert f.stat().st_gid == 4321 and mode(f) == 0o440
    d = pod_dir / "volumes" / "empty-dir" / "data"
    assert d.stat().st_gid == 4321 and d.stat().st_mode & stat.S_ISGID
    # A second prepare sees the same content and leaves the files alone.
    data_before = os.readlink(pod_dir / "volumes" / "configmap" / "config" / "..data")
    await prepare(pod, pod_dir, store)
    assert os.readlink(pod_dir / "volumes" / "configmap" / "config" / "..data") == data_before


async def test_optional_missing_configmap_is_empty(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "c", "configMap": {"name": "nope", "optional": True}},
                    {"name": "c2", "configMap": {"name": "cfg", "optional": True,
                                                 "items": [{"key": "missing", "path": "m"}]}}])
    await prepare(pod, pod_dir, store)
    assert tree(pod_dir / "volumes" / "configmap" / "c") == {}
    assert tree(pod_dir / "volumes" / "configmap" / "c2") == {}


async def test_missing_references_are_failed_mounts(pod_dir: Path, store: Store) -> None:
    pod = make_pod([
        {"name": "a", "configMap": {"name": "nope"}},
        {"name": "b", "secret": {"secretName": "nope"}},
        {"name": "c", "configMap": {"name": "cfg", "items": [{"key": "missing", "path": "m"}]}},
        {"name": "ok", "emptyDir": {}},
    ])
    with pytest.raises(VolumeError) as err:
        await prepare(pod, pod_dir, store)
    assert err.value.reason == "FailedMount"
    assert err.value.messages == [
        'MountVolume.SetUp failed for volume "a" : configmap "nope" not found',
        'MountVolume.SetUp failed for volume "b" : secret "nope" not found',
        'MountVolume.SetUp failed for volume "c" : configmap references non-existent config key: missing',
    ]
    assert err.value.message == err.value.messages[0]
    assert (pod_dir / "volumes" / "empty-dir" / "ok").is_dir()  # the others were still set up


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/passwd", "invalid path: must be relative path: /etc/passwd"),
        ("../escape", "invalid path: must not contain '..': ../escape"),
        ("a/../../b", "invalid path: must not contain '..': a/../../b"),
        ("..data", "invalid path: must not start with '..': ..data"),
        ("", 'invalid path: must not be empty: ""'),
        (".", "invalid path: must name a file: ."),
    ],
)
def test_payload_path_validation(path: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        validate_payload_path(path)
    assert str(err.value) == message


async def test_bad_item_path_touches_nothing(pod_dir: Path, store: Store, tmp_path: Path) -> None:
    pod = make_pod([{"name": "c", "configMap": {"name": "cfg", "items": [{"key": "color", "path": "../../x"}]}}])
    with pytest.raises(VolumeError) as err:
        await prepare(pod, pod_dir, store)
    assert err.value.message == ('MountVolume.SetUp failed for volume "c" : invalid path: must not contain \'..\': '
                                 "../../x")
    assert not (pod_dir / "volumes" / "configmap" / "c").exists()
    assert not (tmp_path / "x").exists()


async def test_bad_key_names_are_rejected(pod_dir: Path, store: Store) -> None:
    store.configmaps["evil"] = {"data": {"..data": "x"}}
    with pytest.raises(VolumeError) as err:
        await prepare(make_pod([{"name": "s", "configMap": {"name": "evil"}}]), pod_dir, store)
    assert err.value.message.endswith("invalid path: must not start with '..': ..data")
    with pytest.raises(VolumeError) as err:
        await prepare(make_pod([{"name": "s", "configMap": {"name": "cfg", "items": [
            {"key": "color", "path": "/abs"}]}}]), pod_dir, store)
    assert err.value.message.endswith("invalid path: must be relative path: /abs")


async def test_host_path_types(pod_dir: Path, store: Store, tmp_path: Path) -> None:
    d = tmp_path / "host"
    (d / "existing").mkdir(parents=True)
    (d / "file").write_text("x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock"))
    try:
        pod = make_pod([
            {"name": "v1", "hostPath": {"path": str(d / "new" / "dir"), "type": "DirectoryOrCreate"}},
            {"name": "v2", "hostPath": {"path": str(d / "existing"), "type": "Directory"}},
            {"name": "v3", "hostPath": {"path": str(d / "newfile"), "type": "FileOrCreate"}},
            {"name": "v4", "hostPath": {"path": str(d / "file"), "type": "File"}},
            {"name": "v5", "hostPath": {"path": str(d / "sock"), "type": "Socket"}},
            {"name": "v6", "hostPath": {"path": "/dev/null", "type": "CharDevice"}},
            {"name": "v7", "hostPath": {"path": str(d / "anything"), "type": ""}},
        ])
        vols = await prepare(pod, pod_dir, store)
    finally:
        sock.close()
    assert vols["v1"].host_path == str(d / "new" / "dir")
    assert (d / "new" / "dir").is_dir() and mode(d / "new" / "dir") == 0o755
    assert (d / "newfile").is_file() and mode(d / "newfile") == 0o644
    assert not (d / "anything").exists()
    assert not vols["v2"].read_only


@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ({"path": "/nonexistent-skiff-test", "type": "Directory"},
         "hostPath type check failed: /nonexistent-skiff-test is not a directory"),
        ({"path": "/etc", "type": "File"}, "hostPath type check failed: /etc is not a file"),
        ({"path": "/etc", "type": "Socket"}, "hostPath type check failed: /etc is not a socket file"),
        ({"path": "/etc", "type": "CharDevice"}, "hostPath type check failed: /etc is not a character device"),
        ({"path": "/dev/null", "type": "BlockDevice"},
         "hostPath type check failed: /dev/null is not a block device"),
        ({"path": "/etc", "type": "Bogus"}, "Bogus is an invalid volume type"),
        ({"path": "relative/path"}, 'hostPath path "relative/path" must be an absolute path'),
        ({"path": "/var/../etc"}, "hostPath path \"/var/../etc\" must not contain '..'"),
    ],
)
async def test_host_path_errors(pod_dir: Path, store: Store, source: Obj, detail: str) -> None:
    with pytest.raises(VolumeError) as err:
        await prepare(make_pod([{"name": "h", "hostPath": source}]), pod_dir, store)
    assert err.value.message == f'MountVolume.SetUp failed for volume "h" : {detail}'
    assert err.value.reason == "FailedMount"


async def test_downward_api_volume(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "info", "downwardAPI": {"items": [
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}},
    ]}}])
    vols = await prepare(pod, pod_dir, store)
    assert vols["info"].read_only
    assert tree(pod_dir / "volumes" / "downward-api" / "info") == {
        "app": "web", "labels": 'app="web"', "mem": "64", "name": "web"}


@needs_root
async def test_projected_volume(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "all", "projected": {"defaultMode": 0o600, "sources": [
        {"configMap": {"name": "cfg", "items": [{"key": "color", "path": "cfg/color"}]}},
        {"secret": {"name": "creds", "items": [{"key": "user", "path": "sec/user", "mode": 0o400}]}},
        {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}])
    vols = await prepare(pod, pod_dir, store)
    root = pod_dir / "volumes" / "projected" / "all"
    assert vols["all"].tmpfs and vols["all"].read_only
    assert tree(root) == {"cfg/color": "blue", "ns": "ns1", "sec/user": "admin"}
    assert mode(root / "cfg" / "color") == 0o600
    assert mode(root / "sec" / "user") == 0o400


async def test_projected_errors_are_aggregated(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "all", "projected": {"sources": [
        {"configMap": {"name": "nope"}}, {"secret": {"name": "nope2"}}]}}])
    with pytest.raises(VolumeError) as err:
        await prepare(pod, pod_dir, store)
    assert err.value.message == ('MountVolume.SetUp failed for volume "all" : '
                                 '[configmap "nope" not found, secret "nope2" not found]')


async def test_mounts_for(pod_dir: Path, store: Store) -> None:
    pod = make_pod([{"name": "data", "emptyDir": {}}, {"name": "config", "configMap": {"name": "cfg"}}])
    vols = await prepare(pod, pod_dir, store)
    data = pod_dir / "volumes" / "empty-dir" / "data"
    container = {"name": "app", "volumeMounts": [
        {"name": "data", "mountPath": "/data"},
        {"name": "data", "mountPath": "/logs", "subPath": "logs/app", "readOnly": True},
        {"name": "data", "mountPath": "/per-pod", "subPathExpr": "pods/$(POD_NAME)"},
        {"name": "config", "mountPath": "/etc/config"},
        {"name": "config", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
        {"name": "data", "mountPath": "/shared", "mountPropagation": "HostToContainer"},
    ]}
    mounts = mounts_for(container, vols, env={"POD_NAME": "web"})
    cfg_root = pod_dir / "volumes" / "configmap" / "config"
    real_conf = os.path.realpath(cfg_root / "app.conf")
    assert [(m.source, m.target, m.read_only, m.sub_path, m.propagation) for m in mounts] == [
        (str(data), "/data", False, "", ""),
        (os.path.realpath(data / "logs" / "app"), "/logs", True, "logs/app", ""),
        (os.path.realpath(data / "pods" / "web"), "/per-pod", False, "pods/web", ""),
        (str(cfg_root), "/etc/config", True, "", ""),
        (real_conf, "/etc/app.conf", True, "app.conf", ""),
        (str(data), "/shared", False, "", "rslave"),
    ]
    assert (data / "logs" / "app").is_dir()
    assert real_conf.startswith(str(cfg_root) + "/..")


async def test_mounts_for_errors(pod_dir: Path, store: Store, tmp_path: Path) -> None:
    vols = await prepare(make_pod([{"name": "data", "emptyDir": {}}]), pod_dir, store)
    data = pod_dir / "volumes" / "empty-dir" / "data"
    os.symlink(str(tmp_path), data / "escape")
    cases = [
        ({"name": "nope", "mountPath": "/x"}, 'cannot find volume "nope" to mount into container "app"'),
        ({"name": "data", "mountPath": "/x", "subPath": "/abs"}, "error SubPath `/abs` must not be an absolute path"),
        ({"name": "data", "mountPath": "/x", "subPath": "a/../.."},
         "unable to provision SubPath `a/../..`: must not contain '..'"),
        ({"name": "data", "mountPath": "/x", "subPathExpr": "$(MISSING)"}, "missing value for MISSING"),
        ({"name": "data", "mountPath": "/x", "mountPropagation": "Bidirectional"},
         "Bidirectional mount propagation is available only to privileged containers"),
    ]
    for vm, message in cases:
        with pytest.raises(ContainerConfigError) as err:
            mounts_for({"name": "app", "volumeMounts": [vm]}, vols, env={})
        assert err.value.message == message
    with pytest.raises(ContainerConfigError) as err:
        mounts_for({"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "escape"}]}, vols)
    assert "not within volume path" in err.value.message


def test_write_atomically_directly(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert write_atomically(target, {"a": FileProjection(b"1", 0o644), "d/b": FileProjection(b"2", 0o600)})
    assert not write_atomically(target, {"a": FileProjection(b"1", 0o644), "d/b": FileProjection(b"2", 0o600)})
    assert write_atomically(target, {"a": FileProjection(b"1", 0o600), "d/b": FileProjection(b"2", 0o600)})
    assert write_atomically(target, {"c": FileProjection(b"3", 0o644)})
    assert tree(target) == {"c": "3"}
    assert len([n for n in os.listdir(target) if n.startswith("..") and n != "..data"]) == 1


def test_termination_log(tmp_path: Path) -> None:
    p = prepare_termination_log(tmp_path / "pod", "app", 2)
    assert p == tmp_path / "pod" / "containers" / "app" / "2"
    assert p.read_bytes() == b"" and mode(p) == 0o666
    p.write_text("old")
    assert prepare_termination_log(tmp_path / "pod", "app", 2).read_bytes() == b""


@needs_root
async def test_teardown_unmounts_and_removes(tmp_path: Path, store: Store) -> None:
    pod_dir = tmp_path / "pod"
    pod = make_pod([{"name": "mem", "emptyDir": {"medium": "Memory"}}, {"name": "s", "secret": {"secretName": "creds"}},
                    {"name": "d", "emptyDir": {}}])
    await prepare(pod, pod_dir, store)
    assert len(mounts_under(pod_dir)) == 2
    await teardown_volumes(pod_dir)
    assert mounts_under(pod_dir) == []
    assert not pod_dir.exists()
    await teardown_volumes(pod_dir)  # idempotent
