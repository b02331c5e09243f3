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
from importlib import resources

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import SiamfaceError
from .errors import ServiceError, from_siamface
from .lockout import LockedOut
from .settings import Settings
from .state import Service

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
    410: "gone",
    413: "too-large",
    415: "unsupported-media-type",
}


def _json(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def presented_key(headers: Headers) -> str | None:
    """The API key of a request: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or None


class Gate:
    """Pure ASGI middleware: API key and upload limit, checked before the body is read; security headers."""

    def __init__(self, app, service: Service, max_bytes: int) -> None:
        self.app = app
        self.service = service
        self.max_bytes = max_bytes

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
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
        if path.startswith("/v1/"):
            extra.append((b"cache-control", b"no-store"))
        elif path == "/" or path.startswith("/static/"):
            extra.append((b"content-security-policy", PAGE_CSP.encode()))

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        if path.startswith("/v1/") and path not in PUBLIC:
            check = self.service.keys.check(presented_key(headers))
            if not check.ok:
                await self._drain(receive)
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
                await answer(scope, receive, send_with_headers)
                return
            state = scope.setdefault("state", {})
            state["api_key"], state["api_role"] = check.key_id, check.role

        too_large = _json(
            413,
            "too-large",
            f"the request body is over the {self.max_bytes // (1024 * 1024)} MB limit ({self.max_bytes} bytes)",
        )
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _json(400, "bad-request", "invalid Content-Length")(scope, receive, send_with_headers)
                return
            if declared > self.max_bytes:
                await self._drain(receive)
                await too_large(scope, receive, send_with_headers)
                return

        received = 0
        exceeded = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body that grows past the limit
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message) -> None:
            if not exceeded:
                await send_with_headers(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await self._drain(receive)
            await too_large(scope, receive, send_with_headers)


class _TooLarge(Exception):
    pass


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    """The application for `settings`. `service`: one already opened (models loaded); else the lifespan
    opens one at start-up."""
    from .routes import liveness, people, recognition, system

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
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(SiamfaceError)
    async def _siamface_error(request: Request, exc: SiamfaceError):
        err = from_siamface(exc, *service.secrets)
        if err.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(err.body(), status_code=err.status)

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
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"error": "internal-error", "detail": "the server could not answer this request; see its log"},
            status_code=500,
        )

    app.include_router(system.router)
    app.include_router(recognition.router)
    app.include_router(people.router)
    app.include_router(liveness.router)

    static = resources.files("siamface.service") / "static"

    @app.get("/", include_in_schema=False)
    async def page():
        with resources.as_file(static / "index.html") as path:
            return FileResponse(path, media_type="text/html; charset=utf-8")

    with resources.as_file(static) as folder:
        app.mount("/static", StaticFiles(directory=folder), name="static")

    _offline_docs(app)
    app.add_middleware(Gate, service=service, max_bytes=settings.max_upload_bytes)
    return app


def _offline_docs(app) -> None:
    """/docs from the Swagger UI files of the `swagger-ui-bundle` package (FastAPI's default page loads them
    from a CDN, which an offline machine cannot reach); without that package, /docs says where the OpenAPI
    document is."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:

        @app.get("/docs", include_in_schema=False)
        async def docs_without_ui():
            return HTMLResponse(
                '<p>The OpenAPI document is at <a href="/openapi.json">/openapi.json</a> '
                '(install swagger-ui-bundle for the interactive page).</p>'
            )

        return
    app.mount("/docs-static", StaticFiles(directory=swagger_ui_path), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="siamface API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )
