"""The `Store` protocol: what a gallery keeps, and the records it hands back.

A store holds people, their templates (embeddings with the model that made them and how they were
obtained) and an audit log of the decisions taken against them. It is bound to one model (name, version,
embedding size) at creation and refuses templates from another. Every change is one transaction: a person
enrolled is enrolled with all of the templates of that call or not at all. Deleting a person removes their
templates and any kept images; the audit rows that named them stay, with the person's opaque reference, which
nothing links to anyone once the person is gone. The audit rows are chained by hash (`verify_audit`).

`SQLiteStore` (``siamface.gallery.sqlite``) is the embedded implementation, `PostgresStore`
(``siamface.gallery.postgres``) the shared one; both follow this protocol and run the same tests, and
`open_store` (``siamface.gallery.backends``) picks one from a gallery's spec. This module imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._progress import printable
from ..errors import GalleryError, ModelMismatchError


class UnknownPersonError(GalleryError):
    """A name given (a claimed identity, a person to show, rename or delete) is not in the gallery."""

    def __init__(self, name: str, gallery: str = "") -> None:
        self.name = name
        where = f" in gallery {gallery}" if gallery else ""
        super().__init__(f"no person named {name!r}{where} (see `siamface people list`)")


class PersonExistsError(GalleryError):
    """A name given for a new person is already enrolled (names are unique ignoring case)."""

    def __init__(self, name: str, gallery: str = "") -> None:
        self.name = name
        where = f" in gallery {gallery}" if gallery else ""
        super().__init__(f"a person named {name!r} is already enrolled{where}")


class DamagedGalleryError(GalleryError):
    """A row of the gallery cannot be read as this siamface wrote it: a template of the wrong length, with
    NaN/infinity or not of length 1, or metadata/quality that is not a bounded JSON object. Raised when the
    row is read (no decision is ever made from it); the message names the person and the row."""


class ReadOnlyGalleryError(GalleryError):
    """A change was asked of a gallery opened read-only (a file or folder this process may not write)."""


class GalleryUnavailableError(GalleryError):
    """The gallery's storage cannot be used now: its database server cannot be reached (`reason`
    ``"unreachable"``), or its disk is full or failing (``"full"``: nothing could be written). Nothing was
    changed; the same request may succeed once the storage is back."""

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class StaleRebindError(GalleryError):
    """Re-embedding: templates were added after the new embeddings were computed; nothing was changed (embed
    those `ids` too and rebind again)."""

    def __init__(self, location: str, ids) -> None:
        self.ids = frozenset(int(i) for i in ids)
        self.n = len(self.ids)
        super().__init__(
            f"{location}: re-embedding must cover every template, and {self.n} were added since the new "
            "embeddings were computed; nothing changed"
        )


class GalleryReembeddedError(ModelMismatchError):
    """The gallery was re-embedded (bound to another model) by another process since this one opened it:
    its templates are no longer comparable with this process's model; open the gallery again (restart a
    server)."""

    def __init__(self, location: str, now: ModelBinding, opened: ModelBinding) -> None:
        self.now = now
        super().__init__(
            f"{location} was re-embedded with model {now.describe()} since it was opened (with "
            f"{opened.describe()}); open it again (restart the server)"
        )


#: The longest template source label kept or shown, in characters (see `source_label`).
MAX_SOURCE = 1024


def source_label(source: str) -> str:
    """What a template keeps of where it came from: the file name only (``/a/b/c.jpg`` -> ``c.jpg``, a
    Windows path too), never a path, with every control, format or unassigned character (ESC, C1 controls, the
    bidirectional overrides, ...) as ``?``: a name someone else chose is shown in an operator's terminal.
    Written so at enrolment and read so from galleries of older code. Only the last `MAX_SOURCE` characters are
    read (no file system has longer names: a crafted gallery's 100 MB label took `people show` 35 s and 2 GB)."""
    text = str(source or "")[-MAX_SOURCE:].replace("\\", "/").rstrip("/")
    return printable(text.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class ModelBinding:
    """The model a gallery is bound to: every template in it was made by this model."""

    name: str
    version: str
    embedding_size: int

    @classmethod
    def of(cls, info) -> ModelBinding:
        """From an encoder's `ModelInfo`."""
        return cls(info.name, info.version, int(info.embedding_size))

    def describe(self) -> str:
        return f"{self.name!r} version {self.version!r} ({self.embedding_size}-d)"

    def check(self, other: ModelBinding, gallery: str = "") -> None:
        """Raise `ModelMismatchError` unless `other` is this very model."""
        if other != self:
            from ..embedding import model_names

            # a model exported by `siamface train` is named by its file, not its name: say so, rather than
            # `--model NAME`, which would be refused as no registered model (or be another one)
            known = set(model_names())
            where = f"gallery {gallery}" if gallery else "the gallery"
            use = f"--model {self.name}" if self.name in known else f"--model with the model file of {self.describe()}"
            new = f"--model {other.name}" if other.name in known else "--model FILE.onnx"
            raise ModelMismatchError(
                f"{where} holds templates of model {self.describe()}, but this pipeline uses model "
                f"{other.describe()}; embeddings of different models cannot be compared. Use {use}, or re-embed "
                f"the gallery with the new model (`siamface gallery reembed {new}`, possible only when it keeps "
                "images)."
            )


@dataclass(frozen=True)
class Person:
    id: int
    name: str
    metadata: dict[str, Any]
    created: str
    n_templates: int = 0
    ref: str = field(default="", compare=False)  # the opaque reference audit rows keep (not in answers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "metadata": self.metadata,
            "created": self.created,
            "templates": self.n_templates,
        }


@dataclass(frozen=True)
class Template:
    """A stored template. `embedding` is None when listed without embeddings."""

    id: int
    person_id: int
    model: str
    model_version: str
    source: str
    quality: dict[str, Any]
    created: str
    has_image: bool = False
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "person_id": self.person_id,
            "model": self.model,
            "model_version": self.model_version,
            "source": self.source,
            "quality": self.quality,
            "created": self.created,
            "has_image": self.has_image,
        }


