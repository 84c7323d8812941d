"""The official ``kubernetes`` Python client against the test server, configured from
the admin kubeconfig the server wrote: create, list, watch, patch, delete."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

if TYPE_CHECKING:
    from tests.conftest import ApiServer

WATCH_TIMEOUT = 15  # seconds: the server ends the watch then at the latest
REQUEST_TIMEOUT = 30  # seconds: the client gives up even if the server does not


@pytest.fixture
def k8s(api_server: ApiServer) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(api_server.kubeconfig))
    try:
        yield api
    finally:
        api.close()


def configmap(name: str, **data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"app": "demo"}), data=data)


def status_of(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as e:
        return int(e.status)
    return 200


def test_create_list_watch_patch_delete(k8s: client.ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(k8s)  # Any: the models type every field Optional

    created = core.create_namespaced_config_map(namespace, configmap("a", k="1"))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    assert created.metadata.namespace == namespace
    core.create_namespaced_config_map(namespace, configmap("b", k="1"))

    listed = core.list_namespaced_config_map(namespace, label_selector="app=demo")
    assert sorted(cm.metadata.name for cm in listed.items) == ["a", "b"]
    assert listed.metadata.resource_version

    # A watch with no resourceVersion first sends what exists as ADDED, then follows.
    events: list[tuple[str, str]] = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, namespace=namespace,
                          timeout_seconds=WATCH_TIMEOUT, _request_timeout=REQUEST_TIMEOUT):
        obj = event["object"]
        events.append((event["type"], obj.metadata.name))
        if events[:2] and sorted(events[:2]) == [("ADDED", "a"), ("ADDED", "b")] and len(events) == 2:
            core.patch_namespaced_config_map("a", namespace, {"data": {"k": "2"}})
        if event["type"] == "MODIFIED" and obj.metadata.name == "a":
            assert obj.data == {"k": "2"}
            w.stop()
    assert sorted(events[:2]) == [("ADDED", "a"), ("ADDED", "b")], events
    assert events[2:] == [("MODIFIED", "a")], events

    # A dict body is sent as a strategic merge patch: keys not named are kept.
    patched = core.patch_namespaced_config_map("b", namespace, {"data": {"extra": "x"}})
    assert patched.data == {"k": "1", "extra": "x"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)

    core.delete_namespaced_config_map("a", namespace)
    assert status_of(lambda: core.read_namespaced_config_map("a", namespace)) == 404
    assert [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items if
            cm.metadata.name in ("a", "b")] == ["b"]


def test_list_pages_with_limit_and_continue(k8s: client.ApiClient, namespace: str) -> None:
    core: Any = client.CoreV1Api(k8s)  # Any: the models type every field Optional
    for i in range(5):
        core.create_namespaced_config_map(namespace, configmap(f"cm-{i}"))
    names: list[str] = []
    token = None
    for _ in range(10):
        page = core.list_namespaced_config_map(namespace, label_selector="app=demo", limit=2, _continue=token)
        assert len(page.items) <= 2
        names += [cm.metadata.name for cm in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert sorted(names) == [f"cm-{i}" for i in range(5)]


def test_deployment_patch_merges_containers_by_name(k8s: client.ApiClient, namespace: str,
                                                    wait_until: Callable[..., Any]) -> None:
    apps: Any = client.AppsV1Api(k8s)
    body = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                }]},
            },
        },
    }
    created = apps.create_namespaced_deployment(namespace, body)
    assert created.metadata.generation == 1
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"

    # Strategic merge: the container is matched by name and only its image changes
    # (a JSON merge patch would have replaced the whole list, dropping env and ports).
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.26"}]}}}}
    patched = apps.patch_namespaced_deployment("web", namespace, patch)
    container = patched.spec.template.spec.containers[0]
    assert container.image == "nginx:1.26"
    assert [(e.name, e.value) for e in container.env] == [("A", "1"), ("B", "2")]
    assert container.ports[0].container_port == 80
    assert patched.metadata.generation == 2

    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Background")
    wait_until(lambda: status_of(lambda: apps.read_namespaced_deployment("web", namespace)) == 404,
               timeout=30, what=f"deployment {namespace}/web to be gone")
