"""Validation: Kubernetes' messages for the mistakes users make, and no crash on any JSON."""

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.api.defaults import apply_defaults
from control_plane.api.errors import Cause, invalid
from control_plane.api.validation import validate, validate_status_update
from skiff.api.resources import REGISTRY, ResourceType

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
UPDATE_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
    "tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def rt(kind: str) -> ResourceType:
    return next(r for r in REGISTRY.types if r.kind == kind)


def meta(name: str = "web", namespace: str | None = "default", **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, **extra}
    if namespace is not None:
        m["namespace"] = namespace
    return m


def pod_template(labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": labels if labels is not None else {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}], **spec}}


# One valid object per kind, before defaulting; the fuzzer mutates these too.
SAMPLES: dict[str, dict[str, Any]] = {
    "Namespace": {"metadata": meta("team-a", None)},
    "Pod": {"metadata": meta(), "spec": {
        "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}],
                        "env": [{"name": "MODE", "value": "prod"},
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1", "memory": "128Mi"}},
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        "readinessProbe": {"httpGet": {"port": "http"}}}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}]}},
    "Node": {"metadata": meta("node-1", None), "spec": {"podCIDRs": ["10.244.1.0/24"]},
             "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}},
    "Service": {"metadata": meta(), "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
    "Endpoints": {"metadata": meta(), "subsets": [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 8080}]}]},
    "ConfigMap": {"metadata": meta(), "data": {"app.conf": "x=1"}},
    "Secret": {"metadata": meta(), "data": {"password": "c2VjcmV0"}},
    "ServiceAccount": {"metadata": meta("default")},
    "Event": {"metadata": meta("web.1"), "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
              "reason": "Scheduled", "type": "Normal"},
    "ResourceQuota": {"metadata": meta("quota"), "spec": {"hard": {"pods": "10", "requests.cpu": "4"}}},
    "LimitRange": {"metadata": meta("limits"), "spec": {"limits": [
        {"type": "Container", "default": {"cpu": "500m"}, "max": {"cpu": "2"}}]}},
    "Deployment": {"metadata": meta(), "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                                                "template": pod_template()}},
    "ReplicaSet": {"metadata": meta(), "spec": {"selector": {"matchLabels": {"app": "web"}},
                                                "template": pod_template()}},
    "DaemonSet": {"metadata": meta(), "spec": {"selector": {"matchLabels": {"app": "web"}},
                                               "template": pod_template()}},
    "Job": {"metadata": meta("pi", uid="0d4c7d59-1ef6-4ad5-9df2-2bc5c2b5e3a1"),
            "spec": {"template": pod_template({}, restartPolicy="Never")}},
    "Lease": {"metadata": meta("node-1", "kube-node-lease"),
              "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}},
    "EndpointSlice": {"metadata": meta("web-abc"), "addressType": "IPv4",
                      "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
                      "ports": [{"name": "http", "port": 8080}]},
}


def sample(kind: str) -> dict[str, Any]:
    return copy.deepcopy(SAMPLES[kind])


def defaulted(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    apply_defaults(rt(kind), obj, old)
    return obj


def errors(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(field, message) pairs after defaulting, as the API server would report them."""
    return [(c.field, c.message) for c in validate(rt(kind), defaulted(kind, obj, old), old)]


def update_errors(kind: str, change: Any, base: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    old = defaulted(kind, base if base is not None else sample(kind))
    new = copy.deepcopy(old)
    change(new)
    return errors(kind, new, old)


# --- every kind --------------------------------------------------------------------------------

def test_samples_cover_every_registered_kind() -> None:
    assert {r.kind for r in REGISTRY.types} == set(SAMPLES)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_valid_objects_have_no_causes(kind: str) -> None:
    assert errors(kind, sample(kind)) == []


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_unchanged_update_is_valid(kind: str) -> None:
    assert update_errors(kind, lambda obj: None) == []


def test_causes_render_as_a_kubernetes_422() -> None:
    obj = sample("Pod")
    obj["metadata"]["name"] = "UPPER"
    obj["spec"]["restartPolicy"] = "Sometimes"
    err = invalid("Pod", "UPPER", validate(rt("Pod"), defaulted("Pod", obj)))
    assert err.code == 422
    assert err.message == (
        f'Pod "UPPER" is invalid: [metadata.name: Invalid value: "UPPER": {SUBDOMAIN_MSG}, '
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"]'
    )


def test_not_an_object() -> None:
    assert validate(rt("Pod"), ["a"]) == [
        Cause("", "FieldValueTypeInvalid", 'Invalid value: "array": the body must be of type object: "array"')]


def test_wrong_types_are_type_invalid_causes() -> None:
    obj = sample("Deployment")
    obj["spec"]["replicas"] = "three"
    obj["metadata"]["labels"] = ["app"]
    assert errors("Deployment", obj) == [
        ("metadata.labels", 'Invalid value: "array": metadata.labels in body must be of type object: "array"'),
        ("spec.replicas", 'Invalid value: "string": spec.replicas in body must be of type integer: "string"'),
    ]


def test_int32_overflow() -> None:
    obj = sample("Deployment")
    obj["spec"]["replicas"] = 2**40
    assert errors("Deployment", obj) == [
        ("spec.replicas", "Invalid value: 1099511627776: must be between -2147483648 and 2147483647, inclusive")]


# --- metadata ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("metadata", "expected"), [
    ({"namespace": "default"}, [("metadata.name", "Required value: name or generateName is required")]),
    ({"generateName": "web-", "namespace": "default"}, []),
    ({"generateName": "Web-", "namespace": "default"},
     [("metadata.generateName", f'Invalid value: "Web-": {SUBDOMAIN_MSG}')]),
    ({"name": "web"}, [("metadata.namespace", "Required value")]),
    ({"name": "web", "namespace": "Bad_NS"},
     [("metadata.namespace", 'Invalid value: "Bad_NS": a lowercase RFC 1123 label must consist of lower case '
                             "alphanumeric characters or '-', and must start and end with an alphanumeric character "
                             "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")]),
    ({"name": "web", "namespace": "default", "labels": {"app": "-bad-"}},
     [("metadata.labels", 'Invalid value: "-bad-": a valid label must be an empty string or consist of alphanumeric '
                          "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                          "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                          "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")]),
    ({"name": "web", "namespace": "default", "labels": {"example.com/a/b": "x"}},
     [("metadata.labels", 'Invalid value: "example.com/a/b": a valid label key must consist of alphanumeric '
                          "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                          "'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
                          "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' "
                          "(e.g. 'example.com/MyName')")]),
    ({"name": "web", "namespace": "default", "labels": {"l" * 64: "x"}},
     [("metadata.labels", f'Invalid value: "{"l" * 64}": name part must be no more than 63 characters')]),
    ({"name": "web", "namespace": "default", "annotations": {"big": "x" * (256 * 1024)}},
     [("metadata.annotations", "Too long: must have at most 262144 bytes")]),
    ({"name": "web", "namespace": "default", "finalizers": ["cleanup"]},
     [("metadata.finalizers[0]",
       'Invalid value: "cleanup": name is neither a standard finalizer name nor is it fully qualified')]),
    ({"name": "web", "namespace": "default", "finalizers": ["example.com/cleanup", "kubernetes"]}, []),
    ({"name": "web", "namespace": "default", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet"}]},
     [("metadata.ownerReferences.name", 'Invalid value: "": must not be empty'),
      ("metadata.ownerReferences.uid", 'Invalid value: "": must not be empty')]),
])
def test_object_meta(metadata: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    obj = sample("ConfigMap")
    obj["metadata"] = metadata
    assert errors("ConfigMap", obj) == expected


def test_only_one_controller_owner() -> None:
    refs = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": n, "uid": n, "controller": True} for n in "ab"]
    obj = sample("Pod")
    obj["metadata"]["ownerReferences"] = refs
    [(field, message)] = errors("Pod", obj)
    assert field == "metadata.ownerReferences"
    assert message.endswith('Only one reference can have Controller set to true. Found "true" in references for '
                            "ReplicaSet/a and ReplicaSet/b")


def test_cluster_scoped_object_may_not_have_a_namespace_when_not_defaulted() -> None:
    obj = sample("Node")
    obj["metadata"]["namespace"] = "default"
    assert [(c.field, c.message) for c in validate(rt("Node"), obj)] == [
        ("metadata.namespace", "Forbidden: not allowed on this type")]


@pytest.mark.parametrize(("field", "value"), [
    ("name", "other"), ("namespace", "other"), ("uid", "u-2"), ("creationTimestamp", "2030-01-01T00:00:00Z"),
])
def test_immutable_metadata(field: str, value: str) -> None:
    base = sample("ConfigMap")
    base["metadata"].update(uid="u-1", creationTimestamp="2024-01-01T00:00:00Z")

    old = defaulted("ConfigMap", base)
    new = copy.deepcopy(old)
    new["metadata"][field] = value
    assert [(c.field, c.message) for c in validate(rt("ConfigMap"), new, old)] == [
        (f"metadata.{field}", f'Invalid value: "{value}": field is immutable')]


def test_update_keeps_stored_creation_timestamp_like_before_update() -> None:
    base = sample("ConfigMap")
    base["metadata"].update(uid="u-1", creationTimestamp="2024-01-01T00:00:00Z")

    def change(obj: dict[str, Any]) -> None:
        obj["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"
        del obj["metadata"]["uid"]

    assert update_errors("ConfigMap", change, base) == []


def test_no_new_finalizers_while_deleting() -> None:
    base = sample("ConfigMap")
    base["metadata"].update(deletionTimestamp="2024-01-01T00:00:00Z", finalizers=["example.com/a"])
    assert update_errors("ConfigMap", lambda o: o["metadata"]["finalizers"].append("example.com/b"), base) == [
        ("metadata.finalizers", 'Forbidden: no new finalizers can be added if the object is being deleted, found new '
                                'finalizers []string{"example.com/b"}')]


# --- pods ---------------------------------------------------------------------------------------------

def pod_with(change: Any) -> list[tuple[str, str]]:
    obj = sample("Pod")
    change(obj["spec"])
    return errors("Pod", obj)


def first_container(spec: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = spec["containers"][0]
    return container


def test_containers_required() -> None:
    assert pod_with(lambda s: s.update(containers=[])) == [("spec.containers", "Required value")]


def test_duplicate_container_names_across_init_containers() -> None:
    def change(spec: dict[str, Any]) -> None:
        spec["initContainers"] = [{"name": "web", "image": "busybox"}]
        spec["containers"].append({"name": "side", "image": "busybox"})
        spec["containers"].append({"name": "side", "image": "busybox"})

    assert pod_with(change) == [("spec.containers[2].name", 'Duplicate value: "side"'),
                                ("spec.initContainers[0].name", 'Duplicate value: "web"')]


@pytest.mark.parametrize(("container", "expected"), [
    ({"image": ""}, [("spec.containers[0].image", "Required value")]),
    ({"image": " nginx"}, [("spec.containers[0].image",
                            'Invalid value: " nginx": must not have leading or trailing whitespace')]),
    ({"name": "Web"}, [("spec.containers[0].name",
                        'Invalid value: "Web": a lowercase RFC 1123 label must consist of lower case alphanumeric '
                        "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
                        "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")]),
    ({"imagePullPolicy": "Sometimes"}, [("spec.containers[0].imagePullPolicy",
                                         'Unsupported value: "Sometimes": supported values: "Always", '
                                         '"IfNotPresent", "Never"')]),
    ({"ports": [{"containerPort": 0}]}, [("spec.containers[0].ports[0].containerPort", "Required value")]),
    ({"ports": [{"containerPort": 70000, "protocol": "ICMP"}]},
     [("spec.containers[0].ports[0].containerPort", "Invalid value: 70000: must be between 1 and 65535, inclusive"),
      ("spec.containers[0].ports[0].protocol",
       'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"')]),
    ({"ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 81, "name": "web"}]},
     [("spec.containers[0].ports[1].name", 'Duplicate value: "web"')]),
    ({"ports": [{"containerPort": 80, "name": "http-alt-port-name"}]},
     [("spec.containers[0].ports[0].name", 'Invalid value: "http-alt-port-name": must be no more than 15 characters')]),
    ({"env": [{"name": "1ST"}]},
     [("spec.containers[0].env[0].name",
       'Invalid value: "1ST": a valid environment variable name must consist of alphabetic characters, digits, '
       "'_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or "
       "'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')")]),
    ({"env": [{"name": "A", "valueFrom": {}}]},
     [("spec.containers[0].env[0].valueFrom", 'Invalid value: "": must specify one of: `fieldRef`, '
                                              '`resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`')]),
    ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"},
                                          "configMapKeyRef": {"name": "c", "key": "k"}}}]},
     [("spec.containers[0].env[0].valueFrom",
       'Invalid value: "": may not have more than one field specified at a time')]),
    ({"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     [("spec.containers[0].env[0].valueFrom", 'Invalid value: "": may not be specified when `value` is not empty')]),
    ({"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.restartPolicy"}}}]},
     [("spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
       'Unsupported value: "spec.restartPolicy": supported values: "metadata.name", "metadata.namespace", '
       '"metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.hostIPs", '
       '"status.podIP", "status.podIPs"')]),
    ({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
     [("spec.containers[0].resources.requests", 'Invalid value: "2": must be less than or equal to cpu limit of 1')]),
    ({"resources": {"requests": {"memory": "1Gi", "cpu": "-1"}, "limits": {"memory": "512Mi"}}},
     [("spec.containers[0].resources.requests",
       'Invalid value: "1Gi": must be less than or equal to memory limit of 512Mi'),
      ("spec.containers[0].resources.requests[cpu]", 'Invalid value: "-1": must be greater than or equal to 0')]),
    ({"resources": {"limits": {"cpu": "lots"}}},
     [("spec.containers[0].resources.limits[cpu]", 'Invalid value: "lots": quantities must match the regular '
                                                   "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]),
    ({"resources": {"limits": {"gpu": "1"}}},  # on a Pod, requests default to limits: both are reported
     [(f"spec.containers[0].resources.{kind}[gpu]", f'Invalid value: "gpu": {message}')
      for kind in ("limits", "requests")
      for message in ("must be a standard resource type or fully qualified",
                      "must be a standard resource for containers")]),
    ({"resources": {"requests": {"example.com/gpu": "1"}}},
     [("spec.containers[0].resources.limits", "Required value: Limit must be set for non overcommitable resources")]),
    ({"volumeMounts": [{"name": "missing", "mountPath": "/m"}, {"name": "data", "mountPath": ""}]},
     [("spec.containers[0].volumeMounts[0].name", 'Not found: "missing"'),
      ("spec.containers[0].volumeMounts[1].mountPath", "Required value")]),
    ({"volumeMounts": [{"name": "data", "mountPath": "/d", "subPath": "../etc"}]},
     [("spec.containers[0].volumeMounts[0].subPath", 'Invalid value: "../etc": must not contain \'..\'')]),
    ({"readinessProbe": {}}, [("spec.containers[0].readinessProbe", "Required value: must specify a handler type")]),
    ({"livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}}},
     [("spec.containers[0].livenessProbe.tcpSocket", "Forbidden: may not specify more than 1 handler type")]),
    ({"livenessProbe": {"tcpSocket": {"port": 80}, "failureThreshold": -1, "successThreshold": 2}},
     [("spec.containers[0].livenessProbe.failureThreshold", "Invalid value: -1: must be greater than or equal to 0"),
      ("spec.containers[0].livenessProbe.successThreshold", "Invalid value: 2: must be 1")]),
    ({"securityContext": {"runAsUser": -1}},
     [("spec.containers[0].securityContext.runAsUser", "Invalid value: -1: must be between 0 and 4294967295, "
                                                       "inclusive")]),
    ({"securityContext": {"privileged": True, "allowPrivilegeEscalation": False}},
     [("spec.containers[0].securityContext", 'Invalid value: {"privileged":true,"allowPrivilegeEscalation":false}: '
                                             "cannot set `allowPrivilegeEscalation` to false and `privileged` to true")]),
])
def test_container_rules(container: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    def change(spec: dict[str, Any]) -> None:
        c = first_container(spec)
        for field in ("ports", "env", "resources", "volumeMounts", "readinessProbe"):
            c.pop(field)
        c.update(container)

    assert pod_with(change) == expected


@pytest.mark.parametrize(("volume", "expected"), [
    ({"name": "v", "hostPath": {"path": "/a"}, "secret": {"secretName": "s"}},
     [("spec.volumes[2].secret", "Forbidden: may not specify more than 1 volume type")]),
    ({"name": "v", "hostPath": {"path": ""}}, [("spec.volumes[2].hostPath.path", "Required value")]),
    ({"name": "v", "hostPath": {"path": "/var/../etc"}},
     [("spec.volumes[2].hostPath.path", 'Invalid value: "/var/../etc": must not contain \'..\'')]),
    ({"name": "v", "hostPath": {"path": "/a", "type": "Fifo"}},
     [("spec.volumes[2].hostPath.type", 'Unsupported value: "Fifo": supported values: "", "BlockDevice", '
                                        '"CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", '
                                        '"Socket"')]),
    ({"name": "v", "secret": {}}, [("spec.volumes[2].secret.secretName", "Required value")]),
    ({"name": "v", "configMap": {"name": "c", "defaultMode": 0o1000}},
     [("spec.volumes[2].configMap.defaultMode",
       "Invalid value: 512: must be a number between 0 and 0777 (octal), both inclusive")]),
    ({"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "/abs"}]}},
     [("spec.volumes[2].configMap.items[0].path", 'Invalid value: "/abs": must be a relative path')]),
    ({"name": "v", "persistentVolumeClaim": {}}, [("spec.volumes[2].persistentVolumeClaim.claimName",
                                                   "Required value")]),
    ({"name": "v", "nfs": {"server": "s", "path": "/"}},
     [("spec.volumes[2].nfs", "Forbidden: volume type is not supported by this cluster, use one of: configMap, "
                              "downwardAPI, emptyDir, hostPath, persistentVolumeClaim, projected, secret")]),
    ({"name": "data", "emptyDir": {}}, [("spec.volumes[2].name", 'Duplicate value: "data"')]),
    ({"name": "v", "projected": {"sources": [{"secret": {"name": "s"}, "configMap": {"name": "c"}}]}},
     [("spec.volumes[2].projected.sources[0]", "Forbidden: may not specify more than 1 volume type per source")]),
    ({"name": "v", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
     []),
])
def test_volume_rules(volume: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert pod_with(lambda s: s["volumes"].append(volume)) == expected


def test_volume_without_source_defaults_to_empty_dir() -> None:
    assert pod_with(lambda s: s["volumes"].append({"name": "scratch"})) == []


@pytest.mark.parametrize(("change", "expected"), [
    ({"restartPolicy": "Sometimes"},
     [("spec.restartPolicy", 'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"')]),
    ({"dnsPolicy": "Google"}, [("spec.dnsPolicy", 'Unsupported value: "Google": supported values: '
                                                  '"ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"')]),
    ({"dnsPolicy": "None"}, [("spec.dnsConfig", "Required value: must provide `dnsConfig` when `dnsPolicy` is None")]),
    ({"terminationGracePeriodSeconds": -1},
     [("spec.terminationGracePeriodSeconds", "Invalid value: -1: must be greater than or equal to 0")]),
    ({"activeDeadlineSeconds": 0},
     [("spec.activeDeadlineSeconds", "Invalid value: 0: must be between 1 and 2147483647, inclusive")]),
    ({"nodeSelector": {"disk type": "ssd"}},
     [("spec.nodeSelector", 'Invalid value: "disk type": name part must consist of alphanumeric characters, '
                            "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  "
                            "or 'my.name',  or '123-abc', regex used for validation is "
                            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")]),
    ({"tolerations": [{"operator": "Equal", "value": "x"}]},
     [("spec.tolerations[0].operator", 'Invalid value: "Equal": operator must be Exists when `key` is empty, which '
                                       'means "match all values and all keys"')]),
    ({"tolerations": [{"key": "k", "operator": "Like", "effect": "NoRun"}]},
     [("spec.tolerations[0].operator", 'Unsupported value: "Like": supported values: "Equal", "Exists"'),
      ("spec.tolerations[0].effect",
       'Unsupported value: "NoRun": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"')]),
    ({"tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 5}]},
     [("spec.tolerations[0].effect",
       "Invalid value: \"\": effect must be 'NoExecute' when `tolerationSeconds` is set")]),
    ({"serviceAccountName": "Default"}, [("spec.serviceAccountName", f'Invalid value: "Default": {SUBDOMAIN_MSG}')]),
    ({"hostNetwork": True, "containers": [{"name": "web", "image": "x", "ports": [{"containerPort": 80,
                                                                                     "hostPort": 81}]}],
      "volumes": []},
     [("spec.containers[0].ports[0].hostPort", "Invalid value: 81: must match `containerPort` when `hostNetwork` "
                                               "is true")]),
    ({"securityContext": {"fsGroup": 2**33}},
     [("spec.securityContext.fsGroup", "Invalid value: 8589934592: must be between 0 and 4294967295, inclusive")]),
])
def test_pod_spec_rules(change: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert pod_with(lambda s: s.update(change)) == expected


def test_host_port_conflicts() -> None:
    def change(spec: dict[str, Any]) -> None:
        spec["containers"] = [{"name": n, "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}
                              for n in ("a", "b")]
        spec["volumes"] = []

    assert pod_with(change) == [("spec.containers[1].ports[0].hostPort", 'Duplicate value: "TCP//8080"')]


def test_init_container_rules() -> None:
    def change(spec: dict[str, Any]) -> None:
        spec["initContainers"] = [
            {"name": "init", "image": "busybox", "readinessProbe": {"exec": {"command": ["true"]}}},
            {"name": "sidecar", "image": "envoy", "restartPolicy": "Always",
             "readinessProbe": {"exec": {"command": ["true"]}}},
            {"name": "bad", "image": "x", "restartPolicy": "Never"},
        ]

    assert pod_with(change) == [
        ("spec.initContainers[0].readinessProbe",
         "Forbidden: may not be set for init containers without restartPolicy=Always"),
        ("spec.initContainers[2].restartPolicy", 'Unsupported value: "Never": supported values: "Always"'),
    ]


def test_pod_update_may_change_image_deadline_and_add_tolerations() -> None:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["image"] = "nginx:1.26"
        pod["spec"]["activeDeadlineSeconds"] = 600
        pod["spec"]["tolerations"].append({"key": "spot", "operator": "Exists", "effect": "NoSchedule"})

    assert update_errors("Pod", change) == []


def test_pod_update_forbids_other_spec_changes() -> None:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["restartPolicy"] = "Never"

    [(field, message)] = update_errors("Pod", change)
    assert field == "spec"
    assert message == UPDATE_FORBIDDEN + '\n  spec.restartPolicy: "Always" -> "Never"'


@pytest.mark.parametrize(("change", "expected"), [
    (lambda p: p["spec"]["containers"].append({"name": "b", "image": "b"}),
     [("spec.containers", "Forbidden: pod updates may not add or remove containers")]),
    (lambda p: p["spec"].update(tolerations=[]),
     [("spec.tolerations", "Forbidden: existing toleration can not be modified except its tolerationSeconds")]),
    (lambda p: p["spec"].update(activeDeadlineSeconds=-1),
     [("spec.activeDeadlineSeconds", "Invalid value: -1: must be between 0 and 2147483647, inclusive"),
      ("spec.activeDeadlineSeconds", "Invalid value: -1: must be between 1 and 2147483647, inclusive")]),
])
def test_pod_update_rules(change: Any, expected: list[tuple[str, str]]) -> None:
    assert sorted(update_errors("Pod", change)) == sorted(expected)


def test_pod_deadline_may_only_shrink() -> None:
    base = sample("Pod")
    base["spec"]["activeDeadlineSeconds"] = 100
    assert update_errors("Pod", lambda p: p["spec"].update(activeDeadlineSeconds=200), base) == [
        ("spec.activeDeadlineSeconds", "Invalid value: 200: must be less than or equal to previous value")]


def test_pod_status_update() -> None:
    old = defaulted("Pod", sample("Pod"))
    new = copy.deepcopy(old)
    new["spec"]["nodeName"] = "node-1"
    new["status"] = {"phase": "Running", "podIPs": [{"ip": "10.0.0.300"}]}
    assert [(c.field, c.message) for c in validate_status_update(rt("Pod"), new, old)] == [
        ("status.nodeName", "Forbidden: may not be changed directly"),
        ("status.podIPs[0].ip", 'Invalid value: "10.0.0.300": must be a valid IP address, (e.g. 10.9.8.7 or '
                                '2001:db8::ffff)'),
    ]


# --- workloads ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet"])
def test_selector_must_match_template(kind: str) -> None:
    obj = sample(kind)
    obj["spec"]["selector"] = {"matchLabels": {"app": "api"}}
    assert errors(kind, obj) == [
        ("spec.template.metadata.labels", 'Invalid value: {"app":"web"}: `selector` does not match template `labels`')]


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet"])
def test_selector_required(kind: str) -> None:
    obj = sample(kind)
    del obj["spec"]["selector"]
    assert errors(kind, obj) == [
        ("spec.selector", "Required value"),
        ("spec.template.metadata.labels", 'Invalid value: {"app":"web"}: `selector` does not match template `labels`'),
    ]


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet"])
def test_template_restart_policy_must_be_always(kind: str) -> None:
    obj = sample(kind)
    obj["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    assert errors(kind, obj) == [
        ("spec.template.spec.restartPolicy", 'Unsupported value: "OnFailure": supported values: "Always"')]


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "DaemonSet"])
def test_selector_is_immutable(kind: str) -> None:
    def change(obj: dict[str, Any]) -> None:
        obj["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "fe"}}
        obj["spec"]["template"]["metadata"]["labels"]["tier"] = "fe"

    assert update_errors(kind, change) == [
        ("spec.selector", 'Invalid value: {"matchLabels":{"app":"web","tier":"fe"}}: field is immutable')]


def test_selector_expressions() -> None:
    obj = sample("Deployment")
    obj["spec"]["selector"] = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]},
                                                    {"key": "canary", "operator": "DoesNotExist"}]}
    assert errors("Deployment", obj) == []
    obj["spec"]["selector"]["matchExpressions"].append({"key": "x", "operator": "Near"})
    assert errors("Deployment", obj) == [
        ("spec.selector.matchExpressions[2].operator", 'Invalid value: "Near": not a valid selector operator')]


@pytest.mark.parametrize(("spec", "expected"), [
    ({"replicas": -1}, [("spec.replicas", "Invalid value: -1: must be greater than or equal to 0")]),
    ({"revisionHistoryLimit": -2}, [("spec.revisionHistoryLimit", "Invalid value: -2: must be greater than or equal "
                                                                  "to 0")]),
    ({"strategy": {"type": "BlueGreen"}},
     [("spec.strategy.type", 'Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate"')]),
    ({"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}},
     [("spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'Recreate'")]),
    ({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}},
     [("spec.strategy.rollingUpdate.maxUnavailable", 'Invalid value: "0%": may not be 0 when `maxSurge` is 0')]),
    ({"strategy": {"rollingUpdate": {"maxSurge": "lots", "maxUnavailable": "150%"}}},
     [("spec.strategy.rollingUpdate.maxSurge",
       "Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' (e.g. "
       "'1%',  or '93%', regex used for validation is '[0-9]+%')"),
      ("spec.strategy.rollingUpdate.maxUnavailable", 'Invalid value: "150%": must not be greater than 100%')]),
    ({"progressDeadlineSeconds": 10, "minReadySeconds": 10},
     [("spec.progressDeadlineSeconds", "Invalid value: 10: must be greater than minReadySeconds")]),
    ({"selector": {}}, [("spec.selector", "Invalid value: {}: empty selector is invalid for deployment")]),
])
def test_deployment_rules(spec: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    obj = sample("Deployment")
    obj["spec"].update(spec)
    assert errors("Deployment", obj) == expected


@pytest.mark.parametrize(("strategy", "expected"), [
    ({"type": "OnDelete"}, []),
    ({"type": "Sometimes"},
     [("spec.updateStrategy.type", 'Unsupported value: "Sometimes": supported values: "RollingUpdate", "OnDelete"')]),
    ({"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}},
     [("spec.updateStrategy.rollingUpdate.maxUnavailable", "Required value: cannot be 0 when maxSurge is 0")]),
    ({"rollingUpdate": {"maxUnavailable": 1, "maxSurge": "10%"}},
     [("spec.updateStrategy.rollingUpdate.maxSurge",
       'Invalid value: "10%": may not be set when maxUnavailable is non-zero')]),
])
def test_daemon_set_update_strategy(strategy: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    obj = sample("DaemonSet")
    obj["spec"]["updateStrategy"] = strategy
    assert errors("DaemonSet", obj) == expected


@pytest.mark.parametrize(("spec", "expected"), [
    ({"parallelism": -1}, [("spec.parallelism", "Invalid value: -1: must be greater than or equal to 0")]),
    ({"backoffLimit": -1}, [("spec.backoffLimit", "Invalid value: -1: must be greater than or equal to 0")]),
    ({"completionMode": "Sometimes"},
     [("spec.completionMode", 'Unsupported value: "Sometimes": supported values: "NonIndexed", "Indexed"')]),
    ({"completionMode": "Indexed", "parallelism": 2},
     [("spec.completions", "Required value: when completion mode is Indexed")]),
])
def test_job_rules(spec: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    obj = sample("Job")
    obj["spec"].update(spec)
    assert errors("Job", obj) == expected


def test_job_template_restart_policy() -> None:
    obj = sample("Job")
    obj["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert errors("Job", obj) == [
        ("spec.template.spec.restartPolicy", 'Unsupported value: "Always": supported values: "OnFailure", "Never"')]


def test_job_selector_is_generated_from_uid() -> None:
    obj = sample("Job")
    del obj["metadata"]["uid"]
    assert errors("Job", obj) == [("spec.selector", "Required value")]


def test_job_with_foreign_selector_is_rejected() -> None:
    obj = sample("Job")
    obj["spec"]["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": "someone-else"}}
    uid = obj["metadata"]["uid"]
    assert errors("Job", obj) == [
        ("spec.template.metadata.labels",
         'Invalid value: {"job-name":"pi","batch.kubernetes.io/job-name":"pi","controller-uid":"' + uid
         + '","batch.kubernetes.io/controller-uid":"' + uid + '"}: `selector` does not match template `labels`'),
        ("spec.selector", 'Invalid value: {"matchLabels":{"batch.kubernetes.io/controller-uid":"someone-else"}}: '
                          "`selector` not auto-generated"),
    ]


def test_job_manual_selector() -> None:
    obj = sample("Job")
    obj["spec"].update(manualSelector=True, selector={"matchLabels": {"job": "pi"}})
    obj["spec"]["template"]["metadata"]["labels"] = {"job": "pi"}
    assert errors("Job", obj) == []


def test_job_template_is_immutable() -> None:
    def change(job: dict[str, Any]) -> None:
        job["spec"]["template"]["spec"]["containers"][0]["image"] = "perl:2"

    [(field, message)] = update_errors("Job", change)
    assert field == "spec.template"
    assert message.endswith(": field is immutable")


def test_workload_status_update() -> None:
    old = defaulted("Deployment", sample("Deployment"))
    new = copy.deepcopy(old)
    new["status"] = {"replicas": 2, "readyReplicas": 3, "availableReplicas": 1, "updatedReplicas": -1}
    assert [(c.field, c.message) for c in validate_status_update(rt("Deployment"), new, old)] == [
        ("status.updatedReplicas", "Invalid value: -1: must be greater than or equal to 0"),
        ("status.readyReplicas", "Invalid value: 3: cannot be greater than status.replicas"),
    ]


# --- services ---------------------------------------------------------------------------------------------

def service_with(change: dict[str, Any]) -> list[tuple[str, str]]:
    obj = sample("Service")
    obj["spec"].update(change)
    return errors("Service", obj)


@pytest.mark.parametrize(("change", "expected"), [
    ({"type": "Internal"}, [("spec.type", 'Unsupported value: "Internal": supported values: "ClusterIP", '
                                          '"ExternalName", "LoadBalancer", "NodePort"')]),
    ({"ports": []}, [("spec.ports", "Required value")]),
    ({"ports": [], "clusterIP": "None"}, []),
    ({"ports": [{"port": 80}, {"port": 443}]},
     [("spec.ports[0].name", "Required value"), ("spec.ports[1].name", "Required value")]),
    ({"ports": [{"name": "web", "port": 80}, {"name": "web", "port": 443}]},
     [("spec.ports[1].name", 'Duplicate value: "web"')]),
    ({"ports": [{"port": 0}]},  # targetPort defaults to port, so Kubernetes reports both
     [(f"spec.ports[0].{field}", "Invalid value: 0: must be between 1 and 65535, inclusive")
      for field in ("port", "targetPort")]),
    ({"ports": [{"port": 80, "protocol": "HTTP"}]},
     [("spec.ports[0].protocol", 'Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"')]),
    ({"ports": [{"port": 80, "targetPort": "web_port"}]},
     [("spec.ports[0].targetPort", 'Invalid value: "web_port": must contain only alpha-numeric characters (a-z, 0-9), '
                                   "and hyphens (-)")]),
    ({"ports": [{"port": 80, "targetPort": "http"}]}, []),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]},
     [("spec.ports[0].nodePort", "Invalid value: 8080: provided port is not in the valid range. The range of valid "
                                 "ports is 30000-32767")]),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}, []),
    ({"ports": [{"port": 80, "nodePort": 30080}]},
     [("spec.ports[0].nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'")]),
    ({"clusterIP": "10.96.0.300"},
     [("spec.clusterIPs[0]", 'Invalid value: "10.96.0.300": must be a valid IP address, (e.g. 10.9.8.7 or '
                             '2001:db8::ffff)')]),
    ({"clusterIP": "10.96.0.10"}, []),
    ({"type": "NodePort", "clusterIP": "None"},
     [("spec.clusterIPs[0]", 'Invalid value: "None": may not be set to \'None\' for NodePort services')]),
    ({"sessionAffinity": "Sticky"},
     [("spec.sessionAffinity", 'Unsupported value: "Sticky": supported values: "ClientIP", "None"')]),
    ({"sessionAffinity": "ClientIP"}, []),
    ({"selector": {"app": "web app"}},
     [("spec.selector", 'Invalid value: "web app": a valid label must be an empty string or consist of alphanumeric '
                        "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                        "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                        "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")]),
    ({"externalTrafficPolicy": "Local"},
     [("spec.externalTrafficPolicy", 'Invalid value: "Local": may only be set for externally-accessible services')]),
    ({"type": "ExternalName", "externalName": "db.example.com", "ports": []}, []),
    ({"type": "ExternalName", "ports": []}, [("spec.externalName", "Required value")]),
    ({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}, []),
])
def test_service_rules(change: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert service_with(change) == expected


def test_service_name_is_a_dns1035_label() -> None:
    obj = sample("Service")
    obj["metadata"]["name"] = "1web"
    assert errors("Service", obj) == [
        ("metadata.name", 'Invalid value: "1web": a DNS-1035 label must consist of lower case alphanumeric characters '
                          "or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. "
                          "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")]


def test_service_cluster_ip_is_immutable() -> None:
    base = sample("Service")
    base["spec"]["clusterIP"] = "10.96.0.10"
    assert update_errors("Service", lambda s: s["spec"].update(clusterIP="10.96.0.11"), base) == [
        ("spec.clusterIPs[0]", 'Invalid value: ["10.96.0.11"]: may not change once set')]


def test_service_update_may_omit_allocated_values() -> None:
    base = sample("Service")
    base["spec"].update(type="NodePort", clusterIP="10.96.0.10")
    base["spec"]["ports"][0]["nodePort"] = 30080

    def change(svc: dict[str, Any]) -> None:
        for field in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            del svc["spec"][field]
        del svc["spec"]["ports"][0]["nodePort"]

    assert update_errors("Service", change, base) == []


# --- core kinds ---------------------------------------------------------------------------------------------

CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                  "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")


@pytest.mark.parametrize(("obj", "expected"), [
    ({"data": {"bad key": "v"}}, [("data[bad key]", f'Invalid value: "bad key": {CONFIG_KEY_MSG}')]),
    ({"data": {"..": "v"}}, [("data[..]", "Invalid value: \"..\": must not be '..'")]),
    ({"data": {"big": "x" * (1024 * 1024 + 1)}}, [("", "Too long: must have at most 1048576 bytes")]),
    ({"data": {"k": "v"}, "binaryData": {"k": "dg=="}},
     [("data[k]", 'Invalid value: "k": duplicate of key present in binaryData')]),
    ({"binaryData": {"k": "not base64"}},
     [("binaryData[k]", 'Invalid value: "<secret contents redacted>": illegal base64 data at input byte 3')]),
])
def test_config_map_rules(obj: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert errors("ConfigMap", {"metadata": meta("cfg"), **obj}) == expected


@pytest.mark.parametrize(("obj", "expected"), [
    ({"data": {"pw": "%%%"}}, [("data[pw]", 'Invalid value: "<secret contents redacted>": illegal base64 data at '
                                            "input byte 0")]),
    ({"data": {"bad key": "eA=="}}, [("data[bad key]", f'Invalid value: "bad key": {CONFIG_KEY_MSG}')]),
    ({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}, [("data[tls.key]", "Required value")]),
    ({"stringData": {"pw": "secret"}}, []),
])
def test_secret_rules(obj: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert errors("Secret", {"metadata": meta("s"), **obj}) == expected


def test_secret_type_is_immutable() -> None:
    assert update_errors("Secret", lambda s: s.update(type="example.com/other")) == [
        ("type", 'Invalid value: "example.com/other": field is immutable')]


@pytest.mark.parametrize("kind", ["ConfigMap", "Secret"])
def test_immutable_data(kind: str) -> None:
    base = sample(kind)
    base["immutable"] = True
    assert update_errors(kind, lambda o: o.update(data={"other": "eA=="}), base) == [
        ("data", "Forbidden: field is immutable when `immutable` is set")]


def test_namespace_rules() -> None:
    obj = {"metadata": {"name": "Team.A"}, "spec": {"finalizers": ["cleanup"]}}
    assert errors("Namespace", obj) == [
        ("metadata.name", 'Invalid value: "Team.A": a lowercase RFC 1123 label must consist of lower case '
                          "alphanumeric characters or '-', and must start and end with an alphanumeric character "
                          "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                          "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
        ("spec.finalizers[0]", 'Invalid value: "cleanup": name is neither a standard finalizer name nor is it fully '
                               "qualified"),
    ]
    assert errors("Namespace", {"metadata": {"name": "a.b"}}) == [("metadata.name", 'Invalid value: "a.b": must not '
                                                                                    "contain dots")]


def test_node_rules() -> None:
    obj = sample("Node")
    obj["spec"]["taints"] = [{"key": "gpu", "effect": "NoRun"}, {"key": "gpu", "value": "a", "effect": "NoSchedule"},
                             {"key": "gpu", "value": "b", "effect": "NoSchedule"}]
    obj["spec"]["podCIDRs"] = ["10.0.0.0/33"]
    obj["status"]["capacity"]["memory"] = "-1"
    assert errors("Node", obj) == [
        ("metadata.taints[0].effect",
         'Unsupported value: "NoRun": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"'),
        ("metadata.taints[2]", 'Duplicate value: {"key":"gpu","value":"b","effect":"NoSchedule"}: taints must be '
                               "unique by key and effect pair"),
        ("spec.podCIDRs[0]", 'Invalid value: "10.0.0.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or '
                             '2001:db8::/64)'),
        ("status.capacity[memory]", 'Invalid value: "-1": must be greater than or equal to 0'),
        ("status.allocatable[memory]", 'Invalid value: "-1": must be greater than or equal to 0'),
    ]


def test_node_pod_cidrs_are_set_once() -> None:
    assert update_errors("Node", lambda n: n["spec"].update(podCIDRs=["10.244.2.0/24"])) == [
        ("spec.podCIDRs", 'Forbidden: node updates may not change podCIDR except from "" to valid')]


def test_event_rules() -> None:
    assert errors("Event", {"metadata": meta("e"), "reason": "x", "type": "Fatal"}) == [
        ("involvedObject", "Required value"),
        ("type", 'Unsupported value: "Fatal": supported values: "Normal", "Warning"'),
    ]
    obj = sample("Event")
    obj["involvedObject"]["namespace"] = "kube-system"
    assert errors("Event", obj) == [
        ("involvedObject.namespace", 'Invalid value: "kube-system": does not match event.namespace')]


def test_resource_quota_rules() -> None:
    obj = sample("ResourceQuota")
    obj["spec"]["hard"].update({"widgets": "1", "services": "1.5", "count/deployments.apps": "2"})
    obj["spec"]["scopes"] = ["Terminating", "NotTerminating"]
    assert errors("ResourceQuota", obj) == [
        ("spec.hard[widgets]", 'Invalid value: "widgets": must be a standard resource type or fully qualified'),
        ("spec.hard[widgets]", 'Invalid value: "widgets": must be a standard resource for quota'),
        ("spec.hard[services]", 'Invalid value: "1500m": must be an integer'),
        ("spec.scopes", 'Invalid value: ["Terminating","NotTerminating"]: conflicting scopes'),
    ]


def test_limit_range_rules() -> None:
    obj = sample("LimitRange")
    obj["spec"]["limits"] = [{"type": "Pod", "min": {"memory": "1Gi"}, "max": {"memory": "512Mi"}},
                             {"type": "Pod"}, {"type": "Widget"}]
    assert errors("LimitRange", obj) == [
        ("spec.limits[0].min[memory]", 'Invalid value: "1Gi": min value 1Gi is greater than max value 512Mi'),
        ("spec.limits[1].type", 'Duplicate value: "Pod"'),
        ("spec.limits[2].type", 'Invalid value: "Widget": must be a standard limit type or fully qualified'),
    ]


def test_endpoints_rules() -> None:
    obj = sample("Endpoints")
    obj["subsets"] = [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 80}, {"port": 81, "name": "b"}]}, {}]
    assert errors("Endpoints", obj) == [
        ("subsets[0].addresses[0].ip",
         'Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)'),
        ("subsets[0].ports[0].name", "Required value"),
        ("subsets[1]", "Required value: must specify `addresses` or `notReadyAddresses`"),
    ]


def test_endpoint_slice_rules() -> None:
    obj = sample("EndpointSlice")
    obj["addressType"] = "IPv5"
    obj["endpoints"].append({"addresses": []})
    assert errors("EndpointSlice", obj) == [
        ("addressType", 'Unsupported value: "IPv5": supported values: "FQDN", "IPv4", "IPv6"'),
        ("endpoints[1].addresses", "Required value: must contain at least 1 address"),
    ]
    obj = sample("EndpointSlice")
    obj["endpoints"][0]["addresses"] = ["fd00::1"]
    assert errors("EndpointSlice", obj) == [
        ("endpoints[0].addresses[0]", 'Invalid value: "fd00::1": must be a valid IPv4 address')]


def test_lease_rules() -> None:
    obj = sample("Lease")
    obj["spec"].update(leaseDurationSeconds=0, leaseTransitions=-1)
    assert errors("Lease", obj) == [
        ("spec.leaseDurationSeconds", "Invalid value: 0: must be greater than 0"),
        ("spec.leaseTransitions", "Invalid value: -1: must be greater than or equal to 0"),
    ]


def test_namespace_status_phase() -> None:
    ns = defaulted("Namespace", sample("Namespace"))
    terminating = copy.deepcopy(ns)
    terminating["status"]["phase"] = "Terminating"
    assert [(c.field, c.message) for c in validate_status_update(rt("Namespace"), terminating, ns)] == [
        ("status.Phase", "Invalid value: \"Terminating\": may only be 'Active' if `deletionTimestamp` is empty")]


# --- hostile input ----------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
# Keys validators look up, so random objects reach deep into the rules instead of being ignored.
FIELD_NAMES = sorted({
    "metadata", "spec", "status", "name", "namespace", "labels", "annotations", "generateName", "ownerReferences",
    "finalizers", "containers", "initContainers", "image", "ports", "containerPort", "protocol", "env", "valueFrom",
    "fieldRef", "fieldPath", "resources", "limits", "requests", "volumes", "volumeMounts", "emptyDir", "hostPath",
    "path", "configMap", "secret", "projected", "sources", "items", "livenessProbe", "httpGet", "exec", "selector",
    "matchLabels", "matchExpressions", "template", "strategy", "rollingUpdate", "maxSurge", "maxUnavailable",
    "replicas", "type", "clusterIP", "clusterIPs", "targetPort", "nodePort", "data", "binaryData", "stringData",
    "taints", "effect", "tolerations", "operator", "key", "value", "values", "subsets", "addresses", "endpoints",
    "addressType", "involvedObject", "hard", "scopes", "securityContext", "completionMode", "updateStrategy",
    "uid", "podCIDRs", "capacity", "sessionAffinity", "externalTrafficPolicy", "restartPolicy", "tcpSocket", "port",
})
KEYED_JSON = st.recursive(
    JSON,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), children, max_size=5),
    max_leaves=30,
)
KINDS = sorted(SAMPLES)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _replace(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return root


def _check_never_raises(kind: str, obj: Any, old: Any) -> None:
    resource = rt(kind)
    for candidate_old in (None, old):
        apply_defaults(resource, obj, candidate_old)
        causes = validate(resource, obj, candidate_old)
        assert all(isinstance(c, Cause) and isinstance(c.message, str) for c in causes)
    assert all(isinstance(c, Cause) for c in validate_status_update(resource, obj, old))


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(kind=st.sampled_from(KINDS), obj=KEYED_JSON, old=KEYED_JSON)
def test_validate_never_raises_on_arbitrary_json(kind: str, obj: Any, old: Any) -> None:
    _check_never_raises(kind, obj, old)


@FUZZ
@given(kind=st.sampled_from(KINDS), metadata=KEYED_JSON, spec=KEYED_JSON, status=KEYED_JSON)
def test_validate_never_raises_on_random_metadata_and_spec(kind: str, metadata: Any, spec: Any, status: Any) -> None:
    _check_never_raises(kind, {"metadata": metadata, "spec": spec, "status": status}, sample(kind))


@FUZZ
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_validate_never_raises_on_mutated_valid_objects(kind: str, data: st.DataObject) -> None:
    obj = defaulted(kind, sample(kind))
    old = copy.deepcopy(obj)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        path = data.draw(st.sampled_from(_paths(obj)))
        obj = _replace(obj, path, data.draw(KEYED_JSON))
    _check_never_raises(kind, obj, old)


def test_deep_nesting_is_reported_not_raised() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"spec": deep}
    old = defaulted("Pod", sample("Pod"))
    obj = defaulted("Pod", sample("Pod"))
    obj["spec"]["containers"][0]["securityContext"] = {"seLinuxOptions": deep}
    assert isinstance(validate(rt("Pod"), obj, old), list)


def test_service_update_without_cluster_ip_keeps_the_allocated_one() -> None:
    old = defaulted("Service", sample("Service"))
    old["spec"].update(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10"])
    new = sample("Service")
    apply_defaults(rt("Service"), new)  # no old: the allocator carries the IP over after validation
    assert validate(rt("Service"), new, old) == []
