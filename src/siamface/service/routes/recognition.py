"""POST /v1/verify (two images, or a claimed person and a probe) and POST /v1/identify (1:N)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, UploadFile

from ..errors import ServiceError, error_responses
from ..state import Service
from .deps import api_key, read_upload, require, service

router = APIRouter(
    prefix="/v1",
    tags=["recognition"],
    dependencies=[Depends(api_key), Depends(require("recognise", "verification and identification"))],
)


@router.post(
    "/verify",
    summary="Same person? Two images (a, b), or a claimed person and a probe image",
    responses=error_responses(400, 401, 403, 404, 409, 410, 413, 422, 429),
)
async def verify(
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
    claim: Annotated[str | None, Form(description="the enrolled person claimed (with `image`)")] = None,
    image: Annotated[UploadFile | None, File(description="the probe, with `claim`")] = None,
    a: Annotated[UploadFile | None, File(description="first image (without `claim`)")] = None,
    b: Annotated[UploadFile | None, File(description="second image (without `claim`)")] = None,
    rule: Annotated[
        Literal["best", "mean", "fraction"], Form(description="with `claim`: how the person's template scores combine")
    ] = "best",
    fraction: Annotated[
        float, Form(gt=0, le=1, description="with rule=fraction: share of templates that must match")
    ] = 0.5,
    liveness_session: Annotated[
        str | None,
        Form(
            description="with `claim`, when the server's liveness is not off: a decided liveness "
            "session opened for this claim (used up by this request)"
        ),
    ] = None,
) -> dict[str, Any]:
    """With `claim` + `image`: the claim verification of `siamface verify --gallery G --claim NAME` (granted
    when `accepted`, and live when liveness is on), logged in the gallery's audit; denied attempts count
    towards the person's lock-out (429 once locked). With liveness on (any mode but off), a claim also needs
    `liveness_session`: a session of this key, opened for this claim, that passed and whose every face is
    the claimed person (400 `liveness-session-required` without one: an uploaded image alone is never
    live); the session is used up by this request, whatever it answers. With `a` + `b`: the evidence of
    `siamface verify A B`."""
    if claim is not None:
        if image is None or a is not None or b is not None:
            raise ServiceError(400, "bad-request", "verify with 'claim' takes one image file in field 'image'")
        probe = await read_upload(image, "image")
        person = await svc.run(svc.person, claim)
        svc.count_session_failures()
        session = svc.liveness_session(liveness_session, key, person)
        async with svc.lockout.attempt(person.id) as attempt:
            granted, payload = await svc.run(svc.verify_claim, person, probe, rule, fraction, session, key)
            if granted:
                attempt.succeeded()
            elif session is None or not session.counted:  # a failed session counted once already
                attempt.failed()
        if liveness_session and session is None:
            payload["notes"].append(f"liveness_session ignored: this server's liveness is {svc.settings.liveness}")
        if not granted:
            left = svc.lockout.remaining_lock(person.id)
            if left:
                payload["locked_for_s"] = round(left)
        return payload
    if a is None or b is None or image is not None:
        raise ServiceError(
            400, "bad-request", "verify takes two image files 'a' and 'b', or 'claim' and an image file 'image'"
        )
    first, second = await read_upload(a, "a"), await read_upload(b, "b")
    return await svc.run(svc.verify_pair, first, second)


@router.post(
    "/identify",
    summary="Who is in this image? (1:N against the gallery)",
    responses=error_responses(400, 401, 403, 413, 422),
)
async def identify(
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
    image: Annotated[UploadFile, File(description="the probe image")],
    top: Annotated[int, Form(ge=1, le=50, description="candidates per face")] = 5,
    margin: Annotated[
        float | None,
        Form(
            ge=0,
            lt=1,
            description="ambiguous when the second person is within this similarity; the server's margin "
            "(default 0.01) is the least taken",
        ),
    ] = None,
    fpir: Annotated[
        float | None,
        Form(
            gt=0,
            lt=1,
            description="a lower share of strangers that may be named than the server's FPIR target (a higher "
            "one is not taken: the server's is the most)",
        ),
    ] = None,
) -> dict[str, Any]:
    """Every face of the image, biggest first, named (`known`), `ambiguous` or `unknown`: the JSON of
    `siamface identify --json`, plus the image `size`, revealing less: an `unknown` face has no similarity
    and no candidates, a named or ambiguous one only the (at most `top`) candidates scoring at least the
    threshold minus the server's margin, and a person locked out of verification is searched as if not
    enrolled. A `margin` above the server's makes more faces ambiguous; below it, the server's is used.
    The answer says the 1:N `threshold`, the `fpir` target it was set for and the `gallery_size` (people,
    templates) it was computed for: it follows the gallery as people are enrolled and removed. An `fpir`
    below the server's raises the threshold; above it, the server's is used."""
    probe = await read_upload(image, "image")
    return await svc.run(svc.identify, probe, top, margin, svc.lockout.locked(), key, fpir)
