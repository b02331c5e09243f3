"""The web page's photo library: the faces of photos in the one folder the server was told it may read
(`siamface serve --library DIR`: a setting, never a request field) and of photos uploaded to it, grouped by
person (`siamface.library`), each face with a thumbnail kept in memory; a group named is enrolled through the
gallery's gates (see `Service.enroll_images`).

    library = PhotoLibrary(Path("/srv/photos"), max_faces=20_000)
    library.scan(pipeline, max_pixels, stop=lambda: clock() > deadline)  # new and changed photos, until `stop`
    library.add(pipeline, image, "upload (a.jpg)")                       # an uploaded photo's faces
    view = library.grouping(threshold, model)                            # groups, largest first, at a version

Reading the folder: every path component is opened relative to its parent (``dir_fd``) with ``O_NOFOLLOW``,
so no symbolic link is followed, neither one planted in the folder (its target may be anywhere) nor a folder
swapped for a link while the folder is read; hidden names are skipped; only regular files are read (a FIFO or
a device is not opened for reading: ``O_NONBLOCK``, then ``fstat``), at most `MAX_FILE_BYTES` each, photos
only (no videos: the request's time budget). Faces, thumbnails and the crops of uploaded faces live in this
process's memory only: nothing is written to disk, and a restart forgets them (the folder is read again).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._files import IMAGE_SUFFIXES
from ..errors import ConfigError, ImageError, OverBudgetError
from ..library.groups import Grouping, group_faces
from ..library.media import LibraryFace, crop_around
from ..library.sheet import thumbnail_jpeg

#: The largest photo file read from the folder, in bytes.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Faces the library holds at most (thumbnails of about 3 kB each stay in memory), and faces of uploaded photos
#: (each also keeps the crop enrolment would take, at most `CROP_SIDE` pixels a side: about 30 kB).
MAX_FACES = 20_000
MAX_UPLOADED_FACES = 2_000
CROP_SIDE = 400
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class LibraryFull(Exception):
    """The library holds `MAX_FACES` faces already."""


class PhotoChanged(Exception):
    """A folder photo no longer holds the bytes its faces were read from."""


@dataclass(frozen=True)
class Entry:
    """A face of the library: its id, where it is (`face.file`: a path inside the folder, or an upload's
    label), its thumbnail, and for an uploaded photo the crop enrolment would use (the folder's are read
    again from the file, which must still hold the bytes of `digest`: what was shown is what is enrolled)."""

    id: int
    face: LibraryFace
    thumbnail: bytes
    crop: bytes | None
    uploaded: bool
    digest: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.face.file, "box": [round(float(v), 1) for v in self.face.box]}


def open_folder(root: Path) -> int:
    """A descriptor of the library folder (resolved when the server started); ConfigError if it is gone."""
    try:
        return os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise ConfigError(f"the library folder cannot be opened: {exc.strerror}") from None


def _open_inside(root: Path, relative: str, *, directory: bool = False) -> int:
    """A descriptor of `relative` (a path with '/' separators) inside `root`, following no link on the way."""
    parts = relative.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ImageError(relative, "not a path inside the library folder")
    fd = open_folder(root)
    try:
        for k, part in enumerate(parts):
            last = k == len(parts) - 1
            flags = _FILE_FLAGS if last and not directory else _DIR_FLAGS
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                why = (
                    "a link (not followed)" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else (exc.strerror or str(exc))
                )
                raise ImageError(relative, why) from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_inside(root: Path, relative: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file `relative` inside `root` (no link followed; ImageError otherwise)."""
    fd = _open_inside(root, relative)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(relative, "not a regular file")
        if info.st_size > limit:
            raise ImageError(relative, f"over the {limit // (1024 * 1024)} MB a library photo may have")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ImageError(relative, f"over the {limit // (1024 * 1024)} MB a library photo may have")
        return b"".join(chunks)
    finally:
        os.close(fd)


