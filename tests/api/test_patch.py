"""PATCH semantics: JSON merge patch, JSON patch, strategic merge patch and the dispatcher.

Strategic merge cases are either what ``kubectl apply``/``kubectl patch`` send or ports of
apimachinery's ``strategicpatch/patch_test.go`` (ThreeWay patch applied to Current must
give Result), mapped onto real fields of the kinds Skiff serves.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.api.errors import ApiError
from control_plane.api.patch import (
    MAX_JSON_PATCH_OPERATIONS,
    apply_json_patch,
    apply_merge_patch,
    apply_patch,
    apply_strategic_merge_patch,
    patch_meta,
    strategic_merge_key,
)


def y(text: str) -> Any:
    return yaml.safe_load(text)


def smp(original: dict[str, Any], patch: Any, kind: str = "Pod") -> dict[str, Any]:
    """Apply a strategic merge patch, asserting the inputs are left untouched."""
    before = (copy.deepcopy(original), copy.deepcopy(patch))
    result = apply_strategic_merge_patch(original, patch, kind)
    assert (original, patch) == before
    return result


PROPERTY = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def error_of(fn: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value


# --------------------------------------------------------------------------- JSON merge patch

# RFC 7386 Appendix A, minus the cases whose target is not an object.
RFC7386_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "expected"), RFC7386_CASES)
def test_merge_patch_rfc7386_examples(original: dict[str, Any], patch: Any, expected: dict[str, Any]) -> None:
    before = copy.deepcopy(original)
    assert apply_merge_patch(original, patch) == expected
    assert original == before


def test_merge_patch_replaces_lists_and_keeps_unrelated_fields() -> None:
    pod = {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
           "spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    patch = {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"containers": [{"name": "c"}]}}
    assert apply_merge_patch(pod, patch) == {
        "metadata": {"name": "p", "labels": {"b": "2", "c": "3"}},
        "spec": {"containers": [{"name": "c"}]},
    }


def test_merge_patch_result_shares_nothing_with_the_patch() -> None:
    patch = {"spec": {"list": [{"x": 1}]}}
    result = apply_merge_patch({}, patch)
    result["spec"]["list"][0]["x"] = 2
    assert patch == {"spec": {"list": [{"x": 1}]}}


@pytest.mark.parametrize("patch", [None, [], ["a"], "x", 3])
def test_merge_patch_that_is_not_an_object_is_a_bad_request(patch: Any) -> None:
    err = error_of(apply_merge_patch, {"a": 1}, patch)
    assert (err.code, err.reason) == (400, "BadRequest")


JSON_SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3)
NON_NULL_SCALARS = st.booleans() | st.integers(-5, 5) | st.text(max_size=3)
KEYS = st.sampled_from(["a", "b", "c", "d"])
# Documents a merge patch can reach: objects never hold nulls (a null in a patch deletes).
DOCS = st.recursive(
    NON_NULL_SCALARS | st.lists(JSON_SCALARS, max_size=3),
    lambda children: st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)


def merge_diff(a: Any, b: Any) -> Any:
    """The RFC 7386 patch that turns ``a`` into ``b``."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return b
    patch: dict[str, Any] = {k: None for k in a if k not in b}
    for k, v in b.items():
        if k not in a or a[k] != v:
            patch[k] = merge_diff(a.get(k), v)
    return patch


@PROPERTY
@given(st.dictionaries(KEYS, DOCS, max_size=4), st.dictionaries(KEYS, DOCS, max_size=4))
def test_merge_patch_of_a_diff_gives_the_target(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert apply_merge_patch(a, merge_diff(a, b)) == b


@PROPERTY
@given(st.dictionaries(KEYS, DOCS, max_size=4), st.dictionaries(KEYS, DOCS, max_size=4))
def test_merge_patch_is_idempotent(a: dict[str, Any], patch: dict[str, Any]) -> None:
    once = apply_merge_patch(a, patch)
    assert apply_merge_patch(once, patch) == once


# --------------------------------------------------------------------------- JSON patch

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "nginx:1.1"}]},
}


