"""Active liveness over HTTP: challenge sessions, kept in the server's memory.

    POST /v1/liveness/sessions                 -> a session: random challenges (`ActiveCheck`), its first prompt
    POST /v1/liveness/sessions/{id}/frames     -> one camera frame; the session's state: pending, passed, failed
    POST /v1/verify  claim + image + liveness_session=ID   -> consumes the session (once)

The server finds the largest face of each frame and feeds its keypoints to the session's `ActiveCheck`
with its own monotonic clock (a client cannot stretch or squeeze time); it keeps that face's embedding, so
that the verification can require every face of the challenge to be the claimed person: one person cannot
answer the challenge and then present another's photo as the probe.

A session belongs to the API key that opened it (another key gets 404, as for an unknown id), lives `ttl`
seconds from its opening (410 after), takes at most `max_frames` frames (then it fails), and is used by
the first verification that names it, whatever that verification decides (409 after). At most
`max_sessions` are open at once (429). Restarting the server forgets them all.

Methods are called from worker threads (frames) and the event loop (verify); one lock guards the book.
Detection and embedding run outside it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..liveness.active import ActiveCheck
from .errors import ServiceError

PENDING, PASSED, FAILED = "pending", "passed", "failed"


@dataclass
class Session:
    id: str
    key: str | None
    check: ActiveCheck
    expires: float
    frames: int = 0
    faces: list[np.ndarray] = field(default_factory=list)  # embedding of the largest face of each frame
    failure: str | None = None  # failed here, not by the check (too many frames)
    used: bool = False

    @property
    def state(self) -> str:
        if self.failure is not None:
            return FAILED
        result = self.check.result
        return PENDING if result is None else (PASSED if result.passed else FAILED)

    @property
    def reason(self) -> str | None:
        return self.failure or (self.check.result.reason if self.check.result else None)

    def evidence(self) -> dict[str, Any]:
        """What the check found, for a verification's answer (as `siamface authenticate` reports it)."""
        completed, parallax = self.check.progress
        result = self.check.result
        found = (
            result.to_dict()
            if result is not None
            else {
                "passed": False,
                "reason": self.reason,
                "challenges": list(self.check.challenges),
                "completed": completed,
                "parallax": round(parallax, 4),
            }
        )
        return {**found, "session_id": self.id, "frames": self.frames, "faces": len(self.faces)}


class LivenessSessions:
    """The open challenge sessions of one server. `challenges`: a fixed list for every session (tests
    only: a recording can replay a known order); None draws them at random per session."""

    def __init__(
        self,
        *,
        ttl: float,
        max_sessions: int,
        max_frames: int,
        challenge_s: float,
        challenges: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = float(ttl)
        self.max_sessions = int(max_sessions)
        self.max_frames = int(max_frames)
        self.challenge_s = float(challenge_s)
        self.challenges = tuple(challenges) if challenges else None
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def describe(self, session: Session) -> dict[str, Any]:
        """The state of a session as the routes answer it."""
        completed, parallax = session.check.progress
        return {
            "session_id": session.id,
            "state": session.state,
            "prompt": session.check.prompt or None,
            "reason": session.reason,
            "challenges": list(session.check.challenges),
            "completed": completed,
            "parallax": round(parallax, 4),
            "frames": session.frames,
            "expires_in": round(max(0.0, session.expires - self.clock()), 1),
        }

    def _prune(self, now: float) -> None:
        """Forget sessions expired for a ttl already (kept until then to answer 410/409, not 404)."""
        for sid in [sid for sid, s in self._sessions.items() if now > s.expires + self.ttl]:
            del self._sessions[sid]

    def open(self, key: str | None) -> dict[str, Any]:
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
            session = Session(
                secrets.token_urlsafe(18), key, ActiveCheck(self.challenges, timeout=self.challenge_s), now + self.ttl
            )
            self._sessions[session.id] = session
            return {**self.describe(session), "timeout": self.challenge_s, "max_frames": self.max_frames}

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
                    session.failure = f"more than {self.max_frames} frames without meeting the challenge"
            return session

    def feed(self, session: Session, keypoints, box, embedding: np.ndarray | None) -> dict[str, Any]:
        """One frame's largest face (all None: no face) into the session's check, at the server's time."""
        with self._lock:
            if session.state == PENDING:
                if embedding is not None:
                    session.faces.append(np.asarray(embedding, np.float32))
                session.check.update(keypoints, box, self.clock())
            return self.describe(session)

    def use(self, session_id: str, key: str | None) -> Session:
        """Take a decided session for one verification; from then on it answers 409."""
        with self._lock:
            session = self._find(session_id, key)
            if session.state == PENDING:
                raise ServiceError(
                    409,
                    "liveness-pending",
                    f"the liveness challenge is not finished "
                    f"('{session.check.prompt}'): send frames until its "
                    f"state is passed or failed",
                )
            session.used = True
            return session
