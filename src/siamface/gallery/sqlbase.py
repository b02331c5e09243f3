"""What both SQL stores (`SQLiteStore`, `PostgresStore`) do the same way: the writes (adding people and
templates, renaming, metadata, deletion with audit tombstones, the model-binding check) and the reads whose
SQL is common (generation, templates, the person row).

A store subclasses `SqlStore` and provides: ``PARAM`` (its driver's placeholder, ``?`` or ``%s``),
``_connect()``, ``_read()`` / ``_write()`` (transactions), ``close()``, ``_find``, ``_bump``, ``location``,
``model``, and the hooks `_insert_person`, `_insert_templates`, `_name_clashes` (and optionally
`_after_delete`). The SQL here is written with ``?`` placeholders and passed through `_q`.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ..errors import GalleryError, ModelMismatchError
from .names import MAX_NAME_LENGTH, InvalidNameError, check_name, lookup_form, skeleton  # noqa: F401 - also imported from here
from .store import (
    AddResult,
    AuditEntry,
    DamagedGalleryError,
    KeepFilter,
    ModelBinding,
    NewTemplate,
    Person,
    PersonExistsError,
    Template,
    UnknownPersonError,
    source_label,
)

log = logging.getLogger(__name__)

#: Bounds of a person's metadata and a template's quality figures (JSON objects): nesting levels (the object
#: itself is level 1) and size of their JSON text. Checked on the way in; rows deeper than this (written by
#: older code) are reported as damaged on the way out.
MAX_JSON_DEPTH = 8
MAX_JSON_BYTES = 64 * 1024
#: A stored template is L2-normalised: its length may differ from 1 by this much at most.
NORM_TOLERANCE = 0.01


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def binding_meta(location: str, model: ModelBinding | None, keep_images: bool) -> dict[str, str]:
    """The meta rows that bind a new gallery to ``model`` (an error when there is no model to bind)."""
    if model is None:
        raise GalleryError(f"{location}: gallery is not bound to a model yet; open it with the model to bind")
    return {
        "model_name": model.name,
        "model_version": model.version,
        "embedding_size": str(model.embedding_size),
        "keep_images": "1" if keep_images else "0",
        "created": _now(),
    }


def _blob(embedding: np.ndarray, size: int) -> bytes:
    vector = np.asarray(embedding, dtype="<f4").reshape(-1)
    if vector.shape[0] != size:
        raise GalleryError(f"template has {vector.shape[0]} dimensions; this gallery's model makes {size}")
    problem = _embedding_problem(vector.reshape(1, -1))[0]
    if problem:
        raise GalleryError(f"template embedding {problem}")
    return vector.tobytes()


def _embedding_problem(vectors: np.ndarray) -> list[str]:
    """Per row of (n, d) float32 embeddings: '' when sound, else what is wrong with it."""
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], vectors, 0), axis=1)
    return [
        ""
        if ok and abs(n - 1) <= NORM_TOLERANCE
        else "holds NaN or infinity"
        if not ok
        else f"is not of length 1 (L2 norm {n:.4g})"
        for ok, n in zip(finite, norms)
    ]


def json_depth(value: Any) -> int:
    """Nesting levels of a JSON-like value (a scalar is 0, ``{}`` is 1), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:  # deep enough to refuse: stop counting
            break
        stack.extend((c, level + 1) for c in children)
    return deepest


def json_object(value: Any, what: str = "metadata") -> str:
    """`value` as the JSON text a row keeps, or `GalleryError` unless it is a JSON object within the bounds
    (`MAX_JSON_DEPTH` levels, `MAX_JSON_BYTES`) without NaN or infinity."""
    if not isinstance(value, dict):
        raise GalleryError(f"{what} must be a JSON object, not {type(value).__name__}")
    if json_depth(value) > MAX_JSON_DEPTH:
        raise GalleryError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except ValueError:
        raise GalleryError(f"{what} holds NaN or infinity, which JSON cannot carry") from None
    except TypeError as exc:
        raise GalleryError(f"{what} is not JSON: {exc}") from None
    if len(text.encode("utf-8")) > MAX_JSON_BYTES:
        raise GalleryError(
            f"{what} is over the {MAX_JSON_BYTES // 1024} KiB limit ({len(text.encode('utf-8'))} bytes as JSON)"
        )
    return text


