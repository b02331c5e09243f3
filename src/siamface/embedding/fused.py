"""Fused encoders: one embedding per face from two or three encoders, so that a gallery, its index, export
and the service use it like any other model.

With unit vectors ``a`` (first encoder) and ``b`` (second), the fused embedding is
``[sqrt(w) a, sqrt(1 - w) b]``: unit length, and the dot product of two fused embeddings is
``w cos_a + (1 - w) cos_b``, the weighted sum of the two cosine similarities (three parts: weights
``w1, w2, w3`` summing to 1, ``[sqrt(w1) a, sqrt(w2) b, sqrt(w3) c]``). The weight (and each part's
flip option) is fitted on training identities only and stored here with the model; a per-model score
normalisation (``(s - mu) / sigma``) would only rescale the weight and shift the threshold, so the weight is
all there is to fit.

Each part crops its own chip (dlib's landmark-aligned 150 px chip, FaceNet's 160 px box crop): the encoder
lists them in ``chip_specs`` and `embed` takes one chip array per part.

A fusion marked ``concurrent`` runs its parts side by side instead of one after the other: the first part
(the longest) in the caller's thread with all the intra-op threads, each other part in a pool thread with its
share of them (two cores: one). While the short part runs, the first part's second intra-op thread shares a
core with it; once it is done, the first part has both cores (ONNX Runtime's parallel loops hand their blocks
out one at a time, and a worker that has not started when the caller's thread has done them all is called
off, so a worker kept waiting by a busy core costs little). The embeddings are the same
(``tests/test_fused.py``). Which fusions gain was measured (``benchmarks/sface_cost.py``): `sface+dlib`, whose
dlib pass (about 3 ms on one thread) hides behind SFace's (about 5.5 on two, 7 on one); not `sface+dlib-flip`
(its two dlib passes on one thread take as long as SFace, and under load the pair waited for the later one),
nor the fusions with FaceNet (FaceNet alone on one thread takes longer than the whole chain on two).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from .base import Encoder, ModelInfo, check_chips, register_model
from .build import create_encoder


@dataclass(frozen=True)
class Fusion:
    """A fused model: its parts (registered names and options) and the weight of the first part (two parts),
    or every part's weight (`weights`, summing to 1)."""

    name: str
    parts: tuple[tuple[str, dict], ...]
    weight: float
    fitted_on: str
    threshold: float
    threshold_source: str
    identify_threshold: float
    identify_threshold_source: str
    weights: tuple[float, ...] = ()

    def part_weights(self) -> tuple[float, ...]:
        if self.weights:
            if len(self.weights) != len(self.parts) or abs(sum(self.weights) - 1.0) > 1e-9:
                raise ValueError(f"{self.name}: one weight per part, summing to 1")
            return self.weights
        if len(self.parts) != 2:
            raise ValueError(f"{self.name}: a fusion of {len(self.parts)} parts needs `weights`")
        return (self.weight, 1.0 - self.weight)

    def weight_label(self) -> str:
        """The weights as the model version spells them (two parts: the first's, as galleries recorded it)."""
        return f"{self.weight:g}" if not self.weights else "/".join(f"{w:g}" for w in self.weights)

    impostor_median: float | None = None  # see ModelInfo.impostor_median
    duplicate: float = 0.995  # see ModelInfo.duplicate
    #: Run the parts side by side, each with its share of the threads (see module doc).
    concurrent: bool = False


_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (the process that made it, the pool)