def test_json_patch_applies_operations_in_order() -> None:
    before = copy.deepcopy(POD)
    result = apply_json_patch(POD, [
        {"op": "test", "path": "/metadata/labels/app", "value": "web"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.2"},
        {"op": "add", "path": "/spec/containers/-", "value": {"name": "side", "image": "busybox"}},
        {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
        {"op": "remove", "path": "/metadata/labels/app"},
        {"op": "copy", "from": "/metadata/name", "path": "/metadata/generateName"},
        {"op": "move", "from": "/metadata/labels/tier", "path": "/metadata/labels/role"},
    ])
    assert POD == before
    assert result["spec"]["containers"] == [{"name": "web", "image": "nginx:1.2"},
                                            {"name": "side", "image": "busybox"}]
    assert result["metadata"] == {"name": "web", "generateName": "web", "labels": {"role": "front"}}


@pytest.mark.parametrize("patch", [
    [{"op": "test", "path": "/metadata/name", "value": "other"}],
    [{"op": "remove", "path": "/metadata/annotations"}],
    [{"op": "replace", "path": "/spec/containers/3/image", "value": "x"}],
    [{"op": "add", "path": "/metadata/name/x", "value": 1}],
    [{"op": "frobnicate", "path": "/metadata"}],
    [{"op": "add", "path": "/metadata/x"}],
    [{"path": "/metadata"}],
    [{"op": "move", "from": "/nope", "path": "/metadata/x"}],
    [{"op": "replace", "path": "", "value": 5}],
])
def test_json_patch_whose_operations_fail_is_unprocessable(patch: list[dict[str, Any]]) -> None:
    # apiserver: patchObj.Apply(...) failing → NewGenericServerResponse(422, ...).
    err = error_of(apply_json_patch, POD, patch)
    assert (err.code, err.reason) == (422, "Invalid")
    assert err.message.startswith("the server rejected our request due to an error in our request: ")
    assert err.details["causes"][0]["reason"] == "UnexpectedServerResponse"


def test_json_patch_test_failure_says_so() -> None:
    err = error_of(apply_json_patch, POD, [{"op": "test", "path": "/metadata/name", "value": "other"}])
    assert "test operation failed" in err.message


@pytest.mark.parametrize("patch", [{"op": "add", "path": "/a", "value": 1}, None, "x", [1], [["op"]]])
def test_json_patch_that_does_not_decode_is_a_bad_request(patch: Any) -> None:
    err = error_of(apply_json_patch, POD, patch)
    assert (err.code, err.reason) == (400, "BadRequest")


def test_json_patch_with_too_many_operations_is_refused() -> None:
    ops = [{"op": "test", "path": "/kind", "value": "Pod"}] * (MAX_JSON_PATCH_OPERATIONS + 1)
    err = error_of(apply_json_patch, POD, ops)
    assert err.code == 413


# --------------------------------------------------------------------------- strategic merge patch: kubectl

DEPLOYMENT = y("""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: old
spec:
  replicas: 2
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.1
        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}
        ports:
        - {containerPort: 80, protocol: TCP}
        terminationMessagePath: /dev/termination-log
      - name: side
        image: busybox
""")


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = obj["spec"]["template"]["spec"]["containers"]
    return result


def test_kubectl_apply_image_change_merges_the_container_by_name() -> None:
    patch = json.loads('{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"new"}},'
                       '"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"side"}],'
                       '"containers":[{"image":"nginx:1.2","name":"web"}]}}}}')
    result = smp(DEPLOYMENT, patch, "Deployment")
    assert result["metadata"]["annotations"] == {"kubectl.kubernetes.io/last-applied-configuration": "new"}
    web, side = containers(result)
    assert web == {**containers(DEPLOYMENT)[0], "image": "nginx:1.2"}  # server-set fields survive
    assert side == {"name": "side", "image": "busybox"}


def test_kubectl_apply_removing_a_container() -> None:
    patch = y("""
spec:
  template:
    spec:
      $setElementOrder/containers: [{name: web}]
      containers:
      - {$patch: delete, name: side}
""")
    assert [c["name"] for c in containers(smp(DEPLOYMENT, patch, "Deployment"))] == ["web"]


def test_kubectl_apply_removing_an_env_var() -> None:
    patch = y("""
spec:
  template:
    spec:
      $setElementOrder/containers: [{name: web}, {name: side}]
      containers:
      - name: web
        $setElementOrder/env: [{name: A}]
        env:
        - {$patch: delete, name: B}
""")
    web = containers(smp(DEPLOYMENT, patch, "Deployment"))[0]
    assert web["env"] == [{"name": "A", "value": "1"}]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


def test_kubectl_apply_reordering_containers() -> None:
    patch = {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}}
    assert [c["name"] for c in containers(smp(DEPLOYMENT, patch, "Deployment"))] == ["side", "web"]


def test_kubectl_apply_switching_to_recreate_uses_retain_keys() -> None:
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert smp(DEPLOYMENT, patch, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_patch_adding_a_container_puts_new_items_first() -> None:
    # Without $setElementOrder, apimachinery's mergeSortedSlice places items the live list
    # does not know ahead of it (the kubectl patch docs show the new container first).
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "log", "image": "tailer"}]}}}}
    assert [c["name"] for c in containers(smp(DEPLOYMENT, patch, "Deployment"))] == ["log", "web", "side"]


