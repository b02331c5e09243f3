"""A real `siamface serve` (in a thread of the test process) against what a holder of one device key, or of
none, could do, and the items an earlier review left open: one index search per identification, a cap on the
upload bytes held at once, security headers on every answer (a crash's too), a batch no wait would pay for,
a key revoked while its enrolment is embedded, a /docs page the bundled Swagger UI renders, the Host names
answered (DNS rebinding)."""

from __future__ import annotations

import json
import socket

import pytest
from service_support import require_service

require_service()

from service_support import ENROLLED, Server, cli, enrolled_server, images, multipart, probe  # noqa: E402

SECURITY_HEADERS = ("x-content-type-options", "content-security-policy", "cross-origin-opener-policy", "cache-control")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attacks4")
    server = enrolled_server(
        folder,
        (6, 7),
        "--lockout-failures",
        "2",
        "--decisions-per-minute",
        "3",
        "--max-upload-mb",
        "1",
        "--max-inflight-mb",
        "1.5",
    )
    yield server
    server.stop()


def _gate(srv: Server):
    """The application's `Gate` (the middleware that counts the upload bytes in flight)."""
    from siamface.service.app import Gate

    layer = srv._uvicorn.config.app.middleware_stack
    while not isinstance(layer, Gate):
        layer = layer.app
    return layer


def _until(condition, what: str) -> None:
    """Wait (at most 30 s, polling) for the server to reach a state another connection put it in."""
    import time

    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _answer(s: socket.socket) -> tuple[int, dict[str, str], dict]:
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2 :]
        body = out
    return int(lines[0].split()[1]), headers, json.loads(body) if body else {}


def _head(srv: Server, path: str, key: str, content_type: str, length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\n{size}\r\nConnection: close\r\n\r\n"
    ).encode()


# -- 1. identification: one index search, people locked out by the audit withheld ---------------------------
def test_an_identification_searches_the_index_once_and_never_names_a_person_the_audit_locks_out(srv):
    door = srv.new_key("recognise", "door-1")
    for _ in range(2):  # --lockout-failures 2: s6 is locked out
        denied = srv.request("POST", "/v1/verify", key=door, fields={"claim": "s6"}, files=probe(8))
        assert denied.status == 200 and denied.body["granted"] is False, denied.body
    person = srv.service.gallery.store.person("s6", metadata=False)
    srv.service.lockout.forget(person.id)  # as another server sharing the gallery, or this one restarted
    index = srv.service.gallery.index
    searches = []
    original = index.search
    index.search = lambda *a, **kw: searches.append(1) or original(*a, **kw)
    try:
        hidden = srv.request("POST", "/v1/identify", files=probe(6))
        assert hidden.status == 200, hidden.body
        assert [f["status"] for f in hidden.body["faces"]] == ["unknown"]  # locked per the audit: not named
        assert len(searches) == 1  # the audit's lock-outs filter that one search's candidates
        named = srv.request("POST", "/v1/identify", files=probe(7))
        assert [f["person"] for f in named.body["faces"]] == ["s7"]
        assert len(searches) == 2
    finally:
        del index.search
    srv.clock.advance(400)  # the lock-out (300 s) is over: s6 is named again
    again = srv.request("POST", "/v1/identify", files=probe(6))
    assert [f["person"] for f in again.body["faces"]] == ["s6"], again.body


