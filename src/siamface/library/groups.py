"""A library's faces grouped by person, a group named into a gallery, and a person found in a library.

    grouping = group_faces(collected.faces, threshold, model="sface")
    grouping.to_dict()     # {"clusters": [{"id", "key", "faces"}], "unclustered": [...], "model", "threshold"}
    enroll_group(gallery, "alice", grouping.clusters[3])         # through the gallery's enrolment gates
    find_person(gallery, "alice", collected)                     # [Sighting]: photos, and time ranges in videos

The threshold of `group_faces` for the commands and the service is `cluster_threshold(pipeline)`: one decade of
false-accept rate stricter than the 1:1 threshold in force (`siamface.decision`; see the README, "Photo
libraries", for the measurements behind it).
`find_person` decides each face with the gallery's own 1:N decision (`Gallery.identify_faces`, the code
behind `identify`): a face is the person only when identify would name them. A video's face track is
decided once, on its mean embedding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .cluster import DEFAULT_METHOD, cluster
from .media import Collected, LibraryFace, face_crop

#: Added to the 1:1 threshold in force to cluster when the model has no default 1:N threshold (see
#: `cluster_threshold`).
DEFAULT_SHIFT = 0.02
#: Faces of a group offered for enrolment at most (the largest ones).
ENROLL_TEMPLATES = 10
#: Hex digits of a group's key (`group_key`).
KEY_DIGITS = 12


@dataclass(frozen=True)
class Grouping:
    """Groups of faces, largest first, and the faces that belong to no group."""

    clusters: list[list[LibraryFace]]
    unclustered: list[LibraryFace]
    model: str
    threshold: float
    method: str

    @property
    def keys(self) -> list[str]:
        """Each group's `group_key`, in the groups' order."""
        return [group_key(group) for group in self.clusters]

    def to_dict(self) -> dict[str, Any]:
        return {
            "clusters": [
                {"id": k, "key": key, "faces": [f.to_dict() for f in group]}
                for k, (key, group) in enumerate(zip(self.keys, self.clusters))
            ],
            "unclustered": [f.to_dict() for f in self.unclustered],
            "model": self.model,
            "threshold": round(float(self.threshold), 6),
        }


def group_key(faces: Sequence[LibraryFace]) -> str:
    """A group's key: 12 hex digits of the sha256 of its faces (each face's file content digest, or its file
    when that is not known, its box and its time range). The same while the same photos make the group; another
    as soon as one of them changes, joins or leaves it. Groups are named by their key (``cluster --enroll
    --name KEY=NAME``), never by their number: numbers follow the groups' sizes, so photos added to the folder
    between the run that showed the groups and the one that enrolls them could give a group someone else made
    larger the number of the group meant."""
    lines = sorted(
        f"{f.digest or f.file}|{','.join(f'{v:.1f}' for v in f.box)}|"
        + ("" if f.time is None else f"{f.time[0]:.3f},{f.time[1]:.3f}")
        for f in faces
    )
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:KEY_DIGITS]


def group_faces(
    faces: Sequence[LibraryFace], threshold: float, *, model: str = "", method: str = DEFAULT_METHOD, seed: int = 0
) -> Grouping:
    """Group `faces` by person (`siamface.library.cluster`); groups of one face are left unclustered."""
    if not faces:
        return Grouping([], [], model, threshold, method)
    labels = cluster(np.stack([f.embedding for f in faces]), threshold, method, seed=seed)
    sizes = np.bincount(labels)
    clusters: list[list[LibraryFace]] = [[] for _ in range(int((sizes > 1).sum()))]
    unclustered = []
    for face, label in zip(faces, labels):  # labels are numbered by size: the groups of several come first
        if sizes[label] > 1:
            clusters[int(label)].append(face)
        else:
            unclustered.append(face)
    return Grouping(clusters, unclustered, model, threshold, method)


def enroll_group(gallery: Any, name: str, faces: Sequence[LibraryFace], *, limit: int = ENROLL_TEMPLATES, **kw):
    """Enroll `name` from a group's faces (at most `limit`, the largest): a crop around each face goes
    through the gallery's enrolment gates (`Gallery.enroll`), so that the group's face, not another in the
    same photo, is the one enrolled. Returns the `EnrollmentReport`."""
    if limit < 1:
        raise ConfigError(f"templates per group must be >= 1, got {limit}")
    chosen = largest(faces, limit)
    crops = [face_crop(f, gallery.pipeline) for f in chosen]
    sources = [f.file if f.time is None else f"{f.file}@{f.time[0]:.2f}s" for f in chosen]
    return gallery.enroll(name, crops, sources=sources, **kw)


def largest(faces: Sequence[LibraryFace], limit: int) -> list[LibraryFace]:
    """The `limit` largest faces (by box area), largest first."""
    return sorted(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)[:limit]


def cluster_threshold(pipeline: Any) -> float:
    """The similarity that links two faces for `siamface cluster` and the page's photo library: one decade of
    false-accept rate stricter than the 1:1 threshold in force, i.e. that threshold plus the model's own gap
    between its default 1:N threshold (FAR 1e-4 per pair) and its default 1:1 threshold (FAR 1e-3): the
    model's 1:N default itself when nothing is calibrated (sface 0.526, dlib-flip+facenet 0.891), and a
    calibrated 1:1 threshold moved by the same gap. A model without a 1:N default: the 1:1 threshold plus
    `DEFAULT_SHIFT`. Chosen on celeba_ids by benchmarks/cluster.py (README, "Photo libraries"): no shift was
    tuned on it; a pair of people merged in one group names the wrong person once enrolled, so the stricter
    side of the 1:1 threshold."""
    info = pipeline.encoder.info
    gap = DEFAULT_SHIFT if info.identify_threshold is None else info.identify_threshold - info.threshold
    return min(1.0, float(pipeline.threshold) + float(gap))


@dataclass(frozen=True)
class Sighting:
    """Where a person was found: a photo's face, or a time range of a video, with the similarity."""

    file: str
    box: tuple[float, float, float, float]
    time: tuple[float, float] | None
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "box": [round(float(v), 1) for v in self.box],
            "time": None if self.time is None else [round(float(t), 3) for t in self.time],
            "similarity": round(float(self.similarity), 6),
        }


