"""Passive liveness: is this face a live person or a presentation attack (printed photo, screen replay)?

One image, one face box, no motion. Two cues:

* **Texture** (Boulkenafet et al., "Face anti-spoofing based on color texture analysis", 2015): a print or a
  screen re-captured by a camera loses and distorts fine texture and chroma differently from skin, which
  shows in local binary pattern (LBP) histograms of the chroma channels more than of the luma. Here: uniform
  LBP(8,1) histograms of the HSV and YCbCr channels of the face (box x1.2, 64x64), plus the radial energy
  spectrum of the luma (moire, blur) and chroma statistics — 373 numbers, about 1 ms. Their square roots
  (Hellinger map) feed a logistic regression trained by the project (`siamface.liveness.train`) on NUAA
  printed photos, phone-replay crops, and bona fide faces from other cameras (so that "live" does not mean
  "looks like the attack datasets' webcam"). No weights ship: the package may not carry a model fitted on
  those sets (their terms: `siamface.provenance`); a user who holds data they may train on fits their own
  (``python -m siamface.liveness.train``, a few kB file) and names it in a combiner file (`combined`).
* **Frame** (`frame_sides`): the straight border of a photo or a phone screen around the face, found in
  the image around the box (edges, Hough segments; about 2 ms). No training: geometry, so it does not
  depend on the camera. ``passive_v2`` alone (`LivenessScore.live`) calls a face framed on three sides not
  live whatever its texture; the passive check (`siamface.liveness.combined`) uses the count of framed sides
  as one input among others instead, because door frames, shelves and collars frame live faces too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelError

MODEL_DIR = Path(__file__).parent / "models"
#: where `python -m siamface.liveness.train` writes the texture model by default (not in the package)
DEFAULT_MODEL = Path("out") / "liveness" / "passive_v2.npz"
CROP = 64
FACE_SCALE = 1.2
RINGS = 8


@lru_cache(maxsize=1)
def _uniform_lut() -> np.ndarray:
    """LBP code (0-255) -> bin (0-58): the 58 uniform patterns (<= 2 transitions) and one bin for the rest."""
    lut = np.full(256, 58, np.int64)
    index = 0
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        if sum(bits[i] != bits[(i + 1) % 8] for i in range(8)) <= 2:
            lut[code] = index
            index += 1
    return lut


def lbp_histograms(channels: np.ndarray) -> np.ndarray:
    """Normalised 59-bin uniform LBP(8,1) histograms of a stack of uint8 channels (k, h, w) -> (k, 59)."""
    c = np.asarray(channels)
    center = c[:, 1:-1, 1:-1]
    k, h, w = center.shape
    code = np.zeros((k, h, w), np.uint8)
    offsets = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
    for bit, (dy, dx) in enumerate(offsets):
        code |= (c[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] >= center).view(np.uint8) << np.uint8(bit)
    bins = _uniform_lut()[code] + 59 * np.arange(k)[:, None, None]  # one bincount for every channel
    hist = np.bincount(bins.ravel(), minlength=59 * k).reshape(k, 59).astype(np.float32)
    return hist / hist.sum(axis=1, keepdims=True)


def lbp_histogram(channel: np.ndarray) -> np.ndarray:
    """Normalised 59-bin uniform LBP(8,1) histogram of one uint8 channel."""
    return lbp_histograms(np.asarray(channel)[None])[0]


@lru_cache(maxsize=4)
def _rings(h: int, w: int) -> np.ndarray:
    """Ring index (0..`RINGS`) of every frequency of an h x w centred spectrum."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h / 2, xx - w / 2) / (min(h, w) / 2)
    return np.minimum((r * RINGS).astype(np.int64), RINGS).ravel()


def radial_spectrum(gray: np.ndarray) -> np.ndarray:
    """Share of spectral energy (log magnitude) in `RINGS` rings from low to high frequency."""
    f = np.fft.fftshift(np.fft.fft2(gray.astype(np.float32) - gray.mean()))
    mag = np.log1p(np.abs(f))
    energy = np.bincount(_rings(*gray.shape), weights=mag.ravel(), minlength=RINGS + 1)[:RINGS]
    return (energy / max(energy.sum(), 1e-9)).astype(np.float32)


