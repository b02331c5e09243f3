"""An embedding cache on disk, so that evaluating again (another threshold, another report) is instant.

One SQLite file (WAL journal, safe for several readers and one writer at a time) maps

    (sha256 of the image file's bytes, model name@version, detector name + options + siamface version)
        -> the largest face's embedding, or "no face"

The key is the *content* of the file, not its path: renaming or copying a dataset keeps its entries, and
byte-identical duplicates are embedded once. Anything that changes the embedding (another model version,
another detector, another ``min_face_size``/``upsample``, another class-level setting such as a detector's
``landmark_box``) is another key. Options that do not change the result (thread counts) are left out.
An unreadable image is never cached.

The cache is never the truth. Each entry carries an HMAC-SHA256 of everything in it (key, face count,
embedding bytes) under a secret key kept in siamface's config folder (``cache.key``, 0600, made on first
use: `siamface.thresholds.config_dir`), not beside the cache: whoever can write the cache folder (a shared
or world-writable one) but not the user's config folder cannot forge an entry. An entry whose HMAC does
not verify, whose bytes are not a finite vector of its stated size, or that the file cannot give back
(a damaged page) is treated as missing and embedded again (`rejected` counts them, the caller warns); a
file SQLite cannot open at all is moved aside and the cache starts empty.

Default location: ``embeddings.sqlite`` in siamface's cache folder, the one that already holds the ONNX
conversions of the models: ``$SIAMFACE_CACHE`` (a folder), else ``$XDG_CACHE_HOME/siamface``, else
``~/.cache/siamface``; so ``~/.cache/siamface/embeddings.sqlite`` by default.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .._files import (  # noqa: F401 - file_sha256 is also imported from here
    create_private_file,
    default_cache_dir,
    exposure,
    file_sha256,
    open_for_reading,
)
from ..errors import ConfigError

__all__ = [
    "CachedEmbedding",
    "CachedFaces",
    "EmbeddingCache",
    "chain_keys",
    "default_cache_path",
    "detector_key",
    "detector_options",
    "file_sha256",
    "model_key",
]

log = logging.getLogger(__name__)

FILE_NAME = "embeddings.sqlite"
SCHEMA_VERSION = 2  # 2: each entry's HMAC (entries of 1 have none: embedded again once)
KEY_FILE = "cache.key"
#: The tables an embedding cache holds (an SQLite file with any other is not one: `_refuse_foreign`).
CACHE_TABLES = frozenset({"embeddings", "meta", "faces"})
#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"

#: Detector attributes that do not change which face is found or where (left out of the key).
_NOT_IN_KEY = frozenset({"threads", "num_threads", "name"})


def default_cache_path() -> Path:
    """``embeddings.sqlite`` in siamface's cache folder: ``$SIAMFACE_CACHE``, else ``$XDG_CACHE_HOME/siamface``,
    else ``~/.cache/siamface`` (the folder that also holds the converted ONNX models)."""
    return default_cache_dir() / FILE_NAME


def model_key(info: Any) -> str:
    """``name@version`` of an encoder's `ModelInfo` (e.g. ``dlib-resnet@dlib_face_recognition_resnet_model_v1``)."""
    return f"{info.name}@{info.version}"


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def detector_options(detector: Any) -> dict[str, Any]:
    """The public, plain-valued settings of a detector (``min_face_size``, ``upsample``, thresholds...)."""
    out: dict[str, Any] = {}
    for key, value in sorted(vars(detector).items()):
        if key.startswith("_") or key in _NOT_IN_KEY or not _plain(value):
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _class_settings(detector: Any) -> dict[str, Any]:
    """Plain public class attributes (e.g. ``landmark_box``): code-level settings that change the result."""
    out: dict[str, Any] = {}
    for klass in reversed(type(detector).__mro__):
        for key, value in vars(klass).items():
            if key.startswith("_") or key in _NOT_IN_KEY or not _plain(value):
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def detector_key(detector: Any) -> str:
    """Detector name, its options and class-level settings, and the siamface version, as one string.

    E.g. ``hog {"landmark_box":null,"max_faces":null,"min_face_size":20,...} siamface=0.1.0``. Class-level
    settings (such as how boxes are mapped for the landmark model) are included so that a code change
    there does not silently reuse embeddings computed before it.
    """
    from .. import __version__

    name = getattr(detector, "name", type(detector).__name__)
    settings = {**_class_settings(detector), **detector_options(detector)}
    return f"{name} {json.dumps(settings, sort_keys=True, separators=(',', ':'))} siamface={__version__}"


