"""Active liveness: POST /v1/liveness/sessions (a challenge), POST /v1/liveness/sessions/{id}/frames (one
camera frame each). A passed session's id then goes with a claim to POST /v1/verify (see `..sessions`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, UploadFile

from ..errors import ServiceError, error_responses
from ..state import Service
from .deps import api_key, read_upload, require, service

router = APIRouter(
    prefix="/v1/liveness", tags=["liveness"], dependencies=[Depends(require("recognise", "liveness sessions"))]
)


@router.post(
    "/sessions",
    summary="Open an active liveness session (a random challenge)",
    status_code=201,
    responses=error_responses(400, 401, 403, 429),
)
async def open_session(
    svc: Annotated[Service, Depends(service)], key: Annotated[str | None, Depends(api_key)]
) -> dict[str, Any]:
    """The session's id, its challenges (turn_left, turn_right, closer: the user's own left and right, as
    in a mirrored preview), the `prompt` to show, `timeout` (seconds to meet the challenge from the first
    frame), `expires_in` (seconds left to use it in POST /v1/verify) and `max_frames`. Only with the server's
    liveness `active` or `both` (400 `active-liveness-off` otherwise); it belongs to this API key."""
    if not svc.settings.active_liveness:
        raise ServiceError(
            400,
            "active-liveness-off",
            f"this server's liveness is {svc.settings.liveness}; "
            f"challenge sessions need `siamface serve --liveness "
            f"active` or `both`",
        )
    return svc.sessions.open(key)


@router.post(
    "/sessions/{session_id}/frames",
    summary="Send one camera frame to a liveness session",
    responses=error_responses(400, 401, 403, 404, 409, 410, 413, 422),
)
async def add_frame(
    session_id: str,
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
    image: Annotated[
        UploadFile, File(description="one camera frame (JPEG or PNG), as the camera sees it (not mirrored)")
    ],
) -> dict[str, Any]:
    """The largest face's keypoints go to the challenge, timed by the server's clock. Answers the session's
    `state` (`pending`, `passed`, `failed`), the next `prompt`, the `reason` once decided, the challenges
    `completed` and the largest `parallax` so far. 422 `no-face` (with the `session`) when the frame shows no
    face. Frames sent after the decision change nothing."""
    frame = await read_upload(image, "image")
    return await svc.run(svc.liveness_frame, session_id, key, frame)
