"""Liveness over HTTP: capture sessions, kept in the server's memory.

    POST /v1/liveness/sessions  claim=NAME       -> a session for that person: its id, the first prompt only
    POST /v1/liveness/sessions/{id}/frames       -> one camera frame; the session's state: pending, passed, failed
    POST /v1/verify  claim + image + liveness_session=ID   -> consumes the session (once)

With liveness on (any mode but off) a claim is granted only through such a session: a single uploaded image
is never live. Each session is a `siamface.liveness.session.CaptureSession` (the same checks `authenticate`
makes at the camera): frames timed by the server's monotonic clock **on arrival** (a client cannot stretch
or squeeze time), at camera rate, no repeated picture, no jump, the passive check on every frame (modes
passive and both), prompts revealed one at a time at random moments (modes active and both). The server
keeps each frame's largest face's embedding, so that the verification can require every face of the
session to be the claimed person; and a session whose face becomes another person's (the face model's own
1:1 threshold against the face before: an accomplice who made the movement swapped for a photo of the
victim, or another person stepping into the face's place) fails at once, in every mode, where `authenticate`
would start a new presentation: such a session could never be granted (not every face is the claimed
person), and a restart would only give its sender another try inside it; failing counts towards the
lock-out and says why.

A session belongs to the API key that opened it and to the person it was opened for (another key gets 404,
as for an unknown id; another claim 409). It lives `ttl` seconds from its opening (410 after), takes at most
`max_frames` frames (then it fails), and is used by the first verification that names it, whatever that
decides (409 after). Opening is limited per key and per claimed person (`per_key`, `per_person` a minute;
429), and at most `max_sessions` are open at once. A session that fails, or expires unused, counts once as a
failed verification of its person (`failures` hands them to the lock-out book). Restarting the server
forgets them all.

Methods are called from worker threads (frames) and the event loop (open, verify); one lock guards the book.
Detection and embedding run outside it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..liveness.session import FAILED, PASSED, PENDING, CaptureRules, CaptureSession, Seen
from .errors import ServiceError

__all__ = ["FAILED", "PASSED", "PENDING", "LivenessSessions", "Session"]
RATE_WINDOW = 60.0  # seconds over which opening is counted


@dataclass
class Session:
    id: str
    key: str | None
    person: Hashable  # the claimed person's id
    claim: str  # and name
    capture: CaptureSession
    expires: float
    frames: int = 0
    faces: list[np.ndarray] = field(default_factory=list)  # embedding of the largest face of each frame
    used: bool = False
    counted: bool = False  # its failure was handed to the lock-out

    @property
    def state(self) -> str:
        return self.capture.state

    @property
    def reason(self) -> str | None:
        return self.capture.result.reason if self.capture.result else None

    def evidence(self) -> dict[str, Any]:
        """What the session found, for a verification's answer (as `siamface authenticate` reports it)."""
        c = self.capture
        found = (
            c.result.to_dict()
            if c.result is not None
            else {
                "passed": False,
                "reason": None,
                "mode": c.mode,
                "challenges": c.shown,
                "completed": c.step,
                "parallax": round(c.parallax, 4),
            }
        )
        return {**found, "session_id": self.id, "frames": self.frames, "faces": len(self.faces)}


