"""Embed one face of each distinct image of a protocol, once: the cache first, then the pipeline.

`embed_images` never raises for a faceless or undecodable image: it records why (`ImageOutcome.error`), and
the protocols score every pair of that image NaN (see `siamface.evaluation.report.FAILURE_POLICY`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .._progress import Progress
from ..errors import ConfigError, ImageError
from ..image import load_image, read_image_file
from .cache import EmbeddingCache, chain_keys, file_sha256

__all__ = ["EmbeddingRun", "ImageOutcome", "embed_images"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageOutcome:
    """What became of one image: its embedding (None on failure), faces found, why it failed, cache hit."""

    embedding: np.ndarray | None
    n_faces: int = 0
    error: str | None = None  # None, "no face" or "unreadable: <reason>"
    cached: bool = False


@dataclass
class EmbeddingRun:
    outcomes: dict[Path, ImageOutcome]
    n_cached: int
    n_computed: int
    seconds: float


def embed_images(
    pipeline: Any,
    paths: Iterable[str | os.PathLike],
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    face: str = "largest",
) -> EmbeddingRun:
    """Embed one face of each distinct image (cache first), the largest or the one nearest the centre
    (`face`); never raises for a faceless image.

    A missing file is an error (`ConfigError`, naming how many and the first few): a wrong ``--root`` must
    not pass for a 100% failure rate. An undecodable file is a failure (``error="unreadable: ..."``).
    """
    t0 = time.perf_counter()
    unique = list(dict.fromkeys(Path(p) for p in paths))
    missing = [p for p in unique if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise ConfigError(f"{len(missing)} of {len(unique)} images not found (e.g. {shown}); check the dataset root")
    outcomes: dict[Path, ImageOutcome] = {}
    keys: dict[Path, str] = {}
    hits: dict[str, Any] = {}
    if cache is not None:
        mkey, dkey = chain_keys(pipeline)
        if face != "largest":  # the entries made before the choice existed are those of the largest face
            dkey += f" face={face}"
        for p in unique:
            try:
                keys[p] = file_sha256(p)
            except OSError as exc:
                outcomes[p] = ImageOutcome(None, 0, f"unreadable: {exc.strerror or exc}")
        refused = cache.rejected
        hits = cache.get_many(keys.values(), mkey, dkey)
        if cache.rejected > refused:
            log.warning(
                "%s: %d cached embeddings did not check (damaged, or not written by this user's siamface): "
                "embedded again",
                cache.path,
                cache.rejected - refused,
            )
        for p, sha in keys.items():
            entry = hits.get(sha)
            if entry is not None:
                outcomes[p] = ImageOutcome(
                    entry.embedding, entry.n_faces, None if entry.found else "no face", cached=True
                )
    todo = [p for p in unique if p not in outcomes]
    n_cached = sum(1 for o in outcomes.values() if o.cached)
    computed = 0
    if todo:
        label = f"embedding {len(todo)} images"
        with Progress(len(todo), label, stream=stream, enabled=progress) as bar:
            try:
                for start in range(0, len(todo), BATCH_IMAGES):
                    chunk = todo[start : start + BATCH_IMAGES]
                    for p, (outcome, digest) in zip(chunk, _embed_batch(pipeline, chunk, face)):
                        outcomes[p] = outcome
                        computed += 1
                        if cache is not None and p in keys and (outcome.error in (None, "no face")):
                            # under the digest of the bytes decoded: the file may have changed since it was hashed
                            cache.put(digest, mkey, dkey, outcome.embedding, outcome.n_faces)
                        bar.update()
            finally:
                if cache is not None:
                    cache.flush()
    ordered = {p: outcomes[p] for p in unique}
    return EmbeddingRun(ordered, n_cached, computed, time.perf_counter() - t0)


def _embed_batch(pipeline: Any, paths: Sequence[Path], face: str) -> list[tuple[ImageOutcome, str]]:
    """(outcome, sha256 of the bytes decoded) per path: each image read once, decoded and its faces detected,
    then the chosen faces of all of them embedded together (`Pipeline.embed_many`: one forward pass per batch
    of faces, not one per image)."""
    outcomes: list[ImageOutcome | None] = []
    digests: list[str] = []
    found = []
    for path in paths:
        digest = ""
        try:
            data = read_image_file(path)
            digest = hashlib.sha256(data).hexdigest()
            array = load_image(data, name=str(path))
        except ImageError as exc:
            outcomes.append(ImageOutcome(None, 0, f"unreadable: {exc.reason}"))
            digests.append(digest)
            continue
        digests.append(digest)
        faces = pipeline.detect(array)
        if len(faces) == 0:
            outcomes.append(ImageOutcome(None, 0, "no face"))
            continue
        found.append((len(outcomes), len(faces), array, faces[faces.chosen(face, array.shape)]))
        outcomes.append(None)
    embedded = pipeline.embed_many([(array, chosen) for _, _, array, chosen in found]) if found else []
    for (k, n, _, _), faces in zip(found, embedded):
        outcomes[k] = ImageOutcome(np.asarray(faces.embeddings[0], np.float32), int(n), None)
    return list(zip(outcomes, digests))


#: Images decoded and detected before their faces are embedded together.
BATCH_IMAGES = 16


def _matrix(outcomes: dict[Path, ImageOutcome], files: Sequence[Path], dim: int) -> np.ndarray:
    """(n, dim) embeddings of `files`, NaN rows for failures."""
    m = np.full((len(files), dim), np.nan, np.float32)
    for i, f in enumerate(files):
        e = outcomes[Path(f)].embedding
        if e is not None:
            m[i] = e
    return m
