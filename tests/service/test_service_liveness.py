"""Liveness in the HTTP service (issue 25): live means a live capture, never an upload.

Over `siamface serve` (in a thread of the test process) with a grey camera (`--camera grey`: the fixtures are
grey AT&T photos): a person who follows the prompts (s23's photos played one step at a time as a continuous
head turn, with a camera's noise) passes a session and is granted once; a single posted image without a
session is refused; stills swapped per prompt, a recorded session's frames replayed into a new session,
a re-used session, bursts, gaps and repeated pictures all fail; opening is rate-limited per person and failed
sessions lock the person out. The server's session clock is the test's own: each frame advances it, so the
frames arrive "at camera rate" without the test waiting.

The prompts are fixed for these servers (`--liveness-challenges`, a hidden option for tests) so that the
tests know what is asked; the moments they are revealed at stay random, and the person follows them as
they come."""

from __future__ import annotations

import contextlib
import random
import sqlite3

import pytest
from service_support import require_service

require_service()

import numpy as np  # noqa: E402
from conftest import S23_FRONTAL, S23_MOVING, S23_RIGHT, TurningHead, att, att_frame, camera_frame  # noqa: E402
from service_support import Server, png_bytes  # noqa: E402

from siamface.liveness.session import PROMPTS  # noqa: E402
from siamface.service.errors import ServiceError  # noqa: E402
from siamface.service.sessions import LivenessSessions  # noqa: E402

FRAME_S = 0.2  # the test camera's frame interval


class ManualClock:
    """The server's session clock, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def start(tmp_path, mode: str, *extra: str, prompts: str | None = "turn_right,turn_left", seed: int = 0):
    """A server with a grey camera, its session clock and draws the test's (`prompts` None: drawn)."""
    fixed = ["--liveness-challenges", prompts] if prompts else []
    srv = Server(tmp_path / f"{mode}.db", "--liveness", mode, "--camera", "grey", "--min-size", "40", *fixed, *extra)
    clock = ManualClock()
    srv.service.sessions.clock = clock
    srv.service.sessions.rng = random.Random(seed)
    files = [("images", f"{n}.png", png_bytes(camera_frame(n, np.random.default_rng(9)))) for n in ("7", "1", "10")]
    enrolled = srv.request("POST", "/v1/people", fields={"name": "s23"}, files=files)
    assert enrolled.status == 201, enrolled.body
    return srv, clock


@pytest.fixture(scope="module")
def active(tmp_path_factory):
    srv, clock = start(tmp_path_factory.mktemp("active"), "active")
    yield srv, clock
    srv.stop()


def open_session(server, claim: str = "s23"):
    return server.request("POST", "/v1/liveness/sessions", fields={"claim": claim})


def send(server, session_id: str, frame: np.ndarray):
    return server.request(
        "POST", f"/v1/liveness/sessions/{session_id}/frames", files=[("image", "frame.png", png_bytes(frame))]
    )


def play(server, clock, session_id: str, frames, dt: float = FRAME_S, limit: int = 80) -> tuple[dict, list]:
    """Send frames (a callable of the last prompt, or a list) one at a time, `dt` apart on the server's clock,
    until the session is decided; (last state, the frames sent)."""
    state, sent = {"state": "pending", "prompt": None}, []
    for i in range(limit):
        frame = frames(state.get("prompt")) if callable(frames) else frames[i] if i < len(frames) else None
        if frame is None:
            break
        answer = send(server, session_id, frame)
        assert answer.status in (200, 422), answer.body
        state = answer.body if answer.status == 200 else answer.body["session"]
        sent.append(frame)
        clock.advance(dt)
        if state["state"] != "pending":
            break
    return state, sent


def verify(server, session_id: str | None, claim: str = "s23"):
    fields = {"claim": claim} if session_id is None else {"claim": claim, "liveness_session": session_id}
    probe = png_bytes(camera_frame("7", np.random.default_rng(5)))
    return server.request("POST", "/v1/verify", fields=fields, files=[("image", "probe.png", probe)])


