"""Every face of a photo library, embedded once: photos (every face, not only the largest) and videos (one
entry per face track, with its time range), through the embedding cache.

    found = collect_faces(pipeline, ["holiday/", "clip.mp4"], cache=EmbeddingCache())
    found.faces        # [LibraryFace(file, box, time, embedding)], files in natural order, faces biggest first
    found.errors       # [(file, reason)]: unreadable photos and videos (the others are still read)
    found.embedded     # files embedded now (the others came from the cache)

The cache is keyed by the file's content (`siamface.evaluation.cache`): a re-run, a renamed file or a grown
folder embeds only what is new. A video's entry is keyed by its sampling (`step`) and linking settings too.

Videos: a frame every `step` seconds is read, its faces detected and embedded; a face joins the track
(of the tracks seen within `max_gap` seconds) whose last face it is most similar to, when that similarity
reaches the threshold (ties and near-ties go to the track whose box it overlaps most); else it starts a
track. A track counts once: its embedding is the normalised mean of its faces', its box the one in its
first frame, its time the first and last sampled times.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import VIDEO_SUFFIXES, WALKED_PHOTO_SUFFIXES
from ..errors import ImageError, SourceError

log = logging.getLogger(__name__)

#: Seconds between two video frames read (2 per second).
VIDEO_STEP = 0.5
#: Seconds a video track may go unseen and still be continued.
MAX_GAP = 2.0
MEDIA_SUFFIXES = WALKED_PHOTO_SUFFIXES | VIDEO_SUFFIXES  # a HEIC photo is reported as unreadable, not skipped


@dataclass(frozen=True)
class LibraryFace:
    """One face of a library: its file, box (x1, y1, x2, y2), time range (videos), embedding, and the sha256 of
    the file's bytes it was found in (`digest`, '' when not known): what is enrolled from it must come from
    those bytes (`face_crop`)."""

    file: str
    box: tuple[float, float, float, float]
    time: tuple[float, float] | None
    embedding: np.ndarray = field(repr=False)
    digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "box": [round(float(v), 1) for v in self.box],
            "time": None if self.time is None else [round(float(t), 3) for t in self.time],
        }


@dataclass
class Collected:
    faces: list[LibraryFace]
    errors: list[tuple[str, str]]
    embedded: int = 0
    cached: int = 0
    files: int = 0


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def media_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Photos and videos: files as given, folders walked (see `siamface.datasets.files_under`), and the links to
    folders met inside them, which are not walked (`folder_link` tells them; reported, never passed over)."""
    from ..datasets import files_under

    return files_under(paths, MEDIA_SUFFIXES, what="photo or video", links=True)


#: Why a link to a folder met in a walk is not read.
FOLDER_LINK = "a link to a folder: not walked (a link may lead anywhere); name it on the command line to read it"


def folder_link(path: str) -> bool:
    """`path` is a link to a folder (one that `media_files` met inside a folder)."""
    return os.path.islink(path) and os.path.isdir(path)


def _without_name(exc: Exception, path) -> str:
    """An error's message without the file's name in front (the error lines and ``errors`` name the file
    already: "photo.jpg: photo.jpg: not an image" read twice)."""
    message, name = str(exc), f"{path}: "
    return message[len(name) :] if message.startswith(name) else message


