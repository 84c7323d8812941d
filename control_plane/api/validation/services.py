"""Service validation (ValidateService, ValidateServiceUpdate in pkg/apis/core/validation)."""

from __future__ import annotations

from typing import Any

from control_plane.api.validation.field import (
    ErrorList,
    Obj,
    child,
    dict_items,
    get_dict,
    get_str,
    get_str_list,
    get_str_map,
    index,
    int_or_string,
    opt_bool,
    opt_dict,
    opt_int,
    opt_str,
    scratch,
)
from control_plane.api.validation.names import (
    CIDR_MSG,
    is_valid_cidr,
    is_valid_port_num,
    parse_ip_sloppy,
    validate_dns1123_label,
    validate_dns1123_subdomain,
    validate_ip,
    validate_labels,
    validate_non_special_ip,
    validate_port_num_or_name,
    validate_qualified_name,
)

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
SESSION_AFFINITIES = ("ClientIP", "None")
PROTOCOLS = ("SCTP", "TCP", "UDP")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
NODE_PORT_RANGE = (30000, 32767)
MAX_CLIENT_IP_AFFINITY_SECONDS = 86400

SPEC = "spec"


def node_port_range_error(lo: int = NODE_PORT_RANGE[0], hi: int = NODE_PORT_RANGE[1]) -> str:
    """The allocator's message for a nodePort outside the service-node-port-range."""
    return f"provided port is not in the valid range. The range of valid ports is {lo}-{hi}"


def cluster_ips(spec: Obj) -> tuple[list[str], bool]:
    """spec.clusterIPs, or [clusterIP] when only that is set (Kubernetes keeps them in sync).

    The flag says whether the list was written by the client.
    """
    quiet = scratch()
    ips = get_str_list(quiet, spec, "clusterIPs", SPEC)
    if ips:
        return ips, True
    ip = get_str(quiet, spec, "clusterIP", SPEC)
    return ([ip] if ip else []), False


def _is_headless(spec: Obj) -> bool:
    ips, _ = cluster_ips(spec)
    return ips == ["None"]


def _validate_ports(errs: ErrorList, spec: Obj, service_type: str, headless: bool) -> None:
    ports = list(dict_items(errs, spec, "ports", SPEC))
    if not ports and not spec.get("ports") and not headless and service_type != "ExternalName":
        errs.required(child(SPEC, "ports"))
    names: set[str] = set()
    seen_ports: set[tuple[str, int]] = set()
    seen_node_ports: set[tuple[str, int]] = set()
    for _, port, path in ports:
        name = get_str(errs, port, "name", path)
        if len(ports) > 1 and not name:
            errs.required(child(path, "name"))
        elif name:
            validate_dns1123_label(errs, name, child(path, "name"))
            if name in names:
                errs.duplicate(child(path, "name"), name)
            names.add(name)
        number = opt_int(errs, port, "port", path) or 0
        errs.invalid_each(child(path, "port"), number, is_valid_port_num(number))
        protocol = get_str(errs, port, "protocol", path)
        errs.enum(protocol, child(path, "protocol"), PROTOCOLS)
        validate_port_num_or_name(errs, int_or_string(errs, port, "targetPort", path), child(path, "targetPort"))
        app_protocol = opt_str(errs, port, "appProtocol", path)
        if app_protocol is not None:
            validate_qualified_name(errs, app_protocol, child(path, "appProtocol"))
        node_port = opt_int(errs, port, "nodePort", path) or 0
        if node_port:
            if service_type == "ClusterIP":
                errs.forbidden(child(path, "nodePort"), "may not be used when `type` is 'ClusterIP'")
            elif not NODE_PORT_RANGE[0] <= node_port <= NODE_PORT_RANGE[1]:
                errs.invalid(child(path, "nodePort"), node_port, node_port_range_error())
            if (protocol, node_port) in seen_node_ports:
                errs.duplicate(child(path, "nodePort"), node_port)
            seen_node_ports.add((protocol, node_port))
        if (protocol, number) in seen_ports:
            errs.duplicate(path, {"port": number, "protocol": protocol})
        seen_ports.add((protocol, number))


