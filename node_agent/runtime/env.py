"""A container's environment, resolved the way the kubelet's ``makeEnvironmentVariables`` does.

Order and precedence follow Kubernetes: ``envFrom`` sources first (later sources overwrite
earlier keys, values taken verbatim), then ``env`` entries in order, each ``value`` expanded
with ``$(VAR)`` against everything defined before it. References to a missing ConfigMap,
Secret or key fail the container with ``CreateContainerConfigError`` unless marked optional,
with the kubelet's messages, so ``kubectl describe`` reads the same as on a real cluster.

Also here, because the downward API volume needs them too: the ``$(VAR)`` expansion
(``third_party/forked/golang/expansion``) and the fieldRef / resourceFieldRef readers.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from skiff.api.quantity import QuantityError, cpu_millis, memory_bytes, parse_quantity

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ObjectGetter = Callable[[str, str], Awaitable[Obj | None]]

CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"

_OPERATOR = "$"
_OPENER = "("
_CLOSER = ")"


class ContainerConfigError(Exception):
    """A container that cannot be created as specified; ``reason`` goes to the waiting state."""

    def __init__(self, *, message: str, reason: str = CREATE_CONTAINER_CONFIG_ERROR) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# --- $(VAR) expansion ---------------------------------------------------------------------------

def expand(text: str, mapping: Callable[[str], str]) -> str:
    """Kubernetes' ``expansion.Expand``: ``$(NAME)`` is replaced by ``mapping(NAME)``,
    ``$$`` is an escaped ``$``, and any other ``$`` (or an unclosed ``$(``) stays as written."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == _OPERATOR and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1:]
            first = rest[0]
            if first == _OPERATOR:
                out.append(_OPERATOR)
                advance = 1
            elif first == _OPENER:
                close = rest.find(_CLOSER, 1)
                if close == -1:
                    out.append(_OPERATOR + _OPENER)
                    advance = 1
                else:
                    out.append(mapping(rest[1:close]))
                    advance = close + 1
            else:
                out.append(_OPERATOR + first)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def mapping_for(*contexts: Mapping[str, str]) -> Callable[[str], str]:
    """``expansion.MappingFuncFor``: the first context that has the name wins; an unknown
    name expands to itself, ``$(NAME)``, so the text stays literal."""

    def lookup(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return f"$({name})"

    return lookup


# --- downward API -------------------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"^(metadata\.(?:labels|annotations))\['(.*)'\]$")


def go_quote(s: str) -> str:
    """Go's ``%q`` of a string (``strconv.Quote``), as ``fieldpath.FormatMap`` prints values."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                        "\v": "\\v"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_map(m: Mapping[str, Any]) -> str:
    """``fieldpath.FormatMap``: ``key="value"`` lines in key order (labels, annotations)."""
    return "\n".join(f"{k}={go_quote(str(m[k]))}" for k in sorted(m))


def metadata_field_value(pod: Obj, field_path: str) -> str:
    """``fieldpath.ExtractFieldPathAsString`` for a pod: the metadata fields a downward API
    volume may read. Raises ValueError("unsupported fieldPath: ...") for anything else."""
    meta = pod.get("metadata") or {}
    match = _SUBSCRIPT.match(field_path)
    if match:
        which, key = match.group(1), match.group(2)
        values = meta.get(which.split(".", 1)[1]) or {}
        return str(values.get(key, ""))
    if field_path == "metadata.annotations":
        return format_map(meta.get("annotations") or {})
    if field_path == "metadata.labels":
        return format_map(meta.get("labels") or {})
    if field_path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(field_path.split(".", 1)[1]) or "")
    raise ValueError(f"unsupported fieldPath: {field_path}")


def pod_field_value(pod: Obj, field_path: str, *, pod_ip: str, host_ip: str) -> str:
    """``podFieldSelectorRuntimeValue``: a fieldRef as an environment variable sees it."""
    spec = pod.get("spec") or {}
    if field_path == "spec.nodeName":
        return str(spec.get("nodeName") or "")
    if field_path == "spec.serviceAccountName":
        return str(spec.get("serviceAccountName") or "")
    if field_path in ("status.hostIP", "status.hostIPs"):
        return host_ip
    if field_path in ("status.podIP", "status.podIPs"):
        # Skiff is single-stack: the list of pod IPs is the one address.
        return pod_ip
    return metadata_field_value(pod, field_path)


def _resource_quantity(resources: Obj, section: str, name: str) -> Decimal | None:
    values = resources.get(section) or {}
    raw = values.get(name)
    if raw is None:
        return None
    return parse_quantity(raw)


def container_resource_value(
    selector: Obj, container: Obj, *, node_allocatable: Mapping[str, Any] | None = None
) -> str:
    """``ExtractContainerResourceValue`` on a container whose missing limits the kubelet has
    defaulted to the node's allocatable (``defaultPodLimitsForDownwardAPI``). The value is
    divided by ``divisor`` (default 1) and rounded up."""
    resource = str(selector.get("resource") or "")
    resources = container.get("resources") or {}
    divisor_raw = selector.get("divisor")
    try:
        divisor = parse_quantity(divisor_raw) if divisor_raw not in (None, "", 0, "0") else Decimal(1)
    except QuantityError as exc:
        raise ValueError(f"invalid divisor {divisor_raw!r}: {exc}") from exc
    if divisor == 0:
        divisor = Decimal(1)
    section, _, name = resource.partition(".")
    if section not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ValueError(f"unsupported container resource : {resource}")
    quantity = _resource_quantity(resources, section, name)
    if quantity is None and section == "limits" and node_allocatable and node_allocatable.get(name) is not None:
        quantity = parse_quantity(node_allocatable[name])
    if quantity is None:
        quantity = Decimal(0)
    if name == "cpu":
        return str(math.ceil(cpu_millis(quantity) / cpu_millis(divisor)))
    return str(math.ceil(memory_bytes(quantity) / memory_bytes(divisor)))


# --- ConfigMap and Secret data ------------------------------------------------------------------

def decode_secret_data(secret: Obj) -> dict[str, bytes]:
    """A Secret's ``data``, base64-decoded (invalid entries are skipped: the API rejects them)."""
    out: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=False)
        except (binascii.Error, ValueError, TypeError):
            log.warning("secret %s/%s: key %s is not valid base64; skipped",
                        (secret.get("metadata") or {}).get("namespace"), (secret.get("metadata") or {}).get("name"),
                        key)
    return out


def _text(data: bytes) -> str:
    # Go turns bytes into a string without checking them; keep whatever is not UTF-8 visible.
    return data.decode("utf-8", errors="replace")


def _valid_env_name(name: str) -> bool:
    """Relaxed Kubernetes env var names (1.34): printable ASCII without '='."""
    return bool(name) and all(" " <= c <= "~" and c != "=" for c in name)


class _Lookups:
    """One fetch per ConfigMap/Secret per container, as the kubelet keeps them for one call."""

    def __init__(self, namespace: str, get_configmap: ObjectGetter, get_secret: ObjectGetter) -> None:
        self.namespace = namespace
        self._get_configmap = get_configmap
        self._get_secret = get_secret
        self._configmaps: dict[str, Obj | None] = {}
        self._secrets: dict[str, Obj | None] = {}

    async def configmap(self, name: str) -> Obj | None:
        if name not in self._configmaps:
            self._configmaps[name] = await self._get_configmap(self.namespace, name)
        return self._configmaps[name]

    async def secret(self, name: str) -> Obj | None:
        if name not in self._secrets:
            self._secrets[name] = await self._get_secret(self.namespace, name)
        return self._secrets[name]


async def resolve_env(
    pod: Obj,
    container: Obj,
    *,
    get_configmap: ObjectGetter,
    get_secret: ObjectGetter,
    pod_ip: str,
    host_ip: str,
    node_allocatable: Mapping[str, Any] | None = None,
    service_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment, as the kubelet computes it.

    ``get_configmap``/``get_secret`` return the object or None when it does not exist;
    other failures propagate. ``service_env`` (the ``FOO_SERVICE_HOST`` variables) is
    put first and is overridden by the container's own variables, as in the kubelet.
    Raises ContainerConfigError for a missing non-optional reference.
    """
    meta = pod.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    lookups = _Lookups(namespace, get_configmap, get_secret)
    services = dict(service_env or {})
    env: dict[str, str] = {}

    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        if source.get("configMapRef") is not None:
            ref = source["configMapRef"]
            name = str(ref.get("name") or "")
            cm = await lookups.configmap(name)
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(message=f'configmap "{name}" not found')
            items: dict[str, str] = {k: str(v) for k, v in (cm.get("data") or {}).items()}
            kind = "configMap"
        elif source.get("secretRef") is not None:
            ref = source["secretRef"]
            name = str(ref.get("name") or "")
            secret = await lookups.secret(name)
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(message=f'secret "{name}" not found')
            items = {k: _text(v) for k, v in decode_secret_data(secret).items()}
            kind = "secret"
        else:
            continue
        invalid = []
        for key, value in items.items():
            full = prefix + key
            if not _valid_env_name(full):
                invalid.append(full)
                continue
            env[full] = value
        if invalid:
            log.warning("pod %s/%s container %s: keys [%s] from the EnvFrom %s %s/%s were skipped since they are "
                        "considered invalid environment variable names", namespace, meta.get("name"),
                        container.get("name"), ", ".join(sorted(invalid)), kind, namespace, name)

    mapping = mapping_for(env, services)
    for var in container.get("env") or []:
        name = str(var.get("name") or "")
        value = var.get("value")
        value_from = var.get("valueFrom")
        if value:
            resolved = expand(str(value), mapping)
        elif value_from:
            found = await _value_from(pod, container, value_from, lookups, pod_ip=pod_ip, host_ip=host_ip,
                                      node_allocatable=node_allocatable)
            if found is None:
                continue
            resolved = found
        else:
            resolved = ""
        env[name] = resolved

    return {**{k: v for k, v in services.items() if k not in env}, **env}


async def _value_from(
    pod: Obj, container: Obj, value_from: Obj, lookups: _Lookups, *, pod_ip: str, host_ip: str,
    node_allocatable: Mapping[str, Any] | None,
) -> str | None:
    """One ``valueFrom``; None when an optional reference is absent (the variable is unset)."""
    namespace = lookups.namespace
    if value_from.get("fieldRef") is not None:
        path = str(value_from["fieldRef"].get("fieldPath") or "")
        try:
            return pod_field_value(pod, path, pod_ip=pod_ip, host_ip=host_ip)
        except ValueError as exc:
            raise ContainerConfigError(message=str(exc)) from exc
    if value_from.get("resourceFieldRef") is not None:
        selector = value_from["resourceFieldRef"]
        target = container
        other = selector.get("containerName")
        if other and other != container.get("name"):
            spec = pod.get("spec") or {}
            matches = [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                       if c.get("name") == other]
            if not matches:
                raise ContainerConfigError(message=f"container {other} not found")
            target = matches[0]
        try:
            return container_resource_value(selector, target, node_allocatable=node_allocatable)
        except (ValueError, QuantityError) as exc:
            raise ContainerConfigError(message=str(exc)) from exc
    if value_from.get("configMapKeyRef") is not None:
        ref = value_from["configMapKeyRef"]
        name, key, optional = str(ref.get("name") or ""), str(ref.get("key") or ""), bool(ref.get("optional"))
        cm = await lookups.configmap(name)
        if cm is None:
            if optional:
                return None
            raise ContainerConfigError(message=f'configmap "{name}" not found')
        data = cm.get("data") or {}
        if key not in data:
            if optional:
                return None
            raise ContainerConfigError(message=f"couldn't find key {key} in ConfigMap {namespace}/{name}")
        return str(data[key])
    if value_from.get("secretKeyRef") is not None:
        ref = value_from["secretKeyRef"]
        name, key, optional = str(ref.get("name") or ""), str(ref.get("key") or ""), bool(ref.get("optional"))
        secret = await lookups.secret(name)
        if secret is None:
            if optional:
                return None
            raise ContainerConfigError(message=f'secret "{name}" not found')
        secret_data = decode_secret_data(secret)
        if key not in secret_data:
            if optional:
                return None
            raise ContainerConfigError(message=f"couldn't find key {key} in Secret {namespace}/{name}")
        return _text(secret_data[key])
    return ""
