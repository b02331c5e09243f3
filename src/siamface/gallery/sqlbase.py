"""What both SQL stores (`SQLiteStore`, `PostgresStore`) do the same way: the writes (adding people and
templates, renaming, metadata, deletion, the model-binding check), the audit log (a hash chain, each change
audited in its own transaction) and the reads whose SQL is common (generation, templates, the person row).

The audit log (schema version 4): each row keeps the person it is about as the person's opaque reference
(``people.ref``, 16 random hex digits, never reused, not derived from anything), so that no row changes when
the person is removed and nothing links the row to them afterwards; no foreign key ties the audit to
``people`` (a decision logged just after its person was removed is still written). Each row stores
``prev_hash`` (the hash of the row before it) and ``hash`` = SHA-256(prev_hash, newline, the row's content as
canonical JSON: `audit_content`); the hash of the last row is kept in ``meta.audit_head``. `verify_audit`
recomputes the chain: an edited row, a removed or reordered one, or removed last rows are found, unless
whoever edited the database also recomputed every hash after the edit and the head — which is why
``siamface gallery audit --verify`` prints the head, to be noted elsewhere and compared later.

A store subclasses `SqlStore` and provides: ``PARAM`` (its driver's placeholder, ``?`` or ``%s``),
``_connect()``, ``_read()`` / ``_write()`` (transactions), ``close()``, ``_find``, ``_bump``, ``location``,
``model``, and the hooks `_insert_person`, `_insert_templates`, `_name_clashes` (and optionally
`_after_delete`). The SQL here is written with ``?`` placeholders and passed through `_q`.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ..errors import GalleryError, UnboundGalleryError
from .names import (  # noqa: F401 - also imported from here
    MAX_NAME_LENGTH,
    InvalidNameError,
    check_name,
    lookup_form,
    skeleton,
    skeleton_rule,
)
from .store import (
    AUDIT_KEPT_DAYS,
    CHANGES,
    DECISIONS,
    UNENROLLED,
    AddResult,
    AuditCheck,
    AuditEntry,
    DamagedGalleryError,
    GalleryReembeddedError,
    KeepFilter,
    ModelBinding,
    NewTemplate,
    Person,
    PersonExistsError,
    StaleRebindError,
    Template,
    UnknownPersonError,
    source_label,
)

log = logging.getLogger(__name__)
#: The meta row of the secret that keys the audit references of names nobody has (`unenrolled_ref`).
CLAIM_SECRET = "claim_secret"

#: Bounds of a person's metadata and a template's quality figures (JSON objects): nesting levels (the object
#: itself is level 1) and size of their JSON text. Checked on the way in; rows deeper than this (written by
#: older code) are reported as damaged on the way out.
MAX_JSON_DEPTH = 8
MAX_JSON_BYTES = 64 * 1024
#: A stored template is L2-normalised: its length may differ from 1 by this much at most.
NORM_TOLERANCE = 0.01


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _detail(detail: dict[str, Any], gone: bool) -> str:
    """A decision's audit detail as stored: its flags, and ``person_removed`` when a person it names is gone."""
    flags = {**detail, "person_removed": True} if gone else dict(detail)
    return json.dumps(flags, sort_keys=True) if flags else ""


#: The ``prev_hash`` of the first audit row.
GENESIS = "0" * 64


def local_actor() -> str:
    """Who a change or decision is audited as when no API key made it: ``cli:<OS user>``, the name of the
    process's user id (not $LOGNAME or $USER, which whoever runs the command sets as they like)."""
    import os

    try:
        import pwd
    except ImportError:  # Windows: no user ids
        try:
            return f"cli:{getpass.getuser()}"
        except (KeyError, OSError):
            return "cli:?"
    try:
        return f"cli:{pwd.getpwuid(os.getuid()).pw_name}"
    except KeyError:  # no name for this uid
        return f"cli:uid-{os.getuid()}"


def new_ref() -> str:
    """A person's audit reference: random, derived from nothing."""
    return secrets.token_hex(8)


