"""Face encoders behind one protocol, built by name. Nothing loads until the first ``embed`` call."""

from . import dlib_resnet, facenet, fused, sface  # noqa: F401  (registration)
from .base import Encoder, ModelInfo, encoder_chips, l2_normalise, model_names, register_model, uses_keypoints
from .build import create_encoder

__all__ = [
    "Encoder",
    "ModelInfo",
    "create_encoder",
    "encoder_chips",
    "l2_normalise",
    "model_names",
    "register_model",
    "uses_keypoints",
]
