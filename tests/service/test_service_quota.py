"""Decisions a minute per API key (`siamface serve --decisions-per-minute`): a stolen door key cannot ask the
gallery about photo after photo at the server's speed. A real server in a thread of the test process, its
clock moved by the test; real AT&T faces."""

from __future__ import annotations

import pytest
from service_support import require_service

require_service()

import sqlite3  # noqa: E402

from service_support import Server, images, probe, tiled  # noqa: E402


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quota")
    server = Server(folder / "people.db", "--liveness", "off", "--min-size", "40", "--decisions-per-minute", "3")
    assert server.request("POST", "/v1/people", fields={"name": "ann"}, files=images(3, 2, 3)).status == 201
    yield server
    server.stop()


def claim(srv: Server, key: str, subject: int = 3, image: int = 1):
    return srv.request("POST", "/v1/verify", key=key, fields={"claim": "ann"}, files=probe(subject, image))


def test_a_key_below_admin_gets_its_decisions_a_minute_then_429_until_the_bucket_refills(srv):
    door = srv.new_key("recognise", "door")
    assert srv.request("GET", "/v1/whoami", key=door).body["decisions_per_minute"] == 3
    answers = [claim(srv, door) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 200]
    assert all(a.body["granted"] for a in answers)
    refused = claim(srv, door)
    assert refused.status == 429 and refused.body["error"] == "too-many-decisions"
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one decision back every 20 s
    same = srv.request("POST", "/v1/identify", key=door, files=probe(3))  # identify draws on the same bucket
    assert same.status == 429 and same.body["error"] == "too-many-decisions"
    srv.clock.advance(21)  # one decision back
    assert claim(srv, door).status == 200
    assert claim(srv, door).status == 429


def test_each_image_of_an_identification_counts_and_a_batch_the_bucket_cannot_pay_is_refused_whole(srv):
    kiosk = srv.new_key("recognise", "kiosk")
    two = [("images", "a.pgm", f[2]) for f in probe(3, 1) + probe(4, 1)]
    first = srv.request("POST", "/v1/identify", key=kiosk, files=two)
    assert first.status == 200 and len(first.body["results"]) == 2
    again = srv.request("POST", "/v1/identify", key=kiosk, files=two)  # 1 left, 2 asked: nothing answered
    assert again.status == 429 and again.body["error"] == "too-many-decisions"
    assert srv.request("POST", "/v1/identify", key=kiosk, files=probe(3)).status == 200  # the 1 left
    four = two + two
    srv.clock.advance(120)
    over = srv.request("POST", "/v1/identify", key=kiosk, files=four)  # more than a whole minute's: no wait helps
    assert over.status == 413 and over.body["error"] == "over-quota" and "at most 3 images" in over.body["detail"]


def identify_rows(srv: Server) -> int:
    with sqlite3.connect(srv.gallery) as db:
        return db.execute("SELECT count(*) FROM audit WHERE kind = 'identify'").fetchone()[0]


def test_each_face_of_an_image_is_a_decision_a_picture_of_many_stolen_photos_pays_for_each(srv):
    """Six photos side by side in one upload: six faces identified and audited, six decisions. The route
    takes one for the image; each face past the first is taken once found, and those the bucket cannot pay
    for are not identified (the largest first), nor audited."""
    thief = srv.new_key("recognise", "thief")
    audited = identify_rows(srv)
    six = srv.request("POST", "/v1/identify", key=thief, files=[("image", "tiles.png", tiled(2, 3))])
    assert six.status == 200 and six.body["faces_found"] == 6 and six.body["truncated"]
    assert len(six.body["faces"]) == 3  # the bucket's 3
    assert any("decisions a minute are used up" in note for note in six.body["notes"])
    assert identify_rows(srv) == audited + 3
    assert srv.request("POST", "/v1/identify", key=thief, files=probe(3)).status == 429
    srv.clock.advance(60)
    everyone = srv.request("POST", "/v1/identify", key=srv.key, files=[("image", "tiles.png", tiled(2, 3))])
    assert everyone.status == 200 and len(everyone.body["faces"]) == 6  # admin keys are not counted


def test_keys_have_their_own_buckets_and_admin_keys_are_not_counted(srv):
    a, b = srv.new_key("recognise", "a"), srv.new_key("enrol", "b")
    for _ in range(3):
        assert claim(srv, a, 4).status == 200  # denied claims (another face) count as decisions too
    assert claim(srv, a).status == 429
    assert claim(srv, b).status == 200  # another key: its own bucket
    for _ in range(5):
        assert claim(srv, srv.key).status == 200  # admin
    assert srv.request("GET", "/v1/whoami").body["decisions_per_minute"] is None


def test_zero_turns_the_count_off(tmp_path):
    server = Server(tmp_path / "g.db", "--liveness", "off", "--min-size", "40", "--decisions-per-minute", "0")
    try:
        door = server.new_key("recognise", "door")
        pair = probe(3, 1) + [("b", "b.pgm", probe(3, 2)[0][2])]
        pair = [("a", "a.pgm", pair[0][2]), pair[1]]
        assert all(server.request("POST", "/v1/verify", key=door, files=pair).status == 200 for _ in range(6))
        assert server.request("GET", "/v1/whoami", key=door).body["decisions_per_minute"] is None
    finally:
        server.stop()


def test_the_images_an_enrol_key_has_matched_against_the_gallery_count_too(srv):
    """An enrol key asks the gallery about faces too: a new person's images are matched against everyone
    (409 `already-enrolled`: "this face is enrolled"), an added face against the person ("does not match":
    not them). Each image is a decision of the key's bucket, as a verification is."""
    assert srv.request("POST", "/v1/people", fields={"name": "bo"}, files=images(5, 2, 3)).status == 201
    clerk = srv.new_key("enrol", "clerk")
    for _ in range(3):
        other = srv.request("POST", "/v1/people/bo/faces", key=clerk, files=images(6, 1))
        assert other.status == 422 and other.body["report"]["rejected"][0]["reason"] == "other-person"
    refused = srv.request("POST", "/v1/people/bo/faces", key=clerk, files=images(6, 1))
    assert refused.status == 429 and refused.body["error"] == "too-many-decisions"
    desk = srv.new_key("enrol", "desk")
    for i in range(3):
        known = srv.request("POST", "/v1/people", key=desk, fields={"name": f"who {i}"}, files=images(3, 1))
        assert known.status == 409 and known.body["error"] == "already-enrolled"
    refused = srv.request("POST", "/v1/people", key=desk, fields={"name": "who 3"}, files=images(3, 1))
    assert refused.status == 429 and refused.body["error"] == "too-many-decisions"


def test_a_fraction_of_a_decision_a_minute_is_refused_not_taken_for_zero(tmp_path):
    """`Settings(decisions_per_minute=0.5)` (the Python API) was int() 0 in the quota: the count silently off."""
    from siamface.errors import ConfigError
    from siamface.service.settings import Settings

    for wrong in (0.5, -1, float("nan")):
        with pytest.raises(ConfigError, match="decisions_per_minute|decisions per minute"):
            Settings(gallery=tmp_path / "g.db", decisions_per_minute=wrong)
    assert Settings(gallery=tmp_path / "g.db", decisions_per_minute=3.0).decisions_per_minute == 3
