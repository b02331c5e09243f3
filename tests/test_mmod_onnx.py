"""The ONNX + NumPy MMOD detector finds the faces dlib.cnn_face_detection_model_v1 finds (upsample 0).

Images: AT&T fixtures (grey -> RGB), scaled 2x with Pillow's bilinear filter so the faces exceed the
detector's 80x80 window; both detectors see the very same array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

dlib = pytest.importorskip("dlib")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

from siamface._models import dlib_model_path  # noqa: E402
from siamface.detection.mmod_onnx import OnnxMmodDetector, load_dlib_mmod  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "att"


def _images(limit: int = 6) -> list[np.ndarray]:
    paths = sorted(FIXTURES.glob("s*/1.pgm"))[:limit] + sorted(FIXTURES.glob("s*/3.pgm"))[:2]
    if not paths:
        pytest.skip(f"no face fixtures under {FIXTURES}")
    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            out.append(np.ascontiguousarray(np.asarray(im.resize((im.width * 2, im.height * 2), Image.BILINEAR))))
    return out


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_reader_finds_mmod_layers():
    net = load_dlib_mmod(dlib_model_path("mmod"))
    assert [layer.kind for layer in net.layers].count("con") == 7
    assert net.loss.params["windows"] == [(80, 80)]
    assert net.input.params["padding"] == 10 and net.input.params["outer_padding"] == 11


def test_same_faces_as_dlib(tmp_path):
    cnn = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod")))
    det = OnnxMmodDetector(cache_dir=tmp_path)
    found = 0
    for img in _images():
        ref = [
            (d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, d.confidence) for d in cnn(img, 0)
        ]
        boxes, scores = det.detect(img)
        assert len(boxes) == len(ref)
        for (l, t, r, b, conf), box, score in zip(sorted(ref, key=lambda d: -d[4]), boxes, scores):
            assert _iou((l, t, r, b), box) >= 0.9
            assert abs(conf - score) < 1e-3
        found += len(ref)
    assert found > 0, "dlib found no face at all: the comparison proved nothing"
