"""dlib's detectors: HOG + linear SVM (``hog``) and the MMOD CNN (``cnn``, accurate but slow on CPU)."""

from __future__ import annotations

import numpy as np

from .._models import dlib_object
from .base import BoxDetector, register_detector


def _rect_xyxy(rect) -> list[float]:
    return [rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1]


@register_detector("hog")
class HogDetector(BoxDetector):
    """dlib's frontal HOG detector. ``upsample=1`` finds faces down to about 40 px."""

    name = "hog"
    native_upsample = True

    def __init__(
        self, min_face_size: int = 20, upsample: int = 1, max_faces: int | None = None, threshold: float = 0.0
    ) -> None:
        super().__init__(min_face_size, upsample, max_faces)
        self.threshold = float(threshold)

    def _find(self, image):
        rects, scores, _ = dlib_object("hog").run(image, self.upsample, self.threshold)
        boxes = np.array([_rect_xyxy(r) for r in rects], np.float32).reshape(-1, 4)
        return boxes, np.asarray(scores, np.float32), {}


@register_detector("cnn-dlib")
class CnnDetector(BoxDetector):
    """dlib's MMOD CNN detector run by dlib itself: the reference, about 2 s per 640x480 frame on a CPU."""

    name = "cnn-dlib"
    native_upsample = True

    def __init__(self, min_face_size: int = 20, upsample: int = 0, max_faces: int | None = None) -> None:
        super().__init__(min_face_size, upsample, max_faces)

    def _find(self, image):
        dets = dlib_object("mmod")(image, self.upsample)
        boxes = np.array([_rect_xyxy(d.rect) for d in dets], np.float32).reshape(-1, 4)
        scores = np.array([d.confidence for d in dets], np.float32)
        return boxes, scores, {}


@register_detector("cnn")
class OnnxCnnDetector(BoxDetector):
    """dlib's MMOD CNN detector with its network run by ONNX Runtime: the same boxes as dlib's, about 9x
    faster. Finds faces down to about 80 px; ``upsample=1`` (image doubled first) reaches about 40 px."""

    name = "cnn"

    def __init__(self, min_face_size: int = 20, upsample: int = 0, max_faces: int | None = None) -> None:
        super().__init__(min_face_size, upsample, max_faces)
        from .mmod_onnx import OnnxMmodDetector

        self._engine = OnnxMmodDetector()

    def _find(self, image):
        boxes, scores = self._engine.detect(image)
        return boxes, scores, {}
