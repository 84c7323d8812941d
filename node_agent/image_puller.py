"""Images per imagePullPolicy, as kubelet's imagePuller.EnsureImageExists does it.

Reasons and messages are Kubernetes': ErrImageNeverPull, ErrImagePull, ImagePullBackOff,
events Pulling / Pulled / Failed / BackOff. Failed pulls back off per (pod, image),
10 s doubling to 5 min. Registry credentials come from the pod's imagePullSecrets
(``.dockerconfigjson`` or the legacy ``.dockercfg``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from node_agent.events import NORMAL, WARNING, EventRecorder
from node_agent.runtime.docker_adapter import DockerAdapter, DockerError

log = logging.getLogger("skiff.agent.images")

Obj = dict[str, Any]
SecretGetter = Callable[[str, str], Awaitable[Obj | None]]
DOCKER_HUB = "docker.io"


class ImagePullError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _BackOff:
    delay: float
    until: float


def pull_policy(container: Mapping[str, Any]) -> str:
    policy = container.get("imagePullPolicy")
    if policy:
        return str(policy)
    image = str(container.get("image", ""))
    tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
    return "IfNotPresent" if tagged and not image.endswith(":latest") else "Always"


def registry_of(image: str) -> str:
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def _normalize_registry(key: str) -> str:
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io", "docker.io") else host


def auth_from_secret(secret: Mapping[str, Any], registry: str) -> dict[str, str] | None:
    """The credentials a dockerconfigjson/dockercfg Secret holds for ``registry``."""
    data = secret.get("data") or {}
    raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
    if not raw:
        return None
    try:
        config = json.loads(base64.b64decode(raw))
    except (binascii.Error, ValueError):
        return None
    auths = config.get("auths", config) if isinstance(config, dict) else {}
    for key, entry in (auths or {}).items():
        if _normalize_registry(key) != registry or not isinstance(entry, dict):
            continue
        user, password = entry.get("username"), entry.get("password")
        if (not user or password is None) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
        if user:
            return {"username": str(user), "password": str(password or ""), "serveraddress": key}
    return None


class ImagePuller:
    def __init__(self, docker: DockerAdapter, recorder: EventRecorder, get_secret: SecretGetter, *,
                 initial: float = 10.0, maximum: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.docker = docker
        self.recorder = recorder
        self.get_secret = get_secret
        self.initial = initial
        self.maximum = maximum
        self._clock = clock
        self._backoff: dict[tuple[str, str], _BackOff] = {}

    def forget(self, pod_uid: str) -> None:
        for key in [k for k in self._backoff if k[0] == pod_uid]:
            del self._backoff[key]

    async def _auth(self, pod: Obj, image: str) -> dict[str, str] | None:
        ns = pod["metadata"].get("namespace", "default")
        registry = registry_of(image)
        for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
            secret = await self.get_secret(ns, str(ref.get("name", "")))
            auth = auth_from_secret(secret, registry) if secret else None
            if auth:
                return auth
        return None

    async def ensure_image(self, pod: Obj, container: Obj, field_path: str) -> Obj:
        """The image's inspect data, pulling it when the policy says so; raises `ImagePullError`."""
        image = str(container.get("image", ""))
        policy = pull_policy(container)
        present = await self.docker.inspect_image(image)

        def event(type_: str, reason: str, message: str) -> None:
            self.recorder.record(pod, type_, reason, message, field_path)

        if policy == "Never" and present is None:
            msg = f'Container image "{image}" is not present with pull policy of Never'
            event(WARNING, "ErrImageNeverPull", msg)
            raise ImagePullError("ErrImageNeverPull", msg)
        if present is not None and policy != "Always":
            event(NORMAL, "Pulled", f'Container image "{image}" already present on machine')
            return present
        key = (str(pod["metadata"].get("uid", "")), image)
        now = self._clock()
        backoff = self._backoff.get(key)
        if backoff is not None and now < backoff.until:
            msg = f'Back-off pulling image "{image}"'
            event(NORMAL, "BackOff", msg)
            raise ImagePullError("ImagePullBackOff", msg)
        event(NORMAL, "Pulling", f'Pulling image "{image}"')
        started = self._clock()
        try:
            await self.docker.pull(image, await self._auth(pod, image))
            pulled = await self.docker.inspect_image(image)
            if pulled is None:
                raise DockerError(f"image {image} is still missing after the pull")
        except DockerError as exc:
            delay = min(self.maximum, backoff.delay * 2) if backoff else self.initial
            self._backoff[key] = _BackOff(delay, self._clock() + delay)
            event(WARNING, "Failed", f'Failed to pull image "{image}": {exc}')
            log.info("pulling %s for pod %s/%s failed: %s; backing off %.0fs", image,
                     pod["metadata"].get("namespace"), pod["metadata"].get("name"), exc, delay)
            raise ImagePullError("ErrImagePull", str(exc)) from exc
        self._backoff.pop(key, None)
        took = self._clock() - started
        event(NORMAL, "Pulled", f'Successfully pulled image "{image}" in {took:.3f}s ({took:.3f}s including '
                                f"waiting). Image size: {int(pulled.get('Size') or 0)} bytes.")
        return pulled
