"""POST /v1/embed: the faces and embeddings of several images, for admin keys only.

An embedding is a biometric template: the record a gallery keeps of a face, enough to search any gallery of
the same model for that person, and the one thing a gallery's design keeps inside. A recognise key (a door,
a kiosk: the most widely held, the easiest to steal) gets decisions, never templates; an enrol key (an
enrolment desk) puts faces in and gets none out either. Handing templates out of the server is an operator's
job (indexing, migration, evaluation): the admin role, which may already read and change every record.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, UploadFile

from ..errors import error_responses
from ..state import Service
from .deps import api_key, read_batch, require, service

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1",
    tags=["embedding"],
    dependencies=[Depends(api_key), Depends(require("admin", "handing out embeddings (biometric templates)"))],
)


@router.post(
    "/embed",
    summary="The faces and embeddings (templates) of each of several images (admin keys only)",
    responses=error_responses(400, 401, 403, 413, 422),
)
async def embed(
    svc: Annotated[Service, Depends(service)],
    key: Annotated[str | None, Depends(api_key)],
    images: Annotated[
        list[UploadFile],
        File(
            description="the images (at most the server's max_batch_images; 413 `too-many-images` above), "
            "answered one item each, in order"
        ),
    ],
) -> dict[str, Any]:
    """`{"model", "version", "embedding_size", "results": [...]}`: one item per image in the order sent, with
    its `index` and `probe`: `faces` (the largest, at most the server's max_faces: `box`, detection `score`,
    `embedding`, L2-normalised), `faces_found`, `truncated` and the image `size`; or, for an image that could
    not be answered (unreadable: 400 `bad-image`; no face: 422 `no-face`), `status`, `error` and `detail`,
    while the others are answered (HTTP 200). The faces of all the images go through the encoder together,
    in batches. Each request is logged with the key that made it."""
    uploads = await read_batch(svc, images)
    answer = await svc.run(svc.embed_many, uploads)
    faces = sum(len(item.get("faces", ())) for item in answer["results"])
    log.info("embeddings handed out: %d faces of %d images to key %s", faces, len(uploads), key)
    return answer
