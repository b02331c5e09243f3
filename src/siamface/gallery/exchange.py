"""Gallery export and import: one self-describing file, ``siamface gallery export|import``.

Format ``siamface-gallery`` version 1 is JSON Lines (UTF-8, one JSON object per line):

- Line 1, the header::

      {"format": "siamface-gallery", "version": 1,
       "model": {"name": "dlib-resnet", "version": "...", "embedding_size": 128},
       "embedding_encoding": "base64 float32 little-endian",
       "exported": "2025-01-01T00:00:00.000+00:00", "people": 2, "templates": 7, "images": false}

- Then one line per person::

      {"name": "alice", "metadata": {...}, "created": "...",
       "templates": [{"embedding": "<base64 of embedding_size little-endian float32>",
                      "source": "alice1.jpg", "quality": {...}, "created": "...",
                      "image": "<base64 PNG face crop>"}]}

  ``image`` is present only when the export was asked for ``--with-images`` and the gallery keeps images.

The file holds biometric templates, unencrypted: treat it like the gallery itself. Import refuses a file of
another model (`ModelMismatchError`) and names already in the gallery unless ``merge`` (then templates go
to the existing person, near-duplicates of their templates skipped, and, given a ``match`` threshold, so
are templates that match none of the person's templates: the rule of enrolling into an existing person);
everything is added in one transaction. Created times are those of the import; the exported ones stay in the file.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_bytes
from ..decision import Threshold
from ..errors import ConfigError, GalleryError
from .backends import gallery_exists, open_store
from .store import AddResult, ModelBinding, NewTemplate, Store, Template, UnknownPersonError, is_database_url

log = logging.getLogger(__name__)

FORMAT = "siamface-gallery"
VERSION = 1
ENCODING = "base64 float32 little-endian"
#: The longest first line read to tell an earlier export (which an export may replace) from any other file.
MAX_HEADER_BYTES = 64 * 1024
#: A merged template this alike to one the person has is skipped: the enrollment duplicate gate's value, the
#: model's own (`ModelInfo.duplicate`) for a registered model, else this.
MERGE_DUPLICATE = 0.995


@dataclass(frozen=True)
class ExportSummary:
    path: str
    people: int
    templates: int
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.path, "people": self.people, "templates": self.templates, "images": self.images}


@dataclass(frozen=True)
class ImportSummary:
    path: str
    added_people: int
    merged_people: int
    templates: int
    skipped: int
    images_dropped: int
    refused: int = 0  # merged templates that matched none of the person's templates

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "new_people": self.added_people,
            "merged_people": self.merged_people,
            "templates": self.templates,
            "skipped_duplicates": self.skipped,
            "refused_not_matching": self.refused,
            "images_dropped": self.images_dropped,
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def export_gallery(store: Store, path: str | os.PathLike, *, with_images: bool = False) -> ExportSummary:
    """Write every person and template of `store` to `path` (format above), atomically."""
    if with_images and not store.keep_images:
        raise GalleryError(
            f"{store.location} keeps no images (it was not created with --keep-images); export without --with-images"
        )
    target = Path(path)
    if target.is_dir():
        raise GalleryError(f"{target} is a folder; give the export file's name")
    _refuse_replacing(target)
    people = store.people()
    templates: dict[int, list[Template]] = {}
    for t in store.templates(embeddings=True):
        templates.setdefault(t.person_id, []).append(t)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model": {
            "name": store.model.name,
            "version": store.model.version,
            "embedding_size": store.model.embedding_size,
        },
        "embedding_encoding": ENCODING,
        "exported": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "people": len(people),
        "templates": sum(len(v) for v in templates.values()),
        "images": bool(with_images),
    }
    lines = [json.dumps(header, sort_keys=True)]
    images = 0
    for p in people:
        rows = []
        for t in templates.get(p.id, []):
            row = {
                "embedding": _b64(np.asarray(t.embedding, "<f4").tobytes()),
                "source": t.source,
                "quality": t.quality,
                "created": t.created,
            }
            if with_images and t.has_image:
                row["image"] = _b64(store.image(t.id))
                images += 1
            rows.append(row)
        lines.append(
            json.dumps(
                {"name": p.name, "metadata": p.metadata, "created": p.created, "templates": rows}, sort_keys=True
            )
        )
    try:
        atomic_write_bytes(target, ("\n".join(lines) + "\n").encode("utf-8"))
    except OSError as exc:
        raise GalleryError(f"cannot write {target}: {exc}") from None
    return ExportSummary(str(target), len(people), header["templates"], images)


def _refuse_replacing(target: Path) -> None:
    """`GalleryError` when `target` exists and is not an earlier export (a regular file whose first line is an
    export's header): ``gallery export -g people.db people.db`` replaced the gallery itself, its audit with it,
    and an export named like its keys file (``people.db.keys.json``) or a calibration replaced that file."""
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise GalleryError(f"cannot write {target}: {exc.strerror or exc}") from None
    what = "a link" if stat.S_ISLNK(info.st_mode) else None
    if what is None and not stat.S_ISREG(info.st_mode):
        what = "not a regular file"
    if what is None:
        try:
            with open(target, "rb") as f:
                header = json.loads(f.readline(MAX_HEADER_BYTES))
            what = None if isinstance(header, dict) and header.get("format") == FORMAT else "not an earlier export"
        except (OSError, ValueError, RecursionError):
            what = "not an earlier export"
    if what:
        raise GalleryError(
            f"{target} exists and is {what} (a gallery, its keys or another file): not replaced; remove it or "
            "give a new file's name"
        )


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The header of an export file, checked (format, version, model), or `GalleryError`."""
    return next(_read(path))[1]


def _read(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"{path}: no such export file")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise GalleryError(f"{path}:{number}: not a siamface gallery export (not UTF-8 text)") from None
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise GalleryError(f"{path}:{number}: not a siamface gallery export (not JSON)") from None
            except RecursionError:
                raise GalleryError(f"{path}:{number}: JSON nested too deeply to be a person entry") from None
            if not isinstance(item, dict):
                raise GalleryError(f"{path}:{number}: expected a JSON object")
            if number == 1:
                _check_header(path, item)
            yield number, item
    if "number" not in locals():
        raise GalleryError(f"{path}: empty file, not a siamface gallery export")


def _check_header(path: Path, header: dict[str, Any]) -> None:
    if header.get("format") != FORMAT:
        raise GalleryError(f"{path}: not a siamface gallery export (format {header.get('format')!r})")
    if header.get("version") != VERSION:
        raise GalleryError(
            f"{path}: export format version {header.get('version')!r}; this siamface reads version {VERSION}"
        )
    if header.get("embedding_encoding") != ENCODING:
        raise GalleryError(f"{path}: unknown embedding encoding {header.get('embedding_encoding')!r}")
    model = header.get("model") or {}
    try:
        ModelBinding(str(model["name"]), str(model["version"]), int(model["embedding_size"]))
    except (KeyError, TypeError, ValueError):
        raise GalleryError(f"{path}: the header does not name the model (name, version, embedding_size)") from None


def file_model(header: dict[str, Any]) -> ModelBinding:
    m = header["model"]
    return ModelBinding(str(m["name"]), str(m["version"]), int(m["embedding_size"]))


def _people(path: Path, header: dict[str, Any], keep_images: bool) -> tuple[list, int]:
    size = file_model(header).embedding_size
    people, dropped = [], 0
    for number, item in _read(path):
        if number == 1:
            continue
        try:
            name, metadata, rows = item["name"], item.get("metadata") or {}, item["templates"]
            if not isinstance(name, str) or not isinstance(rows, list):
                raise TypeError("a name must be a string and templates a list")
            templates = []
            for row in rows:
                vector = np.frombuffer(base64.b64decode(row["embedding"], validate=True), "<f4")
                if vector.shape[0] != size:
                    raise ValueError(f"an embedding of {vector.shape[0]} values, the model makes {size}")
                image = base64.b64decode(row["image"], validate=True) if row.get("image") else None
                if image is not None and not keep_images:
                    dropped += 1
                    image = None
                templates.append(
                    NewTemplate(
                        vector.astype(np.float32), str(row.get("source", "")), dict(row.get("quality") or {}), image
                    )
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise GalleryError(f"{path}:{number}: malformed person entry ({exc})") from None
        if not isinstance(metadata, dict):
            raise GalleryError(f"{path}:{number}: metadata must be a JSON object")
        people.append((name, metadata, templates))
    _check_complete(path, header, people)
    return people, dropped


def _check_complete(path: Path, header: dict[str, Any], people: list) -> None:
    """`GalleryError` when the file holds fewer or more people or templates than its header counts: an export
    cut short at a line's end (a copy or a transfer stopped) reads as a smaller gallery, and its import said
    nothing of the people left behind."""
    counted = {"people": len(people), "templates": sum(len(templates) for _, _, templates in people)}
    expected = {
        k: header.get(k) for k in counted if isinstance(header.get(k), int) and not isinstance(header.get(k), bool)
    }
    if any(counted[k] != v for k, v in expected.items()):
        said = ", ".join(f"{v} {k}" for k, v in expected.items())
        held = ", ".join(f"{counted[k]} {k}" for k in expected)
        raise GalleryError(
            f"{path}: incomplete or altered: its header counts {said}, it holds {held} (a copy cut short?); "
            "nothing imported"
        )


NOT_MATCHING = "matches none of the person's templates"


def _check_images(path: Path, people: list, model: ModelBinding, pipeline: Any = None) -> tuple[list, int]:
    """(people, images dropped): every face image the file carries (kept by the gallery) must show the face of
    its template: its largest face, embedded by the gallery's model, reaching the model's 1:1 threshold in force
    against the template, else `GalleryError` and nothing is imported. The import's gates read the templates
    only, and `Gallery.reembed` makes each template from its image: an image of another face than its template
    would become a template of someone the gates never saw. `pipeline`: the gallery's model (default: built
    from its name); images of a model that is not registered here cannot be checked and are not kept."""
    if not any(t.image is not None for _, _, templates in people for t in templates):
        return people, 0
    if pipeline is None:
        from ..embedding import model_names

        if model.name not in model_names():
            count = sum(t.image is not None for _, _, templates in people for t in templates)
            log.warning("%s: %d face image(s) not kept: model %s cannot check them here", path, count, model.name)
            return [(n, m, [replace(t, image=None) for t in ts]) for n, m, ts in people], count
        from ..pipeline import Pipeline

        pipeline = Pipeline(model=model.name)
    if ModelBinding.of(pipeline.encoder.info) != model:
        raise GalleryError(
            f"{path}: the face images cannot be checked: this siamface's {model.name} is another version"
        )
    from ..errors import ImageError
    from ..image import load_image

    threshold = Threshold(float(pipeline.threshold), "")
    for name, _, templates in people:
        for k, t in enumerate(templates, 1):
            if t.image is None:
                continue
            try:
                faces = pipeline.embed(load_image(t.image, name=f"{name!r}'s image {k}"))
            except ImageError as exc:
                raise GalleryError(
                    f"{path}: {name!r}: template {k}'s image: {exc.reason}; nothing was imported"
                ) from None
            similarity = float(np.asarray(t.embedding, np.float32) @ faces.embeddings[0]) if len(faces) else None
            if similarity is None or not threshold.accepts(similarity):
                shown = "no face" if similarity is None else f"similarity {similarity:.4f} < {threshold.value:.4f}"
                raise GalleryError(
                    f"{path}: {name!r}: template {k}'s image is not the face of its template ({shown}): it would "
                    "become the template at the next `gallery reembed`; nothing was imported"
                )
    return people, 0


def _clashes(store: Store, people: list, threshold: Threshold) -> list[tuple[str, str]]:
    """(new person, whom they match) for each person of an import who is not enrolled yet and whose
    templates match someone enrolled, or another new person of the import, at `threshold`."""
    known = set()
    for name, _, _ in people:
        try:
            store.person(name, metadata=False)
            known.add(name)
        except UnknownPersonError:
            pass
    _, _, owners, matrix = store.matrix()
    names = store.names(sorted({int(p) for p in owners})) if len(owners) else {}
    fresh = [(n, np.stack([t.embedding for t in ts])) for n, _, ts in people if n not in known and ts]
    found = []
    for i, (name, vectors) in enumerate(fresh):
        if len(matrix):
            scores = (vectors @ matrix.T).max(axis=0)
            best = int(np.argmax(scores))
            if threshold.accepts(float(scores[best])):
                found.append((name, names.get(int(owners[best]), str(owners[best]))))
                continue
        for other, theirs in fresh[i + 1 :]:
            if threshold.accepts(float((vectors @ theirs.T).max())):
                found.append((name, other))
                break
    return found


def _merge_duplicate(model: ModelBinding | None) -> float:
    from ..embedding import create_encoder, model_names

    if model is None or model.name not in model_names():
        return MERGE_DUPLICATE
    return create_encoder(model.name).info.duplicate


def import_gallery(
    store: Store,
    path: str | os.PathLike,
    *,
    merge: bool = False,
    match: Threshold | None = None,
    clash: Threshold | None = None,
    actor: str = "",
    pipeline: Any = None,
) -> ImportSummary:
    """Add every person of an export file to `store`, in one transaction (see the module's rules).
    `match`: with `merge`, a template for a person already enrolled must reach this 1:1 threshold against
    one of their templates (None: no such check, as ``--force``). `clash`: a face belongs to one person: a
    new person whose templates reach this (1:N) threshold against someone enrolled or another new person
    of the file stops the import, nothing added (None: no such check, as ``--force``). A face image the file
    carries is kept only when it shows the face of its template (`_check_images`, with `pipeline`: by default
    the gallery's own model), whatever `match` and `clash` say."""
    path = Path(path)
    header = read_header(path)
    store.model.check(file_model(header), store.location)
    people, dropped = _people(path, header, store.keep_images)
    people, unchecked = _check_images(path, people, store.model, pipeline)
    dropped += unchecked
    if clash is not None and people:
        found = _clashes(store, people, clash)
        if found:
            shown = "; ".join(f"{a!r} matches {b!r}" for a, b in found[:5]) + (" ..." if len(found) > 5 else "")
            raise GalleryError(
                f"{path}: {len(found)} new person(s) whose face is already enrolled under another name "
                f"(1:N threshold {clash.value:.4f}): {shown}. A face belongs to one person: nothing was "
                "imported (--force imports them anyway)"
            )

    duplicate = _merge_duplicate(store.model)

    def keep(existing: Sequence[Template], new: Sequence[NewTemplate]) -> list[str | None]:
        own = [np.asarray(t.embedding, np.float32) for t in existing]
        kept = list(own)
        verdicts: list[str | None] = []
        for t in new:
            e = np.asarray(t.embedding, np.float32)
            best_own = max((float(k @ e) for k in own), default=None)
            if match is not None and best_own is not None and not match.accepts(best_own):
                verdicts.append(f"{NOT_MATCHING} (best similarity {best_own:.4f} < threshold {match.value:.4f})")
            elif kept and max(float(k @ e) for k in kept) > duplicate:
                verdicts.append("near-duplicate of a template the person has")
            else:
                verdicts.append(None)
                kept.append(e)
        return verdicts

    results: list[AddResult] = store.add_people(people, merge=merge, keep=keep, actor=actor) if people else []
    added = sum(1 for r in results if r.created)
    merged = sum(1 for r in results if not r.created and any(i is not None for i in r.template_ids))
    templates = sum(sum(1 for i in r.template_ids if i is not None) for r in results)
    reasons = [why for r in results for why in r.skipped.values()]
    refused = sum(1 for why in reasons if why.startswith(NOT_MATCHING))
    return ImportSummary(str(path), added, merged, templates, len(reasons) - refused, dropped, refused)


def import_into(
    spec,
    path: str | os.PathLike,
    *,
    merge: bool = False,
    keep_images: bool = False,
    match: Threshold | None = None,
    clash: Threshold | None = None,
) -> tuple[ImportSummary, str, bool]:
    """`import_gallery` into the gallery `spec` (a file or a ``postgresql://`` URL), created when it does not
    exist, bound to the file's model (`keep_images`: keep the images the file carries). A gallery created
    here goes again when the import fails, unless another client used it meanwhile (it holds people or audit
    rows that are not the import's: those are never taken with it); a bad file creates none. Returns (summary,
    the gallery's location, whether it was created)."""
    header = read_header(path)  # a bad file creates no gallery
    create = not gallery_exists(spec)
    store = None
    unused = False
    try:
        store = open_store(spec, file_model(header) if create else None, create=create, keep_images=keep_images)
        with store:
            try:
                summary = import_gallery(store, path, merge=merge, match=match, clash=clash)
            except BaseException:
                unused = create and _unused(store)
                raise
    except BaseException:
        if create:
            _undo_creation(spec, store, unused)
        raise
    return summary, store.location, create


def _unused(store: Store) -> bool:
    """Whether a gallery this process created holds nothing yet: no person, no audit row (another client may
    have enrolled into it, or been audited on it, since it was created)."""
    try:
        stats = store.stats()
    except Exception as exc:  # noqa: BLE001 - not known to be unused: kept
        log.debug("%s: not read (%s)", store.location, exc)
        return False
    return stats["people"] == 0 and stats["audit_entries"] == 0


def _undo_creation(spec, store: Store | None, unused: bool) -> None:
    """Remove the gallery an import created and then failed to fill: when it is still `unused`, or (a file
    whose creation itself failed) still empty. A gallery another client wrote to is left, with a warning."""
    if is_database_url(spec):
        if store is None or not getattr(store, "created_now", False):
            return
    elif store is None:
        try:
            unused = os.stat(spec).st_size == 0
        except OSError:
            return
    if not unused:
        log.warning("%s: created for the import, kept: another client has written to it since", spec)
    elif is_database_url(spec):
        store.drop()
    else:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{spec}{suffix}")
            except OSError:
                pass


@dataclass(frozen=True)
class ImagesExport:
    dir: Path
    people: int
    images: int
    without_image: int  # templates that have no kept image

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "people": self.people, "images": self.images, "without_image": self.without_image}


def folder_name(name: str) -> str:
    """A person's name as one safe folder name (separators, control characters and leading dots replaced)."""
    safe = "".join("_" if c in '/\\:*?"<>|' or ord(c) < 32 else c for c in name).strip()
    return ("_" + safe[1:] if safe.startswith(".") else safe) or "_"


def _write_private(folder: int, name: str, data: bytes) -> None:
    """Write a new file only its owner may read (0600: a face image is biometric data) in the open `folder`,
    never through a link or over an existing file."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def private_folder(out: Path, *, empty: bool = True, what: str = "export-images") -> int:
    """An open descriptor of `out`, a folder only its owner may enter (0700) and, with `empty`, empty: made
    when it does not exist; an existing one must be a real folder (not a link) of this user, and is made 0700
    before it is checked empty (a folder others could write to may have been prepared for us). `ConfigError`
    otherwise. For every folder siamface writes face images into (`what` names the command in errors)."""
    if not out.exists() and not out.is_symlink():
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(out, 0o700)
        except FileExistsError:
            pass  # made meanwhile: checked below like any existing folder
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        why = "a link (links are not followed)" if out.is_symlink() else f"not a folder we can open ({exc.strerror})"
        raise ConfigError(f"{out}: {why}") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise ConfigError(f"{out}: belongs to another user; {what} writes only into a folder of its own")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)  # before looking inside: nobody else can add anything from now on
        if empty and os.listdir(fd):
            raise ConfigError(f"{out}: exists and is not an empty folder")
    except BaseException:
        os.close(fd)
        raise
    return fd


def export_images(spec, out: str | os.PathLike, *, person: str | None = None) -> ImagesExport:
    """Write every kept face image of the gallery `spec` (of `person` only, when given) as
    ``out/<person>/<template id>.png``: the folder-per-person layout ``siamface train`` reads. `out` must be
    new or an empty folder of this user's, not a link; it and its folders are made 0700 (an existing one is
    changed to 0700 first), its files 0600 (biometric data), all written through descriptors, never through
    a link."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ConfigError(f"{out}: " + ("a link (links are not followed)" if out.is_symlink() else "not a folder"))
    with open_store(spec) as store:
        templates = store.templates(person)
        if not templates:
            raise ConfigError("no templates" + (f" for {person!r}" if person else ""))
        missing = sum(not t.has_image for t in templates)
        if missing == len(templates):
            raise ConfigError(f"{store.location}: no kept images (the gallery was not created with --keep-images)")
        names = store.names(sorted({t.person_id for t in templates}))
        folders: dict[int, int] = {}
        used: set[str] = set()
        written = 0
        root = private_folder(out)
        try:
            for t in templates:
                if not t.has_image:
                    continue
                if t.person_id not in folders:
                    name = folder_name(names[t.person_id])
                    if name in used:
                        name = f"{name}-{t.person_id}"  # two names that map to one folder
                    used.add(name)
                    os.mkdir(name, 0o700, dir_fd=root)
                    folders[t.person_id] = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
                    os.fchmod(folders[t.person_id], 0o700)  # whatever the umask
                _write_private(folders[t.person_id], f"{t.id}.png", store.image(t.id))
                written += 1
        finally:
            for fd in (*folders.values(), root):
                os.close(fd)
    return ImagesExport(out, len(folders), written, missing)
