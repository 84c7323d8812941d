"""The pod spec → Docker create spec translation, on plain dicts."""

from __future__ import annotations

from typing import Any

import pytest

from node_agent.runtime.container_spec import (
    ContainerCreateSpec,
    Mount,
    container_create_kwargs,
    milli_cpu_to_quota,
    milli_cpu_to_shares,
    pause_create_spec,
    to_docker_kwargs,
)
from node_agent.runtime.env import ContainerConfigError

Obj = dict[str, Any]
PAUSE = "f" * 64


def make_pod(container: Obj | None = None, **spec: Any) -> Obj:
    return {
        "metadata": {"name": "web", "namespace": "ns1", "uid": "1234-abcd"},
        "spec": {"containers": [container or {"name": "app", "image": "skiff/app:1.0"}], **spec},
    }


def build(container: Obj, pod: Obj | None = None, **kw: Any) -> ContainerCreateSpec:
    args: dict[str, Any] = {"kind": "app", "pause_id": PAUSE, "restart_count": 0, "attempt": 0, "mounts": [],
                            "env": {}, "image_ref": "skiff/app:1.0"}
    args.update(kw)
    return container_create_kwargs(pod or make_pod(container), container, **args)


def test_name_labels_and_namespaces() -> None:
    c = {"name": "app", "image": "skiff/app:1.0"}
    spec = build(c, kind="init", restart_count=3, attempt=4)
    assert spec.name == "k8s_app_web_ns1_1234-abcd_4"
    assert spec.image == "skiff/app:1.0"
    assert {k: v for k, v in spec.labels.items() if k in {
        "io.kubernetes.pod.uid", "io.kubernetes.pod.namespace", "io.kubernetes.pod.name",
        "io.kubernetes.container.name", "io.kubernetes.container.restartCount", "io.skiff.container.type",
        "io.skiff.managed"}} == {
        "io.kubernetes.pod.uid": "1234-abcd", "io.kubernetes.pod.namespace": "ns1",
        "io.kubernetes.pod.name": "web", "io.kubernetes.container.name": "app",
        "io.kubernetes.container.restartCount": "3", "io.skiff.container.type": "init", "io.skiff.managed": "true",
    }
    assert spec.labels["io.kubernetes.container.terminationMessagePath"] == "/dev/termination-log"
    assert spec.labels["io.kubernetes.pod.terminationGracePeriod"] == "30"
    assert spec.host_config["network_mode"] == f"container:{PAUSE}"
    assert spec.host_config["ipc_mode"] == f"container:{PAUSE}"
    assert "pid_mode" not in spec.host_config
    assert spec.host_config["log_config"] == {"type": "json-file", "config": {"max-size": "10m", "max-file": "5"}}
    assert spec.hostname is None  # shared from the pause container


def test_hash_changes_with_spec() -> None:
    a = build({"name": "app", "image": "a:1"}).labels["io.kubernetes.container.hash"]
    b = build({"name": "app", "image": "a:2"}).labels["io.kubernetes.container.hash"]
    assert a != b
    assert a == build({"image": "a:1", "name": "app"}).labels["io.kubernetes.container.hash"]


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd"),
    [
        (None, None, None, None),  # image ENTRYPOINT + CMD
        (["/bin/sh", "-c"], None, ["/bin/sh", "-c"], None),  # command alone: image CMD ignored
        (None, ["echo", "hi"], None, ["echo", "hi"]),  # args alone: image ENTRYPOINT + args
        (["sh"], ["-c", "x"], ["sh"], ["-c", "x"]),
        ([], [], None, None),
    ],
)
def test_command_and_args(command: list[str] | None, args: list[str] | None, entrypoint: list[str] | None,
                          cmd: list[str] | None) -> None:
    c: Obj = {"name": "app", "image": "i"}
    if command is not None:
        c["command"] = command
    if args is not None:
        c["args"] = args
    spec = build(c)
    assert spec.entrypoint == entrypoint
    assert spec.command == cmd


def test_expansion_in_command_and_args() -> None:
    c = {"name": "app", "image": "i", "command": ["echo", "$(GREETING)"], "args": ["$(WHO)", "$$(WHO)", "$(NOPE)"]}
    spec = build(c, env={"GREETING": "hello", "WHO": "world"})
    assert spec.entrypoint == ["echo", "hello"]
    assert spec.command == ["world", "$(WHO)", "$(NOPE)"]
    assert spec.environment == ["GREETING=hello", "WHO=world"]


