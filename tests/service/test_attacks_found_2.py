"""The second attack run on the service, over a real `siamface serve`: what the first one saw and left alone
(a removed person's faces kept in the photo library, their capture sessions and lock-out state kept in memory
and inherited by the next person given their id; audit rows of a name nobody has keeping a digest a dictionary
reverses; a key pasted into a URL path written to the access log)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3

import pytest
from service_support import require_service

require_service()

from conftest import att, run_cli  # noqa: E402
from service_support import ENROLLED, PROBE, Server, images, probe  # noqa: E402


def _library_faces(srv: Server) -> dict[int, str]:
    """{face id: its file or upload label} of every face the library shows."""
    view = srv.request("GET", "/v1/library")
    assert view.status == 200, view.body
    faces = [f for group in view.body["clusters"] for f in group["faces"]] + view.body["unclustered"]
    return {f["id"]: f["file"] for f in faces}


def test_removing_a_person_leaves_nothing_of_them_in_the_servers_memory(tmp_path):
    # "Deletion removes everything about a person": their photo-library faces (thumbnails, the crops of uploads),
    # the capture sessions opened for them (which keep each frame's embedding and answer with their name), and
    # their lock-out, which the next person enrolled inherited (SQLite gives the removed person's id again)
    srv = Server(tmp_path / "people.db", "--min-size", "40", "--lockout-failures", "2", "--lockout-window", "60")
    try:
        door, desk = srv.new_key("recognise", "door"), srv.new_key("enrol", "desk")
        for s in (4, 3):  # s3 last: the highest id, which SQLite gives again
            made = srv.request("POST", "/v1/people", fields={"name": f"s{s}"}, files=images(s, *ENROLLED))
            assert made.status == 201, made.body
        photos = [("images", f"s{s}-{i}.pgm", b) for s, i in ((3, 1), (3, 2), (4, 1)) for _, _, b in images(s, i)]
        assert srv.request("POST", "/v1/library/photos", files=photos).status == 200
        before = _library_faces(srv)
        theirs = [i for i, f in before.items() if "s3-" in f]
        assert len(theirs) == 2 and len(before) == 3, before
        session = srv.request("POST", "/v1/liveness/sessions", key=door, fields={"claim": "s3"})
        assert session.status == 201, session.body
        for _ in range(2):  # faces that do not match s3: the lock-out counts each such request as a failure
            refused = srv.request("POST", "/v1/people/s3/faces", key=desk, files=images(8, 1))
            assert refused.status == 422, refused.body
        assert srv.request("POST", "/v1/people/s3/faces", key=desk, files=images(3, PROBE)).error == "locked"

        removed = srv.request("DELETE", "/v1/people/s3")
        assert removed.status == 200, removed.body

        after = _library_faces(srv)
        assert not any("s3-" in f for f in after.values()), after
        assert list(after.values()) == [before[i] for i in before if i not in theirs]
        for face in theirs:
            assert srv.request("GET", f"/v1/library/faces/{face}/thumbnail").status == 404
        frame = srv.request(
            "POST", f"/v1/liveness/sessions/{session.body['session_id']}/frames", key=door, files=probe(3)
        )
        assert (frame.status, frame.error) == (404, "unknown-liveness-session"), frame.body
        held = srv.service
        assert not any(s.claim == "s3" for s in held.sessions._sessions.values())
        assert not any(
            e.face.file.startswith("upload") and "s3-" in e.face.file for e in held.library._entries.values()
        )

        again = srv.request("POST", "/v1/people", fields={"name": "s3"}, files=images(3, *ENROLLED))
        assert again.status == 201, again.body
        added = srv.request("POST", "/v1/people/s3/faces", key=desk, files=images(3, PROBE))
        assert added.status == 200, added.body  # the new person has no failures of the removed one
        named = srv.request("POST", "/v1/identify", key=door, files=probe(3))
        assert named.body["faces"][0]["person"] == "s3", named.body
    finally:
        srv.stop()


def test_the_audit_of_a_claim_of_a_name_nobody_has_cannot_be_read_back_with_a_dictionary(tmp_path):
    # docs/service.md: a claim of a name nobody has is audited with "a digest of the name, never a person"; an
    # unsalted SHA-256 of the name: whoever reads the audit (an export, a backup) learned which names were tried
    # by hashing a list of names. The digest is keyed by a secret kept in the gallery, the same for every server
    # that opens it, so that a restarted server (or a second one) still counts the name's denials
    gallery = tmp_path / "people.db"
    args = ("--liveness", "off", "--min-size", "40", "--lockout-failures", "2")
    first = Server(gallery, *args)
    try:
        assert first.request("POST", "/v1/people", fields={"name": "s6"}, files=images(6, *ENROLLED)).status == 201
        door = first.new_key("recognise", "door")
        for _ in range(2):
            denied = first.request("POST", "/v1/verify", key=door, fields={"claim": "Mallory Smith"}, files=probe(8))
            assert denied.status == 200 and denied.body["accepted"] is False, denied.body
    finally:
        first.stop()
    with contextlib.closing(sqlite3.connect(gallery)) as db:
        refs = [r for (r,) in db.execute("SELECT claimed_ref FROM audit WHERE kind = 'verify'")]
    assert len(refs) == 2 and all(r.startswith("unenrolled:") for r in refs), refs
    tried = {hashlib.sha256(f.encode()).hexdigest()[:24] for f in ("Mallory Smith", "mallory smith", "MALLORY SMITH")}
    assert not any(r.removeprefix("unenrolled:") in tried for r in refs), refs
    again = Server(gallery, *args)
    try:
        locked = again.request("POST", "/v1/verify", key=door, fields={"claim": "mallory smith"}, files=probe(8))
        assert (locked.status, locked.error) == (429, "locked"), locked.body
    finally:
        again.stop()


@pytest.mark.parametrize("where", ["/v1/people/{key}", "/v1/{key}/identify", "/{key}"])
def test_a_key_pasted_into_a_url_path_is_not_written_to_the_access_log(tmp_path, where):
    # docs/service.md: the access log never shows a key sent in a URL (query parameters were redacted; a key
    # pasted into the path, by a client that built its URL wrong, was written as sent)
    log = tmp_path / "serve.log"
    srv = Server(tmp_path / "people.db", "--liveness", "off", "--access-log", process=True, log=log)
    try:
        leaked = srv.new_key("recognise", "door")
        srv.request("GET", where.format(key=leaked))
        srv.request("GET", "/v1/health")
    finally:
        srv.stop()
    text = log.read_text()
    assert "/v1/health" in text, text  # the access log is written
    secret = leaked.split("_", 2)[2]
    assert secret not in text, text


def test_a_person_removed_by_the_command_line_leaves_no_lock_out_to_the_next_one_given_their_id(tmp_path):
    # A person removed under a running server by `siamface people remove` (or through another server sharing the
    # gallery): SQLite gives their id to the next person enrolled, who inherited the server's lock-out of it
    gallery = tmp_path / "people.db"
    srv = Server(gallery, "--liveness", "off", "--min-size", "40", "--lockout-failures", "2")
    try:
        desk = srv.new_key("enrol", "desk")
        for s in (4, 3):
            assert srv.request("POST", "/v1/people", fields={"name": f"s{s}"}, files=images(s, *ENROLLED)).status == 201
        for _ in range(2):
            assert srv.request("POST", "/v1/people/s3/faces", key=desk, files=images(8, 1)).status == 422
        assert srv.request("POST", "/v1/people/s3/faces", key=desk, files=images(3, PROBE)).error == "locked"
        assert run_cli("people", "remove", "s3", "--gallery", gallery).returncode == 0
        enrolled = run_cli("enroll", "--gallery", gallery, "--min-size", "40", "s5", *(att(5, i) for i in ENROLLED))
        assert enrolled.returncode == 0, enrolled.stderr
        added = srv.request("POST", "/v1/people/s5/faces", key=desk, files=images(5, PROBE))
        assert added.status == 200, added.body
    finally:
        srv.stop()
