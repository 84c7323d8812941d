"""Load a kubeconfig (or in-cluster service-account files) into one typed `ClientConfig`.

Lookup order follows kubectl: an explicit path, else every file in ``$KUBECONFIG``
(merged, first definition of a name wins), else ``~/.kube/config``. File references
(``certificate-authority``, ``client-certificate``, ``client-key``) are read once at load
time, relative to the kubeconfig's directory; ``tokenFile`` is re-read when it changes,
because projected service-account tokens rotate.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_NAMESPACE = "default"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(Exception):
    """The kubeconfig is missing, unreadable or does not name a usable cluster/user."""


@dataclass
class ClientConfig:
    server: str
    namespace: str = DEFAULT_NAMESPACE
    ca_data: bytes | None = None  # PEM
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    token: str | None = None
    token_file: str | None = None
    client_cert_data: bytes | None = None  # PEM
    client_key_data: bytes | None = None  # PEM
    username: str | None = None
    password: str | None = None
    context_name: str | None = None
    source: str | None = None  # where this config came from, for error messages
    _token_cache: tuple[float, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_https(self) -> bool:
        return self.server.lower().startswith("https://")

    def bearer_token(self) -> str | None:
        """The token to send: ``token`` if set, else the current content of ``token_file``."""
        if self.token:
            return self.token
        if not self.token_file:
            return None
        try:
            mtime = os.stat(self.token_file).st_mtime
        except OSError as exc:
            raise ConfigError(f"cannot read tokenFile {self.token_file}: {exc}") from exc
        if self._token_cache is None or self._token_cache[0] != mtime:
            self._token_cache = (mtime, Path(self.token_file).read_text().strip())
        return self._token_cache[1]

    def auth_headers(self) -> dict[str, str]:
        token = self.bearer_token()
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.username is not None and self.password is not None:
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for this cluster, or None for plain http."""
        if not self.is_https:
            return None
        if self.ca_data:
            ctx = ssl.create_default_context(cadata=self.ca_data.decode())
        else:
            ctx = ssl.create_default_context()
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_cert_data and self.client_key_data:
            _load_cert_chain(ctx, self.client_cert_data, self.client_key_data)
        return ctx


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl only loads client certificates from files; keep them on disk for as short as possible.
    with tempfile.TemporaryDirectory(prefix="skiff-tls-") as tmp:
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(str(cert_path), str(key_path))


def kubeconfig_paths(explicit: str | os.PathLike[str] | None = None,
                     env: Mapping[str, str] | None = None) -> list[Path]:
    """The files to read, in precedence order."""
    env = os.environ if env is None else env
    if explicit:
        return [Path(explicit).expanduser()]
    if env.get("KUBECONFIG"):
        return [Path(p).expanduser() for p in env["KUBECONFIG"].split(os.pathsep) if p]
    home = env.get("HOME") or str(Path.home())
    return [Path(home, ".kube", "config")]


def load_kubeconfig(path: str | os.PathLike[str] | None = None, *, context: str | None = None,
                    env: Mapping[str, str] | None = None) -> ClientConfig:
    """Load the kubeconfig kubectl would use and resolve its current (or the given) context."""
    paths = kubeconfig_paths(path, env)
    explicit = path is not None
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": [], "current-context": ""}
    bases: dict[tuple[str, str], Path] = {}
    found = False
    for p in paths:
        if not p.exists():
            if explicit:
                raise ConfigError(f"kubeconfig {p} does not exist")
            continue
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot load kubeconfig {p}: {exc}") from exc
        if not isinstance(doc, dict):
            raise ConfigError(f"kubeconfig {p} is not a mapping")
        found = True
        _merge_into(merged, doc, p.parent, bases)
    if not found:
        raise ConfigError("no kubeconfig found (tried " + ", ".join(str(p) for p in paths) + ")")
    return config_from_dict(merged, context=context, base_dir=None, bases=bases,
                            source=os.pathsep.join(str(p) for p in paths))


