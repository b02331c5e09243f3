"""SFace (OpenCV Zoo, Apache-2.0), a MobileFaceNet-type encoder, 128-d, run by ONNX Runtime.

The file shipped in ``embedding/models/`` is OpenCV Zoo's ``face_recognition_sface_2021dec_int8bq.onnx``,
unchanged (``SOURCE.txt`` beside it: origin and checksum; ``LICENSE-sface.txt``; ``NOTICE-sface.txt``: what
siamface changes). ONNX Runtime does not load it as it is (29 graph inputs that nothing backs) and would
de-quantise its int8 weights on every call; `cached_sface_onnx` converts it once into siamface's cache
folder (`siamface._quantised.fold_dequantisation`: the dangling inputs pruned, the block de-quantisation
folded into fp32, each PRelu written as two 1x1 depthwise convolutions that ONNX Runtime runs inside its blocked
convolution layout (`siamface._quantised._prelu_blocked`: 1.4x faster per face than the Relu + slope * Min of
converter 2, which was twice as fast as PRelu), a dynamic batch dimension; keyed by the file's hash and
`CONVERTER_VERSION`, written atomically) and the encoder runs that.

Contract (`SFACE_INFO`): a 112x112 RGB chip warped from the detector's five keypoints (eye centres, nose
tip, mouth corners, in image order) onto the ArcFace template, raw 0..255 (the graph normalises); the
output is L2-normalised here and compared by cosine. A face whose detector gives no keypoints (``haar``,
``hog``, ``cnn``, ``blazeface``) is warped from dlib's five landmarks onto where they land, on average, in
that chip (`LANDMARKS_IN_CHIP`, measured, see its comment).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._files import accepted_digest
from .._onnx import LazySession
from .._quantised import build_folded, cached_folded
from ..alignment import ChipSpec
from .base import ModelInfo, check_chips, l2_normalise, register_model

MODEL_FILE = Path(__file__).parent / "models" / "face_recognition_sface_2021dec_int8bq.onnx"
MODEL_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
#: Bump when the conversion changes: cached files are keyed by it.
CONVERTER_VERSION = 3
INPUT_NAME = "data"
OUTPUT_NAME = "fc1"
CHIP_SIZE = 112

#: The ArcFace 5-point template in the 112x112 chip (pixels): left eye, right eye, nose tip, left and right
#: mouth corners, in image order (OpenCV's FaceRecognizerSF.alignCrop uses the same).
ARCFACE_TEMPLATE = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

#: Where dlib's five landmarks (`siamface.types.LANDMARK_NAMES`) land in that chip, on average: measured by
#: benchmarks/sface_landmarks.py on the 100 celeba_ids fitting identities (retinaface's keypoints define
#: each chip; median over the faces), for faces whose detector gives no keypoints.
LANDMARKS_IN_CHIP = (
    (81.1, 52.8),
    (66.5, 53.9),
    (30.3, 53.0),
    (44.9, 53.8),
    (55.6, 81.2),
)

SFACE_CHIP = ChipSpec(
    size=CHIP_SIZE,
    padding=0.0,
    template=tuple((x / CHIP_SIZE, y / CHIP_SIZE) for x, y in ARCFACE_TEMPLATE),
    crop="keypoints",
    landmark_template=tuple((x / CHIP_SIZE, y / CHIP_SIZE) for x, y in LANDMARKS_IN_CHIP),
)

SFACE_INFO = ModelInfo(
    name="sface",
    version="sface-2021dec-int8bq-fp32/112-arcface5",
    embedding_size=128,
    chip=SFACE_CHIP,
    # FAR 1e-3 on the 100 fitting identities of celeba_ids (retinaface with its keypoint refinement for faces
    # under 112 px, benchmarks/sface_fit.py): 0.3926 (TAR 87.9 %); on AT&T (all pairs): 0.3746. FAR 1e-4: 0.5255
    # and 0.4400. The default is the stricter. (Before the refinement: 0.3891 / 0.3841, 0.4961 / 0.4364.)
    threshold=0.393,
    threshold_source="default: FAR 1e-3 on celeba_ids fitting identities and AT&T, the stricter "
    "(siamface calibrate sets your own)",
    identify_threshold=0.526,
    identify_threshold_source="default for 1:N: FAR 1e-4 on celeba_ids fitting identities and AT&T, the "
    "stricter (siamface calibrate sets your own)",
    # impostor median: celeba_ids fitting identities 0.094, AT&T 0.070 (benchmarks/impostor_floor.py; with the
    # keypoint refinement 0.098, 0.067)
    impostor_median=0.07,
    # the same AT&T photo (s3-s10, 32 photos) moved 1-3 px or saved as JPEG 80: cosine 0.966 at least, median
    # 0.989, 84 % above 0.98; two different photos of one person at most 0.972 (dlib-flip+facenet: copies
    # 0.994 at least, so 0.995 there). With the keypoint refinement (every AT&T face is under 112 px; the same
    # photos rolled by 1-3 px or JPEG 80, one run): copies 0.961 at least, median 0.991, 98 % above 0.98;
    # different photos at most 0.965
    duplicate=0.98,
    extra={
        "normalisation": "none (raw 0..255 RGB; the graph subtracts 127.5 and scales by 1/128)",
        "licence": "Apache-2.0 (OpenCV Zoo, face_recognition_sface_2021dec_int8bq.onnx)",
        "training data": "not named by OpenCV Zoo; the SFace paper trains on CASIA-WebFace, VGGFace2 and "
        "MS1M-derived data (MS-Celeb-1M was withdrawn by its publisher in 2019)",
    },
)


def build_sface_onnx(source: str | Path = MODEL_FILE) -> bytes:
    """The fp32 ONNX model of the shipped int8bq file, serialised (deterministic: same bytes every time)."""
    return build_folded(
        source, "SFace (OpenCV Zoo)", _CONVERSION, {INPUT_NAME: ["N", None, None, None]}, prelu_blocked=True
    )


def cached_sface_onnx(source: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Path of the fp32 conversion of the SFace file (default: the one shipped in the package), made once."""
    return cached_folded(
        source or MODEL_FILE, "sface", CONVERTER_VERSION, lambda: build_sface_onnx(source or MODEL_FILE), cache_dir
    )


_CONVERSION = (
    "dangling graph inputs pruned, block de-quantisation folded into fp32 weights, PRelu written as two 1x1 "
    "depthwise convolutions (y = s*x + Relu(k*x), s = -1 moved into the next convolution where a > 1), dynamic "
    "batch; input float32 "
    "NCHW RGB 0..255 112x112 chips aligned on the ArcFace template, output 128-d (not normalised)"
)


@register_model("sface")
class SFaceEncoder:
    """SFace by ONNX Runtime: chips (n, 112, 112, 3) uint8 RGB go through the network `batch_size` at a
    time; the session is opened on the first call (thread-safe) and shared in the process."""

    def __init__(self, num_threads: int | None = None, batch_size: int = 32) -> None:
        from .onnx_runtime import default_num_threads

        if int(batch_size) < 1:
            raise ValueError("batch_size must be >= 1")
        self.info = SFACE_INFO
        self.num_threads = int(num_threads or default_num_threads())
        self.batch_size = int(batch_size)
        self._lazy = LazySession(cached_sface_onnx, self.num_threads, sha256=accepted_digest)

    @property
    def session(self):
        return self._lazy.session

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, CHIP_SIZE)
        if len(chips) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        x = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), np.float32)
        session = self.session
        parts = [
            session.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + self.batch_size]})[0]
            for i in range(0, len(x), self.batch_size)
        ]
        return l2_normalise(np.concatenate(parts))