def test_patch_changing_one_env_var_keeps_list_order() -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "3"}]}]}}}}
    assert containers(smp(DEPLOYMENT, patch, "Deployment"))[0]["env"] == [
        {"name": "A", "value": "1"}, {"name": "B", "value": "3"}]


def test_pod_paths_start_at_spec() -> None:
    pod = {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}
    result = smp(pod, {"spec": {"containers": [{"name": "b", "image": "2"}]}})
    assert result["spec"]["containers"] == [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]


@pytest.mark.parametrize("kind", ["ReplicaSet", "DaemonSet", "Job"])
def test_pod_templates_merge_containers_by_name(kind: str) -> None:
    obj = {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}}}}
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2"}]}}}}
    assert containers(smp(obj, patch, kind)) == [{"name": "a", "image": "2"}, {"name": "b"}]


def test_lists_without_a_merge_key_are_replaced() -> None:
    pod = {"spec": {"tolerations": [{"key": "a", "operator": "Exists"}],
                    "containers": [{"name": "c", "args": ["x", "y"], "command": ["sh"]}]}}
    patch = {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}],
                      "containers": [{"name": "c", "args": ["z"]}]}}
    result = smp(pod, patch)
    assert result["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]
    assert result["spec"]["containers"] == [{"name": "c", "args": ["z"], "command": ["sh"]}]


def test_null_deletes_and_maps_merge() -> None:
    pod = {"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}}, "spec": {"nodeName": "n1"}}
    patch = {"metadata": {"labels": {"a": None, "c": "3"}, "annotations": None}, "spec": {"nodeName": "n2"}}
    assert smp(pod, patch) == {"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"nodeName": "n2"}}


def test_container_fields_merge_by_their_keys() -> None:
    pod = y("""
spec:
  containers:
  - name: c
    ports: [{containerPort: 80, name: http}, {containerPort: 443}]
    volumeMounts: [{name: data, mountPath: /data}, {name: cfg, mountPath: /etc/cfg}]
    volumeDevices: [{name: raw, devicePath: /dev/xvda}]
  volumes: [{name: data, emptyDir: {}}, {name: cfg, configMap: {name: cfg}}]
  imagePullSecrets: [{name: reg}]
  hostAliases: [{ip: 10.0.0.1, hostnames: [a]}]
""")
    patch = y("""
spec:
  containers:
  - name: c
    ports: [{containerPort: 80, name: web}]
    volumeMounts: [{mountPath: /data, readOnly: true}]
    volumeDevices: [{devicePath: /dev/xvda, name: raw2}]
  volumes: [{name: cfg, configMap: {name: cfg2}}]
  imagePullSecrets: [{name: reg2}]
  hostAliases: [{ip: 10.0.0.1, hostnames: [b]}]
""")
    result = smp(pod, patch)["spec"]
    c = result["containers"][0]
    assert c["ports"] == [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]
    assert c["volumeMounts"] == [{"name": "data", "mountPath": "/data", "readOnly": True},
                                 {"name": "cfg", "mountPath": "/etc/cfg"}]
    assert c["volumeDevices"] == [{"name": "raw2", "devicePath": "/dev/xvda"}]
    assert result["volumes"] == [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg2"}}]
    assert result["imagePullSecrets"] == [{"name": "reg2"}, {"name": "reg"}]
    assert result["hostAliases"] == [{"ip": "10.0.0.1", "hostnames": ["b"]}]


def test_volume_source_switch_with_retain_keys() -> None:
    # What kubectl sends when a volume changes from emptyDir to hostPath.
    pod = {"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}}
    patch = {"spec": {"$setElementOrder/volumes": [{"name": "v"}],
                      "volumes": [{"$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/x"}, "name": "v",
                                   "emptyDir": None}]}}
    assert smp(pod, patch)["spec"]["volumes"] == [{"name": "v", "hostPath": {"path": "/x"}}]


def test_status_conditions_merge_by_type() -> None:
    for kind, obj in [
        ("Pod", {"status": {"conditions": [{"type": "Ready", "status": "False"},
                                           {"type": "PodScheduled", "status": "True"}]}}),
        ("Node", {"status": {"conditions": [{"type": "Ready", "status": "False"},
                                            {"type": "MemoryPressure", "status": "False"}]}}),
        ("Deployment", {"status": {"conditions": [{"type": "Ready", "status": "False"},
                                                  {"type": "Progressing", "status": "True"}]}}),
    ]:
        result = smp(obj, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}, kind)
        assert result["status"]["conditions"][0] == {"type": "Ready", "status": "True"}, kind
        assert len(result["status"]["conditions"]) == 2, kind


def test_node_addresses_merge_by_type_and_pod_ips_by_ip() -> None:
    node = {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                     {"type": "Hostname", "address": "n1"}]}}
    patch = {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}
    assert smp(node, patch, "Node")["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.2"},
                                                               {"type": "Hostname", "address": "n1"}]
    pod = {"status": {"podIPs": [{"ip": "10.1.0.5"}]}}
    assert smp(pod, {"status": {"podIPs": [{"ip": "fd00::5"}]}})["status"]["podIPs"] == [
        {"ip": "fd00::5"}, {"ip": "10.1.0.5"}]


