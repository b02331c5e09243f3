"""Colour cues without learned weights: does the face carry the colour of skin seen by a colour camera?

A colour camera sees skin whose saturation varies across the face (lips, cheeks, eyes, shading); a grey
photo or a grey camera's frame has none, and a grey photo given a colour cast (a tint, a coloured print,
a screen's white point) has a saturation that is the same everywhere. So on the inner face (the central
part of the box, where there is no background), the spread of the HSV saturation separates them:
`colour_spread` is its standard deviation over a 16 x 16 grid of cells (camera noise averaged out), those
neither too dark nor clipped.

`grey_frame` says whether a whole image carries no colour at all (a grey, IR or monochrome camera). Neither
has weights: the thresholds that use them (`siamface.liveness.combined`) were chosen on the shared data,
as the README says.
"""

from __future__ import annotations

import cv2
import numpy as np

INNER = 0.6  # the central share of the face box (each side) that is read
GRID = 16  # ... in this many cells a side
GREY_CHROMA = 3.0  # a frame whose pixels all lie this close (in 0-255) to grey is grey


def _inner(image: np.ndarray, box) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * INNER, (y2 - y1) * INNER
    rows, cols = image.shape[:2]
    left, top = int(max(0, cx - w / 2)), int(max(0, cy - h / 2))
    right, bottom = int(min(cols, cx + w / 2)), int(min(rows, cy + h / 2))
    return image[top:bottom, left:right]


def colour_spread(image: np.ndarray, box) -> float:
    """`colour_reading`, 0 where there is nothing to read."""
    reading = colour_reading(image, box)
    return 0.0 if reading is None else reading


def colour_reading(image: np.ndarray, box) -> float | None:
    """Standard deviation of the saturation (0-1) over the inner face, read at `GRID` x `GRID` (each cell
    the mean of its pixels: skin's colour varies at the scale of lips, cheeks and eyes, a camera's noise at
    the scale of a pixel, and would otherwise give a grey face colour), over the cells neither dark nor
    clipped; 0 for a grey image, None for a face too small or too dark to read (no verdict either way)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return 0.0
    patch = _inner(image, box)
    if min(patch.shape[:2]) < GRID:
        return None
    cells = cv2.resize(patch[..., :3], (GRID, GRID), interpolation=cv2.INTER_AREA).reshape(-1, 3).astype(np.float32)
    top, low = cells.max(axis=1), cells.min(axis=1)
    keep = (top >= 40) & (top <= 250)
    if keep.sum() < 16:
        return None
    saturation = (top[keep] - low[keep]) / top[keep]
    return float(saturation.std())


def face_colour(image: np.ndarray, box) -> np.ndarray | None:
    """The inner face's light: the log of its mean value per channel (None when there is nothing to read).
    Between two frames of a camera it changes little, a head turning or not; between two photos taken
    apart (another day, another lamp, another camera's white balance) it jumps."""
    patch = _inner(image, box)
    if patch.size == 0:
        return None
    if patch.ndim == 2:
        patch = patch[:, :, None]
    return np.log(patch.reshape(-1, patch.shape[2])[:, :3].mean(axis=0) + 8.0)


def grey_frame(image: np.ndarray, step: int = 4) -> bool:
    """Does the image carry no colour (every sampled pixel within `GREY_CHROMA` of grey, allowing for a
    compressed file's noise at the 99th percentile)?"""
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    sample = image[::step, ::step].reshape(-1, 3).astype(np.int16)
    chroma = sample.max(axis=1) - sample.min(axis=1)
    return bool(np.percentile(chroma, 99) <= GREY_CHROMA)


def to_grey(image: np.ndarray) -> np.ndarray:
    """The image as a grey camera would give it: luma replicated on three channels (uint8)."""
    if image.ndim == 2:
        grey = image
    else:
        grey = (image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round()
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)
