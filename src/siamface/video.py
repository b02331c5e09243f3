"""Video in: cameras, video files, streams and folders of frames as one iterator of timestamped RGB frames,
and the capture thread that keeps only the newest frame.

    with open_source(0) as source:                 # webcam 0; "clip.mp4"; "rtsp://..."; a folder of images
        for frame in source:                       # Frame(index, time, image RGB uint8, captured)
            ...

`FrameSource` reads synchronously (every frame of a file, in order). `LatestFrameReader` runs a source on
its own thread and hands the consumer the newest frame only: when recognition is slower than the camera,
frames are dropped at the source instead of queueing, so latency stays bounded. A file read through it
loses nothing unless it is paced (``realtime=True``), which plays it at its own frame rate like a camera.

A camera that is missing or busy is a `SourceError` at once; a live source that stops delivering frames
is reopened a bounded number of times (`reconnects`), then a `SourceError`; nothing waits forever.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._files import IMAGE_SUFFIXES
from .errors import ConfigError, SourceError

log = logging.getLogger(__name__)

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
#: Seconds a live source may deliver nothing before it counts as disconnected.
READ_TIMEOUT_S = 5.0
#: Frames of a file in a row that may fail to decode before its end is taken as reached (a damaged region is
#: skipped; a header stating a billion frames is not read a billion times).
DAMAGED_FRAMES_IN_A_ROW = 25


@dataclass(frozen=True)
class Frame:
    """One frame: its number in the source, its time in seconds (its time stamp in a file, seconds since the
    start for a live source), the RGB image, and ``time.perf_counter()`` when it was captured."""

    index: int
    time: float
    image: np.ndarray
    captured: float


def camera_index(spec: object) -> int | None:
    """The camera a source names (``0``, ``"0"``, ``" 1 "``), or None: ASCII digits only (``"²"`` and ``"٣"`` are
    digits to Python, not camera numbers) and at most 2**31 - 1, what OpenCV takes."""
    if isinstance(spec, str):
        text = spec.strip()
        spec = int(text) if text.isascii() and text.isdecimal() else None
    if isinstance(spec, int) and not isinstance(spec, bool) and 0 <= spec < 2**31:
        return spec
    return None


def describe_source(spec: str | int | os.PathLike) -> str:
    """The source's name in messages and logs. A stream URL's user name and password (``rtsp://user:pass@cam``)
    and its query (``?user=admin&pwd=...``: how cameras take them) are starred out, so that no error line, log
    or thread name carries them."""
    if camera_index(spec) is not None or isinstance(spec, int):
        return f"camera {int(spec)}"
    text = os.fspath(spec)
    if text.lower().startswith(STREAM_PREFIXES):
        scheme, _, rest = text.partition("://")
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = "***@" + authority.rpartition("@")[2]
        path, query, _ = path.partition("?")
        text = f"{scheme}://{authority}{slash}{path}{'?***' if query else ''}"
    return text


class FrameSource:
    """Frames of one source, read in order. Use `open_source` to make one; close it (or use ``with``)."""

    live: bool = False
    fps: float = 25.0
    frame_count: int = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FolderSource(FrameSource):
    """The images of a folder, in name order, at a nominal `fps`."""

    def __init__(self, folder: Path, fps: float = 25.0) -> None:
        super().__init__(str(folder))
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.fps = fps

    def __iter__(self) -> Iterator[Frame]:
        from .image import load_image

        for i, path in enumerate(self.files):
            yield Frame(i, i / self.fps, load_image(path), time.perf_counter())


class CaptureSource(FrameSource):
    """An OpenCV ``VideoCapture``: a camera index, a video file or a stream URL."""

    def __init__(self, spec: str | int, *, reconnects: int = 3, read_timeout: float = READ_TIMEOUT_S) -> None:
        super().__init__(describe_source(spec))
        self.spec = spec
        self.live = isinstance(spec, int) or str(spec).lower().startswith(STREAM_PREFIXES)
        self.reconnects = reconnects
        self.read_timeout = read_timeout
        # a read and a release never overlap (OpenCV's capture is not safe across threads), and a capture
        # opened by a reconnect after `close` is released at once, not left holding the camera
        self._lock = threading.Lock()
        self._closed = False
        self._capture = self._open()
        self._refuse_huge_frames()
        fps = float(self._capture.get(_cv2().CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else 25.0
        #: frames in a file as its container states them (0: unknown or live)
        self.frame_count = 0 if self.live else max(0, int(self._capture.get(_cv2().CAP_PROP_FRAME_COUNT) or 0))

    def _open(self):
        cv2 = _cv2()
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own messages: quiet unless asked
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our error says it, once
        try:
            if self.live and not isinstance(self.spec, int):  # FFmpeg's own timeouts are 30 s: a stalled stream
                ms = int(self.read_timeout * 1000)  # would outlast the reader's wait, and never be reopened
                timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2 * ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
                capture = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG, timeouts)
            else:
                capture = cv2.VideoCapture(self.spec)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not capture.isOpened():
            capture.release()
            what = (
                "cannot be opened (no such camera, it is busy, or access is denied)"
                if isinstance(self.spec, int)
                else "cannot be opened as a video (unknown format or codec)"
            )
            raise SourceError(f"{self.name}: {what}")
        return capture

    def _refuse_huge_frames(self) -> None:
        """`SourceError` when the source's frames, as its header states them, are over the pixel limit of an
        image (`MAX_PIXELS`): a small file of a few huge frames would take gigabytes once decoded."""
        from .image import MAX_PIXELS

        cv2 = _cv2()
        width, height = (int(self._capture.get(p) or 0) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > MAX_PIXELS:
            self.close()
            raise SourceError(f"{self.name}: frames of {width}x{height} pixels, more than the limit of {MAX_PIXELS}")

    def __iter__(self) -> Iterator[Frame]:
        cv2 = _cv2()
        index, start, failures, damaged, last = 0, time.perf_counter(), 0, 0, 0.0
        while True:
            with self._lock:
                if self._closed or self._capture is None:
                    return
                ok, bgr = self._capture.read()
                stamp = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000 if ok and not self.live else math.nan
            if not ok or bgr is None:
                if not self.live:
                    # a frame the decoder cannot read before the end its header states is damaged, not the end:
                    # the frames after it were lost without a word (half a recording watched, exit 0)
                    failures += 1
                    if index < self.frame_count and failures <= DAMAGED_FRAMES_IN_A_ROW:
                        index, damaged = index + 1, damaged + 1
                        continue
                    self._ended(index - (failures - 1), damaged - (failures - 1))
                    return
                failures += 1
                if failures > self.reconnects:
                    raise SourceError(f"{self.name}: no frames after {self.reconnects} reconnects")
                log.warning("%s: no frame; reconnecting (%d/%d)", self.name, failures, self.reconnects)
                with self._lock:
                    if self._closed:
                        return
                    self._capture.release()
                time.sleep(min(2.0, 0.25 * 2**failures))
                try:
                    capture = self._open()
                except SourceError:
                    continue
                with self._lock:
                    if self._closed:  # closed while it was being opened: nobody will read it
                        capture.release()
                        return
                    self._capture = capture
                continue
            failures = 0
            now = time.perf_counter()
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)
            if self.live:
                t = now - start
            else:  # the frame's own time stamp: with a variable frame rate (phones record so) or a damaged frame
                t = stamp if math.isfinite(stamp) and stamp >= 0 else index / self.fps  # skipped, index / fps drifts
                t = last = max(t, last)
            yield Frame(index, t, rgb, now)
            index += 1

    def _ended(self, frames: int, damaged: int) -> None:
        """Say how a file ended when it was not as its header states: damaged frames skipped, or the end
        reached before the frames stated (a cut or damaged recording)."""
        if damaged:
            log.warning("%s: %d damaged frame(s) skipped", self.name, damaged)
        if frames < self.frame_count - 1:  # a container's count may be an estimate one frame off
            log.warning(
                "%s: ended after %d of the %d frames its header states (cut short or damaged)",
                self.name,
                frames,
                self.frame_count,
            )

    def close(self) -> None:
        self._closed = True
        with self._lock:  # after a read under way (at most its read timeout)
            if self._capture is not None:
                self._capture.release()
                self._capture = None


def open_source(spec: str | int | os.PathLike, **options) -> FrameSource:
    """A frame source from a camera index (``0`` or ``"0"``), a video file, a stream URL or a folder of
    images. Raises `SourceError` when it cannot be opened."""
    if camera_index(spec) is not None:
        return CaptureSource(camera_index(spec), **options)
    if isinstance(spec, int):
        raise SourceError(f"camera {spec}: no such camera (a camera is a number from 0 to {2**31 - 1})")
    text = os.fspath(spec)
    if text.lower().startswith(STREAM_PREFIXES):
        return CaptureSource(text, **options)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path)
    if not path.is_file():  # a FIFO or a device exists: "no such file" misled
        what = "not a video file (a FIFO, device or socket)" if path.exists() else "no such file, folder or camera"
        raise SourceError(f"{text}: {what}")
    if path.stat().st_size == 0:
        raise SourceError(f"{text}: empty file")
    return CaptureSource(str(path), **options)


class LatestFrameReader:
    """Reads a source on its own thread; `get` returns the newest frame not yet taken.

    ``drop=True`` (live sources, paced files): a frame arriving before the previous one was taken replaces
    it (counted in `dropped`). ``drop=False``: the reader waits for the consumer (a file, every frame).
    ``realtime=True`` paces a file at its frame rate, as a camera would deliver it.
    Iterate over it to get frames until the source ends; a source error is raised in the consumer.
    """

    def __init__(
        self, source: FrameSource, *, drop: bool | None = None, realtime: bool = False, max_frames: int | None = None
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames must be >= 1, not {max_frames!r}")
        self.source = source
        self.realtime = realtime and not source.live
        self.drop = (source.live or self.realtime) if drop is None else drop
        self.max_frames = max_frames
        self.dropped = 0
        self.read = 0
        self._slot: Frame | None = None
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture {source.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.perf_counter()
        frames = iter(self.source)
        try:
            while not self._stop.is_set():
                if not self.drop:  # lossless: read the next frame only when it can be taken,
                    with self._cond:  # so that its capture time is not spent waiting in line
                        while self._slot is not None and not self._stop.is_set():
                            self._cond.wait(0.1)
                frame = next(frames, None)
                if frame is None or self._stop.is_set():
                    break
                if self.realtime:
                    delay = start + frame.time - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    frame = Frame(frame.index, frame.time, frame.image, time.perf_counter())
                with self._cond:
                    if self._slot is not None:
                        self.dropped += 1
                    self._slot = frame
                    self.read += 1
                    self._cond.notify_all()
                if self.max_frames is not None and self.read >= self.max_frames:
                    break
        except BaseException as exc:  # handed to the consumer
            self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, or None at the end of the source (or after `timeout` seconds without one)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None and not self._done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)
            frame, self._slot = self._slot, None
            self._cond.notify_all()
        if frame is None and self._error is not None:
            error, self._error = self._error, None
            raise error if isinstance(error, SourceError) else SourceError(f"{self.source.name}: {error}")
        return frame

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.get(timeout=READ_TIMEOUT_S * 4 if self.source.live else None)
            if frame is None:
                if self._done or not self.source.live:
                    return
                raise SourceError(f"{self.source.name}: no frame for {READ_TIMEOUT_S * 4:.0f} s")
            yield frame

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._slot = None
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self.source.close()

    def __enter__(self) -> LatestFrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cv2():
    import cv2

    return cv2
