"""Environment resolution and $(VAR) expansion, as the kubelet does them."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from node_agent.runtime.env import (
    ContainerConfigError,
    container_resource_value,
    expand,
    format_map,
    mapping_for,
    resolve_env,
)

Obj = dict[str, Any]


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


CONFIGMAPS: dict[tuple[str, str], Obj] = {
    ("ns1", "cfg"): {"metadata": {"name": "cfg", "namespace": "ns1"}, "data": {"color": "blue", "size": "L"}},
}
SECRETS: dict[tuple[str, str], Obj] = {
    ("ns1", "creds"): {"metadata": {"name": "creds", "namespace": "ns1"},
                       "data": {"user": b64("admin"), "pass": b64("s3cr=t$")}},
}


class Getters:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def configmap(self, namespace: str, name: str) -> Obj | None:
        self.calls.append(("configmap", namespace, name))
        return CONFIGMAPS.get((namespace, name))

    async def secret(self, namespace: str, name: str) -> Obj | None:
        self.calls.append(("secret", namespace, name))
        return SECRETS.get((namespace, name))


def make_pod(container: Obj, **spec: Any) -> Obj:
    return {
        "metadata": {"name": "web", "namespace": "ns1", "uid": "uid-1",
                     "labels": {"app": "web", "tier": "front"}, "annotations": {"note": 'say "hi"'}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "default", "containers": [container], **spec},
    }


async def resolve(container: Obj, **kw: Any) -> dict[str, str]:
    g = Getters()
    return await resolve_env(make_pod(container), container, get_configmap=g.configmap, get_secret=g.secret,
                             pod_ip="10.244.1.5", host_ip="10.250.3.11", **kw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("x$(A)y$(B)z", "xaybz"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$a"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("cost $5", "cost $5"),
        ("end$", "end$"),
        ("$()", "$()"),
        ("$(A)$(A)", "aa"),
        ("", ""),
    ],
)
def test_expand_follows_kubernetes(text: str, expected: str) -> None:
    assert expand(text, mapping_for({"A": "a", "B": "b"})) == expected


def test_format_map_sorted_and_quoted() -> None:
    assert format_map({"b": "2", "a": 'x"y\n'}) == 'a="x\\"y\\n"\nb="2"'


async def test_values_in_order_with_expansion() -> None:
    env = await resolve({"name": "c", "env": [
        {"name": "A", "value": "one"},
        {"name": "B", "value": "$(A)-two"},
        {"name": "C", "value": "$(D)"},  # D is defined later: stays literal
        {"name": "D", "value": "four"},
        {"name": "E", "value": "$$(A)"},
        {"name": "EMPTY", "value": ""},
    ]})
    assert env == {"A": "one", "B": "one-two", "C": "$(D)", "D": "four", "E": "$(A)", "EMPTY": ""}


async def test_env_from_then_env_overrides_and_prefix() -> None:
    env = await resolve({"name": "c", "envFrom": [
        {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
        {"secretRef": {"name": "creds"}},
    ], "env": [{"name": "user", "value": "override"}, {"name": "X", "value": "$(CFG_color)"}]})
    assert env == {"CFG_color": "blue", "CFG_size": "L", "user": "override", "pass": "s3cr=t$", "X": "blue"}


async def test_env_from_values_are_not_expanded() -> None:
    CONFIGMAPS[("ns1", "raw")] = {"data": {"V": "$(HOME)"}}
    try:
        env = await resolve({"name": "c", "envFrom": [{"configMapRef": {"name": "raw"}}]})
    finally:
        del CONFIGMAPS[("ns1", "raw")]
    assert env == {"V": "$(HOME)"}


async def test_value_from_refs() -> None:
    env = await resolve({"name": "c", "env": [
        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pass"}}},
        {"name": "OPT1", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        {"name": "OPT2", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": True}}},
        {"name": "DERIVED", "value": "$(COLOR)/$(OPT1)"},
    ]})
    assert env == {"COLOR": "blue", "PASS": "s3cr=t$", "DERIVED": "blue/$(OPT1)"}


async def test_field_refs() -> None:
    paths = ["metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels['app']",
             "metadata.annotations['note']", "metadata.labels['missing']", "spec.nodeName",
             "spec.serviceAccountName", "status.podIP", "status.hostIP", "status.podIPs", "metadata.labels"]
    env = await resolve({"name": "c", "env": [
        {"name": f"V{i}", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": p}}} for i, p in enumerate(paths)
    ]})
    assert list(env.values()) == ["web", "ns1", "uid-1", "web", 'say "hi"', "", "node-1", "default",
                                  "10.244.1.5", "10.250.3.11", "10.244.1.5", 'app="web"\ntier="front"']


async def test_unsupported_field_ref() -> None:
    with pytest.raises(ContainerConfigError) as err:
        await resolve({"name": "c", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]})
    assert err.value.message == "unsupported fieldPath: spec.bogus"
    assert err.value.reason == "CreateContainerConfigError"


async def test_resource_field_refs_with_divisor_and_node_default() -> None:
    container = {"name": "c", "resources": {"limits": {"cpu": "1500m", "memory": "128Mi"},
                                            "requests": {"cpu": "250m"}},
                 "env": [
                     {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                     {"name": "CPU_MILLI", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu",
                                                                              "divisor": "1m"}}},
                     {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                           "divisor": "1Mi"}}},
                     {"name": "REQ_CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
                     {"name": "REQ_MEM", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
                 ]}
    env = await resolve(container)
    assert env == {"CPU_LIMIT": "2", "CPU_MILLI": "1500", "MEM_MI": "128", "REQ_CPU": "1", "REQ_MEM": "0"}
    # Without a limit the kubelet reports the node's allocatable.
    assert container_resource_value({"resource": "limits.memory"}, {"name": "c"},
                                    node_allocatable={"memory": "2Gi"}) == str(2 * 1024**3)


@pytest.mark.parametrize(
    ("env", "env_from", "message"),
    [
        ([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}], [],
         'configmap "missing" not found'),
        ([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}], [],
         "couldn't find key k in ConfigMap ns1/cfg"),
        ([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}}], [],
         'secret "missing" not found'),
        ([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}], [],
         "couldn't find key k in Secret ns1/creds"),
        ([], [{"configMapRef": {"name": "missing"}}], 'configmap "missing" not found'),
        ([], [{"secretRef": {"name": "missing"}}], 'secret "missing" not found'),
    ],
)
async def test_missing_references(env: list[Obj], env_from: list[Obj], message: str) -> None:
    with pytest.raises(ContainerConfigError) as err:
        await resolve({"name": "c", "env": env, "envFrom": env_from})
    assert err.value.message == message
    assert err.value.reason == "CreateContainerConfigError"


async def test_optional_env_from_missing_is_skipped() -> None:
    env = await resolve({"name": "c", "envFrom": [{"configMapRef": {"name": "missing", "optional": True}},
                                                  {"secretRef": {"name": "missing", "optional": True}}]})
    assert env == {}


async def test_each_object_fetched_once() -> None:
    g = Getters()
    container = {"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}], "env": [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "size"}}},
    ]}
    await resolve_env(make_pod(container), container, get_configmap=g.configmap, get_secret=g.secret,
                      pod_ip="", host_ip="")
    assert g.calls == [("configmap", "ns1", "cfg")]


async def test_service_env_is_overridden_and_usable() -> None:
    env = await resolve({"name": "c", "env": [{"name": "URL", "value": "http://$(DB_SERVICE_HOST)"},
                                              {"name": "DB_SERVICE_PORT", "value": "1"}]},
                        service_env={"DB_SERVICE_HOST": "10.96.0.7", "DB_SERVICE_PORT": "5432"})
    assert env == {"DB_SERVICE_HOST": "10.96.0.7", "URL": "http://10.96.0.7", "DB_SERVICE_PORT": "1"}
