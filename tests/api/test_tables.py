"""Server-side Table printing: the cells kubectl shows, as Kubernetes renders them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from control_plane.api import tables
from control_plane.api.tables import columns_for, human_duration, to_row, to_table
from skiff.api.resources import REGISTRY, ResourceType

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ago(**kwargs: float) -> str:
    return (NOW - timedelta(**kwargs)).strftime("%Y-%m-%dT%H:%M:%SZ")


def rt(name: str) -> ResourceType:
    found = REGISTRY.resolve(name)
    assert found is not None
    return found


def cells(resource: str, obj: dict[str, Any]) -> list[Any]:
    return list(to_row(rt(resource), obj, now=NOW)["cells"])


def header(resource: str, *, wide: bool = False) -> list[str]:
    return [c.name for c in columns_for(rt(resource)) if wide or c.priority == 0]


def meta(name: str, age: timedelta = timedelta(hours=1), **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "uid": f"uid-{name}",
            "creationTimestamp": (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}


# --- AGE --------------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "want"), [
    (-2, "<invalid>"), (-1.5, "0s"), (0, "0s"), (1, "1s"), (70, "70s"), (119.9, "119s"), (120, "2m"),
    (121, "2m1s"), (190, "3m10s"), (599, "9m59s"), (600, "10m"), (601, "10m"), (70 * 60, "70m"),
    (3 * 3600 - 1, "179m"), (3 * 3600, "3h"), (3 * 3600 + 240, "3h4m"), (8 * 3600 - 1, "7h59m"),
    (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"), (49 * 3600, "2d1h"), (8 * 86400 - 1, "7d23h"),
    (8 * 86400, "8d"), (367 * 86400, "367d"), (2 * 365 * 86400, "2y"), ((365 * 2 * 24 + 25) * 3600, "2y1d"),
    (8 * 365 * 86400 - 1, "7y364d"), (9 * 365 * 86400, "9y"),
])
def test_human_duration_matches_kubernetes(seconds: float, want: str) -> None:
    assert human_duration(seconds) == want


# --- the Table envelope ------------------------------------------------------------------

def test_table_envelope_and_partial_object_metadata() -> None:
    pod = {"kind": "Pod", "apiVersion": "v1", "metadata": meta("web-1", labels={"app": "web"}),
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}, "status": {"phase": "Pending"}}
    table = to_table(rt("pods"), [pod], list_metadata={"resourceVersion": "42", "continue": ""}, now=NOW)
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42"}
    assert table["columnDefinitions"][0] == {
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": table["columnDefinitions"][0]["description"],
    }
    assert table["columnDefinitions"][0]["description"].startswith("Name must be unique within a namespace.")
    assert table["rows"] == [{
        "cells": ["web-1", "0/1", "Pending", "0", "60m", "<none>", "<none>", "<none>", "<none>"],
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": pod["metadata"]},
    }]


def test_include_object_modes_and_continue() -> None:
    cm = {"metadata": meta("cfg"), "data": {"a": "1"}}
    full = to_table(rt("configmaps"), [cm], list_metadata={"resourceVersion": "7", "continue": "tok",
                                                          "remainingItemCount": 3},
                    include_object="Object", now=NOW)
    assert full["metadata"] == {"resourceVersion": "7", "continue": "tok", "remainingItemCount": 3}
    assert full["rows"][0]["object"] == {"kind": "ConfigMap", "apiVersion": "v1", **cm}
    bare = to_table(rt("configmaps"), [cm], list_metadata={}, include_object="None", now=NOW)
    assert bare["metadata"] == {}
    assert bare["rows"] == [{"cells": ["cfg", 1, "60m"]}]


def test_watch_events_after_the_first_carry_no_headers() -> None:
    table = to_table(rt("configmaps"), [], list_metadata={"resourceVersion": "9"}, no_headers=True, now=NOW)
    assert table["columnDefinitions"] == []
    assert table["rows"] == []


# --- pods -------------------------------------------------------------------------------

def test_pod_columns() -> None:
    assert header("pods") == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert header("pods", wide=True) == ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node",
                                         "Nominated Node", "Readiness Gates"]
    assert [c.type for c in columns_for(rt("pods"))][:4] == ["string", "string", "string", "string"]


def running(name: str, restarts: int = 0, finished: str | None = None, ready: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {"name": name, "ready": ready, "restartCount": restarts, "image": "nginx",
                              "state": {"running": {"startedAt": ago(minutes=30)}}}
    if finished:
        status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": finished}}
    return status


def test_pod_running_wide() -> None:
    pod = {
        "metadata": meta("web-1", timedelta(days=3, hours=2)),
        "spec": {"nodeName": "node-a", "containers": [{"name": "a"}, {"name": "b"}],
                 "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}],
                   "nominatedNodeName": "node-b",
                   "conditions": [{"type": "Ready", "status": "True"}, {"type": "example.com/lb", "status": "True"},
                                  {"type": "example.com/dns", "status": "False"}],
                   "containerStatuses": [running("a"), running("b", restarts=2, finished=ago(minutes=5))]},
    }
    assert cells("pods", pod) == ["web-1", "2/2", "Running", "2 (5m ago)", "3d2h",
                                  "10.244.1.5", "node-a", "node-b", "1/2"]


def test_pod_crash_loop() -> None:
    pod = {
        "metadata": meta("api-7d9f", timedelta(minutes=61)),
        "spec": {"containers": [{"name": "app"}, {"name": "proxy"}]},
        "status": {"phase": "Running", "podIP": "10.244.2.3", "containerStatuses": [
            {"name": "app", "ready": False, "restartCount": 5,
             "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(seconds=301)}}},
            running("proxy"),
        ]},
    }
    assert cells("pods", pod)[:5] == ["api-7d9f", "1/2", "CrashLoopBackOff", "5 (5m1s ago)", "61m"]


@pytest.mark.parametrize(("status", "want"), [
    ({"phase": "Pending"}, "Pending"),
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
     "SchedulingGated"),
    ({"phase": "Pending", "containerStatuses": [
        {"name": "c", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]},
     "ContainerCreating"),
    ({"phase": "Pending", "containerStatuses": [
        {"name": "c", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}}]},
     "ErrImagePull"),
    ({"phase": "Running", "containerStatuses": [
        {"name": "c", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 137}}}]},
     "ExitCode:137"),
    ({"phase": "Running", "containerStatuses": [
        {"name": "c", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "signal": 9}}}]},
     "Signal:9"),
    ({"phase": "Failed", "containerStatuses": [
        {"name": "c", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]},
     "Error"),
    ({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}, "Evicted"),
    ({"phase": "Running", "containerStatuses": [
        {"name": "c", "ready": False, "restartCount": 0, "state": {"running": {}}}]}, "Running"),
])
def test_pod_status_reasons(status: dict[str, Any], want: str) -> None:
    pod = {"metadata": meta("p"), "spec": {"containers": [{"name": "c"}]}, "status": status}
    assert cells("pods", pod)[2] == want


def test_pod_completed_carries_row_condition() -> None:
    pod = {"metadata": meta("job-x-abcde", timedelta(hours=25)), "spec": {"containers": [{"name": "c"}]},
           "status": {"phase": "Succeeded", "containerStatuses": [
               {"name": "c", "ready": False, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": ago(hours=24)}}}]}}
    row = to_row(rt("pods"), pod, now=NOW)
    assert row["cells"][:5] == ["job-x-abcde", "0/1", "Completed", "0", "25h"]
    assert row["conditions"] == [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                  "message": "The pod has completed successfully."}]


def test_pod_completed_container_with_another_still_running() -> None:
    status = {"phase": "Running", "containerStatuses": [
        {"name": "a", "ready": False, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        running("b"),
    ]}
    pod = {"metadata": meta("p"), "spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": status}
    assert cells("pods", pod)[1:3] == ["1/2", "NotReady"]
    status["conditions"] = [{"type": "Ready", "status": "True"}]
    assert cells("pods", pod)[1:3] == ["1/2", "Running"]


def test_pod_init_containers() -> None:
    spec = {"initContainers": [{"name": "migrate"}, {"name": "warm"}], "containers": [{"name": "app"}]}
    waiting_app = {"name": "app", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}

    def pod(*init_statuses: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": meta("p"), "spec": spec,
                "status": {"phase": "Pending", "initContainerStatuses": list(init_statuses),
                           "containerStatuses": [waiting_app]}}

    done = {"name": "migrate", "ready": True, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}
    assert cells("pods", pod(
        {"name": "migrate", "ready": False, "restartCount": 0, "state": {"running": {}}},
        {"name": "warm", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
    ))[1:4] == ["0/1", "Init:0/2", "0"]
    assert cells("pods", pod(done, {"name": "warm", "ready": False, "restartCount": 3,
                                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(seconds=40)}}},
                             ))[1:4] == ["0/1", "Init:CrashLoopBackOff", "3 (40s ago)"]
    assert cells("pods", pod(done, {"name": "warm", "ready": False, "restartCount": 0,
                                    "state": {"terminated": {"exitCode": 3}}}))[2] == "Init:ExitCode:3"
    assert cells("pods", pod(done, {"name": "warm", "ready": False, "restartCount": 0,
                                    "state": {"terminated": {"exitCode": 1, "reason": "OOMKilled"}}}))[2] == "Init:OOMKilled"


def test_pod_sidecar_init_container_counts_as_a_container() -> None:
    pod = {"metadata": meta("p"),
           "spec": {"initContainers": [{"name": "log", "restartPolicy": "Always"}], "containers": [{"name": "app"}]},
           "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                      "initContainerStatuses": [{"name": "log", "ready": True, "started": True, "restartCount": 1,
                                                 "state": {"running": {}},
                                                 "lastState": {"terminated": {"exitCode": 1,
                                                                              "finishedAt": ago(minutes=2)}}}],
                      "containerStatuses": [running("app")]}}
    assert cells("pods", pod)[1:4] == ["2/2", "Running", "1 (2m ago)"]


def test_pod_terminating_and_node_lost() -> None:
    pod = {"metadata": meta("p", deletionTimestamp=ago(seconds=5)), "spec": {"containers": [{"name": "c"}]},
           "status": {"phase": "Running", "containerStatuses": [running("c")]}}
    assert cells("pods", pod)[2] == "Terminating"
    pod["status"]["reason"] = "NodeLost"
    assert cells("pods", pod)[2] == "Unknown"
    done = {"metadata": meta("p", deletionTimestamp=ago(seconds=5)), "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "c", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}
    assert cells("pods", done)[2] == "Completed"


# --- nodes and namespaces ----------------------------------------------------------------

def node(name: str, ready: str | None, **spec: Any) -> dict[str, Any]:
    conditions = [{"type": "MemoryPressure", "status": "False"}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready})
    return {
        "metadata": {"name": name, "creationTimestamp": ago(days=12),
                     "labels": {"kubernetes.io/hostname": name, "node-role.kubernetes.io/control-plane": "",
                                "node-role.kubernetes.io/worker": "", "kubernetes.io/role": "edge"}},
        "spec": spec,
        "status": {"conditions": conditions,
                   "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": "10.0.0.4"}],
                   "nodeInfo": {"kubeletVersion": "v1.30.0-skiff", "osImage": "Debian GNU/Linux 12 (bookworm)",
                                "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "docker://24.0.7"}},
    }


def test_node_cells() -> None:
    assert header("nodes", wide=True) == ["Name", "Status", "Roles", "Age", "Version", "Internal-IP", "External-IP",
                                          "OS-Image", "Kernel-Version", "Container-Runtime"]
    assert cells("nodes", node("node-a", "True")) == [
        "node-a", "Ready", "control-plane,edge,worker", "12d", "v1.30.0-skiff", "10.0.0.4", "<none>",
        "Debian GNU/Linux 12 (bookworm)", "6.1.0-18-amd64", "docker://24.0.7"]
    assert cells("nodes", node("node-b", "Unknown", unschedulable=True))[1] == "NotReady,SchedulingDisabled"
    assert cells("nodes", node("node-c", None))[1] == "Unknown"
    bare = {"metadata": {"name": "bare", "creationTimestamp": ago(days=400)}}
    assert cells("nodes", bare) == ["bare", "Unknown", "<none>", "400d", "", "<none>", "<none>",
                                    "<unknown>", "<unknown>", "<unknown>"]


def test_namespace_cells() -> None:
    assert header("namespaces") == ["Name", "Status", "Age"]
    ns = {"metadata": {"name": "kube-system", "creationTimestamp": ago(days=3 * 365)}, "status": {"phase": "Active"}}
    assert cells("namespaces", ns) == ["kube-system", "Active", "3y"]
    gone = {"metadata": {"name": "old", "creationTimestamp": ago(minutes=5), "deletionTimestamp": ago(seconds=1)},
            "status": {"phase": "Terminating"}}
    assert cells("namespaces", gone) == ["old", "Terminating", "5m"]


# --- workloads ----------------------------------------------------------------------------

TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}, {"name": "log", "image": "busybox"}],
                     "nodeSelector": {"kubernetes.io/os": "linux", "disk": "ssd"}}}


def test_deployment_cells() -> None:
    assert header("deployments") == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    deploy = {"metadata": meta("web", timedelta(minutes=3, seconds=22)),
              "spec": {"replicas": 3, "template": TEMPLATE,
                       "selector": {"matchLabels": {"app": "web"},
                                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                                                         {"key": "canary", "operator": "DoesNotExist"}]}},
              "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert cells("deployments", deploy) == ["web", "2/3", 3, 2, "3m22s", "nginx,log", "nginx:1.25,busybox",
                                            "app=web,!canary,tier in (be,fe)"]
    fresh = {"metadata": meta("new", timedelta(seconds=4)), "spec": {"template": TEMPLATE}}
    assert cells("deployments", fresh) == ["new", "0/1", 0, 0, "4s", "nginx,log", "nginx:1.25,busybox", ""]


def test_replicaset_and_daemonset_cells() -> None:
    assert header("replicasets") == ["Name", "Desired", "Current", "Ready", "Age"]
    rs = {"metadata": meta("web-5d8f7c", timedelta(hours=5)),
          "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8f7c"}},
                   "template": TEMPLATE},
          "status": {"replicas": 3, "readyReplicas": 1}}
    assert cells("replicasets", rs) == ["web-5d8f7c", 3, 3, 1, "5h", "nginx,log", "nginx:1.25,busybox",
                                        "app=web,pod-template-hash=5d8f7c"]
    assert header("daemonsets") == ["Name", "Desired", "Current", "Ready", "Up-to-date", "Available",
                                    "Node Selector", "Age"]
    ds = {"metadata": meta("proxy", timedelta(days=2)),
          "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE},
          "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                     "updatedNumberScheduled": 3, "numberAvailable": 2}}
    assert cells("daemonsets", ds) == ["proxy", 3, 3, 2, 3, 2, "disk=ssd,kubernetes.io/os=linux", "2d",
                                       "nginx,log", "nginx:1.25,busybox", "app=web"]
    no_selector = {"metadata": meta("x"), "spec": {"template": {"spec": {"containers": []}}}}
    assert cells("daemonsets", no_selector)[6:] == ["<none>", "60m", "", "", "<none>"]


def test_job_cells() -> None:
    assert header("jobs") == ["Name", "Status", "Completions", "Duration", "Age"]
    done = {"metadata": meta("pi", timedelta(minutes=10)),
            "spec": {"completions": 1, "parallelism": 1, "template": TEMPLATE,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}}},
            "status": {"succeeded": 1, "startTime": ago(minutes=10), "completionTime": ago(minutes=9, seconds=15),
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                      {"type": "Complete", "status": "True"}]}}
    assert cells("jobs", done) == ["pi", "Complete", "1/1", "45s", "10m", "nginx,log", "nginx:1.25,busybox",
                                   "batch.kubernetes.io/controller-uid=abc"]
    work_queue = {"metadata": meta("q", timedelta(hours=1)), "spec": {"parallelism": 3, "template": TEMPLATE},
                  "status": {"active": 3, "startTime": ago(minutes=59)}}
    assert cells("jobs", work_queue)[:5] == ["q", "Running", "0/1 of 3", "59m", "60m"]
    failed = {"metadata": meta("f"), "spec": {"completions": 5, "template": TEMPLATE},
              "status": {"failed": 6, "succeeded": 2, "conditions": [{"type": "Failed", "status": "True"}]}}
    assert cells("jobs", failed)[:4] == ["f", "Failed", "2/5", ""]
    suspended = {"metadata": meta("s"), "spec": {"completions": 2, "suspend": True, "template": TEMPLATE},
                 "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}
    assert cells("jobs", suspended)[1] == "Suspended"


# --- services and endpoints ----------------------------------------------------------------

def test_service_cells() -> None:
    assert header("services") == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]
    node_port = {"metadata": meta("web", timedelta(days=1)),
                 "spec": {"type": "NodePort", "clusterIP": "10.96.12.7", "clusterIPs": ["10.96.12.7"],
                          "selector": {"app": "web", "tier": "fe"},
                          "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080,
                                     "protocol": "TCP"},
                                    {"name": "https", "port": 443, "protocol": "TCP"}]}}
    assert cells("services", node_port) == ["web", "NodePort", "10.96.12.7", "<none>", "80:30080/TCP,443/TCP",
                                            "24h", "app=web,tier=fe"]
    kubernetes = {"metadata": meta("kubernetes", timedelta(days=30)),
                  "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
                           "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}
    assert cells("services", kubernetes) == ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP", "30d",
                                             "<none>"]
    headless = {"metadata": meta("db"), "spec": {"clusterIP": "None", "ports": [{"port": 53, "protocol": "UDP"}],
                                                 "externalIPs": ["192.0.2.10"]}}
    assert cells("services", headless)[1:5] == ["ClusterIP", "None", "192.0.2.10", "53/UDP"]
    lb = {"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIP": "10.96.3.3", "ports": []}}
    assert cells("services", lb)[3:5] == ["<pending>", "<none>"]
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}}
    assert cells("services", lb)[3] == "203.0.113.9,lb.example.com"
    external = {"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "db.example.com"}}
    assert cells("services", external)[1:5] == ["ExternalName", "<none>", "db.example.com", "<none>"]


def test_endpoints_cells() -> None:
    assert header("endpoints") == ["Name", "Endpoints", "Age"]
    eps = {"metadata": meta("web"), "subsets": [
        {"addresses": [{"ip": "10.244.1.2"}, {"ip": "10.244.2.3"}], "ports": [{"port": 80, "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.244.3.4"}, {"ip": "10.244.4.5"}], "ports": [{"port": 80, "protocol": "TCP"}]},
    ]}
    assert cells("endpoints", eps) == ["web", "10.244.1.2:80,10.244.2.3:80,10.244.3.4:80 + 1 more...", "60m"]
    two = {"metadata": meta("two"), "subsets": [
        {"addresses": [{"ip": "10.244.1.2"}, {"ip": "fd00::7"}], "ports": [{"port": 8080}]}]}
    assert cells("endpoints", two)[1] == "10.244.1.2:8080,[fd00::7]:8080"
    headless = {"metadata": meta("hl"), "subsets": [{"addresses": [{"ip": "10.244.1.2"}]}]}
    assert cells("endpoints", headless)[1] == "10.244.1.2"
    assert cells("endpoints", {"metadata": meta("empty")})[1] == "<none>"
    not_ready = {"metadata": meta("nr"), "subsets": [{"notReadyAddresses": [{"ip": "10.244.1.2"}],
                                                       "ports": [{"port": 80}]}]}
    assert cells("endpoints", not_ready)[1] == ""


def test_endpointslice_cells() -> None:
    assert header("endpointslices") == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    eps = {"metadata": meta("web-abc12"), "addressType": "IPv4",
           "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "metrics"}, {}],
           "endpoints": [{"addresses": ["10.244.1.2"]}, {"addresses": ["10.244.2.3"]},
                         {"addresses": ["10.244.3.4"]}, {"addresses": ["10.244.4.5"]}]}
    assert cells("endpointslices", eps) == ["web-abc12", "IPv4", "80,metrics,*",
                                            "10.244.1.2,10.244.2.3,10.244.3.4 + 1 more...", "60m"]
    empty: dict[str, Any] = {"metadata": meta("e"), "addressType": "IPv4", "ports": None, "endpoints": []}
    assert cells("endpointslices", empty) == ["e", "IPv4", "<unset>", "<unset>", "60m"]


# --- events -----------------------------------------------------------------------------

def test_event_cells() -> None:
    assert header("events") == ["Last Seen", "Type", "Reason", "Object", "Message"]
    assert header("events", wide=True) == ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source",
                                           "Message", "First Seen", "Count", "Name"]
    ev = {"metadata": meta("web-1.17c3a"), "type": "Warning", "reason": "BackOff",
          "message": "Back-off restarting failed container app in pod web-1_default(uid)\n",
          "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web-1",
                             "fieldPath": "spec.containers{app}"},
          "source": {"component": "kubelet", "host": "node-a"},
          "firstTimestamp": ago(minutes=12), "lastTimestamp": ago(seconds=30), "count": 7}
    assert cells("events", ev) == ["30s", "Warning", "BackOff", "pod/web-1", "spec.containers{app}",
                                   "kubelet, node-a",
                                   "Back-off restarting failed container app in pod web-1_default(uid)",
                                   "12m", 7, "web-1.17c3a"]
    new_api = {"metadata": meta("web.abc"), "type": "Normal", "reason": "ScalingReplicaSet", "message": "Scaled up",
               "involvedObject": {"kind": "Deployment", "name": "web"}, "eventTime": "2024-05-01T11:58:00.000000Z",
               "reportingComponent": "deployment-controller", "reportingInstance": ""}
    assert cells("events", new_api) == ["2m", "Normal", "ScalingReplicaSet", "deployment/web", "",
                                        "deployment-controller", "Scaled up", "2m", 1, "web.abc"]
    series = dict(new_api, series={"count": 4, "lastObservedTime": "2024-05-01T11:59:50.000000Z"})
    assert cells("events", series)[0] == "10s"
    assert cells("events", series)[8] == 4
    no_time = {"metadata": meta("x"), "involvedObject": {"kind": "Node"}}
    assert cells("events", no_time)[:4] == ["<unknown>", "", "", "node"]


# --- configuration and the rest -------------------------------------------------------------

def test_simple_kinds() -> None:
    cm = {"metadata": meta("kube-root-ca.crt", timedelta(days=9)), "data": {"ca.crt": "..."},
          "binaryData": {"blob": "AAEC"}}
    assert cells("configmaps", cm) == ["kube-root-ca.crt", 2, "9d"]
    assert header("secrets") == ["Name", "Type", "Data", "Age"]
    secret = {"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "..", "tls.key": ".."}}
    assert cells("secrets", secret) == ["tls", "kubernetes.io/tls", 2, "60m"]
    sa = {"metadata": meta("default", timedelta(days=9))}
    assert cells("serviceaccounts", sa) == ["default", 0, "9d"]
    assert cells("serviceaccounts", dict(sa, secrets=[{"name": "tok"}])) == ["default", 1, "9d"]
    lease = {"metadata": meta("node-a", timedelta(days=12)), "spec": {"holderIdentity": "node-a",
                                                                      "leaseDurationSeconds": 40}}
    assert cells("leases", lease) == ["node-a", "node-a", "12d"]
    assert cells("leases", {"metadata": meta("free")}) == ["free", "", "60m"]


def test_resource_quota_cells() -> None:
    assert header("resourcequotas") == ["Name", "Request", "Limit", "Age"]
    quota = {"metadata": meta("compute"), "spec": {"hard": {"pods": "10"}},
             "status": {"hard": {"pods": "10", "requests.cpu": "4", "limits.memory": "8Gi", "limits.cpu": "8",
                                 "requests.memory": "4Gi"},
                        "used": {"pods": "3", "requests.cpu": "1500m", "limits.cpu": "3", "requests.memory": "1Gi"}}}
    assert cells("resourcequotas", quota) == [
        "compute", "pods: 3/10, requests.cpu: 1500m/4, requests.memory: 1Gi/4Gi",
        "limits.cpu: 3/8, limits.memory: 0/8Gi", "60m"]


def test_limit_range_uses_the_default_convertor() -> None:
    assert [(c.name, c.type) for c in columns_for(rt("limitranges"))] == [("Name", "string"), ("Created At", "date")]
    lr = {"metadata": {"name": "mem", "namespace": "default", "creationTimestamp": "2024-04-30T10:11:12Z"}}
    assert cells("limitranges", lr) == ["mem", "2024-04-30T10:11:12Z"]
    assert cells("limitranges", {"metadata": {"name": "x"}}) == ["x", "0001-01-01T00:00:00Z"]


def test_unknown_kind_falls_back_to_name_and_age() -> None:
    widget = ResourceType("example.com", "v1", "Widget", "widgets", True)
    table = to_table(widget, [{"metadata": meta("w")}], list_metadata={"resourceVersion": "1"}, now=NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"] == ["w", "60m"]


# --- odd objects never raise ----------------------------------------------------------------

ODD_OBJECTS: list[Any] = [
    {},
    {"metadata": None, "spec": None, "status": None},
    {"metadata": "x", "spec": [], "status": "broken"},
    {"metadata": {"name": 5, "creationTimestamp": "yesterday", "labels": ["a"], "deletionTimestamp": 3},
     "spec": {"containers": "nginx", "initContainers": [None, 1, {"name": None}], "replicas": "3",
              "selector": {"matchLabels": {"a": 1}}, "ports": [{"port": "80"}, None], "template": {"spec": 7},
              "type": 9, "clusterIPs": "10.0.0.1", "readinessGates": [{"conditionType": None}],
              "completions": "x", "parallelism": True, "holderIdentity": 4},
     "status": {"phase": 1, "conditions": [None, {"type": "Ready", "status": None}],
                "containerStatuses": [{"state": "running", "lastState": {"terminated": "x"}, "restartCount": "9"},
                                      None],
                "initContainerStatuses": [{"state": {"terminated": {"exitCode": "1"}}}],
                "addresses": {"type": "InternalIP"}, "nodeInfo": [], "hard": {"cpu": None}, "used": "x",
                "startTime": 12, "loadBalancer": {"ingress": [None, {"ip": 4}]}},
     "subsets": [{"addresses": [{"ip": None}], "ports": [{"port": None}]}, "x"],
     "involvedObject": {"kind": None}, "source": "kubelet", "series": {"count": "x"}, "count": "5",
     "data": ["a"], "binaryData": None, "secrets": {"a": 1}, "endpoints": [{"addresses": [None, 1]}],
     "addressType": None, "firstTimestamp": 0, "lastTimestamp": {}},
]


@pytest.mark.parametrize("resource", sorted({r.plural for r in REGISTRY.types}))
@pytest.mark.parametrize("obj", ODD_OBJECTS, ids=["empty", "nulls", "wrong-types", "garbage"])
def test_odd_objects_render_without_raising(resource: str, obj: Any, caplog: pytest.LogCaptureFixture) -> None:
    table = to_table(rt(resource), [obj], list_metadata={"resourceVersion": None}, now=NOW)
    assert not caplog.records  # rendered by the printer itself, not by the last-resort fallback
    row = table["rows"][0]
    assert len(row["cells"]) == len(table["columnDefinitions"])
    assert row["object"]["kind"] == "PartialObjectMetadata"


def test_odd_pod_renders_placeholders() -> None:
    assert cells("pods", {}) == ["", "0/0", "", "0", "<unknown>", "<none>", "<none>", "<none>", "<none>"]
    # a non-numeric exit code reads as 0 (success); any deletionTimestamp value means deleting
    assert cells("pods", ODD_OBJECTS[3])[:5] == ["", "0/0", "Terminating", "0", "<unknown>"]


def test_a_printer_bug_degrades_to_unknown_cells(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def broken(obj: dict[str, Any], now: datetime) -> Any:
        raise KeyError("boom")

    monkeypatch.setitem(tables._PRINTERS, ("", "ConfigMap"), (tables._CONFIGMAP_COLUMNS, broken))
    row = to_row(rt("configmaps"), {"metadata": meta("cfg")}, now=NOW)
    assert row["cells"] == ["cfg", "<unknown>", "<unknown>"]
    assert "cannot print ConfigMap default/cfg" in caplog.text
