"""`watch`: 1:N in a video, every tracked face named, with events when a person appears, is (re)identified
or leaves.

With ``liveness="passive"`` watch decides like `authenticate`: each track is a passive capture session
(`siamface.liveness.session.CaptureSession`, fed by `session.see`, the same code as `authenticate` and the
service: camera rate, no repeated picture, the passive check on every frame, a 3-D movement, restarts when
the face leaves), and a track is named only once its session passed; until then it is ``checking``, after a
failed session ``not-live`` (a new session then begins on its next frames), with a ``liveness`` event for
each decided session. A track's liveness is bound to the person it was gathered on: the track is embedded on
the frame its session passes, and whenever it is embedded (new, refreshed, passed) its embedding is compared
with the track's first (the model's own 1:1 threshold, as a capture session compares faces); an unlike one
(the tracker kept the track by position through a cut: an accomplice's movement, then the victim's photo in
their place) starts the track's liveness and its votes again from that face, the one compared with from then
on, so that no one's name is reported live on someone else's movement.

With liveness off a track's votes are bound to its person the same way: two people crossing (the tracker
keeps each track on the face it can see while one hides the other, then on the other's face), or a film's
cut, start the vote again from the new face at its next embedding, within `refresh` frames, instead of
naming one person with the other's votes until three recognitions outvote them."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..errors import ConfigError
from ..video import Frame
from .matcher import Matcher
from .results import FrameResult, Stats, now_iso
from .tracking import Track, Tracker

#: what a track is called while its liveness session runs, and after one failed
CHECKING, NOT_LIVE = "checking", "not-live"
WATCH_LIVENESS = ("off", "passive")


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
        liveness: str = "off",
        passive=None,
        rules=None,
    ) -> None:
        if refresh < 1 or votes < 1:
            raise ConfigError("refresh and votes must be >= 1")
        if liveness not in WATCH_LIVENESS:
            raise ConfigError(f"watch liveness must be one of {', '.join(WATCH_LIVENESS)}, not {liveness!r}")
        self.liveness = liveness
        self.passive = None
        if liveness == "passive":
            from ..liveness import PassiveCheck
            from ..liveness.session import CaptureRules

            self.passive = passive or PassiveCheck()
            self.rules = rules or CaptureRules()
        self.captures: dict[int, object] = {}  # track id -> its capture session
        self.not_live: set[int] = set()  # tracks whose last session failed
        self.bound: dict[int, np.ndarray] = {}  # track id -> the embedding its votes and liveness are bound to
        self.same_person = float(pipeline.encoder.info.threshold)  # the model's own 1:1 threshold
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
            "person": self.label(track),
            "score": None if np.isnan(track.score) else round(track.score, 4),
            **self.matcher.thresholds.identify.describe_1n(),
            **extra,
        }
        self.on_event(event)

    def label(self, track: Track) -> str:
        """The track's name as watch reports it: with liveness on, only once its session passed."""
        if self.liveness == "off":
            return track.label
        capture = self.captures.get(track.id)
        if capture is not None and capture.state == "passed":
            return track.label
        return NOT_LIVE if track.id in self.not_live else CHECKING

    def _check(self, frame: Frame, faces, tracks: list[Track]) -> dict[int, object]:
        """Feed each track's capture session this frame's face (or its absence); the sessions decided on this
        frame, by track id (their events wait for `_bound`: a pass holds only for the person it began on)."""
        from ..liveness.session import CaptureSession, see

        keypoints = faces.data.get("keypoints")
        if keypoints is None and len(faces):
            raise ConfigError(f"liveness needs a detector with 5 keypoints (retinaface, mtcnn), not {faces.detector!r}")
        here = {track.id: i for i, track in enumerate(tracks)}
        decided = {}
        for track in self.tracker.tracks:
            capture = self.captures.get(track.id)
            if capture is not None and capture.state == "passed":
                continue
            if capture is None or capture.state == "failed":
                capture = self.captures[track.id] = CaptureSession("passive", self.rules)
            i = here.get(track.id)
            seen = None if i is None else see(frame.image, faces.boxes[i], keypoints[i], self.passive)[0]
            result = capture.observe(frame.time, seen)
            if result is not None:
                decided[track.id] = result
        return decided

    def _bound(self, track: Track, embedding: np.ndarray) -> float | None:
        """Whether the track's face is still the person its votes (and liveness) are bound to (its first
        embedding, or the first since its face became another person's): None when it is, else the similarity,
        and the track's votes and liveness start again from this face (with liveness on, a new session from
        the next frame: the track is `checking` until it passes)."""
        from ..liveness.session import CaptureSession, cosine

        vector = np.asarray(embedding, np.float32).ravel()
        score = cosine(self.bound.setdefault(track.id, vector), vector)
        if score >= self.same_person:
            return None
        self.bound[track.id] = vector
        track.votes.clear()
        if self.liveness != "off":
            self.captures[track.id] = CaptureSession("passive", self.rules)
            self.not_live.discard(track.id)
        return score

    def _liveness_event(self, frame: Frame, track: Track, result, unlike: float | None) -> None:
        """The `liveness` event of a session decided on this frame (`result`), or of a track's liveness
        withdrawn because its face became another person's (`unlike`: the similarity)."""
        if unlike is None:
            (self.not_live.discard if result.passed else self.not_live.add)(track.id)
            self._event("liveness", frame, track, live=result.passed, liveness=result.to_dict())
            return
        reason = (
            f"the face became another person's (similarity {unlike:.2f} to the face its liveness session began "
            f"with, under the same-person threshold {self.same_person:g}): its liveness starts again"
        )
        evidence = {"passed": False, "reason": reason, "similarity": round(unlike, 4)}
        self._event("liveness", frame, track, live=False, liveness=evidence)

    def _due(self, tracks: list[Track]) -> list[int]:
        """Indices of the tracks to embed on this frame: every new track, and of the tracks already recognised
        those whose last embedding is `refresh` processed frames old, the oldest first, at most
        ceil(tracks / refresh) of them. Counting frames processed, not frame numbers: a camera paced faster
        than the loop skips frames, and counting its numbers would re-embed every face on every frame, which
        slows the loop and makes it skip more. The cap spreads the refreshes of faces that appeared together
        over several frames instead of embedding them all on one (a latency spike every `refresh` frames)."""
        now = self.stats.frames
        new = [i for i, t in enumerate(tracks) if not t.votes]
        old = sorted(
            (i for i, t in enumerate(tracks) if t.votes and now - t.embedded_frame >= self.refresh),
            key=lambda i: tracks[i].embedded_frame,
        )
        return sorted(new + old[: -(-len(tracks) // self.refresh)])

    def process(self, frame: Frame) -> FrameResult:
        self._last_frame = frame  # first: a run stopped within this frame still says who left (`finish`)
        faces = self.pipeline.detect(frame.image)
        tracks, _, ended = self.tracker.update(faces.boxes, frame.index)
        decided = self._check(frame, faces, tracks) if self.liveness != "off" else {}
        stale = self._due(tracks)
        if decided:  # a pass is confirmed by the face it passed on: embedded on this frame
            stale = sorted(set(stale) | {i for i, t in enumerate(tracks) if t.id in decided and decided[t.id].passed})
        unlike: dict[int, float] = {}
        if stale:
            subset = self.pipeline.embed(frame.image, faces[np.array(stale)])
            for i, embedding, (name, score) in zip(stale, subset.embeddings, self.matcher.identify(subset.embeddings)):
                track = tracks[i]
                withdrawn = self._bound(track, embedding)
                if withdrawn is not None and self.liveness != "off":  # its liveness event
                    unlike[track.id] = withdrawn
                track.votes.append((name, score))
                track.embedded_frame = self.stats.frames
                track.decide()
            self.stats.embedded += len(stale)
        for track in self.tracker.tracks:  # a session may fail on a frame without its face (a gap, the timeout)
            if track.id in decided or track.id in unlike:
                self._liveness_event(frame, track, decided.get(track.id), unlike.get(track.id))
        for track in tracks:
            shown = self.label(track)
            if track.announced is None and track.votes:  # announced before the event: a run stopped while
                track.announced = shown  # it is written still says the face left (`finish`)
                self._event("appeared", frame, track)
            elif track.announced is not None and track.announced != shown:
                previous, track.announced = track.announced, shown
                self._event("identified", frame, track, previous=previous)
        for track in ended:
            if track.announced is not None:
                self._event("left", frame, track, frames=track.last_frame - track.first_frame + 1)
            self.captures.pop(track.id, None)
            self.bound.pop(track.id, None)
            self.not_live.discard(track.id)
        latency = (time.perf_counter() - frame.captured) * 1000
        self.stats.frames += 1
        self.stats.latencies_ms.append(latency)
        return FrameResult(
            frame,
            faces,
            [self.label(t) for t in tracks],
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
