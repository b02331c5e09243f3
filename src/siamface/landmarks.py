"""Landmarks: dlib's 5-point shape predictor, run on a face box.

Every detector's faces get their landmarks here (RetinaFace and MTCNN keep their own five keypoints in
``faces.data["keypoints"]`` as extra evidence), so the alignment the encoder sees is the one it was trained
on, whichever detector found the face. See `siamface.types.LANDMARK_NAMES` for the order.
"""

from __future__ import annotations

import numpy as np

from ._models import dlib_object
from .types import Faces


def predict_landmarks(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(n, 5, 2) float32 landmarks for n boxes (x1, y1, x2, y2) in an RGB uint8 image."""
    import dlib

    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.zeros((len(boxes), 5, 2), np.float32)
    if len(boxes) == 0:
        return out
    predictor = dlib_object("landmarks5")
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1)
        shape = predictor(image, rect)
        out[i] = [(shape.part(k).x, shape.part(k).y) for k in range(5)]
    return out


def hog_like_boxes(boxes: np.ndarray, adjust: tuple[float, float, float] | None) -> np.ndarray:
    """Boxes in the style of dlib's HOG detector, the boxes dlib's shape predictor was trained on.

    `adjust` = (dx, dy, side): the square HOG-style box is centred at (cx + dx * w, cy + dy * h) with side
    ``side * sqrt(w * h)``. Each detector's constants were fitted once, as medians over the faces found by
    both it and HOG in 320 CelebA photos (benchmarks/detectors.py reports the accuracy this buys).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if adjust is None or len(boxes) == 0:
        return boxes
    dx, dy, side = adjust
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 + dx * w, (boxes[:, 1] + boxes[:, 3]) / 2 + dy * h
    half = side * np.sqrt(w * h) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def with_landmarks(image: np.ndarray, faces: Faces, adjust: tuple[float, float, float] | None = None) -> Faces:
    """Fill the landmarks of faces that have none yet (predicted on HOG-style boxes, see `hog_like_boxes`)."""
    missing = ~faces.has_landmarks
    if missing.any():
        faces.landmarks[missing] = predict_landmarks(image, hog_like_boxes(faces.boxes[missing], adjust))
    return faces