# -- 2. upload bytes in flight --------------------------------------------------------------------------------
def test_slow_uploads_hold_no_more_than_the_servers_cap_and_others_are_told_to_retry(srv):
    """--max-inflight-mb 1.5 with --max-upload-mb 1: one slow upload of 1,000,000 bytes holds most of it; a
    second declared one (another key's) is answered 503 server-busy with Retry-After (not hung, not crashed),
    as is a chunked one that grows past what is left; a small upload still fits, requests without a body are
    not held, and once the slow upload is gone the bytes are free again. One key may hold a quarter of the cap,
    at least one largest request (here 1 MiB): past it, 429 too-many-uploads, while another key's upload fits."""
    gate = _gate(srv)
    # the last test's last request gives its bytes back when its handler returns, which may be just after its
    # client has read the answer
    _until(lambda: gate.inflight == 0, "an earlier request's bytes were not given back")
    other = srv.new_key("enrol", "other-device")
    body, content_type = multipart({}, probe(7))
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    try:
        slow.sendall(_head(srv, "/v1/identify", srv.key, content_type, 1_000_000) + body[:100])
        _until(lambda: gate.inflight == 1_000_000, "the slow upload was not counted")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as second:
            padded = body + b"\0" * (1_000_000 - len(body))
            second.sendall(_head(srv, "/v1/identify", other, content_type, len(padded)) + padded)
            status, headers, answer = _answer(second)
        assert (status, answer.get("error")) == (503, "server-busy"), answer
        assert int(headers["retry-after"]) >= 1
        assert all(h in headers for h in SECURITY_HEADERS), headers
        large, large_type = multipart({}, [("image", "large.pgm", probe(7)[0][2] + b"\0" * 600_000)])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as chunked:
            chunked.sendall(_head(srv, "/v1/identify", other, large_type, None))
            for start in range(0, len(large), 100_000):  # 610 kB: past the 572 kB left
                piece = large[start : start + 100_000]
                chunked.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            chunked.sendall(b"0\r\n\r\n")
            status, headers, answer = _answer(chunked)
        assert (status, answer.get("error")) == (503, "server-busy"), answer
        assert gate.inflight == 1_000_000  # what the refused ones counted is given back
        small = srv.request("POST", "/v1/identify", files=probe(7))  # 10 kB fits in what is left (and the key's)
        assert small.status == 200 and small.body["faces"][0]["person"] == "s7", small.body
        assert srv.request("GET", "/v1/whoami").status == 200
        bigger = [("image", "s7.pgm", probe(7)[0][2] + b"\0" * 60_000)]  # 1,070 kB for one key: past its share
        mine = srv.request("POST", "/v1/identify", files=bigger)
        assert (mine.status, mine.error) == (429, "too-many-uploads"), mine.body
        assert int(mine.headers["retry-after"]) >= 1
        theirs = srv.request("POST", "/v1/identify", key=other, files=bigger)
        assert theirs.status == 200, theirs.body
    finally:
        slow.close()
    _until(lambda: gate.inflight == 0, "the abandoned upload's bytes were not given back")
    assert srv.request("POST", "/v1/identify", files=probe(7)).status == 200


def test_the_in_flight_cap_must_hold_one_largest_request(tmp_path):
    refused = cli("serve", "--gallery", tmp_path / "g.db", "--max-upload-mb", "10", "--max-inflight-mb", "5")
    assert refused.returncode != 0 and "at least one of the largest request" in refused.stderr, refused.stderr


# -- 3. every answer carries the security headers -------------------------------------------------------------
def test_a_crash_answer_carries_the_security_headers(srv):
    def crash():
        raise RuntimeError("a bug")

    srv.service.health = crash
    try:
        crashed = srv.request("GET", "/v1/health", key=None)
    finally:
        del srv.service.health
    assert (crashed.status, crashed.error) == (500, "internal-error"), crashed.body
    assert "a bug" not in json.dumps(crashed.body)
    assert all(h in crashed.headers for h in SECURITY_HEADERS), crashed.headers
    assert crashed.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in crashed.headers["content-security-policy"]


def test_an_error_raised_before_routing_carries_the_security_headers(srv):
    """The key check itself fails (the keys file unreadable, say): a 500 from the gate, before any route."""
    original = srv.service.keys.check

    def broken(presented):
        raise OSError("keys file unreadable")

    srv.service.keys.check = broken
    try:
        crashed = srv.request("GET", "/v1/whoami")
    finally:
        srv.service.keys.check = original
    assert (crashed.status, crashed.error) == (500, "internal-error"), crashed.body
    assert all(h in crashed.headers for h in SECURITY_HEADERS), crashed.headers


def test_every_kind_of_answer_carries_the_security_headers(srv):
    answers = [
        srv.request("GET", "/v1/health", key=None),  # public
        srv.request("GET", "/v1/whoami", key=None),  # 401 from the gate
        srv.request("GET", "/nowhere", key=None),  # 404 outside /v1
        srv.request("GET", "/openapi.json", key=None),
        srv.request("GET", "/docs", key=None),
        srv.request("POST", "/v1/identify", fields={"top": "999"}, files=probe(7)),  # 422 validation
    ]
    for answer in answers:
        assert all(h in answer.headers for h in SECURITY_HEADERS[:3]), (answer.status, answer.headers)
    assert all(a.headers.get("cache-control") == "no-store" for a in answers if a.status >= 400)