def _validate_cluster_ips(errs: ErrorList, spec: Obj, service_type: str) -> None:
    """ValidateServiceClusterIPsRelatedFields, tolerating clusterIPs left for defaulting to fill."""
    cluster_ip = get_str(errs, spec, "clusterIP", SPEC)
    ips_written = get_str_list(errs, spec, "clusterIPs", SPEC)
    families = get_str_list(errs, spec, "ipFamilies", SPEC)
    policy = opt_str(errs, spec, "ipFamilyPolicy", SPEC)
    ips_path = child(SPEC, "clusterIPs")
    if service_type == "ExternalName":
        if ips_written or cluster_ip:
            errs.forbidden(ips_path, "may not be set for ExternalName services")
        if families:
            errs.forbidden(child(SPEC, "ipFamilies"), "may not be set for ExternalName services")
        if policy is not None:
            errs.forbidden(child(SPEC, "ipFamilyPolicy"), "may not be set for ExternalName services")
        return
    ips, written = cluster_ips(spec)
    if cluster_ip and written and ips[0] != cluster_ip:
        errs.invalid(ips_path, ips, "first value must match `clusterIP`")
    elif not cluster_ip and written:
        errs.invalid(ips_path, ips, "must be empty when `clusterIP` is not specified")
    seen_families: set[str] = set()
    for i, family in enumerate(families):
        if family not in IP_FAMILIES:
            errs.not_supported(index(child(SPEC, "ipFamilies"), i), family, IP_FAMILIES)
        if family in seen_families:
            errs.duplicate(index(child(SPEC, "ipFamilies"), i), family)
        seen_families.add(family)
    if policy is not None and policy not in IP_FAMILY_POLICIES:
        errs.not_supported(child(SPEC, "ipFamilyPolicy"), policy, IP_FAMILY_POLICIES)
    invalid = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == "None":
            if len(ips) > 1:
                invalid = True
                errs.invalid(ips_path, ips, "'None' must be the first and only value")
            continue
        before = len(errs)
        validate_ip(errs, ip, index(ips_path, i) if written else child(SPEC, "clusterIP"))
        invalid = invalid or len(errs) > before
    if len(ips) > 2:
        errs.invalid(ips_path, ips, "may only hold up to 2 values")
    if invalid:
        return
    parsed = [parse_ip_sloppy(ip) for ip in ips if ip != "None"]
    if len(parsed) == 2 and parsed[0] is not None and parsed[1] is not None and parsed[0].version == parsed[1].version:
        errs.invalid(ips_path, ips, "may specify no more than one IP for each IP family")
    if ips != ["None"]:
        for i, (addr, family) in enumerate(zip(parsed, families, strict=False)):
            if addr is not None and family in IP_FAMILIES and (addr.version == 6) != (family == "IPv6"):
                errs.invalid(index(ips_path, i), ips[i], f"expected an {family} value as indicated by `ipFamilies[{i}]`")
    if service_type in ("LoadBalancer", "NodePort") and ips == ["None"]:
        errs.invalid(index(ips_path, 0), "None", f"may not be set to 'None' for {service_type} services")


def _externally_accessible(spec: Obj, service_type: str) -> bool:
    return service_type in ("LoadBalancer", "NodePort") or (
        service_type == "ClusterIP" and bool(get_str_list(scratch(), spec, "externalIPs", SPEC)))


