"""The people of the gallery: enroll (POST /v1/people, POST /v1/people/{name}/faces), list, show, rename or
change metadata (PATCH), remove (DELETE). `{name}` is the person's name, URL-encoded."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...errors import GalleryError
from ...gallery.sqlbase import MAX_JSON_DEPTH, json_object
from ..errors import ServiceError, error_responses
from ..keys import allows
from ..state import Service, actor
from .deps import api_key, api_role, count_decisions, read_upload, refuse, require, service

router = APIRouter(prefix="/v1/people", tags=["people"], dependencies=[Depends(api_key)])
_enrol = Depends(require("enrol", "enrolment"))
_admin = Depends(require("admin", "renaming, changing metadata and removing people"))


class PersonUpdate(BaseModel):
    """What PATCH changes: a new name, and/or the metadata (replaced as a whole)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, description="the new name")
    metadata: dict[str, Any] | None = Field(default=None, description="the new metadata object")


async def _uploads(svc: Service, images: list[UploadFile], key: str | None, role: str | None):
    """The images of an enrolment, each a decision of a key below admin (`count_decisions`): each is matched
    against the gallery (already enrolled? the person's face?), an answer its holder reads."""
    if not images:
        raise ServiceError(400, "bad-request", "send at least one image file in field 'images'")
    if len(images) > svc.settings.max_enroll_images:
        raise ServiceError(
            400, "bad-request", f"at most {svc.settings.max_enroll_images} images per request, got {len(images)}"
        )
    count_decisions(svc, key, role, len(images))
    return [await read_upload(f, f"images[{i}]") for i, f in enumerate(images)]


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise ServiceError(400, "bad-request", "metadata is not valid JSON") from None
    except RecursionError:
        raise ServiceError(400, "bad-request", f"metadata is nested more than {MAX_JSON_DEPTH} levels deep") from None
    _bounded(value)
    return value


def _bounded(metadata: Any) -> None:
    """400 unless `metadata` is a JSON object within the gallery's bounds (depth, size, no NaN)."""
    try:
        json_object(metadata)
    except GalleryError as exc:
        raise ServiceError(400, "bad-request", str(exc)) from None


def _enrolled(added: bool, report: dict[str, Any], status: int) -> JSONResponse:
    if not added:
        reasons = "; ".join(r["message"] for r in report["rejected"]) or "no image passed"
        raise ServiceError(422, "no-usable-face", f"no image could be enrolled: {reasons}", extra={"report": report})
    return JSONResponse(report, status_code=status)


@router.post(
    "",
    summary="Enroll a new person from one or more images",
    status_code=201,
    responses=error_responses(400, 401, 403, 409, 413, 422, 429),
    dependencies=[_enrol],
)
async def create_person(
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
    role: Annotated[str | None, Depends(api_role)],
    name: Annotated[str, Form(description="the person's name (unique)")],
    images: Annotated[list[UploadFile], File(description="face images of that person (several: better)")],
    metadata: Annotated[str | None, Form(description="a JSON object stored with the person")] = None,
    force: Annotated[
        bool,
        Form(description="admin keys: enroll even when the face already matches a person enrolled"),
    ] = False,
) -> JSONResponse:
    """Every image passes the enrollment quality gates (one face, size, pose, sharpness, not a duplicate) or
    is listed in `rejected` with its reason; the person is created with the images kept (201), or not at all
    (422 `no-usable-face`). The name must be new, ignoring case (409 `person-exists` otherwise, also when
    another request creates it at the same moment). Names: letters, numbers, single spaces and
    `. , ' ’ - _ ( ) & @ +`, starting with a letter or a number (400 `invalid-name` otherwise). A face
    belongs to one person: when the images' face already matches someone enrolled (at the 1:N threshold),
    409 `already-enrolled`, naming no one (an admin key's answer names whom; `force=true`, admin keys only,
    enrolls anyway). Images are not stored unless the gallery was created to keep them. Needs the enrol
    role."""
    if force:
        refuse(role, "admin", "force=true")
    uploads = await _uploads(svc, images, key, role)
    added, report = await svc.run(
        svc.enroll, name, uploads, _metadata(metadata), False, force, key, allows(role, "admin")
    )
    return _enrolled(added, report, 201)


