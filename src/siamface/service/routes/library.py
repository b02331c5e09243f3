"""The photo library of the web page (`siamface.service.library`): read the server's library folder (POST
/v1/library/scan), add uploaded photos (POST /v1/library/photos), see the faces grouped by person (GET
/v1/library) with their thumbnails (GET /v1/library/faces/{id}/thumbnail), name a group to enroll it (POST
/v1/library/groups/{group}/enroll), forget everything (DELETE /v1/library). Every route needs the enrol role:
the thumbnails are faces (biometric data), sent with ``Cache-Control: no-store`` like every /v1 answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response

from ...errors import ImageError, NoFaceError
from ..errors import ServiceError, error_responses
from ..keys import allows
from ..library import LibraryFull
from ..state import Service
from .deps import api_key, api_role, count_decisions, read_upload, require, service

router = APIRouter(
    prefix="/v1/library",
    tags=["library"],
    dependencies=[Depends(api_key), Depends(require("enrol", "the photo library"))],
)


def _full(exc: LibraryFull) -> ServiceError:
    return ServiceError(409, "library-full", f"{exc}: forget it (DELETE /v1/library) or serve a smaller folder")


@router.get("", summary="The library's faces grouped by person", responses=error_responses(401, 403, 503))
async def show(svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    """`clusters` (largest first; each face: its `id` for the thumbnail, its `file` (a path inside the library
    folder, or an upload's label) and `box`), `unclustered` (faces in no group), the `version` to send back
    when naming a group, `folder` (whether this server reads a library folder; never its path), the linking
    `threshold` and `model`, and the files that could not be read (`errors`)."""
    return await svc.run(svc.library_view)


@router.post(
    "/scan",
    summary="Read the library folder's new and changed photos",
    responses=error_responses(401, 403, 404, 409, 503),
)
async def scan(svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    """Reads the photos of the folder given to `siamface serve --library DIR` (no request field names a path;
    links are not followed, hidden files skipped), for about half the request's time budget; `done` false:
    call again to read the rest (`left`). Photos already read and unchanged are not read again; removed ones
    are forgotten. 404 `no-library-folder` when the server has none."""
    if svc.library.root is None:
        raise ServiceError(404, "no-library-folder", "this server reads no library folder (serve --library DIR)")
    try:
        return await svc.run(svc.library_scan)
    except LibraryFull as exc:
        raise _full(exc) from None


@router.post(
    "/photos",
    summary="Add uploaded photos to the library",
    responses=error_responses(400, 401, 403, 409, 413, 422),
)
async def add_photos(
    svc: Annotated[Service, Depends(service)],
    images: Annotated[list[UploadFile], File(description="photos (every face of each joins the library)")],
) -> dict[str, Any]:
    """Every face of each photo joins the library (kept in the server's memory only, until DELETE
    /v1/library or a restart); `photos`: the faces found in each, or why it could not be read."""
    if not images or len(images) > svc.settings.max_enroll_images:
        raise ServiceError(400, "bad-request", f"send 1 to {svc.settings.max_enroll_images} photos in field 'images'")
    uploads = [await read_upload(f, f"upload {i}") for i, f in enumerate(images)]
    try:
        return await svc.run(svc.library_add, uploads)
    except LibraryFull as exc:
        raise _full(exc) from None


@router.get(
    "/faces/{face_id}/thumbnail",
    summary="A face's thumbnail (JPEG; never cached)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **error_responses(401, 403, 404)},
)
async def thumbnail(face_id: int, svc: Annotated[Service, Depends(service)]) -> Response:
    entry = svc.library.entry(face_id)
    if entry is None or not entry.thumbnail:
        raise ServiceError(404, "unknown-face", f"no face {face_id} in the library")
    return Response(entry.thumbnail, media_type="image/jpeg")


@router.post(
    "/groups/{group}/enroll",
    summary="Enroll a group of the library as a new person",
    status_code=201,
    responses=error_responses(400, 401, 403, 404, 409, 422, 429),
)
async def enroll_group(
    group: int,
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
    role: Annotated[str | None, Depends(api_role)],
    name: Annotated[str, Form(description="the new person's name")],
    version: Annotated[int, Form(description="the library's `version` the group was shown at")],
) -> JSONResponse:
    """The group's largest faces (at most 10; a crop around each) go through the enrolment gates as POST
    /v1/people's images do (quality, duplicates; 409 `already-enrolled` when the face already matches someone
    enrolled, 409 `person-exists` for a taken name). 409 `library-changed` when the library changed since
    `version` (group ids may have moved: look again), or a photo of the group no longer holds what was read
    from it (what was shown is what is enrolled: scan and look again)."""
    count_decisions(svc, key, role, 1)  # the group's face matched against the gallery (already enrolled?)
    try:
        added, report = await svc.run(svc.library_enroll, group, version, name, key, allows(role, "admin"))
    except (ImageError, NoFaceError) as exc:
        raise ServiceError(422, "no-usable-face", str(exc)) from None
    if not added:
        reasons = "; ".join(r["message"] for r in report["rejected"]) or "no face passed"
        raise ServiceError(422, "no-usable-face", f"no face could be enrolled: {reasons}", extra={"report": report})
    return JSONResponse(report, status_code=201)


@router.delete("", summary="Forget the library's faces and uploads", responses=error_responses(401, 403))
async def forget(svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    """The next scan reads the folder again."""
    svc.library.clear()
    return svc.library.counts()
