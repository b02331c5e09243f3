"""`Gallery`: a store, its 1:N index and a `Pipeline`, with the verbs enroll, verify (1:1 against a claimed
identity) and identify (1:N), each decision written to the store's audit log.

    >>> from siamface import Pipeline
    >>> from siamface.gallery import Gallery
    >>> g = Gallery("people.db", Pipeline(), create=True)
    >>> g.enroll("alice", ["alice1.jpg", "alice2.jpg", "alice3.jpg"]).added
    >>> g.verify("alice", "probe.jpg", rule="fraction").accepted
    >>> g.identify("group.jpg").names
    ['alice', 'unknown']

A gallery is bound to the model that created it; enrolling or querying with another raises
`ModelMismatchError`. Safe to share between threads.

`Gallery` is the facade: it holds the store, the index, the pipeline and the thresholds in force, writes the
audit log and re-embeds; its verbs live by job, each importing nothing of this module:

    enrolling.py   `Enrolling`: enroll, enroll_frames, enroll_video, enroll_folder, enroll_bulk (the commit
                   with its checks against the person as stored, the look-alike warnings)
    search.py      `Searching`: verify (1:1 with every template's score) and identify (1:N with candidates)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..decision import DEFAULT_FRACTION as DEFAULT_FRACTION  # the rules, the margin: named by the decision module
from ..decision import DEFAULT_MARGIN as DEFAULT_MARGIN
from ..decision import RULES as RULES
from ..decision import Thresholds, ThresholdsInForce
from ..errors import ConfigError, GalleryError, NoFaceError, UnboundGalleryError
from ..image import load_image
from .backends import gallery_exists, open_store
from .enroll import QualityGates
from .enrolling import CAMERA_TIMEOUT_S as CAMERA_TIMEOUT_S  # where `siamface.cli` and callers read them
from .enrolling import VIDEO_DIVERSITY as VIDEO_DIVERSITY
from .enrolling import Enrolling
from .index import index_for
from .search import Searching
from .store import AuditRecord, GalleryReembeddedError, ModelBinding, StaleRebindError, Store, is_database_url

log = logging.getLogger(__name__)

#: Templates whose kept images are decoded and detected before their faces are embedded together.
REEMBED_BATCH = 16

#: The note a decision carries when the gallery is read-only and cannot log it.
NOT_AUDITED = "not audited: the gallery is read-only"
#: Tries `Gallery.reembed` makes at rebinding a gallery that changes while it re-embeds.
REEMBED_ROUNDS = 20


def calibration_file_for(gallery: str | os.PathLike) -> Path:
    """The calibration file that travels with a gallery: ``<gallery>.thresholds.json``."""
    return Path(f"{os.fspath(gallery)}.thresholds.json")


def _side_files(gallery: str | os.PathLike) -> tuple[Path, Path]:
    """An SQLite gallery's side files, `-wal` and `-shm` (replayed into it, holding its pages)."""
    return Path(f"{os.fspath(gallery)}-wal"), Path(f"{os.fspath(gallery)}-shm")


