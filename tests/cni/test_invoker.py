"""node_agent.runtime.cni: the agent's side of CNI, with Skiff's plugin and with the reference plugins.

The agent runs inside its node's netns, so these tests put the test thread into the
node namespace (setns) while the invoker runs: every plugin it spawns inherits it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cni_testlib import REFERENCE_BIN_DIR, Namespaces, Node, host_veths, ipv4_addresses, links, netns_path, ping

from cni import netlink
from node_agent.runtime.cni import (
    NO_CACHED_RESULT,
    NO_NETWORK_CONFIG,
    PLUGIN_NOT_FOUND,
    CniError,
    CniNetwork,
    install_skiff_plugin,
    render_conflist,
    write_conflist,
)

SUBNET = "10.244.3.0/24"
GATEWAY = "10.244.3.1"


@pytest.fixture
def in_node(node: Node) -> Iterator[Node]:
    """Run the test body with this thread in the node's netns, as the agent would be."""
    fd = netlink.open_netns(node.path)
    try:
        with netlink.entered(fd, node.path):
            yield node
    finally:
        os.close(fd)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    install_skiff_plugin(path)
    return path


def network(tmp_path: Path, node: Node, bin_dir: Path, plugin: str, conflist: dict[str, Any] | None = None,
            ) -> CniNetwork:
    conf_dir = tmp_path / "net.d"
    if conflist is None:
        write_conflist(conf_dir, plugin, SUBNET, node.bridge, str(node.data_dir))  # type: ignore[arg-type]
    else:
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "10-test.conflist").write_text(json.dumps(conflist))
    return CniNetwork.load(conf_dir, bin_dirs=[bin_dir, REFERENCE_BIN_DIR], cache_dir=tmp_path / "cache")


def reserved(node: Node, name: str = "skiff") -> list[str]:
    directory = node.data_dir / name
    return sorted(p.name for p in directory.iterdir() if p.name[0].isdigit()) if directory.exists() else []


PLUGINS = ["skiff", "reference"]


@pytest.mark.parametrize("plugin", PLUGINS)
async def test_add_check_delete(plugin: str, in_node: Node, namespaces: Namespaces, tmp_path: Path,
                                bin_dir: Path) -> None:
    node = in_node
    net = network(tmp_path, node, bin_dir, plugin)
    assert (net.name, net.cni_version, net.plugins[0]["type"]) == (
        "skiff", "1.0.0", "skiff-bridge" if plugin == "skiff" else "bridge")
    a, b = namespaces.new("skcc"), namespaces.new("skcc")

    result_a = await net.add("cid-a", netns_path(a))
    result_b = await net.add("cid-b", netns_path(b), "eth0")
    assert (result_a.ip, result_b.ip) == ("10.244.3.2", "10.244.3.3")
    assert result_a.pod_ips == ["10.244.3.2"] and result_a.gateway == GATEWAY
    assert result_a.interfaces[-1].name == "eth0" and result_a.interfaces[-1].sandbox == netns_path(a)
    assert ipv4_addresses(a, "eth0") == ["10.244.3.2/24"]
    assert ipv4_addresses(node.ns, node.bridge) == [f"{GATEWAY}/24"]
    assert reserved(node) == ["10.244.3.2", "10.244.3.3"]
    assert ping(a, result_b.ip) and ping(b, result_a.ip)

    # The ADD result is cached for DEL and CHECK, under libcni's name.
    cache = tmp_path / "cache" / "results" / "skiff-cid-a-eth0"
    assert json.loads(cache.read_text())["result"] == dict(result_a.raw)
    assert net.cached_result("cid-a") == result_a
    await net.check("cid-a", netns_path(a))

    subprocess.run(["ip", "-n", a, "addr", "flush", "dev", "eth0"], check=True)
    with pytest.raises(CniError) as failed:
        await net.check("cid-a", netns_path(a))
    assert failed.value.command == "CHECK" and failed.value.code > 0

    await net.delete("cid-a", netns_path(a))
    await net.delete("cid-a", netns_path(a))  # twice is fine
    assert not cache.exists()
    assert set(links(a)) == {"lo"} and reserved(node) == ["10.244.3.3"]
    with pytest.raises(CniError) as no_cache:
        await net.check("cid-a", netns_path(a))
    assert no_cache.value.code == NO_CACHED_RESULT

    # DEL after the netns is gone: still releases the address.
    namespaces.delete(b)
    await net.delete("cid-b", netns_path(b))
    assert reserved(node) == [] and host_veths(node) == []
    await net.delete("never-added", netns_path(b))


