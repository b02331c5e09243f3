"""Enrollment quality gates and image sources (files, folders, person-named folders, video, camera).

Each image offered for enrollment passes these gates, in order, or is rejected with its reason:

==============  =====================================================================================
reason          rule (defaults in `QualityGates`)
==============  =====================================================================================
unreadable      the file cannot be decoded as an image
no-face         the detector finds no face
several-faces   more than one face and ``strict`` (otherwise the largest is used, with a warning)
too-small       the face box's shorter side is under ``min_face`` pixels (60), as the detectors measure
not-frontal     eye-line roll over ``max_roll`` degrees (20), or the yaw proxy over ``max_yaw`` (0.5):
                the nose's position along the eye line, 0 = midway between the eyes, 1 = over an eye
blurred         variance of the Laplacian over the central 40% of the face's 150 px dlib chip (aligned on
                its five landmarks, whatever chip the model embeds) under ``min_sharpness`` (25)
duplicate       similarity above ``duplicate`` (None: the model's, ``ModelInfo.duplicate``: 0.995, SFace
                0.98) to a template the person already has, or to one
                added earlier in the same call (checked inside the store's write transaction)
other-person    a person already enrolled: below the 1:1 threshold's similarity to every template the
                person has (checked inside the store's transaction; ``force`` turns it off); a new
                person: below it to the reference face (of the faces offered, the one that matches the
                most of the others). Capture
                sessions (video, camera) also: below it to a frame already kept in the session, i.e.
                someone else is the largest face
==============  =====================================================================================

A face that matches *another* enrolled person at or above the threshold is enrolled with a warning.

The gate values were measured on tests/fixtures/att (40 images, retinaface detector): every frontal image
passes with roll under 10 degrees and yaw under 0.4, a turned head (tests/fixtures/att_turn/s23/9.pgm) has yaw 0.51;
sharpness of the originals is 32 at least (median 88), Gaussian-blurred copies (sigma 1.5) reach 16 at
most. The chip is 150 px, so small faces are upsampled into it: a lower sharpness figure is expected for
them, and the threshold was chosen on faces about 75 px wide, the smallest the other gates allow. The gate
always measures that chip, not the model's own: on SFace's tighter 112 px chip the same faces measure about
twice as sharp (originals 61 at least, blurred copies up to 29), which would let blurred faces through.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from .. import datasets
from ..alignment import align
from ..errors import ConfigError, ImageError
from ..image import describe, load_image
from .results import Rejection

log = logging.getLogger(__name__)

REASONS = ("unreadable", "no-face", "several-faces", "too-small", "not-frontal", "blurred", "duplicate", "other-person")


@dataclass(frozen=True)
class QualityGates:
    """Thresholds of the enrollment gates (see the module's table)."""

    min_face: int = 60
    min_sharpness: float = 25.0
    max_roll: float = 20.0
    max_yaw: float = 0.5
    duplicate: float | None = None  # None: the model's (ModelInfo.duplicate)
    strict: bool = False

    def __post_init__(self) -> None:
        # NaN passes every comparison as "not below": a NaN gate would let every image through
        values = (self.min_face, self.min_sharpness, self.max_roll, self.max_yaw, self.duplicate or 1.0)
        if not all(math.isfinite(float(v)) for v in values):
            raise ConfigError(f"the enrolment gates must be finite numbers, got {self}")
        if self.min_face < 1 or self.min_sharpness < 0 or self.max_roll < 0 or self.max_yaw < 0:
            raise ConfigError(f"the enrolment gates must be positive (min_face >= 1), got {self}")
        if self.duplicate is not None and not 0 < self.duplicate <= 1:
            raise ConfigError(f"the near-duplicate similarity must be in (0, 1], got {self.duplicate}")


@dataclass(frozen=True)
class Sample:
    """An image that passed the per-image gates: its embedding and quality figures."""

    source: str
    embedding: np.ndarray = field(repr=False)
    quality: dict[str, Any]
    box: tuple[float, float, float, float]
    image: bytes | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = ()


def sharpness(chip: np.ndarray, central: float = 0.4) -> float:
    """Variance of the Laplacian over the central `central` fraction (per side) of an aligned chip.

    The centre holds eyes, nose and mouth; the chip's border can hold padding outside the image, whose
    hard edge would make any chip look sharp.
    """
    gray = cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = gray.shape
    dy, dx = int(h * (1 - central) / 2), int(w * (1 - central) / 2)
    return float(cv2.Laplacian(gray[dy : h - dy, dx : w - dx], cv2.CV_32F).var())


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(roll in degrees, yaw proxy in [0, 1+]) from dlib's 5 landmarks.

    Roll is the angle of the line between the eye centres. The yaw proxy is where the nose base projects
    on that line: 0 midway between the eyes (frontal), 1 over one eye (strongly turned).
    """
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    eye_a, eye_b, nose = lm[0:2].mean(axis=0), lm[2:4].mean(axis=0), lm[4]
    line = eye_a - eye_b
    length2 = float(line @ line)
    if not np.isfinite(length2) or length2 < 1e-6:
        return float("nan"), float("nan")
    roll = math.degrees(math.atan2(line[1], line[0]))
    if roll > 90:
        roll -= 180
    elif roll < -90:
        roll += 180
    position = float((nose - eye_b) @ line / length2)
    return roll, abs(position - 0.5) * 2


def face_crop_png(image: np.ndarray, box, margin: float = 0.5) -> bytes:
    """The face with `margin` x its size around it, PNG-encoded (what a gallery keeps with
    ``keep_images``: enough for a detector to find the face again when re-embedding)."""
    import io

    from PIL import Image

    x1, y1, x2, y2 = (float(v) for v in box)
    mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = image.shape[:2]
    a, b = max(0, int(x1 - mw)), max(0, int(y1 - mh))
    c, d = min(w, int(math.ceil(x2 + mw))), min(h, int(math.ceil(y2 + mh)))
    buf = io.BytesIO()
    Image.fromarray(image[b:d, a:c]).save(buf, format="PNG")
    return buf.getvalue()


def _floor1(value: float) -> str:
    """`value` with one decimal, rounded down: a size under a limit never prints as the limit itself."""
    return f"{math.floor(value * 10 + 1e-9) / 10:.1f}"


def assess(
    pipeline, image, source: str | None = None, gates: QualityGates = QualityGates(), keep_image: bool = False
) -> Sample | Rejection:
    """Run the per-image gates on one image (path, bytes or RGB array) with `pipeline`."""
    return assess_many(pipeline, [(image, source)], gates, keep_image)[0]


def assess_many(
    pipeline, images: Sequence[tuple[Any, str | None]], gates: QualityGates = QualityGates(), keep_image: bool = False
) -> list[Sample | Rejection]:
    """`assess` for several (image, source) pairs: the gates before embedding run image by image, then the
    faces that passed are embedded together (`Pipeline.embed_many`: one forward pass per batch, not one per
    image), then the sharpness gate on each face's dlib chip."""
    outcomes: list[Sample | Rejection | None] = []
    pending = []
    for image, source in images:
        found = _before_embedding(pipeline, image, source or describe(image), gates)
        if isinstance(found, Rejection):
            outcomes.append(found)
        else:
            pending.append((len(outcomes), *found))
            outcomes.append(None)
    embedded = pipeline.embed_many([(array, face) for _, _, array, face, _, _ in pending]) if pending else []
    for (k, label, array, _, quality, warnings), face in zip(pending, embedded):
        sharp = sharpness(align(array, face.landmarks[0]))  # the dlib chip, for every model (module doc)
        if sharp < gates.min_sharpness:
            outcomes[k] = Rejection(
                label, "blurred", f"{label}: face too blurred (sharpness {sharp:.1f}, minimum {gates.min_sharpness:g})"
            )
            continue
        box = tuple(float(v) for v in face.boxes[0])
        outcomes[k] = Sample(
            label,
            face.embeddings[0].astype(np.float32),
            {**quality, "sharpness": round(sharp, 2)},
            box,
            face_crop_png(array, box) if keep_image else None,
            tuple(warnings),
        )
    return outcomes


def _before_embedding(pipeline, image, label: str, gates: QualityGates):
    """The gates an image meets before its face is embedded: (label, array, face, quality, warnings) or a
    `Rejection`."""
    try:
        array = load_image(image, name=label)
    except ImageError as exc:
        return Rejection(label, "unreadable", str(exc))
    faces = pipeline.detect(array)
    if len(faces) == 0:
        return Rejection(label, "no-face", f"{label}: no face found")
    warnings = []
    if len(faces) > 1:
        if gates.strict:
            return Rejection(
                label,
                "several-faces",
                f"{label}: {len(faces)} faces found; an enrollment image must show one person (strict mode)",
            )
        warnings.append(f"{label}: {len(faces)} faces found, the largest was used")
    face = faces[0]
    x1, y1, x2, y2 = (float(v) for v in face.boxes[0])
    side = min(x2 - x1, y2 - y1)
    if side < gates.min_face:
        return Rejection(
            label,
            "too-small",
            f"{label}: face is {_floor1(side)} px, smaller than the {gates.min_face} px minimum; use a photo with"
            " the face larger, or lower the minimum (--min-size of enroll and serve), at a cost: a small face's"
            " template matches its own person less often (see the docs, Galleries: the enrolment minimum)",
        )
    roll, yaw = pose(face.landmarks[0])
    if not (abs(roll) <= gates.max_roll and yaw <= gates.max_yaw):
        return Rejection(
            label,
            "not-frontal",
            f"{label}: face not frontal enough (roll {roll:.1f} deg, "
            f"limit {gates.max_roll:g}; yaw {yaw:.2f}, limit {gates.max_yaw:g})",
        )
    quality = {
        "faces_found": len(faces),
        "face_px": round(side, 1),
        "detector_score": round(float(face.scores[0]), 4),
        "sharpness": None,
        "roll_deg": round(roll, 2),
        "yaw": round(yaw, 3),
        "detector": face.detector,
        "box": [round(v, 1) for v in (x1, y1, x2, y2)],
    }
    return label, array, face, quality, warnings


# -- sources ---------------------------------------------------------------------------------------
def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in `folder` (by suffix), in natural order (``2.jpg`` before ``10.jpg``);
    hidden files skipped. The reader of `siamface.datasets`, which evaluation and training use too."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(str(folder), "not a folder")
    return datasets.image_files(folder)


def person_folders(root: str | Path) -> list[tuple[str, list[Path]]]:
    """(name, images) for each sub-folder of `root` (the sub-folder's name is the person's), in natural
    order, as `siamface.datasets.folder_identities` reads a dataset (a folder without images included)."""
    root = Path(root)
    if not root.is_dir():
        raise ImageError(str(root), "not a folder")
    return list(datasets.folder_identities(root, keep_empty=True).items())


class CaptureFrame(NamedTuple):
    """One frame of a capture session: RGB image, label (``"<source>#frame=N"``) and time in seconds
    from the start (a file: frame index / frame rate; a camera: the clock)."""

    image: np.ndarray
    label: str
    time: float


def video_frames(
    source: str | int | Path, *, candidates: int = 60, max_frames: int | None = 600
) -> Iterator[CaptureFrame]:
    """RGB frames of a video file or camera, as `CaptureFrame`s, read through `siamface.video.open_source` (the
    sources `watch` and `authenticate` use).

    A file yields about `candidates` frames spread evenly over its length (as its header states it; a file that
    ends before, holding fewer frames than stated, is read again and sampled over the frames it holds); a camera
    yields every frame read, up to `max_frames` (None: until the camera stops or the caller closes the iterator). The source
    is opened here, at once (`ImageError` if it cannot be), and released when the iterator is exhausted
    or closed. No window is opened: this works headless.
    """
    from ..video import SourceError, camera_index, describe_source, open_source

    if isinstance(source, Path) or (isinstance(source, str) and camera_index(source) is None):
        if not Path(source).is_file():
            what = "not a video file (a FIFO, device or socket)" if Path(source).exists() else "video file not found"
            raise ImageError(str(source), "not a video file (a folder)" if Path(source).is_dir() else what)
    try:
        frames = open_source(source)
    except SourceError as exc:
        raise ImageError(describe_source(source), str(exc).split(": ", 1)[-1]) from None
    return _frames(frames, candidates, max_frames, again=lambda: open_source(source))


def _frames(
    source, candidates: int, max_frames: int | None, again=None, total: int | None = None
) -> Iterator[CaptureFrame]:
    """Every `step`-th frame of `source`, the step spreading `candidates` frames over `total` (None: as the
    header states). A header that states more frames than the file holds (a damaged or cut recording; a crafted
    1,000,000,000) made a step past the file's end: one frame of a whole video was offered. When the file ends
    early with frames skipped, `again()` opens it anew and the frames it holds are sampled."""
    read = offered = 0
    with source:
        if total is None:
            total = source.frame_count if not source.live else 0
        step = max(1, total // max(1, candidates)) if total > 0 else 1
        for frame in source:
            if max_frames is not None and frame.index >= max_frames * step:
                return
            read = frame.index + 1
            if frame.index % step == 0:
                offered += 1
                yield CaptureFrame(frame.image, f"{source.name}#frame={frame.index}", frame.time)
    if again is not None and step > 1 and read < total and offered < candidates:
        from ..video import SourceError

        log.warning("%s: %d frames stated, %d held: read again, sampled over those", source.name, total, read)
        try:
            reopened = again()
        except SourceError as exc:  # gone or changed since: what was offered stands
            log.warning("%s", exc)
            return
        yield from _frames(reopened, candidates, max_frames, total=read)