@dataclass(frozen=True)
class _Faces:
    boxes: np.ndarray
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def find_person(gallery: Any, name: str, collected: Collected, *, margin: float | None = None) -> list[Sighting]:
    """Every face of `collected` that the gallery's 1:N decision names `name` (see the module's docstring),
    file by file in their order; a video's overlapping time ranges are merged (the best score kept)."""
    person = gallery.store.person(name, metadata=False).name  # an unknown name: UnknownPersonError
    by_file: dict[str, list[LibraryFace]] = {}
    for face in collected.faces:
        by_file.setdefault(face.file, []).append(face)
    found: list[Sighting] = []
    for file, faces in by_file.items():
        probe = _Faces(np.array([f.box for f in faces], np.float32), np.stack([f.embedding for f in faces]))
        result = gallery.identify_faces(file, probe, top=2, margin=margin)
        hits = [
            Sighting(file, face.box, face.time, float(decided.similarity))
            for face, decided in zip(faces, result.faces)
            if decided.accepted and decided.person == person
        ]
        found.extend(_merge_ranges(hits))
    return found


def _merge_ranges(hits: list[Sighting]) -> list[Sighting]:
    """A video's sightings with overlapping or touching time ranges as one (photos are kept as they are)."""
    photos = [h for h in hits if h.time is None]
    ranges = sorted((h for h in hits if h.time is not None), key=lambda h: h.time)
    merged: list[Sighting] = []
    for h in ranges:
        last = merged[-1] if merged else None
        if last is not None and h.time[0] <= last.time[1]:
            best = last if last.similarity >= h.similarity else h
            merged[-1] = Sighting(h.file, best.box, (last.time[0], max(last.time[1], h.time[1])), best.similarity)
        else:
            merged.append(h)
    return photos + merged