def audit_content(row: Sequence[Any]) -> str:
    """The canonical text of an audit row's content (time, kind, claimed_ref, returned_ref, score,
    threshold, accepted, rule, model, actor, detail), as both backends read it back."""
    time, kind, claimed, returned, score, threshold, accepted, rule, model, actor, detail = row
    return json.dumps(
        [
            str(time),
            str(kind),
            claimed,
            returned,
            None if score is None else float(score),
            None if threshold is None else float(threshold),
            bool(accepted),
            str(rule),
            str(model),
            str(actor),
            str(detail),
        ],
        separators=(",", ":"),
        ensure_ascii=True,
    )


def chain_hash(prev: str, row: Sequence[Any]) -> str:
    return hashlib.sha256(f"{prev}\n{audit_content(row)}".encode("ascii")).hexdigest()


def _pruned_base(detail: str | None) -> str | None:
    """The chain's base an ``audit-prune`` row's detail recorded (None when unreadable)."""
    try:
        base = json.loads(detail or "{}").get("base")
    except (ValueError, AttributeError):
        return None
    return base if isinstance(base, str) else None


def chain_rows(db, q, rows) -> str:
    """Chain `rows` ((id, content...) in id order, written before the chain existed) from the start: set
    each row's prev_hash and hash, return the head. Used by the schema migrations to version 4."""
    prev = GENESIS
    for r in rows:
        digest = chain_hash(prev, r[1:])
        db.execute(q("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?"), (prev, digest, r[0]))
        prev = digest
    return prev


#: The columns of an audit row's content, in `audit_content`'s order.
AUDIT_COLUMNS = "time, kind, claimed_ref, returned_ref, score, threshold, accepted, rule, model, actor, detail"


def binding_meta(location: str, model: ModelBinding | None, keep_images: bool) -> dict[str, str]:
    """The meta rows that bind a new gallery to ``model`` (an error when there is no model to bind)."""
    if model is None:
        raise UnboundGalleryError(f"{location}: gallery is not bound to a model yet; open it with the model to bind")
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
    problem = embedding_problems(vector.reshape(1, -1))[0]
    if problem:
        raise GalleryError(f"template embedding {problem}")
    return vector.tobytes()


