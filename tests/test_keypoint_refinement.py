"""retinaface's keypoint refinement for small faces (`RetinaFaceDetector.refine_keypoints`), which SFace's chips
(and its fusions') are warped from: it runs on faces under 112 px (every AT&T fixture face: 79-98 px), it
makes the same person match better and strangers no closer on the fixture faces, it leaves the detector's own
keypoints (what liveness reads) and large faces alone, and it can be turned off (``--no-keypoint-refinement``,
``refine_below=None``), which gives the chips of before; a gallery enrolled without it is searched with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from conftest import ATT, att, att_rgb, run_cli, scene  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.alignment import crop_all  # noqa: E402
from siamface.errors import ConfigError  # noqa: E402
from siamface.image import load_image  # noqa: E402

MODEL = "sface"  # the encoder aligned on keypoints; the point of these tests, whatever the default is


@pytest.fixture(scope="module")
def fixture_faces():
    """Every AT&T fixture face: (image, its retinaface detection of the largest face), and the subjects."""
    pipe = Pipeline(model=MODEL)
    files = sorted(ATT.glob("s*/*.pgm"))
    out = []
    for f in files:
        image = load_image(f)
        out.append((image, pipe.detect(image)[:1]))
    return out, np.array([f.parent.name for f in files])


def _embed(pipe: Pipeline, faces) -> tuple[np.ndarray, np.ndarray]:
    done = pipe.embed_many([(image, found[:]) for image, found in faces])
    return np.stack([f.embeddings[0] for f in done]), np.stack([f.chips[0] for f in done])


def test_small_faces_are_refined_and_match_better(fixture_faces):
    """On the 40 fixture faces (10 people), with the refinement against without: the chips differ (the pass
    ran on every face, all under 112 px), the worst genuine pair scores higher and the margin between it and
    the best impostor pair widens (measured: 0.579 against 0.537, margin 0.278 against 0.228)."""
    faces, subjects = fixture_faces
    sides = [float(np.max(f.boxes[0, 2:] - f.boxes[0, :2])) for _, f in faces]
    assert max(sides) < 112
    refined, chips_on = _embed(Pipeline(model=MODEL), faces)
    plain, chips_off = _embed(Pipeline(model=MODEL, refine_below=None), faces)
    changed = [not np.array_equal(a, b) for a, b in zip(chips_on, chips_off)]
    assert sum(changed) >= 0.9 * len(faces)
    i, j = np.triu_indices(len(subjects), 1)
    genuine = subjects[i] == subjects[j]

    def worst_and_margin(e):
        s = (e @ e.T)[i, j]
        return s[genuine].min(), s[genuine].min() - s[~genuine].max()

    (worst_on, margin_on), (worst_off, margin_off) = worst_and_margin(refined), worst_and_margin(plain)
    assert worst_on > worst_off + 0.02 and margin_on > margin_off + 0.02, (worst_on, worst_off, margin_on, margin_off)


def test_the_detectors_own_keypoints_are_left_alone(fixture_faces):
    """Liveness reads `faces.data["keypoints"]`: embedding with the refinement does not change them."""
    faces, _ = fixture_faces
    image, found = faces[0]
    before = found.data["keypoints"].copy()
    done = Pipeline(model=MODEL).embed(image, found[:])
    np.testing.assert_array_equal(done.data["keypoints"], before)
    again = Pipeline(model=MODEL).detect(image)
    np.testing.assert_array_equal(again.data["keypoints"][:1], before)


def test_refined_keypoints_move_only_small_faces():
    """The refinement moves the keypoints of a face under 112 px, by less than a tenth of its box, and leaves
    those of the same face scaled x2.5 (about 200 px) exactly as the detector gave them."""
    pipe = Pipeline(model=MODEL)
    det = pipe.detector
    for factor, small in ((1.0, True), (2.5, False)):
        image = scene([(att_rgb(5, 1), factor, (200, 100))])
        found = pipe.detect(image)[:1]
        side = float(np.max(found.boxes[0, 2:] - found.boxes[0, :2]))
        assert (side < 112) == small, side
        kps = found.data["keypoints"]
        refined = det.refine_keypoints(image, found.boxes, kps)
        moved = float(np.abs(refined - kps).max())
        assert moved > 0 if small else moved == 0, moved
        assert moved < 0.1 * side


@pytest.mark.parametrize("off", [{"refine_below": None}, {"refine_keypoints": False}])
def test_turned_off_gives_the_chips_of_the_first_keypoints(fixture_faces, off):
    """``refine_below=None`` (the detector's option) or ``refine_keypoints=False`` (the pipeline's, what
    ``--no-keypoint-refinement`` sets): SFace's chips are warped from the detector's own keypoints, as before."""
    faces, _ = fixture_faces
    image, found = faces[3]
    spec = Pipeline(model=MODEL).encoder.info.chip
    first = crop_all(image, found.boxes, found.landmarks, spec, found.data["keypoints"])
    _, chips = _embed(Pipeline(model=MODEL, **off), [(image, found)])
    np.testing.assert_array_equal(chips, first)


def test_models_not_aligned_on_keypoints_are_not_touched(fixture_faces):
    """dlib's ResNet aligns on dlib's landmarks: the refinement changes nothing of its embeddings."""
    faces, _ = fixture_faces
    on, _ = _embed(Pipeline(model="dlib-resnet"), faces[:3])
    off, _ = _embed(Pipeline(model="dlib-resnet", refine_below=None), faces[:3])
    np.testing.assert_array_equal(on, off)


@pytest.mark.parametrize("options", [{"refine_below": 0}, {"refine_region": 1.0}, {"refine_box": 8}])
def test_bad_refinement_options_are_refused(options):
    with pytest.raises(ConfigError):
        Pipeline(model=MODEL, **options).detector  # noqa: B018


def test_cli_switch_and_a_gallery_enrolled_without_the_refinement(tmp_path):
    """``--no-keypoint-refinement`` gives another similarity for the same small faces (the switch reaches the
    chain), and a gallery enrolled with it (as galleries before the refinement were) is searched with the
    refinement on: the same model, the person found, a stranger not."""
    pair = (att(4, 1), att(4, 3))
    on = json.loads(run_cli("verify", *pair, "--model", MODEL, "--json").stdout)
    off = json.loads(run_cli("verify", *pair, "--model", MODEL, "--no-keypoint-refinement", "--json").stdout)
    assert on["same"] and off["same"] and on["similarity"] != off["similarity"]
    g = tmp_path / "before.db"
    for person in (3, 4):
        out = run_cli("enroll", "-g", g, f"s{person}", att(person, 1), att(person, 2), "--model", MODEL,
                      "--no-keypoint-refinement")  # fmt: skip
        assert out.returncode == 0, out.stderr
    out = run_cli("identify", "-g", g, att(4, 4), att(5, 4), "--json")
    results = json.loads(out.stdout)["results"]
    assert [r["model"] for r in results] == [MODEL, MODEL]
    assert [r["faces"][0]["status"] for r in results] == ["known", "unknown"], results
    assert results[0]["faces"][0]["person"] == "s4"


def test_the_refinement_keeps_to_a_requests_time_budget(fixture_faces):
    """A photo of many small faces costs a pass each: past a request's deadline the refinement is not started
    (`OverBudgetError` naming it), as detection and embedding are not."""
    import contextvars

    from siamface import _budget
    from siamface.errors import OverBudgetError

    faces, _ = fixture_faces
    image, found = faces[0]
    now = [0.0]

    def run():
        _budget.start(5.0, clock=lambda: now[0])
        now[0] = 6.0  # the detection took the whole budget
        Pipeline(model=MODEL).embed(image, found[:])

    with pytest.raises(OverBudgetError, match="keypoint refinement"):
        contextvars.copy_context().run(run)
