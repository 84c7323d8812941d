"""The rendered create specs on the real dockerd: a pause container and an app container
joining it, with limits, user, env, read-only root and volume mounts applied.

The image is a throwaway one imported from a tar holding Debian's /bin/busybox, under a
unique tag, removed afterwards with the containers and the pod dir.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_agent.runtime.container_spec import container_create_kwargs, pause_create_spec, to_docker_kwargs
from node_agent.volumes import mounts_for, prepare_termination_log, prepare_volumes, teardown_volumes

docker = pytest.importorskip("docker")

BUSYBOX = Path("/bin/busybox")
Obj = dict[str, Any]


def docker_client() -> Any:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # noqa: BLE001 — any failure means "no usable dockerd here"
        pytest.skip(f"dockerd not reachable: {exc}")
    return client


def busybox_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in ("sh", "sleep", "cat", "id", "touch"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


@pytest.fixture
def image(request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed")
    client = docker_client()
    tag = f"skiff-test/busybox:{uuid.uuid4().hex[:10]}"
    repo, _, version = tag.partition(":")
    client.api.import_image_from_data(busybox_tar(), repository=repo, tag=version,
                                      changes=['CMD ["/bin/sleep", "3600"]'])
    try:
        yield client, tag
    finally:
        client.api.remove_image(tag, force=True)
        client.close()


async def _no_object(namespace: str, name: str) -> Obj | None:
    return None


async def test_pause_and_app_container_on_docker(image: tuple[Any, str], tmp_path: Path) -> None:
    client, tag = image
    api = client.api
    suffix = uuid.uuid4().hex[:8]
    container: Obj = {
        "name": "app",
        "image": tag,
        "command": ["/bin/sh", "-c"],
        "args": ["echo $(GREETING) > /data/out; exec sleep 3600"],
        "env": [{"name": "GREETING", "value": "hello"}],
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "readOnlyRootFilesystem": True,
                            "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"},
                         {"name": "config", "mountPath": "/config"}],
    }
    pod: Obj = {
        "metadata": {"name": f"spec-test-{suffix}", "namespace": "default", "uid": f"uid-{suffix}"},
        "spec": {"containers": [container], "securityContext": {"fsGroup": 2000},
                 "volumes": [{"name": "data", "emptyDir": {}},
                             {"name": "config", "configMap": {"name": "cfg"}}]},
    }

    async def get_configmap(namespace: str, name: str) -> Obj | None:
        return {"data": {"color": "blue"}} if name == "cfg" else None

    pod_dir = tmp_path / "pod"
    created: list[str] = []
    try:
        volumes = await prepare_volumes(pod, pod_dir, get_configmap=get_configmap, get_secret=_no_object)
        pause = pause_create_spec(pod, tag)
        pause_id = api.create_container(**to_docker_kwargs(api, pause))["Id"]
        created.append(pause_id)
        api.start(pause_id)

        env = {"GREETING": "hello"}
        spec = container_create_kwargs(
            pod, container, kind="app", pause_id=pause_id, restart_count=0, attempt=0,
            mounts=mounts_for(container, volumes, env=env), env=env, image_ref=tag,
            termination_log=str(prepare_termination_log(pod_dir, "app", 0)))
        app_id = api.create_container(**to_docker_kwargs(api, spec))["Id"]
        created.append(app_id)
        api.start(app_id)

        info = api.inspect_container(app_id)
        host = info["HostConfig"]
        assert info["Name"] == f"/k8s_app_{pod['metadata']['name']}_default_uid-{suffix}_0"
        assert host["Memory"] == 64 * 1024 * 1024
        assert (host["CpuPeriod"], host["CpuQuota"], host["CpuShares"]) == (100000, 50000, 256)
        assert host["ReadonlyRootfs"] is True
        assert host["NetworkMode"] == f"container:{pause_id}"
        assert host["IpcMode"] == f"container:{pause_id}"
        assert host["CapAdd"] == ["NET_ADMIN"] and host["CapDrop"] == ["MKNOD"]
        assert host["GroupAdd"] == ["2000"]
        assert info["Config"]["User"] == "1000:3000"
        assert "GREETING=hello" in info["Config"]["Env"]
        assert info["Config"]["Entrypoint"] == ["/bin/sh", "-c"]
        assert info["Config"]["Cmd"] == ["echo hello > /data/out; exec sleep 3600"]
        assert info["Config"]["Labels"]["io.kubernetes.container.name"] == "app"
        assert info["Config"]["Labels"]["io.skiff.managed"] == "true"
        mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in info["Mounts"]}
        assert mounts["/data"] == (str(pod_dir / "volumes" / "empty-dir" / "data"), True)
        assert mounts["/config"] == (str(pod_dir / "volumes" / "configmap" / "config"), False)
        assert mounts["/dev/termination-log"] == (str(pod_dir / "containers" / "app" / "0"), True)

        pause_info = api.inspect_container(pause_id)
        assert pause_info["HostConfig"]["NetworkMode"] == "none"
        assert pause_info["HostConfig"]["IpcMode"] == "shareable"
        assert pause_info["Config"]["Hostname"] == pod["metadata"]["name"]
        assert pause_info["Config"]["Labels"]["io.kubernetes.container.name"] == "POD"

        def run(*cmd: str) -> tuple[int, str]:
            exec_id = api.exec_create(app_id, list(cmd))["Id"]
            output = api.exec_start(exec_id).decode()
            return int(api.exec_inspect(exec_id)["ExitCode"]), output

        assert run("id", "-u") == (0, "1000\n")
        assert run("cat", "/config/color") == (0, "blue")
        code, _ = run("touch", "/rootfs-is-read-only")
        assert code != 0
        assert run("cat", "/data/out") == (0, "hello\n")
        assert (pod_dir / "volumes" / "empty-dir" / "data" / "out").read_text() == "hello\n"
        assert run("sh", "-c", "echo bye > /dev/termination-log")[0] == 0
        assert (pod_dir / "containers" / "app" / "0").read_text() == "bye\n"
        assert os.path.isdir(pod_dir)
    finally:
        for cid in reversed(created):
            api.remove_container(cid, force=True)
        await teardown_volumes(pod_dir)
