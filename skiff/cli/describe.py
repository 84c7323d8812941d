"""``skiff describe``: kubectl-like multi-line renderings, followed by the object's Events.

Each describer writes tab-separated lines at indentation levels; one tabwriter pass at
the end aligns them, exactly as kubectl's describers do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from collections.abc import Awaitable, Mapping
from decimal import Decimal
from typing import Any

from skiff.api.quantity import (
    QuantityError,
    cpu_millis,
    format_quantity,
    memory_bytes,
    parse_quantity,
    quantity_format,
)
from skiff.api.resources import ResourceType
from skiff.cli.apply import LAST_APPLIED
from skiff.cli.context import Cli, CliError, meta
from skiff.cli.get import parse_targets
from skiff.cli.printers import age, format_cell, parse_time
from skiff.cli.tabwriter import DESCRIBE_PADDING, format_tabbed
from skiff.client.errors import ApiStatusError, NotFound

Obj = dict[str, Any]
NODE_LEASE_NAMESPACE = "kube-node-lease"


class PrefixWriter:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, level: int, text: str) -> None:
        self.parts.append("  " * level + text)

    def line(self, level: int, *cells: Any) -> None:
        """One line of tab-separated cells (the last one is not aligned)."""
        self.write(level, "\t".join(str(c) for c in cells) + "\n")

    def render(self) -> str:
        return format_tabbed("".join(self.parts), DESCRIBE_PADDING)


def timestamp(value: Any) -> str:
    """RFC 1123 with numeric zone, in local time, as kubectl prints times."""
    when = parse_time(value)
    return when.astimezone().strftime("%a, %d %b %Y %H:%M:%S %z") if when else "<unset>"


def _none(value: Any) -> str:
    return "<none>" if value in (None, "", [], {}) else str(value)


def write_map_multiline(w: PrefixWriter, level: int, title: str, values: Mapping[str, Any] | None,
                        sep: str = "=", skip: tuple[str, ...] = ()) -> None:
    items = sorted((k, v) for k, v in (values or {}).items() if k not in skip)
    if not items:
        w.line(level, f"{title}:", "<none>")
        return
    for i, (key, value) in enumerate(items):
        label = f"{title}:" if i == 0 else ""
        w.line(level, label, f"{key}{sep}{value}")


def write_labels(w: PrefixWriter, level: int, title: str, labels: Mapping[str, Any] | None) -> None:
    write_map_multiline(w, level, title, labels)


def write_annotations(w: PrefixWriter, level: int, annotations: Mapping[str, Any] | None) -> None:
    write_map_multiline(w, level, "Annotations", annotations, sep=": ", skip=(LAST_APPLIED,))


def selector_string(selector: Mapping[str, Any] | None) -> str:
    if not selector:
        return "<none>"
    labels = selector.get("matchLabels") if "matchLabels" in selector or "matchExpressions" in selector \
        else selector
    parts = [f"{k}={v}" for k, v in sorted((labels or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, values = expr.get("operator"), ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{expr.get('key')} in ({values})")
        elif op == "NotIn":
            parts.append(f"{expr.get('key')} notin ({values})")
        elif op == "Exists":
            parts.append(str(expr.get("key")))
        elif op == "DoesNotExist":
            parts.append(f"!{expr.get('key')}")
    return ",".join(parts) or "<none>"


def write_events(w: PrefixWriter, events: list[Obj] | None) -> None:
    if events is None:
        return
    if not events:
        w.line(0, "Events:", "<none>")
        return
    w.write(0, "Events:\n")
    w.line(1, "Type", "Reason", "Age", "From", "Message")
    w.line(1, "----", "------", "----", "----", "-------")
    for e in sorted(events, key=_event_time):
        count = int(e.get("count") or (e.get("series") or {}).get("count") or 1)
        first = e.get("firstTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp")
        last = e.get("lastTimestamp") or (e.get("series") or {}).get("lastObservedTime") or first
        interval = f"{age(last)} (x{count} over {age(first)})" if count > 1 else age(first)
        w.line(1, e.get("type", ""), e.get("reason", ""), interval, _event_source(e),
               str(e.get("message", "")).strip())


def _event_time(event: Obj) -> dt.datetime:
    when = parse_time(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp"))
    return when or dt.datetime.min.replace(tzinfo=dt.UTC)


def _event_source(event: Obj) -> str:
    # kubectl describe shows the component only, not the host.
    return str((event.get("source") or {}).get("component") or event.get("reportingComponent") or "")


async def fetch_events(cli: Cli, rt: ResourceType, obj: Obj) -> list[Obj] | None:
    """The Events about ``obj``, searched the way kubectl does; None if they cannot be read."""
    m = meta(obj)
    name, ns, uid = m.get("name"), m.get("namespace"), m.get("uid")
    try:
        if rt.namespaced:
            selector = f"involvedObject.name={name},involvedObject.namespace={ns}"
            if uid:
                selector += f",involvedObject.uid={uid}"
            listed = await cli.client.list_all("events", ns, field_selector=selector)
            return list(listed.get("items") or [])
        listed = await cli.client.list_all("events", None, field_selector=f"involvedObject.name={name}")
        return [e for e in listed.get("items") or [] if (e.get("involvedObject") or {}).get("kind") == rt.kind]
    except ApiStatusError:
        return None


# ---- pods ----------------------------------------------------------------------------


def _controlled_by(m: Obj) -> str | None:
    for ref in m.get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref.get('kind')}/{ref.get('name')}"
    return None


def _state_lines(w: PrefixWriter, title: str, state: Obj | None) -> None:
    if not state:
        w.line(2, f"{title}:", "Waiting" if title == "State" else "<none>")
        return
    if "running" in state:
        w.line(2, f"{title}:", "Running")
        w.line(3, "Started:", timestamp(state["running"].get("startedAt")))
    elif "waiting" in state:
        w.line(2, f"{title}:", "Waiting")
        if state["waiting"].get("reason"):
            w.line(3, "Reason:", state["waiting"]["reason"])
    elif "terminated" in state:
        t = state["terminated"]
        w.line(2, f"{title}:", "Terminated")
        if t.get("reason"):
            w.line(3, "Reason:", t["reason"])
        if t.get("message"):
            w.line(3, "Message:", t["message"])
        w.line(3, "Exit Code:", t.get("exitCode", 0))
        if t.get("signal"):
            w.line(3, "Signal:", t["signal"])
        w.line(3, "Started:", timestamp(t.get("startedAt")))
        w.line(3, "Finished:", timestamp(t.get("finishedAt")))
    else:
        w.line(2, f"{title}:", "<none>")


def _ports(container: Obj) -> list[str]:
    return [f"{p.get('containerPort')}/{p.get('protocol', 'TCP')}" for p in container.get("ports") or []]


def _env_value(env: Obj) -> str:
    if "value" in env:
        return str(env["value"])
    source = env.get("valueFrom") or {}
    if "fieldRef" in source:
        ref = source["fieldRef"]
        return f"({ref.get('apiVersion', 'v1')}:{ref.get('fieldPath')})"
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return f"<set to the key '{ref.get('key')}' in secret '{ref.get('name')}'>"
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return f"<set to the key '{ref.get('key')}' of config map '{ref.get('name')}'>"
    if "resourceFieldRef" in source:
        return f"{source['resourceFieldRef'].get('resource')}"
    return ""


def write_container(w: PrefixWriter, container: Obj, status: Obj | None, with_status: bool = True,
                    space: str = "") -> None:
    """One container; ``space`` shifts the name right inside a pod template, as kubectl does."""
    w.write(1, f"{space}{container.get('name')}:\n")
    if with_status and status:
        w.line(2, "Container ID:", status.get("containerID", ""))
    w.line(2, "Image:", container.get("image", ""))
    if with_status and status:
        w.line(2, "Image ID:", status.get("imageID", ""))
    ports = _ports(container)
    w.line(2, "Port:", ", ".join(ports) if ports else "<none>")
    host_ports = [f"{p.get('hostPort', 0)}/{p.get('protocol', 'TCP')}" for p in container.get("ports") or []]
    w.line(2, "Host Port:", ", ".join(host_ports) if host_ports else "<none>")
    if container.get("command"):
        w.write(2, "Command:\n")
        for part in container["command"]:
            w.write(3, f"{part}\n")
    if container.get("args"):
        w.write(2, "Args:\n")
        for part in container["args"]:
            w.write(3, f"{part}\n")
    if with_status and status:  # like kubectl: a container without a status yet shows no state lines
        _state_lines(w, "State", status.get("state"))
        if status.get("lastState"):
            _state_lines(w, "Last State", status.get("lastState"))
        w.line(2, "Ready:", "True" if status.get("ready") else "False")
        w.line(2, "Restart Count:", status.get("restartCount", 0))
    resources = container.get("resources") or {}
    for section, title in (("limits", "Limits"), ("requests", "Requests")):
        if resources.get(section):
            w.write(2, f"{title}:\n")
            for key, value in sorted(resources[section].items()):
                w.line(3, f"{key}:", value)
    env = container.get("env") or []
    if env:
        w.write(2, "Environment:\n")
        for e in env:
            w.line(3, f"{e.get('name')}:", _env_value(e))
    else:
        w.line(2, "Environment:", "<none>")
    mounts = container.get("volumeMounts") or []
    if mounts:
        w.write(2, "Mounts:\n")
        for mount in mounts:
            mode = "ro" if mount.get("readOnly") else "rw"
            w.write(3, f"{mount.get('mountPath')} from {mount.get('name')} ({mode})\n")
    else:
        w.line(2, "Mounts:", "<none>")


def write_volumes(w: PrefixWriter, level: int, volumes: list[Obj]) -> None:
    if not volumes:
        w.line(level, "Volumes:", "<none>")
        return
    w.write(level, "Volumes:\n")
    for volume in volumes:
        w.write(level + 1, f"{volume.get('name')}:\n")
        if "emptyDir" in volume:
            w.line(level + 2, "Type:", "EmptyDir (a temporary directory that shares a pod's lifetime)")
            w.line(level + 2, "Medium:", (volume["emptyDir"] or {}).get("medium", ""))
        elif "hostPath" in volume:
            w.line(level + 2, "Type:", "HostPath (bare host directory volume)")
            w.line(level + 2, "Path:", volume["hostPath"].get("path", ""))
        elif "configMap" in volume:
            w.line(level + 2, "Type:", "ConfigMap (a volume populated by a ConfigMap)")
            w.line(level + 2, "Name:", volume["configMap"].get("name", ""))
        elif "secret" in volume:
            w.line(level + 2, "Type:", "Secret (a volume populated by a Secret)")
            w.line(level + 2, "SecretName:", volume["secret"].get("secretName", ""))
        elif "persistentVolumeClaim" in volume:
            w.line(level + 2, "Type:", "PersistentVolumeClaim")
            w.line(level + 2, "ClaimName:", volume["persistentVolumeClaim"].get("claimName", ""))
        else:
            kinds = [k for k in volume if k != "name"]
            w.line(level + 2, "Type:", kinds[0] if kinds else "<unknown>")


def _tolerations(tolerations: list[Obj]) -> list[str]:
    out = []
    for t in tolerations:
        text = str(t.get("key", ""))
        if t.get("value"):
            text += f"={t['value']}"
        if t.get("effect"):
            text += f":{t['effect']}"
        if t.get("operator") == "Exists" and not t.get("key"):
            text = f"op=Exists{':' + t['effect'] if t.get('effect') else ''}"
        elif t.get("operator") == "Exists":
            text += " op=Exists"
        if t.get("tolerationSeconds") is not None:
            text += f" for {t['tolerationSeconds']}s"
        out.append(text)
    return out


def write_list_multiline(w: PrefixWriter, level: int, title: str, values: list[str]) -> None:
    if not values:
        w.line(level, f"{title}:", "<none>")
        return
    for i, value in enumerate(values):
        w.line(level, f"{title}:" if i == 0 else "", value)


def describe_pod(pod: Obj, events: list[Obj] | None) -> str:
    w = PrefixWriter()
    m, spec, status = meta(pod), pod.get("spec") or {}, pod.get("status") or {}
    w.line(0, "Name:", m.get("name", ""))
    w.line(0, "Namespace:", m.get("namespace", ""))
    w.line(0, "Priority:", spec.get("priority", 0))
    w.line(0, "Service Account:", spec.get("serviceAccountName", "default"))
    node = spec.get("nodeName")
    w.line(0, "Node:", f"{node}/{status.get('hostIP', '')}" if node else "<none>")
    if status.get("startTime"):
        w.line(0, "Start Time:", timestamp(status["startTime"]))
    write_labels(w, 0, "Labels", m.get("labels"))
    write_annotations(w, 0, m.get("annotations"))
    if m.get("deletionTimestamp"):
        w.line(0, "Status:", f"Terminating (lasts {age(m['deletionTimestamp'])})")
        w.line(0, "Termination Grace Period:", f"{m.get('deletionGracePeriodSeconds', 0)}s")
    else:
        w.line(0, "Status:", status.get("phase", "Unknown"))
    if status.get("reason"):
        w.line(0, "Reason:", status["reason"])
    if status.get("message"):
        w.line(0, "Message:", status["message"])
    w.line(0, "IP:", status.get("podIP", ""))
    ips = status.get("podIPs") or []
    if ips:
        w.write(0, "IPs:\n")
        for ip in ips:
            w.line(1, "IP:", ip.get("ip", ""))
    else:
        w.line(0, "IPs:", "<none>")
    controller = _controlled_by(m)
    if controller:
        w.line(0, "Controlled By:", controller)
    statuses = {s.get("name"): s for s in status.get("containerStatuses") or []}
    init_statuses = {s.get("name"): s for s in status.get("initContainerStatuses") or []}
    if spec.get("initContainers"):
        w.write(0, "Init Containers:\n")
        for c in spec["initContainers"]:
            write_container(w, c, init_statuses.get(c.get("name")))
    w.write(0, "Containers:\n")
    for c in spec.get("containers") or []:
        write_container(w, c, statuses.get(c.get("name")))
    conditions = status.get("conditions") or []
    if conditions:
        w.write(0, "Conditions:\n")
        w.line(1, "Type", "Status")
        for c in conditions:
            w.write(1, f"{c.get('type')} \t{c.get('status')} \n")
    write_volumes(w, 0, spec.get("volumes") or [])
    if status.get("qosClass"):
        w.line(0, "QoS Class:", status["qosClass"])
    write_list_multiline(w, 0, "Node-Selectors", [f"{k}={v}" for k, v in sorted((spec.get("nodeSelector") or {})
                                                                                 .items())])
    write_list_multiline(w, 0, "Tolerations", _tolerations(spec.get("tolerations") or []))
    write_events(w, events)
    return w.render()


# ---- deployments ---------------------------------------------------------------------


def _rolling(strategy: Obj) -> str:
    ru = strategy.get("rollingUpdate") or {}
    return f"{ru.get('maxUnavailable', '25%')} max unavailable, {ru.get('maxSurge', '25%')} max surge"


def write_pod_template(w: PrefixWriter, template: Obj) -> None:
    tm, spec = template.get("metadata") or {}, template.get("spec") or {}
    w.write(0, "Pod Template:\n")
    write_labels(w, 1, "Labels", tm.get("labels"))
    if tm.get("annotations"):
        write_map_multiline(w, 1, "Annotations", tm.get("annotations"), sep=": ")
    if spec.get("serviceAccountName"):
        w.line(1, "Service Account:", spec["serviceAccountName"])
    if spec.get("initContainers"):
        w.write(1, "Init Containers:\n")
        for c in spec["initContainers"]:
            write_container(w, c, None, with_status=False, space=" ")
    w.write(1, "Containers:\n")
    for c in spec.get("containers") or []:
        write_container(w, c, None, with_status=False, space=" ")
    write_volumes(w, 1, spec.get("volumes") or [])
    write_list_multiline(w, 1, "Node-Selectors", [f"{k}={v}" for k, v in sorted((spec.get("nodeSelector") or {})
                                                                                 .items())])
    write_list_multiline(w, 1, "Tolerations", _tolerations(spec.get("tolerations") or []))


def _conditions_table(w: PrefixWriter, conditions: list[Obj]) -> None:
    if not conditions:
        return
    w.write(0, "Conditions:\n")
    w.line(1, "Type", "Status", "Reason")
    w.line(1, "----", "------", "------")
    for c in conditions:
        w.line(1, c.get("type", ""), c.get("status", ""), c.get("reason", ""))


def describe_deployment(deploy: Obj, events: list[Obj] | None, replica_sets: list[Obj]) -> str:
    w = PrefixWriter()
    m, spec, status = meta(deploy), deploy.get("spec") or {}, deploy.get("status") or {}
    w.line(0, "Name:", m.get("name", ""))
    w.line(0, "Namespace:", m.get("namespace", ""))
    w.line(0, "CreationTimestamp:", timestamp(m.get("creationTimestamp")))
    write_labels(w, 0, "Labels", m.get("labels"))
    write_annotations(w, 0, m.get("annotations"))
    w.line(0, "Selector:", selector_string(spec.get("selector")))
    desired = spec.get("replicas", 1)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    w.line(0, "Replicas:", f"{desired} desired | {status.get('updatedReplicas', 0)} updated | {total} total | "
                           f"{available} available | {status.get('unavailableReplicas', 0)} unavailable")
    strategy = spec.get("strategy") or {}
    strategy_type = strategy.get("type", "RollingUpdate")
    w.line(0, "StrategyType:", strategy_type)
    w.line(0, "MinReadySeconds:", spec.get("minReadySeconds", 0))
    if strategy_type == "RollingUpdate":
        w.line(0, "RollingUpdateStrategy:", _rolling(strategy))
    write_pod_template(w, spec.get("template") or {})
    _conditions_table(w, status.get("conditions") or [])
    revision = (m.get("annotations") or {}).get("deployment.kubernetes.io/revision")
    new = [rs for rs in replica_sets
           if revision and (meta(rs).get("annotations") or {}).get("deployment.kubernetes.io/revision") == revision]
    old = [rs for rs in replica_sets if rs not in new and (rs.get("spec") or {}).get("replicas", 0)]

    def rs_line(rs: Obj) -> str:
        s = rs.get("status") or {}
        return f"{meta(rs).get('name')} ({s.get('replicas', 0)}/{(rs.get('spec') or {}).get('replicas', 0)} " \
               f"replicas created)"

    if replica_sets:  # kubectl leaves both lines out until the deployment has replica sets
        w.line(0, "OldReplicaSets:", ", ".join(rs_line(rs) for rs in old) or "<none>")
        w.line(0, "NewReplicaSet:", rs_line(new[0]) if new else "<none>")
    write_events(w, events)
    return w.render()


# ---- services, nodes, namespaces -------------------------------------------------------


def describe_service(svc: Obj, events: list[Obj] | None, endpoints: Obj | None) -> str:
    w = PrefixWriter()
    m, spec = meta(svc), svc.get("spec") or {}
    w.line(0, "Name:", m.get("name", ""))
    w.line(0, "Namespace:", m.get("namespace", ""))
    write_labels(w, 0, "Labels", m.get("labels"))
    write_annotations(w, 0, m.get("annotations"))
    w.line(0, "Selector:", ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
           or "<none>")
    w.line(0, "Type:", spec.get("type", "ClusterIP"))
    if spec.get("ipFamilyPolicy"):
        w.line(0, "IP Family Policy:", spec["ipFamilyPolicy"])
    if spec.get("ipFamilies"):
        w.line(0, "IP Families:", ",".join(spec["ipFamilies"]))
    w.line(0, "IP:", spec.get("clusterIP", "<none>"))
    w.line(0, "IPs:", ",".join(spec.get("clusterIPs") or []) or _none(spec.get("clusterIP")))
    if spec.get("externalIPs"):
        w.line(0, "External IPs:", ",".join(spec["externalIPs"]))
    subsets = (endpoints or {}).get("subsets") or []
    for port in spec.get("ports") or []:
        name = port.get("name") or "<unset>"
        protocol = port.get("protocol", "TCP")
        w.line(0, "Port:", f"{name}  {port.get('port')}/{protocol}")
        target = port.get("targetPort", port.get("port"))
        w.line(0, "TargetPort:", f"{target}/{protocol}")
        if port.get("nodePort"):
            w.line(0, "NodePort:", f"{name}  {port['nodePort']}/{protocol}")
        w.line(0, "Endpoints:", _endpoints_for(subsets, port.get("name")))
    w.line(0, "Session Affinity:", spec.get("sessionAffinity", "None"))
    write_events(w, events)
    return w.render()


def _endpoints_for(subsets: list[Obj], port_name: str | None) -> str:
    out = []
    for subset in subsets:
        for port in subset.get("ports") or []:
            if (port.get("name") or None) != (port_name or None) and len(subset.get("ports") or []) > 1:
                continue
            for address in subset.get("addresses") or []:
                out.append(f"{address.get('ip')}:{port.get('port')}")
    if not out:
        return "<none>"
    return ",".join(out[:3]) + (f" + {len(out) - 3} more..." if len(out) > 3 else "")


def describe_node(node: Obj, events: list[Obj] | None, pods: list[Obj] | None,
                  lease: Obj | str | None = None) -> str:
    """``lease`` is the node's Lease, or the error message of fetching it."""
    w = PrefixWriter()
    m, spec, status = meta(node), node.get("spec") or {}, node.get("status") or {}
    labels = m.get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k)
    w.line(0, "Name:", m.get("name", ""))
    w.line(0, "Roles:", ",".join(roles) or "<none>")
    write_labels(w, 0, "Labels", labels)
    write_annotations(w, 0, m.get("annotations"))
    w.line(0, "CreationTimestamp:", timestamp(m.get("creationTimestamp")))
    taints = [f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}"
              for t in spec.get("taints") or []]
    write_list_multiline(w, 0, "Taints", taints)
    w.line(0, "Unschedulable:", "true" if spec.get("unschedulable") else "false")
    if isinstance(lease, str):
        w.line(0, "Lease:", f"Failed to get lease: {lease}")
    elif lease is not None:
        lease_spec = lease.get("spec") or {}
        w.write(0, "Lease:\n")
        w.line(1, "HolderIdentity:", lease_spec.get("holderIdentity") or "<unset>")
        w.line(1, "AcquireTime:", timestamp(lease_spec.get("acquireTime")))
        w.line(1, "RenewTime:", timestamp(lease_spec.get("renewTime")))
    conditions = status.get("conditions") or []
    if conditions:
        w.write(0, "Conditions:\n")
        w.line(1, "Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message")
        w.line(1, "----", "------", "-----------------", "------------------", "------", "-------")
        for c in conditions:  # kubectl's format puts a space after each cell but the last
            w.write(1, f"{c.get('type', '')} \t{c.get('status', '')} \t{timestamp(c.get('lastHeartbeatTime'))} \t"
                       f"{timestamp(c.get('lastTransitionTime'))} \t{c.get('reason', '')} \t{c.get('message', '')}\n")
    addresses = status.get("addresses") or []
    if addresses:
        w.write(0, "Addresses:\n")
        for a in addresses:
            w.line(1, f"{a.get('type')}:", a.get("address", ""))
    for key, title in (("capacity", "Capacity"), ("allocatable", "Allocatable")):
        if status.get(key):
            w.write(0, f"{title}:\n")
            for name, value in sorted(status[key].items()):
                w.line(1, f"{name}:", value)
    info = status.get("nodeInfo") or {}
    if info:
        w.write(0, "System Info:\n")
        for field, title in (("machineID", "Machine ID"), ("systemUUID", "System UUID"), ("bootID", "Boot ID"),
                             ("kernelVersion", "Kernel Version"), ("osImage", "OS Image"),
                             ("operatingSystem", "Operating System"), ("architecture", "Architecture"),
                             ("containerRuntimeVersion", "Container Runtime Version"),
                             ("kubeletVersion", "Kubelet Version"), ("kubeProxyVersion", "Kube-Proxy Version")):
            w.line(1, f"{title}:", info.get(field, ""))
    if spec.get("podCIDR"):
        w.line(0, "PodCIDR:", spec["podCIDR"])
        w.line(0, "PodCIDRs:", ",".join(spec.get("podCIDRs") or [spec["podCIDR"]]))
    if pods is not None:
        running = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        write_node_resources(w, status.get("allocatable") or status.get("capacity") or {}, running)
    write_events(w, events)
    return w.render()


