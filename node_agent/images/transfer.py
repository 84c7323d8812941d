"""Copy images from one Docker Engine into others, as ``kind load docker-image`` does:
``docker save`` each image once into a temporary file, then ``docker load`` it into each target."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import Any

from node_agent.images.build import low_level
from node_agent.images.errors import ImageBuildError

SPOOL_LIMIT = 64 * 1024 * 1024  # archives up to this size stay in memory


def save_image(source: Any, image: str) -> tempfile.SpooledTemporaryFile[bytes]:
    """``docker save`` of ``image`` from ``source`` into a rewound temporary file."""
    import docker.errors

    api = low_level(source)
    archive: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT)
    try:
        for chunk in api.get_image(image):
            archive.write(chunk)
    except docker.errors.NotFound:
        archive.close()
        raise ImageBuildError(f"image {image} is not present in the source Docker Engine") from None
    except docker.errors.APIError as exc:
        archive.close()
        raise ImageBuildError(f"saving {image} failed: {exc.explanation or exc}") from exc
    archive.seek(0)
    return archive


def load_archive(target: Any, archive: Any, where: str) -> None:
    """``docker load`` an archive (a rewound file) into ``target``; raise with the Engine's message."""
    import docker.errors

    api = low_level(target)
    archive.seek(0)
    try:
        for message in api.load_image(archive):
            if isinstance(message, dict) and message.get("error"):
                raise ImageBuildError(f"loading into {where} failed: {message['error']}")
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"loading into {where} failed: {exc.explanation or exc}") from exc


def copy_images(source: Any, images: list[str], targets: Mapping[str, Any]) -> None:
    """Copy ``images`` from ``source`` into every Engine of ``targets`` (name → client)."""
    for image in images:
        with save_image(source, image) as archive:
            for name, target in targets.items():
                load_archive(target, archive, f"{name} ({image})")
