"""Liveness: PAD metrics on hand-computed cases, the shipped passive model, and the active check driven by
real head motion (AT&T subject s26 turning left and right) against the same face warped as a moving plane."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import time

import cv2
import numpy as np
import pytest
from conftest import (
    FRONTAL,
    FRONTAL_2,
    S23_FRONTAL,
    S23_LEFT,
    S23_RIGHT,
    TURN,
    TURNED_LEFT,
    TURNED_RIGHT,
    TurningHead,
    att_rgb,
    blended_face,
    camera_frame,
    held_photo,
    planar_turn,
    plant_links,
    s26,
    scene,
)

from siamface.errors import ConfigError, ModelError
from siamface.liveness import PassiveLiveness, pad_report
from siamface.liveness.active import ActiveCheck, parallax, yaw_ratio
from siamface.liveness.passive import LivenessScore, features, frame_sides, is_framed, lbp_histogram
from siamface.liveness.session import CaptureRules, CaptureSession, Seen, draw_prompts, follow


@pytest.fixture(scope="module")
def keypoints(pipeline):
    def of(frame):
        faces = pipeline.detect(frame)
        assert len(faces) == 1
        return faces.data["keypoints"][0], faces.boxes[0]

    return of


# -- metrics -----------------------------------------------------------------------------------------
def test_pad_report_hand_computed():
    scores = [0.9, 0.8, 0.3, 0.95, 0.2, 0.6, 0.7, 0.1]
    labels = ["live", "live", "live", "live", "photo", "photo", "replay", "replay"]
    r = pad_report(scores, labels, threshold=0.5)
    assert r.bpcer == pytest.approx(1 / 4)  # 0.3 rejected
    assert r.apcer == {"photo": pytest.approx(1 / 2), "replay": pytest.approx(1 / 2)}
    assert r.acer == pytest.approx((0.5 + 0.25) / 2)
    assert r.counts == {"live": 4, "photo": 2, "replay": 2}
    with pytest.raises(ValueError):
        pad_report([0.5, 0.6], ["live", "live"], 0.5)


def test_pad_report_perfect_separation_and_ties():
    r = pad_report([0.9, 0.8, 0.1, 0.2], ["live", "live", "print", "print"], threshold=0.5)
    assert r.bpcer == 0 and r.apcer == {"print": 0} and r.eer == 0
    tied = pad_report([0.5, 0.5], ["live", "print"], threshold=0.5)  # at the threshold counts as live
    assert tied.bpcer == 0 and tied.apcer == {"print": 1.0}


# -- passive -----------------------------------------------------------------------------------------
def test_lbp_histogram_of_flat_and_textured_patches():
    flat = lbp_histogram(np.full((16, 16), 100, np.uint8))
    assert flat.sum() == pytest.approx(1) and flat.max() == pytest.approx(1)  # one pattern everywhere
    noise = lbp_histogram(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    assert (noise > 0).sum() > 40  # many patterns


def test_features_of_a_pasted_photo_are_deterministic(pipeline):
    # the package ships no texture model (trained on data whose terms forbid shipping it): its features stay
    frame = scene([(att_rgb(3, 1), 2.0, (100, 100))])  # a grey print-like face pasted in a scene
    box = pipeline.detect(frame).boxes[0]
    assert features(frame, box).shape == (373,)
    assert np.array_equal(features(frame, box), features(frame, box))
    with pytest.raises(ModelError, match="train one"):
        PassiveLiveness("out/none/passive_v2.npz")


def test_frame_cue_finds_a_printed_photos_border_and_not_a_face_outline(pipeline):
    for subject, image in ((11, 1), (3, 1), (7, 2)):
        photo = held_photo(subject, image)
        sides = frame_sides(photo, pipeline.detect(photo).boxes[0])
        assert is_framed(sides), (subject, sides)
        head = blended_face(subject, image)
        faces = pipeline.detect(head)
        assert len(faces), (subject, "the blended face is still a face")
        assert not is_framed(frame_sides(head, faces.boxes[0])), subject
    assert frame_sides(np.zeros((50, 50, 3), np.uint8), (0, 0, 4, 4)) == ()  # too small: nothing to say


def test_a_framed_face_is_not_live_whatever_its_texture():
    texture_ok = LivenessScore(0.99, 0.9, "m", ("left", "right"))  # hair can line both cheeks
    assert texture_ok.live and not texture_ok.framed
    framed = LivenessScore(0.99, 0.9, "m", ("left", "right", "top"))
    assert not framed.live and framed.decision_score == 0.0
    assert framed.to_dict()["framed"] is True and framed.to_dict()["frame"] == ["left", "right", "top"]


# -- active ------------------------------------------------------------------------------------------
def test_yaw_and_parallax_of_a_real_head_against_a_plane(keypoints):
    ref, _ = keypoints(s26(FRONTAL))
    right, _ = keypoints(s26(TURNED_RIGHT))
    left, _ = keypoints(s26(TURNED_LEFT))
    assert yaw_ratio(right) < -0.18 < 0.18 < yaw_ratio(left)
    assert parallax(ref, left) > 0.15 and parallax(ref, right) > 0.1  # the nose leaves the plane
    for degrees in (-35, -20, 20, 35):
        flat, _ = keypoints(planar_turn(s26(FRONTAL), degrees))
        assert abs(yaw_ratio(flat)) < 0.18  # a photo cannot "turn"
        assert parallax(ref, flat) < 0.1  # and moves like a plane


def feed(check: ActiveCheck, frames, keypoints, fps: float = 10.0):
    result = None
    for i, frame in enumerate(frames):
        k, box = keypoints(frame)
        result = check.update(k, box, i / fps)
        if result is not None:
            break
    return result


def test_active_check_passes_a_real_head_in_the_asked_order(keypoints):
    frames = [s26(i) for i in (FRONTAL, FRONTAL, TURNED_RIGHT, FRONTAL_2, TURNED_LEFT, FRONTAL)]
    check = ActiveCheck(["turn_right", "turn_left"], timeout=5)
    assert check.prompt == "look straight at the camera"
    result = feed(check, frames, keypoints)
    assert result is not None and result.passed, result
    assert result.completed == 2 and result.parallax > 0.15


def test_active_check_refuses_the_wrong_order_and_a_moving_photo(keypoints):
    frames = [s26(i) for i in (FRONTAL, TURNED_RIGHT, FRONTAL_2, TURNED_LEFT)] + [s26(FRONTAL)] * 10
    wrong = ActiveCheck(["turn_left", "turn_right"], timeout=1.0)  # the right turn came too early
    result = feed(wrong, frames, keypoints)
    assert result is not None and not result.passed and "timeout" in result.reason
    assert result.completed == 1 and result.seconds > 1.0

    photo = [planar_turn(s26(FRONTAL), d) for d in (0, -20, -35, -20, 0, 20, 35, 20, 0)] * 2
    check = ActiveCheck(["turn_right", "turn_left"], timeout=1.5)
    result = feed(check, photo, keypoints)
    assert result is not None and not result.passed and result.completed == 0
    assert result.parallax < 0.1


def test_active_check_draws_a_random_challenge_with_a_turn():
    drawn = {tuple(ActiveCheck().challenges) for _ in range(40)}
    assert len(drawn) > 3
    assert all(len(c) == 2 and ({"turn_left", "turn_right"} & set(c)) for c in drawn)
    with pytest.raises(ConfigError):
        ActiveCheck(["blink"])


def test_authenticate_with_active_liveness(tmp_path, pipeline, keypoints):
    from siamface.gallery import Gallery
    from siamface.live import Authenticator, GalleryMatcher
    from siamface.video import Frame

    with Gallery(tmp_path / "g.db", pipeline, create=True) as g:
        g.enroll("s26", [TURN / f"{i}.pgm" for i in (6, 7)])
        g.enroll("s23", [camera_frame(n, np.random.default_rng(9)) for n in ("7", "1", "10")])
        rng = np.random.default_rng(2)
        stills = {"turn your head to your right": S23_RIGHT[-1], "turn your head to your left": S23_LEFT[-1]}
        players = {
            # a person following each prompt as it comes: a continuous turn
            "real": ("s23", TurningHead(3).frame),
            # the attack: a frontal still, and a turned still when a turn is asked
            "stills": ("s23", lambda prompt: camera_frame(stills.get(prompt, S23_FRONTAL[0]), rng)),
            # a photo turned as a plane in front of the camera, whatever is asked
            "photo": (
                "s26",
                lambda prompt, d=iter((0, -20, -35, -20, 0, 20, 35, 20) * 20): planar_turn(s26(FRONTAL), next(d)),
            ),
        }
        decisions, now = {}, [0.0]
        for name, (claim, play) in players.items():
            events = []
            capture = CaptureSession("active", CaptureRules(timeout=20), ["turn_right", "turn_left"], random.Random(1))
            auth = Authenticator(
                pipeline,
                GalleryMatcher(g),
                claim,
                consecutive=2,
                timeout=20,
                on_event=events.append,
                liveness="active",
                capture=capture,
                clock=lambda: now[0],
            )
            for i in range(150):
                prompts = [e["prompt"] for e in events if e["event"] == "challenge"]
                now[0] = i / 5
                auth.process(Frame(i, i / 5, play(prompts[-1] if prompts else None), time.perf_counter()))
                if auth.decision:
                    break
            decision = auth.finish()
            decisions[name] = decision
            assert events[0]["event"] == "challenge" and events[-1]["event"] in ("granted", "denied")
            assert decision.to_dict()["liveness"]["mode"] == "active"
    assert decisions["real"].granted, decisions["real"].reason
    assert not decisions["stills"].granted and "jump" in decisions["stills"].reason
    assert not decisions["photo"].granted and "timeout" in decisions["photo"].reason  # never met a prompt
    assert decisions["photo"].liveness["session"]["passed"] is False


def test_evaluate_liveness_command(tmp_path, capsys):
    from siamface.cli import main

    # the folder's name and an attack type's go into the histogram's title and legend: a '$' there started
    # matplotlib's mathtext ('\\foo' a parse error, a traceback); report.json and scores.png were written
    # through links planted at their names in the output folder
    data = tmp_path / "pad$\\foo{$"
    victims = plant_links(tmp_path / "out", ["report.json", "scores.png"], tmp_path)
    for kind, images in (
        ("live", [s26(FRONTAL), s26(TURNED_LEFT)]),
        ("photo", [planar_turn(s26(FRONTAL), 25), planar_turn(s26(FRONTAL), -25)]),
        ("screen$\\bar$", [s26(FRONTAL_2)]),
    ):
        (data / kind).mkdir(parents=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(data / kind / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    # a recording is one presentation: 12 frames of s26 turning, every frame scored
    writer = cv2.VideoWriter(str(data / "live" / "turning.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for i in (FRONTAL, TURNED_LEFT, FRONTAL_2, TURNED_RIGHT) * 3:
        writer.write(cv2.cvtColor(s26(i), cv2.COLOR_RGB2BGR))
    writer.release()
    assert main(["evaluate", "--liveness", str(data), "--out", str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"live": 3, "photo": 2, "screen$\\bar$": 1} and report["no_face"] == 0
    assert set(report["apcer"]) == {"photo", "screen$\\bar$"} and 0 <= report["bpcer"] <= 1
    assert report["videos"] == 1 and report["per_frame"]["combined"]["counts"]["live"] == 2 + 12
    assert set(report["cues"]) == {"cnn", "colour", "frame"}  # every cue alone, beside the combination
    assert set(report["per_frame"]) == {"combined", "cnn", "colour", "frame"}
    assert (tmp_path / "out" / "report.json").is_file() and not (tmp_path / "out" / "report.json").is_symlink()
    assert [v.read_bytes() for v in victims] == [b"keep me"] * 2
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "out" / "scores.png").stat().st_size > 0

    (data / "live").rename(data / "elsewhere")
    assert main(["evaluate", "--liveness", str(data)]) == 2
    assert "live/" in capsys.readouterr().err


# -- capture sessions on drawn keypoints (no model): the rules one at a time --------------------------------
def head(yaw: float = 0.0, x: float = 0.0, t_noise: float = 0.0) -> Seen:
    """A face's keypoints and box with the nose `yaw` eye distances off the eyes' midpoint (40 px apart)."""
    k = np.array([[100, 100], [140, 100], [120 + 40 * yaw, 120], [105, 140], [135, 140]], np.float64)
    k[:, 0] += x
    k += t_noise
    return Seen(k, (90 + x, 80, 150 + x, 160), True, None)


def run_session(frames, prompts=("turn_right",), dt=0.2, **rules):
    """Feed `frames(t, prompt)` -> Seen into an active session until it is decided; its result."""
    s = CaptureSession("active", CaptureRules(**rules), list(prompts), random.Random(0))
    t = 0.0
    while s.result is None and t < 30:
        s.observe(t, frames(t, PROMPTS_SHOWN.get(s.prompt, s.prompt) if s.revealed else None))
        t += dt
    return s.result


PROMPTS_SHOWN: dict = {}


def test_capture_session_rules_one_at_a_time():
    wobble = lambda t: 0.01 * np.sin(7 * t)  # noqa: E731  (a live head is never perfectly still)

    def follows(t, prompt, started={}):  # noqa: B006
        if prompt is None:
            started.clear()
            return head(wobble(t))
        started.setdefault("t", t)
        return head(-min(0.3, 0.08 * (1 + (t - started["t"]) / 0.2)))

    # a turn along a path (parallax waived: drawn keypoints are flat)
    passed = run_session(follows, parallax_min=0.0)
    assert passed.passed, passed.reason
    # the turn in one frame: a jump
    jumped = run_session(lambda t, p: head(-0.3 if p else wobble(t)), parallax_min=0.0)
    assert not jumped.passed and "jump" in jumped.reason
    # turning before the prompt is shown (a recording's own moment)
    early = run_session(lambda t, p: head(-0.3 if t > 0.4 else wobble(t)), hold=(2.0, 2.5))
    assert not early.passed and "before the prompt" in early.reason
    # no reaction within react seconds of the prompt
    late = run_session(lambda t, p: head(wobble(t)))
    assert not late.passed and "no movement" in late.reason
    # a gap, a burst
    gap = run_session(follows, dt=2.0)
    assert not gap.passed and "gap" in gap.reason
    burst = run_session(follows, dt=0.01)
    assert not burst.passed and "burst" in burst.reason


def test_capture_session_follows_its_face_and_draws_secret_prompts():
    assert follow([[0, 0, 60, 60], [385, 85, 435, 155]], head(x=290)) == 1  # the one near the last face
    assert follow([[0, 0, 60, 60]], head(x=290)) is None  # only someone else: not this session's face
    assert follow([], None) is None and follow([[0, 0, 9, 9]], None) == 0
    drawn = {tuple(draw_prompts(3, random.Random(seed))) for seed in range(200)}
    assert len(drawn) > 40 and all(set(d) & {"turn_left", "turn_right"} for d in drawn)
    s = CaptureSession("active", CaptureRules(), None, random.Random(1))
    assert s.shown == [] and s.prompt == "look straight at the camera"


def test_a_presentation_is_one_person_and_one_unlike_face_is_only_skipped():
    # Drawn faces with embeddings: person a, then one face unlike it (a frame blurred by a quick turn: skipped,
    # neither counted nor followed from), a again, then two faces in a row of person b (a cut, or a photo of
    # someone else held where a's face was): a passive session restarts on b (when asked to) or fails; an
    # active one fails
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=128), rng.normal(size=128)
    blur = a + 3.0 * rng.normal(size=128)  # the same face, far off: under the threshold against a
    threshold = 0.4
    cos = float(a @ blur / np.linalg.norm(a) / np.linalg.norm(blur))
    assert cos < threshold and abs(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))) < threshold

    def face(vector, i):
        return dataclasses.replace(head(yaw=0.01 * (i % 3)), embedding=vector + 0.05 * rng.normal(size=128))

    faces = [a] * 5 + [blur] + [a] * 4 + [b] * 4
    for mode, other_person, ends in (
        ("passive", "restart", "restart"),
        ("passive", "fail", "fail"),
        ("active", "restart", "fail"),
    ):
        s = CaptureSession(mode, CaptureRules(), ["turn_right"], random.Random(0), threshold, other_person)
        for i, vector in enumerate(faces[:10]):
            s.observe(0.2 * i, face(vector, i))
        assert s.result is None and s.other_people == 0 and s.unlike is None  # the blurred face: skipped
        assert mode == "active" or s.faces == 9  # and not counted
        s.observe(2.0, face(b, 10))
        assert s.result is None and s.unlike is not None  # one face unlike: not yet another person
        s.observe(2.2, face(b, 11))
        assert s.other_people == 1
        if ends == "restart":
            assert s.result is None and s.restarts == 1 and s.faces == 1  # a new presentation, from b's face
        else:
            assert s.result is not None and not s.result.passed and "another person's" in s.result.reason
    unchecked = CaptureSession("passive", CaptureRules())  # no threshold: identities not compared
    for i, vector in enumerate(faces):
        unchecked.observe(0.2 * i, face(vector, i))
    assert unchecked.other_people == 0 and unchecked.faces == len(faces)
