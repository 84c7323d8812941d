"""Cluster DNS in a real ``skiff server`` (subprocess, 127.0.0.1, a free DNS port): Services
and EndpointSlices made through the API show up in answers over UDP and TCP."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from control_plane.api.settings import ApiServerSettings

if TYPE_CHECKING:
    from tests.conftest import ApiServer, ServerFactory

HOST = "127.0.0.1"
WAIT = 60.0  # seconds for a change to reach DNS on a loaded machine (it takes milliseconds when idle)


def free_dns_port() -> int:
    """A port free on 127.0.0.1 for both UDP and TCP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


class Dns:
    def __init__(self, port: int) -> None:
        self.port = port

    def ask(self, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        if tcp:
            return dns.query.tcp(query, HOST, port=self.port, timeout=5)
        return dns.query.udp(query, HOST, port=self.port, timeout=5)

    def records(self, name: str, rdtype: str = "A", tcp: bool = False) -> tuple[int, list[str]]:
        """(rcode, sorted record data of the answer's last RRset)."""
        try:
            r = self.ask(name, rdtype, tcp)
        except dns.exception.Timeout:
            return -1, []
        return r.rcode(), sorted(rd.to_text() for rd in r.answer[-1]) if r.answer else []

    def wait_for(self, name: str, want: tuple[int, list[str]], rdtype: str = "A",
                 wait_until: Callable[..., Any] | None = None) -> None:
        """Until both UDP and TCP give ``want``."""
        assert wait_until is not None
        last: list[Any] = []

        def check() -> bool:
            last[:] = [self.records(name, rdtype), self.records(name, rdtype, tcp=True)]
            return last == [want, want]
        try:
            wait_until(check, WAIT, f"{rdtype} {name} -> {want}", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}; last (udp, tcp): {last}") from None


def root_conftest(config: pytest.Config) -> ModuleType:
    """The root conftest as pytest loaded it: servers it starts get their logs attached
    to failing tests."""
    root = Path(__file__).resolve().parent.parent / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if isinstance(plugin, ModuleType) and Path(getattr(plugin, "__file__", None) or "").resolve() == root:
            return plugin
    raise RuntimeError(f"{root} is not loaded")


@pytest.fixture(scope="module")
def dns_server(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Dns]]:
    conftest = root_conftest(request.config)
    port = free_dns_port()
    server: ApiServer = conftest.start_server(tmp_path_factory.mktemp("dns-server"), extra_args=(
        "--controllers", "namespace", "--cluster-dns-port", str(port)))
    resolver = Dns(port)
    try:
        # Synced: the informers have listed, so answers are real (SERVFAIL until then).
        conftest.wait_until(lambda: resolver.records("kubernetes.default.svc.cluster.local")[0] == dns.rcode.NOERROR,
                            WAIT, "cluster DNS to answer", interval=0.1)
        yield server, resolver
    finally:
        server.stop()
        if server in conftest._LIVE:
            conftest._LIVE.remove(server)


@pytest.fixture
def ns(dns_server: tuple[ApiServer, Dns]) -> Iterator[str]:
    server, _ = dns_server
    name = f"dns-{uuid.uuid4().hex[:8]}"
    assert server.post("/api/v1/namespaces", {"metadata": {"name": name}}).status == 201
    yield name
    server.delete(f"/api/v1/namespaces/{name}")


def created(resp: Any) -> dict[str, Any]:
    assert resp.status in (200, 201), resp
    body: dict[str, Any] = resp.json()
    return body


