"""The one error type of the images package: a message a user can act on."""

from __future__ import annotations


class ImageBuildError(RuntimeError):
    """Building, importing or copying an image failed; the message says why and what to do."""