def _part_pool() -> ThreadPoolExecutor:
    """The threads that run the other parts of a concurrent fusion while the caller's thread runs the first
    (made on first use, and again in a forked child, which inherits the pool but not its threads; a part
    never waits on this pool, so callers sharing it cannot deadlock)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            from .onnx_runtime import default_num_threads

            _pool = (os.getpid(), ThreadPoolExecutor(max(2, default_num_threads()), thread_name_prefix="siamface-part"))
        return _pool[1]


class FusedEncoder:
    """Two encoders' unit embeddings, weighted and concatenated (see module doc)."""

    def __init__(self, fusion: Fusion, num_threads: int | None = None) -> None:
        self.fusion = fusion
        threads = [num_threads] * len(fusion.parts)
        if fusion.concurrent:  # the first part all the threads, the others their share (module doc)
            from .onnx_runtime import default_num_threads

            total = int(num_threads or default_num_threads())
            threads = [total] + [max(1, total // len(fusion.parts))] * (len(fusion.parts) - 1)
        self.parts: list[Encoder] = [
            create_encoder(name, num_threads=n, **opts) for (name, opts), n in zip(fusion.parts, threads)
        ]
        self.chip_specs = tuple(p.info.chip for p in self.parts)
        self._scale = np.sqrt(np.array(fusion.part_weights(), np.float64)).astype(np.float32)
        part_ids = ";".join(f"{p.info.name}@{p.info.version}" for p in self.parts)
        self.info = ModelInfo(
            name=fusion.name,
            version=f"{part_ids};w={fusion.weight_label()}",
            embedding_size=sum(p.info.embedding_size for p in self.parts),
            chip=self.parts[0].info.chip,
            threshold=fusion.threshold,
            threshold_source=fusion.threshold_source,
            identify_threshold=fusion.identify_threshold,
            identify_threshold_source=fusion.identify_threshold_source,
            impostor_median=fusion.impostor_median,
            duplicate=fusion.duplicate,
            extra={
                "parts": [name for name, _ in fusion.parts],
                "part_options": [dict(o) for _, o in fusion.parts],
                "weight": fusion.weight if not fusion.weights else list(fusion.weights),
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
        if self.fusion.concurrent:
            others = [_part_pool().submit(p.embed, a) for p, a in zip(self.parts[1:], arrays[1:])]
            try:
                first = self.parts[0].embed(arrays[0])
            finally:  # the other parts finish (or fail) before this call returns either way
                wait(others)
            embeddings = [first, *(f.result() for f in others)]
        else:
            embeddings = [p.embed(a) for p, a in zip(self.parts, arrays)]
        out = [s * e for s, e in zip(self._scale, embeddings)]
        return np.ascontiguousarray(np.concatenate(out, axis=1), np.float32)


#: dlib's ResNet + FaceNet. Fitted on the 100 fitting identities of celeba_ids (benchmarks/fusion_fit.py:
#: 2,524 genuine / 276,107 impostor pairs, retinaface): w = 0.85 with flip averaging on both parts gave the
#: lowest FRR at FAR 1e-3 + EER over w = 0, 0.05, ..., 1 and the four flip settings (EER 4.9 %,
#: TAR@FAR1e-3 81.9 %; dlib alone 6.2 % / 74.1 %, FaceNet alone 6.1 % / 76.7 %); the same w without flip:
#: 5.0 % / 81.2 %. The weight is high because dlib's cosines spread over a narrower range (on those pairs,
#: impostor percentiles 1/50/99.9: dlib 0.74/0.84/0.93, FaceNet -0.25/0.03/0.47); w rescales the two as a
#: score normalisation would. Flip on both parts doubles the embedding time (about 48 instead of 27 ms per
#: face on two shared cores) and took the live 640x480 loop out of its latency budget, so `dlib+facenet-flip`
#: is an option; `dlib-flip+facenet` below was the default before `sface`. Thresholds: FAR 1e-3 (1:1) and
#: 1e-4 (1:N) on the fitting identities and on AT&T (all pairs); the default is the stricter of the two.
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

#: The default before `sface` (`pipeline.DEFAULT_MODEL`): the same weight with flip averaging on dlib's
#: part only. dlib's embedding is the cheap one (about 3 ms of the 26 a face), and its flip brings part of
#: the gain of flipping both (fitting identities: EER 4.87 %, TAR@FAR1e-3 81.5 %, against 4.91 % / 81.2 %
#: without flip and 4.77 % / 81.9 % with both) while the live loop stays inside its budget. Thresholds as
#: above.
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

#: SFace with dlib's ResNet (flip on dlib's part), with FaceNet, and all three. Weights fitted on the 100
#: fitting identities of celeba_ids only, by the rule above (lowest FRR at FAR 1e-3 + EER over a 0.05 grid;
#: `python benchmarks/sface_fit.py`, retinaface): sface alone EER 5.82 %, TAR@FAR1e-3 86.0 %; with dlib-flip
#: (w = 0.35 on SFace) 5.11 % / 88.0 %; with FaceNet (w = 0.8) 5.43 % / 87.6 %; all three (0.2 / 0.7 / 0.1)
#: 4.71 % / 87.8 % (dlib-flip+facenet: 4.87 % / 81.5 %). SFace's weight is low beside dlib's for the reason
#: given above: dlib's cosines spread over a narrow range. Thresholds: FAR 1e-3 (1:1) and 1e-4 (1:N) on the
#: fitting identities and on AT&T (all pairs), the stricter of the two.
#: Since retinaface refines the keypoints of faces under 112 px (`RetinaFaceDetector.refine_keypoints`), the
#: thresholds are measured again with SFace's chips made so (`sface_fit.py --shipped`); the weights are
#: kept: the rule would now take 0.4 for sface+dlib-flip and sface+dlib, 0.85 for sface+facenet and
#: 0.4 / 0.5 / 0.1 for all three, 0.1-0.3 points lower in FRR at FAR 1e-3 + EER on the fitting identities,
#: but a fusion's version names its weights, so new ones would unbind every gallery enrolled with it.
SFACE_DLIB_FLIP = Fusion(
    name="sface+dlib-flip",
    parts=(("sface", {}), ("dlib-resnet", {"flip": True})),
    weight=0.35,
    fitted_on="celeba_ids, 100 fitting identities (benchmarks/_facecache.fit_split), retinaface",
    threshold=0.731,  # celeba_ids fitting identities 0.7311, AT&T 0.7268 (before the refinement: 0.7300, 0.7313)
    threshold_source=DLIB_FACENET.threshold_source,
    identify_threshold=0.788,  # 0.7883, 0.7564 (before: 0.7865, 0.7578)
    identify_threshold_source=DLIB_FACENET.identify_threshold_source,
    impostor_median=0.57,  # celeba_ids fitting identities 0.577, AT&T 0.580 (benchmarks/impostor_floor.py)
)
#: SFace with dlib's ResNet without flip averaging (one dlib pass instead of two), dlib's chip warped from the
#: detector's five keypoints like SFace's, refined for small faces (`dlib_resnet.DLIB_KEYPOINT_CHIP`; before,
#: from dlib's landmarks: version ``dlib_face_recognition_resnet_model_v1`` for that part, so a gallery enrolled
#: then is told to re-embed). benchmarks/sface_fit.py, w = 0.3 on SFace (the rule's choice, as before): fitting
#: identities EER 4.75 %, TAR@FAR1e-3 89.2 % (dlib's part from its landmarks: 5.07 % / 88.8 %; dlib alone
#: 5.71 % / 75.0 % against 6.09 % / 73.9 %, benchmarks/dlib_keypoints.py); benchmarks/sface_cost.py for its cost.
#: Its parts run side by side (module doc): SFace with both intra-op threads, dlib's pass with one.
SFACE_DLIB = replace(
    SFACE_DLIB_FLIP,
    name="sface+dlib",
    parts=(("sface", {}), ("dlib-resnet", {"keypoints": True})),
    weight=0.3,
    # celeba_ids fitting identities 0.7550, AT&T 0.7514 (dlib's part from its landmarks: 0.7555, 0.7510)
    threshold=0.755,
    identify_threshold=0.806,  # 0.8062, 0.7790 (before: 0.8080, 0.7784)
    impostor_median=0.61,  # celeba_ids fitting identities 0.613, AT&T 0.617 (benchmarks/impostor_floor.py)
    # benchmarks/duplicate_floor.py (AT&T s3-s10, 32 photos): a copy moved 1-3 px or saved as JPEG 80 scores
    # 0.9918 at least (median 0.9967), two different photos of one person 0.9866 at most
    duplicate=0.99,
    concurrent=True,
)
SFACE_FACENET = replace(
    SFACE_DLIB_FLIP,
    name="sface+facenet",
    parts=(("sface", {}), ("facenet", {})),
    weight=0.8,
    threshold=0.387,  # 0.3835, 0.3875 (before the refinement: 0.3803, 0.3925)
    identify_threshold=0.521,  # 0.5213, 0.4433 (before: 0.5073, 0.4472)
    impostor_median=0.08,  # 0.081, 0.087
)
SFACE_DLIB_FLIP_FACENET = replace(
    SFACE_DLIB_FLIP,
    name="sface+dlib-flip+facenet",
    parts=(("sface", {}), ("dlib-resnet", {"flip": True}), ("facenet", {})),
    weight=0.2,
    weights=(0.2, 0.7, 0.1),
    threshold=0.768,  # 0.7594, 0.7677 (before the refinement: 0.7593, 0.7686)
    identify_threshold=0.812,  # 0.8122, 0.7865 (before: 0.8135, 0.7898)
    impostor_median=0.6,  # 0.608, 0.628
)

for _fusion in (SFACE_DLIB_FLIP, SFACE_DLIB, SFACE_FACENET, SFACE_DLIB_FLIP_FACENET):
    register_model(_fusion.name)(partial(FusedEncoder, _fusion))

#: The registered fusions by name.
FUSIONS = {
    f.name: f
    for f in (DLIB_FACENET, DLIB_FLIP_FACENET, DLIB_FACENET_FLIP, SFACE_DLIB_FLIP, SFACE_DLIB, SFACE_FACENET)
    + (SFACE_DLIB_FLIP_FACENET,)
}


def part_sizes(name: str) -> tuple[int, ...] | None:
    """The sizes of the registered fusion `name`'s parts, in the order its template holds them (None: not a
    fusion), known without loading any model (a PostgreSQL gallery indexes the first part:
    `siamface.gallery.postgres.index_part`)."""
    from .dlib_resnet import DLIB_RESNET_INFO
    from .facenet import FACENET_INFO
    from .sface import SFACE_INFO

    sizes = {info.name: info.embedding_size for info in (DLIB_RESNET_INFO, FACENET_INFO, SFACE_INFO)}
    fusion = FUSIONS.get(name)
    if fusion is None:
        return None
    return tuple(sizes[part] for part, _ in fusion.parts)