@pytest.mark.parametrize("plugin", PLUGINS)
async def test_bad_config_is_a_plugin_error_and_leaves_nothing(plugin: str, in_node: Node, namespaces: Namespaces,
                                                               tmp_path: Path, bin_dir: Path) -> None:
    node = in_node
    conflist = render_conflist(plugin, SUBNET, node.bridge, str(node.data_dir))  # type: ignore[arg-type]
    conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] = "10.244.3.0/33"
    net = network(tmp_path, node, bin_dir, plugin, conflist)
    pod = namespaces.new("skcc")
    with pytest.raises(CniError) as failed:
        await net.add("cid-a", netns_path(pod))
    assert failed.value.command == "ADD" and failed.value.code > 0, failed.value
    if plugin == "skiff":
        assert failed.value.code == 7 and "10.244.3.0/33" in failed.value.details
    assert set(links(pod)) == {"lo"} and host_veths(node) == [] and reserved(node) == []
    assert net.cached("cid-a") is None


async def test_a_failing_chained_plugin_rolls_back_the_whole_attachment(in_node: Node, namespaces: Namespaces,
                                                                       tmp_path: Path, bin_dir: Path) -> None:
    """The second plugin gets the first's result as prevResult; when it fails, ADD is undone by DEL."""
    node = in_node
    seen = tmp_path / "seen"
    fail = bin_dir / "skiff-test-fail"
    fail.write_text(
        "#!/bin/sh\n"
        f"cat > {seen}.$CNI_COMMAND\n"
        'if [ "$CNI_COMMAND" = ADD ]; then\n'
        '  echo \'{"cniVersion":"1.0.0","code":142,"msg":"refused","details":"on purpose"}\'; exit 1\n'
        "fi\n"
    )
    fail.chmod(0o755)
    conflist = render_conflist("skiff", SUBNET, node.bridge, str(node.data_dir))
    conflist["plugins"].append({"type": "skiff-test-fail", "capabilities": {"portMappings": True}})
    net = network(tmp_path, node, bin_dir, "skiff", conflist)
    pod = namespaces.new("skcc")

    with pytest.raises(CniError) as failed:
        await net.add("cid-a", netns_path(pod), capability_args={"portMappings": [{"hostPort": 80}], "other": 1})
    assert (failed.value.code, failed.value.msg, failed.value.details, failed.value.plugin) == (
        142, "refused", "on purpose", "skiff-test-fail")

    add_input = json.loads(Path(f"{seen}.ADD").read_text())
    assert add_input["name"] == "skiff" and add_input["cniVersion"] == "1.0.0"
    assert add_input["prevResult"]["ips"][0]["address"] == "10.244.3.2/24"
    assert add_input["runtimeConfig"] == {"portMappings": [{"hostPort": 80}]}
    assert "capabilities" not in add_input
    assert Path(f"{seen}.DEL").exists(), "the failed ADD was not followed by a DEL"
    assert set(links(pod)) == {"lo"} and host_veths(node) == [] and reserved(node) == []
    assert net.cached("cid-a") is None


async def test_gc_deletes_cached_attachments_that_are_no_longer_valid(in_node: Node, namespaces: Namespaces,
                                                                      tmp_path: Path, bin_dir: Path) -> None:
    node = in_node
    net = network(tmp_path, node, bin_dir, "skiff")
    pods = {cid: namespaces.new("skcc") for cid in ("cid-a", "cid-b", "cid-c")}
    for cid, pod in pods.items():
        await net.add(cid, netns_path(pod))
    assert await net.gc([("cid-b", "eth0")]) == [("cid-a", "eth0"), ("cid-c", "eth0")]
    assert [a.container_id for a in net.cached_attachments()] == ["cid-b"]
    assert reserved(node) == ["10.244.3.3"]
    assert set(links(pods["cid-a"])) == {"lo"} and "eth0" in links(pods["cid-b"])