def face_crop(image: np.ndarray, box, scale: float = FACE_SCALE, size: int = CROP) -> np.ndarray:
    """The square around the box (side = scale x the box's longer side), clipped to the image, resized."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * scale
    h, w = image.shape[:2]
    l, t = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    r, b = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    if r - l < 8 or b - t < 8:
        raise ValueError(f"face box {box} is too small or outside the image")
    return cv2.resize(image[t:b, l:r], (size, size), interpolation=cv2.INTER_AREA)


def features(image: np.ndarray, box) -> np.ndarray:
    """The feature vector of one face: 6 x 59 LBP bins, 8 spectrum rings, 11 colour and sharpness figures."""
    crop = face_crop(image, box)
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV)
    ycc = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb)
    parts = list(lbp_histograms(np.concatenate([hsv, ycc], axis=2).transpose(2, 0, 1)))
    parts.append(radial_spectrum(ycc[:, :, 0]))
    luma = ycc[:, :, 0].astype(np.float32)
    chans = np.stack([hsv[:, :, 1], hsv[:, :, 2], ycc[:, :, 1], ycc[:, :, 2], ycc[:, :, 0]]).reshape(5, -1)
    chans = chans.astype(np.float32) / 255.0
    sharpness = np.abs(np.diff(luma, axis=1)).mean() / 32.0
    parts.append(np.concatenate([chans.mean(1), chans.std(1) * 4, [sharpness]]).astype(np.float32))
    return np.concatenate(parts).astype(np.float32)


FRAME_REACH = 1.0  # a frame edge is looked for up to this many face sizes from the face box
FRAME_FACE = 80  # the face box is rescaled to this height (px) first: the same test at every distance
SIDES = ("left", "right", "top", "bottom")


def frame_sides(image: np.ndarray, box, reach: float = FRAME_REACH) -> tuple[str, ...]:
    """The sides of the face that have a long straight edge beside them, within ``reach`` face sizes.

    A printed photo's border and a phone's screen or bezel put straight edges around the face; a live face's
    own outline (hair, jaw, shoulders) is curved, and a door or window behind a person rarely lines up on
    both sides of it. An edge counts for "left"/"right" when it is near vertical, at least 0.7 face heights
    long and level with the face; for "top"/"bottom" when near horizontal and spanning the face's centre.
    Where the face fills the image (a tight crop) there is no room for a frame, and none is reported.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if w < 8 or h < 8:
        return ()
    rows, cols = image.shape[:2]
    left, top = max(0, int(x1 - reach * w)), max(0, int(y1 - reach * h))
    right, bottom = min(cols, int(np.ceil(x2 + reach * w))), min(rows, int(np.ceil(y2 + reach * h)))
    s = FRAME_FACE / h
    roi = image[top:bottom, left:right]
    gray = cv2.cvtColor(roi, cv2.COLOR_RGB2GRAY) if roi.ndim == 3 else roi
    gray = cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    edges = cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 40, 100)
    lines = cv2.HoughLinesP(
        edges,
        1,
        np.pi / 180,
        threshold=int(0.4 * FRAME_FACE),
        minLineLength=int(0.7 * FRAME_FACE),
        maxLineGap=int(0.08 * FRAME_FACE) + 2,
    )
    if lines is None:
        return ()
    # the face box in the rescaled region
    fx1, fy1, fx2, fy2 = (x1 - left) * s, (y1 - top) * s, (x2 - left) * s, (y2 - top) * s
    fw, fh = fx2 - fx1, fy2 - fy1
    cx, cy = (fx1 + fx2) / 2, (fy1 + fy2) / 2
    found = set()
    for xa, ya, xb, yb in lines[:, 0].astype(np.float64):
        angle = abs(np.degrees(np.arctan2(yb - ya, xb - xa))) % 180
        if abs(angle - 90) < 15:  # near vertical
            x, lo, hi = (xa + xb) / 2, min(ya, yb), max(ya, yb)
            if lo <= cy <= hi or hi - lo > fh:
                if fx1 - reach * fw <= x < fx1 - 0.05 * fw:
                    found.add("left")
                elif fx2 + 0.05 * fw < x <= fx2 + reach * fw:
                    found.add("right")
        elif angle < 15 or angle > 165:  # near horizontal
            y, lo, hi = (ya + yb) / 2, min(xa, xb), max(xa, xb)
            if lo <= cx <= hi:
                if fy1 - reach * fh <= y < fy1 - 0.05 * fh:
                    found.add("top")
                elif fy2 + 0.05 * fh < y <= fy2 + reach * fh:
                    found.add("bottom")
    return tuple(side for side in SIDES if side in found)


def is_framed(sides) -> bool:
    """A face inside a frame: straight edges on three (or four) of its sides (hair can line both cheeks)."""
    sides = set(sides)
    return len(sides) >= 3


def hellinger(x: np.ndarray) -> np.ndarray:
    """Square roots of the (non-negative) features: histograms compared by the Hellinger kernel, linearly."""
    return np.sqrt(np.abs(x))


@dataclass
class LivenessScore:
    """The texture model's probability that the face is live, its threshold, the straight edges found around
    the face (`frame_sides`), and the decision: live when the texture passes and no frame encloses the face."""

    score: float
    threshold: float
    model: str
    frame: tuple[str, ...] = ()

    @property
    def framed(self) -> bool:
        return is_framed(self.frame)

    @property
    def live(self) -> bool:
        return self.score >= self.threshold and not self.framed

    @property
    def decision_score(self) -> float:
        """The texture score, or 0 for a framed face: one number whose threshold gives `live`."""
        return 0.0 if self.framed else self.score

    def to_dict(self) -> dict:
        return {
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "live": self.live,
            "frame": list(self.frame),
            "framed": self.framed,
            "model": self.model,
        }


class PassiveLiveness:
    """A texture model file (`python -m siamface.liveness.train`): a logistic model over `features`."""

    def __init__(self, path: str | Path, threshold: float | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(
                f"texture liveness model {path} is missing (the package ships none: train one with "
                f"python -m siamface.liveness.train)"
            )
        with np.load(path, allow_pickle=False) as data:
            self.mean, self.scale = data["mean"], data["scale"]
            self.weights, self.bias = data["weights"], float(data["bias"])
            self.meta = json.loads(str(data["meta"]))
        self.threshold = float(threshold) if threshold is not None else float(self.meta["threshold"])
        self.name = self.meta.get("name", path.stem)

    def probability(self, feats: np.ndarray) -> np.ndarray:
        z = ((hellinger(np.atleast_2d(feats)) - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

    def score(self, image: np.ndarray, box) -> LivenessScore:
        return LivenessScore(
            float(self.probability(features(image, box))[0]), self.threshold, self.name, frame_sides(image, box)
        )


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50, weights: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method (IRLS) on standardised features."""
    n, d = x.shape
    sample_w = np.ones(n) if weights is None else weights
    xb = np.hstack([x, np.ones((n, 1))])
    beta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ beta, -30, 30)))
        grad = xb.T @ (sample_w * (p - y)) + reg * beta
        hess = (xb * (sample_w * p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-6:
            break
    return beta[:-1], float(beta[-1])