def collect_faces(
    pipeline: Any,
    paths: Iterable[str | os.PathLike],
    cache: Any = None,
    *,
    step: float = VIDEO_STEP,
    max_gap: float = MAX_GAP,
    link_threshold: float | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> Collected:
    """Every face of the photos and videos `paths` name (folders walked), each file embedded once (the
    cache first). `link_threshold`: the similarity that continues a video track (default: the pipeline's
    1:1 threshold)."""
    from ..evaluation.cache import chain_keys
    from ..image import load_image, read_image_file

    files = media_files(paths)
    link = float(pipeline.threshold if link_threshold is None else link_threshold)
    out = Collected([], [], files=len(files))
    mkey = dkey = ""
    if cache is not None:
        mkey, base = chain_keys(pipeline)
        dkey = f"{base} every-face"
        vkey = f"{base} video step={step:g} gap={max_gap:g} link={link:.6f}"
    for n, path in enumerate(files, 1):
        if folder_link(path):
            out.errors.append((path, FOLDER_LINK))
            continue
        video = is_video(path)
        data = sha = signature = None
        try:  # a photo is read once: its hash (the cache's key, the faces' digest) and its faces are of the same bytes
            if not video:
                data = read_image_file(path)
                sha = hashlib.sha256(data).hexdigest()
            else:
                sha, signature = _video_digest(path)
        except (ImageError, SourceError) as exc:
            out.errors.append((path, _without_name(exc, path)))
            continue
        entry = cache.get_faces(sha, mkey, vkey if video else dkey) if cache is not None else None
        if entry is None:
            try:
                if video:
                    boxes, vectors, times = _video_tracks(pipeline, path, step, max_gap, link)
                else:
                    boxes, vectors, times = _photo_faces(pipeline, load_image(data, name=path))
            except (ImageError, SourceError) as exc:
                out.errors.append((path, _without_name(exc, path)))
                continue
            out.embedded += 1
            if cache is not None and (not video or _signature(path) == signature):  # a video changed: not kept
                cache.put_faces(sha, mkey, vkey if video else dkey, boxes, vectors, times)
        else:
            boxes, vectors, times = entry.boxes, entry.embeddings, entry.times
            out.cached += 1
        for k in range(len(boxes)):
            out.faces.append(
                LibraryFace(
                    path,
                    tuple(float(v) for v in boxes[k]),
                    None if times is None else (float(times[k, 0]), float(times[k, 1])),
                    np.asarray(vectors[k], np.float32),
                    sha,
                )
            )
        if progress is not None:
            progress(n, len(files), path)
    if cache is not None:
        cache.flush()
    return out


def _photo_faces(pipeline: Any, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
    faces = pipeline.embed(image)
    return faces.boxes.reshape(-1, 4), faces.embeddings, None


def _signature(path: str | os.stat_result) -> tuple[int, ...] | None:
    """What says a file (by its path, or its stat) is still the one that was hashed: device, inode, size,
    modification time (None: it cannot be asked)."""
    try:
        info = path if isinstance(path, os.stat_result) else os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _video_digest(path: str) -> tuple[str, tuple[int, ...]]:
    """(sha256, `_signature`) of the video file `path`, hashed from the file opened without waiting and only
    when it is a regular file (a FIFO would wait for a writer for ever, a device may never end): SourceError."""
    fd, info = _open_video(path)
    try:
        return _hash(fd, path), _signature(info)
    finally:
        os.close(fd)


def _open_video(path: str) -> tuple[int, os.stat_result]:
    """(descriptor, stat) of the video file `path`, opened without waiting, a regular file only: SourceError."""
    from .._files import open_for_reading

    try:
        fd, info = open_for_reading(path)
    except OSError as exc:
        raise SourceError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise SourceError(f"{path}: not a regular file (a pipe, socket or device): not read")
    return fd, info


def _hash(fd: int, path: str) -> str:
    """The sha256 of what the open file `fd` holds (read from its start)."""
    digest = hashlib.sha256()
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
    except OSError as exc:
        raise SourceError(f"{path}: unreadable ({exc.strerror or exc})") from None
    return digest.hexdigest()


def sampled_frames(path: str, step: float = VIDEO_STEP) -> Iterable[Any]:
    """The frames of a video file about every `step` seconds (the first one included)."""
    from ..video import open_source

    with open_source(path) as source:
        next_time = 0.0
        for frame in source:
            if frame.time + 1e-6 < next_time:
                continue
            next_time = frame.time + step
            yield frame


def _video_tracks(pipeline: Any, path: str, step: float, max_gap: float, link: float):
    """One (box, embedding, time range) per face track of a video (see the module's docstring)."""
    from ..live.tracking import iou_matrix

    tracks: list[dict[str, Any]] = []
    frames = 0
    for frame in sampled_frames(path, step):
        frames += 1
        faces = pipeline.embed(frame.image)
        if not len(faces):
            continue
        live = [t for t in tracks if frame.time - t["last"] <= max_gap + 1e-6]
        taken: set[int] = set()
        if live:
            sims = faces.embeddings @ np.stack([t["recent"] for t in live]).T
            overlap = iou_matrix(faces.boxes, np.stack([t["box"] for t in live]))
            score = sims + 0.05 * overlap  # similarity decides; overlap breaks near-ties
            assigned = [-1] * len(faces)
            for flat in np.argsort(-score, axis=None):
                fi, ti = divmod(int(flat), len(live))
                if sims[fi, ti] < link:
                    continue
                if assigned[fi] >= 0 or ti in taken:
                    continue
                assigned[fi] = ti
                taken.add(ti)
        else:
            assigned = [-1] * len(faces)
        for fi in range(len(faces)):
            box, vector = faces.boxes[fi].astype(np.float64), faces.embeddings[fi].astype(np.float64)
            if assigned[fi] >= 0:
                t = live[assigned[fi]]
                t["sum"] += vector
                t["recent"], t["box"], t["last"] = vector, box, frame.time
            else:
                tracks.append(
                    {"sum": vector.copy(), "recent": vector, "box": box, "first_box": box}
                    | {"first": frame.time, "last": frame.time}
                )
    if not frames:  # not a video in which nobody appears: one in which nothing was looked at
        raise SourceError(f"{path}: no frame could be decoded (a video cut short, or broken): not read")
    if not tracks:
        return np.zeros((0, 4), np.float32), np.zeros((0, 0), np.float32), np.zeros((0, 2))
    vectors = np.stack([t["sum"] / max(np.linalg.norm(t["sum"]), 1e-12) for t in tracks]).astype(np.float32)
    boxes = np.stack([t["first_box"] for t in tracks]).astype(np.float32)
    times = np.array([[t["first"], t["last"]] for t in tracks], np.float64)
    return boxes, vectors, times


def face_crop(face: LibraryFace, pipeline: Any, margin: float = 0.6) -> np.ndarray:
    """An RGB crop around a library face (`crop_around`), so that it is the largest face of what is
    enrolled; a video face is cut from its track's first frame. The file must still hold the bytes the face
    was found in (`face.digest`, when known), else `ImageError`: a photo swapped after it was read and grouped
    is not enrolled under the name its group was given."""
    from ..image import load_image, read_image_file

    if face.time is None:
        data = read_image_file(face.file)
        if face.digest and hashlib.sha256(data).hexdigest() != face.digest:
            raise ImageError(face.file, "changed since its faces were read and grouped: not enrolled")
        image = load_image(data, name=face.file)
    else:
        image = _hashed_frame(face.file, face.time[0], face.digest)
    return crop_around(image, face.box, margin)


def _hashed_frame(path: str, when: float, digest: str) -> np.ndarray:
    """The frame at `when` of the video `path`, read from the very file whose bytes hash to `digest` (when
    given), else `ImageError`: the file is opened once, hashed, and its frames decoded from that open file
    (``/proc/self/fd``, where there is one). Hashed by name and then opened again by name, a video put in its
    place in between was the one decoded, and a group of someone's tracks enrolled the newcomer's face."""
    fd, info = _open_video(path)
    try:
        if digest and _hash(fd, path) != digest:
            raise ImageError(path, "changed since its faces were read and grouped: not enrolled")
        opened = f"/proc/self/fd/{fd}"
        image = _frame_at(opened if os.path.exists(opened) else path, when, name=path)
        if _signature(os.fstat(fd)) != _signature(info):  # written into while it was read
            raise ImageError(path, "changed while its frame was read: not enrolled")
        return image
    finally:
        os.close(fd)


def crop_around(image: np.ndarray, box, margin: float = 0.6) -> np.ndarray:
    """The part of `image` around `box` (x1, y1, x2, y2), widened by `margin` of its size on each side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    H, W = image.shape[:2]
    a, b = int(max(0, x1 - margin * w)), int(max(0, y1 - margin * h))
    c, d = int(min(W, x2 + margin * w)), int(min(H, y2 + margin * h))
    return np.ascontiguousarray(image[b:d, a:c])


def _frame_at(path: str, when: float, name: str | None = None) -> np.ndarray:
    from ..video import open_source

    with open_source(path) as source:
        for frame in source:
            if frame.time + 1e-6 >= when:
                return frame.image
    raise SourceError(f"{name or path}: no frame at {when:.2f} s")