@router.post(
    "/{name}/faces",
    summary="Add face images to an enrolled person",
    responses=error_responses(400, 401, 403, 404, 413, 422, 429),
    dependencies=[_enrol],
)
async def add_faces(
    name: str,
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
    role: Annotated[str | None, Depends(api_role)],
    images: Annotated[list[UploadFile], File(description="more face images of that person")],
    force: Annotated[
        bool,
        Form(
            description="admin keys: add the images even when their face does not match the person's "
            "templates at the 1:1 threshold"
        ),
    ] = False,
) -> JSONResponse:
    """Each image passes the quality gates and must match one of the person's original templates (made at
    enrolment, or added by an admin key) at the 1:1 threshold, else it is rejected as `other-person` ("does
    not match", no score) unless `force=true` (admin keys only); 200 with the images added, or 422
    `no-usable-face` when none was. Faces added by a key below admin are provisional (they never serve as
    the reference of a later addition, and decide a claim or a search only when an original template matches
    too), and at most `--additions-per-person` of them per person within
    `--additions-window` seconds (429 `too-many-additions`, with `Retry-After`). A request with a face that
    does not match counts as a failed verification of that person towards the lock-out, and while the
    person is locked, 429 `locked` (as POST /v1/verify). Needs the enrol role."""
    if force:
        refuse(role, "admin", "force=true")
    uploads = await _uploads(svc, images, key, role)
    admin = allows(role, "admin")
    if force:
        added, report = await svc.run(svc.enroll, name, uploads, None, True, True, key, admin)
        return _enrolled(added, report, 200)
    person = await svc.run(svc.person, name)
    svc.notice(person)
    if not admin:
        await svc.run(svc.refuse_more_additions, person.name, len(uploads))
    added, report = False, {"added": []}
    async with svc.lockout.attempt(person.id, svc.stored_denials(person)) as attempt:
        added, report = await svc.run(svc.enroll, name, uploads, None, True, False, key, admin)
        if any(r["reason"] == "other-person" for r in report["rejected"]):
            attempt.failed()
        # an added face is no verification: it leaves the person's count of failures as it was (clearing
        # it would give an enrol key and a recognise key unlimited claims)
    return _enrolled(added, report, 200)


@router.get("", summary="The people enrolled", responses=error_responses(401, 403), dependencies=[_enrol])
async def list_people(svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    people = await svc.run(svc.gallery.store.people)
    return {"people": [p.to_dict() for p in people]}


@router.get(
    "/{name}", summary="One person and their templates", responses=error_responses(401, 403, 404), dependencies=[_enrol]
)
async def show_person(name: str, svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    def show():
        person = svc.gallery.store.person(name)
        return {**person.to_dict(), "template_list": [t.to_dict() for t in svc.gallery.store.templates(person.name)]}

    return await svc.run(show)


@router.patch(
    "/{name}",
    summary="Rename a person and/or replace their metadata",
    responses=error_responses(400, 401, 403, 404, 409, 422),
    dependencies=[_admin],
)
async def update_person(
    name: str,
    change: PersonUpdate,
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
) -> dict[str, Any]:
    """Needs the admin role."""
    if change.name is None and change.metadata is None:
        raise ServiceError(400, "bad-request", "give a new 'name' and/or 'metadata'")

    def update():
        from ...gallery.names import InvalidNameError, check_name
        from ...gallery.store import UnknownPersonError

        store = svc.gallery.store
        person = store.person(name, metadata=False)  # damaged metadata can be replaced
        if change.name is not None:
            try:
                new = check_name(change.name)
            except InvalidNameError as exc:
                raise ServiceError(400, "invalid-name", str(exc)) from None
            try:
                other = store.person(new)
            except UnknownPersonError:
                other = None
            if other is not None and other.id != person.id:
                raise ServiceError(409, "name-taken", f"a person named {other.name!r} is already enrolled")
            person = store.rename(person.name, new, actor=actor(key))
        if change.metadata is not None:
            _bounded(change.metadata)
            person = store.set_metadata(person.name, change.metadata, actor=actor(key))
        return person.to_dict()

    return await svc.run(update)


@router.delete(
    "/{name}",
    summary="Remove a person, their templates and any kept images",
    responses=error_responses(401, 403, 404),
    dependencies=[_admin],
)
async def delete_person(
    name: str, svc: Annotated[Service, Depends(service)], key: Annotated[str | None, Depends(api_key)]
) -> dict[str, Any]:
    """Removes the person from the gallery and from the server's memory: the photo library's faces that are
    theirs (those their templates match at the 1:1 threshold, and the faces grouped with them), the liveness
    sessions opened for them, their lock-out. Needs the admin role."""
    person, answer = await svc.run(svc.remove, name, key)
    svc.lockout.forget(person.id)
    return answer