def test_a_person_following_the_prompts_is_granted_once(active):
    server, clock = active
    opened = open_session(server)
    assert opened.status == 201, opened.body
    session = opened.body
    # the opening reveals no prompt: the order stays secret until each one's random moment
    assert session["challenges"] == [] and session["prompt"] == "look straight at the camera"
    assert session["mode"] == "active" and session["claim"] == "s23" and session["max_gap"] > FRAME_S
    state, _ = play(server, clock, session["session_id"], TurningHead(1).frame)
    assert state["state"] == "passed", state
    assert state["challenges"] == ["turn_right", "turn_left"] and state["parallax"] >= 0.1

    granted = verify(server, session["session_id"])
    assert granted.status == 200, granted.body
    assert granted.body["granted"] is True, granted.body
    live = granted.body["liveness"]
    assert live["mode"] == "active" and live["session"]["passed"] and live["session"]["same_person"]

    again = verify(server, session["session_id"])  # a session is used once
    assert (again.status, again.error) == (409, "liveness-session-used")


def test_an_uploaded_image_without_a_session_is_refused(active):
    server, _ = active
    refused = verify(server, None)
    assert (refused.status, refused.error) == (400, "liveness-session-required")
    assert "never an uploaded image" in refused.body["detail"]


def test_stills_swapped_per_prompt_fail(active):
    server, clock = active
    rng = np.random.default_rng(3)
    session = open_session(server).body

    def stills(prompt):  # a frontal photo, and a turned one when a turn is asked (the attack)
        name = S23_RIGHT[-1] if prompt and "right" in prompt else S23_FRONTAL[0]
        return camera_frame(name, rng)

    state, _ = play(server, clock, session["session_id"], stills)
    assert state["state"] == "failed" and "jump" in state["reason"], state
    denied = verify(server, session["session_id"])
    assert denied.status == 200 and denied.body["granted"] is False


def test_a_recorded_session_replayed_into_a_new_session_fails(tmp_path):
    # prompts drawn (3 of 5 kinds, random order and moments), from a seeded source: the test knows nothing
    # of them but can rerun them
    server, clock = start(tmp_path, "active", prompts=None, seed=7)
    try:
        first = open_session(server).body
        recorded_state, recorded = play(server, clock, first["session_id"], TurningHead(2).frame)
        assert recorded_state["state"] == "passed", recorded_state
        assert len(recorded_state["challenges"]) == 3
        used = verify(server, first["session_id"])
        assert used.body["granted"] is True, used.body
        for _ in range(2):  # the recording, frame for frame, into new sessions
            replayed = open_session(server).body
            state, _ = play(server, clock, replayed["session_id"], recorded)
            assert state["state"] != "passed", state
    finally:
        server.stop()


@pytest.mark.parametrize(
    "timing, reason",
    [("burst", "burst"), ("gap", "gap"), ("repeat", "same picture")],
)
def test_frames_must_arrive_at_camera_rate_and_never_repeat(active, timing, reason):
    server, clock = active
    session = open_session(server).body["session_id"]
    head = TurningHead(4)
    frames = [head.frame(None) for _ in range(4)]
    if timing == "repeat":
        frames = [frames[0]] * 4
    dt = {"burst": 0.005, "gap": 3.0, "repeat": FRAME_S}[timing]
    state, _ = play(server, clock, session, frames, dt=dt)
    assert state["state"] == "failed" and reason in state["reason"], state


def test_a_session_is_for_its_person_and_key(active):
    server, _ = active
    session = open_session(server).body["session_id"]
    other = verify(server, session, claim="nobody-else")
    assert other.status == 404  # an unknown person
    missing = open_session(server, "nobody-else")
    assert (missing.status, missing.error) == (404, "unknown-person")