Amount = tuple[Decimal, str]  # a quantity's value and the format it is printed back in


def _add_amounts(into: dict[str, Amount], resources: Mapping[str, Any] | None, take_max: bool = False) -> None:
    for name, raw in (resources or {}).items():
        try:
            value, fmt = parse_quantity(raw), quantity_format(raw)
        except (QuantityError, TypeError):
            continue
        if name not in into:
            into[name] = (value, fmt)
        elif take_max:
            into[name] = max(into[name], (value, fmt), key=lambda a: a[0])
        else:
            into[name] = (into[name][0] + value, into[name][1])


def pod_requests_and_limits(pod: Obj) -> tuple[dict[str, Amount], dict[str, Amount]]:
    """Sum over containers, at least the largest init container, plus overhead (as kubectl does)."""
    spec = pod.get("spec") or {}
    requests: dict[str, Amount] = {}
    limits: dict[str, Amount] = {}
    for c in spec.get("containers") or []:
        _add_amounts(requests, (c.get("resources") or {}).get("requests"))
        _add_amounts(limits, (c.get("resources") or {}).get("limits"))
    for c in spec.get("initContainers") or []:
        _add_amounts(requests, (c.get("resources") or {}).get("requests"), take_max=True)
        _add_amounts(limits, (c.get("resources") or {}).get("limits"), take_max=True)
    _add_amounts(requests, spec.get("overhead"))
    if limits:
        _add_amounts(limits, spec.get("overhead"))
    return requests, limits