def test_bootstrap_services_resolve(dns_server: tuple[ApiServer, Dns], wait_until: Callable[..., Any]) -> None:
    server, resolver = dns_server
    resolver.wait_for("kubernetes.default.svc.cluster.local", (dns.rcode.NOERROR, ["10.96.0.1"]),
                      wait_until=wait_until)
    assert resolver.records("kube-dns.kube-system.svc.cluster.local") == (dns.rcode.NOERROR, ["10.96.0.10"])
    assert resolver.records("_dns._udp.kube-dns.kube-system.svc.cluster.local", "SRV") == (
        dns.rcode.NOERROR, ["0 100 53 kube-dns.kube-system.svc.cluster.local."])
    svc = server.get("/api/v1/namespaces/kube-system/services/kube-dns").json()
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    # Its address is never handed to another Service.
    taken = server.post("/api/v1/namespaces/default/services",
                        {"metadata": {"name": f"thief-{uuid.uuid4().hex[:6]}"},
                         "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}})
    assert taken.status == 422 and "already allocated" in taken.text, taken


def test_services_and_endpointslices_through_the_api(dns_server: tuple[ApiServer, Dns], ns: str,
                                                     wait_until: Callable[..., Any]) -> None:
    server, resolver = dns_server
    base = f"/api/v1/namespaces/{ns}"
    web = created(server.post(f"{base}/services", {"metadata": {"name": "web"},
                                                   "spec": {"ports": [{"name": "http", "port": 80}]}}))
    ip = web["spec"]["clusterIP"]
    resolver.wait_for(f"web.{ns}.svc.cluster.local", (dns.rcode.NOERROR, [ip]), wait_until=wait_until)
    assert resolver.records(f"_http._tcp.web.{ns}.svc.cluster.local", "SRV") == (
        dns.rcode.NOERROR, [f"0 100 80 web.{ns}.svc.cluster.local."])

    created(server.post(f"{base}/services", {"metadata": {"name": "db"},
                                             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}))
    slice_path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
    body = {"metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}}, "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": {"ready": True}},
                          {"addresses": ["10.244.2.6"], "hostname": "db-1", "conditions": {"ready": True}},
                          {"addresses": ["10.244.3.7"], "hostname": "db-2", "conditions": {"ready": False}}]}
    slice_ = created(server.post(slice_path, body))
    resolver.wait_for(f"db.{ns}.svc.cluster.local", (dns.rcode.NOERROR, ["10.244.1.5", "10.244.2.6"]),
                      wait_until=wait_until)
    assert resolver.records(f"db-1.db.{ns}.svc.cluster.local") == (dns.rcode.NOERROR, ["10.244.2.6"])
    assert resolver.records(f"db-2.db.{ns}.svc.cluster.local")[0] == dns.rcode.NXDOMAIN
    assert resolver.records(f"_pg._tcp.db.{ns}.svc.cluster.local", "SRV", tcp=True) == (
        dns.rcode.NOERROR, [f"0 50 5432 db-{i}.db.{ns}.svc.cluster.local." for i in (0, 1)])

    slice_["endpoints"][2]["conditions"]["ready"] = True  # db-2 becomes ready
    created(server.request("PUT", f"{slice_path}/db-1", slice_))
    resolver.wait_for(f"db.{ns}.svc.cluster.local", (dns.rcode.NOERROR, ["10.244.1.5", "10.244.2.6", "10.244.3.7"]),
                      wait_until=wait_until)

    created(server.post(f"{base}/services", {"metadata": {"name": "ext"},
                                             "spec": {"type": "ExternalName", "externalName": "example.com"}}))
    resolver.wait_for(f"ext.{ns}.svc.cluster.local", (dns.rcode.NOERROR, ["example.com."]), wait_until=wait_until)

    assert server.delete(f"{slice_path}/db-1").status == 200
    resolver.wait_for(f"db.{ns}.svc.cluster.local", (dns.rcode.NXDOMAIN, []), wait_until=wait_until)
    assert server.delete(f"{base}/services/web").status == 200
    resolver.wait_for(f"web.{ns}.svc.cluster.local", (dns.rcode.NXDOMAIN, []), wait_until=wait_until)


def test_names_outside_the_cluster_are_refused_at_once(dns_server: tuple[ApiServer, Dns]) -> None:
    _, resolver = dns_server
    for tcp in (False, True):
        started = time.monotonic()
        r = resolver.ask("example.com", "A", tcp=tcp)
        assert r.rcode() == dns.rcode.REFUSED
        assert time.monotonic() - started < 2.0


def test_port_zero_disables_cluster_dns(server_factory: ServerFactory) -> None:
    server = server_factory.start(extra_args=("--controllers", "", "--cluster-dns-port", "0"))
    assert server.get("/api/v1/namespaces/kube-system/services/kube-dns").status == 404
    assert "cluster DNS" not in server.log_text()


@pytest.mark.parametrize("settings,message", [
    ({"cluster_dns": "10.0.0.10"}, "--cluster-dns 10.0.0.10: must be a free address of the service range"),
    ({"cluster_dns": "10.96.0.1"}, "not the kubernetes Service's 10.96.0.1"),
    ({"cluster_dns": "bogus"}, "--cluster-dns 'bogus': not an IP address"),
    ({"cluster_dns_port": 70000}, "--cluster-dns-port 70000: not a port number"),
    ({"cluster_domain": "a..b"}, "--cluster-domain 'a..b': not a domain name"),
])
def test_bad_settings_are_refused(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        ApiServerSettings(data_dir=tmp_path, **settings).validate()
    assert message in str(raised.value)
    ApiServerSettings(data_dir=tmp_path, **{**settings, "cluster_dns_port": 0, "cluster_domain": "x.y"}).validate()


def test_the_server_exits_on_a_bad_flag(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    proc = subprocess.run([*root_conftest(request.config).skiff_command(), "server", "--data-dir", str(tmp_path), "--port", "1",
                           "--cluster-dns", "10.0.0.10"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "skiff server: --cluster-dns 10.0.0.10: must be a free address" in proc.stderr
    assert not (tmp_path / "state.db").exists()
