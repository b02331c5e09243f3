"""siamface: face verification and identification around a Siamese encoder, offline.

    >>> import siamface
    >>> siamface.verify("alice_1.jpg", "alice_2.jpg").same
    True

Importing siamface loads no model and touches no file; models load on first use.
"""

from __future__ import annotations

from .errors import (
    ConfigError,
    GalleryError,
    ImageError,
    ModelError,
    ModelMismatchError,
    NoFaceError,
    SiamfaceError,
    SourceError,
)
from .image import load_image
from .pipeline import Pipeline, default_pipeline
from .types import Decision, Faces, Verification

__version__ = "0.1.0"


def detect(image) -> Faces:
    """All faces in an image (path, bytes, file object, Pillow image or RGB array), biggest first."""
    return default_pipeline().detect(image)


def embed(image) -> Faces:
    """All faces of an image with their L2-normalised embeddings (``faces.embeddings``)."""
    return default_pipeline().embed(image)


def verify(a, b, threshold: float | None = None) -> Verification:
    """Are the largest faces of two images the same person? See `Pipeline.verify`."""
    return default_pipeline().verify(a, b, threshold)


__all__ = [
    "ConfigError",
    "Decision",
    "Faces",
    "GalleryError",
    "ImageError",
    "ModelError",
    "ModelMismatchError",
    "NoFaceError",
    "Pipeline",
    "SiamfaceError",
    "SourceError",
    "Verification",
    "__version__",
    "default_pipeline",
    "detect",
    "embed",
    "load_image",
    "verify",
]