def list_photos(root: Path) -> tuple[dict[str, tuple[int, int]], list[tuple[str, str]]]:
    """({relative path: (size, mtime_ns)} of the photos under `root`, [(relative path, why not read)]):
    subfolders walked through descriptors, links never followed (each one listed as not read). A file under
    several names (hard links) is one photo: read under its first name in path order, its other names listed
    as not read, so that one photo linked a thousand times neither counts a thousand times nor fills the
    library."""
    found: dict[str, tuple[int, int]] = {}
    skipped: list[tuple[str, str]] = []
    names: dict[tuple[int, int], list[str]] = {}  # (device, inode) of a file with several names: its names
    pending = [("", open_folder(root))]
    while pending:
        prefix, fd = pending.pop()
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    relative = prefix + entry.name
                    if entry.is_symlink():
                        skipped.append((relative, "a link (not followed)"))
                    elif entry.is_dir(follow_symlinks=False):
                        try:
                            pending.append((relative + "/", os.open(entry.name, _DIR_FLAGS, dir_fd=fd)))
                        except OSError as exc:
                            skipped.append((relative, exc.strerror or str(exc)))
                    elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                        info = entry.stat(follow_symlinks=False)
                        if stat.S_ISREG(info.st_mode):
                            found[relative] = (info.st_size, info.st_mtime_ns)
                            if info.st_nlink > 1:
                                names.setdefault((info.st_dev, info.st_ino), []).append(relative)
                        else:
                            skipped.append((relative, "not a regular file"))
        finally:
            os.close(fd)
    for same in names.values():
        first, *others = sorted(same)
        for relative in others:
            del found[relative]
            skipped.append((relative, f"the same file as {first} (a hard link): read once"))
    return dict(sorted(found.items())), sorted(skipped)


