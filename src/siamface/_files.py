"""Files: which ones are images or videos (by suffix), writing one so that a reader never sees half of it
(temp file in the same folder, fsync, rename), hashing one, and caching a converted model."""

from __future__ import annotations

import functools
import glob
import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigError, ModelError

log = logging.getLogger(__name__)

#: The suffixes (lower case) of the image files siamface reads from a folder: what `siamface.image.load_image`
#: decodes (Pillow: JPEG, PNG, BMP, PGM/PPM/PBM, TIFF, WebP, GIF's first frame). One set for every folder
#: reader: enrollment, evaluation and training datasets, a folder of frames, the liveness data.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff", ".webp", ".gif"}
)
#: Photo formats of phones and cameras that siamface does not decode (HEIF/HEIC, AVIF, JPEG XL, cameras' raw
#: files). A folder's walk lists them beside `IMAGE_SUFFIXES` (`WALKED_PHOTO_SUFFIXES`), so that each is reported
#: as a file that could not be read: passed over in silence, `find` said "not found" of a person in every photo
#: of an iPhone's folder (a raw file that holds a TIFF preview Pillow reads is read as that preview).
UNDECODED_PHOTO_SUFFIXES = frozenset(
    {".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"}
)
WALKED_PHOTO_SUFFIXES = IMAGE_SUFFIXES | UNDECODED_PHOTO_SUFFIXES
#: The suffixes (lower case) of the video files read frame by frame through OpenCV's ``VideoCapture``.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


@contextmanager
def atomic_file(target: Path, *, mode: int | None = None, fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write that appears at `target` whole when the block ends, or not at all when it
    raises: a temporary file in the same folder (created with `mode`, e.g. 0o600, when given), flushed to
    disk unless `fsync` is False (a cache that can be rebuilt), then renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextmanager
def exclusive_lock(target: Path, what: str) -> Iterator[None]:
    """Serialise the processes that change `target` (read, change, write back): an advisory lock (``flock``) on
    ``<target>.lock`` beside it, made 0600 and never opened through a link planted under its name (its target
    would be created or opened). Readers need no lock: `atomic_file` shows them the whole file before or after.
    `what` names the file in the `ConfigError` raised when the lock cannot be taken. Its folder must exist."""
    lock_path = target.with_name(target.name + ".lock")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock_path, flags, 0o600)
    except OSError as exc:
        why = "a link (not followed)" if lock_path.is_symlink() else (exc.strerror or str(exc))
        raise ConfigError(f"{lock_path}: cannot lock {what}: {why}") from None
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: one writer at a time is the user's care
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def atomic_leftovers(target: Path) -> list[Path]:
    """The temporary files `atomic_file` began for `target` and never renamed into place: what a process
    killed while writing it left behind (or one writing it now)."""
    return sorted(target.parent.glob(f".{glob.escape(target.name)}.*.tmp"))


#: A temporary file of `atomic_file` untouched for this long (seconds) was left by a process that died while
#: writing it: the next write of the same target removes it (a writer at work now keeps touching its own).
STALE_LEFTOVER_S = 3600.0


def _remove_stale_leftovers(target: Path) -> None:
    """Remove this user's temporary files of `target` that a killed writer left (`STALE_LEFTOVER_S`): hidden,
    they kept what they held (a gallery export's templates, a FAISS index) after it was deleted everywhere else,
    and each took the target's size again."""
    now = time.time()
    for leftover in atomic_leftovers(target):
        try:
            info = leftover.lstat()
            if info.st_uid == os.geteuid() and stat.S_ISREG(info.st_mode) and now - info.st_mtime > STALE_LEFTOVER_S:
                leftover.unlink()
                log.info("%s: removed, left by a writer that died", leftover)
        except OSError as exc:
            log.debug("%s: not removed (%s)", leftover, exc)


