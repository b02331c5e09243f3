"""GET /v1/health: liveness of the server itself (no key needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ..state import Service
from .deps import service

router = APIRouter(tags=["system"])


@router.get("/v1/health", summary="Is the server up? (no API key needed)")
async def health(svc: Service = Depends(service)) -> dict[str, Any]:
    return svc.health()
