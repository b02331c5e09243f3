"""What the routes share: the service of the app, the API-key scheme for the OpenAPI page, the role a route
needs (`require`), uploads."""

from __future__ import annotations

import os
import re
import unicodedata

from fastapi import Depends, Request, Security, UploadFile
from fastapi.security import APIKeyHeader, HTTPBearer

from ..errors import ServiceError
from ..keys import allows
from ..state import Service, Upload

# Declared for the OpenAPI page (its "Authorize" button); the check itself is done by `app.Gate`, before the
# request body is read.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f<>\"'`\\]")


def _still_active(request: Request) -> None:
    """403 `revoked-api-key` when the key the gate let the request in with was revoked (or removed) since
    (`Service.refuse_revoked`, the check made again before a change or a decision is written): a body may take
    long to arrive, and a route resolves its dependencies once it is in, before any work."""
    request.app.state.service.refuse_revoked(request.scope.get("state", {}).get("api_key"))


def api_key(
    request: Request, bearer=Security(_bearer), header=Security(_header), _active=Depends(_still_active)
) -> str | None:
    """The id of the key the request was let in with (set by the gate), still active."""
    return request.scope.get("state", {}).get("api_key")


def api_role(request: Request, _active=Depends(_still_active)) -> str | None:
    """The role of the key the request was let in with (set by the gate), still active (checked once per
    request: FastAPI runs a dependency once however many others need it)."""
    return request.scope.get("state", {}).get("api_role")


def refuse(role: str | None, needed: str, what: str) -> None:
    """403 `forbidden-role` unless a key of `role` may do what needs `needed` (`what`, for the message)."""
    if not allows(role, needed):
        raise ServiceError(
            403,
            "forbidden-role",
            f"{what} needs a key with the {needed} role; this key's role is {role or 'none'} "
            f"(siamface keys create --role {needed})",
        )


def count_decisions(svc: Service, key: str | None, role: str | None, n: int) -> None:
    """`n` decisions asked of the gallery by a key below admin (verifications, identified images, enrolment
    images matched against it), counted before any work (429 `too-many-decisions`, see `..quota`); an
    identification's faces past each image's first are counted once found (`Service.identify`)."""
    if not allows(role, "admin"):
        svc.quota.take(key, n)


def require(needed: str, what: str):
    """A route dependency: 403 `forbidden-role` unless the request's key may do what needs `needed`."""

    def check(request: Request, bearer=Security(_bearer), header=Security(_header)) -> str | None:
        role = api_role(request)
        refuse(role, needed, what)
        return role

    return check


def service(request: Request) -> Service:
    return request.app.state.service


async def read_upload(upload: UploadFile, field: str) -> Upload:
    """The bytes of an uploaded file, labelled by its field and base file name (never a client path)."""
    data = await upload.read()
    await upload.close()
    base = os.path.basename((upload.filename or "").replace("\\", "/"))
    name = "".join(c for c in _UNPRINTABLE.sub("", base) if not unicodedata.category(c).startswith("C"))[:60]
    return Upload(data, f"{field} ({name})" if name else field)


async def read_batch(svc: Service, uploads: list[UploadFile]) -> list[Upload]:
    """The images of field 'images' of a batch request: 1 to `max_batch_images` (413 `too-many-images` above)."""
    limit = svc.settings.max_batch_images
    if not uploads:
        raise ServiceError(400, "bad-request", "send at least one image file in field 'images'")
    if len(uploads) > limit:
        for upload in uploads:
            await upload.close()
        raise ServiceError(
            413,
            "too-many-images",
            f"at most {limit} images per request in field 'images', got {len(uploads)}: split them",
        )
    return [await read_upload(f, f"images[{i}]") for i, f in enumerate(uploads)]