def test_container_statuses_are_replaced() -> None:
    pod = {"status": {"containerStatuses": [{"name": "a", "ready": True}, {"name": "b", "ready": True}]}}
    patch = {"status": {"containerStatuses": [{"name": "a", "ready": False}]}}
    assert smp(pod, patch)["status"]["containerStatuses"] == [{"name": "a", "ready": False}]


def test_service_ports_merge_by_port() -> None:
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443, "name": "https"}]}}
    patch = {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}
    assert smp(svc, patch, "Service")["spec"]["ports"] == [{"port": 80, "targetPort": 9090, "name": "http"},
                                                           {"port": 443, "name": "https"}]


def test_owner_references_merge_by_uid_and_finalizers_as_a_set() -> None:
    obj = {"metadata": {"ownerReferences": [{"uid": "1", "kind": "ReplicaSet", "name": "a"}],
                        "finalizers": ["a", "b"]}}
    patch = {"metadata": {"ownerReferences": [{"uid": "1", "controller": True}, {"uid": "2", "name": "b"}],
                          "finalizers": ["b", "c"]}}
    for kind in ("ConfigMap", "Pod", "Deployment", "SomethingElse"):
        meta = smp(obj, patch, kind)["metadata"]
        assert meta["ownerReferences"] == [{"uid": "1", "kind": "ReplicaSet", "name": "a", "controller": True},
                                           {"uid": "2", "name": "b"}], kind
        assert meta["finalizers"] == ["a", "b", "c"], kind


