"""A service that stays up (issue 24): a cap on faces per image and a time budget per request, a connection
cap and header/body deadlines on real sockets, rate-limited logs, no key in a URL or its access log, no
redirect to the Host a client names, an OpenAPI document that declares the server's limits, 503 on a full
disk for decisions that cannot be audited, and a gallery re-embedded under a running server answered 503
"restart", never "damaged". Real `siamface serve` (threads of this process, or real processes where sockets,
file limits and logs are the point), real AT&T faces."""

from __future__ import annotations

import io
import json
import re
import select
import socket
import sqlite3
import subprocess
import time

import numpy as np
import pytest
from service_support import require_service

require_service()

from conftest import att_rgb  # noqa: E402
from PIL import Image  # noqa: E402
from service_support import ENROLLED, PROBE, Server, cli, fixture_bytes, tiled  # noqa: E402

MAX_FACES = 3


def enroll(server, subject: int):
    files = [("images", f"{i}.pgm", fixture_bytes(subject, i)) for i in ENROLLED]
    return server.request("POST", "/v1/people", fields={"name": f"s{subject}"}, files=files)


def claim(server, subject: int):
    return server.request(
        "POST", "/v1/verify", fields={"claim": f"s{subject}"}, files=[("image", "p.pgm", fixture_bytes(subject, PROBE))]
    )