def test_a_request_that_is_not_valid_http_is_answered_with_the_security_headers(srv):
    """Answered by the HTTP transport itself, before the application: uvicorn's own plain-text 400 carried none."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(b"POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 9\r\n\r\nx")
        status, headers, answer = _answer(s)
    assert (status, answer.get("error")) == (400, "bad-request"), answer
    assert all(h in headers for h in SECURITY_HEADERS), headers


# -- 4. a batch larger than the key's whole quota ---------------------------------------------------------------
def test_a_batch_no_wait_would_pay_for_is_413_naming_the_quota_and_429_only_when_waiting_helps(srv):
    kiosk = srv.new_key("recognise", "kiosk-4")
    four = [("images", f"{i}.pgm", f[2]) for i, f in enumerate(probe(6) + probe(7) + probe(6) + probe(7))]
    over = srv.request("POST", "/v1/identify", key=kiosk, files=four)
    assert (over.status, over.error) == (413, "over-quota"), over.body
    assert "3 decisions a minute" in over.body["detail"] and "retry-after" not in over.headers
    assert srv.request("POST", "/v1/identify", key=kiosk, files=four[:2]).status == 200  # nothing was taken
    wait = srv.request("POST", "/v1/identify", key=kiosk, files=four[:3])  # 1 left, 3 asked: a wait helps
    assert (wait.status, wait.error) == (429, "too-many-decisions") and int(wait.headers["retry-after"]) >= 1


# -- 5. a key revoked while its enrolment is being embedded -----------------------------------------------------
def test_an_enrolment_under_way_when_its_key_is_revoked_writes_nothing(srv):
    kiosk = srv.new_key("enrol", "kiosk-5")
    original = srv.service.decode

    def decode_then_revoke(upload):  # the request passed every key check; its images are being embedded
        revoked = cli("keys", "revoke", "--gallery", srv.gallery, kiosk.split("_")[1])
        assert revoked.returncode == 0, revoked.stderr
        srv.service.decode = original
        return original(upload)

    srv.service.decode = decode_then_revoke
    try:
        answer = srv.request("POST", "/v1/people", key=kiosk, fields={"name": "s8"}, files=images(8, *ENROLLED))
    finally:
        srv.service.decode = original
    assert (answer.status, answer.error) == (403, "revoked-api-key"), answer.body
    assert "s8" not in [p["name"] for p in srv.request("GET", "/v1/people").body["people"]]


def test_faces_added_when_the_key_is_revoked_meanwhile_are_not_added(srv):
    kiosk = srv.new_key("enrol", "kiosk-5b")
    before = srv.request("GET", "/v1/people/s7").body["templates"]
    original = srv.service.decode

    def decode_then_revoke(upload):
        assert cli("keys", "revoke", "--gallery", srv.gallery, kiosk.split("_")[1]).returncode == 0
        srv.service.decode = original
        return original(upload)

    srv.service.decode = decode_then_revoke
    try:
        answer = srv.request("POST", "/v1/people/s7/faces", key=kiosk, files=images(7, 1))
    finally:
        srv.service.decode = original
    assert (answer.status, answer.error) == (403, "revoked-api-key"), answer.body
    assert srv.request("GET", "/v1/people/s7").body["templates"] == before


def test_a_claim_or_an_identification_whose_key_is_revoked_meanwhile_gets_no_decision(srv):
    """A door's key revoked while its probe is embedded: no granted claim opens the door afterwards, nor is a
    face named (403, nothing audited)."""
    for route, fields, files in (
        ("/v1/verify", {"claim": "s7"}, probe(7)),
        ("/v1/identify", {}, probe(7)),
        ("/v1/identify", {}, [("images", "a.pgm", probe(7)[0][2]), ("images", "b.pgm", probe(6)[0][2])]),  # whole
    ):
        door = srv.new_key("recognise", "door-5c")
        original = srv.service.decode
        rows = _audit_rows(srv)

        def decode_then_revoke(upload, door=door, original=original):
            assert cli("keys", "revoke", "--gallery", srv.gallery, door.split("_")[1]).returncode == 0
            srv.service.decode = original
            return original(upload)

        srv.service.decode = decode_then_revoke
        try:
            answer = srv.request("POST", route, key=door, fields=fields, files=files)
        finally:
            srv.service.decode = original
        assert (answer.status, answer.error) == (403, "revoked-api-key"), (route, answer.body)
        assert _audit_rows(srv) == rows, route


def _audit_rows(srv: Server) -> int:
    """The decisions in the gallery's audit (the revocation writes a row of its own)."""
    import sqlite3

    with sqlite3.connect(srv.gallery) as db:
        return db.execute("SELECT count(*) FROM audit WHERE kind IN ('verify', 'identify')").fetchone()[0]


