"""How failures become HTTP answers: always JSON ``{"error": CODE, "detail": SENTENCE}``, with the status
that says what went wrong, and never a file path or a traceback.

    400 bad-image, bad-request, invalid-name   the input cannot be used
    400 host-not-allowed                       a Host header not among the server's names (--allowed-host)
    400 liveness-session-required, liveness-off   a claim without a capture session / sessions with liveness off
    401 missing-api-key, invalid-api-key       no key, or not one of this server's keys
    403 revoked-api-key                        a key that was revoked
    403 forbidden-role                         the key's role may not do this (see `keys.ROLES`)
    404 unknown-person, not-found              no such person / route
    404 unknown-liveness-session               no such session for this key
    409 person-exists, name-taken              the name is already enrolled
    409 already-enrolled                       the new person's face already matches someone enrolled
    409 liveness-session-used, liveness-pending   a session already used / not finished
    409 liveness-session-other-claim           a session opened for another person (now used up)
    410 expired-liveness-session               the session is past its life
    413 too-large                              the request body is over the upload limit
    413 over-quota                             more images at once than the key's decisions a minute (split them)
    422 no-face, no-usable-face, invalid-request
    429 locked                                 too many failed verifications of this person (Retry-After)
    429 too-many-liveness-sessions             too many open, or opened by this key / for this person (Retry-After)
    429 too-many-decisions                     this key asked for more decisions a minute than allowed (Retry-After)
    429 too-many-uploads                       this key's uploads in flight at its share of the cap (Retry-After)
    500 internal-error, model-error            the server's fault; details go to the server log only
    500 gallery-damaged                        a row of the gallery was tampered with or damaged (which one; whose: enrol keys up)
    503 gallery-read-only                      a change asked of a gallery the server may only read
    503 gallery-unavailable                    the gallery's database cannot be reached now (Retry-After)
    503 storage-full                           the disk is full or failing: the change was not saved
    503 not-audited                            a decision whose audit row could not be written: not given
    503 gallery-reembedded                     the gallery was re-embedded under the server: restart it
    503 over-time-budget                       the request's work went past its time budget (Retry-After)
    503 too-many-connections                   the server holds its maximum of connections (then closes)
    503 server-busy                            uploads in flight at the server's cap (Retry-After)
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import (
    ConfigError,
    GalleryError,
    ImageError,
    ModelError,
    ModelMismatchError,
    NoFaceError,
    OverBudgetError,
    SiamfaceError,
)

#: Sent with a 503 that a later try may not meet.
RETRY = {"Retry-After": "5"}
# An absolute path of two components or more (/home/x/..., /tmp/g.db is one component after a folder).
_PATH = re.compile(r"(?<![\w<>])(?:/[\w.@+\-]+){2,}/?")


class ServiceError(Exception):
    """An answer other than success, raised anywhere in a request and turned into JSON by the app."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, **self.extra}


def scrub(message: str, *secrets: str) -> str:
    """`message` without the given strings (the gallery's location) and without absolute paths."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        message = message.replace(s, "the gallery")
    return _PATH.sub("<path>", message)


def from_siamface(exc: SiamfaceError, *secrets: str) -> ServiceError:
    """The HTTP answer for a siamface error."""
    from ..gallery.names import InvalidNameError
    from ..gallery.store import (
        DamagedGalleryError,
        GalleryReembeddedError,
        GalleryUnavailableError,
        PersonExistsError,
        ReadOnlyGalleryError,
        UnknownPersonError,
    )

    text = scrub(str(exc), *secrets)
    if isinstance(exc, GalleryUnavailableError):
        if exc.reason == "full":
            return ServiceError(
                503, "storage-full", "the gallery's disk is full or failing: nothing was saved", headers=RETRY
            )
        return ServiceError(
            503, "gallery-unavailable", "the gallery's database cannot be reached now; retry later", headers=RETRY
        )
    if isinstance(exc, GalleryReembeddedError):
        return ServiceError(
            503,
            "gallery-reembedded",
            f"the gallery was re-embedded with model {exc.now.name!r} while this server runs another; restart "
            "the server (nothing is wrong with the people enrolled)",
        )
    if isinstance(exc, OverBudgetError):
        return ServiceError(
            503,
            "over-time-budget",
            f"this request's work went past the server's {exc.budget:g} s time budget (at {exc.step}); nothing "
            "was decided or changed: retry, with a smaller image or fewer faces",
            headers=RETRY,
        )
    if isinstance(exc, UnknownPersonError):
        return ServiceError(404, "unknown-person", f"no person named {exc.name!r}")
    if isinstance(exc, DamagedGalleryError):
        return ServiceError(500, "gallery-damaged", text)
    if isinstance(exc, ReadOnlyGalleryError):
        return ServiceError(503, "gallery-read-only", text)
    if isinstance(exc, PersonExistsError):
        return ServiceError(
            409,
            "person-exists",
            f"a person named {exc.name!r} is already enrolled; add faces with POST /v1/people/{{name}}/faces",
        )
    if isinstance(exc, InvalidNameError):
        return ServiceError(400, "invalid-name", text)
    if isinstance(exc, ImageError):
        return ServiceError(400, "bad-image", text)
    if isinstance(exc, NoFaceError):
        return ServiceError(422, "no-face", text)
    if isinstance(exc, ModelMismatchError):
        return ServiceError(500, "model-mismatch", text)
    if isinstance(exc, ModelError):
        return ServiceError(500, "model-error", "a model could not be loaded; see the server log")
    if isinstance(exc, ConfigError):
        return ServiceError(400, "bad-request", text)
    if isinstance(exc, GalleryError):
        if "taken" in text or "already" in text:
            return ServiceError(409, "name-taken", text)
        return ServiceError(400, "gallery-refused", text)
    return ServiceError(400, "bad-request", text)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route may answer."""
    schema = {"type": "object", "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}
    texts = {
        400: "bad image or request",
        401: "no or invalid API key",
        403: "revoked API key, or a key whose role may not do this (forbidden-role)",
        404: "unknown person or liveness session",
        409: "name already enrolled / face already enrolled / liveness session used or not finished",
        410: "liveness session expired",
        413: "upload too large, or more images than the key's decisions a minute (over-quota)",
        422: "no face / nothing enrolled / invalid request",
        429: "locked after failed verifications or refused faces / too many liveness sessions / decisions",
        503: "gallery unreachable, disk full, decision not audited, gallery re-embedded, or over time budget",
    }
    return {
        c: {"description": texts.get(c, "error"), "content": {"application/json": {"schema": schema}}} for c in codes
    }
