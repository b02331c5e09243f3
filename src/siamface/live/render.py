"""What a run looks like: `annotate` draws a frame's boxes, names and scores; `VideoOut` writes annotated
frames to a video file and/or a window."""

from __future__ import annotations

import os
import re
import sys

import numpy as np

from ..decision import AMBIGUOUS, UNKNOWN
from ..errors import ConfigError
from .results import FrameResult
from .watcher import CHECKING, NOT_LIVE

#: The suffixes `VideoOut` writes (.avi as MJPG, the others as mp4v): OpenCV opens no writer for other ones,
#: so they are refused before the first frame instead of after it.
WRITABLE_VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v"})


def annotate(result: FrameResult, fps: float | None = None) -> np.ndarray:
    """The frame with boxes, names and scores (and the processing rate) drawn on it."""
    import cv2

    from ..draw import GREEN, RED, YELLOW, draw_faces

    labels, colors = [], []
    for i in range(len(result.faces)):
        name = result.labels[i] if i < len(result.labels) else ""
        score = result.scores[i] if i < len(result.scores) else float("nan")
        labels.append(f"{name} {score:.2f}" if name and not np.isnan(score) else name)
        colors.append({UNKNOWN: RED, AMBIGUOUS: YELLOW, CHECKING: YELLOW, NOT_LIVE: RED}.get(name, GREEN))
    out = draw_faces(result.frame.image, result.faces, labels, colors)
    if fps is not None:
        cv2.putText(out, f"{fps:.1f} fps", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2, cv2.LINE_AA)
    return out


class VideoOut:
    """Annotated frames to a video file (.mp4: mp4v, .avi: MJPG) and/or a window (`show`)."""

    def __init__(self, path: str | None, fps: float, show: bool = False, title: str = "siamface") -> None:
        import cv2

        self.path, self.fps, self.show, self.title = path, fps, show, title
        self._writer = None
        self._size = (0, 0)  # the video's (width, height): its first frame's
        if path and os.path.splitext(path)[1].lower() not in WRITABLE_VIDEO_SUFFIXES:
            raise ConfigError(f"{path}: cannot write video (use .mp4 or .avi)")
        folder = os.path.dirname(path or "") or "."
        if path and not os.path.isdir(folder):  # the writer opens on the first frame: said before it, rightly
            raise ConfigError(f"{path}: cannot write video: no such folder {folder}")
        if show and re.search(r"GUI:\s+NONE", cv2.getBuildInformation()):
            raise ConfigError(
                "--show needs an OpenCV build with a GUI; this one is headless "
                "(opencv-python-headless). Use --out FILE instead."
            )
        if (
            show
            and sys.platform.startswith("linux")
            and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY")
        ):
            raise ConfigError("--show: no display here (DISPLAY is not set). Use --out FILE instead.")

    def write(self, rgb: np.ndarray) -> bool:
        """Write one frame; False when the window was closed (q or Esc)."""
        import cv2

        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if self.path:
            if self._writer is None:
                fourcc = "MJPG" if self.path.lower().endswith(".avi") else "mp4v"
                self._writer = cv2.VideoWriter(
                    self.path, cv2.VideoWriter_fourcc(*fourcc), self.fps, (bgr.shape[1], bgr.shape[0])
                )
                if not self._writer.isOpened():
                    raise ConfigError(f"{self.path}: cannot write video (use .mp4 or .avi)")
                self._size = (bgr.shape[1], bgr.shape[0])
            self._writer.write(_fit(bgr, self._size))
        if self.show:
            cv2.imshow(self.title, bgr)
            if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                return False
        return True

    def close(self) -> None:
        import cv2

        if self._writer is not None:
            self._writer.release()
        if self.show:
            cv2.destroyAllWindows()


def _fit(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The frame scaled to fit the video's size (width, height), centred on black: a video file has one frame
    size, and OpenCV's writer drops a frame of another size without an error (a folder of frames of several
    sizes, a stream whose resolution changes)."""
    import cv2

    width, height = size
    if (bgr.shape[1], bgr.shape[0]) == size:
        return bgr
    scale = min(width / bgr.shape[1], height / bgr.shape[0])
    w, h = max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale))
    out = np.zeros((height, width, 3), np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    out[y : y + h, x : x + w] = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
    return out
