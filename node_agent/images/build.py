"""Import Skiff's images into a Docker Engine, idempotently.

Each image is a rootfs tarball plus Dockerfile-style changes, imported with the Engine's
``POST /images/create?fromSrc=-`` (``docker import``). The hash of both is written as a
label, so ``ensure_image`` skips an image whose tag already carries the same content.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from node_agent.images.errors import ImageBuildError
from node_agent.images.pause_binary import ensure_pause_binary
from node_agent.images.rootfs import app_rootfs, pause_rootfs

log = logging.getLogger(__name__)

PAUSE_IMAGE = "skiff/pause:1.0"
APP_IMAGE = "skiff/app:1.0"
CONTENT_LABEL = "io.skiff.image.content"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageSpec:
    """What to import: a tag, a rootfs tarball and the config changes (ENTRYPOINT, CMD, ENV...)."""

    tag: str
    rootfs: bytes
    changes: tuple[str, ...]

    @property
    def content_digest(self) -> str:
        digest = hashlib.sha256(self.rootfs)
        digest.update(json.dumps(self.changes).encode())
        return digest.hexdigest()

    @property
    def repository(self) -> str:
        return self.tag.rsplit(":", 1)[0]

    @property
    def version(self) -> str:
        return self.tag.rsplit(":", 1)[1] if ":" in self.tag.rsplit("/", 1)[-1] else "latest"

    def with_tag(self, tag: str) -> ImageSpec:
        return replace(self, tag=tag)

    def import_changes(self) -> list[str]:
        return [*self.changes, f"LABEL {CONTENT_LABEL}={self.content_digest}"]


@functools.cache
def pause_image_spec() -> ImageSpec:
    return ImageSpec(PAUSE_IMAGE, pause_rootfs(ensure_pause_binary()), ('ENTRYPOINT ["/pause"]',))


@functools.cache
def app_image_spec() -> ImageSpec:
    return ImageSpec(APP_IMAGE, app_rootfs(), (f"ENV PATH={DEFAULT_PATH}", 'CMD ["sh"]'))


def lab_image_specs() -> list[ImageSpec]:
    """Both images; the tarballs are built once per process."""
    return [pause_image_spec(), app_image_spec()]


def low_level(client: Any) -> Any:
    """A ``docker.APIClient`` from either a ``DockerClient`` or an ``APIClient``."""
    return getattr(client, "api", client)


def image_content(api: Any, tag: str) -> str | None:
    """The content label of the image a tag points at, or None if there is no such image."""
    import docker.errors

    try:
        info = api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return None
    labels = (info.get("Config") or {}).get("Labels") or {}
    return labels.get(CONTENT_LABEL) or ""


def ensure_image(client: Any, spec: ImageSpec) -> bool:
    """Import ``spec`` into the Engine behind ``client`` (a ``DockerClient`` or ``APIClient``)
    unless its tag already carries the same content. True if an import happened."""
    import docker.errors

    api = low_level(client)
    current = image_content(api, spec.tag)
    if current == spec.content_digest:
        return False
    old_id = api.inspect_image(spec.tag)["Id"] if current is not None else None
    try:
        reply = api.import_image_from_data(spec.rootfs, repository=spec.repository, tag=spec.version,
                                           changes=spec.import_changes())
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"importing {spec.tag} failed: {exc.explanation or exc}") from exc
    for line in str(reply).splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            raise ImageBuildError(f"importing {spec.tag} failed: {message['error']}")
    if image_content(api, spec.tag) != spec.content_digest:
        raise ImageBuildError(f"importing {spec.tag} did not produce the expected image")
    if old_id is not None:
        # The tag moved to the new image; the old one is now dangling unless something still uses it.
        try:
            api.remove_image(old_id)
        except docker.errors.APIError as exc:
            log.info("kept the previous %s image %s: %s", spec.tag, old_id[:19], exc.explanation or exc)
    return True


def ensure_images(client: Any, specs: list[ImageSpec] | None = None) -> list[tuple[str, bool]]:
    """Ensure every lab image (or ``specs``) in one Engine; returns (tag, imported) pairs."""
    return [(spec.tag, ensure_image(client, spec)) for spec in (specs or lab_image_specs())]