def open_for_reading(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """(descriptor, stat) of `path` opened for reading without waiting (a FIFO without a writer would block the
    open for ever), asked with ``fstat``: what the caller checks (a regular file, its size) is what it reads,
    even when another file took the name after a check by name. A regular file's descriptor is blocking again;
    the caller closes it. OSError as ``os.open`` raises it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if hasattr(os, "O_NONBLOCK") and stat.S_ISREG(info.st_mode):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def atomic_write_bytes(target: Path, data: bytes, *, mode: int | None = None) -> None:
    with atomic_file(target, mode=mode) as f:
        f.write(data)


def cached_conversion(source: Path, target: Path, build: Callable[[], bytes]) -> Path:
    """`target` if it exists, else ``build()`` written there atomically; errors become `ModelError`.
    Unchecked: for a cache whose content cannot be verified, prefer `cached_model`."""
    if target.is_file() and target.stat().st_size > 0:
        return target
    _write_conversion(source, target, build())
    return target


def _write_conversion(source: Path, target: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise ModelError(f"cannot write the converted model of {source} to {target.parent}: {exc}") from None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$SIAMFACE_CACHE``, else ``$XDG_CACHE_HOME/siamface``, else ``~/.cache/siamface``."""
    env = os.environ.get("SIAMFACE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "siamface"
    return Path.home() / ".cache" / "siamface"


_digests: dict[tuple, str] = {}
#: The sha256 of the bytes `cached_model` accepted at each cached model's path (resolved), in this process:
#: `accepted_digest` gives it to the loader, which loads a model only when its bytes still hash to it.
_accepted: dict[str, str] = {}


def _source_digest(source: Path) -> str:
    """`source`'s sha256, hashed once per process for a given path, size and modification time (a process
    that builds many pipelines reads a large model file once)."""
    stat = source.stat()
    key = (str(source.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = file_sha256(source)
    return _digests[key]


def cached_model(
    source: str | Path,
    stem: str,
    version: int,
    build: Callable[[], bytes],
    *,
    cache_dir: str | Path | None = None,
    what: str = "model file",
) -> Path:
    """The ONNX conversion of `source`, made by ``build()`` into the cache dir, checked before use: the file
    name holds `stem`, the first 16 hex digits of the source's sha256 and the converter `version`.

    The cached file is a cache, never the truth. It is used when its bytes hash to the conversion's hash
    shipped in the package (`siamface._conversions`, where whoever can write the cache folder cannot change
    it); for a source not listed there, or a platform whose conversion gives other bytes, when it equals a
    conversion made again now. Otherwise (replaced, truncated, another valid graph) it is converted again
    and rewritten, with a warning. Written atomically, so a reader never sees a half-written model; load it
    with ``shared_session(path, ..., sha256=accepted_digest(path))``, which checks the bytes it hands to ONNX
    Runtime."""
    from ._conversions import KNOWN_CONVERSIONS

    source = Path(source)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        digest = _source_digest(source)
    except OSError as exc:
        raise ModelError(f"cannot read {what} {source}: {exc}") from None
    target = cache / f"{stem}-{digest[:16]}-c{version}.onnx"
    expected = KNOWN_CONVERSIONS.get((digest, int(version)))
    try:
        cached = target.read_bytes()
    except FileNotFoundError:
        cached = None
    except OSError as exc:
        log.warning("%s: cannot read the cached converted model (%s): converting %s again", target, exc, source)
        cached = None
    found = hashlib.sha256(cached).hexdigest() if cached is not None else None
    if found is not None and found == expected:
        _accepted[str(target.resolve())] = found
        return target
    fresh = build()
    made = hashlib.sha256(fresh).hexdigest()
    if expected is not None and made != expected:
        log.info("%s: this platform's conversion differs from the one shipped; checked by converting again", source)
    if cached == fresh:
        _accepted[str(target.resolve())] = made
        return target
    if cached is not None:
        log.warning(
            "%s does not match the conversion of %s (a damaged or replaced cache file): converted again",
            target,
            source,
        )
    if target.is_symlink():  # never write through a link planted in the cache folder
        target.unlink()
    _write_conversion(source, target, fresh)
    _accepted[str(target.resolve())] = made
    return target


def accepted_digest(path: str | Path) -> str | None:
    """The sha256 `cached_model` accepted for the cached model at `path` in this process (None: not one it
    checked). Give it to `siamface._onnx.shared_session`, which loads only bytes that still hash to it."""
    return _accepted.get(str(Path(path).resolve()))


def create_private_file(path: Path) -> None:
    """Create `path` empty and readable by its owner only (0600) unless it exists; its folder is made too.

    For SQLite files that will hold biometric templates: SQLite gives the -wal and -shm files it makes
    beside a database the database's permissions. Raises OSError when the file cannot be created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:  # another process created it first: it is used like any existing file
        pass


def exposure(path: Path, *, owner: bool = True) -> tuple[str | None, str | None]:
    """(why other users may change `path`, why they may read it), each None when they may not: the file or its
    folder owned by another user (neither this process's nor root; not asked when not `owner`: whoever owns a
    folder may replace what is in it, whatever its modes), its group or others write
    bits, or its folder's without the sticky bit (anyone who may write there may replace the file); its group
    or others read bits. Group bits count only for a group others may be in: not a user private group (the
    group of one user, named as they are, which Debian and Ubuntu make for each user, with umask 002). (None,
    None) where modes mean nothing (Windows) or there is no file."""
    if os.name == "nt" or not path.exists():
        return None, None
    st, parent = path.stat(), path.parent.stat()
    mode, folder, write, read = st.st_mode, parent.st_mode, None, None
    shared = not _private_group(st.st_gid, st.st_uid)
    if owner and st.st_uid not in (os.getuid(), 0):
        write = f"{path} is owned by another user (uid {st.st_uid}), who may rewrite it"
    elif owner and parent.st_uid not in (os.getuid(), 0):
        write = f"its folder {path.parent} is owned by another user (uid {parent.st_uid}), who may replace it"
    elif mode & stat.S_IWOTH or (mode & stat.S_IWGRP and shared):
        write = f"{path} may be written by other users (mode {stat.S_IMODE(mode):04o})"
    elif (
        folder & stat.S_IWOTH or (folder & stat.S_IWGRP and not _private_group(parent.st_gid, parent.st_uid))
    ) and not folder & stat.S_ISVTX:
        write = f"its folder {path.parent} may be written by other users (mode {stat.S_IMODE(folder):04o})"
    if mode & stat.S_IROTH or (mode & stat.S_IRGRP and shared):
        read = f"{path} may be read by other users (mode {stat.S_IMODE(mode):04o})"
    return write, read


@functools.lru_cache(maxsize=64)
def _private_group(gid: int, uid: int) -> bool:
    """Is `gid` the user private group of `uid`: named as the user, their primary group, with no other member
    (listed in it, or another user's primary group)?"""
    try:
        import grp
        import pwd

        group, user = grp.getgrgid(gid), pwd.getpwuid(uid)
        others = [u.pw_name for u in pwd.getpwall() if u.pw_gid == gid and u.pw_uid != uid]
    except (ImportError, KeyError):
        return False
    return group.gr_name == user.pw_name and user.pw_gid == gid and set(group.gr_mem) <= {user.pw_name} and not others
