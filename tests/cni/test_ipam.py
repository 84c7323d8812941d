"""cni.ipam and cni.config without namespaces: allocation order, release, GC, and config errors."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from cni.config import CniArgs, parse_netconf
from cni.errors import CniPluginError
from cni.ipam import HostLocalStore


def conf(**ipam: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "net", "type": "skiff-bridge",
            "ipam": {"type": "host-local", "dataDir": "/tmp/unused", **ipam}}


def ranges(*spec: dict[str, str]) -> Any:
    parsed = parse_netconf(json.dumps(conf(ranges=[list(spec)])).encode())
    assert parsed.ipam is not None
    return parsed.ipam.ranges


def allocate(store: HostLocalStore, rs: Any, n: int, prefix: str = "c") -> list[str]:
    return [str(store.allocate(f"{prefix}{i}", "eth0", rs).address) for i in range(n)]


def test_allocation_walks_the_ranges_round_robin_skipping_the_gateway(tmp_path: Path) -> None:
    rs = ranges({"subnet": "10.1.0.0/29"}, {"subnet": "10.1.1.0/30", "gateway": "10.1.1.2"})
    store = HostLocalStore(tmp_path, "net")
    assert store.free(rs) == 6
    assert allocate(store, rs, 6) == ["10.1.0.2/29", "10.1.0.3/29", "10.1.0.4/29", "10.1.0.5/29", "10.1.0.6/29",
                                      "10.1.1.1/30"]
    assert store.release("c2", "eth0") == [ipaddress.IPv4Address("10.1.0.4")]
    assert str(store.allocate("again", "eth0", rs).address) == "10.1.0.4/29"  # wrapped around to the only free one
    with pytest.raises(CniPluginError) as exhausted:
        store.allocate("one-more", "eth0", rs)
    assert exhausted.value.code == 102 and "one-more" in exhausted.value.details


def test_round_robin_continues_after_the_last_reserved_address(tmp_path: Path) -> None:
    rs = ranges({"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.10", "rangeEnd": "10.2.0.12"})
    store = HostLocalStore(tmp_path, "net")
    assert allocate(store, rs, 2) == ["10.2.0.10/24", "10.2.0.11/24"]
    store.release("c0", "eth0")
    assert (tmp_path / "net" / "last_reserved_ip.0").read_text() == "10.2.0.11"
    assert allocate(store, rs, 2, prefix="d") == ["10.2.0.12/24", "10.2.0.10/24"]


def test_files_are_host_local_compatible_and_release_is_by_attachment(tmp_path: Path) -> None:
    rs = ranges({"subnet": "10.3.0.0/24"})
    store = HostLocalStore(tmp_path, "net")
    store.allocate("cid", "eth0", rs)
    store.allocate("cid", "net1", rs)
    assert (tmp_path / "net" / "10.3.0.2").read_bytes() == b"cid\r\neth0"
    assert store.owner(ipaddress.IPv4Address("10.3.0.3")) == ("cid", "net1")
    with pytest.raises(CniPluginError) as duplicate:
        store.allocate("cid", "eth0", rs)
    assert duplicate.value.code == 103
    assert store.release("cid", "net1") == [ipaddress.IPv4Address("10.3.0.3")]
    assert store.release("cid", "net1") == []
    assert store.get("cid", "eth0") == [ipaddress.IPv4Address("10.3.0.2")]
    # A file from an old host-local holds only the container id; it is released all the same.
    (tmp_path / "net" / "10.3.0.9").write_text("old-cid")
    assert store.release("old-cid", "eth0") == [ipaddress.IPv4Address("10.3.0.9")]


def test_gc_keeps_only_valid_attachments(tmp_path: Path) -> None:
    rs = ranges({"subnet": "10.4.0.0/24"})
    store = HostLocalStore(tmp_path, "net")
    allocate(store, rs, 4)
    (tmp_path / "net" / "10.4.0.99").write_bytes(b"")  # a reservation whose writer died
    released = store.gc([("c1", "eth0"), ("c3", "eth0"), ("c9", "eth0")])
    assert sorted(map(str, released)) == ["10.4.0.2", "10.4.0.4", "10.4.0.99"]
    assert sorted(p.name for p in (tmp_path / "net").iterdir()) == ["10.4.0.3", "10.4.0.5", "last_reserved_ip.0",
                                                                   "lock"]


@pytest.mark.parametrize(("change", "code", "fragment"), [
    ({"cniVersion": "9.9.9"}, 1, "9.9.9"),
    ({"cniVersion": None}, 7, "cniVersion"),
    ({"name": "bad name"}, 7, "name"),
    ({"bridge": "a-name-longer-than-15"}, 7, "bridge"),
    ({"ipMasq": True}, 2, "ipMasq"),
    ({"mtu": 20}, 7, "mtu"),
    ({"isGateway": "yes"}, 7, "isGateway"),
    ({"ipam": {"type": "dhcp"}}, 2, "dhcp"),
    ({"ipam": {"type": "host-local"}}, 7, "ranges"),
    ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/31"}]]}}, 7, "too small"),
    ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "fd00::/64"}]]}}, 2, "IPv4 only"),
    ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.9.9.9"}]]}}, 7, "outside"),
    ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]}}, 2,
     "range sets"),
    ({"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]}}, 7,
     "overlap"),
    ({"ipam": {"type": "host-local", "subnet": "10.0.0.0/24", "routes": [{"dst": "nowhere"}]}}, 7, "routes[0]"),
    ({"prevResult": {"ips": [{"address": "not-an-ip"}]}}, 6, "prevResult"),
])
def test_invalid_configs_name_the_problem(change: dict[str, Any], code: int, fragment: str) -> None:
    raw = conf(ranges=[[{"subnet": "10.0.0.0/24"}]])
    raw.update(change)
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(CniPluginError) as failed:
        parse_netconf(json.dumps(raw).encode())
    assert failed.value.code == code, failed.value
    assert fragment in failed.value.details, failed.value


def test_legacy_flat_ipam_and_defaults() -> None:
    parsed = parse_netconf(json.dumps(conf(subnet="10.5.0.0/24")).encode())
    assert parsed.ipam is not None
    (r,) = parsed.ipam.ranges
    assert (str(r.range_start), str(r.range_end), str(r.gateway)) == ("10.5.0.1", "10.5.0.254", "10.5.0.1")
    assert (parsed.bridge, parsed.is_gateway, parsed.hairpin_mode) == ("cni0", False, False)


def test_environment_parsing() -> None:
    args = CniArgs.from_environ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc.1_x-y", "CNI_NETNS": "/run/netns/x",
                                 "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web",
                                 "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"})
    assert args.args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"}
    assert args.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert CniArgs.from_environ({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "abc", "CNI_IFNAME": "eth0"}).netns == ""
    for env, fragment in [
        ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_IFNAME": "eth0"}, "CNI_NETNS"),
        ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0",
          "CNI_ARGS": "novalue"}, "CNI_ARGS"),
        ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/x", "CNI_IFNAME": "x" * 16}, "CNI_IFNAME"),
    ]:
        with pytest.raises(CniPluginError) as failed:
            CniArgs.from_environ(env)
        assert failed.value.code == 4 and fragment in failed.value.details
