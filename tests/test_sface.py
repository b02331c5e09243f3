"""SFace: the conversion of the shipped int8bq file, equality with OpenCV's own FaceRecognizerSF (recorded
vectors), the keypoint alignment and its rule for detectors without keypoints, batches, and the fusions.

The reference (tests/fixtures/sface_reference.json) was recorded once by tools/sface_reference.py:
``cv2.FaceRecognizerSF`` (opencv-python-headless 4.14) on the original file, ``alignCrop`` from retinaface's
five keypoints and ``feature`` on the crop, for four AT&T faces tinted (so that the colour order matters) and
scaled x2. Here the same images are aligned by siamface's code from the recorded keypoints and embedded by
siamface's converted model: cosine >= 0.9999 with OpenCV's vector (measured: >= 0.9999997).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import ATT, att_rgb, run_cli, scene  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.alignment import crop_all  # noqa: E402
from siamface.embedding import create_encoder, encoder_chips  # noqa: E402
from siamface.embedding.sface import MODEL_FILE, MODEL_SHA256, SFACE_CHIP, build_sface_onnx, cached_sface_onnx  # noqa: E402
from siamface.image import load_image  # noqa: E402

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "sface_reference.json").read_text())


def _reference_image(name: str) -> np.ndarray:
    """The image tools/sface_reference.py gave OpenCV, rebuilt bit for bit."""
    grey = load_image(ATT / name)
    tint = np.array(REFERENCE["image"]["tint_rgb"], np.float32)
    tinted = np.clip(grey.astype(np.float32) * tint, 0, 255).round().astype(np.uint8)
    k = REFERENCE["image"]["scale"]
    return cv2.resize(tinted, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def sface():
    return create_encoder("sface")


def _chips(faces) -> np.ndarray:
    images, points = zip(*faces)
    return np.concatenate(
        [
            crop_all(img, np.zeros((1, 4)), np.full((1, 5, 2), np.nan), SFACE_CHIP, np.asarray([kp], np.float32))
            for img, kp in zip(images, points)
        ]
    )


def test_shipped_file_is_the_published_one():
    assert hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest() == MODEL_SHA256


def test_embeddings_equal_opencv_face_recognizer_sf(sface):
    faces = [(_reference_image(f["file"]), f["keypoints"]) for f in REFERENCE["faces"]]
    ours = sface.embed(_chips(faces))  # the four in one batch
    for face, mine in zip(REFERENCE["faces"], ours):
        ref = np.asarray(face["feature"], np.float64)
        cosine = float(mine @ (ref / np.linalg.norm(ref)))
        assert cosine >= 0.9999, (face["file"], cosine)
    # the references tell the two people apart, and so do ours: the test would see a wrong colour order
    assert ours[0] @ ours[1] > 0.7 and ours[0] @ ours[2] < 0.3


def test_colour_order_matters_to_the_reference(sface):
    """The tint makes the check sensitive to RGB/BGR: swapped channels move the embedding off the reference."""
    face = REFERENCE["faces"][0]
    chips = _chips([(_reference_image(face["file"]), face["keypoints"])])
    ref = np.asarray(face["feature"], np.float64)
    swapped = float(sface.embed(chips[..., ::-1].copy())[0] @ (ref / np.linalg.norm(ref)))
    assert swapped < 0.999


def test_batches_give_the_rows_of_single_calls(sface):
    faces = [(_reference_image(f["file"]), f["keypoints"]) for f in REFERENCE["faces"]]
    chips = _chips(faces)
    together = sface.embed(np.concatenate([chips] * 10))  # 40 faces: two batches of at most 32
    alone = np.concatenate([sface.embed(c[None]) for c in chips])
    assert together.shape == (40, 128)
    np.testing.assert_allclose(together[:4], alone, atol=2e-5)
    np.testing.assert_allclose(together[36:], alone, atol=2e-5)


def test_conversion_is_deterministic_and_runnable(sface):
    import onnx

    sface.embed(np.zeros((1, 112, 112, 3), np.uint8))  # the cached conversion exists
    built = build_sface_onnx()
    assert built == cached_sface_onnx().read_bytes()  # same bytes as the first conversion
    model = onnx.load_from_string(built)
    assert [i.name for i in model.graph.input] == ["data"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert not [n for n in model.graph.node if n.op_type == "DequantizeLinear"]


@pytest.mark.parametrize("detector", ["retinaface", "yunet", "haar"])
def test_every_detector_gives_sface_chips_that_match(detector):
    """Detectors with five keypoints align from them; haar (none) from dlib's landmarks onto where they land
    in the chip: the same person still matches and another does not, at sface's default threshold."""
    pipe = Pipeline(detector=detector, model="sface")
    a = scene([(att_rgb(4, 1), 2.0, (200, 100))])
    b = scene([(att_rgb(4, 3), 2.0, (220, 90))])
    c = scene([(att_rgb(7, 1), 2.0, (200, 100))])
    same = pipe.verify(a, b)
    other = pipe.verify(a, c)
    assert same.same and not other.same, (same.similarity, other.similarity)


