"""`authenticate`: 1:1 unlock for one claimed person over a video, with passive and/or active liveness, ending
in one `AuthDecision`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..decision import LIVENESS_MODES, UNKNOWN, Liveness, gate, same
from ..errors import ConfigError
from ..types import Decision
from ..video import Frame
from .matcher import Matcher
from .results import FrameResult, Stats, now_iso

#: What a grant with liveness over a recording says of it.
RECORDING = "over a recording: it shows the recorded person moved, not that anyone is at a camera"


@dataclass(frozen=True, kw_only=True)
class AuthDecision(Decision):
    """`authenticate`'s answer: a `Decision` (`granted` is its `accepted`, `best_score` its `score`: the best
    frame's similarity to the claim) with why, over how many frames and seconds, and the liveness evidence;
    `recorded`: its frames came from a recording (a video file, a folder of frames), not a camera or stream."""

    claim: str
    reason: str
    frames: int
    scores: tuple[float, ...]
    seconds: float
    liveness: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False

    @property
    def granted(self) -> bool:
        return self.accepted

    @property
    def best_score(self) -> float | None:
        return self.score

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "granted" if self.granted else "denied",
            "time": now_iso(),
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
            "recorded": self.recorded,
        }


class Authenticator:
    """1:1 unlock: the largest face of each frame against the claim; grant after `consecutive` frames in a
    row at or above the threshold, deny at `timeout` seconds (or when the source ends).

    With `liveness` on, the frames are also one capture session (`siamface.liveness.session.CaptureSession`,
    the same checks the HTTP service makes): timed by each frame's capture time, at camera rate, no repeated
    picture, no jump of the face; "passive" runs the passive check (`PassiveCheck`, or `passive`) on every
    frame's face, "active" reveals prompts one at a time at random moments (prompts are `challenge` events)
    with a parallax test, "both" does both. A grant then needs the session passed too, and its presentation to
    be the claimed person's: the session ends a presentation where the face becomes another person (the
    model's own 1:1 threshold between consecutive faces: a cut, an accomplice swapped for the victim's photo),
    and every face of the presentation that passed must verify as the claim (as the service requires of
    every face of its sessions), so that no one's movement unlocks someone else. Every decision carries
    the liveness evidence. `recorded`: the frames come from a recording (a video file, a folder of frames),
    not a camera or stream: a recording of the person moving passes a liveness session as they did when it
    was made, so no one's presence is shown by it, and the decision says so (its reason, ``recorded``).
    `clock`: seconds for the timeout (monotonic; a test may pass its own); `capture`: a session to use instead
    of a new one (tests: fixed prompts)."""

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
        capture=None,
        recorded: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if consecutive < 1:
            raise ConfigError("consecutive must be >= 1")
        if not (math.isfinite(timeout) and timeout > 0):  # NaN: no comparison is true, the session never ends
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if liveness not in LIVENESS_MODES:
            raise ConfigError(f"liveness must be one of {', '.join(LIVENESS_MODES)}, not {liveness!r}")
        self.pipeline, self.matcher, self.claim = pipeline, matcher, claim
        self.recorded = recorded
        matcher.verify(claim, np.zeros((0, pipeline.encoder.info.embedding_size), np.float32))  # claim exists
        self.consecutive = consecutive
        self.timeout = timeout
        self.on_event = on_event or (lambda event: None)
        self.liveness = liveness
        self.passive = None
        self.capture = None
        if liveness in ("passive", "both"):
            from ..liveness import PassiveCheck

            self.passive = passive or PassiveCheck()
        if liveness != "off":
            from ..liveness.session import CaptureRules, CaptureSession

            mode = "passive" if liveness == "passive" else "active"
            self.capture = capture or CaptureSession(mode, CaptureRules(timeout=timeout))
            if self.capture.same_person is None:  # one presentation is one person, whoever made the session
                self.capture.same_person = float(pipeline.encoder.info.threshold)
        self.stats = Stats()
        self.scores: list[float] = []
        self.live_scores: list[float] = []
        self.framed_frames = 0  # evidence: frames where the frame cue saw a border (an input, not a veto)
        self.not_live_frames = 0
        self.run_length = 0
        self.presented: list[bool] = []  # whether each face of the session's presentation verified as the claim
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
        if self.capture is not None:
            c = self.capture
            evidence["session"] = (
                c.result.to_dict() if c.result else {"passed": False, "mode": c.mode, "challenges": c.shown}
            )
        return evidence

    def _decide(self, granted: bool, reason: str) -> AuthDecision:
        threshold = self.matcher.thresholds.verify
        self.decision = AuthDecision(
            accepted=granted,
            score=max(self.scores) if self.scores else None,
            threshold=threshold.value,
            threshold_source=threshold.source,
            claim=self.claim,
            reason=reason,
            frames=self.stats.frames,
            scores=tuple(self.scores),
            seconds=self.clock() - self.started,
            liveness=self._liveness_evidence(),
            recorded=self.recorded,
        )
        self.on_event(self.decision.to_dict())
        return self.decision

    def process(self, frame: Frame) -> FrameResult:
        self.stats.frames += 1  # first: a decision made on this frame counts it
        faces = self.pipeline.detect(frame.image)
        labels, scores = [], []
        seen = None
        pick = 0 if len(faces) else None
        if self.capture is not None:
            from ..liveness.session import follow

            pick = follow(faces.boxes, self.capture.previous, self.capture.rules.max_jump)
        if pick is not None:
            largest = self.pipeline.embed(frame.image, faces[pick : pick + 1])
            box = largest.boxes[0]
            keypoints = largest.data.get("keypoints", [None])[0]
            score = float(self.matcher.verify(self.claim, largest.embeddings)[0])
            self.scores.append(score)
            verdict = same(score, self.matcher.thresholds.verify)
            if self.capture is not None:
                if keypoints is None:
                    raise ConfigError(
                        f"liveness needs a detector with 5 keypoints (retinaface, mtcnn), not {faces.detector!r}"
                    )
                from ..liveness.session import see

                seen, checked = see(frame.image, box, keypoints, self.passive, largest.embeddings[0])
                if checked is not None:
                    self.live_scores.append(checked.score)
                    self.framed_frames += checked.framed
                    self.not_live_frames += not seen.live
                    verdict = gate(verdict, Liveness(live=bool(seen.live)))
            ok = verdict.accepted
            self.run_length = self.run_length + 1 if ok else 0
            labels = [""] * len(faces)
            labels[pick] = self.claim if ok else UNKNOWN
            scores = [float("nan")] * len(faces)
            scores[pick] = score
            self.stats.embedded += 1
        else:
            self.run_length = 0
        live_done = True
        if self.capture is not None and self.decision is None:
            pending, restarts = self.capture.result is None, self.capture.restarts
            result = self.capture.observe(frame.time, seen)
            if self.capture.restarts != restarts:  # a new presentation: of the face seen now, if any
                self.presented = []
            if pending and seen is not None and self.capture.unlike is None:  # a face the session counted
                self.presented.append(same(self.scores[-1], self.matcher.thresholds.verify).accepted)
            if self.capture.prompt != self._prompt and result is None:
                self._prompt = self.capture.prompt
                self.on_event({"event": "challenge", "time": now_iso(), "frame": frame.index, "prompt": self._prompt})
            if result is not None and not result.passed:
                self._decide(False, f"liveness: {result.reason}")
            elif result is not None and not all(self.presented):
                others = self.presented.count(False)
                self._decide(
                    False,
                    f"liveness: {others} of the {len(self.presented)} faces of the session's presentation are not "
                    f"{self.claim}: someone else's movement does not unlock the claim",
                )
            live_done = result is not None and result.passed
        latency = (time.perf_counter() - frame.captured) * 1000
        self.stats.latencies_ms.append(latency)
        if self.decision is None and self.run_length >= self.consecutive and live_done:
            how = f"{self.consecutive} consecutive frames verified"
            if self.liveness != "off":
                how += f" (liveness {self.liveness}" + (f", {RECORDING})" if self.recorded else ")")
            self._decide(True, how)
        elif self.decision is None and self.clock() - self.started > self.timeout:
            self._decide(
                False,
                f"timeout after {self.timeout:g} s"
                + (f" (liveness: {self.not_live_frames} frames not live)" if self.not_live_frames else ""),
            )
        return FrameResult(frame, faces, labels, scores, [], latency, 1 if len(faces) else 0)

    def deny(self, reason: str) -> AuthDecision:
        """Deny at once, whatever the frames would show (the claim is locked out), unless decided already."""
        return self.decision or self._decide(False, reason)

    def finish(self) -> AuthDecision:
        if self.decision is None:
            if not self.scores:
                reason = "no face seen"
            elif self.capture is not None and self.capture.result is None:
                reason = f"the video ended before the liveness session finished ('{self.capture.prompt}')"
            elif self.passive is not None and self.not_live_frames:
                reason = (
                    f"the video ended before enough frames verified (liveness: {self.not_live_frames} frames not live)"
                )
            else:
                reason = "the video ended before enough frames verified"
            self._decide(False, reason)
        return self.decision  # type: ignore[return-value]
