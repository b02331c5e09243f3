"""The pretrained anti-spoofing CNN pair: MiniFASNetV2 (face box x2.7) and MiniFASNetV1SE (x4.0).

Silent-Face-Anti-Spoofing by Minivision (Apache-2.0), converted once to ONNX by ``tools/convert_silent_face.py``
and shipped in ``models/`` with its licence and a notice (``LICENSE-silent-face``, ``NOTICE-silent-face``). Run
with ONNX Runtime; no torch. Each network sees the face box enlarged by its scale around the box's centre
(shrunk only if it cannot fit in the image, shifted to stay inside rather than cut), resized to 80x80, BGR,
float 0..255, no normalisation; it answers 3 logits whose softmax at index 1 is "real face". The pair's
score is the mean of the two "real" probabilities, as upstream combines them.

Upstream does not say what data the weights were trained on: the project measures them on its own sets
(`benchmarks/liveness.py`) and uses them beside its own cues (`siamface.liveness.combined`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .._models import require
from .._onnx import new_session, providers
from ..errors import ModelError

MODEL_DIR = Path(__file__).parent / "models"
SIZE = 80
REAL = 1
#: shipped name -> crop scale (also in each graph's metadata)
NETWORKS = {"minifasnet_v2": 2.7, "minifasnet_v1se": 4.0}
LICENCE = "Apache-2.0"
SOURCE = "Silent-Face-Anti-Spoofing (Minivision), github.com/minivision-ai/Silent-Face-Anti-Spoofing"


def scaled_box(box, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The box (x1, y1, x2, y2) enlarged ``scale`` times around its centre — less if that cannot fit in a
    ``width`` x ``height`` image — then shifted to lie inside it: integer (left, top, right, bottom),
    right and bottom exclusive."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        raise ValueError(f"face box {box} is empty")
    scale = min(scale, (width - 1) / w, (height - 1) / h)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    nw, nh = w * scale, h * scale
    left, top, right, bottom = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > width - 1:
        left, right = left - (right - width + 1), width - 1.0
    if bottom > height - 1:
        top, bottom = top - (bottom - height + 1), height - 1.0
    return int(left), int(top), int(right) + 1, int(bottom) + 1


def crop(image: np.ndarray, box, scale: float) -> np.ndarray:
    """One network's input for one face of an RGB (or grey) image: 3 x 80 x 80 float32, BGR, 0..255."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    h, w = image.shape[:2]
    left, top, right, bottom = scaled_box(box, scale, w, h)
    patch = cv2.resize(image[top:bottom, left:right], (SIZE, SIZE))
    return np.ascontiguousarray(patch[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@dataclass
class CnnScore:
    """Each network's probability of "real face", and their mean (the pair's score)."""

    v2: float
    v1se: float

    @property
    def score(self) -> float:
        return (self.v2 + self.v1se) / 2

    def to_dict(self) -> dict:
        return {
            "score": round(self.score, 4),
            "minifasnet_v2": round(self.v2, 4),
            "minifasnet_v1se": round(self.v1se, 4),
        }


class AntiSpoofCnn:
    """The two shipped networks, loaded once per process (thread-safe: ONNX Runtime sessions are)."""

    _lock = threading.Lock()
    _sessions: dict[str, object] = {}

    def __init__(self, model_dir: str | Path = MODEL_DIR, threads: int = 1) -> None:
        require("onnxruntime", "pip install onnxruntime")
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.sessions = {name: self._session(name) for name in NETWORKS}

    def _session(self, name: str):
        path = self.model_dir / f"{name}.onnx"
        key = f"{path}:{self.threads}:{','.join(providers())}"
        with self._lock:
            if key not in self._sessions:
                if not path.is_file():
                    raise ModelError(
                        f"anti-spoofing model {path} is missing (reinstall siamface, or run "
                        f"tools/convert_silent_face.py)"
                    )
                try:
                    self._sessions[key] = new_session(path, self.threads)
                except Exception as exc:  # a damaged file: one line, not a traceback
                    raise ModelError(f"anti-spoofing model {path} could not be loaded: {exc}") from None
            return self._sessions[key]

    def probabilities(self, image: np.ndarray, boxes) -> np.ndarray:
        """(n, 2): each box's probability of "real face" from V2 and from V1SE."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        out = np.zeros((len(boxes), len(NETWORKS)), np.float64)
        if not len(boxes):
            return out
        for j, (name, scale) in enumerate(NETWORKS.items()):
            batch = np.stack([crop(image, b, scale) for b in boxes])
            out[:, j] = softmax(self.sessions[name].run(None, {"input": batch})[0])[:, REAL]
        return out

    def score(self, image: np.ndarray, box) -> CnnScore:
        v2, v1se = self.probabilities(image, [box])[0]
        return CnnScore(float(v2), float(v1se))
