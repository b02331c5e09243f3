"""Alignment: landmarks (or a detector box) -> the canonical face chip an encoder was trained on.

One pure function, `align`, warps an image so that the 5 landmarks land on a template with a similarity
transform (rotation, uniform scale, translation) fitted by least squares. `DLIB_CHIP` reproduces the
geometry of dlib's ``get_face_chip(img, shape, size=150, padding=0.25)``: dlib's 5-point template, fitted
from the template to the landmarks, exactly as dlib does, then sampled bilinearly.

Some encoders were trained on unrotated detector crops instead (FaceNet: the MTCNN box enlarged by a
margin, resized to 160x160). A `ChipSpec` with ``crop="box"`` says so. Others were trained on chips warped
from the detector's own five keypoints (eye centres, nose tip, mouth corners) onto a template (SFace: the
ArcFace 112x112 template): ``crop="keypoints"``, with, for a face whose detector gives no keypoints, where
dlib's five landmarks land in that chip (`ChipSpec.landmark_template`). `crop_all` makes the chips of any
kind from a `Faces`' boxes, landmarks and keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: dlib's 5-point template on the unit square (dlib/image_transforms/interpolation.h,
#: get_face_chip_details), in the order of `siamface.types.LANDMARK_NAMES`.
DLIB_TEMPLATE5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


@dataclass(frozen=True)
class ChipSpec:
    """Where the landmarks go in an encoder's input: template on the unit square, padding, chip size."""

    size: int = 150
    padding: float = 0.25
    template: tuple[tuple[float, float], ...] = tuple(map(tuple, DLIB_TEMPLATE5))
    #: "landmarks": the similarity warp above; "box": the detector box, made square about its centre
    #: (side = its larger side), enlarged by `margin` (a fraction of that side, on each side), resized;
    #: with ``square=False`` the box keeps its own shape and is stretched to the square chip; "keypoints":
    #: the least-squares similarity from the detector's five keypoints onto `template` (a plain warp, as
    #: OpenCV's and InsightFace's alignment do), or, for a face without keypoints, from dlib's five
    #: landmarks onto `landmark_template`.
    crop: str = "landmarks"
    margin: float = 0.0
    square: bool = True
    landmark_template: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.crop not in ("landmarks", "box", "keypoints"):
            raise ValueError(f"ChipSpec.crop must be 'landmarks', 'box' or 'keypoints', not {self.crop!r}")

    def target_points(self) -> np.ndarray:
        t = np.asarray(self.template, np.float64)
        return (t + self.padding) / (1 + 2 * self.padding) * self.size


DLIB_CHIP = ChipSpec()


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix M of the least-squares similarity mapping src points onto dst points (Umeyama, no
    reflection): dst ~= M @ [x, y, 1]."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise ValueError("similarity_transform needs at least two matching point pairs")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 0:
        raise ValueError("similarity_transform: source points are all identical")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def chip_transform(landmarks: np.ndarray, spec: ChipSpec = DLIB_CHIP) -> np.ndarray:
    """2x3 matrix mapping chip pixel coordinates to image coordinates, as dlib's chip extraction does.

    dlib fits the similarity from the template to the landmarks, keeps its angle and scale, centres a
    rectangle of ``size * scale`` on the image of the chip centre, and maps the chip's first and last
    pixels onto that rectangle's corners; reproducing that gives chips equal to dlib's to within
    interpolation rounding.
    """
    landmarks = np.asarray(landmarks, np.float64).reshape(-1, 2)
    if not np.isfinite(landmarks).all():
        raise ValueError("align: landmarks contain NaN; run the landmark stage first")
    n = spec.size
    fit = similarity_transform(spec.target_points(), landmarks)
    scale = float(np.hypot(*fit[:, 0]))
    rotation = fit[:, :2] / scale
    effective = (n * scale - 1.0) / (n - 1.0)
    centre = fit @ np.array([n / 2.0, n / 2.0, 1.0])
    m = np.zeros((2, 3))
    m[:, :2] = rotation * effective
    m[:, 2] = centre - m[:, :2] @ np.array([(n - 1) / 2.0, (n - 1) / 2.0])
    return m


def align(image: np.ndarray, landmarks: np.ndarray, spec: ChipSpec = DLIB_CHIP) -> np.ndarray:
    """The aligned (size, size, 3) chip of one face from its (5, 2) landmarks.

    Pixels outside the image are black, as in dlib. When the face is more than twice the chip's size, the
    image is first halved with a Gaussian pyramid (as dlib does) so that the chip is not aliased.
    """
    return _warp(image, chip_transform(landmarks, spec), spec.size)


