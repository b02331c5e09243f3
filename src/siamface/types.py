"""The records that flow between stages: `Faces` (what a detector returns), `Decision` (the answer to "is it
them?", made by `siamface.decision`) and `Verification` (a pair's).

`Faces` is a small columnar container in the manner of parallel arrays: n boxes, n scores, n landmark sets,
and, as later stages fill them, n aligned chips and n embeddings. It is never `None`: an image with no
face gives an empty `Faces`. Index it with an int (one face, still a `Faces` of length 1), a slice or a
boolean mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

from .errors import ConfigError

#: Landmark layout used everywhere in siamface: dlib's 5-point shape, in image coordinates.
#: 0/1 = outer/inner corner of the eye on the image's right, 2/3 = outer/inner corner of the eye on the
#: image's left, 4 = base of the nose. The dlib encoder was trained on chips aligned on these points.
LANDMARK_NAMES = ("right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner", "nose_base")


def _check_shape(name: str, value: np.ndarray, expected: tuple[int | None, ...]) -> None:
    ok = value.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, value.shape))
    if not ok:
        want = "(" + ", ".join("n" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"Faces.{name}: expected shape {want}, got {value.shape}")


#: How one face of several is chosen (`Faces.chosen`).
FACE_CHOICES = ("largest", "centre")


def check_face_choice(how: str) -> str:
    """`how` when it is one of `FACE_CHOICES`, else `ConfigError` (a `ValueError`): raised before any work."""
    if how not in FACE_CHOICES:
        raise ConfigError(f"face choice must be 'largest' or 'centre', not {how!r}")
    return how


@dataclass
class Faces:
    """n detected faces in one image, biggest first once `sorted_by_size()` has run.

    boxes: (n, 4) float32 x1, y1, x2, y2 in pixels. scores: (n,) float32 detector confidence (the scale
    differs by detector). landmarks: (n, 5, 2) float32, see `LANDMARK_NAMES`, NaN where not yet computed.
    chips: (n, s, s, 3) uint8 aligned crops, or None. embeddings: (n, d) float32, L2-normalised, or None.
    detector: the detector's name. data: extra per-face columns (arrays of length n).
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    landmarks: np.ndarray | None = None
    chips: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    detector: str = ""
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        _check_shape("scores", self.scores, (n,))
        if self.landmarks is None:
            self.landmarks = np.full((n, 5, 2), np.nan, np.float32)
        self.landmarks = np.asarray(self.landmarks, np.float32)
        _check_shape("landmarks", self.landmarks, (n, 5, 2))
        if self.chips is not None:
            _check_shape("chips", self.chips, (n, None, None, 3))
        if self.embeddings is not None:
            self.embeddings = np.asarray(self.embeddings, np.float32)
            _check_shape("embeddings", self.embeddings, (n, None))
        for key, column in self.data.items():
            if len(column) != n:
                raise ValueError(f"Faces.data[{key!r}]: expected length {n}, got {len(column)}")

    def __len__(self) -> int:
        return len(self.boxes)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int | slice | np.ndarray | list) -> Faces:
        if isinstance(index, (int, np.integer)):
            if not -len(self) <= index < len(self):
                raise IndexError(f"face index {index} out of range for {len(self)} faces")
            index = [int(index)]
        return Faces(
            boxes=self.boxes[index],
            scores=self.scores[index],
            landmarks=self.landmarks[index],
            chips=None if self.chips is None else self.chips[index],
            embeddings=None if self.embeddings is None else self.embeddings[index],
            detector=self.detector,
            data={k: np.asarray(v)[index] for k, v in self.data.items()},
        )

    @property
    def areas(self) -> np.ndarray:
        w = np.clip(self.boxes[:, 2] - self.boxes[:, 0], 0, None)
        h = np.clip(self.boxes[:, 3] - self.boxes[:, 1], 0, None)
        return w * h

    @property
    def has_landmarks(self) -> np.ndarray:
        return np.isfinite(self.landmarks).all(axis=(1, 2))

    def chosen(self, how: str, image_shape) -> int:
        """Index of the face to use when an image has several: ``"largest"`` (the biggest box) or
        ``"centre"`` (the box whose centre is nearest the image centre: the LFW convention, where the crops
        are centred on the subject). Raises `ConfigError` for another `how`, IndexError when there is no face."""
        check_face_choice(how)
        if len(self) == 0:
            raise IndexError("no face to choose from")
        if how == "largest":
            return int(np.argmax(self.areas))
        h, w = image_shape[:2]
        centres = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2.0
        return int(np.argmin(((centres - np.array([w / 2.0, h / 2.0])) ** 2).sum(axis=1)))

    def sorted_by_size(self) -> Faces:
        """Biggest box first (ties broken by score)."""
        order = np.lexsort((-self.scores, -self.areas))
        return self[order]

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-ready list, one dict per face."""
        out = []
        for i in range(len(self)):
            item: dict[str, Any] = {
                "box": [round(float(v), 1) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 4),
            }
            if np.isfinite(self.landmarks[i]).all():
                item["landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks[i]]
            if self.embeddings is not None:
                item["embedding"] = [round(float(v), 6) for v in self.embeddings[i]]
            out.append(item)
        return out


_D = TypeVar("_D", bound="Decision")


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The answer to "is it them?", whichever verb asked (one pair, a claimed identity, a live unlock):
    `accepted` or not, the `score` that decided it (cosine similarity, or a rule's figure on that scale;
    None when no face was scored), the `threshold` it met or missed with its `threshold_source`, and
    `notes`. Made by `siamface.decision`; `Verification`, `gallery.ClaimVerification` and
    `live.AuthDecision` extend it with their verb's evidence (and keep their own JSON form)."""

    accepted: bool
    score: float | None
    threshold: float
    threshold_source: str = ""
    notes: tuple[str, ...] = ()

    def extend(self, cls: type[_D], **evidence: Any) -> _D:
        """This decision as a `cls` (a subclass) with its evidence; `evidence` may also replace `notes`."""
        return cls(**{**{f.name: getattr(self, f.name) for f in fields(Decision)}, **evidence})


@dataclass(frozen=True, kw_only=True)
class Verification(Decision):
    """The answer to "are these two faces the same person?", with its evidence.

    `similarity` (the `score`) is the cosine similarity of the two L2-normalised embeddings (1 =
    identical), `distance` the Euclidean distance between them (sqrt(2 - 2 * similarity)). `same` (the
    decision's `accepted`) is `similarity >= threshold`.
    """

    distance: float
    model: str
    detector: str
    box_a: tuple[float, float, float, float]
    box_b: tuple[float, float, float, float]
    faces_a: int
    faces_b: int

    @property
    def same(self) -> bool:
        return self.accepted

    @property
    def similarity(self) -> float:
        return float(self.score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "similarity": round(self.similarity, 6),
            "distance": round(self.distance, 6),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "model": self.model,
            "detector": self.detector,
            "a": {"box": [round(v, 1) for v in self.box_a], "faces_found": self.faces_a},
            "b": {"box": [round(v, 1) for v in self.box_b], "faces_found": self.faces_b},
            "notes": list(self.notes),
        }
