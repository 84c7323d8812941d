from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from fakeapi import ExecCall, FakeApi, pod, read_stdin_until_eof

from skiff.cli.apply import LAST_APPLIED, patch_changes, three_way_patch, with_last_applied
from skiff.cli.main import build_parser, run
from skiff.cli.printers import human_duration
from skiff.cli.tabwriter import format_tabbed


async def skiff(api: FakeApi, *argv: str) -> int:
    return await run(["--server", api.url, *argv])


def deployment(name: str = "web", replicas: int = 2, labels: dict[str, str] | None = None,
               containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels if labels is not None else {"app": name, "tier": "front"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": containers or [{"name": "web", "image": "nginx:1"}]}}}}


# ---- get ----------------------------------------------------------------------------


async def test_get_renders_server_table(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(pod("web-0", app="web"))
    fake_api.add(pod("db-long-name-0"))
    assert await skiff(fake_api, "get", "pods") == 0
    assert capsys.readouterr().out == (
        "NAME             STATUS    AGE\n"
        "db-long-name-0   Running   5m\n"
        "web-0            Running   5m\n")
    accept = fake_api.requests[-1].headers["Accept"]
    assert accept == "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    assert fake_api.requests[-1].query == {"limit": "500"}


async def test_get_wide_and_all_namespaces(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(pod("web-0", app="web"))
    fake_api.add(pod("dns", "kube-system"))
    assert await skiff(fake_api, "get", "po", "-A", "-o", "wide") == 0
    assert capsys.readouterr().out == (
        "NAMESPACE     NAME    STATUS    AGE   APP\n"
        "default       web-0   Running   5m    web\n"
        "kube-system   dns     Running   5m    <none>\n")
    assert fake_api.requests[-1].path == "/api/v1/pods"


async def test_get_plain_list_falls_back_to_name_and_age(fake_api: FakeApi,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.serve_tables = False
    fake_api.add(pod("web-0"))
    assert await skiff(fake_api, "get", "pods") == 0
    assert capsys.readouterr().out == "NAME    AGE\nweb-0   30m\n"


async def test_get_by_name_and_not_found(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(pod("web-0"))
    assert await skiff(fake_api, "get", "pod/web-0", "pod/missing") == 1
    out, err = capsys.readouterr()
    assert out == "NAME    STATUS    AGE\nweb-0   Running   5m\n"
    assert err == 'Error from server (NotFound): pods "missing" not found\n'


async def test_get_nothing_found(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert await skiff(fake_api, "get", "pods", "-n", "empty") == 0
    assert capsys.readouterr().err == "No resources found in empty namespace.\n"


async def test_get_output_formats(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(pod("a"))
    fake_api.add({**deployment("web"), "metadata": {**deployment("web")["metadata"], "namespace": "default"}})
    assert await skiff(fake_api, "get", "pods,deploy", "-o", "name") == 0
    assert capsys.readouterr().out == "pod/a\ndeployment.apps/web\n"
    assert await skiff(fake_api, "get", "pod", "a", "-o", "yaml") == 0
    single = yaml.safe_load(capsys.readouterr().out)
    assert single["kind"] == "Pod" and single["metadata"]["name"] == "a"
    assert await skiff(fake_api, "get", "pods", "-o", "json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "List" and [i["kind"] for i in listed["items"]] == ["Pod"]
    assert await skiff(fake_api, "get", "pods", "-o", "custom") == 1
    assert "unable to match a printer" in capsys.readouterr().err


async def test_get_several_types_prefixes_names(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(pod("a"))
    fake_api.add({**deployment("web"), "metadata": {"name": "web", "namespace": "default"}})
    assert await skiff(fake_api, "get", "all") == 0
    assert capsys.readouterr().out == (
        "NAME    STATUS    AGE\npod/a   Running   5m\n\n"
        "NAME                  STATUS   AGE\ndeployment.apps/web   <none>   5m\n")


async def test_get_unknown_type(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert await skiff(fake_api, "get", "flurbs") == 1
    assert capsys.readouterr().err == 'error: the server doesn\'t have a resource type "flurbs"\n'


async def test_get_watch_prints_rows_as_events_arrive(fake_api: FakeApi,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(pod("web-0"))
    task = asyncio.create_task(skiff(fake_api, "get", "pods", "-w"))
    await fake_api.wait_for_watchers()
    fake_api.add(pod("web-1"))
    fake_api.add(pod("a-much-longer-pod-name"))
    await asyncio.sleep(0.2)
    fake_api.close_watches()
    assert await asyncio.wait_for(task, 5) == 0
    assert capsys.readouterr().out == (
        "NAME    STATUS    AGE\n"
        "web-0   Running   5m\n"
        "web-1   Running   5m\n"
        "a-much-longer-pod-name   Running   5m\n")
    watch = fake_api.requests[-1]
    assert watch.query["watch"] == "true" and watch.query["resourceVersion"] == "101"
    assert "as=Table" in watch.headers["Accept"]


# ---- apply / create / delete ----------------------------------------------------------


def write_manifests(tmp_path: Path, *docs: dict[str, Any]) -> str:
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


async def test_apply_create_unchanged_configured(fake_api: FakeApi, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write_manifests(tmp_path, deployment())
    assert await skiff(fake_api, "apply", "-f", path) == 0
    assert capsys.readouterr().out == "deployment.apps/web created\n"
    live = fake_api.objects[("deployments", "default", "web")]
    recorded = json.loads(live["metadata"]["annotations"][LAST_APPLIED])
    assert recorded["metadata"] == {"labels": {"app": "web", "tier": "front"}, "name": "web", "namespace": "default"}
    assert live["metadata"]["annotations"][LAST_APPLIED].endswith("}\n")

    assert await skiff(fake_api, "apply", "-f", path) == 0
    assert capsys.readouterr().out == "deployment.apps/web unchanged\n"

    path = write_manifests(tmp_path, deployment(replicas=3, labels={"app": "web"}))
    assert await skiff(fake_api, "apply", "-f", path) == 0
    assert capsys.readouterr().out == "deployment.apps/web configured\n"
    patch = fake_api.requests[-1]
    assert patch.method == "PATCH"
    assert patch.headers["Content-Type"] == "application/strategic-merge-patch+json"
    body = patch.json()
    assert body["metadata"]["labels"] == {"app": "web", "tier": None}
    assert body["spec"]["replicas"] == 3
    live = fake_api.objects[("deployments", "default", "web")]
    assert live["metadata"]["labels"] == {"app": "web"} and live["spec"]["replicas"] == 3


async def test_apply_multi_document_and_list(fake_api: FakeApi, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    cm_list = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "one", "namespace": "team"}, "data": {}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two", "namespace": "team"}, "data": {}}]}
    path = write_manifests(tmp_path, ns, cm_list)
    assert await skiff(fake_api, "apply", "-f", path) == 0
    assert capsys.readouterr().out == "namespace/team created\nconfigmap/one created\nconfigmap/two created\n"
    assert await skiff(fake_api, "apply", "-f", path, "-n", "other") == 1
    assert "does not match the namespace \"other\"" in capsys.readouterr().err


async def test_apply_from_stdin_json(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(pod("solo"))))
    assert await skiff(fake_api, "apply", "-f", "-") == 0
    assert capsys.readouterr().out == "pod/solo created\n"


def test_three_way_patch_removes_fields_and_list_elements() -> None:
    original = deployment(containers=[{"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                                      {"name": "sidecar", "image": "busybox"}])
    modified = deployment(containers=[{"name": "web", "image": "nginx:2"}], labels={"app": "web"})
    patch = three_way_patch(original, modified)
    assert patch["metadata"]["labels"] == {"app": "web", "tier": None}
    assert patch["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "nginx:2", "env": None},
        {"name": "sidecar", "$patch": "delete"}]
    # The live object has server defaults: they neither count as changes nor get removed.
    live = with_last_applied(modified)
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    live["status"] = {"replicas": 2}
    assert not patch_changes(three_way_patch(modified, with_last_applied(modified)), live)
    assert patch_changes(three_way_patch(modified, with_last_applied(deployment(replicas=5))), live)


async def test_create_and_create_namespace(fake_api: FakeApi, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = write_manifests(tmp_path, pod("a"), pod("b"))
    assert await skiff(fake_api, "create", "namespace", "team") == 0
    assert await skiff(fake_api, "create", "-f", path) == 0
    assert capsys.readouterr().out == "namespace/team created\npod/a created\npod/b created\n"
    assert await skiff(fake_api, "create", "-f", path) == 1
    err = capsys.readouterr().err
    assert err == (f'Error from server (AlreadyExists): error when creating "{path}": pods "a" already exists\n'
                   f'Error from server (AlreadyExists): error when creating "{path}": pods "b" already exists\n')


async def test_delete_by_name_file_and_missing(fake_api: FakeApi, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add(pod("a"))
    fake_api.add(pod("b"))
    assert await skiff(fake_api, "delete", "pod", "a") == 0
    assert capsys.readouterr().out == 'pod "a" deleted\n'
    delete = next(r for r in fake_api.requests if r.method == "DELETE")
    assert delete.json()["propagationPolicy"] == "Background"
    assert await skiff(fake_api, "delete", "pod", "a") == 1
    assert capsys.readouterr().err == 'Error from server (NotFound): pods "a" not found\n'
    assert await skiff(fake_api, "delete", "pod", "a", "--ignore-not-found", "--wait=false") == 0
    path = write_manifests(tmp_path, pod("b"))
    assert await skiff(fake_api, "delete", "-f", path) == 0
    assert capsys.readouterr().out == 'pod "b" deleted\n'
    assert fake_api.objects == {}


# ---- describe / logs / exec ------------------------------------------------------------


async def test_describe_pod_with_events(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    p = pod("web-0", app="web")
    p["spec"]["nodeName"] = "node-1"
    p["spec"]["containers"][0]["env"] = [{"name": "MODE", "value": "fast"}]
    p["status"].update({"hostIP": "10.0.0.1", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [{"name": "main", "containerID": "docker://abc", "restartCount": 4,
                                               "imageID": "docker://sha256:1", "ready": False,
                                               "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                               "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}}]})
    live = fake_api.add(p)
    fake_api.add({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web-0.1", "namespace": "default"},
                  "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default",
                                     "uid": live["metadata"]["uid"]},
                  "type": "Normal", "reason": "Scheduled", "message": "Successfully assigned default/web-0 to node-1",
                  "source": {"component": "default-scheduler"}, "count": 1})
    assert await skiff(fake_api, "describe", "pod", "web-0") == 0
    assert capsys.readouterr().out == (
        "Name:             web-0\n"
        "Namespace:        default\n"
        "Priority:         0\n"
        "Service Account:  default\n"
        "Node:             node-1/10.0.0.1\n"
        "Labels:           app=web\n"
        "Annotations:      <none>\n"
        "Status:           Running\n"
        "IP:               10.244.0.5\n"
        "IPs:\n"
        "  IP:  10.244.0.5\n"
        "Containers:\n"
        "  main:\n"
        "    Container ID:   docker://abc\n"
        "    Image:          nginx\n"
        "    Image ID:       docker://sha256:1\n"
        "    Port:           <none>\n"
        "    Host Port:      <none>\n"
        "    State:          Waiting\n"
        "      Reason:       CrashLoopBackOff\n"
        "    Last State:     Terminated\n"
        "      Reason:       Error\n"
        "      Exit Code:    2\n"
        "      Started:      <unset>\n"
        "      Finished:     <unset>\n"
        "    Ready:          False\n"
        "    Restart Count:  4\n"
        "    Environment:\n"
        "      MODE:  fast\n"
        "    Mounts:  <none>\n"
        "Conditions:\n"
        "  Type           Status\n"
        "  Ready          True \n"
        "Volumes:         <none>\n"
        "Node-Selectors:  <none>\n"
        "Tolerations:     <none>\n"
        "Events:\n"
        "  Type    Reason     Age   From               Message\n"
        "  ----    ------     ----  ----               -------\n"
        "  Normal  Scheduled  30m   default-scheduler  Successfully assigned default/web-0 to node-1\n")
    events_query = next(r.query for r in fake_api.requests if r.path == "/api/v1/namespaces/default/events")
    assert events_query["fieldSelector"] == (
        f"involvedObject.name=web-0,involvedObject.namespace=default,involvedObject.uid={live['metadata']['uid']}")


async def test_describe_other_kinds(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.add({**deployment(), "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                  "status": {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}})
    fake_api.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                  "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "type": "ClusterIP",
                           "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
    fake_api.add({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
                  "status": {"capacity": {"cpu": "4"}, "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}})
    fake_api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}, "status": {"phase": "Active"}})
    fake_api.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"},
                  "data": {"key": "value"}})
    assert await skiff(fake_api, "describe", "deploy", "web") == 0
    out = capsys.readouterr().out
    assert "Replicas:               2 desired | 2 updated | 2 total | 2 available | 0 unavailable\n" in out
    assert "Pod Template:\n  Labels:  app=web\n  Containers:\n   web:\n    Image:" in out
    assert await skiff(fake_api, "describe", "svc/web") == 0
    out = capsys.readouterr().out
    assert "Selector:          app=web\n" in out and "TargetPort:        8080/TCP\n" in out
    assert await skiff(fake_api, "describe", "node", "node-1") == 0
    assert "Addresses:\n  InternalIP:  10.0.0.1\n" in capsys.readouterr().out
    assert await skiff(fake_api, "describe", "ns", "team") == 0
    assert "Status:       Active\n\nNo resource quota.\n\nNo LimitRange resource.\n" in capsys.readouterr().out
    assert await skiff(fake_api, "describe", "configmap", "cfg") == 0
    out = capsys.readouterr().out
    assert "Kind:         ConfigMap\n" in out and "Data:\n  Key:   value\nEvents:  <none>\n" in out
    assert await skiff(fake_api, "describe", "pod", "nope") == 1
    assert capsys.readouterr().err == 'Error from server (NotFound): pods "nope" not found\n'


async def test_logs(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.logs["web-0"] = b"line 1\nline 2\nline 3\n"
    assert await skiff(fake_api, "logs", "web-0", "--tail", "2", "-c", "main", "-f", "--timestamps") == 0
    assert capsys.readouterr().out == "line 2\nline 3\n"
    assert fake_api.requests[-1].query == {"container": "main", "follow": "true", "tailLines": "2",
                                           "timestamps": "true"}
    assert await skiff(fake_api, "logs", "pod/nope") == 1
    assert capsys.readouterr().err == 'Error from server (NotFound): pods "nope" not found\n'


async def test_exec_relays_output_stdin_and_exit_code(fake_api: FakeApi, monkeypatch: pytest.MonkeyPatch,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    async def script(ws: web.WebSocketResponse, call: ExecCall) -> None:
        await read_stdin_until_eof(ws, call)
        await ws.send_bytes(b"\x01got " + call.stdin)
        await ws.send_bytes(b"\x02warning\n")
        await ws.send_bytes(b"\x03" + json.dumps({
            "status": "Failure", "reason": "NonZeroExitCode", "message": "command terminated with exit code 7",
            "details": {"causes": [{"reason": "ExitCode", "message": "7"}]}}).encode())

    fake_api.exec_script = script
    r, w = os.pipe()
    os.write(w, b"input data")
    os.close(w)
    monkeypatch.setattr(sys, "stdin", os.fdopen(r, "r"))
    code = await skiff(fake_api, "exec", "web-0", "-i", "-c", "main", "--", "cat", "-n")
    out, err = capfd.readouterr()
    assert code == 7
    assert out == "got input data"
    assert err == "warning\ncommand terminated with exit code 7\n"
    call = fake_api.exec_calls[0]
    assert call.protocol == "v5.channel.k8s.io"
    assert call.query == [("command", "cat"), ("command", "-n"), ("container", "main"), ("stdin", "true"),
                          ("stdout", "true"), ("stderr", "true")]


async def test_exec_success(fake_api: FakeApi, capfd: pytest.CaptureFixture[str]) -> None:
    async def script(ws: web.WebSocketResponse, call: ExecCall) -> None:
        await ws.send_bytes(b"\x01hello\n")
        await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Success"}).encode())

    fake_api.exec_script = script
    assert await skiff(fake_api, "exec", "web-0", "--", "echo", "hello") == 0
    assert capfd.readouterr().out == "hello\n"


async def test_exec_refused_shows_the_server_status(fake_api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    fake_api.exec_refusal = (503, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503,
                                   "reason": "ServiceUnavailable", "message": "node agent unreachable"})
    assert await skiff(fake_api, "exec", "web-0", "--", "ls") == 1
    assert capsys.readouterr().err == "Error from server (ServiceUnavailable): node agent unreachable\n"


# ---- plumbing ---------------------------------------------------------------------------


async def test_connection_refused_message(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert await run(["--server", f"http://127.0.0.1:{port}", "get", "pods"]) == 1
    assert capsys.readouterr().err == (f"The connection to the server 127.0.0.1:{port} was refused - did you specify "
                                       "the right host or port?\n")


async def test_kubeconfig_flag_and_namespace_from_context(fake_api: FakeApi, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": fake_api.url}}],
              "users": [{"name": "u", "user": {"token": "tok"}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "team"}}]}
    (tmp_path / "kc").write_text(yaml.safe_dump(config))
    fake_api.add(pod("a", "team"))
    assert await run(["get", "pods", "--kubeconfig", str(tmp_path / "kc")]) == 0
    assert capsys.readouterr().out == "NAME   STATUS    AGE\na      Running   5m\n"
    assert fake_api.requests[-1].path == "/api/v1/namespaces/team/pods"
    assert fake_api.requests[-1].headers["Authorization"] == "Bearer tok"


def test_parser_registers_external_programs_when_present() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "subcommand")
    names = set(sub.choices)  # type: ignore[arg-type]
    assert {"get", "describe", "apply", "create", "delete", "logs", "exec"} <= names
    try:
        import control_plane.main  # noqa: F401
    except ImportError:
        return
    assert "server" in names


def test_tabwriter_and_durations() -> None:
    assert format_tabbed("A\tBB\tC\nlonger\tx\ty", 3) == "A        BB   C\nlonger   x    y"
    assert format_tabbed("Name:\tx\nLabels:\ta=b\n\tc=d\nContainers:\n  web:\n    Image:\tnginx", 2) == (
        "Name:    x\nLabels:  a=b\n         c=d\nContainers:\n  web:\n    Image:  nginx")
    assert [human_duration(s) for s in (5, 119, 150, 600, 3 * 3600 + 60 * 5, 9 * 3600, 50 * 3600, 400 * 86400)] == [
        "5s", "119s", "2m30s", "10m", "3h5m", "9h", "2d2h", "400d"]
