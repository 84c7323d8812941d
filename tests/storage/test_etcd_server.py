"""`skiff server --storage etcd`: two API servers on one etcd (TLS client certificates)
serve the same objects with the same resourceVersions, a write on one reaches a watch
on the other, objects sit in etcd under /registry as JSON, and a restart loses nothing."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import requires_etcd
from .etcd_cluster import EtcdCluster

pytestmark = requires_etcd


@pytest.fixture
def etcd_tls(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd", size=1, tls=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def etcd_args(cluster: EtcdCluster) -> tuple[str, ...]:
    tls = cluster.client_tls
    assert tls is not None
    return ("--storage", "etcd", "--etcd-servers", cluster.endpoints_flag, "--etcd-cafile", str(tls.ca_file),
            "--etcd-certfile", str(tls.cert_file), "--etcd-keyfile", str(tls.key_file))


def configmap(name: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}


def test_two_servers_on_one_etcd(etcd_tls: EtcdCluster, server_factory: Any, tmp_path: Path) -> None:
    a = server_factory.start(tmp_path / "a", extra_args=etcd_args(etcd_tls))
    b = server_factory.start(tmp_path / "b", extra_args=etcd_args(etcd_tls))
    resp = a.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ha"}})
    assert resp.status == 201, resp
    created = a.post("/api/v1/namespaces/ha/configmaps", configmap("cm", "1"))
    assert created.status == 201, created
    rv = created.json()["metadata"]["resourceVersion"]
    # The other server reads it with the same resourceVersion.
    got = b.get("/api/v1/namespaces/ha/configmaps/cm")
    assert got.status == 200, got
    assert got.json()["metadata"]["resourceVersion"] == rv
    assert got.json()["data"] == {"v": "1"}

    # An update through one server reaches a watch on the other, after the version it started at.
    body = {**created.json(), "data": {"v": "2"}}
    updated = a.request("PUT", "/api/v1/namespaces/ha/configmaps/cm", body)
    assert updated.status == 200, updated
    watch = b.get(f"/api/v1/namespaces/ha/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1")
    events = [json.loads(line) for line in watch.body.splitlines() if line.strip()]
    assert [(e["type"], e["object"]["data"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("MODIFIED", {"v": "2"}, updated.json()["metadata"]["resourceVersion"])]
    # A stale write through the other server conflicts, as on one server.
    stale = b.request("PUT", "/api/v1/namespaces/ha/configmaps/cm", {**created.json(), "data": {"v": "3"}})
    assert stale.status == 409, stale

    # In etcd: /registry/<group>/<resource>/<namespace>/<name>, the object as JSON,
    # mod_revision = resourceVersion.
    status, reply = etcd_tls.call(0, "kv/range", {"key": base64.b64encode(b"/registry/core/configmaps/ha/cm").decode()})
    assert status == 200, reply
    (kv,) = reply["kvs"]
    assert json.loads(base64.b64decode(kv["value"]))["data"] == {"v": "2"}
    assert kv["mod_revision"] == updated.json()["metadata"]["resourceVersion"]

    # A restarted server serves what is in etcd.
    a.stop()
    a = server_factory.start(tmp_path / "a", extra_args=etcd_args(etcd_tls))
    again = a.get("/api/v1/namespaces/ha/configmaps/cm")
    assert again.status == 200 and again.json()["data"] == {"v": "2"}, again


@pytest.mark.parametrize("args, message", [
    (("--storage", "etcd"), "--storage etcd needs --etcd-servers"),
    (("--storage", "etcd", "--etcd-servers", "127.0.0.1:2379"), "not an http:// or https:// URL"),
    (("--storage", "etcd", "--etcd-servers", "https://127.0.0.1:2379", "--etcd-certfile", "c.pem"),
     "--etcd-certfile and --etcd-keyfile go together"),
])
def test_bad_etcd_flags_are_refused(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "skiff.cli.main", "server", "--data-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr
