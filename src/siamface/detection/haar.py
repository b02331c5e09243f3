"""OpenCV's Viola-Jones frontal-face Haar cascade, the original design's detector.

The cascade file ships in the opencv-python-headless 4.x wheel (``cv2.data.haarcascades``). Its boxes are
scored by the cascade's final-stage weight; landmarks come from dlib's 5-point model run on the box.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelError
from .base import BoxDetector, register_detector

CASCADE = "haarcascade_frontalface_default.xml"


@register_detector("haar")
class HaarDetector(BoxDetector):
    name = "haar"
    landmark_box = (0.0, 0.075, 0.88)

    def __init__(
        self,
        min_face_size: int = 20,
        upsample: int = 0,
        max_faces: int | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
    ) -> None:
        super().__init__(min_face_size, upsample, max_faces)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self._cascade = None

    def _load(self):
        if self._cascade is None:
            if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
                raise ModelError(
                    "this OpenCV build has no Haar cascades (OpenCV 5 wheels dropped them); "
                    "pip install 'opencv-python-headless<5'"
                )
            path = Path(cv2.data.haarcascades) / CASCADE
            cascade = cv2.CascadeClassifier(str(path))
            if cascade.empty():
                raise ModelError(f"could not load the Haar cascade {path}")
            self._cascade = cascade
        return self._cascade

    def _find(self, image):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        gray = cv2.equalizeHist(gray)
        minimum = max(self.min_face_size * (2**self.upsample), 20)
        rects, _, weights = self._load().detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(minimum, minimum),
            outputRejectLevels=True,
        )
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        return boxes, np.asarray(weights, np.float32).reshape(-1), {}
