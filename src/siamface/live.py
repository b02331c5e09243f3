"""Real time: name everyone in a video (`watch`) or unlock for one claimed person (`authenticate`).

    frames ──► capture thread ──► newest frame ──► detect ──► track ──► embed new/stale tracks ──► vote
               (video.py)         (no queue)       (every     (IoU)     (every `refresh` frames)     │
                                                    frame)                                           ▼
                                                          events (JSON lines), annotated frames, window

Detection runs on every frame (it is what keeps boxes on faces); the encoder runs only on a track that is
new or whose last embedding is `refresh` frames old, and a track's identity is the vote of its last
`votes` recognitions, so names do not flicker and CPU goes where it matters. `authenticate` grants when
`consecutive` frames in a row verify the claim on the largest face, and denies at the timeout.

The matcher is the gallery's exact or indexed search through `GalleryMatcher`; anything with the same two
methods works (tests, other stores).
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Protocol

import numpy as np

from .errors import ConfigError
from .types import Faces
from .video import Frame

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


# -- matching ------------------------------------------------------------------------------------------
class Matcher(Protocol):
    threshold: float

    def identify(self, embeddings: np.ndarray) -> list[tuple[str | None, float]]:
        """Per embedding: the best person and similarity (person None when below the threshold)."""

    def verify(self, claim: str, embeddings: np.ndarray) -> np.ndarray:
        """Per embedding: the best similarity to the claimed person's templates."""


class GalleryMatcher:
    """`Matcher` over a `siamface.gallery.Gallery`: its index, its 1:1 threshold for `verify` and its
    (stricter) 1:N threshold for `identify`."""

    def __init__(self, gallery, threshold: float | None = None) -> None:
        self.gallery = gallery
        gallery.check_model()
        self.threshold = float(threshold) if threshold is not None else float(gallery.threshold)
        self.threshold_source = "given by the caller" if threshold is not None else gallery.threshold_source
        self.identify_threshold = float(threshold) if threshold is not None else float(gallery.identify_threshold)
        self._ids: dict[str, int] = {}  # claim -> person id: one lookup per session, not one per frame

    def _person_id(self, claim: str) -> int:
        if claim not in self._ids:
            self._ids[claim] = self.gallery.store.person(claim).id
        return self._ids[claim]

    def identify(self, embeddings: np.ndarray) -> list[tuple[str | None, float]]:
        hits = self.gallery.index.search(embeddings, k=1)
        names = self.gallery.store.names([row[0].person_id for row in hits if row])
        out: list[tuple[str | None, float]] = []
        for row in hits:
            if not row:
                out.append((None, -1.0))
                continue
            best = row[0]
            name = names.get(best.person_id, str(best.person_id))
            out.append((name if best.similarity >= self.identify_threshold else None, float(best.similarity)))
        return out

    def verify(self, claim: str, embeddings: np.ndarray) -> np.ndarray:
        """Best similarity of each embedding to the claimed person's templates (-1 when none are left:
        a person removed during the session matches nothing)."""
        _, scores = self.gallery.index.person_scores(embeddings, self._person_id(claim))
        return scores.max(axis=1) if scores.shape[1] else np.full(len(scores), -1.0)

    def log_claim(self, claim: str, accepted: bool, score: float | None, rule: str = "live") -> tuple[str, ...]:
        """Record a live 1:1 decision in the gallery's audit log (notes: why it could not be, when so)."""
        from .gallery.store import AuditRecord

        person = self.gallery.store.person(claim, metadata=False)
        return self.gallery.audit(
            [
                AuditRecord(
                    "verify",
                    person.id,
                    person.id if accepted else None,
                    score,
                    self.threshold,
                    bool(accepted),
                    rule,
                    self.gallery.check_model().name,
                )
            ]
        )


# -- tracking ------------------------------------------------------------------------------------------
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of `a` (n,4) with every box of `b` (m,4), x1 y1 x2 y2."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return (inter / np.maximum(union, 1e-9)).astype(np.float32)


@dataclass
class Track:
    """One face followed across frames."""

    id: int
    box: np.ndarray
    first_frame: int
    last_frame: int
    votes: deque = field(default_factory=lambda: deque(maxlen=5))
    embedded_frame: int = -(10**9)
    missed: int = 0
    name: str | None = None  # decided identity (None: not decided or unknown)
    score: float = float("nan")  # mean similarity of the votes for `name`
    announced: str | None = None  # the identity last reported in an event

    def decide(self) -> None:
        """Identity = the most frequent vote (unknown counts as a vote); ties go to the higher mean score."""
        if not self.votes:
            return
        counts = Counter(name for name, _ in self.votes)
        best = max(counts, key=lambda n: (counts[n], np.mean([s for m, s in self.votes if m == n])))
        self.name = best
        self.score = float(np.mean([s for m, s in self.votes if m == best]))

    @property
    def label(self) -> str:
        return self.name if self.name is not None else UNKNOWN