@dataclass(frozen=True)
class NewTemplate:
    """A template about to be stored. `image`: encoded image bytes (PNG), kept only by galleries created
    with ``keep_images=True``."""

    embedding: np.ndarray
    source: str = ""
    quality: dict[str, Any] = field(default_factory=dict)
    image: bytes | None = field(default=None, repr=False)


#: What an audit row records: a decision (verify, identify) or a change (the rest).
DECISIONS = ("verify", "identify")
#: The youngest audit rows `Store.prune_audit` may remove are this many days old. The service's lock-outs read
#: denials from the audit as far back as its lock-out window plus its lock-out (`siamface.service.settings`
#: keeps that within these days), so that no pruning lets a locked-out person in early.
AUDIT_KEPT_DAYS = 1.0
CHANGES = ("enrol", "add-faces", "rename", "metadata", "delete", "import", "key-create", "key-revoke", "audit-prune")


#: How the audit's ``claimed_ref`` of a claim of a name nobody has begins (a digest of the name, no person).
UNENROLLED = "unenrolled:"


@dataclass(frozen=True)
class AuditRecord:
    """A decision to log. Person ids are resolved by the store to the person's opaque audit reference
    (`Person.ref`); None for "nobody". A claimed name nobody has may be given as its lock-out key (a string
    starting ``unenrolled:``, see `UNENROLLED`), stored as is, so that its denials are counted like a person's.
    `actor`: who asked (``key:<id>`` for an API key; empty: this process's OS user, ``cli:<user>``)."""

    kind: str  # "verify" or "identify"
    claimed: int | str | None  # person id claimed (verify), or a name nobody has as its lock-out key
    returned: int | None  # person id returned (the claimed one when accepted; the one identified)
    score: float | None
    threshold: float
    accepted: bool
    rule: str = ""
    model: str = ""
    actor: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # the row's detail (flags, never a name or a face)


