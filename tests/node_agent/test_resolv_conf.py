"""Pods' /etc/resolv.conf per dnsPolicy, rendered in full (kubelet's dns.Configurer)."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from node_agent.resolv_conf import (
    DnsConfig,
    DnsConfigurer,
    DnsWarning,
    parse_resolv_conf,
    render_resolv_conf,
    resolv_conf_mount,
)
from node_agent.runtime.container_spec import Mount, container_create_kwargs, pause_create_spec, to_docker_kwargs

HOST_RESOLV_CONF = """# written by the node's DHCP client
nameserver 192.0.2.53
nameserver 192.0.2.54
search old.example
search corp.example. lab.example
options timeout:2
options attempts:3 rotate
"""


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    path = tmp_path / "host-resolv.conf"
    path.write_text(HOST_RESOLV_CONF)
    return path


def pod(policy: str | None = None, host_network: bool = False, dns_config: dict[str, Any] | None = None,
        namespace: str = "shop") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "skiff/app:1.0"}]}
    if policy:
        spec["dnsPolicy"] = policy
    if host_network:
        spec["hostNetwork"] = True
    if dns_config is not None:
        spec["dnsConfig"] = dns_config
    return {"metadata": {"name": "p", "namespace": namespace, "uid": "u1"}, "spec": spec}


def render(configurer: DnsConfigurer, p: dict[str, Any]) -> str:
    return render_resolv_conf(configurer.pod_dns(p).config)


def test_parse_follows_the_kubelet(host_file: Path) -> None:
    assert parse_resolv_conf(HOST_RESOLV_CONF) == DnsConfig(
        ("192.0.2.53", "192.0.2.54"), ("corp.example", "lab.example"), ("attempts:3", "rotate"))
    assert parse_resolv_conf("nameserver\n  # c\n\n") == DnsConfig()


def test_cluster_first_is_the_default(host_file: Path) -> None:
    configurer = DnsConfigurer(["10.96.0.10"], "cluster.local", host_file)
    expected = ("search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
                "nameserver 10.96.0.10\n"
                "options ndots:5\n")
    assert render(configurer, pod()) == expected
    assert render(configurer, pod("ClusterFirst")) == expected


def test_cluster_first_on_the_host_network_falls_back_to_default(host_file: Path) -> None:
    configurer = DnsConfigurer(["10.96.0.10"], "cluster.local", host_file)
    assert render(configurer, pod("ClusterFirst", host_network=True)) == (
        "search corp.example lab.example\n"
        "nameserver 192.0.2.53\n"
        "nameserver 192.0.2.54\n"
        "options attempts:3 rotate\n")


def test_cluster_first_with_host_net(host_file: Path) -> None:
    configurer = DnsConfigurer(["10.96.0.10", "10.96.0.11"], "cluster.local", host_file)
    assert render(configurer, pod("ClusterFirstWithHostNet", host_network=True)) == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
        "nameserver 10.96.0.10\n"
        "nameserver 10.96.0.11\n"
        "options ndots:5\n")


def test_default_is_the_nodes_file(host_file: Path) -> None:
    configurer = DnsConfigurer(["10.96.0.10"], "cluster.local", host_file)
    assert render(configurer, pod("Default")) == (
        "search corp.example lab.example\n"
        "nameserver 192.0.2.53\n"
        "nameserver 192.0.2.54\n"
        "options attempts:3 rotate\n")


def test_default_without_a_resolv_conf_disables_lookups() -> None:
    configurer = DnsConfigurer(["10.96.0.10"], "cluster.local", None, node_ips=["10.250.0.11"])
    assert render(configurer, pod("Default")) == "search .\nnameserver 127.0.0.1\n"


def test_none_takes_only_the_pods_dns_config(host_file: Path) -> None:
    configurer = DnsConfigurer(["10.96.0.10"], "cluster.local", host_file)
    p = pod("None", dns_config={"nameservers": ["1.2.3.4"], "searches": ["ns1.svc.cluster-domain.example"],
                                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})
    assert render(configurer, p) == ("search ns1.svc.cluster-domain.example\n"
                                     "nameserver 1.2.3.4\n"
                                     "options ndots:2 edns0\n")


def test_dns_config_is_merged_into_cluster_first(host_file: Path) -> None:
    configurer = DnsConfigurer(["10.96.0.10"], "cluster.local", host_file)
    p = pod(dns_config={"nameservers": ["10.96.0.10", "1.1.1.1"], "searches": ["svc.cluster.local", "extra.example"],
                        "options": [{"name": "ndots", "value": "2"}, {"name": "single-request-reopen"}]})
    assert render(configurer, p) == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example extra.example\n"
        "nameserver 10.96.0.10\n"
        "nameserver 1.1.1.1\n"
        "options ndots:2 single-request-reopen\n")


def test_no_cluster_dns_falls_back_to_default_with_a_warning(host_file: Path) -> None:
    result = DnsConfigurer([], "cluster.local", host_file).pod_dns(pod())
    assert result.config.nameservers == ("192.0.2.53", "192.0.2.54")
    assert result.warnings == [DnsWarning("MissingClusterDNS", (
        'kubelet does not have ClusterDNS IP configured and cannot create Pod using "ClusterFirst" policy. '
        'Falling back to "Default" policy.'))]


def test_limits_are_the_kubelets(host_file: Path) -> None:
    configurer = DnsConfigurer(["10.96.0.10"], "cluster.local", host_file)
    many = [f"d{i}.example" for i in range(40)]
    result = configurer.pod_dns(pod(dns_config={"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"],
                                                 "searches": many}))
    assert result.config.nameservers == ("10.96.0.10", "1.1.1.1", "2.2.2.2")
    assert len(result.config.searches) == 32
    assert result.config.searches[:5] == ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local",
                                          "corp.example", "lab.example")
    assert [w.reason for w in result.warnings] == ["DNSConfigForming", "DNSConfigForming"]
    assert result.warnings[0].message == ("Nameserver limits were exceeded, some nameservers have been omitted, "
                                          "the applied nameserver line is: 10.96.0.10 1.1.1.1 2.2.2.2")
    assert result.warnings[1].message.startswith("Search Line limits were exceeded")
    # 2048 characters of search line at most, and no domain over 253.
    long = ["x" * 250 + f".{i}" for i in range(10)] + ["y" * 254]
    result = configurer.pod_dns(pod("None", dns_config={"searches": long}))
    assert len(" ".join(result.config.searches)) <= 2048
    assert result.config.searches == tuple(long[:8])


def test_mount_writes_the_file_once_and_skips_containers_that_mount_their_own(host_file: Path,
                                                                              tmp_path: Path) -> None:
    configurer = DnsConfigurer([], "cluster.local", host_file)
    pod_dir = tmp_path / "pods" / "u1"
    mount, warnings = resolv_conf_mount(configurer, pod(), pod_dir, {"name": "app"})
    assert mount == Mount(source=str(pod_dir / "resolv.conf"), target="/etc/resolv.conf")
    assert (pod_dir / "resolv.conf").read_text() == render(configurer, pod())
    assert (pod_dir / "resolv.conf").stat().st_mode & 0o777 == 0o644
    assert [w.reason for w in warnings] == ["MissingClusterDNS"]
    again, warnings = resolv_conf_mount(configurer, pod(), pod_dir, {"name": "sidecar"})
    assert again == mount and warnings == []  # same content: no second warning
    own = {"name": "app", "volumeMounts": [{"name": "cfg", "mountPath": "/etc/resolv.conf"}]}
    assert resolv_conf_mount(configurer, pod(), pod_dir, own) == (None, [])


# ---- on the real dockerd: the bind mount wins over Docker's own resolv.conf -------------------

BUSYBOX = Path("/bin/busybox")


def _busybox_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in ("sleep", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


def test_containers_see_the_pods_resolv_conf_in_docker(host_file: Path, tmp_path: Path) -> None:
    docker = pytest.importorskip("docker")
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # noqa: BLE001 — any failure means "no usable dockerd here"
        pytest.skip(f"dockerd not reachable: {exc}")
    api = client.api
    suffix = uuid.uuid4().hex[:8]
    tag = f"skiff-test/resolv:{suffix}"
    api.import_image_from_data(_busybox_tar(), repository=tag.split(":")[0], tag=suffix,
                               changes=['CMD ["/bin/sleep", "3600"]'])
    container: dict[str, Any] = {"name": "app", "image": tag, "command": ["cat", "/etc/resolv.conf"]}
    p = pod()
    p["metadata"].update(name=f"resolv-{suffix}", uid=f"uid-{suffix}")
    configurer = DnsConfigurer(["10.96.0.10"], "cluster.local", host_file)
    created: list[str] = []
    try:
        pause_id = api.create_container(**to_docker_kwargs(api, pause_create_spec(p, tag)))["Id"]
        created.append(pause_id)
        api.start(pause_id)
        mount, _ = resolv_conf_mount(configurer, p, tmp_path / "pod", container)
        assert mount is not None
        spec = container_create_kwargs(p, container, kind="app", pause_id=pause_id, restart_count=0, attempt=0,
                                       mounts=[mount], env={}, image_ref=tag)
        app_id = api.create_container(**to_docker_kwargs(api, spec))["Id"]
        created.append(app_id)
        api.start(app_id)
        assert api.wait(app_id, timeout=60)["StatusCode"] == 0
        assert api.logs(app_id, stdout=True, stderr=False).decode() == render(configurer, p)
    finally:
        for cid in reversed(created):
            api.remove_container(cid, force=True)
        api.remove_image(tag, force=True)
        client.close()


def test_agent_flags(tmp_path: Path) -> None:
    import argparse

    from node_agent.main import add_agent_parser, settings_from_args
    from node_agent.resolv_conf import configurer_for

    parser = argparse.ArgumentParser()
    add_agent_parser(parser.add_subparsers())
    base = ["agent", "--kubeconfig", str(tmp_path / "kc"), "--node-name", "n1"]
    default = settings_from_args(parser.parse_args(base))
    assert (default.cluster_dns, default.cluster_domain, default.resolv_conf) == ((), "cluster.local",
                                                                                  "/etc/resolv.conf")
    custom = settings_from_args(parser.parse_args([
        *base, "--cluster-dns", "10.96.0.10", "--cluster-dns", "10.96.0.11, 10.96.0.12", "--cluster-domain", "corp",
        "--resolv-conf", ""]))
    assert custom.cluster_dns == ("10.96.0.10", "10.96.0.11", "10.96.0.12")
    configurer = configurer_for(custom, "10.250.0.11")
    assert configurer.resolv_conf is None and configurer.cluster_domain == "corp"
    assert configurer_for(default, "10.250.0.11").resolv_conf == Path("/etc/resolv.conf")
    with pytest.raises(ValueError, match="--cluster-dns 'ten': not an IP address"):
        settings_from_args(parser.parse_args([*base, "--cluster-dns", "ten"]))
