"""POST /v1/verify (two images, or a claimed person and a probe) and POST /v1/identify (1:N)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from ...gallery.names import lookup_form
from ..errors import ServiceError, error_responses
from ..keys import allows
from ..state import Service
from .deps import api_key, api_role, count_decisions, read_batch, read_upload, require, service

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
    role: Annotated[str | None, Depends(api_role)],
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
    live); the session is used up by this request, whatever it answers. To a recognise key, a name nobody has
    is answered as an enrolled name with another face (200, denied, counted and locked out alike: no oracle
    of who is enrolled), and a claim's answer carries no score; enrol and admin keys get 404
    `unknown-person`. Below admin, liveness evidence carries no exact score. With `a` + `b`: the evidence of
    `siamface verify A B`."""
    if claim is not None:
        if image is None or a is not None or b is not None:
            raise ServiceError(400, "bad-request", "verify with 'claim' takes one image file in field 'image'")
        count_decisions(svc, key, role, 1)
        probe = await read_upload(image, "image")
        person = await svc.run(svc.claimed, claim, allows(role, "enrol"))
        svc.notice(person)
        await svc.count_session_failures()
        session = svc.liveness_session(liveness_session, key, person)
        async with svc.lockout.attempt(person.id, svc.stored_denials(person)) as attempt:
            granted, payload = await svc.run(
                svc.verify_claim, person, probe, rule, fraction, session, key, role, lookup_form(claim)
            )
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
    count_decisions(svc, key, role, 1)
    first, second = await read_upload(a, "a"), await read_upload(b, "b")
    return await svc.run(svc.verify_pair, first, second, allows(role, "admin"))


@router.post(
    "/identify",
    summary="Who is in this image, or in each of these images? (1:N against the gallery)",
    responses=error_responses(400, 401, 403, 413, 422, 429),
)
async def identify(
    request: Request,
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
    role: Annotated[str | None, Depends(api_role)],
    image: Annotated[UploadFile | None, File(description="the probe image (one): answered as before")] = None,
    images: Annotated[
        list[UploadFile] | None,
        File(
            description="several probe images (instead of `image`; at most the server's max_batch_images, "
            "413 `too-many-images` above): answered `{\"results\": [...]}`, one item per image in order"
        ),
    ] = None,
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

    Several images: send them in field `images` (not `image`, which takes one file: a second `image` part is
    refused, never ignored). The answer is `{"results": [...]}`, one item per image in the order sent, each
    with its `index`: the single-image answer above, or, for an image that could not be answered (unreadable:
    400 `bad-image`; no face: 422 `no-face`), `{"index", "probe", "status", "error", "detail"}`, while the
    others are answered (HTTP 200). Each identification is audited as one.

    The answer says the 1:N `threshold`, the `fpir` target it was set for and the `gallery_size` (people,
    templates) it was computed for: it follows the gallery as people are enrolled and removed. An `fpir`
    below the server's raises the threshold; above it, the server's is used."""
    if image is None and images is None:  # as the validation of a required field answered before batches
        raise ServiceError(422, "invalid-request", "image: Field required (or several images in field 'images')")
    form = await request.form()
    if image is not None and images is not None or len(form.getlist("image")) > 1:
        raise ServiceError(
            400,
            "bad-request",
            "identify takes one image file in field 'image', or several in field 'images' (not both)",
        )
    locked = {k for k in svc.lockout.locked() if isinstance(k, int)}  # people (not names nobody has)
    admin = allows(role, "admin")
    if image is not None:
        count_decisions(svc, key, role, 1)
        probe = await read_upload(image, "image")
        return await svc.run(svc.identify, probe, top, margin, locked, key, admin, fpir, not admin)
    probes = await read_batch(svc, images)
    count_decisions(svc, key, role, len(probes))  # one per image now; each face past an image's first once found
    return await svc.run(svc.identify_many, probes, top, margin, locked, key, admin, fpir, not admin)
