"""A real `siamface serve` while its gallery changes under it: a key revoked while a request made with it is
still arriving is refused once that request's body is in (before any work, nothing written)."""

from __future__ import annotations

import json
import socket

from service_support import require_service

require_service()

from service_support import Server, cli, images, multipart  # noqa: E402


def _head(srv: Server, path: str, key: str, body: bytes, content_type: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()


def _answer(s: socket.socket) -> tuple[int, dict]:
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_key_revoked_while_its_upload_arrives_enrolls_nobody(tmp_path):
    """The key was checked when the request's headers came; an upload sent slowly (up to the body deadline)
    enrolled its person after `siamface keys revoke` had said the running server refuses the key at once."""
    srv = Server(tmp_path / "people.db", "--liveness", "off", "--min-size", "40")
    try:
        kiosk = srv.new_key("enrol", "kiosk")
        body, content_type = multipart({"name": "s3"}, images(3, 2, 3))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as s:
            s.sendall(_head(srv, "/v1/people", kiosk, body, content_type) + body[: len(body) // 2])
            revoked = cli("keys", "revoke", "--gallery", srv.gallery, kiosk.split("_")[1])
            assert revoked.returncode == 0, revoked.stderr
            s.sendall(body[len(body) // 2 :])
            status, answer = _answer(s)
        assert (status, answer.get("error")) == (403, "revoked-api-key"), answer
        assert srv.request("GET", "/v1/people").body["people"] == []
        assert srv.request("POST", "/v1/people", key=kiosk, fields={"name": "s4"}, files=images(4, 2)).status == 403
    finally:
        srv.stop()