def test_haar_chip_is_close_to_the_keypoint_chip(sface):
    """The same face, aligned from retinaface's keypoints and from dlib's landmarks (as for haar)."""
    image = scene([(att_rgb(4, 1), 2.0, (200, 100))])
    faces = Pipeline(detector="retinaface").detect(image)
    from_kps = sface.embed(encoder_chips(sface, image, faces.boxes, faces.landmarks, faces.data["keypoints"]))
    from_landmarks = sface.embed(encoder_chips(sface, image, faces.boxes, faces.landmarks, None))
    assert float(from_kps[0] @ from_landmarks[0]) > 0.85


def test_models_lists_sface_with_licence_and_training_data():
    out = run_cli("models", "--json")
    assert out.returncode == 0, out.stderr
    models = {m["name"]: m for m in json.loads(out.stdout)["models"]}
    sface = models["sface"]
    assert sface["embedding_size"] == 128 and "Apache-2.0" in sface["licence"]
    assert "CASIA-WebFace" in sface["training_data"] and "keypoints" in sface["input"]
    assert "yunet" in json.loads(out.stdout)["detectors"]
    fused = models["sface+dlib-flip+facenet"]
    assert fused["embedding_size"] == 128 + 128 + 512 and "Apache-2.0" in fused["licence"]


@pytest.mark.parametrize(("name", "size"), [("sface+dlib-flip", 256), ("sface+dlib", 256), ("sface+facenet", 640)])
def test_fusions_embed_one_unit_vector_per_face(name, size, group_scene):
    pipe = Pipeline(model=name)
    faces = pipe.embed(group_scene)
    assert faces.embeddings.shape == (3, size)
    np.testing.assert_allclose(np.linalg.norm(faces.embeddings, axis=1), 1.0, atol=1e-5)


class _Counting:
    """An encoder that records how many faces each forward pass gets."""

    def __init__(self, encoder, calls: list[int]):
        self.encoder, self.info, self.calls = encoder, encoder.info, calls

    def embed(self, chips):
        self.calls.append(len(chips))
        return self.encoder.embed(chips)


def test_evaluation_embeds_faces_in_batches(tmp_path):
    """`siamface evaluate`'s embedding step: the faces of several images go through the network together."""
    import shutil

    from siamface.evaluation import runner

    calls: list[int] = []
    for s in (3, 4):
        shutil.copytree(ATT / f"s{s}", tmp_path / f"s{s}")
    pipe = Pipeline(detector="retinaface", model=_Counting(create_encoder("sface"), calls))
    report = runner.evaluate_folder(pipe, tmp_path, progress=False)
    assert report.n_images == 8 and report.n_failures == 0
    from siamface.pipeline import EMBED_BATCH

    # the eight faces in full batches (EMBED_BATCH on the CPU), not one forward pass each
    assert sum(calls) == 8 and calls == [min(EMBED_BATCH, 8 - i) for i in range(0, 8, EMBED_BATCH)] and len(calls) < 8