async def test_missing_plugin_binary_and_missing_config(tmp_path: Path, bin_dir: Path) -> None:
    with pytest.raises(CniError) as no_config:
        CniNetwork.load(tmp_path / "empty")
    assert no_config.value.code == NO_NETWORK_CONFIG
    net = CniNetwork.from_conflist({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "no-such-plugin"}]},
                                   bin_dirs=[bin_dir], cache_dir=tmp_path / "cache")
    with pytest.raises(CniError) as not_found:
        await net.add("cid-a", "/run/netns/whatever")
    assert not_found.value.code == PLUGIN_NOT_FOUND and str(bin_dir) in not_found.value.details


def test_conflist_rendering_and_files(tmp_path: Path) -> None:
    expected: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "skiff",
        "plugins": [{
            "type": "skiff-bridge",
            "bridge": "skiff0",
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.244.1.0/24", "gateway": "10.244.1.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": "/var/lib/skiff/cni",
            },
        }],
    }
    assert render_conflist("skiff", "10.244.1.0/24", "skiff0", "/var/lib/skiff/cni") == expected
    reference = render_conflist("reference", "10.244.1.0/24", "skiff0", "/var/lib/skiff/cni")
    assert reference["plugins"][0]["type"] == "bridge"
    assert {k: v for k, v in reference["plugins"][0].items() if k != "type"} == \
        {k: v for k, v in expected["plugins"][0].items() if k != "type"}

    path = write_conflist(tmp_path, "skiff", "10.244.1.0/24", "skiff0", "/var/lib/skiff/cni")
    assert path == tmp_path / "10-skiff.conflist" and json.loads(path.read_text()) == expected
    mtime = path.stat().st_mtime_ns
    write_conflist(tmp_path, "skiff", "10.244.1.0/24", "skiff0", "/var/lib/skiff/cni")
    assert path.stat().st_mtime_ns == mtime


def test_install_skiff_plugin_is_an_idempotent_executable_wrapper(tmp_path: Path) -> None:
    path = install_skiff_plugin(tmp_path)
    assert path == tmp_path / "skiff-bridge"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    first = (path.read_text(), path.stat().st_ino)
    install_skiff_plugin(tmp_path)
    assert (path.read_text(), path.stat().st_ino) == first
    done = subprocess.run([str(path)], input=b'{"cniVersion":"1.0.0"}', capture_output=True, timeout=60,
                          env={"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "")}, cwd="/")
    assert done.returncode == 0, done
    assert json.loads(done.stdout)["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


async def test_switching_plugins_shares_the_ipam_layout_and_del_uses_the_added_config(
        in_node: Node, namespaces: Namespaces, tmp_path: Path, bin_dir: Path) -> None:
    """Skiff's IPAM files are host-local's: the reference plugin continues where Skiff's stopped."""
    node = in_node
    skiff = network(tmp_path, node, bin_dir, "skiff")
    a, b = namespaces.new("skcc"), namespaces.new("skcc")
    assert (await skiff.add("cid-a", netns_path(a))).ip == "10.244.3.2"

    reference = network(tmp_path, node, bin_dir, "reference")  # rewrites the same 10-skiff.conflist
    assert reference.plugins[0]["type"] == "bridge"
    assert (await reference.add("cid-b", netns_path(b))).ip == "10.244.3.3"
    assert reserved(node) == ["10.244.3.2", "10.244.3.3"]
    assert ping(a, "10.244.3.3")

    # cid-a was ADDed by skiff-bridge: its DEL runs skiff-bridge again, from the cached config.
    await reference.delete("cid-a", netns_path(a))
    assert reserved(node) == ["10.244.3.3"] and set(links(a)) == {"lo"}
    await reference.delete("cid-b", netns_path(b))
    assert reserved(node) == [] and host_veths(node) == []