@dataclass(frozen=True)
class AuditEntry:
    """A row of the audit log. `claimed` / `returned`: the person's name while they are enrolled, None once
    removed (or for nobody); `claimed_ref` / `returned_ref`: the opaque reference the row keeps for them,
    linked to nothing once they are removed. A change row (`kind` in `CHANGES`) names its person in
    `claimed` and says what changed in `detail` (counts and flags, never a name or a face)."""

    id: int
    time: str
    kind: str
    claimed: str | None
    returned: str | None
    score: float | None
    threshold: float | None
    accepted: bool
    rule: str
    model: str
    claimed_ref: str | None = None
    returned_ref: str | None = None
    actor: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def claimed_tombstone(self) -> str | None:
        """The reference of a claimed person since removed (None while enrolled, or for nobody)."""
        if self.claimed is not None or (self.claimed_ref or "").startswith(UNENROLLED):
            return None
        return self.claimed_ref

    @property
    def returned_tombstone(self) -> str | None:
        return self.returned_ref if self.returned is None else None

    @property
    def claimed_label(self) -> str | None:
        return self.claimed if self.claimed_tombstone is None else f"removed:{self.claimed_tombstone}"

    @property
    def returned_label(self) -> str | None:
        return self.returned if self.returned_tombstone is None else f"removed:{self.returned_tombstone}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "kind": self.kind,
            "claimed": self.claimed_label,
            "returned": self.returned_label,
            "score": self.score,
            "threshold": self.threshold,
            "accepted": self.accepted,
            "rule": self.rule,
            "model": self.model,
            "actor": self.actor,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class AuditCheck:
    """What `Store.verify_audit` found: the rows checked, the chain's head (the hash of the last row, to
    note elsewhere) and each problem (row id or None, what is wrong); `intact` when there is none."""

    rows: int
    head: str
    problems: tuple[tuple[int | None, str], ...]

    @property
    def intact(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "head": self.head,
            "intact": self.intact,
            "problems": [{"row": r, "problem": p} for r, p in self.problems],
        }


@dataclass(frozen=True)
class AddResult:
    """What `Store.add_templates` did: the person (after the change), whether it was created, the ids of
    the templates added (in the order given, None where skipped) and why each skipped one was skipped."""

    person: Person | None
    created: bool
    template_ids: tuple[int | None, ...]
    skipped: dict[int, str]


#: Called inside the write transaction with the person's existing templates (with embeddings; empty for a
#: new person) and the candidates (and, when `add_templates` is given `since`, the templates of anyone added
#: after that id, with embeddings); returns, per candidate, None to keep it or a reason to skip it.
#: Running inside the transaction makes checks such as "not a near-duplicate" race-free.
KeepFilter = Callable[[Sequence[Template], Sequence[NewTemplate]], Sequence["str | None"]]