def chain_keys(pipeline: Any) -> tuple[str, str]:
    """(model key, detector key) of a `Pipeline`'s embeddings: `model_key` of its encoder and `detector_key` of
    its detector, the latter marked when its chips are warped from the detector's first keypoints (the
    pipeline's keypoint refinement turned off), so that the two runs never share cached embeddings."""
    dkey = detector_key(pipeline.detector)
    if getattr(pipeline, "refine_keypoints", True) is False:
        dkey += " keypoints=unrefined"
    return model_key(pipeline.encoder.info), dkey


@dataclass(frozen=True)
class CachedEmbedding:
    """A cache entry: the embedding of the largest face (None when no face was found) and the face count."""

    embedding: np.ndarray | None
    n_faces: int

    @property
    def found(self) -> bool:
        return self.embedding is not None


class EmbeddingCache:
    """Embeddings keyed by (file sha256, model key, detector key) in one SQLite file.

    >>> with EmbeddingCache("emb.sqlite") as cache:
    ...     cache.put(sha, "dlib-resnet@v1", "hog {...}", vector, n_faces=1)
    ...     cache.get(sha, "dlib-resnet@v1", "hog {...}").embedding

    Writes are committed in batches (every `commit_every` puts, and on `flush`/`close`). One instance is
    meant for one thread; open one per thread or process (WAL lets them share the file).
    """

    def __init__(self, path: str | os.PathLike | None = None, commit_every: int = 64) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.commit_every = max(1, int(commit_every))
        self._pending = 0
        self._key = _secret_key()
        #: entries found but refused since opening (damaged, or not written by this user's siamface)
        self.rejected = 0
        self._refuse_foreign()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:  # not a database, or damaged beyond reading: start again
            self._db = None
            self._reset(exc)
        except (OSError, sqlite3.Error) as exc:
            raise self._unusable(exc) from None

    def _reset(self, exc: Exception) -> None:
        """Move a damaged cache file (and its journal) aside and start an empty one (a cache: nothing is lost
        but time)."""
        aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        log.warning("embedding cache %s is damaged (%s): moved to %s, starting empty", self.path, exc, aside)
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
        try:
            for suffix in ("", "-wal", "-shm"):
                side = Path(f"{self.path}{suffix}")
                if side.exists():
                    os.replace(side, f"{aside}{suffix}")
            self._db = self._open()
        except (OSError, sqlite3.Error) as again:
            raise self._unusable(again) from None
        self._pending = 0

    def _refuse_foreign(self) -> None:
        """`ConfigError`, the file untouched, when the cache's path holds a file that is not an embedding cache:
        not a regular file (a FIFO hung the command), not SQLite at all (``--cache people.db.keys.json``, or a
        photo, was moved aside as a damaged cache: every key gone), or the SQLite file of something else
        (``--cache people.db``: the cache's tables made the gallery one siamface no longer opens). An empty
        file, and an SQLite file too damaged to list its tables, are left to `_open` (a damaged cache is
        moved aside there)."""
        try:
            fd, info = open_for_reading(self.path)
        except FileNotFoundError:
            return
        except OSError:
            return  # `_open` says why it cannot be used
        try:
            head = os.read(fd, len(SQLITE_HEADER)) if stat.S_ISREG(info.st_mode) else None
        finally:
            os.close(fd)
        if head is None or (head and head != SQLITE_HEADER):
            what = "not a regular file" if head is None else "not an SQLite file"
            raise ConfigError(
                f"embedding cache {self.path}: {what}, so not a cache: left untouched; pass --cache PATH "
                "elsewhere (a new file) or --no-cache"
            )
        if not head:
            return
        try:
            db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True)
            try:
                names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            finally:
                db.close()
        except sqlite3.Error:
            return
        foreign = sorted(n for n in names - CACHE_TABLES if not n.startswith("sqlite_"))
        if foreign:
            raise ConfigError(
                f"embedding cache {self.path}: an SQLite file of something else (it holds {', '.join(foreign[:3])}"
                f"{' ...' if len(foreign) > 3 else ''}; a gallery?): left untouched; pass --cache PATH elsewhere "
                "(a new file) or --no-cache"
            )

    def _check_private(self) -> None:
        """`ConfigError` unless the cache file and any -wal or -shm beside it are this user's alone: not a link,
        not another user's, not readable or writable by others (`siamface._files.exposure`). In a shared cache
        folder someone else may have made them first: their file would receive the embeddings of the user's
        photos (biometric templates), and SQLite replays a -wal into its database."""
        for suffix in ("", "-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            why = f"{side} is a link" if side.is_symlink() else None
            writable, readable = exposure(side)
            why = why or writable or readable
            if why:
                raise ConfigError(
                    f"embedding cache: {why}; it would hold the embeddings of your photos: make the cache yours "
                    "alone (chmod 600, no link, in a folder others may not write), or pass --cache PATH elsewhere "
                    "or --no-cache"
                )

    def _unusable(self, exc: Exception) -> ConfigError:
        return ConfigError(
            f"embedding cache {self.path}: cannot be opened ({exc}); pass --cache PATH elsewhere or --no-cache"
        )

    def _open(self) -> sqlite3.Connection:
        create_private_file(self.path)  # embeddings are biometric templates: owner only (0600)
        self._check_private()
        db = sqlite3.connect(str(self.path), timeout=30.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings ("
                " sha256 TEXT NOT NULL, model TEXT NOT NULL, detector TEXT NOT NULL,"
                " n_faces INTEGER NOT NULL, dim INTEGER NOT NULL, embedding BLOB,"
                " created REAL NOT NULL, mac BLOB, PRIMARY KEY (sha256, model, detector)) WITHOUT ROWID"
            )
            columns = {r[1] for r in db.execute("PRAGMA table_info(embeddings)")}
            if "mac" not in columns:  # a cache of schema 1: its entries have none and are embedded again
                db.execute("ALTER TABLE embeddings ADD COLUMN mac BLOB")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    # -- reading ------------------------------------------------------------------------------------
    def get(self, sha256: str, model: str, detector: str) -> CachedEmbedding | None:
        """The cached entry, or None when this (image, model, detector) was never embedded or its entry
        does not check (see the module)."""
        return self.get_many([sha256], model, detector).get(sha256)

    def get_many(self, sha256s: Iterable[str], model: str, detector: str) -> dict[str, CachedEmbedding]:
        """Entries found for several files at once: ``{sha256: entry}`` (missing ones, and those that do not
        check, are absent)."""
        wanted = list(dict.fromkeys(sha256s))
        out: dict[str, CachedEmbedding] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            try:
                rows = self._db.execute(
                    f"SELECT sha256, n_faces, dim, embedding, mac FROM embeddings "
                    f"WHERE model=? AND detector=? AND sha256 IN ({marks})",
                    (model, detector, *chunk),
                ).fetchall()
            except sqlite3.DatabaseError as exc:  # a damaged page: every entry is embedded again
                self.rejected += len(wanted) - len(out)
                self._reset(exc)
                return out
            for sha, n_faces, dim, blob, mac in rows:
                entry = self._checked(sha, model, detector, n_faces, dim, blob, mac)
                if entry is None:
                    self.rejected += 1
                else:
                    out[sha] = entry
        return out

    def _mac(self, sha256: str, model: str, detector: str, n_faces: int, dim: int, blob: bytes | None) -> bytes:
        head = json.dumps([sha256, model, detector, int(n_faces), int(dim), blob is None]).encode()
        return hmac.new(self._key, head + b"\0" + (blob or b""), hashlib.sha256).digest()

    def _checked(self, sha, model, detector, n_faces, dim, blob, mac) -> CachedEmbedding | None:
        """The entry if it is whole and this user's siamface wrote it, else None."""
        if not isinstance(n_faces, int) or not isinstance(dim, int) or n_faces < 0 or dim < 0:
            return None
        if blob is not None and (not isinstance(blob, bytes) or len(blob) != 4 * dim or dim == 0):
            return None
        if not isinstance(mac, bytes) or not hmac.compare_digest(
            mac, self._mac(sha, model, detector, n_faces, dim, blob)
        ):
            return None
        if blob is None:
            return CachedEmbedding(None, n_faces)
        vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(vector)):
            return None
        return CachedEmbedding(vector, n_faces)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    # -- writing ------------------------------------------------------------------------------------
    def put(self, sha256: str, model: str, detector: str, embedding: np.ndarray | None, n_faces: int) -> None:
        """Store the embedding of an image's largest face, or ``None`` for "no face found"."""
        if embedding is None:
            dim, blob = 0, None
        else:
            vec = np.ascontiguousarray(np.ravel(embedding), dtype="<f4")
            dim, blob = int(vec.size), vec.tobytes()
        row = (sha256, model, detector, int(n_faces), dim, blob, time.time())
        insert = (
            "INSERT OR REPLACE INTO embeddings (sha256, model, detector, n_faces, dim, embedding, created, mac) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        try:
            self._db.execute(insert, (*row, self._mac(sha256, model, detector, n_faces, dim, blob)))
        except sqlite3.DatabaseError as exc:  # damaged under us: start an empty cache and write there
            self._reset(exc)
            self._db.execute(insert, (*row, self._mac(sha256, model, detector, n_faces, dim, blob)))
        self._pending += 1
        if self._pending >= self.commit_every:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._db.commit()
            self._pending = 0

    def close(self) -> None:
        if getattr(self, "_db", None) is not None:
            self.flush()
            self._db.close()
            self._db = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    # -- every face of a file (photo libraries) ---------------------------------------------------------
    # A table of its own, beside the largest-face entries above: (sha256, model, detector) -> every face's
    # box and embedding, and for a video (whose detector key names the sampling) each face track's times.
    def _faces_table(self) -> None:
        if not getattr(self, "_has_faces_table", False):
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(faces)")}
            if columns and "mac" not in columns:  # unsigned entries (a development build): embedded again
                self._db.execute("DROP TABLE faces")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS faces ("
                " sha256 TEXT NOT NULL, model TEXT NOT NULL, detector TEXT NOT NULL,"
                " n_faces INTEGER NOT NULL, dim INTEGER NOT NULL, boxes BLOB, embeddings BLOB, times BLOB,"
                " created REAL NOT NULL, mac BLOB, PRIMARY KEY (sha256, model, detector)) WITHOUT ROWID"
            )
            self._has_faces_table = True

    def _faces_mac(self, sha256, model, detector, n_faces, dim, boxes, vectors, times) -> bytes:
        head = json.dumps([sha256, model, detector, int(n_faces), int(dim), times is None]).encode()
        body = b"\0".join((len(b).to_bytes(8, "little") + b) for b in (boxes or b"", vectors or b"", times or b""))
        return hmac.new(self._key, head + b"\0" + body, hashlib.sha256).digest()

    def get_faces(self, sha256: str, model: str, detector: str) -> CachedFaces | None:
        """Every face cached for this (file, model, detector), or None when it was never embedded."""
        self._faces_table()
        row = self._db.execute(
            "SELECT n_faces, dim, boxes, embeddings, times, mac FROM faces WHERE sha256=? AND model=? AND detector=?",
            (sha256, model, detector),
        ).fetchone()
        if row is None:
            return None
        n, dim, boxes, vectors, times, mac = row
        entry = None
        if isinstance(mac, bytes) and hmac.compare_digest(
            mac, self._faces_mac(sha256, model, detector, n, dim, boxes, vectors, times)
        ):  # signed by this user's siamface: the same checks as a largest-face entry, then the shapes
            try:
                entry = _faces_entry((n, dim, boxes, vectors, times))
            except (TypeError, ValueError):
                entry = None
        if entry is None or not np.all(np.isfinite(entry.embeddings)) or not np.all(np.isfinite(entry.boxes)):
            log.warning("embedding cache %s: a damaged or unsigned entry of every face; embedding again", self.path)
            return None
        return entry

    def put_faces(
        self,
        sha256: str,
        model: str,
        detector: str,
        boxes: np.ndarray,
        embeddings: np.ndarray,
        times: np.ndarray | None = None,
    ) -> None:
        """Store every face of a file: boxes (n, 4), embeddings (n, d) and, for a video, times (n, 2)."""
        self._faces_table()
        boxes = np.ascontiguousarray(np.asarray(boxes).reshape(-1, 4), dtype="<f4")
        vectors = np.asarray(embeddings, dtype="<f4")
        vectors = np.ascontiguousarray(vectors.reshape(len(boxes), -1) if len(boxes) else np.zeros((0, 0), "<f4"))
        spans = None if times is None else np.ascontiguousarray(np.asarray(times).reshape(-1, 2), dtype="<f8")
        row = (
            sha256,
            model,
            detector,
            len(boxes),
            int(vectors.shape[1]),
            boxes.tobytes(),
            vectors.tobytes(),
            None if spans is None else spans.tobytes(),
        )
        self._db.execute(
            "INSERT OR REPLACE INTO faces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*row, time.time(), self._faces_mac(*row)),
        )
        self._pending += 1
        if self._pending >= self.commit_every:
            self.flush()


@dataclass(frozen=True)
class CachedFaces:
    """Every face of a file: boxes (n, 4), embeddings (n, d), and times (n, 2) in seconds for a video."""

    boxes: np.ndarray
    embeddings: np.ndarray
    times: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)


def _faces_entry(row) -> CachedFaces:
    n, dim, boxes, vectors, times = row
    n, dim = int(n), int(dim)
    return CachedFaces(
        np.frombuffer(boxes, dtype="<f4", count=4 * n).reshape(n, 4).astype(np.float32),
        np.frombuffer(vectors, dtype="<f4", count=n * dim).reshape(n, dim).astype(np.float32),
        None if times is None else np.frombuffer(times, dtype="<f8", count=2 * n).reshape(n, 2).astype(np.float64),
    )


def _secret_key() -> bytes:
    """The HMAC key of the user's cache entries: ``cache.key`` in the config folder (32 random bytes, 0600,
    made on first use). Where that folder cannot be written, or the file is one that another user owns or that
    others may read or write (`siamface._files.exposure`), a key for this process only (entries then check only
    in the process that wrote them)."""
    from ..thresholds import config_dir

    path = config_dir() / KEY_FILE
    key = secrets.token_bytes(32)
    writable, readable = exposure(path)
    if writable or readable:  # whoever may read the key (or chose it) signs entries this user's siamface trusts
        log.warning("%s: cached embeddings check only within this process", writable or readable)
        return key
    try:
        found = path.read_bytes()
        if len(found) >= 32:
            return found
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key
    except FileExistsError:  # another process made it first (or it is damaged: then this process's own)
        try:
            found = path.read_bytes()
            return found if len(found) >= 32 else key
        except OSError:
            return key
    except OSError as exc:
        log.warning("%s cannot be written (%s): cached embeddings check only within this process", path, exc)
        return key
