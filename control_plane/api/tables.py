"""Server-side printing: render objects as a ``meta.k8s.io/v1`` Table.

kubectl asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` on ``get`` and
prints whatever columns the server sends, so the columns and cell formats here follow
Kubernetes' ``pkg/printers/internalversion/printers.go`` exactly. Like the Kubernetes API
server, every row carries the wide (priority 1) cells too; kubectl shows them only with
``-o wide``. kubectl adds the NAMESPACE column (``-A``), ``--show-labels`` and ``-L``
columns itself from each row's object, which is why rows carry PartialObjectMetadata
by default.

Objects are stored JSON and may be odd (missing fields, wrong types): every accessor
here tolerates that and renders ``<none>``/``<unknown>`` rather than raising.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from skiff.api.durations import human_duration
from skiff.api.resources import ResourceType

log = logging.getLogger(__name__)

INCLUDE_NONE = "None"
INCLUDE_METADATA = "Metadata"
INCLUDE_OBJECT = "Object"
INCLUDE_OBJECT_VALUES = (INCLUDE_NONE, INCLUDE_METADATA, INCLUDE_OBJECT)

# ObjectMeta swagger docs, as Kubernetes puts them in its column descriptions.
NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources may "
    "allow a client to request the generation of an appropriate name automatically. Name is primarily intended "
    "for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
CREATION_TIMESTAMP_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this value. "
    "It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_CONTAINERS_DOC = "Names of each container in the template."
_IMAGES_DOC = "Images referenced by each container in the template."

_NONE = "<none>"
_UNKNOWN = "<unknown>"
_UNSET = "<unset>"


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "string"
    description: str = ""
    priority: int = 0
    format: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


_NAME = Column("Name", format="name", description=NAME_DOC)
_AGE = Column("Age", description=CREATION_TIMESTAMP_DOC)


def _wide(name: str, description: str) -> Column:
    return Column(name, description=description, priority=1)


# --- tolerant accessors -----------------------------------------------------------------

def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in _list(value) if isinstance(item, dict)]


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``Time`` or ``MicroTime``) as an aware datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _since(value: Any, now: datetime) -> str:
    """``translateTimestampSince``: the age of a timestamp, ``<unknown>`` when unset."""
    ts = parse_time(value)
    if ts is None:
        return _UNKNOWN
    return human_duration((now - ts).total_seconds())


def _format_labels(labels: Any) -> str:
    """``labels.FormatLabels``: sorted ``k=v`` pairs, ``<none>`` when empty."""
    pairs = [f"{k}={v}" for k, v in sorted(_map(labels).items()) if isinstance(v, str)]
    return ",".join(pairs) if pairs else _NONE


def _selector_string(selector: Any) -> str | None:
    """``metav1.LabelSelectorAsSelector(...).String()``; None when the selector is invalid."""
    if selector is None:
        return ""
    if not isinstance(selector, dict):
        return None
    reqs: list[tuple[str, str]] = []
    for key, value in _map(selector.get("matchLabels")).items():
        if not isinstance(value, str):
            return None
        reqs.append((key, f"{key}={value}"))
    for expr in _list(selector.get("matchExpressions")):
        if not isinstance(expr, dict) or not isinstance(expr.get("key"), str):
            return None
        key, op = expr["key"], expr.get("operator")
        values = sorted({v for v in _list(expr.get("values")) if isinstance(v, str)})
        if op == "In":
            reqs.append((key, f"{key} in ({','.join(values)})"))
        elif op == "NotIn":
            reqs.append((key, f"{key} notin ({','.join(values)})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, f"!{key}"))
        else:
            return None
    reqs.sort(key=lambda r: r[0])
    return ",".join(text for _, text in reqs)


def _format_label_selector(selector: Any) -> str:
    """``metav1.FormatLabelSelector``: ``<none>`` when empty, ``<error>`` when invalid."""
    text = _selector_string(selector)
    if text is None:
        return "<error>"
    return text or _NONE


def _containers(template_spec: Any) -> tuple[str, str]:
    """``layoutContainerCells``: comma-joined container names and images."""
    containers = _dicts(_get(template_spec, "containers"))
    names = ",".join(_str(c.get("name")) for c in containers)
    images = ",".join(_str(c.get("image")) for c in containers)
    return names, images


def _join_host_port(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _list_with_more(items: list[str], count: int, limit: int = 3) -> str:
    """``listWithMoreString``: the first ``limit`` items and ``+ N more...``; ``<unset>`` when empty."""
    if count > limit:
        return f"{','.join(items[:limit])} + {count - limit} more..."
    return ",".join(items) if items else _UNSET


# --- pods -----------------------------------------------------------------------------------

_POD_COLUMNS = (
    _NAME,
    Column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", description="The aggregate status of the containers in this pod."),
    Column("Restarts", description="The number of times the containers in this pod have been restarted and when "
                                   "the last container in this pod has restarted."),
    _AGE,
    _wide("IP", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet "
                "allocated."),
    _wide("Node", "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for "
                  "scheduling by the scheduler defined in schedulerName."),
    _wide("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on the node, but it "
                            "cannot be scheduled right away as preemption victims receive their graceful "
                            "termination periods."),
    _wide("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready "
                             "when all its containers are ready AND all conditions specified in the readiness gates "
                             "have status equal to \"True\""),
)

_POD_SUCCEEDED = {"type": "Completed", "status": "True", "reason": "Succeeded",
                  "message": "The pod has completed successfully."}
_POD_FAILED = {"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}
_NODE_UNREACHABLE_POD_REASON = "NodeLost"


def _condition_true(conditions: list[dict[str, Any]], ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True" for c in conditions)


def _later(current: datetime | None, candidate: Any) -> datetime | None:
    ts = parse_time(candidate)
    if ts is None or (current is not None and ts <= current):
        return current
    return ts


def _terminated_reason(terminated: dict[str, Any], prefix: str = "") -> str:
    reason = _str(terminated.get("reason"))
    if reason:
        return prefix + reason
    signal = _int(terminated.get("signal"))
    if signal != 0:
        return f"{prefix}Signal:{signal}"
    return f"{prefix}ExitCode:{_int(terminated.get('exitCode'))}"


def pod_status_reason(pod: dict[str, Any], now: datetime) -> tuple[str, str, str, list[dict[str, Any]]]:
    """``printPod``'s READY, STATUS and RESTARTS cells and the row conditions."""
    spec, status = _map(pod.get("spec")), _map(pod.get("status"))
    conditions = _dicts(status.get("conditions"))
    phase = _str(status.get("phase"))
    reason = _str(status.get("reason")) or phase
    if any(c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated" for c in conditions):
        reason = "SchedulingGated"

    row_conditions: list[dict[str, Any]] = []
    if phase == "Succeeded":
        row_conditions = [dict(_POD_SUCCEEDED)]
    elif phase == "Failed":
        row_conditions = [dict(_POD_FAILED)]

    init_specs = _dicts(spec.get("initContainers"))
    restartable = {_str(c.get("name")) for c in init_specs if c.get("restartPolicy") == "Always"}
    total = len(_list(spec.get("containers"))) + len(restartable)
    ready = 0
    restarts = 0
    last_restart: datetime | None = None
    sidecar_restarts = 0
    last_sidecar_restart: datetime | None = None

    initializing = False
    for i, cs in enumerate(_dicts(status.get("initContainerStatuses"))):
        count = _int(cs.get("restartCount"))
        finished = _get(cs, "lastState", "terminated", "finishedAt")
        restarts += count
        last_restart = _later(last_restart, finished)
        is_sidecar = _str(cs.get("name")) in restartable
        if is_sidecar:
            sidecar_restarts += count
            last_sidecar_restart = _later(last_sidecar_restart, finished)
        terminated = _get(cs, "state", "terminated")
        waiting = _get(cs, "state", "waiting")
        if isinstance(terminated, dict) and _int(terminated.get("exitCode")) == 0:
            continue
        if is_sidecar and cs.get("started") is True:
            if cs.get("ready") is True:
                ready += 1
            continue
        if isinstance(terminated, dict):
            reason = _terminated_reason(terminated, "Init:")
        elif isinstance(waiting, dict) and _str(waiting.get("reason")) not in ("", "PodInitializing"):
            reason = "Init:" + _str(waiting.get("reason"))
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(conditions, "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for cs in reversed(_dicts(status.get("containerStatuses"))):
            restarts += _int(cs.get("restartCount"))
            last_restart = _later(last_restart, _get(cs, "lastState", "terminated", "finishedAt"))
            waiting = _get(cs, "state", "waiting")
            terminated = _get(cs, "state", "terminated")
            if isinstance(waiting, dict) and _str(waiting.get("reason")):
                reason = _str(waiting.get("reason"))
            elif isinstance(terminated, dict):
                reason = _terminated_reason(terminated)
            elif cs.get("ready") is True and isinstance(_get(cs, "state", "running"), dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(conditions, "Ready") else "NotReady"

    deleting = _get(pod, "metadata", "deletionTimestamp") is not None
    if deleting and status.get("reason") == _NODE_UNREACHABLE_POD_REASON:
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_cell = str(restarts)
    if restarts != 0 and last_restart is not None:
        restarts_cell = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    return f"{ready}/{total}", reason, restarts_cell, row_conditions


def _print_pod(pod: dict[str, Any], now: datetime) -> tuple[list[Any], list[dict[str, Any]]]:
    spec, status = _map(pod.get("spec")), _map(pod.get("status"))
    ready, reason, restarts, conditions = pod_status_reason(pod, now)
    pod_ips = _dicts(status.get("podIPs"))
    pod_ip = _str(pod_ips[0].get("ip")) if pod_ips else _str(status.get("podIP"))
    gates = _dicts(spec.get("readinessGates"))
    readiness_gates = _NONE
    if gates:
        by_type: dict[str, Any] = {}
        for c in _dicts(status.get("conditions")):
            by_type.setdefault(_str(c.get("type")), c.get("status"))
        true_count = sum(1 for g in gates if by_type.get(_str(g.get("conditionType"))) == "True")
        readiness_gates = f"{true_count}/{len(gates)}"
    cells = [
        _name(pod), ready, reason, restarts, _age(pod, now),
        pod_ip or _NONE,
        _str(spec.get("nodeName")) or _NONE,
        _str(status.get("nominatedNodeName")) or _NONE,
        readiness_gates,
    ]
    return cells, conditions


# --- workloads --------------------------------------------------------------------------

_DEPLOYMENT_COLUMNS = (
    _NAME,
    Column("Ready", description="Number of the pod with ready state"),
    Column("Up-to-date", description="Total number of non-terminating pods targeted by this deployment that have "
                                     "the desired template spec."),
    Column("Available", description="Total number of available non-terminating pods (ready for at least "
                                    "minReadySeconds) targeted by this deployment."),
    _AGE,
    _wide("Containers", _CONTAINERS_DOC),
    _wide("Images", _IMAGES_DOC),
    _wide("Selector", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the "
                      "ones affected by this deployment."),
)


def _print_deployment(obj: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    selector = _selector_string(spec.get("selector"))
    return [
        _name(obj),
        f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas'), 1)}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        _age(obj, now),
        names, images,
        "<invalid>" if selector is None else selector,
    ]


_REPLICASET_COLUMNS = (
    _NAME,
    Column("Desired", "integer", "Replicas is the number of desired pods."),
    Column("Current", "integer", "Replicas is the most recently observed number of non-terminating pods."),
    Column("Ready", "integer", "The number of non-terminating pods targeted by this ReplicaSet with a Ready "
                               "Condition."),
    _AGE,
    _wide("Containers", _CONTAINERS_DOC),
    _wide("Images", _IMAGES_DOC),
    _wide("Selector", "Selector is a label query over pods that should match the replica count."),
)


def _print_replicaset(obj: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    return [
        _name(obj),
        _int(spec.get("replicas"), 1),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _age(obj, now),
        names, images, _format_label_selector(spec.get("selector")),
    ]


_DAEMONSET_COLUMNS = (
    _NAME,
    Column("Desired", "integer", "The total number of nodes that should be running the daemon pod (including "
                                 "nodes correctly running the daemon pod)."),
    Column("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to "
                                 "run the daemon pod."),
    Column("Ready", "integer", "Total number of nodes that should be running the daemon pod and have one or more "
                               "of the daemon pod running with a Ready Condition."),
    Column("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
    Column("Available", "integer", "The number of nodes that should be running the daemon pod and have one or "
                                   "more of the daemon pod running and available (ready for at least "
                                   "spec.minReadySeconds)"),
    Column("Node Selector", description="NodeSelector is a selector which must be true for the pod to fit on a "
                                        "node."),
    _AGE,
    _wide("Containers", _CONTAINERS_DOC),
    _wide("Images", _IMAGES_DOC),
    _wide("Selector", "A label query over pods that are managed by the daemon set."),
)


def _print_daemonset(obj: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    template_spec = _get(spec, "template", "spec")
    names, images = _containers(template_spec)
    return [
        _name(obj),
        _int(status.get("desiredNumberScheduled")),
        _int(status.get("currentNumberScheduled")),
        _int(status.get("numberReady")),
        _int(status.get("updatedNumberScheduled")),
        _int(status.get("numberAvailable")),
        _format_labels(_get(template_spec, "nodeSelector")),
        _age(obj, now),
        names, images, _format_label_selector(spec.get("selector")),
    ]


_JOB_COLUMNS = (
    _NAME,
    Column("Status", description="Status of the job."),
    Column("Completions", description="The number of pods which reached phase Succeeded."),
    Column("Duration", description="Time required to complete the job."),
    _AGE,
    _wide("Containers", _CONTAINERS_DOC),
    _wide("Images", _IMAGES_DOC),
    _wide("Selector", "A label query over pods that should match the pod count."),
)


def _job_condition(conditions: list[dict[str, Any]], ctype: str) -> bool:
    """``hasJobCondition``: the first condition of that type decides."""
    for c in conditions:
        if c.get("type") == ctype:
            return c.get("status") == "True"
    return False


def _print_job(obj: dict[str, Any], now: datetime) -> list[Any]:
    spec, status = _map(obj.get("spec")), _map(obj.get("status"))
    succeeded = _int(status.get("succeeded"))
    completions_spec = spec.get("completions")
    if _int(completions_spec, -1) >= 0:
        completions = f"{succeeded}/{_int(completions_spec)}"
    else:
        parallelism = _int(spec.get("parallelism"))
        completions = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start = parse_time(status.get("startTime"))
    end = parse_time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = human_duration(((end or now) - start).total_seconds())
    conditions = _dicts(status.get("conditions"))
    if _job_condition(conditions, "Complete"):
        job_status = "Complete"
    elif _job_condition(conditions, "Failed"):
        job_status = "Failed"
    elif _get(obj, "metadata", "deletionTimestamp") is not None:
        job_status = "Terminating"
    elif _job_condition(conditions, "Suspended"):
        job_status = "Suspended"
    elif _job_condition(conditions, "FailureTarget"):
        job_status = "FailureTarget"
    else:
        job_status = "Running"
    names, images = _containers(_get(spec, "template", "spec"))
    return [
        _name(obj), job_status, completions, duration, _age(obj, now),
        names, images, _format_label_selector(spec.get("selector")),
    ]


# --- nodes and namespaces -------------------------------------------------------------

_NODE_COLUMNS = (
    _NAME,
    Column("Status", description="The status of the node"),
    Column("Roles", description="The roles of the node"),
    _AGE,
    Column("Version", description="Kubelet Version reported by the node."),
    _wide("Internal-IP", "List of addresses reachable to the node."),
    _wide("External-IP", "List of addresses reachable to the node."),
    _wide("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    _wide("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    _wide("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote API (e.g. "
                               "containerd://1.4.2)."),
)

_NODE_ROLE_PREFIX = "node-role.kubernetes.io/"
_NODE_ROLE_LABEL = "kubernetes.io/role"


def _node_roles(node: dict[str, Any]) -> str:
    roles: set[str] = set()
    for key, value in _map(_get(node, "metadata", "labels")).items():
        if key.startswith(_NODE_ROLE_PREFIX) and key[len(_NODE_ROLE_PREFIX):]:
            roles.add(key[len(_NODE_ROLE_PREFIX):])
        elif key == _NODE_ROLE_LABEL and isinstance(value, str) and value:
            roles.add(value)
    return ",".join(sorted(roles)) or _NONE


def _node_address(node: dict[str, Any], kind: str) -> str:
    for address in _dicts(_get(node, "status", "addresses")):
        if address.get("type") == kind:
            return _str(address.get("address"))
    return _NONE


def _print_node(obj: dict[str, Any], now: datetime) -> list[Any]:
    ready = None
    for c in _dicts(_get(obj, "status", "conditions")):
        if c.get("type") == "Ready":
            ready = c  # the last one wins, as with Kubernetes' condition map
    parts = [] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    if not parts:
        parts.append("Unknown")
    if _get(obj, "spec", "unschedulable") is True:
        parts.append("SchedulingDisabled")
    info = _map(_get(obj, "status", "nodeInfo"))
    return [
        _name(obj), ",".join(parts), _node_roles(obj), _age(obj, now), _str(info.get("kubeletVersion")),
        _node_address(obj, "InternalIP"),
        _node_address(obj, "ExternalIP"),
        _str(info.get("osImage")) or _UNKNOWN,
        _str(info.get("kernelVersion")) or _UNKNOWN,
        _str(info.get("containerRuntimeVersion")) or _UNKNOWN,
    ]


_NAMESPACE_COLUMNS = (_NAME, Column("Status", description="The status of the namespace"), _AGE)


def _print_namespace(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), _str(_get(obj, "status", "phase")), _age(obj, now)]


# --- services and endpoints ---------------------------------------------------------------

_SERVICE_COLUMNS = (
    _NAME,
    Column("Type", description="type determines how the Service is exposed. Defaults to ClusterIP. Valid options "
                               "are ExternalName, ClusterIP, NodePort, and LoadBalancer."),
    Column("Cluster-IP", description="clusterIP is the IP address of the service and is usually assigned randomly."),
    Column("External-IP", description="externalIPs is a list of IP addresses for which nodes in the cluster will "
                                      "also accept traffic for this service."),
    Column("Port(s)", description="The list of ports that are exposed by this service."),
    _AGE,
    _wide("Selector", "Route service traffic to pods with label keys and values matching this selector."),
)

_LOAD_BALANCER_WIDTH = 16


def _service_external_ip(svc: dict[str, Any], svc_type: str) -> str:
    external_ips = [ip for ip in _list(_get(svc, "spec", "externalIPs")) if isinstance(ip, str)]
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external_ips) if external_ips else _NONE
    if svc_type == "LoadBalancer":
        found: set[str] = set()
        for ingress in _dicts(_get(svc, "status", "loadBalancer", "ingress")):
            value = _str(ingress.get("ip")) or _str(ingress.get("hostname"))
            if value:
                found.add(value)
        # The server renders wide cells, so the 16-character clipping does not apply.
        lb_ips = sorted(found)
        if external_ips:
            return ",".join(lb_ips + external_ips)
        return ",".join(lb_ips) if lb_ips else "<pending>"
    if svc_type == "ExternalName":
        return _str(_get(svc, "spec", "externalName"))
    return _UNKNOWN


def _service_ports(ports: Any) -> str:
    pieces = []
    for port in _dicts(ports):
        protocol = _str(port.get("protocol")) or "TCP"
        node_port = _int(port.get("nodePort"))
        if node_port > 0:
            pieces.append(f"{_int(port.get('port'))}:{node_port}/{protocol}")
        else:
            pieces.append(f"{_int(port.get('port'))}/{protocol}")
    return ",".join(pieces) or _NONE


def _print_service(obj: dict[str, Any], now: datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    svc_type = _str(spec.get("type")) or "ClusterIP"
    cluster_ips = [ip for ip in _list(spec.get("clusterIPs")) if isinstance(ip, str)]
    cluster_ip = cluster_ips[0] if cluster_ips else _str(spec.get("clusterIP"))
    return [
        _name(obj), svc_type, cluster_ip or _NONE, _service_external_ip(obj, svc_type),
        _service_ports(spec.get("ports")), _age(obj, now), _format_labels(spec.get("selector")),
    ]


_ENDPOINTS_COLUMNS = (
    _NAME,
    Column("Endpoints", description="The set of all endpoints is the union of all subsets."),
    _AGE,
)


def format_endpoints(obj: dict[str, Any]) -> str:
    """``formatEndpoints``: up to three ``ip:port`` and ``+ N more...``; ``<none>`` without subsets."""
    subsets = _dicts(obj.get("subsets"))
    if not subsets:
        return _NONE
    items: list[str] = []
    limit, count, more = 3, 0, False
    for subset in subsets:
        addresses = [_str(a.get("ip")) for a in _dicts(subset.get("addresses"))]
        ports = _dicts(subset.get("ports"))
        if not ports:  # headless services may have no ports
            count += len(addresses)
            for ip in addresses:
                if len(items) == limit:
                    more = True
                    break
                items.append(ip)
            continue
        for port in ports:
            count += len(addresses)
            for ip in addresses:
                if len(items) == limit:
                    more = True
                    break
                items.append(_join_host_port(ip, _int(port.get("port"))))
    text = ",".join(items)
    return f"{text} + {count - limit} more..." if more else text


def _print_endpoints(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), format_endpoints(obj), _age(obj, now)]


_ENDPOINTSLICE_COLUMNS = (
    _NAME,
    Column("AddressType", description="addressType specifies the type of address carried by this EndpointSlice."),
    Column("Ports", description="ports specifies the list of network ports exposed by each endpoint in this slice."),
    Column("Endpoints", description="endpoints is a list of unique endpoints in this slice."),
    _AGE,
)


def _print_endpointslice(obj: dict[str, Any], now: datetime) -> list[Any]:
    ports = []
    for port in _dicts(obj.get("ports")):
        number = port.get("port")
        if isinstance(number, int) and not isinstance(number, bool):
            ports.append(str(number))
        elif isinstance(port.get("name"), str):
            ports.append(port["name"])
        else:
            ports.append("*")
    addresses = [a for e in _dicts(obj.get("endpoints")) for a in _list(e.get("addresses")) if isinstance(a, str)]
    return [
        _name(obj), _str(obj.get("addressType")),
        _list_with_more(ports, len(ports)), _list_with_more(addresses, len(addresses)), _age(obj, now),
    ]


# --- events ------------------------------------------------------------------------------

_EVENT_COLUMNS = (
    Column("Last Seen", description="The time at which the most recent occurrence of this event was recorded."),
    Column("Type", description="Type of this event (Normal, Warning), new types could be added in the future"),
    Column("Reason", description="This should be a short, machine understandable string that gives the reason for "
                                 "the transition into the object's current status."),
    Column("Object", description="The object that this event is about."),
    _wide("Subobject", "If referring to a piece of an object instead of an entire object, this string should "
                       "contain a valid JSON/Go field access statement, such as "
                       "desiredState.manifest.containers[2]."),
    _wide("Source", "The component reporting this event. Should be a short machine understandable string."),
    Column("Message", description="A human-readable description of the status of this operation."),
    _wide("First Seen", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
    _wide("Count", "The number of times this event has occurred."),
    Column("Name", format="name", description=NAME_DOC, priority=1),
)


def _print_event(obj: dict[str, Any], now: datetime) -> list[Any]:
    first_seen = _since(obj.get("firstTimestamp"), now)
    if parse_time(obj.get("firstTimestamp")) is None:
        first_seen = _since(obj.get("eventTime"), now)
    last_seen = _since(obj.get("lastTimestamp"), now)
    if parse_time(obj.get("lastTimestamp")) is None:
        last_seen = first_seen
    count = _int(obj.get("count"))
    series = obj.get("series")
    if isinstance(series, dict):
        last_seen = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events carry no count in the events.k8s.io API
    involved = _map(obj.get("involvedObject"))
    kind = _str(involved.get("kind")).lower()
    target = f"{kind}/{_str(involved.get('name'))}" if _str(involved.get("name")) else kind
    source = _map(obj.get("source"))
    component = _str(source.get("component")) or _str(obj.get("reportingComponent"))
    instance = _str(source.get("host")) or _str(obj.get("reportingInstance"))
    return [
        last_seen, _str(obj.get("type")), _str(obj.get("reason")), target,
        _str(involved.get("fieldPath")),
        f"{component}, {instance}" if instance else component,
        _str(obj.get("message")).strip(),
        first_seen, count, _name(obj),
    ]


# --- configuration and the rest -----------------------------------------------------------

_CONFIGMAP_COLUMNS = (_NAME, Column("Data", description="Data contains the configuration data."), _AGE)


def _print_configmap(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), len(_map(obj.get("data"))) + len(_map(obj.get("binaryData"))), _age(obj, now)]


_SECRET_COLUMNS = (
    _NAME,
    Column("Type", description="Used to facilitate programmatic handling of secret data."),
    Column("Data", description="Data contains the secret data."),
    _AGE,
)


def _print_secret(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), _str(obj.get("type")), len(_map(obj.get("data"))), _age(obj, now)]


_SERVICEACCOUNT_COLUMNS = (
    _NAME,
    Column("Secrets", description="Secrets is a list of the secrets in the same namespace that pods running using "
                                  "this ServiceAccount are allowed to use."),
    _AGE,
)


def _print_serviceaccount(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), len(_list(obj.get("secrets"))), _age(obj, now)]


_LEASE_COLUMNS = (
    _NAME,
    Column("Holder", description="holderIdentity contains the identity of the holder of a current lease."),
    _AGE,
)


def _print_lease(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), _str(_get(obj, "spec", "holderIdentity")), _age(obj, now)]


_RESOURCEQUOTA_COLUMNS = (
    _NAME,
    Column("Request", description="Request represents a minimum amount of cpu/memory that a container may consume."),
    Column("Limit", description="Limits control the maximum amount of cpu/memory that a container may use "
                                "independent of contention on the node."),
    _AGE,
)


def _print_resourcequota(obj: dict[str, Any], now: datetime) -> list[Any]:
    hard = _map(_get(obj, "status", "hard"))
    used = _map(_get(obj, "status", "used"))
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        text = f"{resource}: {_quantity(used.get(resource))}/{_quantity(hard[resource])}"
        pieces = resource.split(".")
        (limits if len(pieces) > 1 and pieces[0] == "limits" else requests).append(text)
    return [_name(obj), ", ".join(requests), ", ".join(limits), _age(obj, now)]


def _quantity(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return "0"


# The default table convertor (rest.NewDefaultTableConvertor), which LimitRange uses.
_DEFAULT_COLUMNS = (_NAME, Column("Created At", "date", CREATION_TIMESTAMP_DOC))


def _print_default(obj: dict[str, Any], now: datetime) -> list[Any]:
    created = parse_time(_get(obj, "metadata", "creationTimestamp"))
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if created else "0001-01-01T00:00:00Z"
    return [_name(obj), stamp]


# Anything without its own printer: NAME and AGE, as kubectl shows for a custom resource.
_FALLBACK_COLUMNS = (_NAME, _AGE)


def _print_fallback(obj: dict[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), _age(obj, now)]


def _name(obj: dict[str, Any]) -> str:
    return _str(_get(obj, "metadata", "name"))


def _age(obj: dict[str, Any], now: datetime) -> str:
    return _since(_get(obj, "metadata", "creationTimestamp"), now)


_Printer = Callable[[dict[str, Any], datetime], list[Any]]


def _plain(fn: _Printer) -> Callable[[dict[str, Any], datetime], tuple[list[Any], list[dict[str, Any]]]]:
    return lambda obj, now: (fn(obj, now), [])


_PRINTERS: dict[tuple[str, str], tuple[tuple[Column, ...], Callable[..., tuple[list[Any], list[dict[str, Any]]]]]] = {
    ("", "Pod"): (_POD_COLUMNS, _print_pod),
    ("", "Node"): (_NODE_COLUMNS, _plain(_print_node)),
    ("", "Namespace"): (_NAMESPACE_COLUMNS, _plain(_print_namespace)),
    ("", "Service"): (_SERVICE_COLUMNS, _plain(_print_service)),
    ("", "Endpoints"): (_ENDPOINTS_COLUMNS, _plain(_print_endpoints)),
    ("", "Event"): (_EVENT_COLUMNS, _plain(_print_event)),
    ("", "ConfigMap"): (_CONFIGMAP_COLUMNS, _plain(_print_configmap)),
    ("", "Secret"): (_SECRET_COLUMNS, _plain(_print_secret)),
    ("", "ServiceAccount"): (_SERVICEACCOUNT_COLUMNS, _plain(_print_serviceaccount)),
    ("", "ResourceQuota"): (_RESOURCEQUOTA_COLUMNS, _plain(_print_resourcequota)),
    ("", "LimitRange"): (_DEFAULT_COLUMNS, _plain(_print_default)),
    ("apps", "Deployment"): (_DEPLOYMENT_COLUMNS, _plain(_print_deployment)),
    ("apps", "ReplicaSet"): (_REPLICASET_COLUMNS, _plain(_print_replicaset)),
    ("apps", "DaemonSet"): (_DAEMONSET_COLUMNS, _plain(_print_daemonset)),
    ("batch", "Job"): (_JOB_COLUMNS, _plain(_print_job)),
    ("coordination.k8s.io", "Lease"): (_LEASE_COLUMNS, _plain(_print_lease)),
    ("discovery.k8s.io", "EndpointSlice"): (_ENDPOINTSLICE_COLUMNS, _plain(_print_endpointslice)),
}


def columns_for(rt: ResourceType) -> tuple[Column, ...]:
    return _PRINTERS.get((rt.group, rt.kind), (_FALLBACK_COLUMNS, None))[0]


def _row_object(rt: ResourceType, obj: dict[str, Any], include_object: str) -> dict[str, Any] | None:
    if include_object == INCLUDE_NONE:
        return None
    if include_object == INCLUDE_OBJECT:
        return {"kind": rt.kind, "apiVersion": rt.api_version, **obj}
    metadata = obj.get("metadata")
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(metadata) if isinstance(metadata, dict) else {},
    }


def to_row(rt: ResourceType, obj: dict[str, Any], *, include_object: str = INCLUDE_METADATA,
           now: datetime | None = None) -> dict[str, Any]:
    """One ``TableRow`` for ``obj``, with every cell including the wide ones."""
    now = now or datetime.now(UTC)
    columns, printer = _PRINTERS.get((rt.group, rt.kind), (_FALLBACK_COLUMNS, _plain(_print_fallback)))
    conditions: list[dict[str, Any]] = []
    obj = obj if isinstance(obj, dict) else {}
    try:
        cells, conditions = printer(obj, now)
    except Exception:  # a bad object must not break `kubectl get` for every other row
        log.warning("cannot print %s %s/%s; rendering <unknown> cells", rt.kind,
                    _str(_get(obj, "metadata", "namespace")), _name(obj), exc_info=True)
        cells = [_name(obj)] + [_UNKNOWN] * (len(columns) - 1)
    row: dict[str, Any] = {"cells": cells}
    if conditions:
        row["conditions"] = conditions
    row_object = _row_object(rt, obj, include_object)
    if row_object is not None:
        row["object"] = row_object
    return row


def to_table(
    rt: ResourceType,
    objects: list[dict[str, Any]],
    *,
    list_metadata: dict[str, Any],
    include_object: str = INCLUDE_METADATA,
    now: datetime | None = None,
    no_headers: bool = False,
) -> dict[str, Any]:
    """Render ``objects`` of type ``rt`` as a ``meta.k8s.io/v1`` Table.

    ``list_metadata`` is the list's (or single object's) metadata: its ``resourceVersion``,
    ``continue`` and ``remainingItemCount`` are carried over. ``include_object`` is the
    ``includeObject`` query parameter (kubectl sends none, meaning Metadata, or ``Object``
    with ``--sort-by``); the caller rejects other values with a 400, see
    ``INCLUDE_OBJECT_VALUES``. ``no_headers`` omits the column definitions, as the API
    server does for every watch event after the first.
    """
    now = now or datetime.now(UTC)
    metadata: dict[str, Any] = {}
    rv = list_metadata.get("resourceVersion") if isinstance(list_metadata, dict) else None
    if isinstance(rv, str) and rv:
        metadata["resourceVersion"] = rv
    cont = list_metadata.get("continue") if isinstance(list_metadata, dict) else None
    if isinstance(cont, str) and cont:
        metadata["continue"] = cont
    remaining = list_metadata.get("remainingItemCount") if isinstance(list_metadata, dict) else None
    if isinstance(remaining, int) and not isinstance(remaining, bool):
        metadata["remainingItemCount"] = remaining
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [] if no_headers else [c.to_dict() for c in columns_for(rt)],
        "rows": [to_row(rt, obj, include_object=include_object, now=now) for obj in objects],
    }