class Tracker:
    """Greedy IoU tracker: each detection joins the unmatched track it overlaps most (IoU ≥ `min_iou`);
    a track unseen for `max_missed` frames ends."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 10, votes: int = 5) -> None:
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.votes = votes
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: np.ndarray, frame_index: int) -> tuple[list[Track], list[Track], list[Track]]:
        """Tracks for the detections (same order as `boxes`), the tracks that started, the tracks that ended."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        overlap = iou_matrix(np.array([t.box for t in self.tracks], np.float32).reshape(-1, 4), boxes)
        assigned: list[Track | None] = [None] * len(boxes)
        used: set[int] = set()
        for flat in np.argsort(-overlap, axis=None):
            ti, di = divmod(int(flat), len(boxes))
            if overlap[ti, di] < self.min_iou:
                break
            if ti in used or assigned[di] is not None:
                continue
            used.add(ti)
            assigned[di] = self.tracks[ti]
        started = []
        for di, track in enumerate(assigned):
            if track is None:
                track = Track(self._next_id, boxes[di], frame_index, frame_index, deque(maxlen=self.votes))
                self._next_id += 1
                self.tracks.append(track)
                started.append(track)
                assigned[di] = track
            track.box, track.last_frame, track.missed = boxes[di], frame_index, 0
        ended = []
        seen = {id(t) for t in assigned}
        for track in self.tracks:
            if id(track) not in seen:
                track.missed += 1
                if track.missed > self.max_missed:
                    ended.append(track)
        self.tracks = [t for t in self.tracks if t not in ended]
        return assigned, started, ended  # type: ignore[return-value]


# -- the loop ------------------------------------------------------------------------------------------
@dataclass
class FrameResult:
    """What was decided on one frame: the faces, their tracks' labels, and timing."""

    frame: Frame
    faces: Faces
    labels: list[str]
    scores: list[float]
    track_ids: list[int]
    latency_ms: float
    embedded: int


@dataclass
class Stats:
    frames: int = 0
    dropped: int = 0
    embedded: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)) if lat else (lambda q: None)
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "faces_embedded": self.embedded,
            "fps": round(self.frames / self.seconds, 1) if self.seconds > 0 else None,
            "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
            "latency_ms_p99": pick(0.99),
        }


def _now_iso() -> str:
    from datetime import datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds")


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
            "time": _now_iso(),
            "video_time": round(frame.time, 3),
            "frame": frame.index,
            "track": track.id,
            "person": track.label,
            "score": None if np.isnan(track.score) else round(track.score, 4),
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


@dataclass
class AuthDecision:
    claim: str
    granted: bool
    reason: str
    frames: int
    best_score: float | None
    scores: list[float]
    threshold: float
    threshold_source: str
    seconds: float
    liveness: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "granted" if self.granted else "denied",
            "time": _now_iso(),
            "claim": self.claim,
            "granted": self.granted,
            "reason": self.reason,
            "frames": self.frames,
            "best_score": None if self.best_score is None else round(self.best_score, 4),
            "last_scores": [round(s, 4) for s in self.scores[-10:]],
            "threshold": round(self.threshold, 4),
            "threshold_source": self.threshold_source,
            "seconds": round(self.seconds, 2),
            "liveness": self.liveness,
        }


LIVENESS_MODES = ("off", "passive", "active", "both")


