"""Two `siamface serve` processes over one PostgreSQL gallery (one keys file shared with --keys): a person
enrolled through one is identified through the other at once, and the same name enrolled through both at
the same moment makes one person. Real AT&T faces, a real PostgreSQL server (skipped without one)."""

from __future__ import annotations

import concurrent.futures
import json
import sys
from pathlib import Path

import pytest
from service_support import require_service

require_service()
pytest.importorskip("psycopg", reason="the postgres extra is not installed (pip install -e '.[postgres]')")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gallery"))

pytestmark = pytest.mark.slow  # the PostgreSQL server

from gallery_support import postgres_cluster, rows  # noqa: E402
from service_support import ENROLLED, PROBE, Server, cli, fixture_bytes  # noqa: E402


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    url = postgres_cluster().new_database()
    folder = tmp_path_factory.mktemp("shared")
    keys = folder / "gallery.keys.json"
    started = []
    try:
        for label in ("a", "b"):
            started.append(
                Server(url, "--min-size", "40", "--workers", "2", keys=keys, log=folder / f"{label}.log", process=True)
            )
        yield url, started
    finally:
        for server in started:
            server.stop()


def _enroll(server, name, subject):
    files = [("images", f"{i}.pgm", fixture_bytes(subject, i)) for i in ENROLLED]
    return server.request("POST", "/v1/people", fields={"name": name}, files=files)


def test_enrolled_through_one_server_identified_through_the_other_at_once(servers):
    url, (a, b) = servers
    probe = [("image", "probe.pgm", fixture_bytes(5, PROBE))]
    assert b.request("POST", "/v1/identify", files=probe).body["faces"][0]["person"] == "unknown"
    answer = _enroll(a, "s5", 5)
    assert answer.status == 201, answer.body
    found = b.request("POST", "/v1/identify", files=probe)
    assert found.status == 200 and found.body["faces"][0]["person"] == "s5", found.body
    assert b.request("DELETE", "/v1/people/s5").status in (200, 204)
    gone = a.request("POST", "/v1/identify", files=probe)
    assert gone.body["faces"][0]["person"] == "unknown", gone.body


def test_the_same_name_enrolled_through_both_at_once_is_one_person(servers):
    url, (a, b) = servers
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda server: _enroll(server, "s7", 7), [a, b, a, b]))
    # the first to commit creates s7 (201); every other one is told it exists (409), also one that raced
    # past the early check: the store decides inside its transaction (as with an SQLite gallery)
    statuses = [x.status for x in answers]
    assert sorted(statuses) == [201, 409, 409, 409], [x.body for x in answers]
    assert {x.error for x in answers if x.status == 409} == {"person-exists"}
    assert rows(url, "SELECT count(*) FROM people WHERE lower(name) = 's7'") == [(1,)]
    # the same three images four times: the first call adds them, the others find them duplicates
    assert rows(url, "SELECT count(*) FROM templates t JOIN people p ON p.id = t.person_id WHERE p.name = 's7'") == [
        (len(ENROLLED),)
    ]


def test_gallery_errors_are_answered_not_500(servers):
    """A gallery error (unknown, taken or invalid name) becomes its 4xx answer, with no URL in it."""
    url, (a, _) = servers
    unknown = a.request("GET", "/v1/people/ghost")
    assert (unknown.status, unknown.error) == (404, "unknown-person"), unknown.body
    renamed = a.request("PATCH", "/v1/people/ghost", json_body={"name": "x/y"})
    assert (renamed.status, renamed.error) == (404, "unknown-person")
    bad = a.request("POST", "/v1/people", fields={"name": "x/y"}, files=[("images", "1.pgm", fixture_bytes(3, 1))])
    assert (bad.status, bad.error) == (400, "invalid-name") and url not in str(bad.body)


def test_a_url_gallery_without_keys_file_is_a_clear_error(servers):
    url, _ = servers
    out = cli("keys", "list", "--gallery", url)
    assert out.returncode == 2 and "needs --keys FILE" in out.stderr and "Traceback" not in out.stderr


