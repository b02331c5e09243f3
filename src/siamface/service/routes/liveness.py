"""Liveness: POST /v1/liveness/sessions (a capture session for a claimed person), POST
/v1/liveness/sessions/{id}/frames (one camera frame each). A passed session's id then goes with the claim to
POST /v1/verify (see `..sessions`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile

from ...gallery.names import lookup_form
from ..errors import ServiceError, error_responses
from ..keys import allows
from ..lockout import LockedOut
from ..state import Service
from .deps import api_key, api_role, read_upload, require, service

router = APIRouter(
    prefix="/v1/liveness", tags=["liveness"], dependencies=[Depends(require("recognise", "liveness sessions"))]
)


@router.post(
    "/sessions",
    summary="Open a liveness capture session for a claimed person",
    status_code=201,
    responses=error_responses(400, 401, 403, 404, 429),
)
async def open_session(
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
    role: Annotated[str | None, Depends(api_role)],
    claim: Annotated[str, Form(description="the enrolled person the session will verify")],
) -> dict[str, Any]:
    """The session's id, its `mode` (passive: frames only; active: prompts too), the `prompt` to show now
    (prompts are revealed one at a time, at random moments: `challenges` lists only those shown so far),
    `timeout` (seconds to finish from the first frame), `max_gap` (the longest silence between frames),
    `expires_in` (seconds left to use it in POST /v1/verify) and `max_frames`. Only with liveness on (400
    `liveness-off` otherwise). It belongs to this API key and this person; opening is limited per key and per
    person (429), refused while the person is locked out (429 `locked`), and a session that fails or
    expires unused counts as a failed verification of the person. To a recognise key, a name nobody has
    opens a session as an enrolled one does (its claim is then denied: no oracle of who is enrolled); enrol
    and admin keys get 404 `unknown-person`."""
    if not svc.settings.sessions_needed:
        raise ServiceError(
            400, "liveness-off", "this server's liveness is off: claims need no session (siamface serve --liveness)"
        )
    reveal = allows(role, "enrol")
    person = await svc.run(svc.claimed, claim, reveal)
    svc.notice(person)
    await svc.count_session_failures()
    svc.lockout.merge(person.id, await svc.run(svc.denials, person))
    left = svc.lockout.remaining_lock(person.id)
    if left:
        raise LockedOut(left)
    shown = person.name if reveal else lookup_form(claim)  # the name as sent: its stored case tells nothing
    return svc.sessions.open(key, person.id, shown)


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
    """Timed on arrival by the server's clock: frames must come at camera rate (no bursts, no gaps longer
    than `max_gap`), never the same picture twice, with no jump of the face between frames. Answers the
    session's `state` (`pending`, `passed`, `failed`), the `prompt` to show now, the `reason` once decided,
    the prompts `completed` and the largest `parallax` so far. 422 `no-face` (with the `session`) when the
    frame shows no face. Frames sent after the decision change nothing."""
    arrived = svc.sessions.clock()  # the body is in: its arrival time, before any queueing for a worker
    frame = await read_upload(image, "image")
    try:
        return await svc.run(svc.liveness_frame, session_id, key, frame, arrived)
    finally:
        await svc.count_session_failures()