def test_delete_from_primitive_list() -> None:
    obj = {"metadata": {"finalizers": ["a", "b", "c", "b"]}}
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}
    assert smp(obj, patch)["metadata"]["finalizers"] == ["a", "c"]
    # Nothing to delete from: no finalizers appear.
    assert smp({"metadata": {}}, patch) == {"metadata": {}}


def test_namespace_finalizers_in_spec_are_replaced() -> None:
    ns = {"spec": {"finalizers": ["kubernetes", "x"]}}
    assert smp(ns, {"spec": {"finalizers": ["kubernetes"]}}, "Namespace") == {"spec": {"finalizers": ["kubernetes"]}}


def test_patch_replace_directive_in_a_map_and_in_a_list() -> None:
    pod = {"metadata": {"labels": {"a": "1", "b": "2"}},
           "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}
    patch = {"metadata": {"labels": {"$patch": "replace", "c": "3"}},
             "spec": {"containers": [{"name": "z", "image": "9"}, {"$patch": "replace"}]}}
    assert smp(pod, patch) == {"metadata": {"labels": {"c": "3"}}, "spec": {"containers": [{"name": "z", "image": "9"}]}}


def test_patch_delete_directive_in_a_map_empties_it() -> None:
    pod = {"metadata": {"labels": {"a": "1"}, "name": "p"}}
    assert smp(pod, {"metadata": {"labels": {"$patch": "delete"}}}) == {"metadata": {"labels": {}, "name": "p"}}


def test_explicit_merge_directive_in_a_map_is_the_default() -> None:
    pod = {"metadata": {"labels": {"a": "1"}}}
    assert smp(pod, {"metadata": {"labels": {"$patch": "merge", "b": "2"}}}) == {
        "metadata": {"labels": {"a": "1", "b": "2"}}}


def test_directives_in_new_values_are_applied_not_stored() -> None:
    # The live object has no containers/env: deletions are no-ops, nulls are dropped.
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}, {"name": "Y"}],
                                      "image": None},
                                     {"name": "gone", "$patch": "delete"}]}}
    assert smp({"spec": {}}, patch) == {"spec": {"containers": [{"name": "a", "env": [{"name": "Y"}]}]}}


def test_type_change_replaces_the_value() -> None:
    assert smp({"spec": {"x": {"a": 1}}}, {"spec": {"x": [1]}}) == {"spec": {"x": [1]}}
    assert smp({"spec": {"x": [1]}}, {"spec": {"x": {"a": None, "b": 1}}}) == {"spec": {"x": {"b": 1}}}


def test_unknown_kinds_get_object_meta_rules_only() -> None:
    obj = {"spec": {"containers": [{"name": "a"}]}}
    assert smp(obj, {"spec": {"containers": [{"name": "b"}]}}, "Widget") == {"spec": {"containers": [{"name": "b"}]}}


# --------------------------------------------------------------------------- strategic merge patch: apimachinery cases

def test_go_case_set_element_order_with_server_only_items() -> None:
    # "set elements order in a list with server-only items 3"
    current = {"spec": {"containers": [{"name": "1", "other": "a"}, {"name": "2", "value": "2"}, {"name": "7"},
                                       {"name": "9"}, {"name": "8"}, {"name": "3", "value": "3"},
                                       {"name": "4", "value": "4"}]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}]}}
    assert [c["name"] for c in smp(current, patch)["spec"]["containers"]] == ["2", "1", "7", "9", "8", "4", "3"]