def _merge_into(merged: dict[str, Any], doc: dict[str, Any], base: Path,
                bases: dict[tuple[str, str], Path]) -> None:
    for section in ("clusters", "users", "contexts"):
        taken = {entry.get("name") for entry in merged[section]}
        for entry in doc.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") not in taken:
                merged[section].append(entry)
                bases[(section, str(entry.get("name")))] = base
    if not merged["current-context"] and doc.get("current-context"):
        merged["current-context"] = doc["current-context"]


def config_from_dict(doc: dict[str, Any], *, context: str | None = None, base_dir: Path | None = None,
                     bases: dict[tuple[str, str], Path] | None = None, source: str | None = None) -> ClientConfig:
    """Resolve one context of a parsed kubeconfig. Relative file paths are taken from
    ``bases`` (per entry, when merged from several files) or ``base_dir``."""
    bases = bases or {}
    ctx_name = context or doc.get("current-context") or ""
    if not ctx_name:
        raise ConfigError("kubeconfig has no current-context; pass a context")
    ctx = _named(doc, "contexts", ctx_name, "context")
    cluster_name = str(ctx.get("cluster") or "")
    user_name = str(ctx.get("user") or "")
    cluster = _named(doc, "clusters", cluster_name, "cluster")
    user = _named(doc, "users", user_name, "user") if user_name else {}

    def base(section: str, name: str) -> Path:
        return bases.get((section, name)) or base_dir or Path.cwd()

    server = cluster.get("server")
    if not server:
        raise ConfigError(f'cluster "{cluster_name}" has no server')
    cbase, ubase = base("clusters", cluster_name), base("users", user_name)
    token_file = user.get("tokenFile")
    return ClientConfig(
        server=str(server).rstrip("/"),
        namespace=str(ctx.get("namespace") or DEFAULT_NAMESPACE),
        ca_data=_data_or_file(cluster, "certificate-authority-data", "certificate-authority", cbase),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name"),
        token=user.get("token"),
        token_file=str(_resolve(token_file, ubase)) if token_file else None,
        client_cert_data=_data_or_file(user, "client-certificate-data", "client-certificate", ubase),
        client_key_data=_data_or_file(user, "client-key-data", "client-key", ubase),
        username=user.get("username"),
        password=user.get("password"),
        context_name=ctx_name,
        source=source,
    )


def _named(doc: dict[str, Any], section: str, name: str, inner: str) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(inner) or {}
            if not isinstance(value, dict):
                raise ConfigError(f'{inner} "{name}" is not a mapping')
            return value
    raise ConfigError(f'{inner} "{name}" not found in kubeconfig')


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def _data_or_file(section: dict[str, Any], data_key: str, file_key: str, base: Path) -> bytes | None:
    if section.get(data_key):
        try:
            return base64.b64decode(section[data_key], validate=True)
        except ValueError as exc:
            raise ConfigError(f"{data_key} is not valid base64: {exc}") from exc
    if section.get(file_key):
        path = _resolve(str(section[file_key]), base)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {file_key} {path}: {exc}") from exc
    return None


def load_incluster_config(env: Mapping[str, str] | None = None,
                          sa_dir: Path = SERVICE_ACCOUNT_DIR) -> ClientConfig:
    """The config of a process running in a pod: service host/port from the environment,
    token, CA and namespace from the mounted service-account files."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError("not running in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    if ":" in host:
        host = f"[{host}]"
    ns_file = sa_dir / "namespace"
    ca_file = sa_dir / "ca.crt"
    return ClientConfig(
        server=f"https://{host}:{port}",
        namespace=ns_file.read_text().strip() if ns_file.exists() else DEFAULT_NAMESPACE,
        ca_data=ca_file.read_bytes() if ca_file.exists() else None,
        token_file=str(sa_dir / "token"),
        source=str(sa_dir),
    )


def load_config(path: str | os.PathLike[str] | None = None, *, context: str | None = None,
                env: Mapping[str, str] | None = None) -> ClientConfig:
    """A kubeconfig if one is given or present, else the in-cluster service account."""
    env = os.environ if env is None else env
    if path is None and not env.get("KUBECONFIG") and "KUBERNETES_SERVICE_HOST" in env:
        default = kubeconfig_paths(None, env)[0]
        if not default.exists():
            return load_incluster_config(env)
    return load_kubeconfig(path, context=context, env=env)