def _amount(amounts: Mapping[str, Amount], name: str) -> str:
    return format_quantity(*amounts[name]) if name in amounts else "0"


def _percent(amounts: Mapping[str, Amount], allocatable: Mapping[str, Any], name: str) -> int:
    if name not in amounts:
        return 0
    try:
        total = parse_quantity(allocatable.get(name, 0))
    except (QuantityError, TypeError):
        return 0
    if name == "cpu":
        used, cap = cpu_millis(amounts[name][0]), cpu_millis(total)
    else:
        used, cap = memory_bytes(amounts[name][0]), memory_bytes(total)
    return int(used / cap * 100) if cap else 0


def write_node_resources(w: PrefixWriter, allocatable: Mapping[str, Any], pods: list[Obj]) -> None:
    w.line(0, "Non-terminated Pods:", f"({len(pods)} in total)")
    w.line(1, "Namespace", "Name", "", "CPU Requests", "CPU Limits", "Memory Requests", "Memory Limits", "Age")
    w.line(1, "---------", "----", "", "------------", "----------", "---------------", "-------------", "---")
    total_requests: dict[str, Amount] = {}
    total_limits: dict[str, Amount] = {}
    for p in pods:
        requests, limits = pod_requests_and_limits(p)
        pm = meta(p)
        cells = [f"{_amount(a, r)} ({_percent(a, allocatable, r)}%)"
                 for r in ("cpu", "memory") for a in (requests, limits)]
        w.line(1, pm.get("namespace", ""), pm.get("name", ""), "", *cells, age(pm.get("creationTimestamp")))
        for name, (value, fmt) in requests.items():
            _add_amounts(total_requests, {name: format_quantity(value, fmt)})
        for name, (value, fmt) in limits.items():
            _add_amounts(total_limits, {name: format_quantity(value, fmt)})
    w.write(0, "Allocated resources:\n  (Total limits may be over 100 percent, i.e., overcommitted.)\n")
    w.line(1, "Resource", "Requests", "Limits")
    w.line(1, "--------", "--------", "------")
    hugepages = sorted(r for r in allocatable if r.startswith("hugepages-"))
    for name in ("cpu", "memory", "ephemeral-storage", *hugepages):
        w.line(1, name, f"{_amount(total_requests, name)} ({_percent(total_requests, allocatable, name)}%)",
               f"{_amount(total_limits, name)} ({_percent(total_limits, allocatable, name)}%)")
    standard = {"cpu", "memory", "ephemeral-storage", "storage", "pods"}
    for name in sorted(r for r in allocatable if r not in standard and not r.startswith("hugepages-")):
        w.line(1, name, _amount(total_requests, name), _amount(total_limits, name))