def test_someone_else_answering_the_prompts_does_not_unlock_the_claimed_person(active):
    """s23 follows the prompts of a session opened for s4, then s4's photo is posted as the probe: the
    liveness was someone else's, so s4 is not granted (the photo alone matches s4)."""
    server, clock = active
    files = [("images", f"s4-{i}.pgm", att(4, i).read_bytes()) for i in (1, 2, 3)]
    assert server.request("POST", "/v1/people", fields={"name": "s4"}, files=files).status == 201
    session = open_session(server, "s4").body["session_id"]
    play(server, clock, session, TurningHead(1).frame)
    fields = {"claim": "s4", "liveness_session": session}
    answer = server.request("POST", "/v1/verify", fields=fields, files=[("image", "s4.pgm", att(4, 4).read_bytes())])
    assert answer.status == 200, answer.body
    assert answer.body["accepted"] is True and answer.body["granted"] is False, answer.body
    evidence = answer.body["liveness"]["session"]
    assert not (evidence["passed"] and evidence["same_person"]), evidence


def test_an_accomplices_movement_then_the_victims_photo_fails_the_session(active, tmp_path):
    """A live accomplice (s23) makes the movement (passive: a small one; active: the first prompt), then a
    still photo of the victim (the claim) is held where the accomplice's face was, without a jump: the face
    became another person's, and the session fails there, saying so (before, the passive session passed on
    the accomplice's movement; only the verification's every-face rule stood between it and a grant)."""
    passive, passive_clock = start(tmp_path, "passive")
    try:
        for (server, clock), victim in (((passive, passive_clock), 4), (active, 5)):
            files = [("images", f"s{victim}-{i}.pgm", att(victim, i).read_bytes()) for i in (1, 2, 3)]
            enrolled = server.request("POST", "/v1/people", fields={"name": f"s{victim}"}, files=files)
            assert enrolled.status == 201, enrolled.body
            rng, head, shown = np.random.default_rng(victim), TurningHead(2), []

            def frames(prompt, rng=rng, head=head, shown=shown, victim=victim):
                shown.append(prompt)
                if server is passive:  # s23 moving a little for 19 frames (its movement: 18), then the photo
                    return camera_frame(S23_MOVING[len(shown) - 1], rng) if len(shown) <= 19 else None
                if "left" in (prompt or "") or any("left" in (p or "") for p in shown):  # the 2nd prompt
                    return None
                return head.frame(prompt)

            dt = 0.05 if server is passive else FRAME_S  # passive: the movement before its 1.5 s are up
            session = open_session(server, f"s{victim}").body["session_id"]
            state, _ = play(server, clock, session, frames, dt)
            assert state["state"] == "pending", state  # the accomplice's part: no decision yet, but its movement
            assert state["parallax"] >= 0.15 if server is passive else state["completed"] == 1, state
            photos = [att_frame(victim, 4, rng) for _ in range(20)]
            state, _ = play(server, clock, session, photos, dt)
            assert state["state"] == "failed" and "another person's" in state["reason"], state
            answer = verify(server, session, claim=f"s{victim}")
            assert answer.body["granted"] is False, answer.body
    finally:
        passive.stop()


def test_failed_sessions_lock_the_person_out_and_opening_is_rate_limited(tmp_path):
    server, clock = start(tmp_path, "passive", "--lockout-failures", "3")
    try:
        for _ in range(3):  # three sessions that fail (a repeated still)
            session = open_session(server).body["session_id"]
            still = camera_frame("7", np.random.default_rng(0))
            state, _ = play(server, clock, session, [still] * 3)
            assert state["state"] == "failed", state
        locked = open_session(server)
        assert (locked.status, locked.error) == (429, "locked")
    finally:
        server.stop()
    # each failure is in the gallery's audit as a denied claim of the person: a restarted server keeps the lock
    with contextlib.closing(sqlite3.connect(tmp_path / "passive.db")) as db:
        rows = db.execute("SELECT rule, accepted, actor FROM audit WHERE kind = 'verify'").fetchall()
    assert len(rows) == 3 and all(r[:2] == ("liveness-session", 0) and r[2].startswith("key:") for r in rows), rows
    again = Server(
        tmp_path / "passive.db",
        "--liveness",
        "passive",
        "--camera",
        "grey",
        "--min-size",
        "40",
        "--lockout-failures",
        "3",
    )
    try:
        locked = open_session(again)
        assert (locked.status, locked.error) == (429, "locked"), locked.body
    finally:
        again.stop()


