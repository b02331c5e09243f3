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
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, GalleryError
from ..image import describe, load_image
from .enroll import QualityGates, Sample, assess, image_files, person_folders, video_frames
from .index import index_for
from .names import InvalidNameError, check_name
from .results import (
    AMBIGUOUS,
    KNOWN,
    UNKNOWN,
    Candidate,
    ClaimVerification,
    EnrolledTemplate,
    EnrollmentReport,
    FaceIdentity,
    Identification,
    Rejection,
    TemplateScore,
)
from .store import (
    AuditRecord,
    ModelBinding,
    NewTemplate,
    PersonExistsError,
    Store,
    Template,
    UnknownPersonError,
    open_store,
)

log = logging.getLogger(__name__)

RULES = ("best", "mean", "fraction")
DEFAULT_FRACTION = 0.5
#: Identification calls a face ambiguous when the second person is within this similarity of the best
#: (see benchmarks/gallery_att.py for its effect on the AT&T open-set experiment).
DEFAULT_MARGIN = 0.01
#: Frames of a video kept only when below this similarity to every frame kept before (diversity).
VIDEO_DIVERSITY = 0.99
#: How long a camera session runs at most when no timeout is given, in seconds.
CAMERA_TIMEOUT_S = 30.0
#: The note a decision carries when the gallery is read-only and cannot log it.
NOT_AUDITED = "not audited: the gallery is read-only"


def decide(best: float | None, second: float | None, threshold: float, margin: float) -> str:
    """Open-set decision for one face from the best and second-best *people*'s similarities:
    ``known``, ``ambiguous`` (the second within `margin` of the best) or ``unknown``."""
    if best is None or best < threshold:
        return UNKNOWN
    if second is not None and best - second <= margin:
        return AMBIGUOUS
    return KNOWN


def calibration_file_for(gallery: str | os.PathLike) -> Path:
    """The calibration file that travels with a gallery: ``<gallery>.thresholds.json``."""
    return Path(f"{os.fspath(gallery)}.thresholds.json")


def model_for_gallery(gallery, requested: str | None, default: str) -> tuple[str, str | None]:
    """The model a command on `gallery` runs: `requested` when given; else, for an existing gallery, the
    registered model it is bound to, so that a gallery made before the default changed keeps working (with
    a note on how to move it to `default`); else `default`. Returns (model, note or None)."""
    if requested is not None:
        return requested, None
    from .store import gallery_exists

    if gallery is None or not gallery_exists(gallery):
        return default, None
    from ..embedding import model_names

    with open_store(gallery) as store:
        bound = store.model
    if bound is None or bound.name == default or bound.name not in model_names():
        return default, None
    return bound.name, (
        f"gallery {gallery} is bound to model {bound.name}, which it keeps using; the default "
        f"model is now {default}: `siamface gallery reembed --model {default}` moves it "
        "(needs a gallery that keeps images)"
    )


