from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from skiff.client import (
    ApiClient,
    ApiConnectionError,
    ConfigError,
    Unauthorized,
    load_config,
    load_incluster_config,
    load_kubeconfig,
)


def make_cert(cn: str, *, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
              is_ca: bool = False, ip: str | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(ca[0].subject if ca else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    cert = builder.sign(ca[1] if ca else key, hashes.SHA256())
    return cert, key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(server: str, cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None,
               namespace: str | None = None, name: str = "skiff") -> dict[str, Any]:
    ctx: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        ctx["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": name, "cluster": {"server": server, **(cluster or {})}}],
            "users": [{"name": name, "user": user or {}}],
            "contexts": [{"name": name, "context": ctx}]}


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_token_ca_data_and_namespace(tmp_path: Path) -> None:
    ca, _ = make_cert("ca", is_ca=True)
    path = write(tmp_path / "config", kubeconfig("https://127.0.0.1:6443/", {"certificate-authority-data": b64(pem(ca))},
                                                 {"token": "abc"}, namespace="team"))
    config = load_kubeconfig(path)
    assert config.server == "https://127.0.0.1:6443"
    assert config.namespace == "team"
    assert config.ca_data == pem(ca)
    assert config.auth_headers() == {"Authorization": "Bearer abc"}
    assert config.context_name == "skiff"
    ctx = config.ssl_context()
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_lookup_order_and_merge(tmp_path: Path) -> None:
    first = kubeconfig("https://first:6443", user={"token": "one"})
    first["current-context"] = ""
    second = kubeconfig("https://second:6443", user={"token": "two"})
    other = kubeconfig("https://other:6443", name="other")
    second["clusters"] += other["clusters"]
    second["users"] += other["users"]
    second["contexts"] += other["contexts"]
    a, b = write(tmp_path / "a", first), write(tmp_path / "b", second)
    env = {"KUBECONFIG": f"{a}{os.pathsep}{tmp_path / 'missing'}{os.pathsep}{b}", "HOME": str(tmp_path)}
    merged = load_kubeconfig(env=env)
    assert merged.server == "https://first:6443"  # first definition of "skiff" wins
    assert merged.token == "one"  # current-context came from the second file
    assert load_kubeconfig(env=env, context="other").server == "https://other:6443"
    (tmp_path / ".kube").mkdir()
    write(tmp_path / ".kube" / "config", kubeconfig("https://home:6443"))
    assert load_kubeconfig(env={"HOME": str(tmp_path)}).server == "https://home:6443"
    assert load_config(env={"HOME": str(tmp_path)}).server == "https://home:6443"


def test_relative_files_and_rotating_token_file(tmp_path: Path) -> None:
    ca, _ = make_cert("ca", is_ca=True)
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(pem(ca))
    (tmp_path / "token").write_text("first\n")
    path = write(tmp_path / "config", kubeconfig("https://h:1", {"certificate-authority": "pki/ca.crt"},
                                                 {"tokenFile": "token"}))
    config = load_kubeconfig(path)
    assert config.ca_data == pem(ca)
    assert config.bearer_token() == "first"
    (tmp_path / "token").write_text("second")
    os.utime(tmp_path / "token", (1, 1))
    assert config.bearer_token() == "second"


def test_insecure_and_client_certificates(tmp_path: Path) -> None:
    ca = make_cert("ca", is_ca=True)
    cert, key = make_cert("admin", ca=ca)
    path = write(tmp_path / "config", kubeconfig("https://h:1", {"insecure-skip-tls-verify": True},
                                                 {"client-certificate-data": b64(pem(cert)),
                                                  "client-key-data": b64(key_pem(key))}))
    config = load_kubeconfig(path)
    assert config.insecure_skip_tls_verify and config.client_cert_data == pem(cert)
    ctx = config.ssl_context()
    assert ctx is not None and ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert config.auth_headers() == {}


@pytest.mark.parametrize("doc,message", [
    ({"clusters": [], "users": [], "contexts": []}, "no current-context"),
    (kubeconfig("https://h:1") | {"current-context": "nope"}, 'context "nope" not found'),
    (kubeconfig("", {}), "has no server"),
    (kubeconfig("https://h:1", {"certificate-authority-data": "!!"}), "not valid base64"),
])
def test_config_errors(tmp_path: Path, doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_kubeconfig(write(tmp_path / "config", doc))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_kubeconfig(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        load_kubeconfig(env={"HOME": str(tmp_path)})


def test_incluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "namespace").write_text("kube-system")
    config = load_incluster_config({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                                   tmp_path)
    assert config.server == "https://10.96.0.1:443"
    assert config.namespace == "kube-system" and config.bearer_token() == "sa-token"


async def fail_if_called(delay: float) -> None:
    raise AssertionError("certificate errors must not be retried")


async def test_https_with_ca_and_bearer_token(tmp_path: Path) -> None:
    """End to end over TLS: the CA from the kubeconfig verifies the server's certificate."""
    ca = make_cert("skiff-ca", is_ca=True)
    cert, key = make_cert("apiserver", ca=ca, ip="127.0.0.1")
    (tmp_path / "tls.crt").write_bytes(pem(cert))
    (tmp_path / "tls.key").write_bytes(key_pem(key))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer good":
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "message": "Unauthorized", "reason": "Unauthorized", "code": 401}, status=401)
        return web.json_response({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "default"}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/default", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=server_ctx)
    try:
        url = f"https://127.0.0.1:{server.port}"
        good = load_kubeconfig(write(tmp_path / "good", kubeconfig(url, {"certificate-authority-data":
                                                                          b64(pem(ca[0]))}, {"token": "good"})))
        async with ApiClient(good) as client:
            ns = await client.get("namespaces", "default")
        assert ns["metadata"]["name"] == "default"
        unverified = load_kubeconfig(write(tmp_path / "unverified", kubeconfig(url, user={"token": "good"})))
        async with ApiClient(unverified, sleep=fail_if_called) as client:
            with pytest.raises(ApiConnectionError, match="certificate verify failed"):
                await client.get("namespaces", "default")
        bad = load_kubeconfig(write(tmp_path / "bad", kubeconfig(url, {"insecure-skip-tls-verify": True},
                                                                 {"token": "bad"})))
        async with ApiClient(bad) as client:
            with pytest.raises(Unauthorized):
                await client.get("namespaces", "default")
    finally:
        await server.close()
