"""GET /v1/health: liveness of the server itself (no key needed)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ..state import Service
from .deps import service

router = APIRouter(tags=["system"])


@router.get(
    "/v1/health",
    summary="Is the server up, and its gallery usable? (no API key needed)",
    responses={503: {"description": "degraded: the gallery is unreachable or was re-embedded under the server"}},
)
async def health(svc: Service = Depends(service)) -> JSONResponse:
    """200 ``{"status": "ok", ...}``; 503 ``{"status": "degraded", "gallery": "unreachable" | "reembedded" |
    "storage-full", ...}`` while the gallery cannot serve decisions."""
    status, body = await anyio.to_thread.run_sync(svc.health)
    return JSONResponse(body, status_code=status)