def describe_namespace(ns: Obj, quotas: list[Obj] | None, limits: list[Obj] | None) -> str:
    w = PrefixWriter()
    m = meta(ns)
    w.line(0, "Name:", m.get("name", ""))
    write_labels(w, 0, "Labels", m.get("labels"))
    write_annotations(w, 0, m.get("annotations"))
    w.line(0, "Status:", (ns.get("status") or {}).get("phase", "Active"))
    w.write(0, "\n")
    if not quotas:
        w.write(0, "No resource quota.\n")
    for quota in quotas or []:
        qs = quota.get("status") or {}
        w.write(0, "Resource Quotas\n")
        w.line(1, "Name:", meta(quota).get("name", ""))
        w.line(1, "Resource", "Used", "Hard")
        w.line(1, "--------", "---", "---")
        for key, hard in sorted((qs.get("hard") or (quota.get("spec") or {}).get("hard") or {}).items()):
            w.line(1, key, (qs.get("used") or {}).get(key, "0"), hard)
    w.write(0, "\n")
    if not limits:
        w.write(0, "No LimitRange resource.\n")
    for lr in limits or []:
        w.write(0, "Resource Limits\n")
        w.line(1, "Type", "Resource", "Min", "Max", "Default Request", "Default Limit")
        w.line(1, "----", "--------", "---", "---", "---------------", "-------------")
        for item in (lr.get("spec") or {}).get("limits") or []:
            resources = set()
            for key in ("min", "max", "defaultRequest", "default"):
                resources |= set((item.get(key) or {}).keys())
            for res in sorted(resources):
                w.line(1, item.get("type", ""), res, *[(item.get(k) or {}).get(res, "-")
                                                       for k in ("min", "max", "defaultRequest", "default")])
    return w.render()


