"""dlib's ResNet-29 face encoder (128-d), the pretrained baseline shipped by face-recognition-models (CC0).

Two engines, one model: ``dlib-resnet`` runs it with ONNX Runtime (the weights read from dlib's .dat file
and converted once into the user cache, see `dlib_onnx`), ``dlib-resnet-reference`` runs dlib itself. Both
give the same embeddings (max |difference| below 1e-6, tested); the ONNX engine is 6-10x faster. Its embeddings are L2-normalised here so that
every siamface model speaks cosine similarity; the default threshold was measured on the 1,000 + 1,000
labelled pairs of CelebA identities in shared/datasets/celeba_ids (see README, "Thresholds").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .._models import dlib_object
from ..alignment import DLIB_CHIP, ChipSpec
from .base import ModelInfo, check_chips, l2_normalise, register_model

DLIB_RESNET_INFO = ModelInfo(
    name="dlib-resnet",
    version="dlib_face_recognition_resnet_model_v1",
    embedding_size=128,
    # FAR 1e-3 measured with benchmarks/detectors.py (celeba_ids, folder protocol, retinaface: 0.9294) and
    # `siamface evaluate --folder att_faces` (0.9305): the two agree, so the default is that operating point.
    threshold=0.93,
    threshold_source="default: FAR 1e-3 on celeba_ids and AT&T (siamface calibrate sets your own)",
    # FAR 1e-4 on the same 1:1 data: celeba_ids folder protocol (100,000 impostor pairs) 0.9462, AT&T 0.9406.
    identify_threshold=0.945,
    identify_threshold_source="default for 1:N: FAR 1e-4 on celeba_ids and AT&T (siamface calibrate sets your own)",
    extra={
        "licence": "CC0 (face-recognition-models)",
        "training data": "about 3 million faces (FaceScrub, VGG and web images), as dlib publishes",
    },
    # impostor median: celeba_ids fitting identities 0.837, AT&T 0.854 (benchmarks/impostor_floor.py)
    impostor_median=0.83,
)


#: Where the detector's five keypoints (eye centres, nose tip, mouth corners) land, on average, in dlib's own
#: 150 px chip: measured by benchmarks/dlib_keypoints.py on the 100 celeba_ids fitting identities (retinaface's
#: keypoints mapped into the chip dlib's landmarks define; median over the faces). ``keypoints=True`` warps
#: dlib's chip from them (the plain similarity warp SFace's chip uses), so that dlib's part of a fusion is
#: aligned from the same keypoints as SFace's, refined for small faces (`RetinaFaceDetector.refine_keypoints`).
KEYPOINTS_IN_CHIP = (
    (47.2, 45.3),
    (101.1, 44.9),
    (73.5, 78.2),
    (51.3, 100.7),
    (97.4, 100.4),
)

#: dlib's chip warped from the detector's keypoints onto `KEYPOINTS_IN_CHIP`; a face whose detector gives none
#: is warped from dlib's five landmarks onto dlib's own template (the same similarity, without dlib's rounding
#: of the chip's corners).
DLIB_KEYPOINT_CHIP = ChipSpec(
    size=DLIB_CHIP.size,
    padding=0.0,
    template=tuple((x / DLIB_CHIP.size, y / DLIB_CHIP.size) for x, y in KEYPOINTS_IN_CHIP),
    crop="keypoints",
    landmark_template=tuple((float(x), float(y)) for x, y in DLIB_CHIP.target_points() / DLIB_CHIP.size),
)

#: The same network on those chips: its own version (its embeddings differ), dlib-resnet's thresholds (it is
#: shipped as a part of `sface+dlib`, whose own thresholds are fitted; benchmarks/dlib_keypoints.py prints its
#: EER and TAR alone on the fitting identities).
DLIB_RESNET_KEYPOINTS_INFO = replace(
    DLIB_RESNET_INFO, version=f"{DLIB_RESNET_INFO.version}/keypoints5", chip=DLIB_KEYPOINT_CHIP
)


@register_model("dlib-resnet-reference")
class DlibResnetEncoder:
    """dlib's own forward pass (about 80 ms per face on two cores)."""

    def __init__(self) -> None:
        self.info = DLIB_RESNET_INFO

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, self.info.chip.size)
        if len(chips) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        model = dlib_object("resnet")
        raw = model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return l2_normalise(np.array([np.asarray(v) for v in raw], np.float32))


@register_model("dlib-resnet")
class OnnxResnetEncoder:
    """The same network run by ONNX Runtime (about 3 ms per face on one core). ``keypoints=True``: its chips
    are warped from the detector's five keypoints (`DLIB_KEYPOINT_CHIP`) instead of dlib's landmarks."""

    def __init__(self, num_threads: int | None = None, use_cuda: bool = False, keypoints: bool = False) -> None:
        from .onnx_runtime import OnnxDlibResnet

        self.info = DLIB_RESNET_KEYPOINTS_INFO if keypoints else DLIB_RESNET_INFO
        self._engine = OnnxDlibResnet(num_threads=num_threads, use_cuda=use_cuda)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, self.info.chip.size)
        if len(chips) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        return l2_normalise(self._engine.embed(chips))
