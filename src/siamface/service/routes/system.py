"""GET /v1/health: is the server up (no key needed; a key holder is told more); GET /v1/whoami: the key's id and role, and
what it may do (the page shows only that)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ..errors import error_responses
from ..keys import ROLES, allows
from ..state import Service
from .deps import api_key, api_role, service

router = APIRouter(tags=["system"])


@router.get(
    "/v1/health",
    summary="Is the server up, and its gallery usable? (no API key needed)",
    responses={503: {"description": "degraded: the gallery is unreachable or was re-embedded under the server"}},
)
async def health(svc: Service = Depends(service), key: str | None = Depends(api_key)) -> JSONResponse:
    """200 ``{"status": "ok", "gallery": "ok"}``; 503 ``{"status": "degraded", "gallery": "unreachable" |
    "reembedded" | "storage-full"}`` while the gallery cannot serve decisions. With a valid API key (any role),
    also the version, model, detector, liveness mode, execution providers and the audit chain's state: an
    outsider learns whether the server is up, not what would help to attack it (liveness off, the model)."""
    status, body = await anyio.to_thread.run_sync(svc.health)
    if key is None:
        body = {k: body[k] for k in ("status", "gallery")}
    return JSONResponse(body, status_code=status)


@router.get("/v1/whoami", summary="This API key: its id, role and what it may do", responses=error_responses(401, 403))
async def whoami(
    key: str | None = Depends(api_key), role: str | None = Depends(api_role), svc: Service = Depends(service)
) -> dict[str, Any]:
    """`may`: each role's name, true when this key has it (recognise: verify, identify, liveness sessions;
    enrol: create people, add matching faces, list them; admin: force, rename, metadata, remove).
    `decisions_per_minute`: the verifications and identified faces this key may ask for a minute (null:
    not counted: an admin key, or a server started with 0)."""
    limit = svc.quota.per_minute if svc.quota.per_minute > 0 and not allows(role, "admin") else None
    return {"key": key, "role": role, "may": {r: allows(role, r) for r in ROLES}, "decisions_per_minute": limit}
