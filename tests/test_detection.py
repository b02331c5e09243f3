"""Detectors on real faces: one face per AT&T image, several in a scene, none in a faceless picture."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import att, att_rgb, faceless, scene

from siamface.detection import create_detector, detector_names
from siamface.errors import ConfigError
from siamface.image import load_image

FAST = ["retinaface", "hog", "mtcnn", "haar", "blazeface", "blazeface-back"]
#: blazeface (the front-camera model) is for faces that fill the picture: in the scene it finds the largest.
SCENE = [name for name in FAST if name != "blazeface"]


def test_registry_lists_every_detector():
    assert set(detector_names()) >= {"hog", "cnn", "haar", "retinaface", "mtcnn", "blazeface", "blazeface-back"}


def test_unknown_detector_names_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown detector 'yolo'.*retinaface"):
        create_detector("yolo")


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("subject, image", [(10, 1), (5, 2), (9, 4)])
def test_one_face_with_landmarks_on_the_face(name, subject, image):
    img = load_image(att(subject, image))
    faces = create_detector(name).detect(img)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0]
    assert 0 <= x1 < x2 <= 92 and 0 <= y1 < y2 <= 112 and (x2 - x1) >= 20
    lm = faces.landmarks[0]
    assert np.isfinite(lm).all()
    # dlib order: eye corners on the image's right (0, 1), left (2, 3), nose base (4) below the eyes
    assert lm[0, 0] > lm[1, 0] > lm[3, 0] > lm[2, 0]
    assert lm[4, 1] > lm[:4, 1].max()


def test_cnn_detector_finds_the_face():
    assert len(create_detector("cnn-dlib").detect(load_image(att(3, 1)))) == 1
    faces = create_detector("cnn").detect(load_image(att(3, 1)))
    assert len(faces) == 1 and faces.detector == "cnn"


@pytest.mark.parametrize("name", SCENE)
def test_scene_with_three_people_sorted_biggest_first(name, group_scene):
    faces = create_detector(name).detect(group_scene)
    assert len(faces) == 3
    assert np.all(np.diff(faces.areas) <= 0)
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    # the pasted faces: s3 at x 30..232, s5 at x 300..438, s7 at x 500..592
    assert 30 < centres[0, 0] < 232 and 300 < centres[1, 0] < 438 and 500 < centres[2, 0] < 592


@pytest.mark.parametrize("name", FAST)
def test_faceless_image_gives_empty_faces(name):
    faces = create_detector(name).detect(faceless())
    assert len(faces) == 0 and faces.boxes.shape == (0, 4) and faces.landmarks.shape == (0, 5, 2)


def test_retinaface_falls_back_to_a_lower_score_only_when_nothing_else_is_found():
    # a 41x50 px face (s7/1 at 0.45 x) scores 0.74: under the 0.8 threshold, above the 0.5 fallback
    small = scene([(att_rgb(7, 1), 0.45, (100, 100))])
    assert len(create_detector("retinaface", fallback_threshold=None).detect(small)) == 0
    faces = create_detector("retinaface").detect(small)
    assert len(faces) == 1 and 0.5 < faces.scores[0] < 0.8
    x1, y1, x2, y2 = faces.boxes[0]
    assert 100 <= x1 < x2 <= 142 and 100 <= y1 < y2 <= 151  # on the pasted face
    # beside a face that scores above 0.8, the unsure one is not taken
    both = scene([(att_rgb(3, 1), 1.5, (300, 60)), (att_rgb(7, 1), 0.45, (100, 100))])
    found = create_detector("retinaface").detect(both)
    assert len(found) == 1 and found.scores[0] > 0.8 and found.boxes[0][0] >= 300
    for empty in (faceless(), scene([])):
        assert len(create_detector("retinaface").detect(empty)) == 0


def test_max_faces_and_min_face_size(group_scene):
    assert len(create_detector("retinaface", max_faces=2).detect(group_scene)) == 2
    big_only = create_detector("retinaface", min_face_size=150).detect(group_scene)
    assert len(big_only) == 1


def test_upsampling_finds_a_small_face():
    small = load_image(att(4, 1))[::3, ::3].copy()  # a 31x38 picture, the face about 20 px
    small = np.pad(small, ((40, 40), (40, 40), (0, 0)), mode="edge")
    assert len(create_detector("hog", upsample=0).detect(small)) == 0
    assert len(create_detector("hog", upsample=2).detect(small)) == 1


@pytest.mark.parametrize("options", [{"upsample": 9}, {"min_face_size": 0}, {"max_faces": 0}])
def test_bad_options_raise(options):
    with pytest.raises(ConfigError):
        create_detector("hog", **options)


def test_detect_refuses_non_rgb_arrays():
    with pytest.raises(ValueError, match="RGB uint8"):
        create_detector("hog").detect(np.zeros((50, 50), np.uint8))


def test_blazeface_front_model_finds_only_the_face_that_fills_the_picture(group_scene):
    faces = create_detector("blazeface").detect(group_scene)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0]
    assert 30 < (x1 + x2) / 2 < 232 and 120 < (y1 + y2) / 2 < 366  # s3, pasted at 30..232 x 120..366


@pytest.mark.parametrize("name", ["blazeface", "blazeface-back"])
def test_blazeface_six_keypoints_on_the_face(name):
    img = load_image(att(5, 2))
    faces = create_detector(name).detect(img)
    kp = faces.data["keypoints6"]
    assert kp.shape == (1, 6, 2) and kp.dtype == np.float32
    right_eye, left_eye, nose, mouth, right_ear, left_ear = kp[0]
    # the subject's right eye is on the image's left; ears outside the eyes; nose then mouth below them
    assert right_ear[0] < right_eye[0] < nose[0] < left_eye[0] < left_ear[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    x1, y1, x2, y2 = faces.boxes[0]
    assert (x1 <= kp[0, :4, 0]).all() and (kp[0, :4, 0] <= x2).all() and (y1 <= kp[0, :4, 1]).all()
    # dlib's landmarks, run on the mapped box, agree with the network's own eyes (within a fifth of their
    # distance): the eye corners' midpoints are the eye centres
    lm = faces.landmarks[0]
    eye_gap = np.linalg.norm(left_eye - right_eye)
    assert np.linalg.norm((lm[2] + lm[3]) / 2 - right_eye) < 0.2 * eye_gap
    assert np.linalg.norm((lm[0] + lm[1]) / 2 - left_eye) < 0.2 * eye_gap


def test_blazeface_keypoints_follow_upsampling():
    img = load_image(att(9, 4))
    plain = create_detector("blazeface-back").detect(img)
    up = create_detector("blazeface-back", upsample=1).detect(img)
    assert len(plain) == len(up) == 1
    assert np.abs(plain.boxes - up.boxes).max() < 4
    assert np.abs(plain.data["keypoints6"] - up.data["keypoints6"]).max() < 4


def test_blazeface_anchors_match_the_networks_outputs():
    from siamface.detection.blazeface import BACK, FRONT, _session, anchors

    for variant in (FRONT, BACK):
        rows = sum(o.shape[1] for o in _session(variant, 1).get_outputs() if o.shape[2] == 1)
        assert anchors(variant).shape == (rows, 2) == (896, 2)
        assert (0 < anchors(variant)).all() and (anchors(variant) < 1).all()


def test_blazeface_weighted_suppression_merges_overlapping_boxes():
    from siamface.detection.blazeface import weighted_nms

    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.3, 0.6], np.float32)
    kps = np.repeat(boxes[:, None, :2], 6, axis=1)
    out_boxes, out_scores, out_kps = weighted_nms(boxes, scores, kps, 0.3)
    assert out_scores.tolist() == pytest.approx([0.9, 0.6])
    assert out_boxes[0].tolist() == pytest.approx([0.5, 0, 10.5, 10])  # (0.9 * 0 + 0.3 * 2) / 1.2
    assert out_kps[0, 0].tolist() == pytest.approx([0.5, 0])
    assert out_boxes[1].tolist() == pytest.approx([50, 50, 60, 60])
