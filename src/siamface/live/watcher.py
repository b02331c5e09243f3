"""`watch`: 1:N in a video, every tracked face named, with events when a person appears, is (re)identified
or leaves."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from ..video import Frame
from .matcher import Matcher
from .results import FrameResult, Stats, now_iso
from .tracking import Track, Tracker


class Watcher:
    """1:N in a video: name every tracked face, with events when a person appears, is (re)identified or
    leaves. Call `process(frame)` per frame, then `finish()`."""

    def __init__(
        self,
        pipeline,
        matcher: Matcher,
        *,
        refresh: int = 10,
        votes: int = 5,
        max_missed: int = 10,
        on_event: Callable[[dict], None] | None = None,
    ) -> None:
        if refresh < 1 or votes < 1:
            raise ConfigError("refresh and votes must be >= 1")
        self.pipeline = pipeline
        self.matcher = matcher
        self.refresh = refresh
        self.tracker = Tracker(max_missed=max_missed, votes=votes)
        self.on_event = on_event or (lambda event: None)
        self.stats = Stats()
        self._last_frame: Frame | None = None

    def _event(self, kind: str, frame: Frame, track: Track, **extra) -> None:
        event = {
            "event": kind,
            "time": now_iso(),
            "video_time": round(frame.time, 3),
            "frame": frame.index,
            "track": track.id,
            "person": track.label,
            "score": None if np.isnan(track.score) else round(track.score, 4),
            **self.matcher.thresholds.identify.describe_1n(),
            **extra,
        }
        self.on_event(event)

    def process(self, frame: Frame) -> FrameResult:
        faces = self.pipeline.detect(frame.image)
        tracks, _, ended = self.tracker.update(faces.boxes, frame.index)
        stale = [i for i, t in enumerate(tracks) if frame.index - t.embedded_frame >= self.refresh]
        if stale:
            subset = self.pipeline.embed(frame.image, faces[np.array(stale)])
            for i, (name, score) in zip(stale, self.matcher.identify(subset.embeddings)):
                track = tracks[i]
                track.votes.append((name, score))
                track.embedded_frame = frame.index
                track.decide()
            self.stats.embedded += len(stale)
        for track in tracks:
            if track.announced is None and track.votes:
                self._event("appeared", frame, track)
                track.announced = track.label
            elif track.announced is not None and track.announced != track.label:
                self._event("identified", frame, track, previous=track.announced)
                track.announced = track.label
        for track in ended:
            if track.announced is not None:
                self._event("left", frame, track, frames=track.last_frame - track.first_frame + 1)
        latency = (time.perf_counter() - frame.captured) * 1000
        self.stats.frames += 1
        self.stats.latencies_ms.append(latency)
        self._last_frame = frame
        return FrameResult(
            frame,
            faces,
            [t.label for t in tracks],
            [t.score for t in tracks],
            [t.id for t in tracks],
            latency,
            len(stale),
        )

    def finish(self) -> None:
        """End every open track (the video ended): one "left" event each."""
        if self._last_frame is None:
            return
        for track in self.tracker.tracks:
            if track.announced is not None:
                self._event("left", self._last_frame, track, frames=track.last_frame - track.first_frame + 1)
        self.tracker.tracks = []
