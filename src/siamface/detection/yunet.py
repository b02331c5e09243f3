"""YuNet (OpenCV Zoo, 2023mar, MIT), a small anchor-free face detector with five keypoints, by ONNX Runtime.

The file shipped in ``detection/models/`` is OpenCV Zoo's ``face_detection_yunet_2023mar_int8bq.onnx``,
unchanged (``SOURCE.txt``; ``LICENSE-yunet.txt``). ONNX Runtime rejects its per-tensor scales that carry a
block size and its input is declared 640x640; `cached_yunet_onnx` converts it once into siamface's cache
(`siamface._quantised.fold_dequantisation`: the de-quantisation folded into fp32, the image height and width
made symbolic), so a frame runs at its own size, padded to a multiple of 32.

Decoding (siamface's own, the scheme cv2.FaceDetectorYN uses): for each stride s in 8, 16, 32 the network
gives, per cell (row r, column c) of the padded image's grid, a class and an objectness score (the face's
score is their geometric mean), a box ``((c + dx) s, (r + dy) s)`` centre with ``exp(dw) s`` by
``exp(dh) s`` size, and five keypoints ``((c + kx) s, (r + ky) s)``: the subject's right eye, left eye, nose
tip, right and left mouth corners, i.e. in image order the eye on the left first, as retinaface's. They are
kept in ``faces.data["keypoints"]``; dlib's landmarks are added as for every detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._files import accepted_digest
from .._onnx import LazySession
from .._quantised import build_folded, cached_folded
from ..errors import ModelError
from .base import nms, register_detector
from .retinaface import RetinaFaceDetector, downscaled

MODEL_FILE = Path(__file__).parent / "models" / "face_detection_yunet_2023mar_int8bq.onnx"
MODEL_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
#: Bump when the conversion changes: cached files are keyed by it.
CONVERTER_VERSION = 2
STRIDES = (8, 16, 32)


def build_yunet_onnx(source: str | Path = MODEL_FILE) -> bytes:
    """The fp32 ONNX model of the shipped int8bq file with a symbolic image size, serialised."""
    note = "block de-quantisation folded into fp32 weights, image size symbolic"
    return build_folded(source, "YuNet 2023mar (OpenCV Zoo)", note, {"input": [None, None, "H", "W"]}, output_dims=(1,))


def cached_yunet_onnx(source: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    return cached_folded(
        source or MODEL_FILE, "yunet", CONVERTER_VERSION, lambda: build_yunet_onnx(source or MODEL_FILE), cache_dir
    )


def decode(outputs: dict[str, np.ndarray], height: int, width: int, threshold: float):
    """Boxes (n, 4) xyxy, scores (n,) and keypoints (n, 5, 2), in the padded input's pixels, of every cell
    scoring above `threshold` (see module doc)."""
    boxes, scores, points = [], [], []
    for s in STRIDES:
        rows, cols = height // s, width // s
        cls = np.clip(outputs[f"cls_{s}"].reshape(-1), 0, 1)
        obj = np.clip(outputs[f"obj_{s}"].reshape(-1), 0, 1)
        score = np.sqrt(cls * obj)
        keep = np.flatnonzero(score > threshold)
        if not keep.size:
            continue
        if cls.size != rows * cols:
            raise ModelError(f"YuNet: {cls.size} cells at stride {s} for a {width}x{height} input")
        r, c = (keep // cols).astype(np.float32), (keep % cols).astype(np.float32)
        bbox = outputs[f"bbox_{s}"].reshape(-1, 4)[keep]
        kps = outputs[f"kps_{s}"].reshape(-1, 5, 2)[keep]
        cx, cy = (c + bbox[:, 0]) * s, (r + bbox[:, 1]) * s
        w, h = np.exp(bbox[:, 2]) * s, np.exp(bbox[:, 3]) * s
        boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
        scores.append(score[keep])
        points.append(np.stack([(kps[:, :, 0] + c[:, None]) * s, (kps[:, :, 1] + r[:, None]) * s], axis=2))
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
    return (
        np.concatenate(boxes).astype(np.float32),
        np.concatenate(scores).astype(np.float32),
        np.concatenate(points).astype(np.float32),
    )


@register_detector("yunet")
class YuNetDetector(RetinaFaceDetector):
    """YuNet: a 0.1 MB network, with retinaface's options; images larger than ``max_side`` are scaled down
    first. A face counts when it scores above ``score_threshold`` (OpenCV's default, 0.9); when none does,
    the candidates above ``fallback_threshold`` count instead (``None``: no fallback), as for retinaface."""

    name = "yunet"
    landmark_box = (-0.011, 0.059, 0.93)  # benchmarks/landmark_box.py --detector yunet: 299 pairs of 320 photos

    def __init__(self, *args, score_threshold: float = 0.9, nms_iou: float = 0.3, **options) -> None:
        super().__init__(*args, score_threshold=score_threshold, nms_iou=nms_iou, **options)
        self._lazy = LazySession(cached_yunet_onnx, self.threads, sha256=accepted_digest)

    def _find(self, image):
        work, scale = downscaled(image, self.max_side)
        h, w = work.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = work[:, :, ::-1].transpose(2, 0, 1)  # BGR, raw 0..255
        session = self._lazy.session
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(names, {"input": blob})))
        low = min(self.score_threshold, self.fallback_threshold or self.score_threshold)
        boxes, scores, points = decode(outputs, ph, pw, low)
        keep = scores > self.score_threshold
        if not keep.any() and self.fallback_threshold is not None:
            keep = scores > self.fallback_threshold
        boxes, scores, points = boxes[keep], scores[keep], points[keep]
        if not len(boxes):
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), {"keypoints": np.zeros((0, 5, 2))}
        idx = nms(boxes, scores, self.nms_iou)
        return boxes[idx] / scale, scores[idx], {"keypoints": points[idx] / scale}