def test_a_failed_session_used_in_a_claim_counts_once_after_a_restart(tmp_path):
    """A failed session then sent with a claim is one failure, in the process and in the audit alike."""
    options = ("--liveness", "passive", "--camera", "grey", "--min-size", "40", "--lockout-failures", "3")
    server, clock = start(tmp_path, "passive", *options[6:])
    try:
        for _ in range(2):
            session = open_session(server).body["session_id"]
            state, _ = play(server, clock, session, [camera_frame("7", np.random.default_rng(0))] * 3)
            assert state["state"] == "failed", state
            assert verify(server, session).body["granted"] is False
    finally:
        server.stop()
    again = Server(tmp_path / "passive.db", *options)
    try:
        assert open_session(again).status == 201  # 2 failures of 3, not 4
    finally:
        again.stop()


def test_passive_mode_is_a_session_without_prompts(tmp_path):
    server, clock = start(tmp_path, "passive")
    try:
        session = open_session(server).body
        assert session["mode"] == "passive"
        state, sent = play(server, clock, session["session_id"], TurningHead(6).frame)
        assert state["state"] == "passed" and state["challenges"] == [], state
        assert len(sent) >= 10
        granted = verify(server, session["session_id"])
        assert granted.body["granted"] is True, granted.body
        assert granted.body["liveness"]["passive"]["camera"] == "grey"
    finally:
        server.stop()


# -- the session book, on a fake clock ------------------------------------------------------------------------
def test_session_book_bounds():
    from siamface.liveness.session import CaptureRules

    clock = ManualClock()
    book = LivenessSessions(
        ttl=30, max_sessions=3, max_frames=3, rules=CaptureRules(), per_key=2, per_person=2, clock=clock
    )

    def error(call, *args):
        with pytest.raises(ServiceError) as caught:
            call(*args)
        return caught.value.status, caught.value.error

    first = book.open("k1", 1, "a")["session_id"]
    book.open("k1", 2, "b")
    assert error(book.open, "k1", 3, "c") == (429, "too-many-liveness-sessions")  # per key
    book.open("k2", 1, "a")
    assert error(book.open, "k3", 1, "a") == (429, "too-many-liveness-sessions")  # per person
    assert error(book.frame_slot, first, "k2") == (404, "unknown-liveness-session")  # bound to its key
    assert error(book.use, first, "k1", 2) == (409, "liveness-session-other-claim")
    assert error(book.use, first, "k1", 1) == (409, "liveness-session-used")  # tried once, used up
    clock.advance(61)
    assert [s.person for s in book.failed()] == [2, 1]  # expired unused: each counted once
    assert book.failed() == []
    assert PROMPTS["turn_left"].startswith("turn")


def test_health_says_the_mode_and_pairs_need_no_session(active):
    server, _ = active
    assert server.request("GET", "/v1/health").body["liveness"] == "active"
    a = png_bytes(camera_frame("7", np.random.default_rng(1)))
    b = png_bytes(camera_frame("1", np.random.default_rng(2)))
    pair = server.request("POST", "/v1/verify", files=[("a", "a.png", a), ("b", "b.png", b)])
    assert pair.status == 200 and pair.body["same"] is True


@pytest.mark.parametrize(
    "options, message",
    [
        (["--liveness", "passive", "--detector", "haar"], "needs a detector with 5 keypoints"),
        (["--liveness", "active", "--liveness-challenges", "turn_left,blink"], "head-turn prompts"),
        (["--liveness", "active", "--liveness-challenges", "closer"], "head-turn prompts"),
        (["--liveness", "active", "--challenge-seconds", "90"], "session life at least as long"),
        (["--liveness", "passive", "--max-frame-gap", "60"], "gap between frames"),
        (["--camera", "infrared"], "invalid choice"),
        (["--liveness", "sometimes"], "invalid choice"),
    ],
)
def test_serve_refuses_bad_liveness_options(tmp_path, options, message, monkeypatch):
    from service_support import cli, never_listen

    monkeypatch.setattr("uvicorn.run", never_listen)  # in this process: refused before it would listen
    done = cli("serve", "--gallery", tmp_path / "g.db", "--port", "1", "--allow-empty", *options)  # no key: empty
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "g.db").exists()
