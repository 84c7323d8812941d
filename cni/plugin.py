"""skiff-bridge: a CNI plugin (spec 1.0.0, plus 1.1's STATUS and GC) for a bridge + host-local network.

Invoked the CNI way: the command and attachment in CNI_* environment variables, the
plugin's network config on stdin, a result (ADD, VERSION) or an error result on
stdout, logs on stderr, exit code 0 or 1. Configured like the reference plugins::

    {"cniVersion": "1.0.0", "name": "skiff", "type": "skiff-bridge", "bridge": "skiff0",
     "isGateway": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24", "gateway": "10.244.1.1"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/var/lib/cni/networks"}}

ADD either completes or leaves nothing behind (no veth, no reservation); DEL is
idempotent and tolerates a missing netns, interface or reservation.

`run` is also what the CNI daemon (cni/daemon.py) executes for the installed
``skiff-bridge``, a static shim (cni/shim.c) that forwards each invocation to the
daemon in the node agent and execs this module stand-alone only when there is none.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import IO, TYPE_CHECKING, Any

from cni import netlink
from cni.config import (
    LATEST_VERSION,
    SUPPORTED_VERSIONS,
    CniArgs,
    IpamConf,
    NetConf,
    parse_netconf,
    peek_version,
    version_tuple,
)
from cni.errors import (
    CHECK_FAILED,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    PLUGIN_NOT_AVAILABLE,
    UNKNOWN_CONTAINER,
    CniPluginError,
)
from cni.result import Interface, IPConfig, Result, Route

if TYPE_CHECKING:
    from cni.ipam import HostLocalStore

PLUGIN_NAME = "skiff-bridge"
DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")
MIN_VERSION = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}


def main() -> None:
    netlink.use_minimal_import()
    sys.exit(run(os.environ, sys.stdin.buffer, sys.stdout, sys.stderr))


def run(environ: Mapping[str, str], stdin: IO[bytes], stdout: IO[str], stderr: IO[str]) -> int:
    """One invocation: returns the exit code, having written the result or error to stdout."""
    data = b""
    version = ""
    command = environ.get("CNI_COMMAND", "")
    try:
        args = CniArgs.from_environ(environ)
        try:
            data = stdin.read()
        except OSError as exc:
            raise CniPluginError(IO_FAILURE, f"cannot read the network config from stdin: {exc}") from exc
        if args.command == "VERSION":
            stdout.write(json.dumps(version_reply(data)))
            return 0
        conf = parse_netconf(data)
        version = conf.cni_version
        needed = MIN_VERSION.get(args.command)
        if needed and version_tuple(version) < version_tuple(needed):
            raise CniPluginError(INCOMPATIBLE_VERSION, f"{args.command} needs cniVersion {needed} or later, "
                                 f"the config says {version}")
        if args.command == "ADD":
            result = cmd_add(args, conf, stderr)
            stdout.write(json.dumps(result.to_dict(version)))
        elif args.command == "DEL":
            cmd_del(args, conf, stderr)
        elif args.command == "CHECK":
            cmd_check(args, conf)
        elif args.command == "STATUS":
            cmd_status(conf)
        elif args.command == "GC":
            cmd_gc(conf, stderr)
        return 0
    except CniPluginError as exc:
        _log(stderr, f"{command or '?'} container {environ.get('CNI_CONTAINERID', '-')}: {exc}")
        stdout.write(exc.to_json(version or peek_version(data) or "1.0.0"))
        return 1
    except Exception as exc:  # a bug: still answer in the spec's format, with the traceback on stderr
        traceback.print_exc(file=stderr)
        error = CniPluginError(INTERNAL, f"{type(exc).__name__}: {exc}")
        stdout.write(error.to_json(version or peek_version(data) or "1.0.0"))
        return 1


def version_reply(data: bytes) -> dict[str, Any]:
    asked = peek_version(data) if data.strip() else ""
    return {"cniVersion": asked or LATEST_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}


def _log(stderr: IO[str], message: str) -> None:
    stderr.write(f"{PLUGIN_NAME}: {message}\n")


def _require_ipam(conf: NetConf) -> IpamConf:
    if conf.ipam is None:
        raise CniPluginError(INVALID_NETWORK_CONFIG, "ipam is missing: skiff-bridge needs ipam.type host-local")
    return conf.ipam


def _quietly(stderr: IO[str], what: str, fn: Callable[..., object], *args: object) -> None:
    """Rollback steps must not hide the failure that triggered them."""
    try:
        fn(*args)
    except Exception as exc:
        _log(stderr, f"rollback: could not {what}: {exc}")


def _store(conf: NetConf, ipam: IpamConf) -> HostLocalStore:
    from cni.ipam import HostLocalStore

    return HostLocalStore(ipam.data_dir, conf.name)


def cmd_add(args: CniArgs, conf: NetConf, stderr: IO[str]) -> Result:
    from cni import bridge as br

    ipam = _require_ipam(conf)
    store = _store(conf, ipam)
    where = f"netns {args.netns}"
    with ExitStack() as stack:
        try:
            nl = stack.enter_context(netlink.session(args.netns))
        except netlink.NetnsGone as exc:
            raise CniPluginError(UNKNOWN_CONTAINER, f"container {args.container_id}: {exc}") from exc
        assert nl.container is not None and nl.netns_fd is not None
        undo = stack.enter_context(ExitStack())

        bridge = br.ensure_bridge(nl.host, conf.bridge, conf.mtu)
        allocation = store.allocate(args.container_id, args.ifname, ipam.ranges)
        undo.callback(_quietly, stderr, f"release {allocation.address.ip}", store.release, args.container_id,
                      args.ifname)
        if conf.is_gateway:
            gateway = ipaddress.IPv4Interface(f"{allocation.gateway}/{allocation.address.network.prefixlen}")
            br.ensure_address(nl.host, bridge, gateway)
            if netlink.read_sysctl("/proc/sys/net/ipv4/ip_forward") != "1":
                netlink.write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")

        host_end, container_end = br.create_veth(
            nl.host, nl.container, nl.netns_fd, args.netns, args.ifname, conf.mtu
        )
        undo.callback(_quietly, stderr, f"delete veth {host_end.name}", br.delete_link, nl.host, host_end.name)
        with netlink.entered(nl.netns_fd, args.netns):
            # Announce the (possibly reused) address with a gratuitous ARP when the link comes up.
            netlink.write_sysctl(f"/proc/sys/net/ipv4/conf/{args.ifname}/arp_notify", "1")
        host_end = br.attach_to_bridge(nl.host, host_end, bridge, conf.hairpin_mode)

        routes = list(ipam.routes)
        if conf.is_default_gateway and not any(r.dst == DEFAULT_ROUTE for r in routes):
            routes.append(Route(dst=DEFAULT_ROUTE, gw=allocation.gateway))
        br.configure_container_interface(
            nl.container,
            container_end,
            allocation.address,
            [(ipaddress.IPv4Network(r.dst), ipaddress.IPv4Address(r.gw or allocation.gateway)) for r in routes],
            where,
        )
        bridge = br.get_link(nl.host, conf.bridge) or bridge
        undo.pop_all()

    result = Result(
        cni_version=conf.cni_version,
        interfaces=[
            Interface(name=bridge.name, mac=bridge.mac),
            Interface(name=host_end.name, mac=host_end.mac),
            Interface(name=args.ifname, mac=container_end.mac, sandbox=args.netns),
        ],
        ips=[IPConfig(address=allocation.address, gateway=allocation.gateway, interface=2)],
        routes=routes,
        dns=conf.dns,
    )
    return _chain(conf.prev_result, result)


def _chain(prev: Result | None, ours: Result) -> Result:
    """Append our attachment to a previous plugin's result, re-indexing our interfaces."""
    if prev is None:
        return ours
    offset = len(prev.interfaces)
    ips = [IPConfig(ip.address, ip.gateway, None if ip.interface is None else ip.interface + offset) for ip in ours.ips]
    return Result(
        cni_version=ours.cni_version,
        interfaces=prev.interfaces + ours.interfaces,
        ips=prev.ips + ips,
        routes=prev.routes + ours.routes,
        dns=ours.dns if not ours.dns.is_empty() else prev.dns,
    )