# -- 6. /docs renders: its document is OpenAPI 3.0 ---------------------------------------------------------------
def _keywords_31(node, where="") -> list[str]:
    """Where `node` (an OpenAPI document) uses what OpenAPI 3.0's schema objects do not have."""
    found = []
    if isinstance(node, list):
        for i, v in enumerate(node):
            found += _keywords_31(v, f"{where}/{i}")
    elif isinstance(node, dict):
        if node.get("type") == "null" or isinstance(node.get("type"), list):
            found.append(f"{where}: type {node['type']}")
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            if bound in node and not isinstance(node[bound], bool):
                found.append(f"{where}: numeric {bound}")
        for keyword in ("const", "contentMediaType", "$schema"):
            if keyword in node:
                found.append(f"{where}: {keyword}")
        for k, v in node.items():
            if k == "properties":  # names of fields, not keywords
                for name, field in v.items():
                    found += _keywords_31(field, f"{where}/properties/{name}")
            else:
                found += _keywords_31(v, f"{where}/{k}")
    return found


def test_the_docs_page_reads_an_openapi_30_document_with_every_route(srv):
    page = srv.request("GET", "/docs", key=None)
    text = page.body["_text"]
    url = text.split("url: '", 1)[1].split("'", 1)[0]
    assert url != "/openapi.json"
    shown = srv.request("GET", url, key=None).body
    full = srv.request("GET", "/openapi.json", key=None).body
    assert full["openapi"].startswith("3.1") and _keywords_31(full)  # what the bundled Swagger UI 4 cannot read
    assert shown["openapi"].startswith("3.0."), shown["openapi"]
    assert _keywords_31(shown) == []
    assert shown["paths"].keys() == full["paths"].keys()
    identify = shown["components"]["schemas"]["Body_identify_v1_identify_post"]["properties"]
    assert identify["margin"]["nullable"] is True and identify["top"]["maximum"] == 50
    assert identify["image"]["format"] == "binary"
    fraction = shown["components"]["schemas"]["Body_verify_v1_verify_post"]["properties"]["fraction"]
    assert (fraction["minimum"], fraction["exclusiveMinimum"]) == (0, True)
    assert "script-src 'self' 'sha256-" in page.headers["content-security-policy"]  # its own policy, not weakened


# -- 7. Host names answered (DNS rebinding) -----------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example", "10.0.0.1"])
def test_a_request_addressed_to_another_name_is_refused_on_a_loopback_server(srv, host):
    """A page of evil.example whose name was pointed at 127.0.0.1 (DNS rebinding) is of its own origin to the
    browser: it could read the server's public answers (and more, with a key it phished). Its requests carry
    its own name in Host: refused."""
    answer = srv.request("GET", "/v1/health", key=None, headers={"Host": host.format(port=srv.port)})
    assert (answer.status, answer.error) == (400, "host-not-allowed"), answer.body
    assert all(h in answer.headers for h in SECURITY_HEADERS), answer.headers
    page = srv.request("GET", "/", key=None, headers={"Host": host.format(port=srv.port)})
    assert page.status == 400


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "LOCALHOST", "127.0.0.1"])
def test_the_loopback_names_are_answered(srv, host):
    assert srv.request("GET", "/v1/health", key=None, headers={"Host": host.format(port=srv.port)}).status == 200


def test_allowed_hosts_are_the_operators_choice(tmp_path):
    from siamface.cli.serve import _allowed_hosts

    assert _allowed_hosts(None, "127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert _allowed_hosts(None, "0.0.0.0") is None  # reached by names the server cannot know: say them
    assert _allowed_hosts(["faces.example.org"], "0.0.0.0") == ("faces.example.org",)
    assert _allowed_hosts(["*"], "127.0.0.1") is None