def test_enrolment_from_a_folder_and_reembed_embed_in_batches(tmp_path):
    from siamface.gallery import Gallery

    calls: list[int] = []
    pipe = Pipeline(detector="retinaface", model=_Counting(create_encoder("sface"), calls))
    with Gallery(tmp_path / "g.db", pipe, create=True, keep_images=True) as g:
        report = g.enroll("s4", [ATT / "s4" / f"{k}.pgm" for k in (1, 2, 3, 4)])
        assert len(report.added) == 4, report.rejected
        assert calls == [4]  # the four photos' faces in one forward pass
        assert g.reembed(pipe) == 4
        assert calls == [4, 4]
        assert g.verify("s4", att_rgb(4, 1)).accepted


def _prelu_net(slopes: np.ndarray, depthwise_next: bool):
    """Conv -> PRelu(slopes) -> Conv (pointwise, or depthwise 3x3): the pattern of SFace's blocks."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(7)
    c = slopes.size
    w2 = rng.normal(size=(c, 1, 3, 3) if depthwise_next else (8, c, 1, 1)).astype(np.float32)
    inits = [
        numpy_helper.from_array(rng.normal(size=(c, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(slopes.reshape(c, 1, 1).astype(np.float32), "slope"),
        numpy_helper.from_array(w2, "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["data", "w1"], ["z"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["z", "slope"], ["act"], name="act"),
        helper.make_node("Conv", ["act", "w2"], ["out"], name="conv2", group=c if depthwise_next else 1),
    ]
    io = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "g",
        [io("data", onnx.TensorProto.FLOAT, ["N", 3, 12, 12])],
        [io("out", onnx.TensorProto.FLOAT, ["N", None, None, None])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("depthwise_next", [False, True])
def test_prelu_rewritten_for_the_blocked_layout_is_the_same_function(depthwise_next):
    """Every slope case of `_prelu_blocked`: negative, between 0 and 1, exactly 1 and above 1 (whose sign moves
    into the next convolution, pointwise or depthwise): the rewritten network gives PRelu's outputs."""
    import onnx
    from onnx import helper, numpy_helper

    from siamface._onnx import new_session
    from siamface._quantised import _prelu_blocked

    slopes = np.array([-0.8, -0.1, 0.0, 0.25, 0.9, 1.0, 1.12, 1.5] * 2, np.float32)
    model = _prelu_net(slopes, depthwise_next)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    folded: dict = {}
    nodes = _prelu_blocked(list(graph.node), inits, folded, helper, numpy_helper)
    assert "PRelu" not in [n.op_type for n in nodes] and "Min" not in [n.op_type for n in nodes]
    kept = [t for t in graph.initializer if t.name not in folded]
    rewritten = helper.make_graph(
        nodes,
        "g",
        list(graph.input),
        list(graph.output),
        initializer=kept + [numpy_helper.from_array(v, k) for k, v in folded.items()],
    )
    new = helper.make_model(rewritten, opset_imports=[helper.make_opsetid("", 17)])
    new.ir_version = 8
    onnx.checker.check_model(new)
    x = np.random.default_rng(3).normal(size=(3, 3, 12, 12)).astype(np.float32) * 4
    before = new_session(model.SerializeToString(), 1).run(None, {"data": x})[0]
    after = new_session(new.SerializeToString(), 1).run(None, {"data": x})[0]
    assert np.abs(after - before).max() <= 1e-4 * np.abs(before).max()