class PhotoLibrary:
    """The faces of the library folder (`root`, None when the server has none) and of uploaded photos."""

    def __init__(self, root: Path | None, max_faces: int = MAX_FACES) -> None:
        self.root = root
        self.max_faces = max_faces
        self.version = 0
        self._lock = threading.Lock()
        self._entries: dict[int, Entry] = {}
        self._files: dict[str, tuple[tuple[int, int], list[int]]] = {}  # folder photo: (size, mtime), face ids
        self._errors: dict[str, str] = {}
        self._failed: dict[str, tuple[int, int]] = {}  # photos that could not be read: (size, mtime) then
        self._next = 0
        self._grouping: tuple[int, float, Grouping] | None = None

    # -- reading ---------------------------------------------------------------------------------------------
    def scan(self, pipeline: Any, max_pixels: int, stop: Callable[[], bool]) -> dict[str, Any]:
        """Read the folder's new and changed photos (forget removed ones) until `stop()` says the time is up:
        {done, read, left, files, faces, errors}. A later call goes on where this one stopped."""
        if self.root is None:
            raise ConfigError("this server reads no library folder (siamface serve --library DIR)")
        listed, skipped = list_photos(self.root)
        with self._lock:
            gone = [f for f in self._files if f not in listed]
            for f in gone:
                self._drop(f)
            # a photo that could not be read is tried again once it changes
            self._failed = {f: sig for f, sig in self._failed.items() if listed.get(f) == sig}
            self._errors = {f: e for f, e in self._errors.items() if f in self._failed} | dict(skipped)
            todo = [f for f, sig in listed.items() if self._files.get(f, (None,))[0] != sig and f not in self._failed]
            if gone:
                self.version += 1
        read = 0
        for relative in todo:
            if stop():
                break
            try:
                data = read_inside(self.root, relative)
                image = _decode(data, relative, max_pixels)
                faces = pipeline.embed(image)
            except (ImageError, OverBudgetError) as exc:
                with self._lock:
                    self._drop(relative)
                    self._errors[relative] = exc.reason if isinstance(exc, ImageError) else str(exc)
                    self._failed[relative] = listed[relative]
                    self.version += 1
                read += 1
                if isinstance(exc, OverBudgetError):
                    break  # this photo alone took the request's time: the next scan goes on without it
                continue
            with self._lock:
                self._drop(relative)
                ids = self._keep(relative, image, faces, uploaded=False, digest=hashlib.sha256(data).digest())
                self._files[relative] = (listed[relative], ids)
                self.version += 1
            read += 1
        return {**self.counts(), "done": read == len(todo), "read": read, "left": len(todo) - read}

    def add(self, pipeline: Any, image: np.ndarray, label: str) -> int:
        """Add the faces of an uploaded photo (already decoded); how many were found."""
        faces = pipeline.embed(image)
        with self._lock:
            ids = self._keep(label, image, faces, uploaded=True)
            self.version += 1
        return len(ids)

    def _keep(self, file: str, image: np.ndarray, faces: Any, uploaded: bool, digest: bytes | None = None) -> list[int]:
        if len(self._entries) + len(faces) > self.max_faces:
            raise LibraryFull(f"the library holds {len(self._entries)} faces; at most {self.max_faces}")
        uploaded_now = sum(e.uploaded for e in self._entries.values())
        if uploaded and uploaded_now + len(faces) > MAX_UPLOADED_FACES:
            raise LibraryFull(f"the library holds {uploaded_now} uploaded faces; at most {MAX_UPLOADED_FACES}")
        ids = []
        for k in range(len(faces)):
            box = tuple(float(v) for v in faces.boxes[k])
            crop = None
            if uploaded:
                crop = _jpeg(_bounded(crop_around(image, box), CROP_SIDE))
            face = LibraryFace(file, box, None, np.asarray(faces.embeddings[k], np.float32))
            entry = Entry(self._next, face, thumbnail_jpeg(image, box) or b"", crop, uploaded, digest)
            self._entries[entry.id] = entry
            ids.append(entry.id)
            self._next += 1
        return ids

    def _drop(self, relative: str) -> None:
        for i in self._files.pop(relative, (None, []))[1]:
            self._entries.pop(i, None)

    def forget(self, templates: np.ndarray, threshold: float, link: float, model: str) -> int:
        """Drop a removed person's faces: those that one of their `templates` matches at `threshold` (the 1:1
        threshold in force: the same person), and every face grouped with one of them (at the linking threshold
        `link`, as the page shows them), with their thumbnails and crops; how many. A folder photo of theirs is
        not read again until it changes (its other faces stay)."""
        if not len(templates):
            return 0
        _, grouping, by_face = self.grouping(link, model)
        groups = [{by_face[id(f)].id for f in group if id(f) in by_face} for group in grouping.clusters]
        with self._lock:
            theirs = {e.id for e in self._entries.values() if float(np.max(templates @ e.face.embedding)) >= threshold}
            theirs |= {i for group in groups if group & theirs for i in group}
            for i in theirs:
                self._entries.pop(i, None)
            for f, (signature, ids) in self._files.items():
                self._files[f] = (signature, [i for i in ids if i not in theirs])
            if theirs:
                self.version += 1
                self._grouping = None
        return len(theirs)

    def clear(self) -> None:
        """Forget every face (the folder is read again by the next scan)."""
        with self._lock:
            self._entries.clear()
            self._files.clear()
            self._errors.clear()
            self._failed.clear()
            self.version += 1

    # -- answering -------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {
                "version": self.version,
                "files": len(self._files) + len({e.face.file for e in self._entries.values() if e.uploaded}),
                "faces": len(self._entries),
                "errors": [{"file": f, "error": e} for f, e in sorted(self._errors.items())],
            }

    def grouping(self, threshold: float, model: str, method: str | None = None) -> tuple[int, Grouping, dict]:
        """(version, the faces grouped, {id(face): Entry}) at the current version (computed once a version)."""
        with self._lock:
            version, entries = self.version, list(self._entries.values())
            cached = self._grouping
        by_face = {id(e.face): e for e in entries}
        if cached is not None and cached[0] == version and cached[1] == threshold:
            return version, cached[2], by_face
        kw = {} if method is None else {"method": method}
        grouping = group_faces([e.face for e in entries], threshold, model=model, **kw)
        with self._lock:
            self._grouping = (version, threshold, grouping)
        return version, grouping, by_face

    def entry(self, face_id: int) -> Entry | None:
        with self._lock:
            return self._entries.get(face_id)

    def enrol_crop(self, entry: Entry, max_pixels: int) -> np.ndarray:
        """The crop enrolment takes for a face: an upload's kept crop, or the photo read again from the folder
        (the same way as the scan: no link followed), `PhotoChanged` unless it holds the bytes the face was
        read from (whatever its size and time say)."""
        if entry.crop is not None:
            return _decode(entry.crop, entry.face.file, max_pixels)
        data = read_inside(self.root, entry.face.file)
        if hashlib.sha256(data).digest() != entry.digest:
            raise PhotoChanged(entry.face.file)
        image = _decode(data, entry.face.file, max_pixels)
        return crop_around(image, entry.face.box)


def _decode(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    from ..image import load_image

    return load_image(data, max_pixels=max_pixels, name=label)


def _bounded(image: np.ndarray, side: int) -> np.ndarray:
    """`image` scaled down so that its longer side is at most `side` pixels."""
    import cv2

    scale = side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _jpeg(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise ImageError("a face crop", "could not be encoded")
    return data.tobytes()