def refuse_exposed(gallery: str | os.PathLike, doing: str) -> None:
    """ConfigError when other users may change what decides who is granted besides the caller's keys: the
    gallery file (its templates), by its mode or its folder's; its SQLite side files (-wal, -shm: replayed into
    it), also when a user other than the gallery's owns them; a calibration file in force (its threshold: the
    one beside the gallery, the user's), also when another user owns it. A gallery owned by another user passes
    (read-only, when this process may not write it): its owner manages it. A PostgreSQL gallery: when roles
    other than this one and the schema's owner may create objects in its schema (`postgres.schema_exposure`).
    `doing`: the message's end ("before serving"). What `serve` and `authenticate` (the commands that open
    doors) check before they start."""
    from .._files import exposure
    from ..errors import ConfigError
    from ..thresholds import user_calibration_file

    if is_database_url(gallery):  # a PostgreSQL URL: the database's roles decide, but none may plant code
        from .postgres import schema_exposure

        schema, roles = schema_exposure(str(gallery))
        if roles:
            raise ConfigError(
                f"the gallery's schema {schema!r} lets {', '.join(roles)} create objects in it: a function or "
                "operator planted there could run as this role in siamface's queries; "
                f"REVOKE CREATE ON SCHEMA {schema} FROM {', '.join(roles)} (as its owner) {doing}"
            )
        return
    checks = [(Path(gallery), False), (calibration_file_for(gallery), True), (user_calibration_file(), True)]
    for side in _side_files(gallery):
        checks.append((side, False))
        if os.name != "nt" and side.exists() and Path(gallery).exists():
            owner = side.stat().st_uid
            if owner not in (Path(gallery).stat().st_uid, 0):
                raise ConfigError(
                    f"{side} is owned by another user (uid {owner}) than the gallery's, who may have put "
                    f"changes in it; move it away {doing}"
                )
    for path, owner in checks:
        writable, _ = exposure(path, owner=owner)
        if writable:
            raise ConfigError(
                f"{writable}: whoever may change the gallery or a calibration in force decides who is "
                f"granted; make it yours alone (chmod 600, in a folder only you may write) {doing}"
            )


def refuse_foreign_for_writing(gallery: str | os.PathLike) -> None:
    """ConfigError before templates are written into an SQLite gallery that another user owns or may change
    (the file, its folder, its -wal/-shm side files): they could read every template written, or swap the
    file. A file planted where a gallery will be made (empty, or a gallery of someone else's) is the way in.
    siamface makes its gallery files 0600 in the caller's name; a PostgreSQL gallery's roles decide for it.
    What `enroll` and `gallery import` check; a gallery others may only read gets a warning (its templates
    are readable)."""
    from .._files import exposure
    from ..errors import ConfigError

    if is_database_url(gallery) or not Path(gallery).exists() or Path(gallery).is_dir():
        return  # nothing there yet, or a folder given by mistake (the store refuses it, in one line)
    for path in (Path(gallery), *_side_files(gallery)):
        writable, readable = exposure(path)
        if writable:
            raise ConfigError(
                f"{writable}: templates written into it would be theirs to read or replace; make it yours "
                "alone (chmod 600, in a folder only you may write), or enroll into a new gallery"
            )
        if readable and path == Path(gallery):
            log.warning("%s: the templates written into it (biometric data) are theirs to read; chmod 600 it", readable)


def calibration_beside(gallery: str | os.PathLike) -> Path | None:
    """The calibration file beside `gallery` (`calibration_file_for`) when there is one, else None: what the
    commands and a `Gallery` without a pipeline give the pipeline as its explicit calibration file."""
    beside = calibration_file_for(gallery)
    return beside if beside.is_file() else None


def model_for_gallery(gallery, requested: str | None, default: str) -> tuple[str, str | None]:
    """The model a command on `gallery` runs: `requested` when given; else, for an existing gallery, the
    registered model it is bound to, so that a gallery made before the default changed keeps working (with
    a note on how to move it to `default`); else `default`. Returns (model, note or None)."""
    if requested is not None:
        return requested, None
    if gallery is None or not gallery_exists(gallery):
        return default, None
    try:
        with open_store(gallery) as store:
            return _bound_model(gallery, store.model, default)
    except UnboundGalleryError:  # created, not bound yet (another process is binding it, or nobody did)
        return default, None


def _bound_model(gallery, bound: ModelBinding | None, default: str) -> tuple[str, str | None]:
    """`model_for_gallery` for a gallery whose store is bound to `bound` (None: not bound yet)."""
    from ..embedding import model_names

    if bound is None or bound.name == default or bound.name not in model_names():
        return default, None
    return bound.name, (
        f"gallery {gallery} is bound to model {bound.name}, which it keeps using; the default "
        f"model is now {default}: `siamface gallery reembed --model {default}` moves it "
        "(needs a gallery that keeps images)"
    )


