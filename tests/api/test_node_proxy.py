"""The API server's checks before it proxies pods/log and pods/exec to a node agent."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict

from control_plane.api.errors import ApiError
from control_plane.api.node_proxy import check_exec_status, check_log_status, choose_container, log_params


def pod(containers: list[str], init: list[str] | None = None, statuses: list[dict[str, Any]] | None = None
        ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": c} for c in containers]}
    if init:
        spec["initContainers"] = [{"name": c} for c in init]
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec,
            "status": {"containerStatuses": statuses} if statuses is not None else {}}


def message(call: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(ApiError) as err:
        call(*args)
    return err.value.code, err.value.message


def test_choose_container() -> None:
    assert choose_container(pod(["a"]), "") == "a"
    assert choose_container(pod(["a", "b"], ["i"]), "i") == "i"
    assert message(choose_container, pod(["a", "b"]), "") == (
        400, "a container name must be specified for pod p, choose one of: [a b]")
    assert message(choose_container, pod(["a", "b"], ["i", "j"]), "") == (
        400, "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i j]")
    assert message(choose_container, pod(["a"]), "x") == (400, "container x is not valid for pod p")


def status(name: str, state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "state": state, "lastState": last or {}}


def test_log_status_follows_the_kubelet() -> None:
    running = pod(["a"], statuses=[status("a", {"running": {}})])
    check_log_status(running, "a", False)
    assert message(check_log_status, running, "a", True) == (
        400, 'previous terminated container "a" in pod "p" not found')
    crashed = pod(["a"], statuses=[status("a", {"waiting": {"reason": "CrashLoopBackOff"}},
                                          {"terminated": {"exitCode": 1}})])
    check_log_status(crashed, "a", False)  # the last instance's log
    check_log_status(crashed, "a", True)
    assert message(check_log_status, pod(["a"]), "a", False) == (
        400, 'container "a" in pod "p" is waiting to start: ContainerCreating')
    pulling = pod(["a"], statuses=[status("a", {"waiting": {"reason": "ImagePullBackOff"}})])
    assert message(check_log_status, pulling, "a", False) == (
        400, 'container "a" in pod "p" is waiting to start: trying and failing to pull image')
    other = pod(["a", "b"], statuses=[status("a", {"running": {}})])
    assert message(check_log_status, other, "b", False) == (400, 'container "b" in pod "p" is not available')


def test_exec_status() -> None:
    check_exec_status(pod(["a"], statuses=[status("a", {"running": {}})]), "a")
    check_exec_status(pod(["a"], statuses=[status("a", {"terminated": {}})]), "a")  # the agent decides
    assert message(check_exec_status, pod(["a"]), "a") == (
        400, 'container "a" in pod "p" is waiting to start: ContainerCreating')


def test_log_options() -> None:
    q = MultiDict(follow="true", tailLines="10", timestamps="false", sinceSeconds="5")
    assert log_params("p", q) == {"follow": "true", "tailLines": "10", "sinceSeconds": "5"}
    assert message(log_params, "p", MultiDict(tailLines="x"))[0] == 400
    code, text = message(log_params, "p", MultiDict(limitBytes="0", sinceSeconds="1",
                                                      sinceTime="2024-01-01T00:00:00Z"))
    assert code == 422
    assert text == ('PodLogOptions "p" is invalid: [limitBytes: Invalid value: 0: must be greater than 0, '
                    "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified]")
