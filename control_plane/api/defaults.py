"""Defaulting of API objects, as Kubernetes does it for the v1 types, in place.

What Kubernetes spreads over several steps is applied here in one call, in its order:

1. the versioned defaulters (``pkg/apis/*/v1/defaults.go``, SetDefaults_*);
2. the create/update strategies' fix-ups (a Job's generated selector, a Namespace's
   ``kubernetes`` finalizer, Secret ``stringData`` folded into ``data``, the namespace of
   a cluster-scoped object dropped, as ``rest.BeforeCreate`` does);
3. the admission plugins Skiff has no separate stage for: ServiceAccount
   (``serviceAccountName: default``) and Priority (``priority: 0``).

On update pass the stored object as ``old``: allocated values the client may leave out
(uid, creationTimestamp, a Service's cluster IPs and node ports) are carried over first,
as ``rest.BeforeUpdate`` and the Service registry do.

A Job's selector is generated from ``metadata.uid`` (``batch.kubernetes.io/controller-uid``),
so the server must assign the uid *before* calling ``apply_defaults`` on create; without a
uid no selector is generated and validation reports ``spec.selector: Required value``.

Input is untrusted: anything of an unexpected type is left alone for validation to report.
"""

from __future__ import annotations

import base64
import decimal
import ipaddress
from typing import Any

from skiff.api.quantity import QuantityError, format_quantity, parse_quantity, quantity_format
from skiff.api.resources import ResourceType

Obj = dict[str, Any]

DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS = 30
DEFAULT_SCHEDULER_NAME = "default-scheduler"
DEFAULT_SERVICE_ACCOUNT = "default"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_FILE_MODE = 0o644  # 420, for secret/configMap/downwardAPI/projected volumes
DEFAULT_TOKEN_EXPIRATION_SECONDS = 3600
DEFAULT_CLIENT_IP_TIMEOUT_SECONDS = 10800
MAX_INT32 = 2**31 - 1
JOB_CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_CONTROLLER_UID_LABEL = "controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
VOLUME_SOURCE_KEYS = (
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret", "nfs", "iscsi",
    "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs", "quobyte", "downwardAPI", "fc",
    "flexVolume", "configMap", "azureFile", "vsphereVolume", "photonPersistentDisk", "portworxVolume", "azureDisk",
    "storageos", "projected", "scaleIO", "csi", "ephemeral", "image",
)


# --- tolerant accessors -------------------------------------------------------------------------

def _dict(parent: Obj, name: str, create: bool = True) -> Obj | None:
    """``parent[name]`` as a dict, created when absent (or null); None when it is something else."""
    value = parent.get(name)
    if value is None and create:
        value = parent[name] = {}
    return value if isinstance(value, dict) else None


def _dicts(parent: Obj | None, name: str) -> list[Obj]:
    value = parent.get(name) if parent is not None else None
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _default(obj: Obj, name: str, value: Any) -> None:
    """Set a pointer field: only when absent or null."""
    if obj.get(name) is None:
        obj[name] = value


def _default_str(obj: Obj, name: str, value: str) -> None:
    """Set a string field: also when empty, as Go cannot tell "" from unset."""
    if obj.get(name) is None or obj.get(name) == "":
        obj[name] = value


def _default_int(obj: Obj, name: str, value: int) -> None:
    """Set a plain int field: also when 0."""
    if obj.get(name) is None or obj.get(name) == 0 and not isinstance(obj.get(name), bool):
        obj[name] = value


# --- pods ----------------------------------------------------------------------------------------

