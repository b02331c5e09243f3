"""dlib's ResNet-29 face encoder (128-d), the pretrained baseline shipped by face-recognition-models (CC0).

Two engines, one model: ``dlib-resnet`` runs it with ONNX Runtime (the weights read from dlib's .dat file
and converted once into the user cache, see `dlib_onnx`), ``dlib-resnet-reference`` runs dlib itself. Both
give the same embeddings (max |difference| below 1e-6, tested); the ONNX engine is 6-10x faster. Its embeddings are L2-normalised here so that
every siamface model speaks cosine similarity; the default threshold was measured on the 1,000 + 1,000
labelled pairs of CelebA identities in shared/datasets/celeba_ids (see README, "Thresholds").
"""

from __future__ import annotations

import numpy as np

from .._models import dlib_object
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
    """The same network run by ONNX Runtime (about 10-17 ms per face on two cores)."""

    def __init__(self, num_threads: int | None = None, use_cuda: bool = False) -> None:
        from .onnx_runtime import OnnxDlibResnet

        self.info = DLIB_RESNET_INFO
        self._engine = OnnxDlibResnet(num_threads=num_threads, use_cuda=use_cuda)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, self.info.chip.size)
        if len(chips) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        return l2_normalise(self._engine.embed(chips))
