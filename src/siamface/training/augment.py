"""Augmentation of training inputs (NumPy + OpenCV), reproducible from a seeded generator.

    aug = Augment()                               # defaults below; Augment.none() switches all off
    batch = aug(images, np.random.default_rng(7))  # (n, h, w, 3) uint8 -> (n, h, w, 3) uint8

Only training batches go through it; validation, test and export use `embedding.onnx_file.preprocess`
on the plain chips. Geometry (flip, rotation, scale and shift: one affine warp, reflected borders), then
photometry (contrast around the image mean, brightness), then an occasional Gaussian blur.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Augment:
    flip: float = 0.5  # probability of a horizontal flip
    rotate: float = 10.0  # max |rotation| in degrees
    scale: float = 0.1  # scale drawn in [1 - scale, 1 + scale]
    shift: float = 0.05  # max |shift| as a fraction of the side
    contrast: float = 0.2  # contrast factor in [1 - c, 1 + c]
    brightness: float = 20.0  # added to pixels, in [-b, b]
    blur: float = 0.2  # probability of a Gaussian blur (sigma 0.5-1.2 px)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            fine = isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
            if name in ("flip", "blur"):  # probabilities
                fine, bound = fine and value <= 1, "from 0 to 1"
            elif name in ("scale", "contrast"):  # factors drawn in [1 - v, 1 + v]: at 1 or more, 0 or below
                fine, bound = fine and value < 1, "at least 0 and below 1"
            else:
                bound = "a finite number >= 0"
            if not fine:
                raise ConfigError(f"--augment: {name} must be {bound}, not {value!r}")

    @classmethod
    def none(cls) -> Augment:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    @classmethod
    def parse(cls, text: str | None) -> Augment:
        """``"default"``, ``"none"``, or ``key=value`` pairs over the defaults: ``"rotate=5,blur=0"``."""
        if text is None or text.strip() in ("", "default"):
            return cls()
        if text.strip() == "none":
            return cls.none()
        known = {f.name for f in fields(cls)}
        values = {}
        for item in text.split(","):
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in known or not value:
                raise ConfigError(f"--augment: {item!r} is not KEY=VALUE with KEY one of {', '.join(sorted(known))}")
            try:
                values[key] = float(value)
            except ValueError:
                raise ConfigError(f"--augment: {key} needs a number, got {value!r}") from None
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def active(self) -> bool:
        return any(v > 0 for v in asdict(self).values())

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        images = np.asarray(images)
        if not self.active:
            return images.copy()
        return np.stack([self.one(img, rng) for img in images])

    def one(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        # Draw every random number, used or not, so one setting never shifts the others' draws.
        u = rng.random(9)
        out = image
        flip = u[0] < self.flip
        angle = (2 * u[1] - 1) * self.rotate
        scale = 1 + (2 * u[2] - 1) * self.scale
        dx, dy = (2 * u[3] - 1) * self.shift * w, (2 * u[4] - 1) * self.shift * h
        if flip or angle or scale != 1 or dx or dy:
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
            m[:, 2] += (dx, dy)
            if flip:  # x -> w - 1 - x after the warp
                m = np.array([[-1, 0, w - 1], [0, 1, 0]], np.float64) @ np.vstack([m, [0, 0, 1]])
            out = cv2.warpAffine(out, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if self.contrast or self.brightness:
            f = out.astype(np.float32)
            c = 1 + (2 * u[5] - 1) * self.contrast
            f = (f - f.mean()) * c + f.mean() + (2 * u[6] - 1) * self.brightness
            out = np.clip(f, 0, 255).astype(np.uint8)
        if u[7] < self.blur:
            out = cv2.GaussianBlur(out, (0, 0), 0.5 + 0.7 * u[8])
        return np.ascontiguousarray(out)
