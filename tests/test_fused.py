"""The fused models dlib+facenet and dlib-flip+facenet (the default before sface): one embedding per face whose dot product
is the weighted sum of its parts' cosines, usable by a gallery like any other model."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from conftest import att, att_rgb, scene  # noqa: E402

from siamface import ModelMismatchError, Pipeline  # noqa: E402
from siamface.embedding import create_encoder  # noqa: E402
from siamface.embedding.fused import DLIB_FACENET, DLIB_FLIP_FACENET  # noqa: E402
from siamface.gallery import Gallery  # noqa: E402

FUSED = DLIB_FLIP_FACENET.name  # pinned: these tests are about the fused model, whatever the default


@pytest.fixture(scope="module")
def fused() -> Pipeline:
    return Pipeline(model=FUSED)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [scene([(att_rgb(s, i), 2.0, (200, 100))]) for s, i in ((11, 1), (11, 2), (10, 1))]


@pytest.mark.parametrize("fusion", [DLIB_FACENET, DLIB_FLIP_FACENET], ids=lambda f: f.name)
def test_fused_embedding_is_the_weighted_concatenation_of_its_parts(fusion, fused, frames):
    w = fusion.weight
    fused = Pipeline(detector=fused.detector, model=fusion.name)
    parts = [Pipeline(detector=fused.detector, model=create_encoder(name, **opts)) for name, opts in fusion.parts]
    for frame in frames:
        faces = fused.detect(frame)[:1]
        e = fused.embed(frame, faces).embeddings[0]
        a, b = (p.embed(frame, faces[:1]).embeddings[0] for p in parts)
        assert e.shape == (a.size + b.size,) and abs(np.linalg.norm(e) - 1) < 1e-5
        assert np.abs(e - np.concatenate([np.sqrt(w) * a, np.sqrt(1 - w) * b])).max() < 1e-5
    (e1, e2), (a1, a2), (b1, b2) = ([p.embed_largest(f)[0].embeddings[0] for f in frames[:2]] for p in [fused, *parts])
    assert float(e1 @ e2) == pytest.approx(w * float(a1 @ a2) + (1 - w) * float(b1 @ b2), abs=1e-5)
    info = fused.encoder.info
    assert info.extra["weight"] == w and f"w={w:g}" in info.version and info.embedding_size == 640
    flips = [bool(opts.get("flip")) for _, opts in fusion.parts]
    assert [p.encoder.info.version.endswith("+flip") for p in parts] == flips
    assert info.extra["part_options"] == [dict(o) for _, o in fusion.parts]


def test_fused_embed_takes_one_chip_array_per_part(fused):
    enc = fused.encoder
    assert [s.size for s in enc.chip_specs] == [150, 160]
    with pytest.raises(ValueError, match="one per part"):
        enc.embed(np.zeros((1, 150, 150, 3), np.uint8))
    with pytest.raises(ValueError, match="different numbers of faces"):
        enc.embed((np.zeros((1, 150, 150, 3), np.uint8), np.zeros((2, 160, 160, 3), np.uint8)))
    assert enc.embed((np.zeros((0, 150, 150, 3), np.uint8), np.zeros((0, 160, 160, 3), np.uint8))).shape == (0, 640)


def test_gallery_with_the_fused_model_and_a_dlib_gallery(tmp_path, fused):
    with Gallery(tmp_path / "fused.db", fused, create=True) as g:
        for s in (3, 5, 7):
            assert g.enroll(f"s{s}", [att(s, 2), att(s, 3), att(s, 4)]).templates_total == 3
        for s in (3, 5, 7):
            result = g.identify(att(s, 1))
            assert result.names == [f"s{s}"] and result.model == FUSED
    with Gallery(tmp_path / "dlib.db", Pipeline(detector=fused.detector, model="dlib-resnet"), create=True) as g:
        g.enroll("s3", [att(3, 2)])
    with Gallery(tmp_path / "dlib.db", fused) as g:
        with pytest.raises(ModelMismatchError, match=f"gallery reembed --model {re.escape(FUSED)}"):
            g.identify(att(3, 1))


def _chips_of(encoder, frame, detector):
    from siamface.embedding import encoder_chips

    faces = detector.detect(frame)[:1]
    return encoder_chips(encoder, frame, faces.boxes, faces.landmarks, faces.data.get("keypoints"))


@pytest.mark.parametrize("name", ["sface+dlib"])
def test_sface_fusions_run_their_parts_side_by_side_with_the_same_embeddings(name, fused, frames):
    """`sface+dlib` runs dlib's part in another thread while SFace runs, SFace (in the caller's thread) with all
    the intra-op threads and dlib with its share, and gives the embeddings of the parts run one after the
    other."""
    import threading
    from dataclasses import replace

    from siamface.embedding.fused import FusedEncoder

    enc = create_encoder(name, num_threads=2)
    assert enc.fusion.concurrent and [p.info.name for p in enc.parts] == ["sface", "dlib-resnet"]
    assert (enc.parts[0].num_threads, enc.parts[1]._engine.num_threads) == (2, 1)
    sequential = FusedEncoder(replace(enc.fusion, concurrent=False), num_threads=2)
    for frame in frames:
        chips = _chips_of(enc, frame, fused.detector)
        assert np.abs(enc.embed(chips) - sequential.embed(chips)).max() < 1e-6
    started = [threading.Event(), threading.Event()]
    threads = {}

    def meeting(k, embed):
        def run(chips):
            threads[k] = threading.get_ident()
            started[k].set()
            assert started[1 - k].wait(10), "the other part did not start while this one ran"
            return embed(chips)

        return run

    for k, part in enumerate(enc.parts):
        part.embed = meeting(k, part.embed)
    assert enc.embed(_chips_of(enc, frames[0], fused.detector)).shape == (1, enc.info.embedding_size)
    assert threads[0] == threading.get_ident() != threads[1]


def test_a_failing_part_of_a_side_by_side_fusion_fails_the_call(fused, frames):
    enc = create_encoder("sface+dlib")
    chips = _chips_of(enc, frames[0], fused.detector)

    def broken(chips):
        raise RuntimeError("dlib part failed")

    enc.parts[1].embed = broken
    with pytest.raises(RuntimeError, match="dlib part failed"):
        enc.embed(chips)


@pytest.mark.parametrize("name", [FUSED, "sface+dlib-flip"])
def test_the_former_default_runs_its_parts_one_after_the_other(name, fused, frames):
    """dlib-flip+facenet, the cost gate's reference, keeps its parts in the caller's thread with all the threads
    each (side by side it is slower: FaceNet alone on one thread takes longer than the whole chain); so does
    sface+dlib-flip (side by side it was not faster)."""
    import threading

    enc = create_encoder(name)
    seen = set()
    for part in enc.parts:
        part.embed = (lambda embed: lambda chips: seen.add(threading.get_ident()) or embed(chips))(part.embed)
    enc.embed(_chips_of(enc, frames[0], fused.detector))
    assert seen == {threading.get_ident()}


def test_a_forked_process_gets_its_own_part_threads(monkeypatch):
    """A child made by fork inherits the pool object but not its threads: it makes its own rather than queue
    parts that no thread will run."""
    import os

    from siamface.embedding import fused as fused_module

    pool = fused_module._part_pool()
    assert fused_module._part_pool() is pool
    monkeypatch.setattr(fused_module, "_pool", fused_module._pool)  # this process's pool again after the test
    monkeypatch.setattr(os, "getpid", lambda: -1)
    child = fused_module._part_pool()
    assert child is not pool and child.submit(lambda: 42).result(timeout=10) == 42
    child.shutdown()