def image_tag(image: str) -> str:
    """The tag ParseImageName finds: "latest" when there is neither tag nor digest."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return last.rsplit(":", 1)[1]
    return "" if digest else "latest"


def _is_quantity(value: Any) -> bool:
    try:
        parse_quantity(value)
    except QuantityError:
        return False
    return True


def _canonical_resource_list(resources: Obj | None) -> None:
    """SetDefaults_ResourceList: round up to milli precision; print the way Quantity does."""
    if resources is None:
        return
    for name, raw in list(resources.items()):
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            continue
        canonical = _canonical_quantity(raw)
        if canonical is not None:
            resources[name] = canonical


_CANONICAL_CACHE_SIZE = 4096
_canonical_cache: dict[str, str | None] = {}


def _canonical_quantity(raw: str | int | float) -> str | None:
    """``raw`` rounded up to milli precision and printed as Quantity does; None when it
    is not a quantity. Short strings are remembered: the same few values ("100m",
    "128Mi") recur in every pod."""
    if not isinstance(raw, str) or len(raw) > 64:
        return _round_quantity(raw)
    try:
        return _canonical_cache[raw]
    except KeyError:
        pass
    canonical = _round_quantity(raw)
    if len(_canonical_cache) >= _CANONICAL_CACHE_SIZE:
        _canonical_cache.clear()
    _canonical_cache[raw] = canonical
    return canonical


def _round_quantity(raw: str | int | float) -> str | None:
    try:
        value, fmt = parse_quantity(raw), quantity_format(raw)
        with decimal.localcontext() as ctx:
            ctx.prec = 2100
            rounded = (value * 1000).to_integral_value(rounding=decimal.ROUND_CEILING) / 1000
        return format_quantity(rounded, fmt)
    except (QuantityError, decimal.DecimalException):
        return None


def _default_http_get(handler: Obj | None) -> None:
    action = _dict(handler, "httpGet", create=False) if handler is not None else None
    if action is not None:
        _default_str(action, "path", "/")
        _default_str(action, "scheme", "HTTP")


def _default_probe(container: Obj, name: str) -> None:
    probe = _dict(container, name, create=False)
    if probe is None:
        return
    for field_name, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                              ("failureThreshold", 3)):
        _default_int(probe, field_name, value)
    _default_http_get(probe)


def _default_field_ref(holder: Obj | None) -> None:
    field_ref = _dict(holder, "fieldRef", create=False) if holder is not None else None
    if field_ref is not None:
        _default_str(field_ref, "apiVersion", "v1")


def _default_container(c: Obj) -> None:
    image = c.get("image")
    if not c.get("imagePullPolicy") and isinstance(image, str):
        c["imagePullPolicy"] = "Always" if image_tag(image) == "latest" else "IfNotPresent"
    _default_str(c, "terminationMessagePath", TERMINATION_MESSAGE_PATH)
    _default_str(c, "terminationMessagePolicy", "File")
    for port in _dicts(c, "ports"):
        _default_str(port, "protocol", "TCP")
    for env in _dicts(c, "env"):
        value_from = _dict(env, "valueFrom", create=False)
        _default_field_ref(value_from)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c, probe)
    lifecycle = _dict(c, "lifecycle", create=False)
    if lifecycle is not None:
        for hook in ("postStart", "preStop"):
            _default_http_get(_dict(lifecycle, hook, create=False))
    resources = _dict(c, "resources", create=False)
    if resources is not None:
        for name in ("limits", "requests"):
            _canonical_resource_list(_dict(resources, name, create=False))


def _default_volume(vol: Obj) -> None:
    if all(vol.get(k) is None for k in VOLUME_SOURCE_KEYS):
        vol["emptyDir"] = {}
    for source_name in ("secret", "configMap", "downwardAPI", "projected"):
        source = _dict(vol, source_name, create=False)
        if source is not None:
            _default(source, "defaultMode", DEFAULT_FILE_MODE)
    host_path = _dict(vol, "hostPath", create=False)
    if host_path is not None:
        _default(host_path, "type", "")
    for item in _dicts(_dict(vol, "downwardAPI", create=False), "items"):
        _default_field_ref(item)
    for source in _dicts(_dict(vol, "projected", create=False), "sources"):
        token = _dict(source, "serviceAccountToken", create=False)
        if token is not None:
            _default(token, "expirationSeconds", DEFAULT_TOKEN_EXPIRATION_SECONDS)
        for item in _dicts(_dict(source, "downwardAPI", create=False), "items"):
            _default_field_ref(item)


def default_pod_spec(spec: Obj) -> None:
    """SetDefaults_PodSpec and the defaults of everything inside: for Pods and pod templates."""
    _default_str(spec, "dnsPolicy", "ClusterFirst")
    _default_str(spec, "restartPolicy", "Always")
    _default(spec, "securityContext", {})
    _default(spec, "terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
    _default_str(spec, "schedulerName", DEFAULT_SCHEDULER_NAME)
    for list_name in ("containers", "initContainers", "ephemeralContainers"):
        for c in _dicts(spec, list_name):
            _default_container(c)
    for vol in _dicts(spec, "volumes"):
        _default_volume(vol)


def _default_pod(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    default_pod_spec(spec)
    # SetDefaults_Pod: requests default to limits, on Pods only (not templates).
    for c in _dicts(spec, "containers") + _dicts(spec, "initContainers"):
        resources = _dict(c, "resources", create=False)
        limits = _dict(resources, "limits", create=False) if resources is not None else None
        if resources is None or limits is None:
            continue
        requests = _dict(resources, "requests")
        if requests is not None:
            for name, value in limits.items():
                if _is_quantity(value):
                    requests.setdefault(name, value)
    _default(spec, "enableServiceLinks", True)
    if spec.get("hostNetwork") is True:
        for c in _dicts(spec, "containers") + _dicts(spec, "initContainers"):
            for port in _dicts(c, "ports"):
                if not port.get("hostPort") and isinstance(port.get("containerPort"), int):
                    port["hostPort"] = port["containerPort"]
    # Admission: ServiceAccount and Priority.
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_SERVICE_ACCOUNT
    if isinstance(account, str):
        _default_str(spec, "serviceAccountName", account)
        _default_str(spec, "serviceAccount", account)
    _default(spec, "priority", 0)


def _default_template(spec: Obj) -> Obj | None:
    template = _dict(spec, "template")
    template_spec = _dict(template, "spec") if template is not None else None
    if template_spec is not None:
        default_pod_spec(template_spec)
    return template


# --- workloads ---------------------------------------------------------------------------------

def _default_deployment(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    _default(spec, "replicas", 1)
    strategy = _dict(spec, "strategy")
    if strategy is not None:
        _default_str(strategy, "type", "RollingUpdate")
        if strategy.get("type") == "RollingUpdate":
            rolling = _dict(strategy, "rollingUpdate")
            if rolling is not None:
                _default(rolling, "maxUnavailable", "25%")
                _default(rolling, "maxSurge", "25%")
    _default(spec, "revisionHistoryLimit", 10)
    _default(spec, "progressDeadlineSeconds", 600)
    _default_template(spec)


def _default_replica_set(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if spec is not None:
        _default(spec, "replicas", 1)
        _default_template(spec)


def _default_daemon_set(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    strategy = _dict(spec, "updateStrategy")
    if strategy is not None:
        _default_str(strategy, "type", "RollingUpdate")
        if strategy.get("type") == "RollingUpdate":
            rolling = _dict(strategy, "rollingUpdate")
            if rolling is not None:
                _default(rolling, "maxUnavailable", 1)
                _default(rolling, "maxSurge", 0)
    _default(spec, "revisionHistoryLimit", 10)
    _default_template(spec)


def _generate_job_selector(obj: Obj, spec: Obj, template: Obj | None) -> None:
    """The Job strategy's generateSelector; a selector the client wrote is kept for validation to judge."""
    meta = obj.get("metadata")
    uid = meta.get("uid") if isinstance(meta, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    if spec.get("manualSelector") is True or not isinstance(uid, str) or not uid or template is None:
        return
    labels = _dict(template, "metadata")
    labels = _dict(labels, "labels") if labels is not None else None
    if labels is None:
        return
    if isinstance(name, str) and name:
        for label in (LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL):
            labels.setdefault(label, name)
    for label in (LEGACY_JOB_CONTROLLER_UID_LABEL, JOB_CONTROLLER_UID_LABEL):
        labels.setdefault(label, uid)
    selector = _dict(spec, "selector")
    match_labels = _dict(selector, "matchLabels") if selector is not None else None
    if match_labels is not None:
        match_labels.setdefault(JOB_CONTROLLER_UID_LABEL, uid)


def _default_job(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    _default(spec, "parallelism", 1)
    _default(spec, "backoffLimit", MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else 6)
    _default(spec, "completionMode", "NonIndexed")
    _default(spec, "suspend", False)
    _default(spec, "podReplacementPolicy",
             "Failed" if spec.get("podFailurePolicy") is not None else "TerminatingOrFailed")
    template = _default_template(spec)
    # A Job with no labels of its own takes its template's, before the generated ones are added.
    meta = _dict(obj, "metadata")
    template_meta = template.get("metadata") if template is not None else None
    template_labels = template_meta.get("labels") if isinstance(template_meta, dict) else None
    if meta is not None and not meta.get("labels") and isinstance(template_labels, dict) and template_labels:
        meta["labels"] = dict(template_labels)
    _generate_job_selector(obj, spec, template)


# --- services and networking ----------------------------------------------------------------------

def _ip_family(ip: Any) -> str:
    try:
        return "IPv6" if isinstance(ip, str) and ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return "IPv4"


def _default_service(obj: Obj) -> None:
    spec = _dict(obj, "spec")
    if spec is None:
        return
    _default_str(spec, "sessionAffinity", "None")
    if spec.get("sessionAffinity") == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec.get("sessionAffinity") == "ClientIP":
        config = spec.get("sessionAffinityConfig")
        client_ip = config.get("clientIP") if isinstance(config, dict) else None
        if not isinstance(client_ip, dict) or client_ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": DEFAULT_CLIENT_IP_TIMEOUT_SECONDS}}
    _default_str(spec, "type", "ClusterIP")
    service_type = spec.get("type")
    for port in _dicts(spec, "ports"):
        _default_str(port, "protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    external_ips = spec.get("externalIPs")
    if service_type in ("NodePort", "LoadBalancer") or (service_type == "ClusterIP" and external_ips):
        _default_str(spec, "externalTrafficPolicy", "Cluster")
    if service_type in ("ClusterIP", "NodePort", "LoadBalancer"):
        _default(spec, "internalTrafficPolicy", "Cluster")
    if service_type == "LoadBalancer":
        _default(spec, "allocateLoadBalancerNodePorts", True)
    if service_type == "ExternalName":
        return
    # What the Service registry fills at allocation: clusterIP and clusterIPs agree, one family.
    cluster_ip, cluster_ips = spec.get("clusterIP"), spec.get("clusterIPs")
    if isinstance(cluster_ip, str) and cluster_ip and not cluster_ips:
        spec["clusterIPs"] = [cluster_ip]
    elif isinstance(cluster_ips, list) and cluster_ips and isinstance(cluster_ips[0], str) and not cluster_ip:
        spec["clusterIP"] = cluster_ips[0]
    _default_str(spec, "ipFamilyPolicy", "SingleStack")
    if not spec.get("ipFamilies"):
        first_ip = spec.get("clusterIP")
        spec["ipFamilies"] = [_ip_family(first_ip if first_ip != "None" else None)]


def _carry_service_allocations(obj: Obj, old: Obj) -> None:
    """patchAllocatedValues: a PUT that omits the cluster IPs or node ports keeps the allocated ones."""
    spec, old_spec = obj.get("spec"), old.get("spec")
    if not isinstance(spec, dict) or not isinstance(old_spec, dict):
        return
    if "ExternalName" in (spec.get("type"), old_spec.get("type")):
        return
    for name in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
        if not spec.get(name) and old_spec.get(name):
            spec[name] = old_spec[name]
    # normalizeClusterIPs: a client that only knows clusterIP changed it, so clusterIPs[0] follows
    # (and validation then says the allocated IP may not change).
    ips, new_ip = spec.get("clusterIPs"), spec.get("clusterIP")
    if isinstance(ips, list) and ips and ips == old_spec.get("clusterIPs") and isinstance(new_ip, str) \
            and new_ip and new_ip != old_spec.get("clusterIP"):
        spec["clusterIPs"] = [new_ip, *ips[1:]]
    def port_key(port: Obj) -> tuple[int, str] | None:
        number, protocol = port.get("port"), port.get("protocol") or "TCP"
        return (number, protocol) if isinstance(number, int) and isinstance(protocol, str) else None

    old_ports = {port_key(p): p for p in _dicts(old_spec, "ports")}
    for port in _dicts(spec, "ports"):
        previous = old_ports.get(port_key(port)) if port_key(port) is not None else None
        if previous is not None and not port.get("nodePort") and previous.get("nodePort"):
            port["nodePort"] = previous["nodePort"]
    if not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]


def _default_endpoints(obj: Obj) -> None:
    for subset in _dicts(obj, "subsets"):
        for port in _dicts(subset, "ports"):
            _default_str(port, "protocol", "TCP")


def _default_endpoint_slice(obj: Obj) -> None:
    for port in _dicts(obj, "ports"):
        _default_str(port, "protocol", "TCP")


# --- cluster and config objects -------------------------------------------------------------------

def _default_namespace(obj: Obj, old: Obj | None) -> None:
    meta = _dict(obj, "metadata")
    updating = old is not None or bool(meta and meta.get("deletionTimestamp"))
    name = meta.get("name") if meta is not None else None
    if meta is not None and isinstance(name, str) and name:
        labels = _dict(meta, "labels")
        if labels is not None:
            labels[NAMESPACE_NAME_LABEL] = name
    spec = _dict(obj, "spec")
    # The strategy adds the finalizer on create only; once the namespace controller has
    # removed it from a terminating namespace it must stay removed.
    if spec is not None and not spec.get("finalizers") and not updating:
        spec["finalizers"] = ["kubernetes"]
    status = _dict(obj, "status")
    if status is not None:
        _default_str(status, "phase", "Active")


def _default_secret(obj: Obj) -> None:
    _default_str(obj, "type", "Opaque")
    string_data = obj.get("stringData")
    if not isinstance(string_data, dict):
        return
    data = _dict(obj, "data")
    if data is None or not all(isinstance(v, str) for v in string_data.values()):
        return
    # Conversion folds stringData into data; stringData is write-only and never stored.
    for k, v in string_data.items():
        data[k] = base64.b64encode(v.encode()).decode()
    del obj["stringData"]


def _default_node(obj: Obj) -> None:
    status = _dict(obj, "status")
    if status is None:
        return
    capacity = _dict(status, "capacity", create=False)
    _canonical_resource_list(capacity)
    _canonical_resource_list(_dict(status, "allocatable", create=False))
    if status.get("allocatable") is None and capacity is not None:
        status["allocatable"] = dict(capacity)


def _default_limit_range(obj: Obj) -> None:
    spec = _dict(obj, "spec", create=False)
    for item in _dicts(spec, "limits"):
        for name in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            _canonical_resource_list(_dict(item, name, create=False))
        if item.get("type") != "Container":
            continue
        default, default_request = _dict(item, "default"), _dict(item, "defaultRequest")
        if default is None or default_request is None:
            continue
        for source, target in (("max", default), ("default", default_request), ("min", default_request)):
            values = item.get(source)
            if isinstance(values, dict):
                for k, v in values.items():
                    target.setdefault(k, v)


def _default_resource_quota(obj: Obj) -> None:
    spec, status = _dict(obj, "spec", create=False), _dict(obj, "status", create=False)
    _canonical_resource_list(_dict(spec, "hard", create=False) if spec is not None else None)
    for name in ("hard", "used"):
        _canonical_resource_list(_dict(status, name, create=False) if status is not None else None)


DEFAULTERS = {
    ("", "Pod"): _default_pod,
    ("", "Service"): _default_service,
    ("", "Secret"): _default_secret,
    ("", "Endpoints"): _default_endpoints,
    ("", "Node"): _default_node,
    ("", "LimitRange"): _default_limit_range,
    ("", "ResourceQuota"): _default_resource_quota,
    ("apps", "Deployment"): _default_deployment,
    ("apps", "ReplicaSet"): _default_replica_set,
    ("apps", "DaemonSet"): _default_daemon_set,
    ("batch", "Job"): _default_job,
    ("discovery.k8s.io", "EndpointSlice"): _default_endpoint_slice,
}


def _carry_metadata(obj: Obj, old: Obj) -> None:
    """rest.BeforeUpdate: uid when omitted; creation and deletion timestamps always."""
    meta, old_meta = obj.get("metadata"), old.get("metadata")
    if not isinstance(meta, dict) or not isinstance(old_meta, dict):
        return
    if not meta.get("uid") and old_meta.get("uid"):
        meta["uid"] = old_meta["uid"]
    for name in ("creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
        if old_meta.get(name) is not None:
            meta[name] = old_meta[name]


def apply_defaults(rt: ResourceType, obj: Any, old: Any = None) -> None:
    """Default ``obj`` in place; pass the stored object as ``old`` on update."""
    if not isinstance(obj, dict):
        return
    if isinstance(old, dict):
        _carry_metadata(obj, old)
        if (rt.group, rt.kind) == ("", "Service"):
            _carry_service_allocations(obj, old)
    meta = obj.get("metadata")
    if not rt.namespaced and isinstance(meta, dict):
        meta.pop("namespace", None)
    if (rt.group, rt.kind) == ("", "Namespace"):
        _default_namespace(obj, old if isinstance(old, dict) else None)
    defaulter = DEFAULTERS.get((rt.group, rt.kind))
    if defaulter is not None:
        defaulter(obj)
