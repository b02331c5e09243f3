"""The HTTP transport of `siamface serve`: uvicorn's h11 protocol with a cap on open connections and a deadline
for a request's headers, and the uvicorn settings that go with them (`uvicorn_options`).

- A connection past `Settings.max_connections` is answered 503 ``too-many-connections`` at once and closed,
  before anything is read from it: open connections (file descriptors) stay under the cap whatever clients
  do, and the cap is lowered at start-up to fit the process's file limit (`connection_cap`), so the server
  never meets "too many open files" on accept.
- A client has `Settings.header_timeout_s` from connecting (or from the end of its previous response) to
  send a request's headers; then the connection is closed (a slow-loris client holds nothing for long). The
  body has its own deadline, kept by the application's gate (408 ``body-timeout``).
- Headers are limited to 16 KiB (h11), an idle keep-alive connection is closed after `keep_alive_s`.
"""

from __future__ import annotations

import json
import logging
import os
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import Settings

log = logging.getLogger("siamface.service.transport")

#: The headers every answer carries (`app.Outermost` for the application's, `_refusal` for the transport's own).
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # a page of another site that opened one of ours keeps no handle to it (to read or navigate it)
    (b"cross-origin-opener-policy", b"same-origin"),
)
#: The policy of an answer that names none of its own (JSON, errors): it may run, load and frame nothing.
STRICT_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
#: Largest request head (request line and headers), in bytes.
MAX_HEAD_BYTES = 16 * 1024
#: File descriptors kept free of connections for everything else (models, the gallery, logs, threads).
SPARE_FILES = 64
#: The largest listening backlog (uvicorn's default).
MAX_BACKLOG = 2048


def connection_cap(requested: int) -> tuple[int, int, str | None]:
    """The connections the server may hold: `requested`, lowered to fit the file limit (two descriptors per
    connection: its socket and a spooled upload), after raising the soft limit to the hard one where allowed;
    and the listening backlog, which is also how many connections asyncio accepts in one go before any is
    refused (a quarter of the descriptors left free once the cap is held, so that a burst of connections
    never meets "too many open files"). Returns (cap, backlog, a note when the cap was lowered)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * requested + SPARE_FILES + _open_files()
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.debug("file limit not raised: %s", exc)
    if soft == resource.RLIM_INFINITY:
        return requested, MAX_BACKLOG, None
    used = _open_files()
    fits = max(1, (soft - SPARE_FILES - used) // 2)
    cap = min(requested, fits)
    backlog = max(8, min(MAX_BACKLOG, (soft - used - cap) // 4))
    if fits >= requested:
        return cap, backlog, None
    return (
        cap,
        backlog,
        (f"at most {fits} connections at once, not {requested}: the file limit is {soft} (raise it with `ulimit -n`)"),
    )


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32


def _refusal(status: int, error: str, detail: str) -> bytes:
    """A whole answer, written by the transport itself (then the connection is closed), with the headers of every
    answer."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    reason = {503: b"Service Unavailable", 408: b"Request Timeout", 400: b"Bad Request"}[status]
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
        (b"content-security-policy", STRICT_CSP.encode()),
        (b"cache-control", b"no-store"),
    ]
    if status == 503:
        headers.append((b"retry-after", b"5"))
    head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, head) + body


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a cap on connections and a deadline for each request's headers."""
    too_many = _refusal(
        503, "too-many-connections", f"the server holds its maximum of {max_connections} connections; retry later"
    )
    invalid = _refusal(400, "bad-request", "the request is not valid HTTP/1.1")

    class GuardedH11Protocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("connection refused: %d open, the limit is %d", len(self.connections) - 1, max_connections)
                transport.write(too_many)
                transport.close()
                return
            self._await_head()

        def _await_head(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_late)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # a request is under way: its body has its own deadline
            log.warning("connection closed: no request headers within %g s", header_timeout_s)
            self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._cancel_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()

        def send_400_response(self, msg: str) -> None:  # uvicorn's own: plain text, without the headers
            log.debug("invalid HTTP request: %s", msg)
            self.transport.write(invalid)
            self.transport.close()

        def connection_lost(self, exc) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

    return GuardedH11Protocol


def uvicorn_options(settings: Settings) -> tuple[dict, str | None]:
    """The uvicorn settings of `settings`' limits: (options for `uvicorn.run`, a note when the connection cap
    was lowered to fit the file limit)."""
    cap, backlog, note = connection_cap(settings.max_connections)
    return {
        "http": guarded_protocol(cap, settings.header_timeout_s),
        "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": cap + 1,  # the protocol refuses the connection past the cap first
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "backlog": backlog,
    }, note