class Gallery:
    """People enrolled with a pipeline's model, searched with the same pipeline.

    `store`: a `Store`, a path to an SQLite gallery file or a ``postgresql://`` URL (created, bound to the pipeline's model, when
    `create` is true and it does not exist; `keep_images` then decides whether face crops are kept, stored
    unencrypted, which is what makes re-embedding with a new model possible).
    `threshold`: overrides the pipeline's (calibrated) threshold for every decision.
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
    ) -> None:
        self._pipeline = pipeline
        if isinstance(store, (str, os.PathLike)):
            # Creating: always name the model, so that a second process racing to create the same file
            # binds (or checks) it too instead of finding an unbound file.
            model = ModelBinding.of(self.pipeline.encoder.info) if create else None
            store = open_store(store, model, create=create, keep_images=keep_images)
        self.store: Store = store
        self.index = index_for(store)
        self.gates = gates or QualityGates()
        self._threshold = threshold

    @property
    def pipeline(self):
        """The pipeline given, else one with the model this gallery is bound to (a registered one), else the
        default model's."""
        if self._pipeline is None:
            from ..embedding import model_names
            from ..pipeline import Pipeline

            bound = getattr(getattr(self, "store", None), "model", None)
            self._pipeline = (
                Pipeline(model=bound.name) if bound is not None and bound.name in model_names() else Pipeline()
            )
        return self._pipeline

    @property
    def threshold(self) -> float:
        return float(self._threshold) if self._threshold is not None else float(self.pipeline.threshold)

    @property
    def threshold_source(self) -> str:
        return "given by the caller" if self._threshold is not None else self.pipeline.threshold_source

    @property
    def identify_threshold(self) -> float:
        """The 1:N threshold (see `Pipeline.identify_threshold`); the caller's threshold when given."""
        if self._threshold is not None:
            return float(self._threshold)
        return float(getattr(self.pipeline, "identify_threshold", self.pipeline.threshold))

    @property
    def identify_threshold_source(self) -> str:
        if self._threshold is not None:
            return "given by the caller"
        return getattr(self.pipeline, "identify_threshold_source", self.pipeline.threshold_source)

    @property
    def threshold_far(self) -> float | None:
        """The false-accept rate measured at the threshold in force, when its calibration says it."""
        if self._threshold is not None or getattr(self.pipeline, "_threshold", None) is not None:
            return None
        calibration = self.pipeline.calibration
        if calibration is not None:
            return float(calibration.far)
        far = (getattr(self.pipeline.encoder.info, "extra", None) or {}).get("far")
        return float(far) if far is not None else None

    def check_model(self) -> ModelBinding:
        """Raise `ModelMismatchError` unless the pipeline's model is the one this gallery is bound to."""
        mine = ModelBinding.of(self.pipeline.encoder.info)
        self.store.model.check(mine, self.store.location)
        return mine

    def close(self) -> None:
        closer = getattr(self.index, "close", None)
        if closer is not None:  # an in-process FAISS index writes what it learnt since its last save
            closer()
        self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- enrollment ----------------------------------------------------------------------------------
    def enroll(
        self,
        name: str,
        images: Iterable[Any],
        *,
        metadata: dict[str, Any] | None = None,
        sources: Sequence[str] | None = None,
        new: bool = False,
        existing: bool = False,
        force: bool = False,
    ) -> EnrollmentReport:
        """Enroll `name` from images (paths, bytes or RGB arrays): every image passes the quality gates or
        is rejected with its reason; the ones kept are added in one transaction (the person is created
        then, with all of them, or not at all).

        A name already enrolled (ignoring case) gets the images added, but only those whose face matches
        one of the person's templates at the 1:1 threshold: the others are rejected as ``other-person``
        unless `force`. `new`: the name must not be enrolled yet (`PersonExistsError`); `existing`: it
        must be (`UnknownPersonError`); both decided inside the store's transaction, race-free."""
        name = self.check_enrollment(name, new=new, existing=existing)
        images = list(images)
        labels = list(sources) if sources is not None else [describe(i) for i in images]
        samples, rejected, warnings = [], [], []
        for image, label in zip(images, labels):
            outcome = assess(self.pipeline, image, label, self.gates, keep_image=self.store.keep_images)
            if isinstance(outcome, Rejection):
                rejected.append(outcome)
            else:
                samples.append(outcome)
        return self._commit(name, samples, rejected, warnings, metadata, new=new, existing=existing, force=force)

    def check_enrollment(self, name: str, *, new: bool = False, existing: bool = False) -> str:
        """The name checked (`check_name`) and, before any model work, `new` / `existing` answered from
        the current state (the store decides again inside its transaction)."""
        if new and existing:
            raise ConfigError("a person cannot be both new and already enrolled")
        name = check_name(name)
        self.check_model()
        if new or existing:
            try:
                found = self.store.person(name)
            except UnknownPersonError:
                found = None
            if existing and found is None:
                raise UnknownPersonError(name, self.store.location)
            if new and found is not None:
                raise PersonExistsError(found.name, self.store.location)
        return name

    def enroll_frames(
        self,
        name: str,
        frames: Iterable[Any],
        *,
        keep: int = 5,
        diversity: float = VIDEO_DIVERSITY,
        min_gap: float = 0.0,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> EnrollmentReport:
        """Enroll `name` from a capture session: `frames` are `Frame`s or (RGB image, label[, time]) tuples
        (see `video_frames`). Keeps up to `keep` frames that pass the gates, each below `diversity`
        similarity to the frames already kept and at least `min_gap` seconds away from them (frames too
        close in time are skipped before any work), and the same person as them (at or above the threshold:
        a frame where someone else is the largest face is rejected as ``other-person``). Stops at `keep` frames, the end of the frames, or after
        `timeout` seconds; everything kept is added in one transaction. An enrolled person's new frames must
        match their templates unless `force` (see `enroll`). `clock`: seconds for the timeout (monotonic)."""
        name = self.check_enrollment(name)
        if keep < 1:
            raise ConfigError(f"the number of frames to keep must be >= 1, got {keep}")
        if min_gap < 0 or (timeout is not None and timeout <= 0):
            raise ConfigError("the minimum gap must be >= 0 and the timeout > 0 seconds")
        samples: list[Sample] = []
        times: list[float] = []
        rejected: list[Rejection] = []
        similar = close = 0
        timed_out = False
        deadline = clock() + timeout if timeout is not None else None
        iterator = iter(frames)
        try:
            for item in iterator:
                frame, label, when = (*item, None)[:3]
                if deadline is not None and clock() > deadline:
                    timed_out = True
                    break
                if min_gap and when is not None and any(abs(when - t) < min_gap for t in times):
                    close += 1
                    continue
                outcome = assess(self.pipeline, frame, label, self.gates, keep_image=self.store.keep_images)
                if isinstance(outcome, Rejection):
                    rejected.append(outcome)
                    continue
                alike = [float(s.embedding @ outcome.embedding) for s in samples]
                if alike and min(alike) < self.threshold:
                    rejected.append(
                        Rejection(
                            label,
                            "other-person",
                            f"{label}: not the person of the frames "
                            f"kept before (similarity {min(alike):.4f} < threshold "
                            f"{self.threshold:.4f})",
                        )
                    )
                    continue
                if alike and max(alike) >= diversity:
                    similar += 1
                    continue
                samples.append(outcome)
                times.append(when if when is not None else 0.0)
                if len(samples) >= keep:
                    break
        finally:
            closer = getattr(iterator, "close", None)
            if closer is not None:
                closer()
        warnings = [f"{similar} good frame(s) skipped as too similar to frames kept"] if similar else []
        if close:
            warnings.append(f"{close} frame(s) skipped as less than {min_gap:g} s from a frame kept")
        if timed_out:
            warnings.append(f"capture stopped after the {timeout:g} s timeout")
        if len(samples) < keep:
            warnings.append(f"only {len(samples)} of the {keep} frames asked for passed the gates")
        return self._commit(name, samples, rejected, warnings, metadata, force=force)

    def enroll_video(
        self,
        name: str,
        source: str | int | os.PathLike,
        *,
        keep: int = 5,
        min_gap: float = 0.0,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
    ) -> EnrollmentReport:
        """Enroll from a video file or a camera index (``int``), keeping `keep` good, diverse frames (see
        `enroll_frames`). A camera is read until then or `timeout` (default 30 s)."""
        camera = isinstance(source, int)
        if not camera:
            source = os.fspath(source)
        elif timeout is None:
            timeout = CAMERA_TIMEOUT_S
        frames = video_frames(source, candidates=max(30, keep * 12), max_frames=None if camera else 600)
        return self.enroll_frames(
            name, frames, keep=keep, min_gap=min_gap, timeout=timeout, metadata=metadata, force=force
        )

    def enroll_folder(self, folder: str | os.PathLike, name: str | None = None, **kw) -> EnrollmentReport:
        """Enroll one person from every image in `folder` (named after the folder unless `name`)."""
        folder = Path(folder)
        files = image_files(folder)
        return self.enroll(name or folder.resolve().name, files, sources=[str(f) for f in files], **kw)

    def enroll_bulk(
        self,
        root: str | os.PathLike,
        progress: Callable[[int, int, EnrollmentReport], None] | None = None,
        force: bool = False,
    ) -> list[EnrollmentReport]:
        """Enroll every sub-folder of `root` as the person it is named after, one transaction per person.
        `progress(done, total, report)` is called after each person. Every folder's name is checked first:
        one that is not a valid name (`check_name`) stops the whole call before anyone is enrolled."""
        self.check_model()
        folders = person_folders(root)
        bad = []
        for name, _ in folders:
            try:
                check_name(name)
            except InvalidNameError as exc:
                bad.append(str(exc))
        if bad:
            raise InvalidNameError(
                f"{root}: {len(bad)} folder name(s) cannot be person names, nothing enrolled: "
                + "; ".join(bad[:3])
                + (" ..." if len(bad) > 3 else "")
            )
        reports = []
        for i, (name, files) in enumerate(folders, 1):
            report = self.enroll(name, files, sources=[str(f) for f in files], force=force)
            reports.append(report)
            if progress is not None:
                progress(i, len(folders), report)
        return reports

    def _commit(
        self,
        name: str,
        samples: list[Sample],
        rejected: list[Rejection],
        warnings: list[str],
        metadata: dict[str, Any] | None,
        *,
        new: bool = False,
        existing: bool = False,
        force: bool = False,
    ) -> EnrollmentReport:
        for s in samples:
            warnings.extend(s.warnings)
        if samples:
            warnings.extend(self._lookalike_warnings(name, samples))
        limit, threshold = self.gates.duplicate, self.threshold
        reasons: dict[int, str] = {}

        def keep(enrolled: Sequence[Template], candidates: Sequence[NewTemplate]) -> list[str | None]:
            # Inside the store's write transaction: `enrolled` is the person's templates as they are now.
            own = [t.embedding for t in enrolled]
            kept = list(own)
            verdicts: list[str | None] = []
            for i, t in enumerate(candidates):
                e = np.asarray(t.embedding, np.float32)
                match = max((float(k @ e) for k in own), default=None)
                best = max((float(k @ e) for k in kept), default=-1.0)
                if match is not None and match < threshold and not force:
                    reasons[i] = "other-person"
                    verdicts.append(
                        f"{t.source}: does not match the enrolled person {name!r} (best similarity "
                        f"{match:.4f} < threshold {threshold:.4f}); not added (--force, or "
                        "force=true over the API, adds it anyway)"
                    )
                elif best > limit:
                    reasons[i] = "duplicate"
                    verdicts.append(
                        f"{t.source}: near-duplicate of a template {name!r} already has "
                        f"(similarity {best:.4f} > {limit:g})"
                    )
                else:
                    verdicts.append(None)
                    kept.append(e)
            return verdicts

        news = [NewTemplate(s.embedding, s.source, s.quality, s.image) for s in samples]
        person = None
        if news:
            result = self.store.add_templates(name, news, metadata=metadata, keep=keep, new=new, create=not existing)
            added = tuple(
                EnrolledTemplate(tid, s.source, s.quality)
                for tid, s in zip(result.template_ids, samples)
                if tid is not None
            )
            rejected += [
                Rejection(samples[i].source, reasons.get(i, "duplicate"), reason)
                for i, reason in result.skipped.items()
            ]
            created, person = result.created, result.person
        else:
            added, created = (), False
            try:
                person = self.store.person(name)
            except UnknownPersonError:
                if existing:
                    raise
            if person is not None and new:
                raise PersonExistsError(person.name, self.store.location)
        total = person.n_templates if person is not None else 0
        report = EnrollmentReport(
            person.name if person is not None else name, created, added, tuple(rejected), tuple(warnings), total
        )
        log.info("enrolled %r: %d added, %d rejected", name, len(added), len(rejected))
        return report

    def _lookalike_warnings(self, name: str, samples: list[Sample]) -> list[str]:
        """Warn when a new face already matches *another* enrolled person."""
        try:
            own = self.store.person(name).id
        except UnknownPersonError:
            own = None
        hits = self.index.search(np.stack([s.embedding for s in samples]), k=1, exclude=own)
        thr = self.threshold
        found = [(s, h[0]) for s, h in zip(samples, hits) if h and h[0].similarity >= thr]
        names = self.store.names([h.person_id for _, h in found]) if found else {}
        return [
            f"{s.source}: also matches {names.get(h.person_id, h.person_id)!r} "
            f"(similarity {h.similarity:.4f} >= threshold {thr:.4f})"
            for s, h in found
        ]

    # -- 1:1 -------------------------------------------------------------------------------------------
    def verify(
        self,
        claim: str,
        probe: Any,
        *,
        rule: str = "best",
        fraction: float = DEFAULT_FRACTION,
        threshold: float | None = None,
        audit: bool = True,
    ) -> ClaimVerification:
        """Is the (largest) face of `probe` the person `claim`? Compared with every template of that person
        and decided by `rule` (see `ClaimVerification`). Raises `UnknownPersonError` for an unknown claim
        and `NoFaceError` when the probe has no face."""
        if rule not in RULES:
            raise ConfigError(f"unknown rule {rule!r}; choose one of: {', '.join(RULES)}")
        if not 0 < fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
        model = self.check_model()
        person = self.store.person(claim, metadata=False)  # decisions read no metadata
        label = describe(probe)
        face, n_found = self.pipeline.embed_largest(probe)
        thr = float(threshold) if threshold is not None else self.threshold
        source = "given by the caller" if threshold is not None else self.threshold_source
        ids, scores = self.index.person_scores(face.embeddings, person.id)
        scores = scores[0]
        if len(scores) == 0:  # a store never keeps a person without templates; be safe all the same
            raise GalleryError(f"{person.name!r} has no templates to verify against")
        ordered = np.sort(scores)[::-1]
        if rule == "best":
            score = float(ordered[0])
        elif rule == "mean":
            score = float(scores.mean())
        else:
            score = float(ordered[max(1, math.ceil(fraction * len(ordered) - 1e-9)) - 1])
        accepted = score >= thr
        sources = {t.id: t.source for t in self.store.templates(person.name)}
        evidence = tuple(
            sorted(
                (TemplateScore(int(i), float(s), sources.get(int(i), ""), bool(s >= thr)) for i, s in zip(ids, scores)),
                key=lambda t: -t.similarity,
            )
        )
        notes = (f"{n_found} faces found in the probe, the largest was used",) if n_found > 1 else ()
        result = ClaimVerification(
            claim=person.name,
            accepted=bool(accepted),
            score=score,
            rule=rule,
            threshold=thr,
            threshold_source=source,
            templates=evidence,
            matched=int((scores >= thr).sum()),
            model=model.name,
            box=tuple(float(v) for v in face.boxes[0]),
            faces_found=n_found,
            fraction=fraction if rule == "fraction" else None,
            probe=label,
            notes=notes,
            threshold_far=self.threshold_far if threshold is None else None,
        )
        if audit:
            unlogged = self.audit(
                [
                    AuditRecord(
                        "verify",
                        person.id,
                        person.id if accepted else None,
                        score,
                        thr,
                        bool(accepted),
                        rule,
                        model.name,
                    )
                ]
            )
            result = dataclasses.replace(result, notes=result.notes + unlogged)
        return result

    def audit(self, records: list[AuditRecord]) -> tuple[str, ...]:
        """Write decisions to the store's audit log: () once written, or on a read-only gallery, which
        cannot log them, the note that says so (to show with the decision)."""
        if getattr(self.store, "read_only", False):
            return (NOT_AUDITED,)
        self.store.log(records)
        return ()

    # -- 1:N -------------------------------------------------------------------------------------------
    def identify(
        self,
        probe: Any,
        *,
        top: int = 5,
        threshold: float | None = None,
        margin: float = DEFAULT_MARGIN,
        audit: bool = True,
        exclude: Collection[int] = (),
    ) -> Identification:
        """Name every face of `probe` (biggest first): the person with the best template similarity when it
        reaches the threshold and the next person is more than `margin` below, "ambiguous" when the next
        is within `margin`, else "unknown" (see `FaceIdentity`); the `top` best people are the evidence.
        People whose ids are in `exclude` are searched as if they were not enrolled (the service leaves out
        people locked out of verification)."""
        if top < 1:
            raise ConfigError(f"top must be >= 1, got {top}")
        if not 0 <= margin < 1:
            raise ConfigError(f"margin must be in [0, 1), got {margin}")
        model = self.check_model()
        label = describe(probe)
        faces = self.pipeline.embed(probe)
        thr = float(threshold) if threshold is not None else self.identify_threshold
        source = "given by the caller" if threshold is not None else self.identify_threshold_source
        hits = self.index.search(faces.embeddings, k=max(top, 2), exclude=exclude) if len(faces) else []
        names = self.store.names([h.person_id for row in hits for h in row])
        identities, records = [], []
        for i, row in enumerate(hits):
            candidates = tuple(
                Candidate(names.get(h.person_id, str(h.person_id)), h.similarity, h.template_id) for h in row
            )
            best = row[0] if row else None
            status = decide(best.similarity if best else None, row[1].similarity if len(row) > 1 else None, thr, margin)
            accepted = status == KNOWN
            identities.append(
                FaceIdentity(
                    box=tuple(float(v) for v in faces.boxes[i]),
                    person=candidates[0].person if accepted else None,
                    similarity=best.similarity if best is not None else None,
                    accepted=accepted,
                    candidates=candidates[:top],
                    status=status,
                )
            )
            records.append(
                AuditRecord(
                    "identify",
                    None,
                    best.person_id if accepted else None,
                    best.similarity if best is not None else None,
                    thr,
                    accepted,
                    "best" if status != AMBIGUOUS else f"best, ambiguous within {margin:g}",
                    model.name,
                )
            )
        notes = () if len(faces) else ("no face found",)
        if audit:
            notes += self.audit(records)
        return Identification(label, tuple(identities), thr, source, model.name, notes, margin)

    # -- maintenance -----------------------------------------------------------------------------------
    def reembed(self, pipeline) -> int:
        """Re-embed every template from its kept image with `pipeline`'s model and bind the gallery to that
        model, in one transaction. Needs a gallery created with ``keep_images=True``; returns the number of
        templates re-embedded."""
        templates = self.store.templates()
        missing = [t.id for t in templates if not t.has_image]
        if missing:
            raise GalleryError(
                f"{self.store.location}: {len(missing)} template(s) have no kept image (the "
                "gallery was not created with keep_images); re-enroll from the original images"
            )
        vectors = {}
        for t in templates:
            face, _ = pipeline.embed_largest(load_image(self.store.image(t.id), name=f"template {t.id}"))
            vectors[t.id] = face.embeddings[0]
        self.store.rebind(ModelBinding.of(pipeline.encoder.info), vectors)
        self._pipeline = pipeline
        return len(vectors)
