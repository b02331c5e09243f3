"""The lock-out counts the denied claims the gallery's audit holds, not only those the server process
remembers: a restarted `siamface serve` (a real process, over an SQLite gallery) still refuses a person
whose claims were denied `--lockout-failures` times before the restart. (Two servers sharing one
PostgreSQL gallery: tests/service/test_service_postgres.py.)"""

from __future__ import annotations

from service_support import require_service

require_service()

from service_support import ENROLLED, Server, images, probe  # noqa: E402

FAILURES = 5  # serve's default


def test_denials_before_a_restart_still_lock_the_person(tmp_path):
    gallery, log = tmp_path / "people.db", tmp_path / "serve.log"
    first = Server(gallery, "--liveness", "off", "--min-size", "40", process=True, log=log)
    try:
        assert first.request("POST", "/v1/people", fields={"name": "s6"}, files=images(6, *ENROLLED)).status == 201
        assert first.request("POST", "/v1/people", fields={"name": "s7"}, files=images(7, *ENROLLED)).status == 201
        door = first.new_key("recognise", "door")
        for _ in range(FAILURES):
            denied = first.request("POST", "/v1/verify", key=door, fields={"claim": "s6"}, files=probe(8))
            assert denied.status == 200 and denied.body["accepted"] is False, denied.body
    finally:
        first.stop()
    again = Server(gallery, "--liveness", "off", "--min-size", "40", process=True, log=tmp_path / "again.log")
    try:
        # the genuine face too: the person is locked, whoever comes
        locked = again.request("POST", "/v1/verify", key=door, fields={"claim": "s6"}, files=probe(6))
        assert (locked.status, locked.error) == (429, "locked"), locked.body
        assert 1 <= int(locked.headers["retry-after"]) <= 300
        other = again.request("POST", "/v1/verify", key=door, fields={"claim": "s7"}, files=probe(7))
        assert other.status == 200 and other.body["accepted"] is True, other.body
    finally:
        again.stop()
