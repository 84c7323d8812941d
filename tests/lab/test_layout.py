"""Unit tests of the lab's pure parts: names, address plan, subnet choice, rendered configs, rootfs."""

from __future__ import annotations

import io
import ipaddress
import tarfile
from pathlib import Path

import pytest

from node_agent.images.rootfs import RootFS
from node_agent.lab.firewall import render_lab_chain
from node_agent.lab.layout import LabError, LabLayout, preferred_subnet_index, validate_name
from node_agent.lab.processes import mentions_path
from node_agent.lab.state import LabState, NodeState, ProcessRecord, Registration, register, registrations
from node_agent.lab.up import choose_subnet


@pytest.mark.parametrize("name", ["a", "skiff", "t0z9ab"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Skiff", "toolong7", "a-b", "a_b", "a b", "../x"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(LabError, match="invalid lab name"):
        validate_name(name)


def test_layout_names_fit_linux_limits() -> None:
    layout = LabLayout("abcdef", Path("/var/lib/skiff-lab/abcdef"), 7)
    assert layout.bridge == "skiff-abcdef"
    assert layout.host_veth(50) == "skiff-abcdef-50" and len(layout.host_veth(50)) <= 15
    assert layout.netns(2) == "skiff-abcdef-2"
    assert layout.node_name(2) == "abcdef-node-2"
    assert layout.bridge_ip == ipaddress.IPv4Interface("10.250.7.1/24")
    assert layout.node_ip(3) == ipaddress.IPv4Interface("10.250.7.13/24")
    assert layout.pod_cidr(3) == ipaddress.IPv4Network("10.244.3.0/24")
    assert layout.cgroup_parent(1) == "/skiff-abcdef-node-1"
    assert layout.chain == "SKIFF-LAB-ABCDEF"
    assert layout.docker_host(1) == "unix:///var/lib/skiff-lab/abcdef/abcdef-node-1/docker.sock"


def test_subnet_is_stable_and_differs_between_registered_labs(tmp_path: Path) -> None:
    # Find two names whose preferred subnet is the same: the second must get another one.
    first = "a"
    twin = next(n for n in (f"b{i}" for i in range(100000)) if preferred_subnet_index(n) ==
                preferred_subnet_index(first))
    k1 = choose_subnet(first, run_dir=tmp_path)
    assert k1 == choose_subnet(first, run_dir=tmp_path)  # stable
    register(Registration(first, tmp_path / "a", k1), run_dir=tmp_path)
    k2 = choose_subnet(twin, run_dir=tmp_path)
    assert k2 != k1
    assert [r.name for r in registrations(tmp_path)] == [first]


def test_state_round_trip() -> None:
    rec = ProcessRecord(pid=42, create_time=1.5, log="/x/log", argv=["dockerd"])
    state = LabState(name="t1", state_dir="/tmp/x", subnet_index=9, cni_plugin="reference",
                     nodes=[NodeState(1, "t1-node-1", "skiff-t1-1", "10.250.9.11/24", "10.244.1.0/24",
                                      "unix:///tmp/x/t1-node-1/docker.sock", dockerd=rec)], server=rec)
    assert LabState.from_json(state.to_json()) == state


def test_lab_chain_accepts_only_bridge_to_bridge() -> None:
    assert render_lab_chain("skiff-t1") == [
        ["-i", "skiff-t1", "-o", "skiff-t1", "-j", "ACCEPT"],
        ["-i", "skiff-t1", "-j", "DROP"],
        ["-o", "skiff-t1", "-j", "DROP"],
    ]


def test_mentions_path_needs_a_boundary() -> None:
    sd = Path("/tmp/skl-ab")
    assert mentions_path(["dockerd", "--data-root", "/tmp/skl-ab/n1/docker"], sd)
    assert mentions_path(["-H", "unix:///tmp/skl-ab/n1/docker.sock"], sd)
    assert mentions_path(["--data-root=/tmp/skl-ab"], sd)
    assert not mentions_path(["--data-root", "/tmp/skl-abc/n1"], sd)
    assert not mentions_path(["sleep", "100"], sd)


def test_rootfs_tar_is_deterministic() -> None:
    def build() -> bytes:
        fs = RootFS()
        fs.file("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        fs.dir("/tmp", 0o1777)
        fs.symlink("/bin/sh", "/bin/busybox")
        return fs.tar()

    data = build()
    assert data == build()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
    assert sorted(members) == ["bin", "bin/sh", "etc", "etc/passwd", "tmp"]
    assert members["tmp"].mode == 0o1777
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert all(m.mtime == 0 and m.uid == 0 for m in members.values())
