"""Fused encoders: one embedding per face from two encoders, so that a gallery, its index, export and the
service use it like any other model.

With unit vectors ``a`` (first encoder) and ``b`` (second), the fused embedding is
``[sqrt(w) a, sqrt(1 - w) b]``: unit length, and the dot product of two fused embeddings is
``w cos_a + (1 - w) cos_b``, the weighted sum of the two cosine similarities. The weight (and each part's
flip option) is fitted on training identities only and stored here with the model; a per-model score
normalisation (``(s - mu) / sigma``) would only rescale the weight and shift the threshold, so the weight is
all there is to fit.

Each part crops its own chip (dlib's landmark-aligned 150 px chip, FaceNet's 160 px box crop): the encoder
lists them in ``chip_specs`` and `embed` takes one chip array per part.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from .base import Encoder, ModelInfo, check_chips, register_model
from .build import create_encoder


@dataclass(frozen=True)
class Fusion:
    """A fused model: its parts (registered names and options) and the weight of the first part."""

    name: str
    parts: tuple[tuple[str, dict], tuple[str, dict]]
    weight: float
    fitted_on: str
    threshold: float
    threshold_source: str
    identify_threshold: float
    identify_threshold_source: str
    impostor_median: float | None = None  # see ModelInfo.impostor_median


class FusedEncoder:
    """Two encoders' unit embeddings, weighted and concatenated (see module doc)."""

    def __init__(self, fusion: Fusion, num_threads: int | None = None) -> None:
        self.fusion = fusion
        self.parts: list[Encoder] = [
            create_encoder(name, num_threads=num_threads, **opts) for name, opts in fusion.parts
        ]
        self.chip_specs = tuple(p.info.chip for p in self.parts)
        self._scale = np.array([np.sqrt(fusion.weight), np.sqrt(1.0 - fusion.weight)], np.float32)
        part_ids = ";".join(f"{p.info.name}@{p.info.version}" for p in self.parts)
        self.info = ModelInfo(
            name=fusion.name,
            version=f"{part_ids};w={fusion.weight:g}",
            embedding_size=sum(p.info.embedding_size for p in self.parts),
            chip=self.parts[0].info.chip,
            threshold=fusion.threshold,
            threshold_source=fusion.threshold_source,
            identify_threshold=fusion.identify_threshold,
            identify_threshold_source=fusion.identify_threshold_source,
            impostor_median=fusion.impostor_median,
            extra={
                "parts": [name for name, _ in fusion.parts],
                "part_options": [dict(o) for _, o in fusion.parts],
                "weight": fusion.weight,
                "fitted_on": fusion.fitted_on,
            },
        )

    def embed(self, chips) -> np.ndarray:
        """``chips``: one uint8 chip array per part, in the order of `chip_specs` -> (n, d1 + d2) float32."""
        if not isinstance(chips, (tuple, list)) or len(chips) != len(self.parts):
            raise ValueError(
                f"{self.info.name}: embed() takes a tuple of {len(self.parts)} chip arrays, one per "
                "part (see chip_specs)"
            )
        arrays = [check_chips(c, spec.size) for c, spec in zip(chips, self.chip_specs)]
        if len({len(a) for a in arrays}) != 1:
            raise ValueError(f"{self.info.name}: the parts' chip arrays hold different numbers of faces")
        if len(arrays[0]) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        out = [s * p.embed(a) for s, p, a in zip(self._scale, self.parts, arrays)]
        return np.ascontiguousarray(np.concatenate(out, axis=1), np.float32)


#: dlib's ResNet + FaceNet. Fitted on the 100 fitting identities of celeba_ids (benchmarks/fusion_fit.py:
#: 2,524 genuine / 276,107 impostor pairs, retinaface): w = 0.85 with flip averaging on both parts gave the
#: lowest FRR at FAR 1e-3 + EER over w = 0, 0.05, ..., 1 and the four flip settings (EER 4.9 %,
#: TAR@FAR1e-3 81.9 %; dlib alone 6.2 % / 74.1 %, FaceNet alone 6.1 % / 76.7 %); the same w without flip:
#: 5.0 % / 81.2 %. The weight is high because dlib's cosines spread over a narrower range (on those pairs,
#: impostor percentiles 1/50/99.9: dlib 0.74/0.84/0.93, FaceNet -0.25/0.03/0.47); w rescales the two as a
#: score normalisation would. Flip on both parts doubles the embedding time (about 48 instead of 27 ms per
#: face on two shared cores) and took the live 640x480 loop out of its latency budget, so `dlib+facenet-flip`
#: is an option; the default is `dlib-flip+facenet` below. Thresholds: FAR 1e-3 (1:1) and 1e-4 (1:N) on
#: the fitting identities and on AT&T (all pairs); the default is the stricter of the two.
DLIB_FACENET = Fusion(
    name="dlib+facenet",
    parts=(("dlib-resnet", {}), ("facenet", {})),
    weight=0.85,
    fitted_on="celeba_ids, 100 fitting identities (benchmarks/_facecache.fit_split), retinaface",
    threshold=0.873,  # celeba_ids fitting identities 0.8508, AT&T 0.8729
    threshold_source="default: FAR 1e-3 on celeba_ids fitting identities and AT&T, the stricter "
    "(siamface calibrate sets your own)",
    identify_threshold=0.888,  # 0.8789, 0.8876
    identify_threshold_source="default for 1:N: FAR 1e-4 on celeba_ids fitting identities and AT&T, the "
    "stricter (siamface calibrate sets your own)",
    # impostor median: celeba_ids fitting identities 0.714, AT&T 0.748 (benchmarks/impostor_floor.py); the
    # flip variants below measure the same to 0.01
    impostor_median=0.71,
)

#: The default: the same weight with flip averaging on dlib's part only. dlib's embedding is the cheap one
#: (about 3 ms of the 26 a face), and its flip brings part of the gain of flipping both (fitting identities:
#: EER 4.87 %, TAR@FAR1e-3 81.5 %, against 4.91 % / 81.2 % without flip and 4.77 % / 81.9 % with both)
#: while the live loop stays inside its budget. Thresholds as above.
DLIB_FLIP_FACENET = replace(
    DLIB_FACENET,
    name="dlib-flip+facenet",
    parts=(("dlib-resnet", {"flip": True}), ("facenet", {})),
    threshold=0.877,  # 0.8543, 0.8765
    identify_threshold=0.891,  # 0.8839, 0.8906
)

DLIB_FACENET_FLIP = replace(
    DLIB_FACENET,
    name="dlib+facenet-flip",
    parts=(("dlib-resnet", {"flip": True}), ("facenet", {"flip": True})),
    threshold=0.876,  # 0.8547, 0.8764
    identify_threshold=0.89,  # 0.8844, 0.8900
)

for _fusion in (DLIB_FACENET, DLIB_FLIP_FACENET, DLIB_FACENET_FLIP):
    register_model(_fusion.name)(partial(FusedEncoder, _fusion))