def embedding_problems(vectors: np.ndarray) -> list[str]:
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
        if isinstance(r[2], bytes)
        else (int(r[0]), int(r[1]), f"stored as {type(r[2]).__name__}, not as the bytes of a template")
        for r in rows
        if not isinstance(r[2], bytes) or len(r[2]) != 4 * d
    ]
    if not problems:
        matrix = np.frombuffer(b"".join(r[2] for r in rows), "<f4").reshape(len(rows), d).astype(np.float32)
        problems = [(int(ids[i]), int(people[i]), p) for i, p in enumerate(embedding_problems(matrix)) if p]
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
            ref=row[5] or "",
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
        "(SELECT count(*) FROM templates t WHERE t.person_id = p.id), p.ref FROM people p"
    )

    def _templates(self, db, person_id: int | None, embeddings: bool, after: int | None = None) -> list[Template]:
        """The templates of one person (all when `person_id` is None), or those whose id is above `after`."""
        columns = "id, person_id, model, model_version, source, quality, created, image IS NOT NULL" + (
            ", embedding" if embeddings else ""
        )
        if after is not None:
            rows = db.execute(self._q(f"SELECT {columns} FROM templates WHERE id > ? ORDER BY id"), (after,)).fetchall()
        elif person_id is None:
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

    def last_template_id(self) -> int:
        """The highest template id now (0 when none): templates are added one writer at a time, so those
        added after this call have higher ids (see `add_templates`'s `since`)."""
        with self._read() as db:
            return int(db.execute("SELECT coalesce(max(id), 0) FROM templates").fetchone()[0])

    def provisional_templates(self, template_ids: Collection[int]) -> set[int]:
        """Those of `template_ids` whose quality says ``provisional`` (added by a key below admin)."""
        ids = sorted({int(i) for i in template_ids})
        if not ids:
            return set()
        marks = ", ".join("?" * len(ids))
        with self._read() as db:
            rows = db.execute(self._q(f"SELECT id, quality FROM templates WHERE id IN ({marks})"), ids).fetchall()
        return {int(i) for i, quality in rows if '"provisional"' in quality and json.loads(quality).get("provisional")}

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
        """A stored embedding as little-endian float32 bytes (SQLite keeps them so; PostgreSQL overrides); a value
        of another type (text, a number: a row siamface did not write) as it is, for `matrix_from_rows` to report."""
        return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value

    def _q(self, sql: str) -> str:
        """`sql` with this driver's placeholder (the statements here contain no other question mark)."""
        return sql if self.PARAM == "?" else sql.replace("?", self.PARAM)

    def audit(self, limit: int | None = None, person: str | None = None) -> list[AuditEntry]:
        sql = (
            "SELECT a.id, a.time, a.kind, c.name, r.name, a.score, a.threshold, a.accepted, a.rule, a.model, "
            "a.claimed_ref, a.returned_ref, a.actor, a.detail "
            "FROM audit a LEFT JOIN people c ON c.ref = a.claimed_ref LEFT JOIN people r ON r.ref = a.returned_ref"
        )
        params: list[Any] = []
        with self._read() as db:
            if person is not None:
                found = self._find_row(db, person)
                if found is None:
                    raise UnknownPersonError(person, self.location)
                sql += " WHERE a.claimed_ref = ? OR a.returned_ref = ?"
                params += [found.ref, found.ref]
            sql += " ORDER BY a.id DESC"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(int(limit))
            rows = db.execute(self._q(sql), params).fetchall()

        def detail(text: str) -> dict[str, Any]:
            try:
                value = json.loads(text) if text else {}
            except ValueError:
                return {"unreadable": text[:200]}
            return value if isinstance(value, dict) else {"value": value}

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
                claimed_ref=r[10],
                returned_ref=r[11],
                actor=r[12] or "",
                detail=detail(r[13]),
            )
            for r in rows
        ]

    def unenrolled_ref(self, name: str) -> str:
        """The audit reference (and lock-out key) of a claim of `name` while nobody has it: `UNENROLLED` + an
        HMAC-SHA-256 of the name as this store tells names apart (`name_key`: the claims that would name one
        person share it), keyed by a secret the gallery keeps (`_claim_secret`), so that whoever reads the audit
        without the gallery (an export, a copy) cannot test names against it, while every process that opens the
        gallery computes the same reference (one lock-out across servers and restarts)."""
        digest = hmac.new(self._claim_secret(), self.name_key(name).encode(), hashlib.sha256).hexdigest()
        return UNENROLLED + digest[:24]

    def _claim_secret(self) -> bytes:
        """The gallery's secret for `unenrolled_ref` (meta ``claim_secret``): made once, by whichever process
        needs it first, inside a write transaction that keeps the row already there (two servers racing read
        back the one stored). A read-only gallery without one (which audits nothing) gets one for this process."""
        known = getattr(self, "_claim_key", None)
        if known is not None:
            return known
        select = self._q("SELECT value FROM meta WHERE key = ?")
        with self._read() as db:
            row = db.execute(select, (CLAIM_SECRET,)).fetchone()
        if row is None and self.read_only:
            row = (secrets.token_hex(32),)
        elif row is None:
            with self._write() as db:
                db.execute(
                    self._q("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"),
                    (CLAIM_SECRET, secrets.token_hex(32)),
                )
                row = db.execute(select, (CLAIM_SECRET,)).fetchone()
        self._claim_key = bytes.fromhex(row[0])
        return self._claim_key

    def recent_denials(self, person_id: int | str, since: str, limit: int = 1000) -> list[str]:
        """When each denied claim verification of the person was audited (ISO, UTC, oldest first): those at
        or after `since` and after the person's last granted one (at most the `limit` newest), but for those
        whose detail says ``counted`` (a claim through a liveness session whose failure has its own row). Read
        through the index on ``audit.claimed_ref``: the cost grows with the person's own audit rows, not the
        audit's. A string `person_id`: a name nobody has, by its lock-out key (see `AuditRecord`)."""
        if isinstance(person_id, str):
            ref, sql = person_id, "SELECT a.time, a.accepted, a.detail FROM audit a WHERE a.claimed_ref = ? "
        else:
            ref = int(person_id)
            sql = "SELECT a.time, a.accepted, a.detail FROM audit a JOIN people p ON p.ref = a.claimed_ref WHERE p.id = ? "
        with self._read() as db:
            rows = db.execute(
                self._q(sql + "AND a.kind = 'verify' AND a.time >= ? ORDER BY a.id DESC LIMIT ?"),
                (ref, str(since), int(limit)),
            ).fetchall()
        denied = []
        for time, accepted, detail in rows:
            if accepted:
                break
            if not _counted(detail):
                denied.append(str(time))
        return denied[::-1]

    def verify_audit(self) -> AuditCheck:
        """Recompute the audit's hash chain in id order (see the module's docstring), from the base the last
        ``audit-prune`` row recorded (`prune_audit`): a base no prune vouches for is a problem."""
        problems: list[tuple[int | None, str]] = []
        count, vouched = 0, None
        with self._read() as db:
            head = db.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
            base = db.execute("SELECT value FROM meta WHERE key = 'audit_base'").fetchone()
            prev = base[0] if base is not None else GENESIS  # the last row pruned (`prune_audit`)
            rows = db.execute(f"SELECT id, prev_hash, hash, {AUDIT_COLUMNS} FROM audit ORDER BY id").fetchall()
        for r in rows:
            count += 1
            row_id, stored_prev, stored = int(r[0]), r[1], r[2]
            if stored_prev != prev:
                problems.append(
                    (row_id, "does not follow the row before it: a row was removed or inserted before it, or reordered")
                )
            if chain_hash(stored_prev or "", r[3:]) != stored:
                problems.append((row_id, "its content does not match its hash: the row was edited"))
            prev = stored or ""
            if r[4] == "audit-prune":
                vouched = _pruned_base(r[13])
        if base is not None and vouched != base[0]:
            problems.insert(
                0,
                (
                    None,
                    "the chain starts after rows no audited prune removed (meta.audit_base is not the base the "
                    "last audit-prune row recorded): the first row(s) were removed",
                ),
            )
        if head is None:
            problems.append((None, "the gallery keeps no audit head (meta.audit_head is missing)"))
        elif head[0] != prev:
            problems.append((None, "the last row is not the recorded head: the last row(s) were removed"))
        return AuditCheck(count, prev, tuple(problems))

    def prune_audit(self, days: float, *, actor: str = "") -> dict[str, Any]:
        """Remove the audit rows older than `days` (see `Store.prune_audit`), in one write transaction."""
        if not AUDIT_KEPT_DAYS <= days < float("inf"):  # NaN too
            raise ValueError(
                f"audit rows are kept at least {AUDIT_KEPT_DAYS:g} day (the lock-outs read them), got {days}"
            )
        now = datetime.now(UTC)
        earliest = datetime(1, 1, 1, tzinfo=UTC)  # more days than since then: nothing is older
        cutoff = (now - timedelta(days=days) if days < (now - earliest).days else earliest).isoformat(
            timespec="milliseconds"
        )
        with self._write() as db:
            kept = db.execute(self._q("SELECT min(id) FROM audit WHERE time >= ?"), (cutoff,)).fetchone()[0]
            if kept is None:
                row = db.execute("SELECT count(*), max(id) FROM audit").fetchone()
            else:
                row = db.execute(self._q("SELECT count(*), max(id) FROM audit WHERE id < ?"), (int(kept),)).fetchone()
            removed, last = int(row[0]), row[1]
            if not removed:
                return {"removed": 0, "before": cutoff, "base": None}
            base = db.execute(self._q("SELECT hash FROM audit WHERE id = ?"), (int(last),)).fetchone()[0]
            db.execute(self._q("DELETE FROM audit WHERE id <= ?"), (int(last),))
            self._set_meta(db, "audit_base", base)
            self._audit_change(db, "audit-prune", None, actor, removed=removed, before=cutoff, base=base)
        self._after_prune()
        return {"removed": removed, "before": cutoff, "base": base}

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
            "schema_version": self.schema_version(),  # a read-only gallery may be read unmigrated
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
        """Insert a person (their skeleton with them, `skeleton`); return their id."""
        raise NotImplementedError

    def _write_skeletons(self, db, changed: Sequence[tuple[str | None, int]]) -> None:
        """Write each (skeleton, person id) of `changed`."""
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

    def _before_delete(self, db) -> None:
        """Called inside a deletion's transaction, before the person's rows go."""

    def _after_delete(self) -> None:
        """Called after a deletion's transaction committed."""

    def _after_prune(self) -> None:
        """Called after `prune_audit` removed rows (committed): where their bytes may survive, remove them."""

    # -- shared ----------------------------------------------------------------------------------------
    def _set_meta(self, db, key: str, value: str) -> None:
        """Write a meta row, inside the caller's write transaction (inserted, or its value replaced)."""
        db.execute(
            self._q(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            (key, value),
        )

    def _refs(self, db, person_ids) -> dict[int, str]:
        """The audit references of the people with these ids (those still enrolled)."""
        ids = sorted({int(i) for i in person_ids if i is not None})
        out: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(
                (int(i), r)
                for i, r in db.execute(self._q(f"SELECT id, ref FROM people WHERE id IN ({marks})"), chunk).fetchall()
            )
        return out

    def _append_audit(self, db, rows: Sequence[tuple]) -> None:
        """Append rows (the `AUDIT_COLUMNS` values each) to the chain, inside the caller's write
        transaction (writers run one at a time: SQLite's BEGIN IMMEDIATE, PostgreSQL's advisory lock)."""
        head = db.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
        prev = head[0] if head is not None else GENESIS
        for row in rows:
            digest = chain_hash(prev, row)
            db.execute(
                self._q(f"INSERT INTO audit ({AUDIT_COLUMNS}, prev_hash, hash) VALUES ({', '.join('?' * 13)})"),
                (*row, prev, digest),
            )
            prev = digest
        self._set_meta(db, "audit_head", prev)

    def log(self, records) -> None:
        """Write decisions to the audit log, one transaction. A person removed since the decision was made
        is written as nobody (`returned_ref` None) with ``person_removed`` in the row's detail: the
        decision is kept, and nothing about the removed person."""
        if not records:
            return
        for r in records:
            if r.kind not in DECISIONS:
                raise ValueError(f"not a decision: {r.kind!r}")
        now = _now()
        with self._write() as db:
            refs: dict[Any, str] = self._refs(
                db, [p for r in records for p in (r.claimed, r.returned) if not isinstance(p, str)]
            )
            refs.update(
                (r.claimed, r.claimed)
                for r in records
                if isinstance(r.claimed, str) and r.claimed.startswith(UNENROLLED)
            )
            rows = []
            for r in records:
                gone = [p for p in (r.claimed, r.returned) if p is not None and p not in refs]
                rows.append(
                    (
                        now,
                        r.kind,
                        refs.get(r.claimed),
                        refs.get(r.returned),
                        None if r.score is None else float(r.score),
                        float(r.threshold),
                        bool(r.accepted),
                        r.rule,
                        r.model,
                        r.actor or local_actor(),
                        _detail(r.detail, gone),
                    )
                )
            self._append_audit(db, rows)

    def _audit_change(self, db, kind: str, person: Person | None, actor: str, **detail: Any) -> None:
        """The audit row of a change to `person` (inside the change's transaction), and its INFO log line
        (the person's reference, never their name)."""
        if kind not in CHANGES:
            raise ValueError(f"not a change: {kind!r}")
        actor = actor or local_actor()
        ref = person.ref if person is not None else None
        text = json.dumps(detail, sort_keys=True, separators=(",", ":")) if detail else ""
        self._append_audit(db, [(_now(), kind, ref, None, None, None, True, "", "", actor, text)])
        log.info(
            "%s: %s%s by %s%s",
            self.location,
            kind,
            f" of person {ref}" if ref else "",
            actor,
            f" {text}" if text else "",
        )

    def audit_event(self, kind: str, *, actor: str = "", **detail: Any) -> None:
        """Audit a change made outside the gallery's tables (an API key created or revoked), in its own
        transaction."""
        with self._write() as db:
            self._audit_change(db, kind, None, actor, **detail)

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
        actor: str = "",
        forced: bool = False,
        since: int | None = None,
        created: str | None = None,
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
            self._refresh_skeletons(db)
            result = self._add(db, name, templates, metadata, create, keep, new, since=since, now=created)
            added = [t for t, i in zip(templates, result.template_ids) if i is not None]
            if added:
                kind = "enrol" if result.created else "add-faces"
                flags = {"forced": True} if forced else {}
                if any(t.quality.get("provisional") for t in added):
                    flags["provisional"] = True
                self._audit_change(db, kind, result.person, actor, templates=len(added), **flags)
            return result

    def add_people(
        self,
        people: Sequence[tuple[str, dict[str, Any], Sequence[NewTemplate]]],
        *,
        merge: bool = False,
        keep: KeepFilter | None = None,
        actor: str = "",
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
            self._refresh_skeletons(db)  # once: each new person is then one lookup
            results = [self._add(db, n, ts, m, True, keep) for n, m, ts in people]
            for r in results:
                added = sum(1 for i in r.template_ids if i is not None)
                if added:
                    self._audit_change(db, "import", r.person, actor, templates=added, created=r.created)
            return results

    def _refresh_skeletons(self, db, force: bool = False) -> int:
        """Inside the caller's write transaction: when the gallery's skeletons were made by another rule than
        this siamface's `skeleton_rule` (a gallery just migrated to schema version 5, or a siamface whose
        confusables differ wrote it), or when `force`, compute every person's skeleton again from their name
        and write those that differ. The number rewritten (0 when the rule is this one and not `force`)."""
        rule = skeleton_rule()
        stored = db.execute("SELECT value FROM meta WHERE key = 'skeleton_rule'").fetchone()
        if stored is not None and stored[0] == rule and not force:
            return 0
        changed = [
            (shape, int(pid))
            for pid, name, old in db.execute("SELECT id, name, skeleton FROM people").fetchall()
            if (shape := name_skeleton(name)) != old
        ]
        self._write_skeletons(db, changed)
        self._set_meta(db, "skeleton_rule", rule)
        shared = db.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM people "
            "WHERE skeleton IS NOT NULL GROUP BY skeleton HAVING count(*) > 1) alike"
        ).fetchone()
        if shared[0]:
            log.warning(
                "%s: %d people's names look like another's (%d group(s) of look-alikes, enrolled before the "
                "look-alike check): all are kept; a new name or a rename that looks like theirs is refused",
                self.location,
                int(shared[1]),
                int(shared[0]),
            )
        if changed:
            log.info("%s: %d skeleton(s) computed under rule %s", self.location, len(changed), rule)
        return len(changed)

    def repair_skeletons(self) -> int:
        """Compute every person's skeleton again from their name (one transaction) and write those that differ
        (written behind siamface's back): the number rewritten. `siamface gallery migrate` runs it."""
        with self._write() as db:
            return self._refresh_skeletons(db, force=True)

    def _refuse_lookalike(self, db, name: str, person_id: int | None = None) -> None:
        """`InvalidNameError` when `name` could be taken for another person's name (the same skeleton): one
        lookup of the stored skeletons' index, inside the caller's write transaction (which has called
        `_refresh_skeletons`). The names found are checked again from their text (a stored skeleton is derived
        data: a wrong one written behind siamface's back never refuses a name that does not look alike, nor
        breaks the check)."""
        shape = skeleton(name)
        for pid, other in db.execute(self._q("SELECT id, name FROM people WHERE skeleton = ?"), (shape,)).fetchall():
            if int(pid) != person_id and name_skeleton(other) == shape:
                raise InvalidNameError(
                    f"invalid name {name!r}: it could be taken for {other!r}, already enrolled (the same letters "
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
        since: int | None = None,
        now: str | None = None,
    ) -> AddResult:
        """The body of an addition, inside the caller's write transaction: the name is looked up here, so
        that "must be new" and "must exist" cannot race with another writer. A new person's name must not
        look like another's (`_refuse_lookalike`).
        `since`: `keep` also gets the templates added after that id (by other writers since the caller's
        checks), as its third argument."""
        found = self._find(db, name)
        if found is None and not create:
            raise UnknownPersonError(name, self.location)
        if found is not None and new:
            raise PersonExistsError(found.name, self.location)
        existing = self._templates(db, found.id, True) if found is not None else []
        if keep is None:
            verdicts: list[str | None] = [None] * len(templates)
        elif since is None:
            verdicts = list(keep(existing, templates))
        else:
            verdicts = list(keep(existing, templates, self._templates(db, None, True, after=since)))
        if len(verdicts) != len(templates):
            raise ValueError("keep filter must return one verdict per template")
        skipped = {i: reason for i, reason in enumerate(verdicts) if reason is not None}
        if len(skipped) == len(templates):
            return AddResult(found, False, (None,) * len(templates), skipped)
        now = now or _now()
        created = found is None
        if created:
            self._refuse_lookalike(db, name)
            person_id = self._insert_person(db, name, json_object(metadata or {}), now)
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

    @staticmethod
    def _binding(db) -> ModelBinding:
        meta = dict(
            db.execute(
                "SELECT key, value FROM meta WHERE key IN ('model_name', 'model_version', 'embedding_size')"
            ).fetchall()
        )
        return ModelBinding(meta["model_name"], meta["model_version"], int(meta["embedding_size"]))

    def _check_bound(self, db) -> None:
        """The gallery's model may have been changed by another process (re-embedding) since we opened it."""
        current = self._binding(db)
        if current != self.model:
            raise GalleryReembeddedError(self.location, current, self.model)

    def _rebind_cover(self, stored: set[int], embeddings: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """The new embeddings of the templates `stored` now (inside the rebinding transaction): those of
        templates removed meanwhile are dropped; one added meanwhile and not covered is `StaleRebindError`."""
        uncovered = stored - set(embeddings)
        if uncovered:
            raise StaleRebindError(self.location, uncovered)
        return {i: v for i, v in embeddings.items() if i in stored}

    def bound_model(self) -> ModelBinding:
        """The model the gallery is bound to now, read from the database (another process may have re-embedded
        it since this one opened it: compare with `model`)."""
        return self._binding(self._connect())

    def rename(self, old: str, new: str, *, actor: str = "") -> Person:
        new = check_name(new)
        with self._write() as db:
            found = self._find_row(db, old)
            if found is None:
                raise UnknownPersonError(old, self.location)
            clash = self._find_row(db, new)
            if clash is not None and clash.id != found.id:
                raise GalleryError(f"cannot rename {found.name!r} to {new!r}: that name is taken")
            self._refresh_skeletons(db)
            self._refuse_lookalike(db, new, found.id)
            db.execute(self._q("UPDATE people SET name = ?, skeleton = ? WHERE id = ?"), (new, skeleton(new), found.id))
            self._audit_change(db, "rename", found, actor)
            self._bump(db)
            return self._find(db, new)

    def set_metadata(self, name: str, metadata: dict[str, Any], *, actor: str = "") -> Person:
        text = json_object(metadata)
        with self._write() as db:
            found = self._find_row(db, name)
            if found is None:
                raise UnknownPersonError(name, self.location)
            db.execute(self._q("UPDATE people SET metadata = ? WHERE id = ?"), (text, found.id))
            self._audit_change(db, "metadata", found, actor)
            self._bump(db)
            return self._find(db, name)

    def delete(self, name: str, *, actor: str = "") -> int:
        with self._write() as db:
            found = self._find_row(db, name)  # not its metadata: a damaged person can be removed
            if found is None:
                raise UnknownPersonError(name, self.location)
            # the audit rows about them keep the person's reference, which nothing links to them once the
            # row of `people` is gone (no row of the audit changes: the hash chain stays whole)
            self._before_delete(db)
            db.execute(self._q("DELETE FROM people WHERE id = ?"), (found.id,))  # cascades to templates, images
            self._audit_change(db, "delete", found, actor, templates=found.n_templates)
            self._bump(db)
        self._after_delete()
        return found.n_templates


#: The schema version from which people have a stored skeleton (both backends).
SKELETONS_SINCE = 5
#: The oldest schema version a gallery that cannot be migrated (read-only) is read at as it is: version 5 added
#: only what changes use (the stored skeletons), so an upgraded siamface at a read-only door keeps reading a
#: version-4 gallery (every change is refused there anyway) until it is migrated with write access.
READABLE_SINCE = 4


def name_skeleton(name: Any) -> str | None:
    """The `skeleton` of a name as stored: None for a value that is not text (written behind siamface's back)."""
    return skeleton(name) if isinstance(name, str) else None


def _counted(detail: str | None) -> bool:
    """Whether an audit row's detail (a JSON object) marks it ``counted`` by its own top-level key, not by the
    word appearing anywhere in it."""
    try:
        parsed = json.loads(detail or "{}")
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("counted") is True