# ---- everything else -------------------------------------------------------------------


def _title(key: str) -> str:
    """``creationTimestamp`` → ``Creation Timestamp``, as kubectl's generic describer shows fields."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    words = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", words)
    return words[:1].upper() + words[1:]


def _write_value(w: PrefixWriter, level: int, value: Any) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(inner, dict | list) and inner:
                w.write(level, f"{_title(str(key))}:\n")
                _write_value(w, level + 1, inner)
            else:
                w.line(level, f"{_title(str(key))}:", format_cell(inner) if not isinstance(inner, str) else inner)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                _write_value(w, level, item)
            else:
                w.write(level, f"{format_cell(item)}\n")
    else:
        w.write(level, f"{format_cell(value)}\n")


def describe_generic(obj: Obj, events: list[Obj] | None) -> str:
    w = PrefixWriter()
    m = meta(obj)
    w.line(0, "Name:", m.get("name", ""))
    if m.get("namespace"):
        w.line(0, "Namespace:", m["namespace"])
    write_labels(w, 0, "Labels", m.get("labels"))
    write_annotations(w, 0, m.get("annotations"))
    w.line(0, "API Version:", obj.get("apiVersion", ""))
    w.line(0, "Kind:", obj.get("kind", ""))
    rest_meta = {k: v for k, v in m.items() if k not in ("name", "namespace", "labels", "annotations",
                                                        "managedFields")}
    if rest_meta:
        w.write(0, "Metadata:\n")
        _write_value(w, 1, rest_meta)
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if isinstance(value, dict | list) and value:
            w.write(0, f"{_title(key)}:\n")
            _write_value(w, 1, value)
        else:
            w.line(0, f"{_title(key)}:", format_cell(value) if not isinstance(value, str) else value)
    write_events(w, events)
    return w.render()


# ---- the verb --------------------------------------------------------------------------


async def _optional(call: Awaitable[Obj]) -> Obj | None:
    try:
        return await call
    except ApiStatusError:
        return None


async def render_description(cli: Cli, rt: ResourceType, obj: Obj) -> str:
    obj.setdefault("apiVersion", rt.api_version)
    obj.setdefault("kind", rt.kind)
    events = await fetch_events(cli, rt, obj) if rt.kind != "Event" else None
    m = meta(obj)
    ns = m.get("namespace")
    if rt.kind == "Pod":
        return describe_pod(obj, events)
    if rt.kind == "Deployment":
        listed = await _optional(cli.client.list_all("replicasets", ns))
        uid = m.get("uid")
        owned = [rs for rs in (listed or {}).get("items") or []
                 if any(ref.get("uid") == uid for ref in meta(rs).get("ownerReferences") or [])]
        return describe_deployment(obj, events, owned)
    if rt.kind == "Service":
        endpoints = await _optional(cli.client.get("endpoints", str(m.get("name")), ns))
        return describe_service(obj, events, endpoints)
    if rt.kind == "Node":
        pods = await _optional(cli.client.list_all("pods", None, field_selector=f"spec.nodeName={m.get('name')}"))
        lease: Obj | str | None
        try:
            lease = await cli.client.get("leases", str(m.get("name")), NODE_LEASE_NAMESPACE)
        except ApiStatusError as exc:
            lease = exc.message
        return describe_node(obj, events, None if pods is None else list(pods.get("items") or []), lease)
    if rt.kind == "Namespace":
        quotas = await _optional(cli.client.list_all("resourcequotas", m.get("name")))
        limits = await _optional(cli.client.list_all("limitranges", m.get("name")))
        return describe_namespace(obj, None if quotas is None else quotas.get("items") or [],
                                  None if limits is None else limits.get("items") or [])
    return describe_generic(obj, events)


async def cmd_describe(cli: Cli, args: argparse.Namespace) -> int:
    targets, _ = parse_targets(cli, args.resources, "describe")
    rc = 0
    blocks: list[str] = []
    for target in targets:
        rt = target.rt
        ns = cli.namespace if rt.namespaced else None
        objects: list[Obj] = []
        if target.names:
            for name in target.names:
                try:
                    objects.append(await cli.client.get(rt, name, ns))
                except NotFound as exc:
                    cli.warn(f"Error from server (NotFound): {exc.message}")
                    rc = 1
        else:
            listed = await cli.client.list_all(rt, cli.list_namespace(rt), label_selector=cli.opts.selector,
                                               field_selector=cli.opts.field_selector)
            objects = list(listed.get("items") or [])
        for obj in objects:
            blocks.append(await render_description(cli, rt, obj))
    if not blocks and rc == 0:
        if not targets:
            raise CliError("you must specify the type of resource to describe")
        cli.warn(f"No resources found in {cli.namespace} namespace." if targets[0].rt.namespaced
                 and not cli.opts.all_namespaces else "No resources found")
    if blocks:
        cli.print("\n\n".join(b.rstrip("\n") for b in blocks))
    return rc
