"""The ONNX conversion of dlib's face ResNet gives dlib's own descriptors on real aligned faces.

Faces: the AT&T fixtures under tests/fixtures/att (grey, stacked to RGB), found with dlib's HOG detector
(upsample 1), aligned with the 5-point predictor and dlib.get_face_chip(size=150, padding=0.25); the
reference is dlib.face_recognition_model_v1.compute_face_descriptor on the same chips.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

dlib = pytest.importorskip("dlib")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from siamface._models import dlib_model_path  # noqa: E402
from siamface.embedding.dlib_dat import DlibFormatError, load_dlib_resnet, read_dlib_net, resnet_spec  # noqa: E402
from siamface.embedding.dlib_onnx import CONVERTER_VERSION, cached_resnet_onnx, file_sha256  # noqa: E402
from siamface.embedding.onnx_runtime import OnnxDlibResnet  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "att"


def _read_pgm(path: Path) -> np.ndarray:
    """An 8-bit binary PGM (P5) as a (H, W) uint8 array."""
    data = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    magic, w, h, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    assert magic == b"P5" and maxval < 256, f"{path}: not an 8-bit binary PGM"
    pos += 1  # the single whitespace byte after maxval
    return np.frombuffer(data, np.uint8, w * h, pos).reshape(h, w)


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    paths = sorted(FIXTURES.glob("**/*.pgm"))
    if not paths:
        pytest.skip(f"no face fixtures under {FIXTURES} (expected tests/fixtures/att/sN/M.pgm)")
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(dlib_model_path("landmarks5")))
    out = []
    for p in paths:
        gray = _read_pgm(p)
        img = np.ascontiguousarray(np.dstack([gray, gray, gray]))
        rects = det(img, 1)
        if rects:
            out.append(dlib.get_face_chip(img, sp(img, rects[0]), size=150, padding=0.25))
    if not out:
        pytest.skip(f"dlib's HOG detector found no face in the {len(paths)} fixtures under {FIXTURES}")
    return np.stack(out).astype(np.uint8)


@pytest.fixture(scope="module")
def reference(chips) -> np.ndarray:
    rec = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))
    descs = rec.compute_face_descriptor([c for c in chips])
    return np.array([np.array(d) for d in descs], np.float32)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("siamface-cache")
    t = time.perf_counter()
    path = cached_resnet_onnx(dlib_model_path("resnet"), cache)
    elapsed = time.perf_counter() - t
    print(f"\nconversion of dlib's ResNet to ONNX: {elapsed:.2f} s, {path.stat().st_size / 2**20:.1f} MiB")
    return path


@pytest.fixture(scope="module")
def encoder(onnx_path) -> OnnxDlibResnet:
    return OnnxDlibResnet(onnx_path)


def test_reader_finds_dlib_resnet_layers():
    net = load_dlib_resnet(dlib_model_path("resnet"))
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert net.layers[-1].kind == "fc" and net.layers[-1].weights["weight"].shape == (256, 128)
    means = (net.input.params["avg_red"], net.input.params["avg_green"], net.input.params["avg_blue"])
    assert np.allclose(means, (122.782, 117.001, 104.298), atol=1e-4)
    assert net.input.params["nr"] == net.input.params["nc"] == 150
    assert net.loss.kind == "loss_metric" and abs(net.loss.params["distance_threshold"] - 0.6) < 1e-6
    for layer in net.layers:
        for w in layer.weights.values():
            assert w.dtype == np.float32 and np.isfinite(w).all()


def test_reader_rejects_truncated_and_foreign_data():
    data = Path(dlib_model_path("resnet")).read_bytes()
    with pytest.raises(DlibFormatError):
        read_dlib_net(data[: len(data) // 2], resnet_spec())
    with pytest.raises(DlibFormatError):
        read_dlib_net(data + b"\x00", resnet_spec())
    with pytest.raises(DlibFormatError):
        read_dlib_net(Path(dlib_model_path("mmod")).read_bytes(), resnet_spec())


def test_onnx_matches_dlib_on_real_faces(chips, reference, encoder):
    got = encoder.embed(chips)
    assert got.shape == (len(chips), 128) and got.dtype == np.float32
    diff = np.abs(got - reference).max()
    cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    print(f"\n{len(chips)} faces: max |diff| {diff:.2e}, min cosine {cos.min():.8f}")
    assert diff < 1e-3
    assert cos.min() > 0.9999
    # raw, not normalised: dlib's descriptors have norms well away from 1
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)


def test_batch_and_single_agree(chips, encoder):
    batch = encoder.embed(chips[:5])
    singles = np.concatenate([encoder.embed(chips[i : i + 1]) for i in range(min(5, len(chips)))])
    assert np.abs(batch[: len(singles)] - singles).max() < 1e-4


def test_empty_batch_and_bad_input(onnx_path):
    enc = OnnxDlibResnet(onnx_path)
    out = enc.embed(np.zeros((0, 150, 150, 3), np.uint8))
    assert out.shape == (0, 128) and out.dtype == np.float32
    assert enc._session is None  # nothing to run: the session is still not created
    with pytest.raises(ValueError):
        enc.embed(np.zeros((1, 150, 150, 3), np.float32))
    with pytest.raises(ValueError):
        enc.embed(np.zeros((1, 112, 92, 3), np.uint8))


def test_cache_is_keyed_and_reused(onnx_path):
    digest = file_sha256(dlib_model_path("resnet"))[:16]
    assert digest in onnx_path.name and f"c{CONVERTER_VERSION}" in onnx_path.name
    mtime = onnx_path.stat().st_mtime_ns
    again = cached_resnet_onnx(dlib_model_path("resnet"), onnx_path.parent)
    assert again == onnx_path and again.stat().st_mtime_ns == mtime
    assert [p.name for p in onnx_path.parent.iterdir()] == [onnx_path.name]  # no temp file left behind


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    from siamface.embedding.dlib_onnx import default_cache_dir

    monkeypatch.setenv("SIAMFACE_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("SIAMFACE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "siamface"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "siamface"
