"""The whole chain on real faces: same-person pairs verify, different people do not, and every failure
is a clear error."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import ATT, att, att_rgb, faceless, scene

import siamface
from siamface import NoFaceError, Pipeline
from siamface.embedding import create_encoder, model_names
from siamface.errors import ConfigError, ImageError


def test_import_loads_nothing():
    import subprocess
    import sys

    code = (
        "import sys, siamface; "
        "heavy = [m for m in ('dlib', 'onnxruntime', 'torch', 'cv2') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("", "cv2"), out.stdout  # no model runtime at import


def test_pipeline_builds_stages_lazily():
    p = Pipeline(detector="hog")
    assert p._detector is None and p._encoder is None


@pytest.mark.parametrize(
    "a, b, same",
    [
        ((11, 1), (11, 2), True),
        ((3, 1), (3, 4), True),
        ((5, 2), (5, 3), True),
        ((8, 1), (8, 4), True),
        ((11, 1), (4, 1), False),
        ((3, 2), (6, 2), False),
        ((5, 1), (9, 3), False),
        ((7, 4), (10, 2), False),
    ],
)
def test_verify_table(pipeline, a, b, same):
    result = pipeline.verify(att(*a), att(*b))
    assert result.same is same
    assert result.threshold == pipeline.encoder.info.threshold
    assert abs(result.distance - np.sqrt(2 - 2 * result.similarity)) < 1e-6


@pytest.fixture(scope="module")
def fixture_embeddings(pipeline):
    files = sorted(ATT.glob("s*/*.pgm"))
    return {f: pipeline.embed_largest(f)[0].embeddings[0] for f in files}


def test_every_fixture_pair_genuine_above_impostor(fixture_embeddings, pipeline):
    genuine, impostor = [], []
    for (fa, ea), (fb, eb) in itertools.combinations(fixture_embeddings.items(), 2):
        (genuine if fa.parent == fb.parent else impostor).append(float(ea @ eb))
    assert len(genuine) == 60 and len(impostor) == 720
    # the 40 committed AT&T faces are separable: every genuine pair scores above every impostor pair
    assert min(genuine) > max(impostor)
    thr = pipeline.threshold
    correct = sum(s >= thr for s in genuine) + sum(s < thr for s in impostor)
    assert correct / 780 >= 0.98


def test_embeddings_are_unit_vectors_and_deterministic(pipeline):
    faces = pipeline.embed(att(33, 3))
    again = pipeline.embed(att(33, 3))
    assert faces.embeddings.shape == (1, pipeline.encoder.info.embedding_size) and faces.embeddings.dtype == np.float32
    assert abs(np.linalg.norm(faces.embeddings[0]) - 1) < 1e-5
    assert np.array_equal(faces.embeddings, again.embeddings)
    size = pipeline.encoder.info.chip.size  # the model's own chip (sface: 112, dlib-resnet: 150)
    assert faces.chips.shape == (1, size, size, 3)


def test_colour_scaled_and_rotated_copies_still_verify(pipeline):
    from PIL import Image

    warm = att_rgb(6, 1, (1.1, 0.9, 0.7))
    big = np.asarray(Image.fromarray(att_rgb(6, 1, (0.8, 0.9, 1.1))).resize((276, 336), Image.BICUBIC))
    tilted = np.asarray(
        Image.fromarray(att_rgb(6, 1)).rotate(12, resample=Image.BICUBIC, expand=True, fillcolor=(60, 60, 60))
    )
    for probe in (warm, big, tilted):
        assert pipeline.verify(probe, att(6, 3)).same
        assert not pipeline.verify(probe, att(33, 3)).same


def test_group_photo_uses_largest_face_and_says_so(pipeline, group_scene):
    result = pipeline.verify(group_scene, att(3, 2))
    assert result.same and result.faces_a == 3
    assert any("3 faces found, the largest was used" in n for n in result.notes)
    assert not pipeline.verify(group_scene, att(7, 2)).same  # s7 is in the picture, but not the largest


def test_every_face_of_a_group_photo_is_embedded(pipeline, group_scene):
    faces = pipeline.embed(group_scene)
    assert faces.embeddings.shape == (3, pipeline.encoder.info.embedding_size)
    references = np.stack([pipeline.embed_largest(att(s, 3))[0].embeddings[0] for s in (3, 5, 7)])
    assert list(np.argmax(faces.embeddings @ references.T, axis=1)) == [0, 1, 2]


def test_faceless_image_raises_no_face(pipeline):
    with pytest.raises(NoFaceError, match="no face found"):
        pipeline.verify(faceless(), att(11, 1))


def test_bad_file_raises_image_error(pipeline, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        pipeline.verify(bad, att(11, 1))


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 92, 3), (112, 0, 3)])
def test_an_empty_array_is_an_image_error(pipeline, shape):
    # The second attack run: an RGB array with no pixels reached the detector (ZeroDivisionError), through the
    # public functions and the pipeline alike; "bad input gets a clear error"
    empty = np.zeros(shape, np.uint8)
    for call in (siamface.detect, siamface.embed, pipeline.detect, pipeline.embed, lambda a: pipeline.verify(a, a)):
        with pytest.raises(ImageError, match="no pixels"):
            call(empty)


def test_explicit_threshold_overrides_the_default(pipeline):
    result = pipeline.verify(att(11, 1), att(11, 2), threshold=0.999)
    assert not result.same and result.threshold == 0.999 and result.threshold_source == "given by the caller"


def test_module_level_verbs():
    faces = siamface.detect(att(4, 2))
    assert len(faces) == 1
    assert siamface.verify(att(4, 2), att(4, 3)).same


def test_model_registry():
    assert "dlib-resnet" in model_names()
    info = create_encoder("dlib-resnet").info
    assert info.embedding_size == 128 and info.chip.size == 150 and 0 < info.threshold < 1
    assert info.threshold_source
    assert {"facenet", "dlib+facenet"} <= set(model_names())
    with pytest.raises(ConfigError, match="unknown model 'arcface'.*dlib-resnet"):
        create_encoder("arcface")


def test_scene_helper_builds_a_textured_scene():
    img = scene([])
    assert img.shape == (480, 640, 3) and img.std() > 10


@pytest.mark.parametrize("detector", ["blazeface", "blazeface-back"])
def test_blazeface_boxes_give_the_same_embeddings_as_retinaface(detector):
    # dlib's landmarks run on BlazeFace's mapped box: the aligned face, so dlib-resnet's embedding, is
    # retinaface's. (Pinned to dlib-resnet: FaceNet crops the raw detector box, see the test below.)
    ours, other = Pipeline(model="dlib-resnet"), Pipeline(detector=detector, model="dlib-resnet")
    for subject, image in [(11, 1), (4, 2), (6, 3), (10, 4)]:
        a = ours.embed_largest(att(subject, image))[0].embeddings[0]
        b = other.embed_largest(att(subject, image))[0].embeddings[0]
        assert float(a @ b) > 0.98


@pytest.mark.parametrize("detector", ["blazeface", "blazeface-back"])
def test_a_face_found_by_blazeface_matches_itself_found_by_retinaface_with_the_default_model(pipeline, detector):
    # the fused default's FaceNet half crops each detector's own box (a margin, no landmark warp), so its
    # embedding moves with the box; the same face must still match itself far above the 1:1 threshold
    other = Pipeline(detector=detector)
    for subject, image in [(11, 1), (4, 2), (6, 3), (10, 4)]:
        a = pipeline.embed_largest(att(subject, image))[0].embeddings[0]
        b = other.embed_largest(att(subject, image))[0].embeddings[0]
        assert float(a @ b) > pipeline.threshold + 0.05
