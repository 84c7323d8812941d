"""Defaulting: the whole object a user gets back, as Kubernetes would return it."""

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.api.defaults import apply_defaults, image_tag
from skiff.api.resources import REGISTRY, ResourceType

UID = "6a1c6b5e-1d3f-4e7a-9a55-0c9d2b1f4e11"

CONTAINER_DEFAULTS = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}
TEMPLATE_SPEC_DEFAULTS = {
    "dnsPolicy": "ClusterFirst",
    "restartPolicy": "Always",
    "schedulerName": "default-scheduler",
    "securityContext": {},
    "terminationGracePeriodSeconds": 30,
}


def rt(kind: str) -> ResourceType:
    return next(r for r in REGISTRY.types if r.kind == kind)


def defaulted(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    apply_defaults(rt(kind), obj, old)
    return obj


def template(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}],
                                                             **spec}}


DEFAULTED_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "nginx:1.25", "imagePullPolicy": "IfNotPresent",
                             **CONTAINER_DEFAULTS}],
             **TEMPLATE_SPEC_DEFAULTS},
}


# --- pods ------------------------------------------------------------------------------------------

def test_pod() -> None:
    pod = defaulted("Pod", {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "containers": [{
                "name": "web", "image": "nginx",
                "ports": [{"containerPort": 80}],
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}, "requests": {"cpu": 0.25}},
                "livenessProbe": {"httpGet": {"port": 80}},
                "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
            }],
            "volumes": [
                {"name": "scratch"},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {"name": "host", "hostPath": {"path": "/var/log"}},
                {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
            ],
        },
    })
    assert pod == {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "containers": [{
                "name": "web", "image": "nginx", "imagePullPolicy": "Always", **CONTAINER_DEFAULTS,
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}],
                "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "250m", "memory": "1Gi"}},
                "livenessProbe": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                                  "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "readinessProbe": {"tcpSocket": {"port": 80}, "timeoutSeconds": 1, "periodSeconds": 5,
                                   "successThreshold": 1, "failureThreshold": 3},
            }],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
                {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {"name": "host", "hostPath": {"path": "/var/log", "type": ""}},
                {"name": "token", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}}]}},
            ],
            **TEMPLATE_SPEC_DEFAULTS,
            "enableServiceLinks": True,
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "priority": 0,
        },
    }


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.25", "IfNotPresent"),
    ("registry.local:5000/team/nginx", "Always"),
    ("registry.local:5000/team/nginx:1.25", "IfNotPresent"),
    ("nginx@sha256:0123456789abcdef", "IfNotPresent"),
    ("nginx:latest@sha256:0123456789abcdef", "Always"),
])
def test_image_pull_policy_follows_the_tag(image: str, policy: str) -> None:
    pod = defaulted("Pod", {"spec": {"containers": [{"name": "c", "image": image}]}})
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_image_tag() -> None:
    assert image_tag("localhost:5000/app") == "latest"
    assert image_tag("app:v1") == "v1"


def test_explicit_values_are_kept() -> None:
    spec = {"containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}], "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0, "serviceAccountName": "builder", "enableServiceLinks": False,
            "priority": 100}
    pod = defaulted("Pod", {"spec": copy.deepcopy(spec)})
    for key, value in spec.items():
        if key != "containers":
            assert pod["spec"][key] == value
    assert pod["spec"]["serviceAccount"] == "builder"
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "Never"


def test_host_network_pods_get_host_ports() -> None:
    pod = defaulted("Pod", {"spec": {"hostNetwork": True, "containers": [
        {"name": "c", "image": "x", "ports": [{"containerPort": 9100}]}]}})
    assert pod["spec"]["containers"][0]["ports"] == [{"containerPort": 9100, "protocol": "TCP", "hostPort": 9100}]


def test_templates_get_pod_spec_defaults_but_not_pod_only_ones() -> None:
    deploy = defaulted("Deployment", {"spec": {"template": template(containers=[
        {"name": "web", "image": "nginx:1.25", "resources": {"limits": {"cpu": "1"}}}])}})
    spec = deploy["spec"]["template"]["spec"]
    assert spec["containers"][0]["resources"] == {"limits": {"cpu": "1"}}
    for pod_only in ("enableServiceLinks", "serviceAccountName", "priority"):
        assert pod_only not in spec


# --- workloads ---------------------------------------------------------------------------------------

