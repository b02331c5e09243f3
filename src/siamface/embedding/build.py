"""`create_encoder`: an encoder from a registered name or from the path of a model exported by ``siamface
train``. It sits above the registry (``base.py``) and the exported-model reader (``onnx_file.py``), which
knows only the base."""

from __future__ import annotations

from ..errors import ConfigError
from .base import _REGISTRY, Encoder, FlipAveraged
from .onnx_file import OnnxFileEncoder, is_model_path


def create_encoder(name: str, flip: bool = False, **options) -> Encoder:
    """Build an encoder by name: ``create_encoder("dlib-resnet")``, or from the path of a model exported by
    ``siamface train`` (``create_encoder("runs/att/model.onnx")``, see `onnx_file`). ``flip=True``: each
    face's embedding is the mean of the face's and its mirror image's (`FlipAveraged`)."""
    if flip:
        encoder = create_encoder(name, **options)
        if getattr(encoder, "chip_specs", None):
            raise ConfigError(f"{name}: flip averaging is set per part of a fused model, not on the whole")
        return FlipAveraged(encoder)
    if name not in _REGISTRY:
        if is_model_path(name):
            return OnnxFileEncoder(name, **options)
        raise _REGISTRY.unknown(name, " or the path of a model exported by siamface train (.onnx)")
    return _REGISTRY.create(name, **options)
