"""Active liveness: a random challenge answered in front of the camera, and a parallax test.

Both read the detector's five keypoints (eye centres, nose tip, mouth corners: `retinaface`, `mtcnn`).

* **Challenge**: a random sequence (default two) of "turn your head left", "turn your head right", "come
  closer". A turn is measured as the nose's horizontal offset from the eyes' midpoint over the eye distance
  (`yaw_ratio`: about 0 facing the camera, ±0.2-0.4 turned); the person must face the camera first, then
  turn past `turn`. Left and right are the user's own (as in a mirrored preview): turning to one's left
  moves the nose towards the right of the raw camera image. "Closer": the face box grows by `closer` x.
  A pre-recorded video cannot know the random order; a photo cannot turn.
* **Parallax**: eyes and mouth corners lie nearly on one plane, the nose tip sticks out of it. For every
  frame, the homography that maps a frontal reference frame's four planar points onto this frame's predicts
  where the nose would be if the face were flat; a real head that turns puts the nose measurably off that
  prediction (`parallax`, in eye distances), a photo tilted, bent or waved in front of the camera does not.

`ActiveCheck.update(keypoints, box, t)` is fed the largest face of each frame; it passes when every
challenge was met in order and the largest parallax seen reaches `parallax_min`, fails at `timeout`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import ConfigError

CHALLENGES = ("turn_left", "turn_right", "closer")
PROMPTS = {
    "turn_left": "turn your head to your left",
    "turn_right": "turn your head to your right",
    "closer": "come closer to the camera",
    "frontal": "look straight at the camera",
}


def yaw_ratio(keypoints: np.ndarray) -> float:
    """Nose offset from the eyes' midpoint, in eye distances, positive towards the image's right."""
    k = np.asarray(keypoints, np.float64)
    left_eye, right_eye, nose = k[0], k[1], k[2]
    iod = np.linalg.norm(right_eye - left_eye)
    return float((nose[0] - (left_eye[0] + right_eye[0]) / 2) / max(iod, 1e-6))


def parallax(reference: np.ndarray, keypoints: np.ndarray) -> float:
    """How far (in eye distances) the nose is from where a flat face's homography puts it."""
    ref = np.asarray(reference, np.float32)
    cur = np.asarray(keypoints, np.float32)
    planar = [0, 1, 3, 4]  # eyes and mouth corners
    h = cv2.getPerspectiveTransform(ref[planar], cur[planar])
    predicted = cv2.perspectiveTransform(ref[None, 2:3], h)[0, 0]
    iod = np.linalg.norm(cur[1] - cur[0])
    return float(np.linalg.norm(predicted - cur[2]) / max(iod, 1e-6))


@dataclass
class ActiveResult:
    passed: bool
    reason: str
    challenges: list[str]
    completed: int
    parallax: float
    seconds: float

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "challenges": self.challenges,
            "completed": self.completed,
            "parallax": round(self.parallax, 4),
            "seconds": round(self.seconds, 2),
        }


@dataclass
class ActiveCheck:
    """A challenge session; see the module docstring. `challenges=None` draws `count` at random."""

    challenges: Sequence[str] | None = None
    count: int = 2
    timeout: float = 10.0
    turn: float = 0.18
    frontal: float = 0.10
    closer: float = 1.25
    parallax_min: float = 0.10
    _state: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.challenges is None:  # at least one turn: it is what shows parallax
            first = ("turn_left", "turn_right")[secrets.randbelow(2)]
            pool = [c for c in CHALLENGES if c != first]
            drawn = [first] + [pool.pop(secrets.randbelow(len(pool))) for _ in range(min(self.count, 3) - 1)]
            for i in range(len(drawn) - 1, 0, -1):
                j = secrets.randbelow(i + 1)
                drawn[i], drawn[j] = drawn[j], drawn[i]
            self.challenges = drawn
        self.challenges = list(self.challenges)
        unknown = [c for c in self.challenges if c not in CHALLENGES]
        if unknown or not self.challenges:
            raise ConfigError(f"unknown or no challenges {unknown}; choose from {', '.join(CHALLENGES)}")
        self._state = {
            "step": 0,
            "faced": False,
            "start_width": None,
            "t0": None,
            "reference": None,
            "reference_yaw": None,
            "parallax": 0.0,
            "result": None,
            "t": 0.0,
        }

    @property
    def prompt(self) -> str:
        """What to ask the user now."""
        s = self._state
        if s["result"] is not None:
            return ""
        if not s["faced"]:
            return PROMPTS["frontal"]
        return PROMPTS[self.challenges[s["step"]]]

    @property
    def result(self) -> ActiveResult | None:
        return self._state["result"]

    @property
    def progress(self) -> tuple[int, float]:
        """Challenges met so far and the largest parallax seen (while undecided too)."""
        return self._state["step"], self._state["parallax"]

    def _finish(self, passed: bool, reason: str) -> ActiveResult:
        s = self._state
        s["result"] = ActiveResult(
            passed,
            reason,
            list(self.challenges),
            s["step"],
            s["parallax"],
            s["t"] - (s["t0"] if s["t0"] is not None else s["t"]),
        )
        return s["result"]

    def update(self, keypoints: np.ndarray | None, box, t: float) -> ActiveResult | None:
        """Feed the largest face of a frame (keypoints None: no face); returns the result once decided."""
        s = self._state
        if s["result"] is not None:
            return s["result"]
        if s["t0"] is None:
            s["t0"] = t
        s["t"] = t
        if t - s["t0"] > self.timeout:
            return self._finish(False, f"timeout after {self.timeout:g} s at '{self.prompt}'")
        if keypoints is None:
            return None
        keypoints = np.asarray(keypoints, np.float64)
        width = float(box[2] - box[0])
        yaw = yaw_ratio(keypoints)
        if s["reference"] is None or abs(yaw) < abs(s["reference_yaw"]):
            if abs(yaw) < self.frontal:
                s["reference"], s["reference_yaw"] = keypoints, yaw
        if s["reference"] is not None:
            s["parallax"] = max(s["parallax"], parallax(s["reference"], keypoints))
        if not s["faced"]:
            if abs(yaw) < self.frontal:
                s["faced"], s["start_width"] = True, width
            return None
        challenge = self.challenges[s["step"]]
        met = (
            (challenge == "turn_left" and yaw > self.turn)
            or (challenge == "turn_right" and yaw < -self.turn)
            or (challenge == "closer" and width >= self.closer * s["start_width"])
        )
        if met:
            s["step"] += 1
            s["faced"] = False  # back to the camera before the next one
            if s["step"] == len(self.challenges):
                if s["parallax"] >= self.parallax_min:
                    return self._finish(True, "challenges met with a 3-D face")
                return self._finish(
                    False,
                    f"challenges met but the face moved like a flat picture "
                    f"(parallax {s['parallax']:.3f} < {self.parallax_min})",
                )
        return None