def test_deployment() -> None:
    deploy = defaulted("Deployment", {"metadata": {"name": "web", "namespace": "default"},
                                      "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}})
    assert deploy["spec"] == {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": DEFAULTED_TEMPLATE,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": 600,
    }


def test_recreate_deployment_gets_no_rolling_update() -> None:
    deploy = defaulted("Deployment", {"spec": {"strategy": {"type": "Recreate"}, "replicas": 0}})
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert deploy["spec"]["replicas"] == 0


def test_replica_set() -> None:
    rs = defaulted("ReplicaSet", {"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}})
    assert rs["spec"] == {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": DEFAULTED_TEMPLATE}


def test_daemon_set() -> None:
    ds = defaulted("DaemonSet", {"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}})
    assert ds["spec"] == {
        "selector": {"matchLabels": {"app": "web"}},
        "template": DEFAULTED_TEMPLATE,
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
        "revisionHistoryLimit": 10,
    }


def test_job_generates_its_selector_from_the_uid() -> None:
    job = defaulted("Job", {"metadata": {"name": "pi", "namespace": "default", "uid": UID},
                            "spec": {"template": template(restartPolicy="Never")}})
    labels = {"app": "web", "job-name": "pi", "batch.kubernetes.io/job-name": "pi", "controller-uid": UID,
              "batch.kubernetes.io/controller-uid": UID}
    assert job == {
        "metadata": {"name": "pi", "namespace": "default", "uid": UID, "labels": {"app": "web"}},
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 6,
            "completionMode": "NonIndexed",
            "suspend": False,
            "podReplacementPolicy": "TerminatingOrFailed",
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": UID}},
            "template": {"metadata": {"labels": labels},
                         "spec": {**DEFAULTED_TEMPLATE["spec"], "restartPolicy": "Never"}},
        },
    }


def test_job_parallelism_alone_leaves_completions_unset() -> None:
    job = defaulted("Job", {"spec": {"parallelism": 3}})
    assert job["spec"]["parallelism"] == 3
    assert "completions" not in job["spec"]


def test_job_without_uid_gets_no_selector() -> None:
    job = defaulted("Job", {"metadata": {"name": "pi"}, "spec": {"template": template()}})
    assert "selector" not in job["spec"]


def test_job_manual_selector_is_left_alone() -> None:
    job = defaulted("Job", {"metadata": {"name": "pi", "uid": UID}, "spec": {
        "manualSelector": True, "selector": {"matchLabels": {"app": "web"}}, "template": template()}})
    assert job["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert job["spec"]["template"]["metadata"]["labels"] == {"app": "web"}


# --- services ---------------------------------------------------------------------------------------------

def test_cluster_ip_service() -> None:
    svc = defaulted("Service", {"metadata": {"name": "web", "namespace": "default"},
                                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 443,
                                                                                           "targetPort": "https"}]}})
    assert svc["spec"] == {
        "selector": {"app": "web"},
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80},
                  {"port": 443, "protocol": "TCP", "targetPort": "https"}],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "internalTrafficPolicy": "Cluster",
        "ipFamilyPolicy": "SingleStack",
        "ipFamilies": ["IPv4"],
    }


def test_node_port_and_load_balancer_services() -> None:
    node_port = defaulted("Service", {"spec": {"type": "NodePort", "ports": [{"port": 80}]}})
    assert node_port["spec"]["externalTrafficPolicy"] == "Cluster"
    lb = defaulted("Service", {"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    assert lb["spec"]["externalTrafficPolicy"] == "Cluster"
    assert lb["spec"]["allocateLoadBalancerNodePorts"] is True


def test_external_name_service_gets_no_ip_families() -> None:
    svc = defaulted("Service", {"spec": {"type": "ExternalName", "externalName": "db.example.com"}})
    assert svc["spec"] == {"type": "ExternalName", "externalName": "db.example.com", "sessionAffinity": "None"}


def test_client_ip_affinity_gets_a_timeout() -> None:
    svc = defaulted("Service", {"spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}})
    assert svc["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}


@pytest.mark.parametrize(("spec", "ips", "families"), [
    ({"clusterIP": "10.96.0.10"}, ["10.96.0.10"], ["IPv4"]),
    ({"clusterIPs": ["fd00::10"]}, ["fd00::10"], ["IPv6"]),
    ({"clusterIP": "None"}, ["None"], ["IPv4"]),
])
def test_cluster_ip_fields_are_kept_in_sync(spec: dict[str, Any], ips: list[str], families: list[str]) -> None:
    svc = defaulted("Service", {"spec": {"ports": [{"port": 80}], **spec}})
    assert (svc["spec"]["clusterIP"], svc["spec"]["clusterIPs"], svc["spec"]["ipFamilies"]) == (ips[0], ips, families)


def test_service_update_keeps_allocations() -> None:
    old = defaulted("Service", {"metadata": {"name": "web", "uid": UID, "creationTimestamp": "2024-01-01T00:00:00Z"},
                                "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                                         "ports": [{"port": 80, "nodePort": 30080}]}})
    new = defaulted("Service", {"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}},
                    old)
    assert new == old


def test_service_update_that_changes_cluster_ip_moves_cluster_ips_too() -> None:
    old = defaulted("Service", {"spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}})
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.96.0.11"
    assert defaulted("Service", new, old)["spec"]["clusterIPs"] == ["10.96.0.11"]


def test_endpoints_and_slices_get_tcp() -> None:
    ep = defaulted("Endpoints", {"subsets": [{"ports": [{"port": 80}]}]})
    assert ep["subsets"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]
    es = defaulted("EndpointSlice", {"addressType": "IPv4", "ports": [{"port": 80}]})
    assert es["ports"] == [{"port": 80, "protocol": "TCP"}]


# --- cluster and config objects ------------------------------------------------------------------------------

def test_namespace() -> None:
    assert defaulted("Namespace", {"metadata": {"name": "team-a"}}) == {
        "metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def test_cluster_scoped_objects_lose_their_namespace() -> None:
    node = defaulted("Node", {"metadata": {"name": "n1", "namespace": "default"}})
    assert node["metadata"] == {"name": "n1"}


def test_secret_type_and_string_data() -> None:
    secret = defaulted("Secret", {"metadata": {"name": "s"}, "data": {"a": "YQ=="}, "stringData": {"b": "hello"}})
    assert secret == {"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "YQ==", "b": "aGVsbG8="}}


def test_secret_string_data_wins_over_data() -> None:
    secret = defaulted("Secret", {"data": {"a": "YQ=="}, "stringData": {"a": "b"}, "type": "kubernetes.io/tls"})
    assert secret == {"data": {"a": "Yg=="}, "type": "kubernetes.io/tls"}


def test_node_allocatable_defaults_to_capacity() -> None:
    node = defaulted("Node", {"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": 4, "memory": "8192Mi"}}})
    assert node["status"] == {"capacity": {"cpu": "4", "memory": "8Gi"}, "allocatable": {"cpu": "4", "memory": "8Gi"}}


def test_limit_range_container_defaults() -> None:
    lr = defaulted("LimitRange", {"spec": {"limits": [
        {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}},
        {"type": "Pod", "max": {"cpu": "4"}}]}})
    assert lr["spec"]["limits"] == [
        {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}, "default": {"cpu": "2"},
         "defaultRequest": {"cpu": "2", "memory": "64Mi"}},
        {"type": "Pod", "max": {"cpu": "4"}},
    ]


def test_update_carries_server_set_metadata() -> None:
    old = {"metadata": {"name": "cfg", "uid": UID, "creationTimestamp": "2024-01-01T00:00:00Z"}}
    new = defaulted("ConfigMap", {"metadata": {"name": "cfg", "creationTimestamp": "2030-01-01T00:00:00Z"}}, old)
    assert new["metadata"] == old["metadata"]


@pytest.mark.parametrize("kind", ["ConfigMap", "ServiceAccount", "Event", "Lease"])
def test_kinds_without_defaults_are_unchanged(kind: str) -> None:
    obj = {"metadata": {"name": "x", "namespace": "default"}, "data": {"k": "v"}}
    assert defaulted(kind, copy.deepcopy(obj)) == obj


# --- hostile input -------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["metadata", "spec", "template", "containers", "ports", "volumes", "resources",
                                       "limits", "selector", "clusterIP", "stringData", "data", "status", "capacity",
                                       "strategy", "type", "uid", "name", "labels"]) | st.text(max_size=5),
                      children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(r.kind for r in REGISTRY.types)), obj=JSON, old=JSON)
def test_apply_defaults_never_raises(kind: str, obj: Any, old: Any) -> None:
    apply_defaults(rt(kind), obj, old)
    apply_defaults(rt(kind), obj)


def test_namespace_finalizer_is_added_on_create_only() -> None:
    terminating = {"metadata": {"name": "team-a", "deletionTimestamp": "2024-01-01T00:00:00Z"},
                   "spec": {"finalizers": []}, "status": {"phase": "Terminating"}}
    assert defaulted("Namespace", copy.deepcopy(terminating))["spec"] == {"finalizers": []}
    live = defaulted("Namespace", {"metadata": {"name": "team-a"}})
    assert defaulted("Namespace", {"metadata": {"name": "team-a"}, "spec": {}}, live)["spec"] == {}
