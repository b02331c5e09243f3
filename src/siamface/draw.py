"""Drawing faces on an image (boxes, landmarks, labels), for `siamface detect --out` and video overlays."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .types import Faces

GREEN = (40, 200, 80)
RED = (230, 60, 50)
YELLOW = (250, 210, 40)


def draw_faces(
    image: np.ndarray,
    faces: Faces,
    labels: Sequence[str] | None = None,
    colors: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """A copy of the RGB image with each face's box, landmarks and label drawn on it."""
    out = np.ascontiguousarray(image.copy())
    thick = max(1, round(max(image.shape[:2]) / 400))
    for i in range(len(faces)):
        color = colors[i] if colors is not None else GREEN
        x1, y1, x2, y2 = (int(round(v)) for v in faces.boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        if faces.has_landmarks[i]:
            for x, y in faces.landmarks[i]:
                cv2.circle(out, (int(round(x)), int(round(y))), thick + 1, YELLOW, -1, cv2.LINE_AA)
        text = labels[i] if labels is not None else f"{faces.scores[i]:.2f}"
        if text:
            scale = 0.4 * thick + 0.1
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            ty = y1 - 4 if y1 - th - 6 > 0 else y2 + th + 4
            cv2.rectangle(out, (x1, ty - th - 3), (x1 + tw + 4, ty + base - 1), color, -1)
            cv2.putText(out, text, (x1 + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
