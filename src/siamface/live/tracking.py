"""Faces followed across frames: a greedy IoU `Tracker` of `Track`s, each naming its face by the vote of its
last recognitions."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from ..decision import UNKNOWN


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of `a` (n,4) with every box of `b` (m,4), x1 y1 x2 y2."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return (inter / np.maximum(union, 1e-9)).astype(np.float32)


@dataclass
class Track:
    """One face followed across frames."""

    id: int
    box: np.ndarray
    first_frame: int
    last_frame: int
    votes: deque = field(default_factory=lambda: deque(maxlen=5))
    embedded_frame: int = -(10**9)
    missed: int = 0
    name: str | None = None  # decided identity (None: not decided or unknown; "ambiguous": too close to call)
    score: float = float("nan")  # mean similarity of the votes for `name`
    announced: str | None = None  # the identity last reported in an event

    def decide(self) -> None:
        """Identity = the most frequent vote (unknown counts as a vote); ties go to the higher mean score."""
        if not self.votes:
            return
        counts = Counter(name for name, _ in self.votes)
        best = max(counts, key=lambda n: (counts[n], np.mean([s for m, s in self.votes if m == n])))
        self.name = best
        self.score = float(np.mean([s for m, s in self.votes if m == best]))

    @property
    def label(self) -> str:
        return self.name if self.name is not None else UNKNOWN


class Tracker:
    """Greedy IoU tracker: each detection joins the unmatched track it overlaps most (IoU ≥ `min_iou`);
    a track unseen for `max_missed` frames ends."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 10, votes: int = 5) -> None:
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.votes = votes
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: np.ndarray, frame_index: int) -> tuple[list[Track], list[Track], list[Track]]:
        """Tracks for the detections (same order as `boxes`), the tracks that started, the tracks that ended."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        overlap = iou_matrix(np.array([t.box for t in self.tracks], np.float32).reshape(-1, 4), boxes)
        assigned: list[Track | None] = [None] * len(boxes)
        used: set[int] = set()
        for flat in np.argsort(-overlap, axis=None):
            ti, di = divmod(int(flat), len(boxes))
            if overlap[ti, di] < self.min_iou:
                break
            if ti in used or assigned[di] is not None:
                continue
            used.add(ti)
            assigned[di] = self.tracks[ti]
        started = []
        for di, track in enumerate(assigned):
            if track is None:
                track = Track(self._next_id, boxes[di], frame_index, frame_index, deque(maxlen=self.votes))
                self._next_id += 1
                self.tracks.append(track)
                started.append(track)
                assigned[di] = track
            track.box, track.last_frame, track.missed = boxes[di], frame_index, 0
        ended = []
        seen = {id(t) for t in assigned}
        for track in self.tracks:
            if id(track) not in seen:
                track.missed += 1
                if track.missed > self.max_missed:
                    ended.append(track)
        self.tracks = [t for t in self.tracks if t not in ended]
        return assigned, started, ended  # type: ignore[return-value]