def read_json_object(text: str, where: str) -> dict[str, Any]:
    """A row's metadata or quality text as a dict, or `DamagedGalleryError` saying `where` and why."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise DamagedGalleryError(f"{where} is damaged: JSON nested too deeply to read") from None
    except (TypeError, ValueError):
        raise DamagedGalleryError(f"{where} is damaged: not valid JSON") from None
    if not isinstance(value, dict):
        raise DamagedGalleryError(f"{where} is damaged: not a JSON object")
    if json_depth(value) > MAX_JSON_DEPTH:
        raise DamagedGalleryError(f"{where} is damaged: nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def matrix_from_rows(generation: int, rows, d: int, damaged=None) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """`Store.matrix` from (template id, person id, embedding bytes) rows in person order. A row of the wrong
    length, with NaN/infinity or not of length 1 is a `DamagedGalleryError` (no search runs on a damaged
    gallery), raised by ``damaged(problems)`` when given (problems: (template id, person id, what) each)."""
    if not rows:
        return generation, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, d), np.float32)
    ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    people = np.fromiter((r[1] for r in rows), np.int64, len(rows))
    problems = [
        (int(r[0]), int(r[1]), f"{len(r[2])} bytes, not the {4 * d} of a {d}-d template")
        for r in rows
        if len(r[2]) != 4 * d
    ]
    if not problems:
        matrix = np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(len(rows), d).astype(np.float32)
        problems = [(int(ids[i]), int(people[i]), p) for i, p in enumerate(_embedding_problem(matrix)) if p]
    if problems:
        if damaged is not None:
            damaged(problems)
        raise DamagedGalleryError(
            f"{len(problems)} damaged template(s), e.g. template {problems[0][0]}: {problems[0][2]}"
        )
    return generation, ids, people, matrix


class SqlStore:
    PARAM = "?"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reads both stores answer the same way -----------------------------------------------------------
    def generation(self) -> int:
        row = self._connect().execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0])

    def _person(self, row, metadata: bool = True) -> Person:
        return Person(
            id=int(row[0]),
            name=row[1],
            created=row[3],
            n_templates=int(row[4]),
            metadata=read_json_object(row[2], f"{self.location}: the metadata of {row[1]!r}") if metadata else {},
        )

    def _damaged(self, problems: Sequence[tuple[int, int, str]]) -> None:
        """Raise `DamagedGalleryError` naming the damaged templates (id, person id, what) and their people."""
        names = self.names([p for _, p, _ in problems])
        shown = "; ".join(
            f"template {t} of {names.get(p, f'person {p}')!r} is damaged ({what})" for t, p, what in problems[:5]
        ) + (" ..." if len(problems) > 5 else "")
        people = sorted({names.get(p, str(p)) for _, p, _ in problems})
        raise DamagedGalleryError(
            f"{self.location}: {shown}. No decision is made from a damaged gallery: remove "
            + (f"{people[0]!r} (`siamface people remove {people[0]}`)" if len(people) == 1 else "those people")
            + " and enroll again, or restore a backup"
        )

    def _matrix(self, generation: int, rows) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        return matrix_from_rows(generation, rows, self.model.embedding_size, self._damaged)

    _PERSON_SELECT = (
        "SELECT p.id, p.name, p.metadata, p.created, "
        "(SELECT count(*) FROM templates t WHERE t.person_id = p.id) FROM people p"
    )

    def _templates(self, db, person_id: int | None, embeddings: bool) -> list[Template]:
        columns = "id, person_id, model, model_version, source, quality, created, image IS NOT NULL" + (
            ", embedding" if embeddings else ""
        )
        if person_id is None:
            rows = db.execute(f"SELECT {columns} FROM templates ORDER BY person_id, id").fetchall()
        else:
            rows = db.execute(
                self._q(f"SELECT {columns} FROM templates WHERE person_id = ? ORDER BY id"), (person_id,)
            ).fetchall()
        if embeddings:
            rows = [(*r[:8], self._raw(r[8])) for r in rows]
            self._matrix(0, [(r[0], r[1], r[8]) for r in rows])  # raises on a damaged template

        def quality(r) -> dict[str, Any]:
            try:
                return read_json_object(r[5], "")
            except DamagedGalleryError as exc:
                who = self.names([int(r[1])]).get(int(r[1]), f"person {r[1]}")
                raise DamagedGalleryError(f"{self.location}: the quality of template {r[0]} of {who!r}{exc}") from None

        return [
            Template(
                id=int(r[0]),
                person_id=int(r[1]),
                model=r[2],
                model_version=r[3],
                source=source_label(r[4]),
                quality=quality(r),
                created=r[6],
                has_image=bool(r[7]),
                embedding=np.frombuffer(r[8], "<f4").astype(np.float32) if embeddings else None,
            )
            for r in rows
        ]

    def person_matrix(self, person_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(template ids, embeddings (t, d)) of one person, read alone and checked as `matrix` checks them."""
        with self._read() as db:
            rows = db.execute(
                self._q("SELECT id, person_id, embedding FROM templates WHERE person_id = ? ORDER BY id"),
                (int(person_id),),
            ).fetchall()
        _, ids, _, matrix = self._matrix(0, [(r[0], r[1], self._raw(r[2])) for r in rows])
        return ids, matrix

    def templates(self, name: str | None = None, *, embeddings: bool = False) -> list[Template]:
        with self._read() as db:
            person_id = None
            if name is not None:
                found = self._find_row(db, name)
                if found is None:
                    raise UnknownPersonError(name, self.location)
                person_id = found.id
            return self._templates(db, person_id, embeddings)

    @staticmethod
    def _raw(value) -> bytes:
        """A stored embedding as little-endian float32 bytes (SQLite keeps them so; PostgreSQL overrides)."""
        return bytes(value)

    def _q(self, sql: str) -> str:
        """`sql` with this driver's placeholder (the statements here contain no other question mark)."""
        return sql if self.PARAM == "?" else sql.replace("?", self.PARAM)

    def audit(self, limit: int | None = None, person: str | None = None) -> list[AuditEntry]:
        sql = (
            "SELECT a.id, a.time, a.kind, c.name, r.name, a.score, a.threshold, a.accepted, a.rule, a.model, "
            "a.claimed_tombstone, a.returned_tombstone "
            "FROM audit a LEFT JOIN people c ON c.id = a.claimed_id LEFT JOIN people r ON r.id = a.returned_id"
        )
        params: list[Any] = []
        with self._read() as db:
            if person is not None:
                found = self._find_row(db, person)
                if found is None:
                    raise UnknownPersonError(person, self.location)
                sql += " WHERE a.claimed_id = ? OR a.returned_id = ?"
                params += [found.id, found.id]
            sql += " ORDER BY a.id DESC"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(int(limit))
            rows = db.execute(self._q(sql), params).fetchall()
        return [
            AuditEntry(
                id=int(r[0]),
                time=r[1],
                kind=r[2],
                claimed=r[3],
                returned=r[4],
                score=r[5],
                threshold=r[6],
                accepted=bool(r[7]),
                rule=r[8],
                model=r[9],
                claimed_tombstone=r[10],
                returned_tombstone=r[11],
            )
            for r in rows
        ]

    def stats(self) -> dict[str, Any]:
        with self._read() as db:
            people = db.execute("SELECT count(*) FROM people").fetchone()[0]
            templates = db.execute("SELECT count(*) FROM templates").fetchone()[0]
            images = db.execute("SELECT count(*) FROM templates WHERE image IS NOT NULL").fetchone()[0]
            audit = db.execute("SELECT count(*) FROM audit").fetchone()[0]
            size_key, size = self._storage_size(db)
        return {
            "gallery": self.location,
            "model": self.model.name,
            "model_version": self.model.version,
            "embedding_size": self.model.embedding_size,
            "keep_images": self.keep_images,
            "created": self.created,
            "schema_version": self.SCHEMA_VERSION,
            "people": people,
            "templates": templates,
            "kept_images": images,
            "audit_entries": audit,
            size_key: size,
        }

    def _find_row(self, db, name: str) -> Person | None:
        """`_find` without reading the metadata (left empty): what changes that do not need it use, so that
        a person whose metadata is damaged can still be renamed, given new metadata or removed."""
        return self._find(db, name, metadata=False)

    # -- hooks -----------------------------------------------------------------------------------------
    def _insert_person(self, db, name: str, metadata_json: str, now: str) -> int:
        raise NotImplementedError

    def _insert_templates(self, db, person_id: int, templates: Sequence[NewTemplate], now: str) -> list[int]:
        """Insert the rows `_template_row` makes; return their ids in order."""
        raise NotImplementedError

    def _name_clashes(self, db, names: Sequence[str]) -> list[str]:
        """The names (as reported to the user) of `names` already in the gallery."""
        raise NotImplementedError

    def _storage_size(self, db) -> tuple[str, int]:
        """(key, bytes) of the storage the gallery takes, for `stats`."""
        raise NotImplementedError

    def _after_delete(self) -> None:
        """Called after a deletion's transaction committed."""

    # -- shared ----------------------------------------------------------------------------------------
    #: one row of the audit log per decision (the driver's placeholders through `_q`)
    AUDIT_INSERT = (
        "INSERT INTO audit (time, kind, claimed_id, returned_id, score, threshold, accepted, rule, model) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    @staticmethod
    def _audit_rows(records) -> list[tuple]:
        """The values of `AUDIT_INSERT` for each `AuditRecord`, all stamped with the same time."""
        now = _now()
        return [
            (
                now,
                r.kind,
                r.claimed,
                r.returned,
                None if r.score is None else float(r.score),
                float(r.threshold),
                bool(r.accepted),
                r.rule,
                r.model,
            )
            for r in records
        ]

    def _template_row(self, person_id: int, template: NewTemplate, now: str, encode) -> tuple:
        """The values of a new row of ``templates`` (person_id, embedding, model, model_version, source,
        quality, created, image), the embedding written by the backend's `encode(vector, size)`."""
        if template.image is not None and not self.keep_images:
            raise GalleryError(f"{self.location} was created without keep_images: images are not stored")
        return (
            person_id,
            encode(template.embedding, self.model.embedding_size),
            self.model.name,
            self.model.version,
            source_label(template.source),
            json_object(template.quality, "a template's quality"),
            now,
            template.image,
        )

    def add_templates(
        self,
        name: str,
        templates: Sequence[NewTemplate],
        *,
        metadata: dict[str, Any] | None = None,
        create: bool = True,
        keep: KeepFilter | None = None,
        new: bool = False,
    ) -> AddResult:
        if new and not create:
            raise ValueError("a person cannot be both new and required to exist")
        name = check_name(name)
        templates = list(templates)
        if metadata is not None:  # refuse bad input before taking the write lock
            json_object(metadata)
        for t in templates:
            _blob(t.embedding, self.model.embedding_size)
            json_object(t.quality, "a template's quality")
        with self._write() as db:
            self._check_bound(db)
            return self._add(db, name, templates, metadata, create, keep, new)

    def add_people(
        self,
        people: Sequence[tuple[str, dict[str, Any], Sequence[NewTemplate]]],
        *,
        merge: bool = False,
        keep: KeepFilter | None = None,
    ) -> list[AddResult]:
        """Add several people (name, metadata, templates) in ONE transaction (an import: all or nothing).
        A name already in the gallery is an error unless `merge`, which adds to that person (metadata
        merged); `keep` filters templates as in `add_templates`."""
        people = [(check_name(n), m or {}, list(ts)) for n, m, ts in people]
        for n, metadata, templates in people:
            json_object(metadata, f"the metadata of {n!r}")
            for t in templates:
                _blob(t.embedding, self.model.embedding_size)
                json_object(t.quality, "a template's quality")
        seen: set[str] = set()
        for n, _, _ in people:
            if n.lower() in seen:
                raise GalleryError(f"{n!r} appears twice in the people to add")
            seen.add(n.lower())
        with self._write() as db:
            self._check_bound(db)
            if not merge:
                clashes = self._name_clashes(db, [n for n, _, _ in people])
                if clashes:
                    shown = ", ".join(repr(c) for c in clashes[:10]) + (" ..." if len(clashes) > 10 else "")
                    raise GalleryError(
                        f"{len(clashes)} name(s) already in {self.location}: {shown}; nothing "
                        "was added (merge them into the existing people with --merge)"
                    )
            skeletons = self._skeletons(db)
            return [self._add(db, n, ts, m, True, keep, skeletons=skeletons) for n, m, ts in people]

    def _skeletons(self, db) -> dict[str, tuple[int, str]]:
        """skeleton -> (id, name) of every person (`siamface.gallery.names.skeleton`)."""
        return {skeleton(name): (int(pid), name) for pid, name in db.execute("SELECT id, name FROM people")}

    def _refuse_lookalike(self, name: str, skeletons: dict[str, tuple[int, str]], person_id: int | None = None):
        """`InvalidNameError` when `name` could be taken for another person's name (same skeleton)."""
        found = skeletons.get(skeleton(name))
        if found is not None and found[0] != person_id:
            raise InvalidNameError(
                f"invalid name {name!r}: it could be taken for {found[1]!r}, already enrolled (the same letters "
                "to the eye); choose a name that cannot"
            )

    def _add(
        self,
        db,
        name: str,
        templates: list[NewTemplate],
        metadata: dict[str, Any] | None,
        create: bool,
        keep: KeepFilter | None,
        new: bool = False,
        skeletons: dict[str, tuple[int, str]] | None = None,
    ) -> AddResult:
        """The body of an addition, inside the caller's write transaction: the name is looked up here, so
        that "must be new" and "must exist" cannot race with another writer. A new person's name must not
        look like another's (`skeletons`: of everyone, read here when not given; the new name is added)."""
        found = self._find(db, name)
        if found is None and not create:
            raise UnknownPersonError(name, self.location)
        if found is not None and new:
            raise PersonExistsError(found.name, self.location)
        existing = self._templates(db, found.id, True) if found is not None else []
        verdicts = list(keep(existing, templates)) if keep is not None else [None] * len(templates)
        if len(verdicts) != len(templates):
            raise ValueError("keep filter must return one verdict per template")
        skipped = {i: reason for i, reason in enumerate(verdicts) if reason is not None}
        if len(skipped) == len(templates):
            return AddResult(found, False, (None,) * len(templates), skipped)
        now = _now()
        created = found is None
        if created:
            skeletons = skeletons if skeletons is not None else self._skeletons(db)
            self._refuse_lookalike(name, skeletons)
            person_id = self._insert_person(db, name, json_object(metadata or {}), now)
            skeletons[skeleton(name)] = (person_id, name)
        else:
            person_id = found.id
            if metadata:
                merged = {**found.metadata, **metadata}
                db.execute(self._q("UPDATE people SET metadata = ? WHERE id = ?"), (json_object(merged), person_id))
        kept = [t for i, t in enumerate(templates) if i not in skipped]
        new_ids = iter(self._insert_templates(db, person_id, kept, now))
        ids = tuple(None if i in skipped else next(new_ids) for i in range(len(templates)))
        self._bump(db)
        return AddResult(self._find(db, name), created, ids, skipped)

    def _check_bound(self, db) -> None:
        """The gallery's model may have been changed by another process (re-embedding) since we opened it."""
        meta = dict(
            db.execute(
                "SELECT key, value FROM meta WHERE key IN ('model_name', 'model_version', 'embedding_size')"
            ).fetchall()
        )
        current = ModelBinding(meta["model_name"], meta["model_version"], int(meta["embedding_size"]))
        if current != self.model:
            raise ModelMismatchError(
                f"{self.location} was re-embedded with model {current.describe()} since "
                f"it was opened (with {self.model.describe()}); open it again"
            )

    def rename(self, old: str, new: str) -> Person:
        new = check_name(new)
        with self._write() as db:
            found = self._find_row(db, old)
            if found is None:
                raise UnknownPersonError(old, self.location)
            clash = self._find_row(db, new)
            if clash is not None and clash.id != found.id:
                raise GalleryError(f"cannot rename {found.name!r} to {new!r}: that name is taken")
            self._refuse_lookalike(new, self._skeletons(db), found.id)
            db.execute(self._q("UPDATE people SET name = ? WHERE id = ?"), (new, found.id))
            self._bump(db)
            return self._find(db, new)

    def set_metadata(self, name: str, metadata: dict[str, Any]) -> Person:
        text = json_object(metadata)
        with self._write() as db:
            found = self._find_row(db, name)
            if found is None:
                raise UnknownPersonError(name, self.location)
            db.execute(self._q("UPDATE people SET metadata = ? WHERE id = ?"), (text, found.id))
            self._bump(db)
            return self._find(db, name)

    def delete(self, name: str) -> int:
        with self._write() as db:
            found = self._find_row(db, name)  # not its metadata: a damaged person can be removed
            if found is None:
                raise UnknownPersonError(name, self.location)
            tombstone = secrets.token_hex(8)  # opaque: derived from nothing, stored nowhere else
            for column in ("claimed", "returned"):
                db.execute(
                    self._q(f"UPDATE audit SET {column}_tombstone = ?, {column}_id = NULL WHERE {column}_id = ?"),
                    (tombstone, found.id),
                )
            db.execute(self._q("DELETE FROM people WHERE id = ?"), (found.id,))  # cascades to templates, images
            self._bump(db)
        self._after_delete()
        log.info("%s: deleted %r and %d template(s)", self.location, found.name, found.n_templates)
        return found.n_templates