class Authenticator:
    """1:1 unlock: the largest face of each frame against the claim; grant after `consecutive` frames in a
    row at or above the threshold, deny at `timeout` seconds (or when the source ends).

    `liveness`: "passive" also needs each of those frames to be live by the passive check (`PassiveCheck`:
    the CNN pair, the texture model and the frame cue combined; no cue vetoes alone); "active" needs
    the challenge of an `ActiveCheck` met, with parallax, before the grant (its prompts are events);
    "both" needs both. Every decision carries the liveness evidence. `clock`: seconds for the timeout
    (monotonic; a test may pass its own)."""

    def __init__(
        self,
        pipeline,
        matcher: Matcher,
        claim: str,
        *,
        consecutive: int = 3,
        timeout: float = 10.0,
        on_event: Callable[[dict], None] | None = None,
        liveness: str = "off",
        passive=None,
        active=None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if consecutive < 1:
            raise ConfigError("consecutive must be >= 1")
        if liveness not in LIVENESS_MODES:
            raise ConfigError(f"liveness must be one of {', '.join(LIVENESS_MODES)}, not {liveness!r}")
        self.pipeline, self.matcher, self.claim = pipeline, matcher, claim
        matcher.verify(claim, np.zeros((0, pipeline.encoder.info.embedding_size), np.float32))  # claim exists
        self.consecutive = consecutive
        self.timeout = timeout
        self.on_event = on_event or (lambda event: None)
        self.liveness = liveness
        self.passive = None
        self.active = None
        if liveness in ("passive", "both"):
            from .liveness import PassiveCheck

            self.passive = passive or PassiveCheck()
        if liveness in ("active", "both"):
            from .liveness.active import ActiveCheck

            self.active = active or ActiveCheck(timeout=timeout)
        self.stats = Stats()
        self.scores: list[float] = []
        self.live_scores: list[float] = []
        self.framed_frames = 0  # evidence: frames where the frame cue saw a border (an input, not a veto)
        self.not_live_frames = 0
        self.run_length = 0
        self.clock = clock
        self.started = clock()
        self.decision: AuthDecision | None = None
        self._prompt = ""

    def _liveness_evidence(self) -> dict[str, Any]:
        evidence: dict[str, Any] = {"mode": self.liveness}
        if self.passive is not None:
            evidence["passive"] = {
                "model": self.passive.name,
                "threshold": round(self.passive.threshold, 4),
                "last_scores": [round(s, 4) for s in self.live_scores[-10:]],
                "framed_frames": self.framed_frames,
                "frames_not_live": self.not_live_frames,
            }
        if self.active is not None:
            result = self.active.result
            evidence["active"] = result.to_dict() if result else {"passed": False, "challenges": self.active.challenges}
        return evidence

    def _decide(self, granted: bool, reason: str) -> AuthDecision:
        self.decision = AuthDecision(
            self.claim,
            granted,
            reason,
            self.stats.frames,
            max(self.scores) if self.scores else None,
            self.scores,
            self.matcher.threshold,
            getattr(self.matcher, "threshold_source", ""),
            self.clock() - self.started,
            self._liveness_evidence(),
        )
        self.on_event(self.decision.to_dict())
        return self.decision

    def process(self, frame: Frame) -> FrameResult:
        faces = self.pipeline.detect(frame.image)
        labels, scores = [], []
        keypoints = box = None
        if len(faces):
            largest = self.pipeline.embed(frame.image, faces[:1])
            box = largest.boxes[0]
            keypoints = largest.data.get("keypoints", [None])[0]
            score = float(self.matcher.verify(self.claim, largest.embeddings)[0])
            self.scores.append(score)
            ok = score >= self.matcher.threshold
            if self.passive is not None:
                live = self.passive.score(frame.image, box)
                self.live_scores.append(live.score)
                self.framed_frames += live.framed
                self.not_live_frames += not live.live
                ok = ok and live.live
            self.run_length = self.run_length + 1 if ok else 0
            labels, scores = [self.claim if ok else UNKNOWN] + [""] * (len(faces) - 1), [score]
            self.stats.embedded += 1
        else:
            self.run_length = 0
        active_done = True
        if self.active is not None and self.decision is None:
            if keypoints is None and len(faces):
                raise ConfigError(
                    f"active liveness needs a detector with 5 keypoints (retinaface, mtcnn), not {faces.detector!r}"
                )
            result = self.active.update(keypoints, box, frame.time)
            if self.active.prompt != self._prompt and result is None:
                self._prompt = self.active.prompt
                self.on_event({"event": "challenge", "time": _now_iso(), "frame": frame.index, "prompt": self._prompt})
            if result is not None and not result.passed:
                self._decide(False, f"liveness: {result.reason}")
            active_done = result is not None and result.passed
        latency = (time.perf_counter() - frame.captured) * 1000
        self.stats.frames += 1
        self.stats.latencies_ms.append(latency)
        if self.decision is None and self.run_length >= self.consecutive and active_done:
            how = f"{self.consecutive} consecutive frames verified"
            self._decide(True, how + (f" (liveness {self.liveness})" if self.liveness != "off" else ""))
        elif self.decision is None and self.clock() - self.started > self.timeout:
            self._decide(
                False,
                f"timeout after {self.timeout:g} s"
                + (f" (liveness: {self.not_live_frames} frames not live)" if self.not_live_frames else ""),
            )
        return FrameResult(frame, faces, labels, scores, [], latency, 1 if len(faces) else 0)

    def finish(self) -> AuthDecision:
        if self.decision is None:
            if not self.scores:
                reason = "no face seen"
            elif self.active is not None and self.active.result is None:
                reason = f"the video ended before the liveness challenge was met ('{self.active.prompt}')"
            elif self.passive is not None and self.not_live_frames:
                reason = (
                    f"the video ended before enough frames verified (liveness: {self.not_live_frames} frames not live)"
                )
            else:
                reason = "the video ended before enough frames verified"
            self._decide(False, reason)
        return self.decision  # type: ignore[return-value]


def annotate(result: FrameResult, fps: float | None = None) -> np.ndarray:
    """The frame with boxes, names and scores (and the processing rate) drawn on it."""
    import cv2

    from .draw import GREEN, RED, draw_faces

    labels, colors = [], []
    for i in range(len(result.faces)):
        name = result.labels[i] if i < len(result.labels) else ""
        score = result.scores[i] if i < len(result.scores) else float("nan")
        labels.append(f"{name} {score:.2f}" if name and not np.isnan(score) else name)
        colors.append(RED if name == UNKNOWN else GREEN)
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
            self._writer.write(bgr)
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
        runner.finish()
        if out is not None:
            out.close()
    return runner.stats


def json_lines(stream) -> Callable[[dict], None]:
    def emit(event: dict) -> None:
        stream.write(json.dumps(event) + "\n")
        stream.flush()

    return emit
