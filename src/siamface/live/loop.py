"""The loop: frames fed to a `Watcher` or `Authenticator` until they end or the decision is made, annotated
frames written out."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from ..video import Frame
from .render import VideoOut, annotate
from .results import Stats


def run(
    frames: Iterable[Frame], runner, out: VideoOut | None = None, *, stop_when_decided: bool = False, reader=None
) -> Stats:
    """Feed `frames` to a `Watcher` or `Authenticator` until they end (or the decision is made); write
    annotated frames to `out`. Returns the runner's stats (fps over the whole run)."""
    start = time.perf_counter()
    window: deque[float] = deque(maxlen=30)
    try:
        for frame in frames:
            result = runner.process(frame)
            window.append(time.perf_counter())
            if out is not None:
                fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else None
                if not out.write(annotate(result, fps)):
                    break
            if stop_when_decided and getattr(runner, "decision", None) is not None:
                break
    finally:
        runner.stats.seconds = time.perf_counter() - start
        if reader is not None:
            runner.stats.dropped = reader.dropped
        try:  # the video first: the last events may block (a reader that stopped reading them) or fail
            if out is not None:
                out.close()
        finally:
            runner.finish()
    return runner.stats