@runtime_checkable
class Store(Protocol):
    """A gallery store. Implementations are safe to share between threads."""

    location: str
    model: ModelBinding
    keep_images: bool
    read_only: bool  # opened without write access: reads work, every change raises ReadOnlyGalleryError

    def generation(self) -> int:
        """A counter that moves whenever people or templates change (in any process)."""

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
        """Add templates to `name` (created if missing and `create`), all in one transaction. When every
        candidate is skipped, nothing changes (a new person is not created). `new`: the name must not be
        enrolled yet (`PersonExistsError` otherwise); `create=False`: it must be (`UnknownPersonError`).
        Both are decided inside the transaction: of two writers creating the same new name with
        ``new=True``, exactly one succeeds. Names are checked by `siamface.gallery.names.check_name`.
        `since` (a `last_template_id` read before the caller's own checks): `keep` also gets the templates
        added after it, so that a check of the whole gallery made before the transaction is completed inside
        it. A template whose quality says ``provisional`` is audited so (``"provisional": true``). `created`: the
        new templates' time (ISO, UTC; default now), for a caller that keeps its own clock."""

    def last_template_id(self) -> int:
        """The highest template id (0 when none): templates are added one writer at a time, in id order."""

    def provisional_templates(self, template_ids: Collection[int]) -> set[int]:
        """Those of `template_ids` whose quality says ``provisional`` (added by a key below admin)."""

    def add_people(
        self,
        people: Sequence[tuple[str, dict[str, Any], Sequence[NewTemplate]]],
        *,
        merge: bool = False,
        keep: KeepFilter | None = None,
        actor: str = "",
    ) -> list[AddResult]:
        """Add several people in one transaction; a name already there is an error unless `merge`."""

    def person(self, name: str, *, metadata: bool = True) -> Person:
        """The person of that name, or `UnknownPersonError`. ``metadata=False``: without reading their
        metadata (left empty), which works on a person whose metadata is damaged."""

    def people(self) -> list[Person]: ...

    def name_key(self, name: str) -> str:
        """The form by which the store tells names apart (names are unique ignoring case, as it folds it)."""

    def unenrolled_ref(self, name: str) -> str:
        """The audit reference of a claim of `name` while nobody has it (`UNENROLLED` + a keyed digest of its
        `name_key`, keyed by the gallery's own secret: the same in every process that opens the gallery)."""

    def templates(self, name: str | None = None, *, embeddings: bool = False) -> list[Template]: ...

    def matrix(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(generation, template ids (n,), person ids (n,), embeddings (n, d) float32), sorted by person id
        then template id, read in one consistent snapshot."""

    def person_matrix(self, person_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(template ids, embeddings (t, d) float32) of one person, checked as `matrix` checks them."""

    def names(self, person_ids: Sequence[int]) -> dict[int, str]: ...

    def image(self, template_id: int) -> bytes | None: ...

    def rename(self, old: str, new: str, *, actor: str = "") -> Person: ...

    def set_metadata(self, name: str, metadata: dict[str, Any], *, actor: str = "") -> Person: ...

    def delete(self, name: str, *, actor: str = "") -> int:
        """Remove a person with their templates and images; their audit rows keep only the person's opaque
        reference. Returns the number of templates removed. Every change (add, rename, metadata, delete)
        writes an audit row naming `actor` in its own transaction."""

    def log(self, records: Sequence[AuditRecord]) -> None: ...

    def audit(self, limit: int | None = None, person: str | None = None) -> list[AuditEntry]: ...

    def recent_denials(self, person_id: int | str, since: str, limit: int = 1000) -> list[str]:
        """When each denied claim verification of the person was audited (ISO, UTC, oldest first): those at
        or after `since` and after the person's last granted one (at most the `limit` newest), but for those
        whose detail says ``counted`` (a claim through a liveness session whose failure has its own row)."""

    def verify_audit(self) -> AuditCheck:
        """Recompute the audit's hash chain: an edited, removed or reordered row is a problem."""

    def prune_audit(self, days: float, *, actor: str = "") -> dict[str, Any]:
        """Remove the audit rows older than `days` (at least `AUDIT_KEPT_DAYS`), oldest first up to the first row that is not,
        keeping the chain verifiable: the hash of the last row removed becomes the chain's base, and the
        removal is itself audited (``audit-prune``: rows removed, the cut-off, the base). Returns those."""

    def stats(self) -> dict[str, Any]: ...

    def rebind(self, model: ModelBinding, embeddings: dict[int, np.ndarray]) -> None:
        """Replace every template's embedding and the gallery's model, in one transaction (re-embedding)."""

    def close(self) -> None: ...


def is_database_url(spec) -> bool:
    """Whether a gallery spec names a PostgreSQL database (``postgresql://…`` or ``postgres://…``) rather
    than an SQLite file."""
    return isinstance(spec, str) and spec.lower().startswith(("postgresql://", "postgres://"))
