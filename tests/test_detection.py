"""Detectors on real faces: one face per AT&T image, several in a scene, none in a faceless picture."""

from __future__ import annotations

import numpy as np
import pytest

from siamface.detection import create_detector, detector_names
from siamface.errors import ConfigError
from siamface.image import load_image

from conftest import att, faceless

FAST = ["retinaface", "hog", "mtcnn", "haar"]


def test_registry_lists_every_detector():
    assert set(detector_names()) >= {"hog", "cnn", "haar", "retinaface", "mtcnn"}


def test_unknown_detector_names_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown detector 'yolo'.*retinaface"):
        create_detector("yolo")


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("subject, image", [(2, 1), (5, 2), (9, 4)])
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


@pytest.mark.parametrize("name", FAST)
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