def test_sface_runs_in_the_blocked_layout_without_reorders(tmp_path, sface):
    """ONNX Runtime's optimised SFace graph stays in its blocked convolution layout from the first
    convolution to the last (at most one reorder, before the final Gemm): no PRelu, Min or Mul pass over
    the activations, nor a reorder out of and back into the layout around each convolution (converter 2 had
    80 reorders and four elementwise passes per block, which made larger batches slower per face)."""
    import onnx
    import onnxruntime as ort

    from siamface._onnx import session_options

    options = session_options(1)
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(cached_sface_onnx()), options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(str(tmp_path / "optimised.onnx")).graph.node
    ops = [n.op_type for n in nodes]
    assert not {"PRelu", "Min"} & set(ops), ops
    if not any(n.domain == "com.microsoft.nchwc" for n in nodes):
        pytest.skip("ONNX Runtime has no blocked convolution layout on this CPU")
    assert ops.count("ReorderOutput") + ops.count("ReorderInput") <= 1, ops
    assert not {"Relu", "Add"} & set(ops), ops  # fused into the blocked convolutions


def test_sface_dlib_is_sface_and_one_unflipped_dlib_pass_weighted_by_its_fit():
    """`sface+dlib`: SFace and dlib's ResNet without flip averaging (one dlib pass per face), dlib's chip warped
    from the detector's keypoints, fused with the weight fitted on the celeba_ids fitting identities: its score
    is 0.3 sface + 0.7 dlib-resnet (keypoints=True)."""
    image_a, image_b = att_rgb(3, 1), att_rgb(3, 4)
    scores = {}
    for key, encoder in (
        ("sface+dlib", "sface+dlib"),
        ("sface", "sface"),
        ("dlib", create_encoder("dlib-resnet", keypoints=True)),
    ):
        pipe = Pipeline(detector="retinaface", model=encoder)
        a, b = (pipe.embed(im).embeddings[0] for im in (image_a, image_b))
        scores[key] = float(a @ b)
    assert scores["sface+dlib"] == pytest.approx(0.3 * scores["sface"] + 0.7 * scores["dlib"], abs=1e-5)
    info = create_encoder("sface+dlib").info
    assert info.extra["part_options"] == [{}, {"keypoints": True}] and scores["sface+dlib"] > info.threshold


def test_sface_dlib_warps_dlibs_chip_from_the_keypoints():
    """dlib's part of `sface+dlib` is aligned from the detector's five keypoints, as SFace's is (so a small face's
    refined keypoints serve both): moving the keypoints moves its chip, moving dlib's landmarks does not; a
    detector without keypoints gives chips warped from dlib's landmarks, close to dlib's own, and the same
    person still matches while another does not."""
    enc = create_encoder("sface+dlib")
    assert [spec.crop for spec in enc.chip_specs] == ["keypoints", "keypoints"]
    assert "keypoints" in enc.parts[1].info.version and enc.chip_specs[1].size == 150
    image = scene([(att_rgb(4, 1), 2.0, (200, 100))])
    faces = Pipeline(detector="retinaface").detect(image)[:1]
    kps, lms = faces.data["keypoints"], faces.landmarks

    def dlib_chip(keypoints, landmarks):
        return encoder_chips(enc, image, faces.boxes, landmarks, keypoints)[1][0].astype(int)

    chip = dlib_chip(kps, lms)
    assert np.array_equal(chip, dlib_chip(kps, lms + 3.0))
    assert np.abs(chip - dlib_chip(kps + 3.0, lms)).mean() > 5
    own = crop_all(image, faces.boxes, lms, create_encoder("dlib-resnet").info.chip)[0].astype(int)
    assert np.abs(dlib_chip(None, lms) - own).mean() < 6  # no keypoints: from the landmarks, about dlib's chip
    pipe = Pipeline(detector="haar", model=enc)
    a, b, c = (scene([(att_rgb(s, i), 2.0, (200, 100))]) for s, i in ((4, 1), (4, 3), (7, 1)))
    same, other = pipe.verify(a, b), pipe.verify(a, c)
    assert same.same and not other.same, (same.similarity, other.similarity)
