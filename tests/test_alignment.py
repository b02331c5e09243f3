"""Alignment: a pure similarity warp onto dlib's template, checked on synthetic rotations and against dlib."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import att, att_rgb, scene

from siamface import alignment
from siamface.alignment import DLIB_CHIP, align, chip_transform, similarity_transform
from siamface.image import load_image


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -7.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], shift)


def test_similarity_transform_needs_two_distinct_points():
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), np.ones((5, 2)))


@pytest.mark.parametrize("angle_deg", [-30, -10, 0, 15, 40])
@pytest.mark.parametrize("zoom", [0.8, 1.0, 2.5])
def test_rotated_and_scaled_face_aligns_to_the_same_chip(angle_deg, zoom):
    """Rotate/scale an image and its landmarks together: the aligned chips must agree."""
    rng = np.random.default_rng(angle_deg + 100)
    image = rng.integers(0, 255, (120, 120, 3), np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 2.0)  # smooth, so interpolation differences stay small
    landmarks = np.array([[80, 50], [67, 51], [38, 50], [51, 51], [59, 75]], np.float64)
    reference = align(image, landmarks)
    big = np.zeros((400, 400, 3), np.uint8)
    big[140:260, 140:260] = image
    m = cv2.getRotationMatrix2D((200, 200), angle_deg, zoom)
    warped = cv2.warpAffine(big, m, (400, 400), flags=cv2.INTER_CUBIC)
    moved = (landmarks + 140) @ m[:, :2].T + m[:, 2]
    chip = align(warped, moved)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    inner = slice(30, 120)
    assert np.abs(chip[inner, inner].astype(int) - reference[inner, inner]).mean() < 6


def test_landmarks_land_on_the_template():
    landmarks = np.array([[80, 50], [67, 51], [38, 50], [51, 51], [59, 75]], np.float64)
    m = chip_transform(landmarks)
    inverse = cv2.invertAffineTransform(m)
    mapped = landmarks @ inverse[:, :2].T + inverse[:, 2]
    assert np.abs(mapped - DLIB_CHIP.target_points()).max() < 3.0


def test_chip_matches_dlib_get_face_chip():
    import dlib

    from siamface._models import dlib_object

    image = load_image(att(6, 1))
    rect = dlib.get_frontal_face_detector()(image, 1)[0]
    shape = dlib_object("landmarks5")(image, rect)
    theirs = np.asarray(dlib.get_face_chip(image, shape, 150, 0.25)).astype(int)
    ours = align(image, np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], float))
    assert np.abs(ours - theirs).mean() < 1.5


def test_nan_landmarks_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        align(np.zeros((50, 50, 3), np.uint8), np.full((5, 2), np.nan))


def _whole_image_chip(image, m, n):
    """The chip as `alignment` made it before it filtered only the face's region: the whole image halved."""
    side, depth = n * float(min(np.hypot(*m[:, 0]), np.hypot(*m[:, 1]))) / 2.0, 0
    while side * side > n * n:
        side, depth = side / 2.0, depth + 1
    for _ in range(depth):
        image = cv2.pyrDown(image)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(image, m / 2**depth, (n, n), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def test_a_large_face_is_filtered_only_where_its_chip_reads_and_the_chip_is_the_same(monkeypatch):
    """A face much larger than its chip is halved first (Gaussian pyramid); only its region is, and the chip is
    the whole image's to the bit, at every depth, at the image's edges and past them, for odd sizes too."""
    frame = scene([(att_rgb(3, 1), 3.0, (200, 60))])
    sizes = []
    pyr_down = cv2.pyrDown
    monkeypatch.setattr(cv2, "pyrDown", lambda a: sizes.append(a.shape[:2]) or pyr_down(a))
    landmarks = np.array([[420, 230], [370, 232], [260, 230], [310, 232], [340, 330]], np.float64)
    align(frame, landmarks)  # a 180 px eye distance: the 150 px chip halves the region about the face once
    assert len(sizes) == 1 and sizes[0][0] * sizes[0][1] < 0.5 * frame.shape[0] * frame.shape[1]
    monkeypatch.setattr(cv2, "pyrDown", pyr_down)
    rng = np.random.default_rng(7)
    for image in (frame, frame[:-1, :-3]):
        h, w = image.shape[:2]
        for _ in range(150):
            n = int(rng.choice([112, 150, 160]))
            angle, zoom = rng.uniform(-np.pi, np.pi), rng.uniform(0.5, 9.0)
            c, s = zoom * np.cos(angle), zoom * np.sin(angle)
            m = np.array([[c, -s, rng.uniform(-300, w + 100)], [s, c, rng.uniform(-300, h + 100)]])
            assert np.array_equal(alignment._warp(image, m, n), _whole_image_chip(image, m, n))