def cmd_del(args: CniArgs, conf: NetConf, stderr: IO[str]) -> None:
    from cni import bridge as br

    netns_gone = not args.netns
    if args.netns:
        try:
            with netlink.session(args.netns) as nl:
                assert nl.container is not None
                br.delete_link(nl.container, args.ifname, f"netns {args.netns}")
        except netlink.NetnsGone as exc:
            _log(stderr, f"DEL container {args.container_id}: {exc}; releasing its address only")
            netns_gone = True
    if netns_gone and conf.prev_result is not None:
        # The pair normally dies with the netns; a netns kept alive elsewhere leaves our end on the bridge.
        host_veths = [
            i.name for i in conf.prev_result.interfaces
            if not i.sandbox and i.name != conf.bridge and i.name.startswith(br.HOST_VETH_PREFIX)
        ]
        if host_veths:
            with netlink.session() as nl:
                for name in host_veths:
                    link = br.get_link(nl.host, name)
                    if link is not None and link.kind == "veth":
                        br.delete_link(nl.host, name)
    if conf.ipam is not None:
        _store(conf, conf.ipam).release(args.container_id, args.ifname)


def cmd_check(args: CniArgs, conf: NetConf) -> None:
    from cni import bridge as br

    prev = conf.prev_result
    if prev is None:
        raise CniPluginError(INVALID_NETWORK_CONFIG, "CHECK needs prevResult, the result of the ADD")
    found = prev.container_interface(args.ifname, args.netns)
    if found is None:
        raise CniPluginError(CHECK_FAILED, f"prevResult lists no interface {args.ifname} in sandbox {args.netns}")
    index, expected = found
    # skiff-bridge only ever assigns IPv4; other families in prevResult belong to other plugins.
    expected_ips = [ip for ip in prev.ips if ip.interface == index and ip.address.version == 4]
    where = f"netns {args.netns}"

    if conf.ipam is not None:
        store = _store(conf, conf.ipam)
        for ip in expected_ips:
            owner = store.owner(ipaddress.IPv4Address(ip.address.ip))
            if owner != (args.container_id, args.ifname):
                held = f"held by {owner[0]}/{owner[1]}" if owner else "not reserved"
                raise CniPluginError(CHECK_FAILED, f"address {ip.address.ip} of container {args.container_id} is "
                                     f"{held} in {store.dir}")
    try:
        with netlink.session(args.netns) as nl:
            assert nl.container is not None
            bridge = br.get_link(nl.host, conf.bridge)
            if bridge is None or bridge.kind != "bridge":
                raise CniPluginError(CHECK_FAILED, f"bridge {conf.bridge} not found")
            for iface in prev.interfaces:
                if iface.name == conf.bridge and not iface.sandbox and iface.mac and iface.mac != bridge.mac:
                    raise CniPluginError(CHECK_FAILED, f"bridge {conf.bridge} has MAC {bridge.mac}, not {iface.mac}")

            link = br.get_link(nl.container, args.ifname)
            if link is None:
                raise CniPluginError(CHECK_FAILED, f"interface {args.ifname} not found in {where}")
            if link.kind != "veth":
                raise CniPluginError(CHECK_FAILED, f"{args.ifname} in {where} is a {link.kind or 'non-veth'} link")
            if expected.mac and expected.mac != link.mac:
                raise CniPluginError(CHECK_FAILED, f"{args.ifname} in {where} has MAC {link.mac}, not {expected.mac}")

            host_end = br.get_link_by_index(nl.host, link.peer)
            if host_end is None or host_end.kind != "veth":
                raise CniPluginError(CHECK_FAILED, f"host end of {args.ifname} in {where} (ifindex {link.peer}) "
                                     "not found")
            if host_end.master != bridge.index:
                raise CniPluginError(CHECK_FAILED, f"{host_end.name} is not attached to bridge {conf.bridge}")
            if conf.hairpin_mode and not br.hairpin_mode(nl.host, host_end):
                raise CniPluginError(CHECK_FAILED, f"hairpin mode is off on {host_end.name}")

            actual = br.ipv4_addresses(nl.container, link.index)
            for ip in expected_ips:
                if ip.address not in actual:
                    raise CniPluginError(CHECK_FAILED, f"address {ip.address} missing on {args.ifname} in {where} "
                                         f"(has {', '.join(map(str, actual)) or 'none'})")
            gateways = [ip.gateway for ip in expected_ips if ip.gateway is not None]
            routes = br.ipv4_routes(nl.container)
            for route in prev.routes:
                if route.dst.version != 4:
                    continue
                gw = route.gw or (gateways[0] if gateways else None)
                if not any(r.dst == route.dst and (gw is None or r.gateway == gw) for r in routes):
                    via = f" via {gw}" if gw else ""
                    raise CniPluginError(CHECK_FAILED, f"route {route.dst}{via} missing in {where}")
    except netlink.NetnsGone as exc:
        raise CniPluginError(UNKNOWN_CONTAINER, f"container {args.container_id}: {exc}") from exc


def cmd_status(conf: NetConf) -> None:
    """Ready when an ADD could get an address now."""
    if conf.ipam is None:
        return
    store = _store(conf, conf.ipam)
    try:
        free = store.free(conf.ipam.ranges)
    except CniPluginError as exc:
        raise CniPluginError(PLUGIN_NOT_AVAILABLE, exc.details) from exc
    if free == 0:
        raise CniPluginError(
            PLUGIN_NOT_AVAILABLE, f"no free address in {', '.join(map(str, conf.ipam.ranges))} ({store.dir})"
        )


def cmd_gc(conf: NetConf, stderr: IO[str]) -> None:
    """Release every reservation whose attachment is not in cni.dev/valid-attachments."""
    if conf.valid_attachments is None:
        raise CniPluginError(INVALID_NETWORK_CONFIG, "GC needs cni.dev/valid-attachments")
    if conf.ipam is None:
        return
    released = _store(conf, conf.ipam).gc(conf.valid_attachments)
    if released:
        _log(stderr, f"GC released {', '.join(map(str, sorted(released)))} in network {conf.name}")


if __name__ == "__main__":
    main()
