"""The `Detector` protocol, the detector registry, and what every detector shares.

A detector is configured in ``__init__`` and does its work in one method: ``detect(image) -> Faces`` on an
RGB uint8 image, returning faces biggest first, each with a box, a score and dlib's 5 landmarks.
Register a new one with ``@register_detector("name")``; build one by name with `create_detector`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from .._registry import Registry
from ..errors import ConfigError
from ..landmarks import with_landmarks
from ..types import Faces


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> Faces: ...


_REGISTRY: Registry[Detector] = Registry("detector")
register_detector = _REGISTRY.register
detector_names = _REGISTRY.names


def check_detector(name: str, **options) -> None:
    """`ConfigError` for an unknown detector or an option it does not take, without building it."""
    _REGISTRY.check(name, **options)


def create_detector(name: str, **options) -> Detector:
    """Build a detector by name: ``create_detector("hog", upsample=1, min_face_size=40)``."""
    return _REGISTRY.create(name, **options)


class BoxDetector:
    """Shared behaviour: options, upsampling for detectors without their own, landmarks, order, limits.

    Subclasses implement ``_find(image) -> (boxes (n,4) xyxy, scores (n,), extra columns dict)``; extra
    columns whose name starts with ``keypoints`` are points in pixels, scaled back with the boxes.
    """

    name = "base"
    native_upsample = False
    #: (dx, dy, side): how this detector's boxes map to the HOG-style boxes dlib's landmark model expects.
    landmark_box: tuple[float, float, float] | None = None

    def __init__(self, min_face_size: int = 20, upsample: int = 0, max_faces: int | None = None) -> None:
        if min_face_size < 1:
            raise ConfigError(f"min_face_size must be >= 1, got {min_face_size}")
        if not 0 <= upsample <= 3:
            raise ConfigError(f"upsample must be between 0 and 3, got {upsample}")
        if max_faces is not None and max_faces < 1:
            raise ConfigError(f"max_faces must be >= 1 or None, got {max_faces}")
        self.min_face_size = int(min_face_size)
        self.upsample = int(upsample)
        self.max_faces = max_faces

    def _find(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError

    def detect(self, image: np.ndarray) -> Faces:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"detect() takes an RGB uint8 (H, W, 3) image; got {image.dtype} {image.shape}")
        scale = 1.0
        work = image
        if self.upsample and not self.native_upsample:
            scale = float(2**self.upsample)
            work = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        boxes, scores, extra = self._find(work)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) / scale
        extra = {k: np.asarray(v, np.float32) / scale if k.startswith("keypoints") else v for k, v in extra.items()}
        h, w = image.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        faces = Faces(boxes=boxes, scores=scores, detector=self.name, data=extra)
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        faces = faces[side >= self.min_face_size].sorted_by_size()
        if self.max_faces is not None:
            faces = faces[: self.max_faces]
        return with_landmarks(image, faces, self.landmark_box)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(min_face_size={self.min_face_size}, upsample={self.upsample}, "
            f"max_faces={self.max_faces})"
        )


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression on xyxy boxes, best score first."""
    order = np.argsort(-scores)
    keep = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        overlap = inter / (areas[i] + areas[order[1:]] - inter + 1e-9)
        order = order[1:][overlap <= iou]
    return np.asarray(keep, dtype=np.int64)
