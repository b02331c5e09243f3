"""Active liveness in the HTTP service, over `siamface serve --liveness active` (in a thread of the test
process; its clock moved forward to expire a session): challenge sessions
fed real head motion (AT&T subject s26 turning right then left) unlock; the same frontal photo turned as a
flat picture fails and is denied; a challenge answered by someone else does not unlock another person; and
every misuse of a session gets its own JSON error. The session book's bounds are tested with a fake clock.

The challenge is fixed for this server (`--liveness-challenges`, a hidden option for tests): the real draw
is random, and the fixtures turn right then left."""

from __future__ import annotations

import json
import time

import pytest
from service_support import require_service

require_service()

import numpy as np  # noqa: E402
from conftest import (  # noqa: E402
    FRONTAL,
    FRONTAL_2,
    TURN,
    TURNED_LEFT,
    TURNED_RIGHT,
    blended_face,
    faceless,
    phone_screen,
    planar_turn,
    s26,
    scene,
)
from PIL import Image  # noqa: E402
from service_support import ENROLLED, PROBE, Server, cli, fixture_bytes, never_listen, png_bytes  # noqa: E402

from siamface.service.errors import ServiceError  # noqa: E402
from siamface.service.sessions import LivenessSessions  # noqa: E402

CHALLENGE_S, SESSION_S = 3.0, 6.0
GENUINE = [FRONTAL, TURNED_RIGHT, FRONTAL_2, TURNED_LEFT, FRONTAL]
PHOTO_DEGREES = (0, -20, -35, -20, 0, 20, 35, 20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(
        tmp_path_factory.mktemp("active") / "unlock.db",
        "--liveness",
        "active",
        "--liveness-challenges",
        "turn_right,turn_left",
        "--challenge-seconds",
        str(CHALLENGE_S),
        "--session-seconds",
        str(SESSION_S),
        "--min-size",
        "40",
        "--workers",
        "2",
    )
    try:
        enrolled = srv.request(
            "POST",
            "/v1/people",
            fields={"name": "s26"},
            files=[("images", f"{i}.png", png_bytes(s26(i))) for i in (6, 7)],
        )
        assert enrolled.status == 201, enrolled.body
        enrolled = srv.request(
            "POST",
            "/v1/people",
            fields={"name": "s3"},
            files=[("images", f"{i}.pgm", fixture_bytes(3, i)) for i in ENROLLED],
        )
        assert enrolled.status == 201, enrolled.body
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def frames():
    """PNG frames: s26's real head turning, and its frontal photo turned as a plane."""
    return {
        "genuine": [png_bytes(s26(i)) for i in GENUINE],
        "photo": [png_bytes(planar_turn(s26(FRONTAL), d)) for d in PHOTO_DEGREES],
    }


def open_session(server, **kwargs):
    answer = server.request("POST", "/v1/liveness/sessions", **kwargs)
    assert answer.status == 201, answer.body
    return answer.body


def send(server, session_id: str, png: bytes, **kwargs):
    return server.request(
        "POST", f"/v1/liveness/sessions/{session_id}/frames", files=[("image", "frame.png", png)], **kwargs
    )


def challenge(server, pngs: list[bytes], seconds: float) -> dict:
    """Open a session and send `pngs` (over and over) until it is decided or `seconds` pass."""
    session = open_session(server)
    state, deadline, i = session, time.monotonic() + seconds, 0
    while state["state"] == "pending" and time.monotonic() < deadline:
        answer = send(server, session["session_id"], pngs[i % len(pngs)])
        assert answer.status == 200, answer.body
        state, i = answer.body, i + 1
    return state


def verify(server, claim: str, probe: bytes, session_id: str | None, **kwargs):
    fields = {"claim": claim} if session_id is None else {"claim": claim, "liveness_session": session_id}
    return server.request("POST", "/v1/verify", fields=fields, files=[("image", "probe.png", probe)], **kwargs)


def test_a_real_head_meets_the_challenge_and_unlocks_once(server, frames):
    session = open_session(server)
    assert session["state"] == "pending" and session["challenges"] == ["turn_right", "turn_left"]
    assert session["prompt"] == "look straight at the camera" and 0 < session["expires_in"] <= SESSION_S
    assert session["timeout"] == CHALLENGE_S and session["max_frames"] > 0
    prompts = []
    for png in frames["genuine"]:
        answer = send(server, session["session_id"], png)
        assert answer.status == 200, answer.body
        prompts.append(answer.body["prompt"])
        if answer.body["state"] != "pending":
            break
    state = answer.body
    assert state["state"] == "passed", state
    assert prompts[:3] == ["turn your head to your right", "look straight at the camera", "turn your head to your left"]
    assert state["completed"] == 2 and state["parallax"] > 0.1 and state["prompt"] is None

    granted = verify(server, "s26", png_bytes(s26(FRONTAL)), session["session_id"])
    assert granted.status == 200, granted.body
    body = granted.body
    assert body["accepted"] is True and body["granted"] is True
    live = body["liveness"]
    assert live["mode"] == "active" and "passive" not in live
    assert live["active"]["passed"] is True and live["active"]["same_person"] is True
    assert live["active"]["challenges"] == ["turn_right", "turn_left"] and live["active"]["parallax"] > 0.1
    assert live["active"]["lowest_score"] >= body["threshold"] and live["active"]["faces"] == len(prompts)

    again = verify(server, "s26", png_bytes(s26(FRONTAL)), session["session_id"])
    assert (again.status, again.error) == (409, "liveness-session-used")
    late = send(server, session["session_id"], frames["genuine"][0])
    assert (late.status, late.error) == (409, "liveness-session-used")


def test_a_photo_turned_in_front_of_the_camera_fails_and_is_denied(server, frames):
    state = challenge(server, frames["photo"], CHALLENGE_S + 3)
    assert state["state"] == "failed" and "timeout" in state["reason"], state
    assert state["completed"] == 0 and state["parallax"] < 0.1
    denied = verify(server, "s26", png_bytes(s26(FRONTAL)), state["session_id"])
    assert denied.status == 200, denied.body
    assert denied.body["accepted"] is True and denied.body["granted"] is False  # the face matches, all the same
    assert denied.body["liveness"]["active"]["passed"] is False
    assert "liveness challenge failed" in denied.body["notes"][-1]


def test_a_challenge_met_by_someone_else_does_not_unlock_another_person(server, frames):
    state = challenge(server, frames["genuine"], SESSION_S - 1)
    assert state["state"] == "passed", state
    answer = verify(server, "s3", fixture_bytes(3, PROBE), state["session_id"])  # s3's photo as the probe
    assert answer.status == 200, answer.body
    assert answer.body["accepted"] is True and answer.body["granted"] is False
    active = answer.body["liveness"]["active"]
    assert active["passed"] is True and active["same_person"] is False
    assert active["lowest_score"] < answer.body["threshold"]
    assert "is not s3" in answer.body["notes"][-1]


def test_session_errors(server, frames):
    probe = png_bytes(s26(FRONTAL))
    missing = verify(server, "s26", probe, None)
    assert (missing.status, missing.error) == (400, "liveness-required") and "/v1/liveness/sessions" in missing.body[
        "detail"
    ]
    unknown = verify(server, "s26", probe, "no-such-session")
    assert (unknown.status, unknown.error) == (404, "unknown-liveness-session")
    assert send(server, "no-such-session", frames["genuine"][0]).error == "unknown-liveness-session"

    session = open_session(server)["session_id"]
    pending = verify(server, "s26", probe, session)
    assert (pending.status, pending.error) == (409, "liveness-pending") and "look straight" in pending.body["detail"]
    no_face = send(server, session, png_bytes(faceless()))
    assert (no_face.status, no_face.error) == (422, "no-face") and no_face.body["session"]["state"] == "pending"
    broken = send(server, session, b"\x89PNG\r\n\x1a\n broken")
    assert (broken.status, broken.error) == (400, "bad-image")

    other = json.loads(cli("keys", "create", "--gallery", server.gallery, "--json").stdout)
    assert send(server, session, frames["genuine"][0], key=other["key"]).error == "unknown-liveness-session"
    assert verify(server, "s26", probe, session, key=other["key"]).error == "unknown-liveness-session"
    assert cli("keys", "revoke", "--gallery", server.gallery, other["id"]).returncode == 0
    revoked = server.request("POST", "/v1/liveness/sessions", key=other["key"])
    assert (revoked.status, revoked.error) == (403, "revoked-api-key")
    for key in (None, "not-a-key"):
        refused = server.request("POST", "/v1/liveness/sessions", key=key)
        assert refused.status == 401 and refused.error in ("missing-api-key", "invalid-api-key")
        assert send(server, session, frames["genuine"][0], key=key).status == 401

    server.clock.advance(SESSION_S + 0.3)  # the session's life passes on the server's clock
    expired = send(server, session, frames["genuine"][0])
    assert (expired.status, expired.error) == (410, "expired-liveness-session")
    assert verify(server, "s26", probe, session).error == "expired-liveness-session"


def test_health_says_active_and_pairs_need_no_session(server):
    assert server.request("GET", "/v1/health", key=None).body["liveness"] == "active"
    pair = server.request(
        "POST", "/v1/verify", files=[("a", "a.pgm", fixture_bytes(3, 1)), ("b", "b.pgm", fixture_bytes(3, 2))]
    )
    assert pair.status == 200 and pair.body["same"] is True


def printed_s26() -> bytes:
    """s26's frontal photo printed with a white margin and held up in a scene (PNG)."""
    face = np.repeat(np.asarray(Image.open(TURN / f"{FRONTAL}.pgm").convert("L"))[:, :, None], 3, axis=2)
    return png_bytes(scene([(np.pad(face, ((10, 10), (10, 10), (0, 0)), constant_values=235), 2.0, (200, 80))]))


def test_both_needs_the_challenge_and_a_live_probe(tmp_path, frames):
    # A real head passes the challenge, then the claim's probe is a printed photo of the same person.
    srv = Server(
        tmp_path / "both.db", "--liveness", "both", "--liveness-challenges", "turn_right,turn_left", "--min-size", "40"
    )
    try:
        files = [("images", f"{i}.png", png_bytes(s26(i))) for i in (6, 7)]
        assert srv.request("POST", "/v1/people", fields={"name": "s26"}, files=files).status == 201
        state = challenge(srv, frames["genuine"], 20)
        assert state["state"] == "passed", state
        answer = verify(srv, "s26", printed_s26(), state["session_id"])
        assert answer.status == 200 and answer.body["accepted"] is True and answer.body["granted"] is False
        live = answer.body["liveness"]
        assert live["mode"] == "both" and live["active"]["passed"] is True and live["passive"]["live"] is False
        assert "did not pass the liveness check" in answer.body["notes"][-1]
    finally:
        srv.stop()


def test_serve_checks_claims_passively_by_default_and_not_enrollment(tmp_path):
    srv = Server(tmp_path / "default.db", "--min-size", "40")  # no --liveness: passive
    try:
        assert srv.request("GET", "/v1/health", key=None).body["liveness"] == "passive"
        # enrollment is not checked: grey scans (not live to the check) enroll
        files = [("images", f"{i}.pgm", fixture_bytes(3, i)) for i in (2, 3, 4)]
        assert srv.request("POST", "/v1/people", fields={"name": "s3"}, files=files).status == 201
        live = verify(srv, "s3", png_bytes(blended_face(3, 1)), None)
        assert live.status == 200 and live.body["granted"] is True, live.body
        assert live.body["liveness"]["live"] is True and "cnn" in live.body["liveness"]
        # a scan, a phone screen (without scan lines, so that it matches s3: see phone_screen)
        for attack in (fixture_bytes(3, 1), png_bytes(phone_screen(3, 1, scan_lines=False))):
            answer = verify(srv, "s3", attack, None)
            assert answer.status == 200 and answer.body["accepted"] is True and answer.body["granted"] is False
            assert answer.body["liveness"]["live"] is False
            assert "did not pass the liveness check" in answer.body["notes"][-1]
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--liveness", "active", "--detector", "haar"], "needs a detector with 5 keypoints"),
        (["--liveness", "active", "--liveness-challenges", "turn_left,blink"], "unknown or no challenges"),
        (["--liveness", "active", "--challenge-seconds", "90"], "session life at least as long"),
        (["--liveness", "sometimes"], "invalid choice"),
    ],
)
def test_serve_refuses_bad_liveness_options(tmp_path, options, message, monkeypatch):
    monkeypatch.setattr("uvicorn.run", never_listen)  # in this process: refused before it would listen
    done = cli("serve", "--gallery", tmp_path / "g.db", "--port", "1", *options)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "g.db").exists()