class Gallery(Enrolling, Searching, ThresholdsInForce):
    """People enrolled with a pipeline's model, searched with the same pipeline.

    `store`: a `Store`, a path to an SQLite gallery file or a ``postgresql://`` URL (created, bound to the pipeline's model, when
    `create` is true and it does not exist; `keep_images` then decides whether face crops are kept, stored
    unencrypted, which is what makes re-embedding with a new model possible). With `create`, an existing SQLite
    file that another user owns or may change is refused (`ConfigError`, `refuse_foreign_for_writing`): a file
    planted where a gallery will be made would hand its owner every template enrolled into it.
    `pipeline`: None builds one as the commands do: with the model the gallery is bound to (a registered
    one, else the default model) and the calibration file beside the gallery (``<gallery>.thresholds.json``,
    written by ``siamface calibrate``) as its explicit calibration, so that the thresholds in force follow
    the order of `siamface.decision` (caller, calibration beside the gallery, the user's, model default).
    `threshold`: overrides the pipeline's (calibrated) threshold for every decision (a fixed 1:N threshold).
    `fpir`: the share of strangers 1:N may name, when 1:N is set by FPIR (default: the calibration's, else
    `siamface.decision.DEFAULT_FPIR`); the 1:N threshold follows the gallery's size at every search.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike,
        pipeline=None,
        *,
        create: bool = False,
        keep_images: bool = False,
        gates: QualityGates | None = None,
        threshold: float | None = None,
        fpir: float | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._fpir = fpir
        self._closed = False
        if not isinstance(store, (str, os.PathLike)) and not hasattr(store, "location"):  # was an AttributeError
            raise ConfigError(f"a gallery is a path, a postgresql:// URL or a Store, not {type(store).__name__}")
        self._spec = store if isinstance(store, (str, os.PathLike)) else store.location
        if isinstance(store, (str, os.PathLike)):
            if create:  # made to be written: never into a file planted by someone else (as `enroll` refuses it)
                refuse_foreign_for_writing(store)
            # Creating: always name the model, so that a second process racing to create the same file
            # binds (or checks) it too instead of finding an unbound file.
            model = ModelBinding.of(self.pipeline.encoder.info) if create else None
            store = open_store(store, model, create=create, keep_images=keep_images)
        self._store: Store = store
        self._index = index_for(store)
        self.gates = gates or QualityGates()
        self._threshold = threshold

    @property
    def store(self) -> Store:
        """The store of people and templates; `GalleryError` once the gallery is closed."""
        self._check_open()
        return self._store

    @property
    def index(self):
        """The search index over the store's templates; `GalleryError` once the gallery is closed."""
        self._check_open()
        return self._index

    def _check_open(self) -> None:
        # A closed gallery reopened its database unasked (enrolments and searches went on, a FAISS index
        # learnt what no close would save, a connection was left open): used after close() it refuses now.
        if self._closed:
            raise GalleryError(f"{self._spec}: this gallery was closed; open it again to use it")

    @property
    def pipeline(self):
        """The pipeline given, else one with the model this gallery is bound to (a registered one, else the
        default model's) and the calibration beside it, as the commands build theirs (see `Gallery`)."""
        if self._pipeline is None:
            from ..pipeline import DEFAULT_MODEL, Pipeline

            model, _ = _bound_model(self._spec, getattr(getattr(self, "store", None), "model", None), DEFAULT_MODEL)
            self._pipeline = Pipeline(model=model, calibration_file=calibration_beside(self._spec))
        return self._pipeline

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds in force for every decision: the caller's (`threshold`), else the pipeline's; 1:N by
        FPIR computed for the gallery's size now (people and templates, read from the index)."""
        chosen = self.pipeline.thresholds.given(self._threshold).with_fpir(self._fpir)
        return chosen.for_gallery(self.index.n_people, len(self.index)) if chosen.fpir is not None else chosen

    @property
    def threshold_far(self) -> float | None:
        """The false-accept rate measured at the 1:1 threshold in force, when its calibration or model says it."""
        return self.thresholds.verify.far

    def check_model(self) -> ModelBinding:
        """Raise `ModelMismatchError` unless the pipeline's model is the one this gallery is bound to."""
        mine = ModelBinding.of(self.pipeline.encoder.info)
        self.store.model.check(mine, self.store.location)
        bound_model = getattr(self.store, "bound_model", None)
        if bound_model is not None:  # one small read: re-embedded by another process since it was opened?
            now = bound_model()
            if now != self.store.model:
                raise GalleryReembeddedError(self.store.location, now, self.store.model)
        return mine

    def close(self) -> None:
        """Save what the index learnt and close the store; the gallery is not used after it (`GalleryError`).
        Closing again does nothing."""
        if self._closed:
            return
        closer = getattr(self._index, "close", None)
        if closer is not None:  # an in-process FAISS index writes what it learnt since its last save
            closer()
        self._store.close()
        self._closed = True

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def audit(self, records: list[AuditRecord]) -> tuple[str, ...]:
        """Write decisions to the store's audit log: () once written, or on a read-only gallery, which
        cannot log them, the note that says so (to show with the decision)."""
        if getattr(self.store, "read_only", False):
            return (NOT_AUDITED,)
        self.store.log(records)
        return ()

    # -- maintenance -----------------------------------------------------------------------------------
    def reembed(self, pipeline, *, rounds: int = REEMBED_ROUNDS) -> int:
        """Re-embed every template from its kept image with `pipeline`'s model and bind the gallery to that
        model, in one transaction. Needs a gallery created with ``keep_images=True``; returns the number of
        templates re-embedded.

        The gallery may change meanwhile (a server enrolling): the templates are embedded outside the write
        lock, and the rebinding transaction refuses to leave any template unconverted (`StaleRebindError`,
        nothing changed); then only the templates that arrived since are embedded and it is tried again, up
        to `rounds` times. Writers bound to the old model are refused once it is rebound, so no template of
        the old model lands after it (`GalleryReembeddedError`)."""
        binding = ModelBinding.of(pipeline.encoder.info)
        vectors: dict = {}
        for _ in range(rounds):
            templates = self.store.templates()
            missing = [t.id for t in templates if not t.has_image]
            if missing:
                raise GalleryError(
                    f"{self.store.location}: {len(missing)} template(s) have no kept image (the "
                    "gallery was not created with keep_images); re-enroll from the original images"
                )
            present = {t.id for t in templates}
            vectors = {i: v for i, v in vectors.items() if i in present}  # templates removed meanwhile
            todo = [t for t in templates if t.id not in vectors]
            for lo in range(0, len(todo), REEMBED_BATCH):
                chunk = todo[lo : lo + REEMBED_BATCH]
                items = []
                for t in chunk:
                    image = load_image(self.store.image(t.id), name=f"template {t.id}")
                    found = pipeline.detect(image)
                    if not len(found):
                        raise NoFaceError(f"template {t.id}", getattr(pipeline.detector, "name", ""))
                    items.append((image, found[found.chosen("largest", image.shape)]))
                for t, face in zip(chunk, pipeline.embed_many(items)):  # one forward pass per chunk
                    vectors[t.id] = face.embeddings[0]
            try:
                self.store.rebind(binding, vectors)
            except StaleRebindError as exc:
                log.info("%s: %d template(s) arrived while re-embedding; embedding them", self.store.location, exc.n)
                continue
            self._pipeline = pipeline
            return len(vectors)
        raise GalleryError(
            f"{self.store.location}: the gallery changed during each of {rounds} re-embedding rounds; nothing "
            "changed (re-embed while fewer enrolments land)"
        )