class LivenessSessions:
    """The open capture sessions of one server. `mode`: "passive" (no prompts) or "active"; `prompts`: a
    fixed list for every session (tests only: a recording can follow a known list); None draws them.
    `rng`: where the draws come from (tests may seed one; by default the system's secure source).
    `same_person`: the face model's 1:1 threshold (set by the service once its model is loaded): a session
    whose face becomes another person's fails."""

    def __init__(
        self,
        *,
        ttl: float,
        max_sessions: int,
        max_frames: int,
        rules: CaptureRules,
        mode: str = "active",
        prompts: Sequence[str] | None = None,
        per_key: int = 20,
        per_person: int = 10,
        clock: Callable[[], float] = time.monotonic,
        rng: Any = None,
    ) -> None:
        self.ttl = float(ttl)
        self.max_sessions = int(max_sessions)
        self.max_frames = int(max_frames)
        self.rules = rules
        self.mode = mode
        self.prompts = tuple(prompts) if prompts else None
        self.per_key, self.per_person = int(per_key), int(per_person)
        self.clock = clock
        self.rng = rng  # the prompts' and moments' draws: None, a `secrets.SystemRandom` per session
        self.same_person: float | None = None
        self._sessions: dict[str, Session] = {}
        self._opened: dict[tuple[str, Hashable], deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def describe(self, session: Session) -> dict[str, Any]:
        """The state of a session as the routes answer it: the current prompt and those already shown,
        never the ones to come."""
        c = session.capture
        return {
            "session_id": session.id,
            "claim": session.claim,
            "mode": c.mode,
            "state": session.state,
            "prompt": c.prompt or None,
            "reason": session.reason,
            "challenges": c.shown,
            "completed": c.step,
            "parallax": round(c.parallax, 4),
            "frames": session.frames,
            "expires_in": round(max(0.0, session.expires - self.clock()), 1),
        }

    def _prune(self, now: float) -> None:
        """Forget sessions expired for a ttl already (kept until then to answer 410/409, not 404)."""
        for sid in [sid for sid, s in self._sessions.items() if now > s.expires + self.ttl]:
            del self._sessions[sid]
        for key in [k for k, q in self._opened.items() if not q or now - q[-1] > RATE_WINDOW]:
            del self._opened[key]

    def _rate(self, kind: str, who: Hashable, limit: int, now: float, what: str) -> None:
        opened = self._opened[(kind, who)]
        while opened and now - opened[0] > RATE_WINDOW:
            opened.popleft()
        if len(opened) >= limit:
            wait = max(1, int(RATE_WINDOW - (now - opened[0])) + 1)
            raise ServiceError(
                429,
                "too-many-liveness-sessions",
                f"{len(opened)} liveness sessions opened {what} in the last {RATE_WINDOW:g} s, the most allowed; "
                f"retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def open(self, key: str | None, person: Hashable, claim: str) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._prune(now)
            active = sum(1 for s in self._sessions.values() if not s.used and now <= s.expires)
            if active >= self.max_sessions:
                raise ServiceError(
                    429,
                    "too-many-liveness-sessions",
                    f"{active} liveness sessions are open, the most this server keeps; retry soon",
                    headers={"Retry-After": "5"},
                )
            self._rate("key", key, self.per_key, now, "with this API key")
            self._rate("person", person, self.per_person, now, "for this person")
            self._opened[("key", key)].append(now)
            self._opened[("person", person)].append(now)
            capture = CaptureSession(self.mode, self.rules, self.prompts, self.rng, self.same_person, "fail")
            session = Session(secrets.token_urlsafe(18), key, person, claim, capture, now + self.ttl)
            self._sessions[session.id] = session
            return {
                **self.describe(session),
                "timeout": self.rules.timeout,
                "max_frames": self.max_frames,
                "max_gap": self.rules.max_gap,
            }

    def _find(self, session_id: str, key: str | None) -> Session:
        session = self._sessions.get(session_id)
        if session is None or session.key != key:  # another key's session is as unknown as none
            raise ServiceError(
                404,
                "unknown-liveness-session",
                "no liveness session with this id for this API key; open one with POST /v1/liveness/sessions",
            )
        if session.used:
            raise ServiceError(
                409, "liveness-session-used", "this liveness session was already used by a verification; open a new one"
            )
        if self.clock() > session.expires:
            raise ServiceError(
                410,
                "expired-liveness-session",
                f"this liveness session expired (sessions last {self.ttl:g} s); open a new one",
            )
        return session

    def frame_slot(self, session_id: str, key: str | None) -> Session:
        """The session a frame is for, with the frame counted (past `max_frames` the session fails)."""
        with self._lock:
            session = self._find(session_id, key)
            if session.state == PENDING:
                session.frames += 1
                if session.frames > self.max_frames:
                    session.capture.fail(f"more than {self.max_frames} frames without finishing")
            return session

    def feed(self, session: Session, arrived: float, seen: Seen | None, embedding: np.ndarray | None) -> dict[str, Any]:
        """One frame's largest face (None: no face) into the session's capture, at its arrival time."""
        with self._lock:
            if session.state == PENDING:
                if embedding is not None:
                    session.faces.append(np.asarray(embedding, np.float32))
                session.capture.observe(arrived, seen)
            return self.describe(session)

    def use(self, session_id: str, key: str | None, person: Hashable) -> Session:
        """Take a decided session for one verification of `person`; from then on it answers 409."""
        with self._lock:
            session = self._find(session_id, key)
            if session.person != person:
                session.used = True  # a session is tried once, for the person it was opened for
                raise ServiceError(
                    409,
                    "liveness-session-other-claim",
                    f"this liveness session was opened for {session.claim!r}, not for this claim; it is used up",
                )
            if session.state == PENDING:
                raise ServiceError(
                    409,
                    "liveness-pending",
                    f"the liveness session is not finished ('{session.capture.prompt}'): send frames until its "
                    f"state is passed or failed",
                )
            session.used = True
            return session

    def forget(self, person: Hashable) -> None:
        """Drop the sessions opened for `person` (removed from the gallery: their frames' embeddings and their
        name go with them; the session ids answer 404) and the count of sessions opened for them."""
        with self._lock:
            for sid in [sid for sid, s in self._sessions.items() if s.person == person]:
                del self._sessions[sid]
            self._opened.pop(("person", person), None)

    def failed(self) -> list[Session]:
        """The sessions that failed, or expired unused, since the last call (each session once): for the
        lock-out book and the audit."""
        now = self.clock()
        out = []
        with self._lock:
            for s in self._sessions.values():
                if s.counted:
                    continue
                if s.state == FAILED or (not s.used and now > s.expires):
                    s.counted = True
                    out.append(s)
        return out
