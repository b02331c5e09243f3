"""BlazeFace, MediaPipe's face detector, run with ONNX Runtime.

The two networks (Apache-2.0) ship inside siamface, in ``models/`` beside this file, taken from the
``face-library`` 1.1.3 package (MIT; see ``models/SOURCE.md``); siamface does not depend on that package.
Pre-processing, anchors, decoding and suppression are written here, after MediaPipe's graph for these models:

- the image is letterboxed (aspect kept, black borders) to the square input, RGB scaled to [-1, 1];
- SSD anchors of fixed unit size on two feature maps: the front model (128 px) has 16x16 cells with 2
  anchors each and 8x8 cells with 6 (strides 8 and 16), the back model (256 px) the same grids at strides
  16 and 32; 896 anchors in both, centred at (cell + 0.5) / grid;
- each anchor regresses 16 numbers in input pixels: box centre offset, width, height, then 6 keypoints
  (the subject's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion);
- score = sigmoid(logit); boxes above the threshold are merged by MediaPipe's weighted suppression
  (overlapping boxes, IoU > 0.3, are averaged, weighted by score, into the best one).

`blazeface` is the front-camera model: fast, for faces that fill a good part of the picture (selfie
range: a face narrower than about 1/7 of the picture's long side, 90 px in a 640x480 frame, is missed).
`blazeface-back` is the back-camera model: twice the input, finds faces of 30 px in a 640x480 frame (1/20
of the long side), about three times slower.
The six keypoints are kept in ``faces.data["keypoints6"]``; they are not the five keypoints (with mouth
corners) that active liveness reads, so `retinaface`/`mtcnn` remain the detectors for that.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .._onnx import new_session, providers
from ..errors import ModelError
from .base import BoxDetector, register_detector
from .retinaface import _cpu_count

MODEL_DIR = Path(__file__).parent / "models"
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")


@dataclass(frozen=True)
class Variant:
    """One BlazeFace network: its file, square input size and (stride, anchors per cell) per feature map."""

    file: str
    size: int
    layers: tuple[tuple[int, int], ...]


FRONT = Variant("face_detection_front_128x128.onnx", 128, ((8, 2), (16, 6)))
BACK = Variant("face_detection_back_256x256.onnx", 256, ((16, 2), (32, 6)))

_session_lock = threading.Lock()
_sessions: dict[tuple, object] = {}


def _session(variant: Variant, threads: int):
    key = (variant.file, threads, providers())
    with _session_lock:
        if key not in _sessions:
            path = MODEL_DIR / variant.file
            if not path.is_file():
                raise ModelError(f"BlazeFace model missing from the installed package: {path}")
            _sessions[key] = new_session(path, threads)
        return _sessions[key]


@lru_cache(maxsize=4)
def anchors(variant: Variant) -> np.ndarray:
    """(896, 2) anchor centres in [0, 1] of the input, in the order of the network's outputs."""
    out = []
    for stride, per_cell in variant.layers:
        grid = variant.size // stride
        yy, xx = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        centres = np.stack([(xx.ravel() + 0.5) / grid, (yy.ravel() + 0.5) / grid], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
    result = np.concatenate(out).astype(np.float32)
    result.flags.writeable = False
    return result


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """The image scaled to fit a size x size square, centred on black, as the network's [-1, 1] NHWC
    input; with the scale and the (x, y) padding in input pixels, to map results back."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = resized
    blob = canvas.astype(np.float32) / 127.5 - 1.0
    return blob[None], scale, float(pad_x), float(pad_y)


def decode(
    raw: np.ndarray, logits: np.ndarray, variant: Variant, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (n, 4) xyxy and keypoints (n, 6, 2) in input pixels, with scores (n,), above `threshold`."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    keep = scores > threshold
    raw, scores = raw[keep], scores[keep].astype(np.float32)
    centres = anchors(variant)[keep] * variant.size
    cxy = centres + raw[:, 0:2]
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([cxy - half, cxy + half], axis=1)
    keypoints = centres[:, None, :] + raw[:, 4:16].reshape(-1, 6, 2)
    return boxes.astype(np.float32), scores, keypoints.astype(np.float32)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted suppression: the best remaining box takes every box overlapping it by more
    than `iou` and becomes their score-weighted mean (box and keypoints); its score is kept."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    alive = np.ones(len(boxes), bool)
    out_b, out_s, out_k = [], [], []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        lo = np.maximum(boxes[i, :2], boxes[:, :2])
        hi = np.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = np.prod((hi - lo).clip(0), axis=1)
        overlap = inter / (areas[i] + areas - inter + 1e-9)
        group = alive & (overlap > iou)
        group[i] = True
        weights = scores[group] / scores[group].sum()
        out_b.append(weights @ boxes[group])
        out_k.append(np.tensordot(weights, keypoints[group], axes=1))
        out_s.append(scores[i])
        alive &= ~group
    if not out_b:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 6, 2), np.float32)
    return (np.asarray(out_b, np.float32), np.asarray(out_s, np.float32), np.asarray(out_k, np.float32))


@register_detector("blazeface")
class BlazeFaceDetector(BoxDetector):
    """BlazeFace front-camera model (128 px input): the fastest detector, for faces that fill a good
    part of the picture (webcam, selfie, ID photo); faces narrower than about 1/7 of the long side are
    missed. dlib's 5 landmarks run on its box, mapped to the HOG-style box they were trained on."""

    name = "blazeface"
    variant = FRONT
    landmark_box = (-0.013, -0.022, 0.96)  # benchmarks/landmark_box.py --detector blazeface

    def __init__(
        self,
        min_face_size: int = 20,
        upsample: int = 0,
        max_faces: int | None = None,
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        threads: int | None = None,
    ) -> None:
        super().__init__(min_face_size, upsample, max_faces)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.threads = threads or min(4, _cpu_count())

    def _find(self, image):
        blob, scale, pad_x, pad_y = letterbox(image, self.variant.size)
        outputs = _session(self.variant, self.threads).run(None, {"input:0": blob})
        # outputs: the scores of the fine then the coarse map, then their regressors (16 numbers each)
        logits = np.concatenate([o[0, :, 0] for o in outputs if o.shape[-1] == 1])
        raw = np.concatenate([o[0] for o in outputs if o.shape[-1] == 16])
        boxes, scores, keypoints = decode(raw, logits, self.variant, self.score_threshold)
        boxes, scores, keypoints = weighted_nms(boxes, scores, keypoints, self.nms_iou)
        offset = np.array([pad_x, pad_y], np.float32)
        boxes = ((boxes.reshape(-1, 2, 2) - offset) / scale).reshape(-1, 4)
        keypoints = (keypoints - offset) / scale
        return boxes, scores, {"keypoints6": keypoints}


@register_detector("blazeface-back")
class BlazeFaceBackDetector(BlazeFaceDetector):
    """BlazeFace back-camera model (256 px input): finds smaller faces (30 px in a 640x480 frame, 1/20 of
    the long side) than `blazeface`, at about three times its cost."""

    name = "blazeface-back"
    variant = BACK
    landmark_box = (-0.008, -0.017, 0.98)  # benchmarks/landmark_box.py --detector blazeface-back
