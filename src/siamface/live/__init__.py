"""Real time: name everyone in a video (`watch`) or unlock for one claimed person (`authenticate`).

    frames ──► capture thread ──► newest frame ──► detect ──► track ──► embed new/stale tracks ──► vote
               (video.py)         (no queue)       (every     (IoU)     (every `refresh` frames)     │
                                                    frame)                                           ▼
                                                          events (JSON lines), annotated frames, window

Detection runs on every frame (it is what keeps boxes on faces); the encoder runs only on a track that is
new or whose last embedding is `refresh` processed frames old (those refreshes spread, at most one track in
`refresh` a frame), and a track's identity is the vote of its last
`votes` recognitions, so names do not flicker and CPU goes where it matters. `authenticate` grants when
`consecutive` frames in a row verify the claim on the largest face, and denies at the timeout.

The matcher is the gallery's exact or indexed search through `GalleryMatcher`, which names a face as
`Gallery.identify` does (`siamface.decision`: the 1:N threshold and the ambiguity margin, so `watch` and
`identify` give the same name; a face too close to call between two people is "ambiguous"); anything with
its attribute and two methods works (tests, other stores).

One module a job, each importing only those above it in this list:

    matcher.py       `Matcher`, `GalleryMatcher`: who is this face, is it the claimed person (the gallery's search)
    tracking.py      `Tracker`, `Track`: faces followed across frames by IoU, named by the vote of their recognitions
    results.py       `FrameResult`, `Stats`, `json_lines`: what the runners report
    watcher.py       `Watcher`: `watch`, events when a person appears, is (re)identified, leaves
    authenticate.py  `Authenticator`, `AuthDecision`: `authenticate`, the claim and the liveness gate over frames
    render.py        `annotate`, `VideoOut`: boxes and names drawn, frames to a file or a window
    loop.py          `run`: frames fed to a runner, annotated frames written out
"""

from __future__ import annotations

from .authenticate import LIVENESS_MODES, AuthDecision, Authenticator
from .loop import run
from .matcher import GalleryMatcher, Matcher
from .render import VideoOut, annotate
from .results import FrameResult, Stats, json_lines
from .tracking import Track, Tracker, iou_matrix
from .watcher import Watcher

__all__ = [
    "LIVENESS_MODES",
    "AuthDecision",
    "Authenticator",
    "FrameResult",
    "GalleryMatcher",
    "Matcher",
    "Stats",
    "Track",
    "Tracker",
    "VideoOut",
    "Watcher",
    "annotate",
    "iou_matrix",
    "json_lines",
    "run",
]
