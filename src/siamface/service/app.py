"""`create_app(settings)`: the FastAPI application — routes, the gate in front of them (API key, upload
size), JSON errors, the web page.

    >>> from siamface.service import Settings, create_app
    >>> app = create_app(Settings(gallery="people.db"))   # models load in the lifespan, once
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)

Request flow: `Gate` (pure ASGI, before any body is read) refuses a request to a protected route without a
valid key (401/403) and a body over the upload limit (413); the route reads the form, then runs decoding and
inference in a worker thread (`Service.run`), so the event loop keeps serving other requests.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from importlib import resources

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import SiamfaceError
from .errors import RETRY, ServiceError, from_siamface
from .keys import allows, presented_key
from .lockout import LockedOut
from .logs import redact_query, secret_param
from .openapi import declare_limits, offline_docs
from .settings import BODY_TIMEOUT_S, MAX_INFLIGHT_BYTES, Settings
from .state import Service
from .transport import SECURITY_HEADERS, STRICT_CSP

log = logging.getLogger(__name__)

#: Routes under /v1 that need no key.
PUBLIC = frozenset({"/v1/health"})
#: What the page may load: only this server's own files; the camera stays in the page.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HTTP_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    408: "body-timeout",
    410: "gone",
    413: "too-large",
    415: "unsupported-media-type",
}


def _json(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _logged(request: Request) -> str:
    """A request's path as the log may show it: a segment shaped like an API key (pasted into the URL) redacted,
    as in the access log."""
    return redact_query(request.url.path)


def _relative(location: bytes) -> bytes:
    """A redirect's target without the scheme and host a framework built from the request's Host header (a
    client's word): the path and query only, so a redirect never points to another site."""
    parts = urllib.parse.urlsplit(location.decode("latin-1"))
    if not parts.scheme and not parts.netloc:
        return location
    path = "/" + parts.path.lstrip("/")  # never "//host": that too would name another site
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")


def _key_in_query(query_string: bytes) -> bool:
    """Does the query carry a credential (``?key=``, ``?api_key=``, ..., or a key-shaped value under any name)?"""
    return any(secret_param(part) for part in query_string.decode("latin-1").split("&"))


class Outermost:
    """Pure ASGI wrapper around the whole application, the framework's own error handling included: every
    answer, a crash's 500 and a refusal made before routing too, carries the security headers (nosniff, no
    referrer, COOP, a Content-Security-Policy, no-store on the API and on errors), and a redirect is made
    relative. A request whose Host is not one of `allowed_hosts` (None: any) is refused first (400
    ``host-not-allowed``): a page of another site whose name was pointed at this server (DNS rebinding) is
    not answered."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None = None) -> None:
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        page = path == "/" or path.startswith("/static/")

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, _relative(v) if k.lower() == b"location" else v) for k, v in message.get("headers", [])]
                names = {k.lower() for k, _ in headers}
                added = list(SECURITY_HEADERS)
                if b"content-security-policy" not in names:  # /docs sets its own
                    added.append((b"content-security-policy", (PAGE_CSP if page else STRICT_CSP).encode()))
                if b"cache-control" not in names and (path.startswith("/v1/") or message["status"] >= 400):
                    added.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers + added}
            await send(message)

        if (
            self.allowed_hosts is not None
            and _host_name(Headers(scope=scope).get("host", "")) not in self.allowed_hosts
        ):
            log.warning("request refused: Host not allowed", extra={"kind": "host-not-allowed"})
            answer = _json(
                400,
                "host-not-allowed",
                "this server answers requests addressed to its own names only (siamface serve --allowed-host)",
                {"Connection": "close"},
            )
            await answer(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _host_name(host: str) -> str:
    """The name of a Host header's value, without its port, lower case (``[::1]:8000`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Gate:
    """Pure ASGI middleware: API key and upload limit, checked before the body is read; the body's deadline;
    the cap on request bytes being received and held at once, all requests together (503 ``server-busy``
    with Retry-After past it: many slow uploads cannot hold unbounded memory)."""

    def __init__(
        self,
        app,
        service: Service,
        max_bytes: int,
        body_timeout_s: float = BODY_TIMEOUT_S,
        max_inflight_bytes: int = MAX_INFLIGHT_BYTES,
    ) -> None:
        self.app = app
        self.service = service
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        self.max_inflight_bytes = max_inflight_bytes
        #: Bytes of request bodies held now, all requests together: a body's declared length from the moment
        #: its request is let in (as it arrives, for a chunked body) until its answer is given (on the event
        #: loop: no lock); and per API key, each of which may hold a quarter of the cap (at least one largest
        #: request), so that one stolen key cannot take every upload from every other device.
        self.inflight = 0
        self.per_key = max(max_bytes, max_inflight_bytes // 4)
        self._by_key: dict[str, int] = {}

    def _reserve(self, n: int, key: str | None) -> str | None:
        """Count `n` more bytes in flight for `key`; None, or what refuses them (``"server"``: the server-wide
        cap, ``"key"``: the key's share)."""
        if n <= 0:
            return None
        if self.inflight + n > self.max_inflight_bytes:
            return "server"
        if key is not None and self._by_key.get(key, 0) + n > self.per_key:
            return "key"
        self.inflight += n
        if key is not None:
            self._by_key[key] = self._by_key.get(key, 0) + n
        return None

    def _too_large(self) -> JSONResponse:
        """The answer to a body over the request's limit (413)."""
        mb = self.max_bytes // (1024 * 1024)
        return _json(413, "too-large", f"the request body is over the {mb} MB limit ({self.max_bytes} bytes)")

    def _busy(self, crowded: str) -> JSONResponse:
        """The answer to a body refused by `_reserve` (`crowded`: what refused it), logged."""
        log.warning("request refused: uploads in flight at their cap (%s)", crowded, extra={"kind": "server-busy"})
        if crowded == "server":
            return _json(
                503,
                "server-busy",
                f"the server is receiving its most of {self.max_inflight_bytes} bytes of uploads at once; retry "
                "shortly",
                RETRY,
            )
        return _json(
            429,
            "too-many-uploads",
            f"this API key is sending its most of {self.per_key} bytes of uploads at once; retry once they are "
            "answered",
            RETRY,
        )

    def _release(self, n: int, key: str | None) -> None:
        self.inflight -= n
        if key is not None and n:
            left = self._by_key.pop(key, 0) - n
            if left > 0:
                self._by_key[key] = left

    async def _drain(self, receive) -> None:
        """Read and drop a refused request's body (bounded), so the client sees the answer, not a reset."""
        budget = 4 * self.max_bytes
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = Headers(scope=scope)
        deadline = anyio.current_time() + self.body_timeout_s
        late = body_done = False
        original_receive = receive

        async def receive():  # the body's deadline: a client that sends it too slowly is cut off (408)
            nonlocal late, body_done
            if body_done:
                return await original_receive()
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                message = await original_receive()
                body_done = message["type"] != "http.request" or not message.get("more_body", False)
                return message
            late = True
            raise _BodyTimeout()

        if _key_in_query(scope.get("query_string", b"")):
            await self._answer_early(
                receive,
                _json(
                    400,
                    "key-in-query",
                    "a credential was sent in the URL, where logs and histories keep it: send the API key as "
                    "'Authorization: Bearer KEY' or 'X-API-Key: KEY' only (and revoke a key that travelled so)",
                ),
                scope,
                send,
            )
            return

        if path.startswith("/v1/") and path not in PUBLIC:
            check = self.service.keys.check(presented_key(headers))
            if not check.ok:
                if not await self._drained(receive, scope, send):
                    return
                if check.reason == "revoked":
                    answer = _json(403, "revoked-api-key", "this API key was revoked")
                elif check.reason == "missing":
                    answer = _json(
                        401,
                        "missing-api-key",
                        "send an API key: 'Authorization: Bearer KEY' or "
                        "'X-API-Key: KEY' (create one with `siamface keys "
                        "create`)",
                        {"WWW-Authenticate": "Bearer"},
                    )
                else:
                    answer = _json(401, "invalid-api-key", "this API key is not valid", {"WWW-Authenticate": "Bearer"})
                await answer(scope, receive, send)
                return
            state = scope.setdefault("state", {})
            state["api_key"], state["api_role"] = check.key_id, check.role
        elif path in PUBLIC and presented_key(headers):  # answered either way; a valid key is told more
            check = self.service.keys.check(presented_key(headers))
            if check.ok:
                state = scope.setdefault("state", {})
                state["api_key"], state["api_role"] = check.key_id, check.role

        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                await _json(400, "bad-request", "invalid Content-Length")(scope, receive, send)
                return
            if declared > self.max_bytes:
                if await self._drained(receive, scope, send):
                    await self._too_large()(scope, receive, send)
                return
        key = scope.get("state", {}).get("api_key")
        reserved = declared if length is not None else 0
        crowded = self._reserve(reserved, key)
        if crowded:
            if await self._drained(receive, scope, send):
                await self._busy(crowded)(scope, receive, send)
            return

        received = 0
        exceeded = False

        async def limited_receive():
            nonlocal received, exceeded, crowded, reserved
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body that grows past the limit
                    exceeded = True
                    raise _Refused()
                if received > reserved:  # a chunked body (or one longer than declared): counted as it comes
                    crowded = self._reserve(received - reserved, key)
                    if crowded:
                        raise _Refused()
                    reserved = received
            return message

        async def guarded_send(message) -> None:
            if not (exceeded or late or crowded):
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not (exceeded or late or crowded):
                raise
        finally:
            self._release(reserved, key)
        if late:
            await _body_late(scope, receive, send)
        elif exceeded or crowded:
            # the body's last part may be what was refused: nothing is left to drain then
            if body_done or await self._drained(receive, scope, send):
                await (self._too_large() if exceeded else self._busy(crowded))(scope, receive, send)

    async def _drained(self, receive, scope, send) -> bool:
        """Drain a refused request's body; False (answered 408) when the client is too slow sending it."""
        try:
            await self._drain(receive)
        except _BodyTimeout:
            await _body_late(scope, receive, send)
            return False
        return True

    async def _answer_early(self, receive, answer, scope, send) -> None:
        if await self._drained(receive, scope, send):
            await answer(scope, receive, send)


async def _body_late(scope, receive, send) -> None:
    log.warning("request body not received within its deadline: answered 408", extra={"kind": "body-timeout"})
    answer = _json(408, "body-timeout", "the request body was not received in time", {"Connection": "close"})
    await answer(scope, receive, send)


class _Refused(Exception):
    """A body refused as it arrives (over the request's limit, or the server's in flight)."""


class _BodyTimeout(Exception):
    pass


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    """The application for `settings`. `service`: one already opened (models loaded); else the lifespan
    opens one at start-up."""
    from .routes import embedding, library, liveness, people, recognition, system

    service = service or Service(settings)
    opened_here = service.pipeline is None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if opened_here:
            await anyio.to_thread.run_sync(service.open)
        try:
            yield
        finally:
            if opened_here:
                service.close()

    app = FastAPI(
        title="siamface",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Face verification and identification. Every /v1 route but /v1/health needs an "
        "API key: `Authorization: Bearer KEY` or `X-API-Key: KEY` (`siamface keys "
        "create`). Images are sent as multipart form files; errors are JSON "
        "`{\"error\": CODE, \"detail\": SENTENCE}`.",
    )
    app.state.service = service
    app.state.settings = settings

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError):
        if exc.status >= 500:
            cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            log.error("%s %s: %s%s", request.method, _logged(request), exc.error, cause, extra={"kind": exc.error})
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(SiamfaceError)
    async def _siamface_error(request: Request, exc: SiamfaceError):
        err = from_siamface(exc, *service.secrets)
        if err.status >= 500:  # one line per kind and interval (logs.RateLimit): a full disk is said once
            log.error("%s %s: %s", request.method, _logged(request), exc, extra={"kind": err.error})
        if err.error == "gallery-damaged" and not allows(request.scope.get("state", {}).get("api_role"), "enrol"):
            # the damaged rows' people are named to keys that may list people only: who is enrolled is not a
            # recognise key's to learn
            err.detail = "the gallery is damaged: no decision is made from it (the server's log says which rows)"
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(LockedOut)
    async def _locked(request: Request, exc: LockedOut):
        return JSONResponse(
            {
                "error": "locked",
                "detail": f"too many failed verifications of this person; retry in {exc.retry_after} s",
                "retry_after": exc.retry_after,
            },
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(
            {"error": _HTTP_CODES.get(exc.status_code, "http-error"), "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
            problems.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return JSONResponse(
            {"error": "invalid-request", "detail": "; ".join(problems) or "invalid request"}, status_code=422
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, _logged(request))
        return JSONResponse(
            {"error": "internal-error", "detail": "the server could not answer this request; see its log"},
            status_code=500,
        )

    app.include_router(system.router)
    app.include_router(recognition.router)
    app.include_router(people.router)
    app.include_router(liveness.router)
    app.include_router(embedding.router)
    app.include_router(library.router)

    static = resources.files("siamface.service") / "static"

    @app.get("/", include_in_schema=False)
    async def page():
        with resources.as_file(static / "index.html") as path:
            return FileResponse(path, media_type="text/html; charset=utf-8")

    with resources.as_file(static) as folder:
        app.mount("/static", StaticFiles(directory=folder), name="static")

    offline_docs(app)
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            declare_limits(generate(), settings)
        return app.openapi_schema

    app.openapi = openapi
    app.add_middleware(
        Gate,
        service=service,
        max_bytes=settings.max_upload_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_inflight_bytes=settings.max_inflight_bytes,
    )
    build = app.build_middleware_stack

    def build_middleware_stack():  # outside the framework's own 500 handler, which no middleware added wraps
        return Outermost(build(), settings.allowed_hosts)

    app.build_middleware_stack = build_middleware_stack
    return app