def test_go_case_add_and_delete_an_item_and_preserve_order() -> None:
    current = {"spec": {"containers": [{"name": "1", "other": "a"}, {"name": "2", "value": "2", "other": "b"},
                                       {"name": "3", "value": "3"}]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "4"}, {"name": "2"}, {"name": "1"}],
                      "containers": [{"name": "4", "value": "4"}, {"name": "3", "$patch": "delete"}]}}
    assert smp(current, patch)["spec"]["containers"] == [
        {"name": "4", "value": "4"}, {"name": "2", "value": "2", "other": "b"}, {"name": "1", "other": "a"}]


def test_go_case_primitive_list_order_and_deletion() -> None:
    # "add and delete an item in a int list and preserve order", on finalizers.
    current = {"metadata": {"finalizers": ["1", "2", "3"]}}
    patch = {"metadata": {"$setElementOrder/finalizers": ["4", "2", "1"], "finalizers": ["4"],
                          "$deleteFromPrimitiveList/finalizers": ["3"]}}
    assert smp(current, patch)["metadata"]["finalizers"] == ["4", "2", "1"]
    # "set elements order in a int list with server-only items 2"
    current = {"metadata": {"finalizers": ["1", "2", "9", "3", "4"]}}
    patch = {"metadata": {"$setElementOrder/finalizers": ["2", "1", "4", "3"]}}
    assert smp(current, patch)["metadata"]["finalizers"] == ["2", "1", "9", "4", "3"]