def test_working_dir_tty_stdin() -> None:
    spec = build({"name": "app", "image": "i", "workingDir": "/srv", "tty": True, "stdin": True, "stdinOnce": True})
    assert (spec.working_dir, spec.tty, spec.stdin_open, spec.stdin_once) == ("/srv", True, True, True)


@pytest.mark.parametrize(
    ("milli", "shares"),
    [(0, 2), (1, 2), (2, 2), (100, 102), (250, 256), (1000, 1024), (1500, 1536), (10**9, 262144)],
)
def test_milli_cpu_to_shares(milli: int, shares: int) -> None:
    assert milli_cpu_to_shares(milli) == shares


@pytest.mark.parametrize(("milli", "quota"), [(0, 0), (1, 1000), (10, 1000), (250, 25000), (1500, 150000)])
def test_milli_cpu_to_quota(milli: int, quota: int) -> None:
    assert milli_cpu_to_quota(milli) == quota


def test_resources() -> None:
    spec = build({"name": "app", "image": "i", "resources": {
        "limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}}})
    h = spec.host_config
    assert (h["cpu_shares"], h["cpu_period"], h["cpu_quota"]) == (256, 100000, 50000)
    assert h["mem_limit"] == 64 * 1024 * 1024
    assert h["memswap_limit"] == 64 * 1024 * 1024


def test_resources_defaults() -> None:
    h = build({"name": "app", "image": "i"}).host_config
    assert h["cpu_shares"] == 2
    assert "cpu_quota" not in h and "cpu_period" not in h and "mem_limit" not in h
    # request defaults to the limit
    h = build({"name": "app", "image": "i", "resources": {"limits": {"cpu": "2"}}}).host_config
    assert (h["cpu_shares"], h["cpu_quota"]) == (2048, 200000)


def test_security_context_container_over_pod() -> None:
    c = {"name": "app", "image": "i", "securityContext": {
        "runAsUser": 1000, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["NET_ADMIN", "CAP_SYS_TIME"], "drop": ["ALL"]}}}
    pod = make_pod(c, securityContext={"runAsUser": 5, "runAsGroup": 3000, "fsGroup": 2000,
                                       "supplementalGroups": [4000, 2000]})
    spec = build(c, pod)
    assert spec.user == "1000:3000"
    h = spec.host_config
    assert h["read_only"] is True
    assert h["cap_add"] == ["NET_ADMIN", "SYS_TIME"]
    assert h["cap_drop"] == ["ALL"]
    assert h["group_add"] == ["2000", "4000"]
    assert h["security_opt"] == ["no-new-privileges", "seccomp=unconfined"]
    assert "privileged" not in h


def test_privileged_and_runtime_default_seccomp() -> None:
    h = build({"name": "app", "image": "i", "securityContext": {"privileged": True}}).host_config
    assert h["privileged"] is True and "security_opt" not in h
    h = build({"name": "app", "image": "i",
               "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}).host_config
    assert "security_opt" not in h


def test_user_only_and_group_only() -> None:
    assert build({"name": "a", "image": "i", "securityContext": {"runAsUser": 0}}).user == "0"
    assert build({"name": "a", "image": "i", "securityContext": {"runAsGroup": 7}}, image_user="nobody").user \
        == "nobody:7"
    assert build({"name": "a", "image": "i", "securityContext": {"runAsGroup": 7}}).user == "0:7"
    assert build({"name": "a", "image": "i"}).user is None


def test_run_as_non_root() -> None:
    ok = {"name": "a", "image": "i", "securityContext": {"runAsNonRoot": True, "runAsUser": 1000}}
    assert build(ok).user == "1000"
    assert build({"name": "a", "image": "i", "securityContext": {"runAsNonRoot": True}}, image_user="1000").user \
        is None
    with pytest.raises(ContainerConfigError) as err:
        build({"name": "a", "image": "i", "securityContext": {"runAsNonRoot": True, "runAsUser": 0}})
    assert err.value.message == "container's runAsUser breaks non-root policy (pod: \"web_ns1(1234-abcd)\", " \
                                "container: a)"
    with pytest.raises(ContainerConfigError) as err:
        build({"name": "a", "image": "i", "securityContext": {"runAsNonRoot": True}})
    assert "image will run as root" in err.value.message
    with pytest.raises(ContainerConfigError) as err:
        build({"name": "a", "image": "i", "securityContext": {"runAsNonRoot": True}}, image_user="www")
    assert "image has non-numeric user (www)" in err.value.message


def test_mounts_and_termination_log() -> None:
    mounts = [
        Mount(source="/var/lib/skiff/pods/u/volumes/empty-dir/data", target="/data"),
        Mount(source="/etc/config", target="/config", read_only=True, propagation="rslave"),
        Mount(source="", target="/scratch", tmpfs=True, tmpfs_size=1024 * 1024),
    ]
    spec = build({"name": "app", "image": "i", "terminationMessagePath": "/tmp/term"}, mounts=mounts,
                 termination_log="/var/lib/skiff/pods/u/containers/app/0")
    h = spec.host_config
    assert h["binds"] == ["/var/lib/skiff/pods/u/volumes/empty-dir/data:/data:rw", "/etc/config:/config:ro,rslave",
                          "/var/lib/skiff/pods/u/containers/app/0:/tmp/term:rw"]
    assert h["tmpfs"] == {"/scratch": "rw,size=1048576"}
    assert spec.labels["io.kubernetes.container.terminationMessagePath"] == "/tmp/term"


def test_host_namespaces() -> None:
    c = {"name": "app", "image": "i"}
    h = build(c, make_pod(c, shareProcessNamespace=True)).host_config
    assert h["pid_mode"] == f"container:{PAUSE}"
    h = build(c, make_pod(c, hostPID=True, hostIPC=True)).host_config
    assert (h["pid_mode"], h["ipc_mode"]) == ("host", "host")


def test_pause_spec() -> None:
    pod = make_pod(securityContext={"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
                   terminationGracePeriodSeconds=5)
    spec = pause_create_spec(pod, "skiff/pause:1.0", attempt=1)
    assert spec.name == "k8s_POD_web_ns1_1234-abcd_1"
    assert spec.image == "skiff/pause:1.0"
    assert spec.hostname == "web"
    assert spec.labels["io.kubernetes.container.name"] == "POD"
    assert spec.labels["io.skiff.container.type"] == "pause"
    assert spec.labels["io.kubernetes.pod.terminationGracePeriod"] == "5"
    h = spec.host_config
    assert h["network_mode"] == "none"
    assert h["ipc_mode"] == "shareable"
    assert h["shm_size"] == 64 * 1024 * 1024
    assert h["sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "0"}
    assert spec.entrypoint is None and spec.command is None
    assert pause_create_spec(make_pod(hostname="custom"), "p").hostname == "custom"
    assert pause_create_spec(make_pod(hostNetwork=True), "p").host_config["network_mode"] == "host"
    assert pause_create_spec(make_pod(hostNetwork=True), "p").hostname is None


class FakeApi:
    def create_host_config(self, **kwargs: Any) -> Obj:
        return {"HostConfig": kwargs}


def test_to_docker_kwargs() -> None:
    spec = build({"name": "app", "image": "i", "command": ["sh"], "args": ["-c", "true"], "workingDir": "/w",
                  "securityContext": {"runAsUser": 1}}, env={"A": "1"})
    kwargs = to_docker_kwargs(FakeApi(), spec)
    assert kwargs["image"] == "skiff/app:1.0"
    assert kwargs["name"] == "k8s_app_web_ns1_1234-abcd_0"
    assert kwargs["entrypoint"] == ["sh"]
    assert kwargs["command"] == ["-c", "true"]
    assert kwargs["environment"] == ["A=1"]
    assert kwargs["working_dir"] == "/w"
    assert kwargs["user"] == "1"
    assert kwargs["detach"] is True
    assert kwargs["host_config"] == {"HostConfig": spec.host_config}
    assert "hostname" not in kwargs


def test_invalid_quantity_is_a_config_error() -> None:
    with pytest.raises(ContainerConfigError):
        build({"name": "app", "image": "i", "resources": {"limits": {"memory": "lots"}}})