def test_an_identify_racing_a_delete_is_answered_and_its_decision_audited(tmp_path):
    """Issue 24: on PostgreSQL an identify racing a delete answered 500 and lost the decision (the audit's
    foreign key). The race is made certain here: the person is removed, by another client, between the
    server's decision and its audit row."""
    from siamface.gallery import open_store

    url = postgres_cluster().new_database()
    srv = Server(url, "--min-size", "40", "--liveness", "off", keys=tmp_path / "keys.json")  # in this process
    try:
        assert _enroll(srv, "s5", 5).status == 201
        store = srv.service.gallery.store
        names = store.names

        def names_then_someone_deletes(ids):
            found = names(ids)  # the decision is made from these: s5 is named
            with open_store(url) as other:
                other.delete("s5")
            return found

        store.names = names_then_someone_deletes
        try:
            answer = srv.request("POST", "/v1/identify", files=[("image", "probe.pgm", fixture_bytes(5, PROBE))])
        finally:
            store.names = names
        assert answer.status == 200, answer.body
        latest = cli("gallery", "audit", "--gallery", url, "--limit", "2", "--json")
        entries = json.loads(latest.stdout)["entries"]
        assert [e["kind"] for e in entries] == ["identify", "delete"]
        assert entries[0]["accepted"] is True and entries[0]["detail"] == {"person_removed": True}
        assert entries[0]["actor"] == f"key:{srv.key.split('_')[1]}"
        assert cli("gallery", "audit", "--gallery", url, "--verify").returncode == 0
    finally:
        srv.stop()


def test_two_servers_and_a_restart_allow_only_the_additions_cap_together(servers, tmp_path):
    """Faces added by a key below admin are capped per person (`--additions-per-person`, 5 a day by default).
    The cap was kept in each process's memory: two servers on one PostgreSQL allowed twice the cap, and a
    restart cleared it. It is counted from the gallery's stored templates now."""
    import io

    from PIL import Image

    url, (a, b) = servers
    assert _enroll(a, "s8", 8).status == 201
    desk = a.new_key("enrol", "desk")

    def variant(i, angle):
        out = io.BytesIO()
        Image.open(io.BytesIO(fixture_bytes(8, i))).convert("L").rotate(angle, fillcolor=128).save(out, "PNG")
        return [("images", f"v{i}{angle}.png", out.getvalue())]

    variants = [variant(i, angle) for i in (1, 2, 3, 4) for angle in (-9, 6, 12)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # both servers at once, 8 faces in flight
        answers = list(
            pool.map(
                lambda x: (a, b)[x[0] % 2].request("POST", "/v1/people/s8/faces", key=desk, files=x[1]),
                enumerate(variants[:8]),
            )
        )
    added = sum(len(x.body.get("added", [])) for x in answers if x.status == 200)
    assert added <= 5 and all(x.status in (200, 422, 429) for x in answers), [x.body for x in answers]
    for i, files in enumerate(variants[8:]):
        sent = (a, b)[i % 2].request("POST", "/v1/people/s8/faces", key=desk, files=files)
        added += len(sent.body.get("added", [])) if sent.status == 200 else 0
    assert added == 5, added
    stored = "SELECT count(*) FROM templates t JOIN people p ON p.id = t.person_id WHERE p.name = 's8'"
    assert rows(url, stored) == [(len(ENROLLED) + 5,)]
    restarted = Server(url, "--min-size", "40", keys=a.keys_option[1], log=tmp_path / "c.log", process=True)
    try:
        again = restarted.request("POST", "/v1/people/s8/faces", key=desk, files=variant(1, -3))
        assert (again.status, again.error) == (429, "too-many-additions"), again.body
        assert int(again.headers["retry-after"]) > 3600
    finally:
        restarted.stop()


def test_denied_claims_on_two_servers_lock_the_person_on_both(tmp_path):
    """After 5 denied claims (`--lockout-failures`, default) of one person, spread over two servers sharing
    one PostgreSQL gallery, the next claim on either is 429: each server counts the denials in the gallery's
    audit, not only its own (they allowed 5 per server before)."""
    url = postgres_cluster().new_database()
    keys = tmp_path / "keys.json"
    started = []
    try:
        for x in "ab":
            started.append(
                Server(url, "--liveness", "off", "--min-size", "40", keys=keys, log=tmp_path / f"{x}.log", process=True)
            )
        a, b = started
        assert _enroll(a, "s6", 6).status == 201
        door = a.new_key("recognise", "door")
        impostor = [("image", "s8.pgm", fixture_bytes(8, PROBE))]
        genuine = [("image", "s6.pgm", fixture_bytes(6, PROBE))]
        # a name nobody has is locked alike (else the lock-out would tell a recognise key who is enrolled)
        for claim, last in (("s6", genuine), ("s99", impostor)):
            for i in range(5):
                denied = (b, a)[i % 2].request("POST", "/v1/verify", key=door, fields={"claim": claim}, files=impostor)
                assert denied.status == 200 and denied.body["accepted"] is False, denied.body
            for server in (a, b):  # a saw 2 of the 5, b 3
                locked = server.request("POST", "/v1/verify", key=door, fields={"claim": claim}, files=last)
                assert (locked.status, locked.error) == (429, "locked"), (claim, locked.body)
                assert 1 <= int(locked.headers["retry-after"]) <= 300
    finally:
        for server in started:
            server.stop()
