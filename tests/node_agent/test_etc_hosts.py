from pathlib import Path

from node_agent.etc_hosts import etc_hosts_mount, render_etc_hosts


def pod(**spec: object) -> dict[str, object]:
    return {"metadata": {"name": "web-1", "namespace": "shop"}, "spec": {"containers": [], **spec}}


def test_hosts_file_names_the_pod() -> None:
    text = render_etc_hosts(pod(), "10.244.1.7")
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert text.endswith("10.244.1.7\tweb-1\n")


def test_subdomain_and_host_aliases() -> None:
    text = render_etc_hosts(pod(hostname="db", subdomain="cluster",
                                hostAliases=[{"ip": "10.0.0.9", "hostnames": ["a.example", "b.example"]}]),
                            "10.244.1.7")
    assert "10.244.1.7\tdb.cluster.shop.svc.cluster.local\tdb\n" in text
    assert text.endswith("# Entries added by HostAliases.\n10.0.0.9\ta.example\tb.example\n")


def test_mount_is_skipped_for_host_network_and_own_mounts(tmp_path: Path) -> None:
    c = {"name": "c"}
    assert etc_hosts_mount(pod(hostNetwork=True), tmp_path, "10.244.1.7", c) is None
    assert etc_hosts_mount(pod(), tmp_path, None, c) is None
    assert etc_hosts_mount(pod(), tmp_path, "10.244.1.7", {"name": "c", "volumeMounts": [
        {"name": "h", "mountPath": "/etc/hosts"}]}) is None
    mount = etc_hosts_mount(pod(), tmp_path, "10.244.1.7", c)
    assert mount is not None and mount.target == "/etc/hosts"
    assert Path(mount.source).read_text().endswith("10.244.1.7\tweb-1\n")