def audit_rows(gallery) -> int:
    with sqlite3.connect(gallery) as db:
        return db.execute("SELECT count(*) FROM audit").fetchone()[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(
        tmp_path_factory.mktemp("uptime") / "people.db",
        "--liveness",
        "off",
        "--min-size",
        "40",
        "--max-faces",
        str(MAX_FACES),
        "--workers",
        "2",
    )
    try:
        for s in (3, 4):
            assert enroll(srv, s).status == 201
        yield srv
    finally:
        srv.stop()


# -- faces per image, time budget ---------------------------------------------------------------------------
def test_identify_answers_the_largest_faces_up_to_the_cap_and_says_it_truncated(server):
    before = audit_rows(server.gallery)
    answer = server.request("POST", "/v1/identify", files=[("image", "tiles.png", tiled(3, 4))])
    assert answer.status == 200, answer.body
    assert len(answer.body["faces"]) == MAX_FACES and answer.body["truncated"] is True
    assert answer.body["faces_found"] >= 10  # detected, not identified
    assert any("largest were identified" in n for n in answer.body["notes"])
    assert audit_rows(server.gallery) == before + MAX_FACES  # only the faces answered are decisions
    one = server.request("POST", "/v1/identify", files=[("image", "p.pgm", fixture_bytes(3, PROBE))])
    assert one.body["truncated"] is False and one.body["faces_found"] == 1


class _LateClock:
    """A clock that runs true for its first `calls` readings, then is far past any budget."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def __call__(self) -> float:
        self.calls -= 1
        return time.monotonic() + (0 if self.calls >= 0 else 3600)


def test_work_past_the_time_budget_stops_with_503_and_decides_nothing(server):
    before = audit_rows(server.gallery)
    # readings: the budget's start, the check before a worker runs it, the check before decoding; the next
    # check (before detection) finds the budget spent
    server.service.clock = _LateClock(3)
    try:
        answer = server.request("POST", "/v1/identify", files=[("image", "tiles.png", tiled(2, 2))])
    finally:
        server.service.clock = time.monotonic
    assert (answer.status, answer.error) == (503, "over-time-budget"), answer.body
    assert "detection" in answer.body["detail"] and answer.headers.get("retry-after")
    assert audit_rows(server.gallery) == before  # nothing decided, nothing audited
    server.service.clock = _LateClock(1)  # a claim spent while waiting for a worker: not even decoded
    try:
        late = claim(server, 3)
    finally:
        server.service.clock = time.monotonic
    assert (late.status, late.error) == (503, "over-time-budget") and "waiting for a worker" in late.body["detail"]
    assert claim(server, 3).body["granted"] is True  # the next request has its own budget


# -- URLs: keys, redirects, the OpenAPI document --------------------------------------------------------------
@pytest.mark.parametrize("query", ["api_key={}", "key={}", "x-api-key={}", "token={}", "a=1&API_KEY={}"])
def test_a_key_in_the_url_is_refused(server, query):
    answer = server.request("GET", "/v1/people?" + query.format(server.key), key=None)
    assert (answer.status, answer.error) == (400, "key-in-query"), answer.body
    assert server.key not in json.dumps(answer.body)


def test_redirects_do_not_name_the_host_the_client_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /docs/ HTTP/1.1\r\nHost: localhost:1\r\nConnection: close\r\n\r\n")
        head = _read_all(s).split(b"\r\n\r\n", 1)[0].decode()
    location = re.search(r"(?im)^location: (.*)$", head)
    assert head.startswith("HTTP/1.1 307") and location, head
    assert (
        location.group(1).strip() == "/docs" and "localhost" not in head
    )  # (another name: 400, see test_attacks_found_4)


def test_the_openapi_document_declares_the_limits_the_server_enforces(server):
    schema = server.request("GET", "/openapi.json", key=None).body
    bodies = schema["components"]["schemas"]
    create = bodies["Body_create_person_v1_people_post"]["properties"]
    assert (create["images"]["minItems"], create["images"]["maxItems"]) == (1, 20)
    assert (create["name"]["minLength"], create["name"]["maxLength"]) == (1, 200)
    verify = bodies["Body_verify_v1_verify_post"]
    assert verify["oneOf"] == [{"required": ["claim", "image"]}, {"required": ["a", "b"]}]
    assert [b for b in verify["properties"]["claim"]["anyOf"] if b["type"] == "string"][0]["maxLength"] == 200
    identify = bodies["Body_identify_v1_identify_post"]["properties"]
    assert (identify["top"]["minimum"], identify["top"]["maximum"]) == (1, 50)
    path_name = schema["paths"]["/v1/people/{name}"]["get"]["parameters"][0]
    assert path_name["schema"]["maxLength"] == 200
    # and the server refuses what the document excludes: 21 images, a claim without its image
    many = [("images", f"{i}.pgm", fixture_bytes(5, 1)) for i in range(21)]
    assert server.request("POST", "/v1/people", fields={"name": "s5"}, files=many).status == 400
    assert server.request("POST", "/v1/verify", fields={"claim": "s3"}).status == 400


# -- a re-embedded gallery -------------------------------------------------------------------------------
def test_a_gallery_reembedded_under_the_server_is_503_restart_never_damaged(tmp_path):
    gallery = tmp_path / "kept.db"
    srv = Server(gallery, "--liveness", "off", "--min-size", "40", "--keep-images", "--workers", "1")
    try:
        assert enroll(srv, 3).status == 201
        out = cli("gallery", "reembed", "-g", gallery, "--model", "dlib-resnet")
        assert out.returncode == 0, out.stderr
        for answer in (
            claim(srv, 3),
            srv.request("POST", "/v1/identify", files=[("image", "p.pgm", fixture_bytes(3, PROBE))]),
            enroll(srv, 4),
        ):
            assert (answer.status, answer.error) == (503, "gallery-reembedded"), answer.body
            assert "restart" in answer.body["detail"]
            assert "damaged" not in answer.body["detail"] and "remove" not in answer.body["detail"]
        health = srv.request("GET", "/v1/health", key=None)
        assert health.status == 503 and (health.body["status"], health.body["gallery"]) == ("degraded", "reembedded")
    finally:
        srv.stop()
    srv = Server(gallery, "--liveness", "off", "--min-size", "40", "--workers", "1")  # restarted: its new model
    try:
        assert srv.request("GET", "/v1/health").body["model"] == "dlib-resnet"
        assert claim(srv, 3).body["granted"] is True
    finally:
        srv.stop()


# -- real sockets: connection cap, header and body deadlines, logs ------------------------------------------
FILES = 300  # the server process's file limit: its connection cap is lowered to fit


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guarded")
    srv = Server(
        folder / "people.db",
        "--liveness",
        "off",
        "--header-timeout",
        "3",
        "--body-timeout",
        "2",
        "--access-log",
        process=True,
        files=FILES,
    )
    try:
        yield srv
    finally:
        srv.stop()


def _read_all(s: socket.socket, limit: float = 10) -> bytes:
    out, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def _closed_within(s: socket.socket, seconds: float, drip: bytes = b"") -> float | None:
    """Seconds until the server closed `s` (sending `drip` every 0.2 s meanwhile), or None."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            if drip:
                s.sendall(drip)
            ready, _, _ = select.select([s], [], [], 0.2)
            if ready and s.recv(65536) == b"":
                return time.monotonic() - start
        except OSError:
            return time.monotonic() - start
    return None


def test_connections_past_the_cap_are_refused_and_the_file_limit_never_met(guarded):
    log = guarded.log.read_text()
    cap = int(re.search(r"at most (\d+) connections at once", log).group(1))
    assert cap < FILES // 2
    flood, outcomes = [], []
    try:
        for _ in range(cap + 200):
            flood.append(socket.create_connection(("127.0.0.1", guarded.port), timeout=10))
        pending, deadline = list(flood), time.monotonic() + 30
        while pending and time.monotonic() < deadline:  # each is refused at once, or held until its deadline
            ready = set(select.select(pending, [], [], 0.5)[0])
            outcomes += [_read_all(s, 2) for s in ready]
            pending = [s for s in pending if s not in ready]
        assert not pending, f"{len(pending)} connections neither refused nor closed"
    finally:
        for s in flood:
            s.close()
    refusals = [r for r in outcomes if r]  # b"": held, then closed for sending no request
    assert len(refusals) >= 20 and len(outcomes) - len(refusals) >= cap
    assert all(r.startswith(b"HTTP/1.1 503") and b'"too-many-connections"' in r for r in refusals)
    assert guarded.request("GET", "/v1/health", key=None).status == 200
    log = guarded.log.read_text()
    assert f"connection refused: {cap} open, the limit is {cap}" in log
    assert "Too many open files" not in log and "Traceback" not in log
    assert log.count("connection refused") <= 3  # one line per kind and 10 s (and the count of the others)


def test_a_client_slow_to_send_its_headers_is_cut_off(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        took = _closed_within(s, 8, drip=b"X")  # one header byte every 0.2 s: never done
    assert took is not None and took < 6, took
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as s:  # or silent
        took = _closed_within(s, 8)
    assert took is not None and took < 6, took


def test_a_client_slow_to_send_its_body_gets_408(guarded):
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/identify HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + guarded.key.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: 100000\r\n\r\n--xx\r\n"
        )
        answer = _read_all(s, 8)
    assert answer.startswith(b"HTTP/1.1 408") and b"body-timeout" in answer, answer[:300]


def test_the_access_log_never_shows_a_key_sent_in_a_url(guarded):
    secret = "sf_query_secret_0123456789"
    answer = guarded.request("GET", f"/v1/health?x=1&api_key={secret}", key=None)
    assert (answer.status, answer.error) == (400, "key-in-query")
    time.sleep(0.2)
    log = guarded.log.read_text()
    assert "api_key=[redacted]" in log and secret not in log


def test_suppressed_log_lines_are_counted_at_shutdown(tmp_path):
    srv = Server(tmp_path / "p.db", "--liveness", "off", "--max-connections", "1", process=True)
    held = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                assert _read_all(s, 5).startswith(b"HTTP/1.1 503")
    finally:
        held.close()
        srv.stop()
    log = srv.log.read_text()
    assert log.count("connection refused") == 2, log  # the first line, and the count at shutdown
    assert re.search(r"(29|30) more log lines like 'connection refused", log), log


# -- a full disk ----------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs (mounting needs root: skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder) -> None:
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_full_disk_gives_503_on_decisions_that_cannot_be_audited_logged_once(small_disk, tmp_path):
    srv = Server(
        small_disk / "people.db", "--liveness", "off", "--min-size", "40", process=True, log=tmp_path / "serve.log"
    )
    try:
        for s in (3, 4, 5):
            assert enroll(srv, s).status == 201
        assert srv.request("DELETE", "/v1/people/s5").status in (200, 204)  # checkpoints: the WAL is empty
        before = audit_rows(small_disk / "people.db")
        _fill(small_disk)
        answers = [claim(srv, 3) for _ in range(3)]
        answers += [srv.request("POST", "/v1/identify", files=[("image", "p.pgm", fixture_bytes(4, PROBE))])]
        for answer in answers:
            assert (answer.status, answer.error) == (503, "not-audited"), answer.body
            assert "granted" not in answer.body and "faces" not in answer.body
        refused = enroll(srv, 6)
        assert (refused.status, refused.error) == (503, "storage-full"), refused.body
        (small_disk / "filler").unlink()
        assert claim(srv, 3).body["granted"] is True  # space again: decisions again, audited
        assert audit_rows(small_disk / "people.db") == before + 1
    finally:
        srv.stop()
    log = srv.log.read_text()
    assert len(re.findall(r"ERROR .*not-audited", log)) == 1, log  # one line for the 3 claims and the identify
    assert "3 more log lines like 'not-audited'" in log
    assert "Traceback" not in log
