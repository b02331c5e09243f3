"""Enrollment into a gallery: the `Gallery` verbs enroll, enroll_frames (a capture session), enroll_video,
enroll_folder and enroll_bulk, mixed into `Gallery` by `Enrolling`.

Each image is assessed first (``siamface.gallery.enroll``: the quality gates, one `Sample` or one `Rejection`
each, no store work); then the samples kept are committed in one store transaction, which checks them against
the person as stored at that moment: a face that does not match an enrolled person's templates at the 1:1
threshold is rejected as ``other-person`` (unless forced), a near-copy of a template as ``duplicate``. A face belongs
to one person: a new person whose face already matches someone enrolled at the 1:N threshold is not created
(every image rejected as ``already-enrolled``) unless forced; a face added to an enrolled person that matches
*another* person at the 1:1 threshold is added with a warning.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..decision import Threshold, Thresholds
from ..errors import ConfigError
from ..image import describe, is_pil_image
from .enroll import QualityGates, Sample, assess, assess_many, image_files, person_folders, video_frames
from .names import InvalidNameError, check_name
from .results import EnrolledTemplate, EnrollmentReport, Rejection
from .store import ModelBinding, NewTemplate, PersonExistsError, Store, Template, UnknownPersonError

log = logging.getLogger(__name__)

#: Frames of a video kept only when below this similarity to every frame kept before (diversity), or below
#: the model's near-duplicate similarity (`ModelInfo.duplicate`) when that is lower (SFace: 0.98), so that a
#: frame kept as diverse is never refused as a near-duplicate afterwards.
VIDEO_DIVERSITY = 0.99
#: How long a camera session runs at most when no timeout is given, in seconds.
CAMERA_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class AdditionCap:
    """At most `limit` provisional templates per person made at or after `since`; new ones are made at `now`
    (ISO times in UTC, as templates' ``created``: the caller's clock)."""

    limit: int
    since: str
    now: str


class Enrolling:
    """The enrollment verbs of `Gallery`, which provides what they use (declared here)."""

    store: Store
    index: Any  # `index_for`: a GalleryIndex, or a PostgreSQL store's own
    gates: QualityGates
    pipeline: Any
    thresholds: Thresholds
    check_model: Callable[[], ModelBinding]

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
        actor: str = "",
        provisional: bool = False,
        cap: AdditionCap | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> EnrollmentReport:
        """Enroll `name` from images (paths, bytes, RGB arrays or Pillow images; one alone is one image): every image
        passes the quality gates or is rejected with its reason; the ones kept are added in one transaction (the
        person is created then, with all of them, or not at all).

        A name already enrolled (ignoring case) gets the images added, but only those whose face matches
        one of the person's *original* templates (see below) at the 1:1 threshold: the others are rejected
        as ``other-person`` unless `force`. A new person whose face already matches someone enrolled at the
        1:N threshold is not created (``already-enrolled``) unless `force`; that check is completed inside
        the store's transaction, so two enrolments of one face under two names cannot both pass. `new`:
        the name must not be enrolled yet (`PersonExistsError`); `existing`: it must be
        (`UnknownPersonError`); both decided inside the store's transaction, race-free. `actor`: who asked,
        for the audit (default: this OS user).

        `provisional`: the faces added to an enrolled person are marked so (their quality's
        ``"provisional": true``, and the audit row's): a later addition must match a template that is not
        provisional — those made when the person was created, or added by the gallery's owner or an admin — and
        they decide a claim or a search only when one of those originals matches too
        (`siamface.decision.in_originals_reach`), so additions cannot walk the person's reach, one small step
        each, towards another face (the service marks what a non-admin key adds;
        the command line, the gallery's owner, does not). `cap` (`AdditionCap`): with `provisional`, at most
        ``cap.limit`` provisional templates of the person made at or after ``cap.since``, those already stored
        included, the new ones stamped ``cap.now``; the others are rejected as ``too-many-additions``,
        decided inside the store's write transaction, so that every process sharing the gallery counts the same
        stored templates and none can add past the cap, before or after a restart. `before_commit`: called once
        the images are assessed (the long part), right before the transaction; what it raises stops the
        enrolment with nothing written (the service: the key that asked was revoked meanwhile)."""
        name = self.check_enrollment(name, new=new, existing=existing)
        images = _as_list(images)
        labels = list(sources) if sources is not None else [describe(i) for i in images]
        if len(labels) != len(images):  # zip() dropped the images past the last source without a word
            raise ConfigError(f"{len(images)} image(s) and {len(labels)} source(s): give one source per image")
        samples, rejected, warnings = [], [], []
        for outcome in assess_many(self.pipeline, list(zip(images, labels)), self.gates, self.store.keep_images):
            if isinstance(outcome, Rejection):
                rejected.append(outcome)
            else:
                samples.append(outcome)
        if before_commit is not None:
            before_commit()
        return self._commit(
            name,
            samples,
            rejected,
            warnings,
            metadata,
            new=new,
            existing=existing,
            force=force,
            actor=actor,
            provisional=provisional,
            cap=cap,
        )

    def recent_provisional(self, name: str, since: str) -> list[str]:
        """When each provisional template of `name` made at or after `since` (ISO) was made, oldest first."""
        return sorted(t.created for t in self.store.templates(name) if _recent_provisional(t, since))

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
        diversity: float | None = None,
        min_gap: float = 0.0,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
        force: bool = False,
        clock: Callable[[], float] = time.monotonic,
        actor: str = "",
    ) -> EnrollmentReport:
        """Enroll `name` from a capture session: `frames` are `CaptureFrame`s or (RGB image, label[, time]) tuples
        (see `video_frames`). Keeps up to `keep` frames that pass the gates, each below `diversity` (None:
        `VIDEO_DIVERSITY` or the model's near-duplicate similarity, the lower)
        similarity to the frames already kept and at least `min_gap` seconds away from them (frames too
        close in time are skipped before any work), and the same person as them (at or above the threshold:
        a frame where someone else is the largest face is rejected as ``other-person``). The first frame kept
        says who the person is; when as many frames or more show someone else as show them (a bystander
        first, the person after), which one is `name` cannot be told and nothing is enrolled. Stops at `keep`
        frames, the end of the frames, or after `timeout` seconds; everything kept is added in one transaction. An enrolled person's new frames must
        match their templates unless `force` (see `enroll`). `clock`: seconds for the timeout (monotonic)."""
        name = self.check_enrollment(name)
        if keep < 1:
            raise ConfigError(f"the number of frames to keep must be >= 1, got {keep}")
        if not min_gap >= 0 or (timeout is not None and not 0 < timeout < float("inf")):
            raise ConfigError("the minimum gap must be >= 0 and the timeout > 0 seconds")
        samples: list[Sample] = []
        times: list[float] = []
        rejected: list[Rejection] = []
        similar = close = 0
        timed_out = False
        same_person = self.thresholds.verify
        deadline = clock() + timeout if timeout is not None else None
        if diversity is None:
            diversity = min(VIDEO_DIVERSITY, self._duplicate())
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
                if alike and not same_person.accepts(min(alike)):
                    rejected.append(
                        Rejection(
                            label,
                            "other-person",
                            f"{label}: not the person of the frames "
                            f"kept before (similarity {min(alike):.4f} < threshold "
                            f"{same_person.value:.4f})",
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
        others, kept_person = sum(r.reason == "other-person" for r in rejected), len(samples) + similar
        if samples and others >= kept_person:  # the first face kept may be a bystander's: never guessed
            warnings.append(
                f"{others} frame(s) show another person than the {kept_person} frame(s) of the face kept first: "
                f"which one is {name} cannot be told, nothing enrolled (use a capture of {name} alone)"
            )
            samples = []
        if len(samples) < keep:
            warnings.append(f"only {len(samples)} of the {keep} frames asked for passed the gates")
        return self._commit(name, samples, rejected, warnings, metadata, force=force, actor=actor)

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

    def _duplicate(self) -> float:
        """The near-duplicate similarity in force: the gates' own, else the model's (`ModelInfo.duplicate`)."""
        return self.gates.duplicate if self.gates.duplicate is not None else self.pipeline.encoder.info.duplicate

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
        actor: str = "",
        provisional: bool = False,
        cap: AdditionCap | None = None,
    ) -> EnrollmentReport:
        for s in samples:
            warnings.extend(s.warnings)
        limit, threshold, one_face = self._duplicate(), self.thresholds.verify, self.thresholds.identify
        since = self.store.last_template_id() if samples and not force else None  # before any check below
        reasons: dict[int, str] = {}
        shown = name  # the enrolled person's name as stored (names match ignoring case), for the messages
        enrolled = False
        if samples:
            try:
                shown = self.store.person(name, metadata=False).name
                enrolled = True
            except UnknownPersonError:  # a new person (or removed meanwhile): the store decides below
                pass
        if samples and not enrolled and not existing and not force:
            clashes = self._already_enrolled(samples)
            if clashes:
                rejected += clashes
                samples = []
        if samples and enrolled and not force:
            elsewhere = self._enrolled_elsewhere(name, samples)
            if elsewhere:
                rejected += [r for _, r in elsewhere]
                taken = {i for i, _ in elsewhere}
                samples = [s for i, s in enumerate(samples) if i not in taken]
        if samples:
            warnings.extend(self._lookalike_warnings(name, samples))

        def keep(
            enrolled: Sequence[Template], candidates: Sequence[NewTemplate], recent: Sequence[Template] = ()
        ) -> list[str | None]:
            # Inside the store's write transaction: `enrolled` is the person's templates as they are now,
            # `recent` everyone's added since the checks above (by another writer meanwhile).
            own = [t.embedding for t in enrolled if not t.quality.get("provisional")]
            own = own or [t.embedding for t in enrolled] or _reference(candidates, threshold)
            kept = [t.embedding for t in enrolled]
            mine = {t.person_id for t in enrolled}
            others = [t for t in recent if t.person_id not in mine]
            allowance = None
            if cap is not None and marked:
                allowance = cap.limit - sum(1 for t in enrolled if _recent_provisional(t, cap.since))
            clash = _clash(candidates, others, one_face) if not force else {}
            if clash and not enrolled:  # a new person: not created at all (as `_already_enrolled`)
                clash = {i: clash.get(i, max(clash.values())) for i in range(len(candidates))}
            verdicts: list[str | None] = []
            for i, t in enumerate(candidates):
                e = np.asarray(t.embedding, np.float32)
                if i in clash:
                    reasons[i] = "already-enrolled"
                    verdicts.append(
                        f"{t.source}: the face already matches a person enrolled meanwhile (similarity "
                        f"{clash[i]:.4f} >= 1:N threshold {one_face.value:.4f}); a face belongs to one person"
                    )
                    continue
                match = max((float(k @ e) for k in own), default=None)
                best = max((float(k @ e) for k in kept), default=-1.0)
                if match is not None and not threshold.accepts(match) and not force:
                    reasons[i] = "other-person"
                    whom = f"the enrolled person {shown!r}" if enrolled else "the face of the person's other images"
                    verdicts.append(
                        f"{t.source}: does not match {whom} (best similarity "
                        f"{match:.4f} < threshold {threshold.value:.4f}); not added (--force, or "
                        "force=true over the API, adds it anyway)"
                    )
                elif best > limit:
                    reasons[i] = "duplicate"
                    verdicts.append(
                        f"{t.source}: near-duplicate of a template {shown!r} already has "
                        f"(similarity {best:.4f} > {limit:g})"
                    )
                elif allowance is not None and allowance <= 0:
                    reasons[i] = "too-many-additions"
                    verdicts.append(
                        f"{t.source}: {shown!r} already has {cap.limit} provisional faces added since {cap.since}; "
                        "not added (an admin's key adds more)"
                    )
                else:
                    verdicts.append(None)
                    kept.append(e)
                    allowance = allowance - 1 if allowance is not None else None
            return verdicts

        marked = {"provisional": True} if provisional and enrolled and not force else {}
        news = [NewTemplate(s.embedding, s.source, {**s.quality, **marked}, s.image) for s in samples]
        person = None
        if news:
            result = self.store.add_templates(
                name,
                news,
                metadata=metadata,
                keep=keep,
                new=new,
                create=not existing,
                actor=actor,
                forced=force,
                since=since,
                created=cap.now if cap is not None and marked else None,
            )
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
        return report

    def _enrolled_as(
        self, samples: list[Sample], exclude: Collection[int] | None = None
    ) -> list[tuple[int, str, float]]:
        """(index, name, similarity) of each sample whose face already matches an enrolled person (other than
        those in `exclude`) at the 1:N threshold: a face belongs to one person."""
        hits = self.index.search(np.stack([s.embedding for s in samples]), k=1, exclude=exclude)
        found = [(i, h[0]) for i, h in enumerate(hits) if h and self.thresholds.identify.accepts(h[0].similarity)]
        names = self.store.names([h.person_id for _, h in found]) if found else {}
        return [(i, names.get(h.person_id, f"person {h.person_id}"), h.similarity) for i, h in found]

    def _already_enrolled(self, samples: list[Sample]) -> list[Rejection]:
        """When a face of a new person already matches someone enrolled at the 1:N threshold, every sample
        rejected as ``already-enrolled`` (naming whom: the gallery's owner reads this; the service names no
        one to a key that may not force), else []."""
        found = self._enrolled_as(samples)
        if not found:
            return []
        _, who, similarity = max(found, key=lambda f: f[2])
        return [
            Rejection(
                s.source,
                "already-enrolled",
                f"{s.source}: the face already matches the enrolled person {who!r} (similarity "
                f"{similarity:.4f} >= 1:N threshold {self.thresholds.identify.value:.4f}); a face belongs to one "
                "person, so no new person was created (--force, or an admin's force=true, enrols it anyway)",
            )
            for s in samples
        ]

    def _enrolled_elsewhere(self, name: str, samples: list[Sample]) -> list[tuple[int, Rejection]]:
        """A face added to an enrolled person that already matches *another* enrolled person at the 1:N
        threshold is refused as ``already-enrolled`` (index, rejection), as a new person's would be: else one
        enrol key could add someone else's face under its person's name (after walking its templates towards
        that face with blends, each matching the one before)."""
        own = self.store.person(name, metadata=False).id
        return [
            (
                i,
                Rejection(
                    samples[i].source,
                    "already-enrolled",
                    f"{samples[i].source}: the face already matches the enrolled person {who!r} (similarity "
                    f"{similarity:.4f} >= 1:N threshold {self.thresholds.identify.value:.4f}); a face belongs to "
                    "one person, so it was not added (--force, or an admin's force=true, adds it anyway)",
                ),
            )
            for i, who, similarity in self._enrolled_as(samples, exclude=(own,))
        ]

    def _lookalike_warnings(self, name: str, samples: list[Sample]) -> list[str]:
        """Warn when a new face already matches *another* enrolled person."""
        try:
            own = self.store.person(name).id
        except UnknownPersonError:
            own = None
        hits = self.index.search(np.stack([s.embedding for s in samples]), k=1, exclude=own)
        thr = self.thresholds.verify
        found = [(s, h[0]) for s, h in zip(samples, hits) if h and thr.accepts(h[0].similarity)]
        names = self.store.names([h.person_id for _, h in found]) if found else {}
        return [
            f"{s.source}: also matches {names.get(h.person_id, h.person_id)!r} "
            f"(similarity {h.similarity:.4f} >= threshold {thr.value:.4f})"
            for s, h in found
        ]


def _as_list(images: Any) -> list[Any]:
    """The images offered: one image given alone (a path, bytes, an RGB or gray array, a Pillow image) as a list of
    one. `list` of it took ``"alice.jpg"`` for nine images named by its letters (each "file not found", nothing
    enrolled), bytes for numbers and an array for its rows."""
    single = isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)) or is_pil_image(images)
    if isinstance(images, np.ndarray):
        single = images.ndim == 2 or (images.ndim == 3 and images.shape[2] in (1, 3, 4))
    if single:
        return [images]
    try:
        return list(images)
    except TypeError:  # None: "'NoneType' object is not iterable"
        raise ConfigError(f"images must be an image or a list of images, not {type(images).__name__}") from None


def _clash(candidates: Sequence[NewTemplate], others: Sequence[Template], threshold) -> dict[int, float]:
    """{candidate index: best similarity} of the candidates that match one of `others` (templates of other
    people) at `threshold` (the 1:N one)."""
    if not others or not candidates:
        return {}
    scores = (
        np.stack([np.asarray(c.embedding, np.float32) for c in candidates]) @ np.stack([t.embedding for t in others]).T
    )
    best = scores.max(axis=1)
    return {i: float(b) for i, b in enumerate(best) if threshold.accepts(float(b))}


def _recent_provisional(template: Template, since: str) -> bool:
    """A provisional template made at or after `since` (ISO times in UTC compare as strings)."""
    return bool(template.quality.get("provisional")) and template.created >= since


def _reference(candidates: Sequence[NewTemplate], threshold: Threshold) -> list[np.ndarray]:
    """A new person's reference face: of the faces offered, the one that matches the most of the others at the
    1:1 threshold (the first such, in order). Every face kept must match it, as an addition must match the
    person's originals: one enrolment cannot make one person of several faces (a stranger's photo among
    someone's, or a walk of blends), whoever each would open the door to."""
    if not candidates:
        return []
    faces = np.stack([np.asarray(t.embedding, np.float32) for t in candidates])
    matches = threshold.accepts(faces @ faces.T).sum(axis=1)
    return [faces[int(np.argmax(matches))]]