def test_go_case_retain_keys_clears_fields_not_listed() -> None:
    # "retainKeys map deletes a field and clears a field", on a Deployment's strategy.
    current = {"spec": {"strategy": {"type": "foo", "rollingUpdate": "bar", "other": "a"}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": None}}}
    assert smp(current, patch, "Deployment") == {"spec": {"strategy": {"type": "foo"}}}


def test_go_case_duplicates_in_a_merging_list() -> None:
    current = {"spec": {"containers": [{"name": "1"}, {"name": "2", "value": "dup1"}, {"name": "3"},
                                       {"name": "2", "value": "dup2"}, {"name": "4"}]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"},
                                                      {"name": "2"}]}}
    assert smp(current, patch)["spec"]["containers"] == [
        {"name": "2", "value": "dup1"}, {"name": "2", "value": "dup2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}]


# --------------------------------------------------------------------------- strategic merge patch: errors

@pytest.mark.parametrize(("patch", "message"), [
    ({"metadata": {"labels": {"$patch": "frob"}}}, "unknown patch type: frob in map"),
    ({"spec": {"containers": [{"name": "a", "$patch": "frob"}]}}, "unknown patch type: frob"),
    ({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}, "merging lists cannot yet be specified"),
    ({"spec": {"containers": [{"image": "x"}]}}, "does not contain declared merge key: name"),
    ({"spec": {"containers": [{"$patch": "delete"}]}}, "does not contain declared merge key: name"),
    ({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
               "containers": [{"name": "a"}, {"name": "b"}]}}, "doesn't match $setElementOrder list"),
    ({"spec": {"$setElementOrder/containers": "a"}}, "invalid patch format of setElementOrder list"),
    ({"spec": {"$setElementOrderX/containers": []}}, "invalid patch format of setElementOrder list"),
    ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, "invalid patch format of primitive list"),
    ({"spec": {"volumes": [{"name": "a", "$retainKeys": "name"}]}}, "invalid patch format of retainKeys"),
    ({"spec": {"volumes": [{"name": "a", "$retainKeys": ["name"], "emptyDir": {}}]}},
     "invalid patch format of retainKeys"),
    ({"spec": {"containers": ["a"]}}, "list element types are not identical"),
])
def test_malformed_strategic_patches_are_bad_requests(patch: dict[str, Any], message: str) -> None:
    pod = {"spec": {"containers": [{"name": "a"}, {"name": "b"}], "volumes": [{"name": "a", "hostPath": {}}]}}
    err = error_of(apply_strategic_merge_patch, pod, patch, "Pod")
    assert (err.code, err.reason) == (400, "BadRequest")
    assert message in err.message


def test_unknown_dollar_keys_are_unknown_fields() -> None:
    err = error_of(apply_strategic_merge_patch, {"spec": {}}, {"spec": {"$frob": 1}}, "Pod")
    assert (err.code, err.reason) == (422, "Invalid")
    assert 'unknown field "spec.$frob"' in err.message


def test_lists_of_lists_are_unprocessable() -> None:
    # As in apimachinery, only a list whose first element is a list says so; [a, [b]] is a type mix.
    err = error_of(apply_strategic_merge_patch, {"metadata": {"finalizers": []}},
                   {"metadata": {"finalizers": [["b"]]}}, "Pod")
    assert err.code == 422
    assert "lists of lists are not supported" in err.message


@pytest.mark.parametrize("patch", [None, [], "x"])
def test_strategic_patch_that_is_not_an_object_is_a_bad_request(patch: Any) -> None:
    assert error_of(apply_strategic_merge_patch, {}, patch, "Pod").code == 400


# --------------------------------------------------------------------------- strategic merge patch: properties

MAP_DOCS = st.recursive(NON_NULL_SCALARS, lambda children: st.dictionaries(KEYS, children, max_size=4), max_leaves=12)
MAP_PATCHES = st.recursive(JSON_SCALARS, lambda children: st.dictionaries(KEYS, children, max_size=4), max_leaves=12)


@PROPERTY
@given(st.dictionaries(KEYS, MAP_DOCS, max_size=4), st.dictionaries(KEYS, MAP_PATCHES, max_size=4))
def test_strategic_patch_without_lists_is_a_json_merge_patch(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    assert apply_strategic_merge_patch(doc, patch, "ConfigMap") == apply_merge_patch(doc, patch)


NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
CONTAINER_LISTS = st.lists(st.fixed_dictionaries({"name": NAMES, "image": st.sampled_from(["1", "2", "3"])}),
                           unique_by=lambda c: c["name"], max_size=5)


@PROPERTY
@given(CONTAINER_LISTS, CONTAINER_LISTS)
def test_containers_merge_as_a_keyed_union(live: list[dict[str, Any]], change: list[dict[str, Any]]) -> None:
    result = containers(smp({"spec": {"template": {"spec": {"containers": live}}}},
                            {"spec": {"template": {"spec": {"containers": change}}}}, "Deployment"))
    expected = {c["name"]: c for c in live} | {c["name"]: c for c in change}
    assert {c["name"]: c for c in result} == expected
    assert len(result) == len(expected)
    # Live items keep their relative order; so do patch items.
    names = [c["name"] for c in result]
    live_only = [c["name"] for c in live if c["name"] not in {x["name"] for x in change}]
    assert [n for n in names if n in live_only] == live_only
    assert [n for n in names if n in {c["name"] for c in change}] == [c["name"] for c in change]


@PROPERTY
@given(CONTAINER_LISTS, CONTAINER_LISTS)
def test_set_element_order_gives_the_applied_order(live: list[dict[str, Any]], desired: list[dict[str, Any]]) -> None:
    # kubectl's apply patch: set the order, send changed/added items, delete the rest.
    desired_names = [c["name"] for c in desired]
    patch = {"spec": {"$setElementOrder/containers": [{"name": n} for n in desired_names],
                      "containers": [*desired,
                                     *({"$patch": "delete", "name": c["name"]} for c in live
                                       if c["name"] not in desired_names)]}}
    result = smp({"spec": {"containers": live}}, patch)
    assert result["spec"]["containers"] == desired


# --------------------------------------------------------------------------- helpers

def test_strategic_merge_key_lookup() -> None:
    assert strategic_merge_key("Deployment", "spec.template.spec.containers") == "name"
    assert strategic_merge_key("Pod", "spec.containers") == "name"
    assert strategic_merge_key("Pod", "spec.containers.env") == "name"
    assert strategic_merge_key("Pod", ["spec", "containers", "0", "ports"]) == "containerPort"
    assert strategic_merge_key("Pod", "spec.initContainers.volumeMounts") == "mountPath"
    assert strategic_merge_key("Pod", "spec.tolerations") is None
    assert strategic_merge_key("Pod", "metadata.finalizers") is None  # a merged list of scalars
    assert patch_meta("Pod", "metadata.finalizers").merges_list
    assert strategic_merge_key("Service", "spec.ports") == "port"
    assert strategic_merge_key("Node", "status.addresses") == "type"
    assert strategic_merge_key("Job", "status.conditions") == "type"
    assert strategic_merge_key("ConfigMap", "metadata.ownerReferences") == "uid"
    assert strategic_merge_key("Deployment", "spec.containers") is None
    assert patch_meta("Pod", "spec.volumes").retain_keys
    assert patch_meta("Deployment", "spec.strategy").retain_keys


# --------------------------------------------------------------------------- dispatch

def test_apply_patch_dispatches_on_content_type() -> None:
    pod = {"metadata": {"name": "p", "labels": {"a": "1"}},
           "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}
    body = json.dumps({"spec": {"containers": [{"name": "b", "image": "2"}]}}).encode()
    assert apply_patch("application/merge-patch+json", pod, body, "Pod")["spec"]["containers"] == [
        {"name": "b", "image": "2"}]
    assert apply_patch("application/strategic-merge-patch+json; charset=utf-8", pod, body, "Pod")["spec"][
        "containers"] == [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]
    ops = json.dumps([{"op": "replace", "path": "/metadata/name", "value": "q"}]).encode()
    assert apply_patch("Application/JSON-Patch+JSON", pod, ops, "Pod")["metadata"]["name"] == "q"


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml", "text/plain", "",
                                          "application/apply-patch+cbor"])
def test_apply_patch_refuses_other_media_types(content_type: str) -> None:
    err = error_of(apply_patch, content_type, {}, b"{}", "Pod")
    assert (err.code, err.reason) == (415, "UnsupportedMediaType")


@pytest.mark.parametrize("content_type", ["application/merge-patch+json", "application/json-patch+json",
                                          "application/strategic-merge-patch+json"])
@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"{'a': 1}", b'{"a": NaN}'])
def test_apply_patch_bodies_that_do_not_parse_are_bad_requests(content_type: str, body: bytes) -> None:
    err = error_of(apply_patch, content_type, {}, body, "Pod")
    assert (err.code, err.reason) == (400, "BadRequest")
    assert err.message.startswith("error decoding patch: ")


