"""The index behind cluster DNS: what a Service and its EndpointSlices turn into, and how
updates, relabels and deletions of slices move endpoints."""

from __future__ import annotations

from typing import Any

from control_plane.dns.records import ClusterRecords, EndpointEntry, Port, ServiceEntry, service_entry


def slice_(name: str, svc: str | None, ips: list[str], ns: str = "ns", ready: bool = True,
           ports: list[dict[str, Any]] | None = None, address_type: str = "IPv4") -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": svc} if svc else {}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "addressType": address_type,
            "ports": ports or [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips]}


def test_service_entries() -> None:
    assert service_entry({"metadata": {"name": "Web", "namespace": "NS"},
                          "spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
                                   "ports": [{"name": "HTTP", "port": 80}, {"port": 81, "protocol": "UDP"}]}}) == \
        ServiceEntry("ns", "web", ("10.96.0.5",), False, "", (Port("http", 80, "tcp"), Port("", 81, "udp")))
    headless = service_entry({"metadata": {"name": "h", "namespace": "ns"}, "spec": {"clusterIP": "None"}})
    assert headless.headless and headless.cluster_ips == ()
    ext = service_entry({"metadata": {"name": "e", "namespace": "ns"},
                         "spec": {"type": "ExternalName", "externalName": "Example.COM."}})
    assert ext.external_name == "example.com" and not ext.headless and ext.cluster_ips == ()


def test_endpoints_merge_slices_and_skip_unready_and_fqdn() -> None:
    r = ClusterRecords()
    r.upsert_slice(slice_("a", "web", ["10.0.0.1", "10.0.0.2"]))
    r.upsert_slice(slice_("b", "web", ["10.0.0.2", "10.0.0.3"]))  # 10.0.0.2 in both for a moment
    r.upsert_slice(slice_("c", "web", ["10.0.0.4"], ready=False))
    r.upsert_slice(slice_("d", "web", ["example.com"], address_type="FQDN"))
    http = (Port("http", 8080, "tcp"),)
    assert r.endpoints("ns", "web") == tuple(EndpointEntry(ip, "", http)
                                             for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"))


def test_slice_updates_relabels_and_deletes() -> None:
    r = ClusterRecords()
    r.upsert_slice(slice_("a", "web", ["10.0.0.1"]))
    generation = r.generation
    r.upsert_slice(slice_("a", "web", ["10.0.0.1"]))  # unchanged: no new generation
    assert r.generation == generation
    r.upsert_slice(slice_("a", "api", ["10.0.0.1"]))  # moved to another Service
    assert r.endpoints("ns", "web") == () and [e.address for e in r.endpoints("ns", "api")] == ["10.0.0.1"]
    r.upsert_slice(slice_("a", None, ["10.0.0.1"]))  # label removed: belongs to nothing
    assert r.endpoints("ns", "api") == ()
    r.upsert_slice(slice_("a", "api", ["10.0.0.9"]))
    r.delete_slice(slice_("a", "api", []))
    assert r.endpoints("ns", "api") == ()
    assert r.generation > generation


def test_namespaces_exist_while_they_hold_services() -> None:
    r = ClusterRecords()
    svc = {"metadata": {"name": "web", "namespace": "ns"}, "spec": {"clusterIP": "10.96.0.5"}}
    r.upsert_service(svc)
    r.upsert_service(svc)
    assert r.has_namespace("ns")
    r.delete_service(svc)
    assert not r.has_namespace("ns")
    r.delete_service(svc)  # twice: nothing happens
    assert not r.has_namespace("ns")


def test_serial_only_grows() -> None:
    now = [1000.0]
    r = ClusterRecords(clock=lambda: now[0])
    first = r.serial
    r.upsert_slice(slice_("a", "web", ["10.0.0.1"]))
    r.upsert_slice(slice_("a", "web", ["10.0.0.2"]))
    assert first < r.serial
    now[0] = 500.0  # the clock stepped back
    before = r.serial
    r.upsert_slice(slice_("a", "web", ["10.0.0.3"]))
    assert r.serial > before
