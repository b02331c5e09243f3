"""YuNet: the shipped file, siamface's decoder (a table of cells), and real faces against retinaface."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import att_rgb, faceless, run_cli, scene  # noqa: E402

from siamface.detection import create_detector  # noqa: E402
from siamface.detection.yunet import MODEL_FILE, MODEL_SHA256, STRIDES, decode  # noqa: E402


def test_shipped_file_is_the_published_one():
    assert hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest() == MODEL_SHA256


def _outputs(height: int, width: int) -> dict[str, np.ndarray]:
    out = {}
    for s in STRIDES:
        n = (height // s) * (width // s)
        out |= {
            f"cls_{s}": np.zeros((1, n, 1), np.float32),
            f"obj_{s}": np.zeros((1, n, 1), np.float32),
            f"bbox_{s}": np.zeros((1, n, 4), np.float32),
            f"kps_{s}": np.zeros((1, n, 10), np.float32),
        }
    return out


@pytest.mark.parametrize(
    ("stride", "row", "col", "cls", "obj", "bbox", "box", "score"),
    [
        # cell (2, 3) at stride 16: centre ((3 + 0.5) 16, (2 + 0.25) 16), size exp(0) 16 by exp(ln 2) 16
        (16, 2, 3, 0.81, 1.0, (0.5, 0.25, 0.0, np.log(2.0)), (48.0, 20.0, 64.0, 52.0), 0.9),
        # stride 8, cell (0, 0): box about the origin; scores clipped to [0, 1] before the mean
        (8, 0, 0, 1.5, 0.64, (0.0, 0.0, np.log(2.0), np.log(2.0)), (-8.0, -8.0, 8.0, 8.0), 0.8),
    ],
)
def test_decode_one_cell(stride, row, col, cls, obj, bbox, box, score):
    h, w = 64, 96
    out = _outputs(h, w)
    k = row * (w // stride) + col
    out[f"cls_{stride}"][0, k, 0], out[f"obj_{stride}"][0, k, 0] = cls, obj
    out[f"bbox_{stride}"][0, k] = bbox
    out[f"kps_{stride}"][0, k] = np.arange(10) / 10
    boxes, scores, points = decode(out, h, w, 0.5)
    assert len(boxes) == 1
    np.testing.assert_allclose(boxes[0], box, atol=1e-4)
    assert scores[0] == pytest.approx(score, abs=1e-6)
    expected = [((col + 2 * i / 10) * stride, (row + (2 * i + 1) / 10) * stride) for i in range(5)]
    np.testing.assert_allclose(points[0], expected, atol=1e-4)


def test_decode_nothing_above_the_threshold():
    boxes, scores, points = decode(_outputs(64, 64), 64, 64, 0.5)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and points.shape == (0, 5, 2)


def test_finds_every_face_with_retinaface_keypoints(group_scene):
    yunet, retina = create_detector("yunet"), create_detector("retinaface")
    found, ref = yunet.detect(group_scene), retina.detect(group_scene)
    assert len(found) == 3
    for k in range(3):
        kps, ref_kps = found.data["keypoints"][k], ref.data["keypoints"][k]
        width = ref.boxes[k, 2] - ref.boxes[k, 0]
        # the project's order: eye on the image's left, other eye, nose tip, left and right mouth corners
        assert np.abs(kps - ref_kps).max() < 0.15 * width
        assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0] and kps[1, 1] < kps[2, 1] < kps[3, 1]
        assert found.has_landmarks[k]  # dlib's landmarks too, as for every detector


def test_no_face_in_a_faceless_picture():
    assert len(create_detector("yunet").detect(faceless())) == 0


def test_detect_command_with_yunet(tmp_path):
    path = tmp_path / "two.png"
    Image.fromarray(scene([(att_rgb(4, 1), 2.0, (60, 100)), (att_rgb(8, 2), 1.6, (380, 120))])).save(path)
    out = run_cli("detect", path, "--detector", "yunet", "--json")
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["detector"] == "yunet" and len(payload["faces"]) == 2