def test_server_side_apply_merges_configuration_without_deleting() -> None:
    live = copy.deepcopy(DEPLOYMENT)
    body = b"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {team: a}
spec:
  replicas: 3
  strategy: null
  template:
    spec:
      containers:
      - name: web
        image: nginx:2
"""
    result = apply_patch("application/apply-patch+yaml", live, body, "Deployment")
    assert live == DEPLOYMENT
    assert result["metadata"]["labels"] == {"team": "a"}
    assert result["spec"]["replicas"] == 3
    assert result["spec"]["strategy"] == DEPLOYMENT["spec"]["strategy"]  # null does not delete
    assert [c["name"] for c in containers(result)] == ["web", "side"]
    assert containers(result)[0]["image"] == "nginx:2"
    assert containers(result)[0]["env"] == containers(DEPLOYMENT)[0]["env"]


def test_server_side_apply_accepts_json_and_creates_from_nothing() -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}})
    assert apply_patch("application/apply-patch+yaml", {}, body.encode(), "ConfigMap") == json.loads(body)


@pytest.mark.parametrize(("body", "code"), [
    (b"a: [", 400),
    (b"- a\n- b\n", 400),
    (b"kind: Service\n", 400),
    (b"metadata:\n  labels:\n    $patch: replace\n", 422),
])
def test_server_side_apply_errors(body: bytes, code: int) -> None:
    assert error_of(apply_patch, "application/apply-patch+yaml", {"metadata": {}}, body, "Pod").code == code