def box_transform(box, spec: ChipSpec) -> np.ndarray:
    """2x3 matrix mapping chip pixel coordinates to image coordinates for a ``crop="box"`` chip: the square
    of side ``max(w, h) * (1 + 2 * margin)`` centred on the box, pixel centres onto pixel centres."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not np.isfinite([x1, y1, x2, y2]).all() or x2 <= x1 or y2 <= y1:
        raise ValueError(f"crop: bad face box {box}")
    w, h = x2 - x1, y2 - y1
    if spec.square:
        w = h = max(w, h)
    w, h = w * (1 + 2 * spec.margin), h * (1 + 2 * spec.margin)
    sx, sy = w / spec.size, h / spec.size
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return np.array([[sx, 0.0, cx - w / 2.0 + 0.5 * sx - 0.5], [0.0, sy, cy - h / 2.0 + 0.5 * sy - 0.5]])


def _warp(image: np.ndarray, m: np.ndarray, n: int) -> np.ndarray:
    side = n * float(min(np.hypot(*m[:, 0]), np.hypot(*m[:, 1]))) / 2.0
    depth = 0
    while side * side > n * n:
        side /= 2.0
        depth += 1
    work = image
    if depth:
        work, m = _pyramid_region(image, m / (2**depth), n, depth)
    return cv2.warpAffine(
        work,
        m,
        (n, n),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def _pyramid_region(image: np.ndarray, m: np.ndarray, n: int, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The image halved `depth` times (``cv2.pyrDown``) where an n x n chip reads it, and the chip's matrix `m`
    (chip -> that level, whole image) moved onto it.

    Only the region the chip's bilinear samples read is filtered, with the pyramid's reach around it (a
    level-d pixel depends on the base pixels within ``2**(d+1) - 2`` of its own): the pixels read are the
    same as those of the whole image's pyramid. Where the region meets the image's edge it ends at that edge,
    so the edge's reflection and the black outside are the whole image's too. A face that fills a 640x480
    frame costs a tenth of the frame's filtering."""
    step = 2**depth
    reach = 2 * step - 2
    corners = m @ np.array([[0, n - 1, 0, n - 1], [0, 0, n - 1, n - 1], [1, 1, 1, 1]], np.float64)
    lo = np.floor(corners.min(axis=1)) - 2  # level-d pixels read, (x, y): bilinear reads the next one too
    hi = np.ceil(corners.max(axis=1)) + 3
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(v) * step - reach) // step * step for v in lo)
    x1, y1 = min(w, int(hi[0]) * step + reach), min(h, int(hi[1]) * step + reach)
    if x1 - x0 < step or y1 - y0 < step:  # the chip lies outside the image: filter the whole of it
        x0 = y0 = 0
        x1, y1 = w, h
    work = image[y0:y1, x0:x1]
    for _ in range(depth):
        work = cv2.pyrDown(work)
    moved = m.copy()
    moved[:, 2] -= (x0 // step, y0 // step)
    return work, moved


def align_all(image: np.ndarray, landmarks: np.ndarray, spec: ChipSpec = DLIB_CHIP) -> np.ndarray:
    """(n, size, size, 3) chips for (n, 5, 2) landmarks."""
    landmarks = np.asarray(landmarks).reshape(-1, 5, 2)
    if len(landmarks) == 0:
        return np.zeros((0, spec.size, spec.size, 3), np.uint8)
    return np.stack([align(image, lm, spec) for lm in landmarks])


def keypoint_transform(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """2x3 matrix mapping chip pixel coordinates to image coordinates, for the plain similarity warp that
    takes the image `points` onto the chip's `template` points (pixels)."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if not np.isfinite(points).all():
        raise ValueError("align: keypoints contain NaN")
    return cv2.invertAffineTransform(similarity_transform(points, template))


def align_keypoints(
    image: np.ndarray, landmarks: np.ndarray, keypoints: np.ndarray | None, spec: ChipSpec
) -> np.ndarray:
    """(n, size, size, 3) chips of a ``crop="keypoints"`` spec: a face with finite `keypoints` (n, 5, 2) is
    warped from them onto ``spec.template``; one without, from its dlib `landmarks` onto
    ``spec.landmark_template`` (ValueError when the spec has none)."""
    landmarks = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    n = len(landmarks)
    out = np.zeros((n, spec.size, spec.size, 3), np.uint8)
    keypoints = None if keypoints is None else np.asarray(keypoints, np.float64).reshape(-1, 5, 2)
    for i in range(n):
        if keypoints is not None and np.isfinite(keypoints[i]).all():
            m = keypoint_transform(keypoints[i], np.asarray(spec.template, np.float64) * spec.size)
        elif spec.landmark_template is not None:
            m = keypoint_transform(landmarks[i], np.asarray(spec.landmark_template, np.float64) * spec.size)
        else:
            raise ValueError("align: this chip needs the detector's five keypoints")
        out[i] = _warp(image, m, spec.size)
    return out


def crop_all(
    image: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    spec: ChipSpec = DLIB_CHIP,
    keypoints: np.ndarray | None = None,
) -> np.ndarray:
    """(n, size, size, 3) chips of n faces, the kind `spec` asks for (landmark warp, box crop, or keypoint
    warp: `keypoints` (n, 5, 2), the detector's own, NaN or None where it gives none)."""
    if spec.crop == "landmarks":
        return align_all(image, landmarks, spec)
    if spec.crop == "keypoints":
        return align_keypoints(image, landmarks, keypoints, spec)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, spec.size, spec.size, 3), np.uint8)
    return np.stack([_warp(image, box_transform(b, spec), spec.size) for b in boxes])
