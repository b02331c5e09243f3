"""The `Encoder` protocol and the model registry.

An encoder turns aligned chips into embeddings: ``embed(chips (n, s, s, 3) uint8 RGB) -> (n, d) float32``,
each row L2-normalised. It carries the contract that travels with its weights (`ModelInfo`): chip geometry,
embedding size, metric, version, and a default threshold measured on data (never guessed).
Register a model with ``@register_model("name")``; build one with `create_encoder` (``build.py``: a name, or
the path of an exported ``.onnx`` file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .._registry import Registry
from ..alignment import DLIB_CHIP, ChipSpec, crop_all


@dataclass(frozen=True)
class ModelInfo:
    """What a caller must know to use an encoder's embeddings correctly."""

    name: str
    version: str
    embedding_size: int
    chip: ChipSpec = DLIB_CHIP
    metric: str = "cosine"
    #: Cosine-similarity threshold: same person when similarity >= threshold.
    threshold: float = 0.5
    #: Where that threshold comes from (data set, target error rate).
    threshold_source: str = ""
    #: 1:N (identification) threshold: a search compares a probe with every template, so it needs a stricter
    #: point than 1:1 to keep the false-positive identification rate down; None: the 1:1 threshold.
    identify_threshold: float | None = None
    identify_threshold_source: str = ""
    #: The median cosine similarity of two strangers' faces on the model's calibration data (the lower of the
    #: data sets measured, benchmarks/impostor_floor.py): a threshold below it lets most strangers in, so
    #: `siamface.decision.check_threshold` refuses one. None: not measured (then any threshold in (0, 1]).
    impostor_median: float | None = None
    #: A new template at least this alike to one the person has is a near-duplicate (the enrolment gate, a
    #: gallery import's merge): the same photo re-encoded or moved a few pixels scores above it. Per model,
    #: since how far a re-encoded photo moves an embedding depends on the model.
    duplicate: float = 0.995
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Encoder(Protocol):
    info: ModelInfo

    def embed(self, chips: np.ndarray) -> np.ndarray: ...


_REGISTRY: Registry[Encoder] = Registry("model")
register_model = _REGISTRY.register
model_names = _REGISTRY.names


def encoder_chips(
    encoder: Encoder, image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, keypoints: np.ndarray | None = None
):
    """The chips `encoder.embed` takes for these faces: one array cropped as ``info.chip`` says, or, for an
    encoder made of parts that each want their own crop (``chip_specs``), a tuple of arrays, one per part.
    `keypoints`: the detector's five keypoints per face (``faces.data["keypoints"]``), for the encoders
    aligned on them (`ChipSpec` ``crop="keypoints"``)."""
    specs = getattr(encoder, "chip_specs", None)
    if specs:
        return tuple(crop_all(image, boxes, landmarks, spec, keypoints) for spec in specs)
    return crop_all(image, boxes, landmarks, encoder.info.chip, keypoints)


def uses_keypoints(encoder: Encoder) -> bool:
    """Whether any of the encoder's chips is warped from the detector's five keypoints (``crop="keypoints"``)."""
    specs = getattr(encoder, "chip_specs", None) or (encoder.info.chip,)
    return any(spec.crop == "keypoints" for spec in specs)


class FlipAveraged:
    """Flip test-time augmentation: embeds each chip and its left-right mirror and returns the normalised sum
    (twice the work). Its embeddings differ from the plain model's, so its version says ``+flip`` and a
    gallery made with one refuses the other."""

    def __init__(self, encoder: Encoder) -> None:
        from dataclasses import replace

        self.encoder = encoder
        self.info = replace(
            encoder.info, version=f"{encoder.info.version}+flip", extra={**encoder.info.extra, "flip": True}
        )

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, self.info.chip.size)
        if len(chips) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        both = self.encoder.embed(np.concatenate([chips, chips[:, :, ::-1]]))
        return l2_normalise(both[: len(chips)] + both[len(chips) :])


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def check_chips(chips: np.ndarray, size: int) -> np.ndarray:
    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    if chips.ndim != 4 or chips.shape[1:] != (size, size, 3) or chips.dtype != np.uint8:
        raise ValueError(f"embed() takes uint8 chips of shape (n, {size}, {size}, 3); got {chips.dtype} {chips.shape}")
    return chips