def _validate_traffic_policies(errs: ErrorList, spec: Obj, service_type: str) -> None:
    external = get_str(errs, spec, "externalTrafficPolicy", SPEC)
    path = child(SPEC, "externalTrafficPolicy")
    if not _externally_accessible(spec, service_type):
        if external:
            errs.invalid(path, external, "may only be set for externally-accessible services")
    else:
        errs.enum(external, path, TRAFFIC_POLICIES)
    health = opt_int(errs, spec, "healthCheckNodePort", SPEC) or 0
    needs_health_check = service_type == "LoadBalancer" and external == "Local"
    if health and not needs_health_check:
        errs.invalid(child(SPEC, "healthCheckNodePort"), health,
                     "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
    elif health:
        errs.invalid_each(child(SPEC, "healthCheckNodePort"), health, is_valid_port_num(health))
    internal = opt_str(errs, spec, "internalTrafficPolicy", SPEC)
    if internal is None:
        if service_type in ("ClusterIP", "NodePort", "LoadBalancer"):
            errs.required(child(SPEC, "internalTrafficPolicy"))
    elif internal not in TRAFFIC_POLICIES:
        errs.not_supported(child(SPEC, "internalTrafficPolicy"), internal, TRAFFIC_POLICIES)


def _validate_session_affinity(errs: ErrorList, spec: Obj) -> None:
    affinity = get_str(errs, spec, "sessionAffinity", SPEC)
    errs.enum(affinity, child(SPEC, "sessionAffinity"), SESSION_AFFINITIES)
    config = opt_dict(errs, spec, "sessionAffinityConfig", SPEC)
    config_path = child(SPEC, "sessionAffinityConfig")
    if affinity == "None" and config is not None:
        errs.forbidden(config_path, "must not be set when session affinity is None")
    elif affinity == "ClientIP":
        when = "when session affinity type is ClientIP"
        if config is None:
            errs.required(config_path, when)
            return
        client_ip = opt_dict(errs, config, "clientIP", config_path)
        if client_ip is None:
            errs.required(child(config_path, "clientIP"), when)
            return
        timeout_path = child(child(config_path, "clientIP"), "timeoutSeconds")
        timeout = opt_int(errs, client_ip, "timeoutSeconds", child(config_path, "clientIP"))
        if timeout is None:
            errs.required(timeout_path, when)
        elif not 0 < timeout <= MAX_CLIENT_IP_AFFINITY_SECONDS:
            errs.invalid(timeout_path, timeout, f"must be greater than 0 and less than {MAX_CLIENT_IP_AFFINITY_SECONDS}")


def _validate_load_balancer_fields(errs: ErrorList, spec: Obj, service_type: str) -> None:
    lb_only = "may only be used when `type` is 'LoadBalancer'"
    ranges = get_str_list(errs, spec, "loadBalancerSourceRanges", SPEC)
    ranges_path = child(SPEC, "LoadBalancerSourceRanges")
    if ranges and service_type != "LoadBalancer":
        errs.forbidden(ranges_path, lb_only)
    for i, cidr in enumerate(ranges):
        if not is_valid_cidr(cidr.strip()):
            errs.invalid(index(ranges_path, i), cidr.strip(), CIDR_MSG)
    allocate = opt_bool(errs, spec, "allocateLoadBalancerNodePorts", SPEC)
    if allocate is not None and service_type != "LoadBalancer":
        errs.forbidden(child(SPEC, "allocateLoadBalancerNodePorts"), lb_only)
    if service_type == "LoadBalancer" and allocate is None:
        errs.required("allocateLoadBalancerNodePorts")
    lb_class = opt_str(errs, spec, "loadBalancerClass", SPEC)
    if lb_class is not None:
        if service_type == "LoadBalancer":
            validate_qualified_name(errs, lb_class, child(SPEC, "loadBalancerClass"))
        else:
            errs.forbidden(child(SPEC, "loadBalancerClass"), lb_only)
    get_str(errs, spec, "loadBalancerIP", SPEC)


def validate_service(errs: ErrorList, obj: Obj) -> None:
    spec = get_dict(errs, obj, SPEC, "")
    service_type = get_str(errs, spec, "type", SPEC)
    errs.enum(service_type, child(SPEC, "type"), SERVICE_TYPES)
    if service_type == "ExternalName":
        cname = get_str(errs, spec, "externalName", SPEC).removesuffix(".")
        if cname:
            validate_dns1123_subdomain(errs, cname, child(SPEC, "externalName"))
        else:
            errs.required(child(SPEC, "externalName"))
    _validate_ports(errs, spec, service_type, _is_headless(spec))
    validate_labels(errs, get_str_map(errs, spec, "selector", SPEC), child(SPEC, "selector"))
    _validate_session_affinity(errs, spec)
    _validate_cluster_ips(errs, spec, service_type)
    for i, ip in enumerate(get_str_list(errs, spec, "externalIPs", SPEC)):
        ip_path = index(child(SPEC, "externalIPs"), i)
        if parse_ip_sloppy(ip) is None:
            validate_ip(errs, ip, ip_path)
        else:
            validate_non_special_ip(errs, ip, ip_path)
    _validate_traffic_policies(errs, spec, service_type)
    _validate_load_balancer_fields(errs, spec, service_type)
    opt_bool(errs, spec, "publishNotReadyAddresses", SPEC)
    get_dict(errs, obj, "status", "")


def validate_service_update(errs: ErrorList, obj: Obj, old: Obj) -> None:
    """validateUpgradeDowngradeClusterIPs: an allocated cluster IP never changes."""
    quiet = scratch()
    spec, old_spec = get_dict(quiet, obj, SPEC, ""), get_dict(quiet, old, SPEC, "")
    types = (get_str(quiet, spec, "type", SPEC), get_str(quiet, old_spec, "type", SPEC))
    if "ExternalName" in types or (_is_headless(spec) and _is_headless(old_spec)):
        return
    new_ips, _ = cluster_ips(spec)
    old_ips, _ = cluster_ips(old_spec)
    if not new_ips:
        return  # left out: the update keeps the allocated IPs (Kubernetes' patchAllocatedValues)
    path = child(SPEC, "clusterIPs")
    if len(new_ips) == len(old_ips):
        for i, ip in enumerate(old_ips):
            if ip != new_ips[i]:
                errs.invalid(index(path, i), new_ips, "may not change once set")
    elif len(old_ips) > len(new_ips):
        if new_ips[0] != old_ips[0]:
            errs.invalid(index(path, 0), new_ips, "may not change once set")
        if len(new_ips) == 1 and get_str(quiet, spec, "ipFamilyPolicy", SPEC) != "SingleStack":
            errs.invalid(child(SPEC, "ipFamilyPolicy"), spec.get("ipFamilyPolicy"),
                         "must be set to 'SingleStack' when releasing the secondary clusterIP")
    elif old_ips and new_ips[0] != old_ips[0]:
        errs.invalid(index(path, 0), new_ips, "may not change once set")


def validate_service_status(errs: ErrorList, obj: Obj, old: Any) -> None:
    status = get_dict(errs, obj, "status", "")
    lb = get_dict(errs, status, "loadBalancer", "status")
    for _, ingress, path in dict_items(errs, lb, "ingress", "status.loadBalancer"):
        ip = get_str(errs, ingress, "ip", path)
        if ip:
            validate_ip(errs, ip, child(path, "ip"))
        hostname = get_str(errs, ingress, "hostname", path)
        if hostname:
            validate_dns1123_subdomain(errs, hostname, child(path, "hostname"))
            if parse_ip_sloppy(hostname) is not None:
                errs.invalid(child(path, "hostname"), hostname, "must be a DNS name, not an IP address")
