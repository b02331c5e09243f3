"""Passive liveness: is this face a live person or a presentation attack (printed photo, screen replay)?

One image, one face box, no motion. Features are colour texture (Boulkenafet et al., "Face anti-spoofing
based on color texture analysis", 2015): a print or a screen re-captured by a camera loses and distorts
fine texture and chroma differently from skin, which shows in local binary pattern (LBP) histograms of the
chroma channels more than of the luma. Here: uniform LBP(8,1) histograms of the HSV and YCbCr channels of
the face (box x1.2, 64x64), plus the radial energy spectrum of the luma (moire, blur) and chroma statistics
— 373 numbers, about 1 ms. Their square roots (Hellinger map) feed a logistic regression trained by the project
(`siamface.liveness.train`) on NUAA printed-photo and phone-replay data turns them into a probability of "live". Its weights ship inside
the package (``models/passive_v1.npz``, a few kB); no torch, no download.
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
DEFAULT_MODEL = MODEL_DIR / "passive_v1.npz"
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


def lbp_histogram(channel: np.ndarray) -> np.ndarray:
    """Normalised 59-bin uniform LBP(8,1) histogram of one uint8 channel."""
    c = channel.astype(np.int16)
    center = c[1:-1, 1:-1]
    h, w = center.shape
    code = np.zeros((h, w), np.int64)
    offsets = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
    for bit, (dy, dx) in enumerate(offsets):
        code |= (c[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] >= center).astype(np.int64) << bit
    hist = np.bincount(_uniform_lut()[code].ravel(), minlength=59).astype(np.float32)
    return hist / hist.sum()


def radial_spectrum(gray: np.ndarray) -> np.ndarray:
    """Share of spectral energy (log magnitude) in `RINGS` rings from low to high frequency."""
    f = np.fft.fftshift(np.fft.fft2(gray.astype(np.float32) - gray.mean()))
    mag = np.log1p(np.abs(f))
    h, w = gray.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h / 2, xx - w / 2) / (min(h, w) / 2)
    ring = np.minimum((r * RINGS).astype(np.int64), RINGS)
    energy = np.bincount(ring.ravel(), weights=mag.ravel(), minlength=RINGS + 1)[:RINGS]
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
    parts = [lbp_histogram(hsv[:, :, i]) for i in range(3)] + [lbp_histogram(ycc[:, :, i]) for i in range(3)]
    parts.append(radial_spectrum(ycc[:, :, 0]))
    luma = ycc[:, :, 0].astype(np.float32)
    chans = np.stack([hsv[:, :, 1], hsv[:, :, 2], ycc[:, :, 1], ycc[:, :, 2], ycc[:, :, 0]]).reshape(5, -1)
    chans = chans.astype(np.float32) / 255.0
    sharpness = np.abs(np.diff(luma, axis=1)).mean() / 32.0
    parts.append(np.concatenate([chans.mean(1), chans.std(1) * 4, [sharpness]]).astype(np.float32))
    return np.concatenate(parts).astype(np.float32)


def hellinger(x: np.ndarray) -> np.ndarray:
    """Square roots of the (non-negative) features: histograms compared by the Hellinger kernel, linearly."""
    return np.sqrt(np.abs(x))


@dataclass
class LivenessScore:
    """Probability that the face is live, the threshold, and the decision."""

    score: float
    threshold: float
    model: str

    @property
    def live(self) -> bool:
        return self.score >= self.threshold

    def to_dict(self) -> dict:
        return {"score": round(self.score, 4), "threshold": round(self.threshold, 4), "live": self.live,
                "model": self.model}


class PassiveLiveness:
    """The shipped (or a given) logistic model over `features`."""

    def __init__(self, path: str | Path = DEFAULT_MODEL, threshold: float | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"liveness model {path} is missing")
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
        return LivenessScore(float(self.probability(features(image, box))[0]), self.threshold, self.name)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
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