# -- the session book, on a fake clock ------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_session_book_bounds():
    clock = Clock()
    book = LivenessSessions(ttl=30, max_sessions=2, max_frames=3, challenge_s=10, clock=clock)

    def error(call, *args):
        with pytest.raises(ServiceError) as caught:
            call(*args)
        return caught.value.status, caught.value.error

    first, second = book.open("k1")["session_id"], book.open("k2")["session_id"]
    assert error(book.open, "k1") == (429, "too-many-liveness-sessions")
    assert error(book.frame_slot, first, "k2") == (404, "unknown-liveness-session")  # bound to its key
    for _ in range(3):
        assert book.feed(book.frame_slot(first, "k1"), None, None, None)["state"] == "pending"
    over = book.frame_slot(first, "k1")
    assert over.state == "failed" and "more than 3 frames" in over.reason
    assert book.use(first, "k1").evidence()["passed"] is False
    assert error(book.use, first, "k1") == (409, "liveness-session-used")
    book.open("k1")  # a used session frees its place
    assert error(book.use, second, "k2") == (409, "liveness-pending")
    clock.now += 30.5
    assert error(book.frame_slot, second, "k2") == (410, "expired-liveness-session")
    book.open("k1")  # expired ones free theirs too
    clock.now += 31
    book.open("k1")
    assert error(book.frame_slot, second, "k2") == (404, "unknown-liveness-session")  # forgotten after a ttl more
