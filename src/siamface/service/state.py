"""`Service`: what one server process holds — the pipeline (models loaded once, at start-up), the gallery,
the API keys, the lock-out book, the optional liveness model and challenge sessions — and the blocking work
each route needs.

Every method here that decodes an image or runs a model is synchronous and is called by the routes in a
worker thread (`run`), never on the event loop; at most `settings.workers` of them run at once, so a burst of
requests queues instead of oversubscribing the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from .. import __version__, _budget
from .._onnx import providers
from ..decision import UNKNOWN, Liveness, Threshold, gate, in_reach
from ..errors import ConfigError, NoFaceError, SiamfaceError
from ..gallery.enrolling import AdditionCap
from ..gallery.results import ClaimVerification
from ..gallery.store import (
    AuditRecord,
    DamagedGalleryError,
    GalleryReembeddedError,
    GalleryUnavailableError,
    UnknownPersonError,
)
from ..image import load_image
from .errors import ServiceError, from_siamface
from .keys import KeyStore, allows
from .lockout import Lockout, audited_denial_ages, iso
from .quota import DecisionQuota
from .sessions import PASSED, PENDING, LivenessSessions, Session
from .settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Seconds a person's lock-out read from the gallery's audit stands for identification (`Service.audit_locked`).
AUDIT_LOCK_TTL_S = 5.0


def actor(key: str | None) -> str:
    """Who an audit row says asked: the API key's id."""
    return f"key:{key}" if key else "key:?"


@dataclasses.dataclass(frozen=True)
class Unenrolled:
    """A claimed name that nobody enrolled has, as a key that may not list people sees it: claimed, checked,
    denied, counted towards a lock-out and audited like a wrong face for an enrolled name, so that the answer
    says nothing of who is enrolled. `id`: its key in the lock-out book and the sessions, and its audit
    reference (`Store.unenrolled_ref`: a digest of the name folded as the store folds names, keyed by the
    gallery's secret, so that two spellings share a lock-out exactly when they would name one enrolled
    person, and every server sharing the gallery counts them together; never a person's id)."""

    name: str
    id: str


#: What a claim's answer keeps for a key below enrol (no score, no template count, nothing that differs
#: between a name nobody has and an enrolled one's wrong face).
CLAIM_FIELDS = (
    "accepted",
    "rule",
    "fraction",
    "threshold",
    "threshold_source",
    "threshold_far",
    "model",
    "probe",
    "box",
    "faces_found",
)
#: Liveness evidence never shown to a key below admin: exact scores, which a client could climb.
SCORES = frozenset({"score", "cnn", "colour", "lowest_score"})


def without_scores(evidence: Any) -> Any:
    """`evidence` (liveness dicts, nested) without exact scores (`SCORES`)."""
    if isinstance(evidence, dict):
        return {k: without_scores(v) for k, v in evidence.items() if k not in SCORES}
    return evidence


@dataclasses.dataclass(frozen=True)
class Upload:
    """An uploaded image: its bytes and a label for messages (the form field, and the file's base name)."""

    data: bytes
    label: str


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeyStore(settings.keys_file, guarded=True)
        self.lockout = Lockout(settings.lockout_failures, settings.lockout_window_s, settings.lockout_s)
        self.quota = DecisionQuota(settings.decisions_per_minute)
        self.wall: Callable[[], float] = time.time  # the additions window's (compared with stored times)
        self.pipeline = None
        self.gallery = None
        self.liveness = None
        from ..liveness.session import CaptureRules

        self.sessions = LivenessSessions(
            ttl=settings.session_ttl_s,
            max_sessions=settings.max_sessions,
            max_frames=settings.max_session_frames,
            rules=CaptureRules(timeout=settings.challenge_s, max_gap=settings.max_frame_gap_s),
            mode="active" if settings.active_liveness else "passive",
            prompts=settings.challenges,
            per_key=settings.sessions_per_key,
            per_person=settings.sessions_per_person,
        )
        from .library import PhotoLibrary

        self.library = PhotoLibrary(settings.library)
        self.created_gallery = False
        self._audit_locks: dict[int, tuple[float, float]] = {}  # person id -> (when read, locked until): lock-out clock
        self._audit_lock_guard = threading.Lock()
        self._refs: dict[int, str] = {}  # person id -> the reference of the person it was seen for (`notice`)
        self.model_note: str | None = None
        self.warnings: list[str] = []  # said at start (serve prints them)
        self.audit_state = "ok"  # "broken": the audit chain did not verify at start
        self._limiter: anyio.CapacityLimiter | None = None
        self.clock: Callable[[], float] = time.monotonic  # the time budget's

    # -- life ------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Load the models, open (or create) the gallery and warm the chain up. Blocking; once per process."""
        from ..factory import build_pipeline, open_gallery

        s = self.settings
        writable, readable = self.keys.exposure()
        if writable:  # whoever may write it may add an admin key
            raise ConfigError(
                f"{writable}: anyone who may change the keys file may give themselves an admin key; make it "
                "yours alone (chmod 600, in a folder only you may write) before serving"
            )
        if readable:
            self.warnings.append(f"{readable}: the keys' hashes are for this server's user only (chmod 600)")
        self._refuse_exposed_gallery()
        self.pipeline, self.model_note = build_pipeline(s, gallery=s.gallery)
        self.pipeline.thresholds  # noqa: B018 - resolved and range-checked now: a bad one stops the start
        self.sessions.same_person = float(self.pipeline.encoder.info.threshold)  # one session, one person
        if s.sessions_needed and "keypoints" not in self.pipeline.detect(np.zeros((64, 64, 3), np.uint8)).data:
            raise ConfigError(
                f"--liveness {s.liveness} needs a detector with 5 keypoints (retinaface, mtcnn), not {s.detector!r}"
            )
        from ..gallery.backends import gallery_exists

        self.created_gallery = not gallery_exists(s.gallery)
        self.gallery = open_gallery(
            s.gallery, self.pipeline, create=self.created_gallery, keep_images=s.keep_images, fpir=s.fpir
        )
        self.gallery.check_model()
        self.gallery.thresholds  # noqa: B018 - an FPIR target with a fixed 1:N threshold stops the start
        if self.gallery.store.read_only:
            log.warning(
                "%s is read-only: enrolment and changes are refused, decisions are not audited",
                self.gallery.store.location,
            )
        from ..gallery import QualityGates

        self.gallery.gates = QualityGates(min_face=s.min_enroll_face)
        if s.liveness in ("passive", "both"):
            from ..liveness import PassiveCheck

            self.liveness = PassiveCheck(s.liveness_model, camera=s.camera)
        # Warm-up: build both models and run each once, so the first request does not pay for it.
        self.pipeline.embed(np.full((120, 120, 3), 127, np.uint8))
        self.gallery.index.search(np.zeros((1, self.pipeline.encoder.info.embedding_size), np.float32), k=1)
        check = getattr(self.gallery.index, "check", None)
        if check is not None:  # an index in the database reads no template above: check them all once
            check()
        self._check_audit()

    def _refuse_exposed_gallery(self) -> None:
        """ConfigError when other users may change the gallery or a calibration in force
        (`siamface.gallery.core.refuse_exposed`)."""
        from ..gallery.core import refuse_exposed

        refuse_exposed(self.settings.gallery, "before serving")

    def _check_audit(self) -> None:
        """Verify the audit's hash chain once, at start. A broken chain (a row edited or removed) is said
        loudly — an ERROR in the log, a warning at start, ``"audit": "broken"`` in /v1/health — but does not
        stop the server: refusing would let whoever can damage one row stop every door, and the evidence
        stays for `siamface gallery audit --verify` (new rows chain on from the head as it is)."""
        verified = self.gallery.store.verify_audit()
        if verified.intact:
            return
        self.audit_state = "broken"
        row, problem = verified.problems[0]
        text = (
            f"the gallery's audit log does not verify ({len(verified.problems)} problem(s), the first: "
            f"{'row ' + str(row) + ': ' if row is not None else ''}{problem}): it was changed outside siamface; "
            "keep a copy and see siamface gallery audit --verify"
        )
        log.error("%s", text)
        self.warnings.append(text)

    def close(self) -> None:
        if self.gallery is not None:
            self.gallery.close()

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run blocking work in a worker thread, at most `settings.workers` at a time, within the request's
        time budget (`siamface._budget`: set by its first call, waiting for a worker included)."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.settings.workers)
        _budget.start(self.settings.time_budget_s, self.clock)
        return await anyio.to_thread.run_sync(
            functools.partial(self._guarded, fn, *args, **kwargs), limiter=self._limiter
        )

    def _guarded(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn`, with the store's driver errors of an outage as `GalleryUnavailableError`, and a template of
        another size read after the gallery was re-embedded under the server as `GalleryReembeddedError`."""
        _budget.check("waiting for a worker")
        store = getattr(self.gallery, "store", None)
        outages = getattr(store, "outages", None)
        with outages() if outages is not None else contextlib.nullcontext():
            try:
                return fn(*args, **kwargs)
            except DamagedGalleryError:
                self.gallery.check_model()  # raises GalleryReembeddedError when that is the cause
                raise

    @contextlib.contextmanager
    def _audited(self) -> Iterator[None]:
        """A decision whose audit row cannot be written (a full disk) is not given: 503 `not-audited`."""
        try:
            yield
        except GalleryUnavailableError as exc:
            if exc.reason != "full":
                raise
            raise ServiceError(
                503,
                "not-audited",
                "the decision could not be written to the audit log (the gallery's disk is full or failing), "
                "so it is not given; retry later",
                headers={"Retry-After": "5"},
            ) from exc

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 200 ``ok``, or 503 ``degraded`` with what is wrong with the gallery
        (``unreachable``: its database cannot be reached; ``reembedded``: re-embedded under this server)."""
        info = self.pipeline.encoder.info
        body = {
            "status": "ok",
            "version": __version__,
            "model": info.name,
            "detector": getattr(self.pipeline.detector, "name", str(self.settings.detector)),
            "liveness": self.settings.liveness,
            "providers": list(providers()),
            "gallery": "ok",
            "audit": self.audit_state,
        }
        try:
            self._guarded(self.gallery.check_model)
        except GalleryUnavailableError as exc:
            body["gallery"] = "unreachable" if exc.reason == "unreachable" else "storage-full"
        except GalleryReembeddedError:
            body["gallery"] = "reembedded"
        if body["gallery"] != "ok":
            body["status"] = "degraded"
            return 503, body
        return 200, body

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in an answer (where the gallery lives)."""
        g = self.settings.gallery
        if isinstance(g, str):  # a postgresql:// URL: the URL, with and without its password
            from ..gallery.postgres import redact

            return (g, redact(g), str(self.settings.keys_file))
        folder = () if self.settings.library is None else (str(self.settings.library),)
        return (str(g.resolve()), str(g), str(g.resolve().parent), str(self.settings.keys_file), *folder)

    # -- blocking work -----------------------------------------------------------------------------------
    def decode(self, upload: Upload) -> np.ndarray:
        _budget.check("decoding")
        return load_image(upload.data, max_pixels=self.settings.max_pixels, name=upload.label)

    def _liveness(self, image: np.ndarray, box) -> dict[str, Any] | None:
        if self.liveness is None:
            return None  # no time budget check here: a decision written to the audit log is answered
        return self.liveness.score(image, box).to_dict()

    def verify_pair(self, a: Upload, b: Upload, scores: bool = True) -> dict[str, Any]:
        """The evidence of `siamface verify A B`; with the passive check on, each face's liveness (without
        its exact scores unless `scores`: a key below admin cannot climb them)."""
        images = [self.decode(a), self.decode(b)]
        try:
            result = self.pipeline.verify(images[0], images[1])
        except NoFaceError:
            missing = [u.label for u, img in zip((a, b), images) if len(self.pipeline.detect(img)) == 0]
            raise ServiceError(422, "no-face", f"no face found in {' and '.join(missing) or 'an image'}") from None
        payload = result.to_dict()
        if self.liveness is not None:
            payload["liveness"] = {
                "a": self._liveness(images[0], result.box_a),
                "b": self._liveness(images[1], result.box_b),
            }
            if not scores:
                payload["liveness"] = without_scores(payload["liveness"])
        return payload

    def person(self, name: str):
        return self.gallery.store.person(name, metadata=False)  # a claim reads no metadata

    def claimed(self, name: str, reveal: bool):
        """The person a claim names; for a name nobody has, `UnknownPersonError` (404) when `reveal` (keys
        that may list people anyway), else an `Unenrolled` (decided as a wrong face: no oracle of names)."""
        try:
            return self.person(name)
        except UnknownPersonError:
            if reveal:
                raise
            from ..gallery.names import lookup_form

            return Unenrolled(lookup_form(name), self.gallery.store.unenrolled_ref(name))

    def verify_claim(
        self,
        person,
        probe: Upload,
        rule: str,
        fraction: float,
        session: Session | None = None,
        key: str | None = None,
        role: str | None = "admin",
        sent: str = "",
    ) -> tuple[bool, dict[str, Any]]:
        """(granted, evidence). Granted needs the face to match and, with liveness on, a passed capture
        `session` whose faces are all the person (and, with the passive check on, a live probe). The audit row
        says what the client is told (`granted`, liveness included) and which `key` asked. An `Unenrolled`
        person is denied after the same work (its audit row names nobody, rule ``unknown-person``, and keeps the
        name's lock-out key, a digest, so that every server counts its denials); a key of
        `role` below enrol is told no score and nothing that tells the two apart (`claim`: the name as `sent`),
        and below admin no exact liveness score."""
        image = self.decode(probe)
        try:
            if isinstance(person, Unenrolled):
                result = self._nobody(person, image, rule, fraction)
            else:
                result = self.gallery.verify(person.name, image, rule=rule, fraction=fraction, audit=False)
        except NoFaceError:
            raise ServiceError(422, "no-face", f"no face found in {probe.label}") from None
        result = dataclasses.replace(result, probe=probe.label)
        payload = result.to_dict()
        live = self._liveness(image, result.box)
        evidence = Liveness(live=None if live is None else bool(live["live"]))
        if session is not None:
            active = self._challenge_evidence(session, person, result)
            payload["liveness"] = {"mode": self.settings.liveness, "session": active}
            if live is not None:
                payload["liveness"]["passive"] = live
            evidence = dataclasses.replace(
                evidence,
                challenge=active["passed"],
                challenge_reason=active.get("reason", ""),
                same_person=active["same_person"],
                lowest=active["lowest_score"],
            )
        elif live is not None:
            payload["liveness"] = live
        granted = gate(result, evidence, who=person.name)
        nobody = isinstance(person, Unenrolled)
        record = AuditRecord(
            "verify",
            person.id,  # a name nobody has: its lock-out key (a digest of the name), as the store keeps it
            person.id if granted.accepted else None,
            result.score,
            result.threshold,
            bool(granted.accepted),
            "unknown-person" if nobody else result.rule,
            result.model,
            actor(key),
            # the session's failure has its own row (`count_session_failures`): this one is not counted again
            {"counted": True} if session is not None and session.counted and not granted.accepted else {},
        )
        _budget.check("writing the decision")
        self.refuse_revoked(key)  # a key revoked while the probe was embedded is given no decision
        with self._audited():  # a decision that cannot be audited is not given
            unlogged = self.gallery.audit([record])
        payload["notes"] = list(granted.notes) + list(unlogged)
        payload["granted"] = granted.accepted
        if not allows(role, "enrol"):  # the same fields whether the name is enrolled or not
            shown = {k: payload[k] for k in CLAIM_FIELDS}
            shown["claim"] = sent
            if "liveness" in payload:
                shown["liveness"] = without_scores(payload["liveness"])
            payload = {**shown, "notes": list(result.notes) + list(unlogged), "granted": granted.accepted}
        elif not allows(role, "admin") and "liveness" in payload:
            payload["liveness"] = without_scores(payload["liveness"])
        return granted.accepted, payload

    def _nobody(self, person: Unenrolled, image: np.ndarray, rule: str, fraction: float) -> ClaimVerification:
        """A claim of a name nobody has, decided as a face that matches none of the person's templates after
        the same work (the probe's largest face found and embedded)."""
        from ..decision import check_rule
        from ..decision import claim as decide_claim

        check_rule(rule, fraction)
        model = self.gallery.check_model()
        face, n_found = self.pipeline.embed_largest(image)
        chosen = self.gallery.thresholds.verify
        # the reads a claim of an enrolled person makes (its templates' scores, their sources), on nobody: the
        # answer comes after the same round trips to the database
        self.gallery.index.person_scores(face.embeddings, 0)
        with contextlib.suppress(UnknownPersonError):
            self.gallery.store.templates(person.name)
        return decide_claim(np.full(1, -1.0, np.float32), chosen, rule, fraction).extend(
            ClaimVerification,
            claim=person.name,
            rule=rule,
            templates=(),
            matched=0,
            model=model.name,
            box=tuple(float(v) for v in face.boxes[0]),
            faces_found=n_found,
            fraction=fraction if rule == "fraction" else None,
            probe="",
            notes=(f"{n_found} faces found in the probe, the largest was used",) if n_found > 1 else (),
            threshold_far=chosen.far,
        )

    def _challenge_evidence(self, session: Session, person, result: ClaimVerification) -> dict[str, Any]:
        """The session's result, and whether every face it saw is `person` (at the 1:1 threshold `result`
        was decided at)."""
        evidence = session.evidence()
        threshold = Threshold(result.threshold, result.threshold_source)
        lowest = None
        if session.faces and isinstance(person, Unenrolled):
            lowest = -1.0
        elif session.faces:
            lowest = float(self.gallery.best_within_reach(np.stack(session.faces), person.id, threshold).min())
        evidence["passed"] = session.state == PASSED
        evidence["lowest_score"] = None if lowest is None else round(lowest, 4)
        evidence["same_person"] = lowest is not None and threshold.accepts(lowest)
        return evidence

    def denials(self, person) -> list[float]:
        """The ages in seconds (by `wall`) of `person`'s denied claims in the gallery's audit since their last
        granted one, as far back as a lock-out they could still cause reaches (`Lockout.merge`): every
        server sharing the gallery, and this one before a restart, audited them. A name nobody has is counted
        alike, by its lock-out key (`Unenrolled.id`, which its audit rows keep), so that the lock-out is no
        oracle of who is enrolled, on one server or several."""
        return self._denial_ages(person.id)

    def _denial_ages(self, person_id) -> list[float]:
        s = self.settings
        return audited_denial_ages(self.gallery.store, person_id, s.lockout_window_s + s.lockout_s, self.wall())

    def audit_locked(self, hits, locked: frozenset | set, in_force) -> set[int]:
        """The people among an identification's candidates `hits` (each face's, from its one search) whom it
        could name or show (at or above the 1:N threshold less the server's margin), not in `locked` (this
        process's book), whom the denials in the gallery's audit lock out: audited by another server sharing
        the gallery, or by this one before a restart, which this process's book has not read (a claim reads
        them, identification did not). Each person's denials are read once per `AUDIT_LOCK_TTL_S`
        (`_audit_locks`). `in_force`: the gallery's thresholds."""
        floor = in_force.identify.value - in_force.margin
        near = {h.person_id for row in hits for h in row if h.similarity >= floor and h.person_id not in locked}
        now = self.lockout.clock()
        found = set()
        for person_id in sorted(near):
            with self._audit_lock_guard:
                checked = self._audit_locks.get(person_id)
            if checked is None or now - checked[0] > AUDIT_LOCK_TTL_S:
                checked = (now, now + self.lockout.lock_left(self._denial_ages(person_id)))
                with self._audit_lock_guard:
                    if len(self._audit_locks) >= 4096:  # forget the stale ones
                        self._audit_locks = {
                            p: c for p, c in self._audit_locks.items() if now - c[0] <= AUDIT_LOCK_TTL_S
                        }
                    self._audit_locks[person_id] = checked
            if checked[1] > now:
                found.add(person_id)
        return found

    def stored_denials(self, person) -> Callable[[], Any]:
        """`denials` read in a worker (`run`), for `Lockout.attempt`."""
        return functools.partial(self.run, self.denials, person)

    async def count_session_failures(self) -> None:
        """Hand the sessions that failed or expired unused to the lock-out book (on the event loop) and to the
        gallery's audit, as denied claims of their person (rule ``liveness-session``, the session's key), so
        that a restarted server and every server sharing the gallery count them too (`denials`). One that
        cannot be audited (the gallery out of reach, the request's time budget spent) is logged and still
        counted here."""
        failed = self.sessions.failed()
        for session in failed:
            self.lockout.record_failure(session.person)
        if not failed:
            return
        try:
            await self.run(self._audit_failed_sessions, failed)
        except (ServiceError, SiamfaceError) as exc:
            log.warning("%d failed liveness session(s) not written to the audit: %s", len(failed), exc)

    def _audit_failed_sessions(self, sessions: list[Session]) -> None:
        threshold = self.gallery.thresholds.verify.value
        model = self.pipeline.encoder.info.name
        self.gallery.audit(
            [
                AuditRecord("verify", s.person, None, None, threshold, False, "liveness-session", model, actor(s.key))
                for s in sessions
            ]
        )

    def liveness_session(self, session_id: str | None, key: str | None, person) -> Session | None:
        """The capture session a claim verification uses up (None when liveness is off): with liveness on,
        a single posted image is never live."""
        if not self.settings.sessions_needed:
            return None
        if not session_id:
            raise ServiceError(
                400,
                "liveness-session-required",
                f"this server's liveness is {self.settings.liveness}: a claim is granted only through a live "
                f"capture, never an uploaded image. Open a session (POST /v1/liveness/sessions with the claim), "
                f"send camera frames until it passes, then send its id as 'liveness_session'",
            )
        return self.sessions.use(session_id, key, person.id)

    def liveness_frame(self, session_id: str, key: str | None, frame: Upload, arrived: float) -> dict[str, Any]:
        """One camera frame for a capture session, `arrived` at that time of the server's clock: its face (the
        one that continues the session: `follow`) fed to the session (with the passive check's verdict in modes passive and both); the session's
        state."""
        from ..liveness.session import follow, see

        session = self.sessions.frame_slot(session_id, key)
        if session.state != PENDING:
            return self.sessions.describe(session)
        image = self.decode(frame)
        faces = self.pipeline.detect(image)
        pick = follow(faces.boxes, session.capture.previous, session.capture.rules.max_jump)
        if pick is None:  # no face, or only faces far from the session's
            state = self.sessions.feed(session, arrived, None, None)
            if state["state"] == PENDING:
                raise ServiceError(422, "no-face", f"no face found in {frame.label}", extra={"session": state})
            return state
        largest = self.pipeline.embed(image, faces[pick : pick + 1])
        box = largest.boxes[0]
        passive = self.liveness if self.settings.passive_frames else None
        seen, _ = see(image, box, largest.data["keypoints"][0], passive, largest.embeddings[0])
        return self.sessions.feed(session, arrived, seen, largest.embeddings[0])

    def identify(
        self,
        probe: Upload,
        top: int,
        margin: float | None,
        locked=frozenset(),
        key: str | None = None,
        scores: bool = True,
        fpir: float | None = None,
        counted: bool = False,
    ) -> dict[str, Any]:
        """Who is in the probe, revealing no more than a decision needs: people in `locked` (locked out of
        verification) are searched as if not enrolled, an unknown face carries no score and no candidates,
        and a named or ambiguous one only the candidates within the server's margin of the threshold or
        above it (so that identification is no score oracle for probing anybody). The client's `margin` may
        make the decision stricter (more faces ambiguous), never laxer, and never shows more candidates:
        the server's margin bounds both. So does the client's `fpir`: a lower FPIR target than the server's
        is taken, a higher one is not (the server's is used), and with a fixed 1:N threshold it is ignored.
        `counted` (a key below admin, whose route took one decision for the image): each face past the first is
        a decision of its own, taken from `key`'s bucket once found (`DecisionQuota.take_up_to`): those it
        cannot pay for are not identified (a note says so)."""
        image = self.decode(probe)
        in_force = self.gallery.thresholds
        policy = in_force.margin
        decided = policy if margin is None else max(float(margin), policy)
        target = None
        if fpir is not None and in_force.fpir is not None:
            target = min(float(fpir), in_force.fpir.fpir)
        self.gallery.check_model()
        found = self.gallery.pipeline.detect(image)
        kept = min(len(found), self.settings.max_faces)
        paid = 1 + self.quota.take_up_to(key, kept - 1) if counted and kept > 1 else kept
        faces = self.gallery.pipeline.embed(image, found[:paid])
        self.refuse_revoked(key)  # a key revoked while the probe was embedded is given no decision
        with self._audited():
            result = self.gallery.identify_faces(
                probe.label,
                faces,
                top=top,
                margin=decided,
                exclude=set(locked),
                # those the audit locks out, from the one search's candidates
                withhold=lambda hits: self.audit_locked(hits, locked, in_force),
                actor=actor(key),
                n_found=len(found),
                fpir=target,
            )
        if not result.faces:
            raise ServiceError(422, "no-face", f"no face found in {probe.label}")
        payload = result.to_dict()
        if paid < kept:
            payload["notes"].append(
                f"{kept - paid} more face(s) not identified: this API key's decisions a minute are used up"
            )
        threshold = Threshold(result.threshold, result.threshold_source)
        for item in payload["faces"]:
            if item["status"] == UNKNOWN:
                item["similarity"], item["candidates"] = None, []
            else:
                item["candidates"] = [c for c in item["candidates"] if in_reach(c["similarity"], threshold, policy)]
        if self.liveness is not None:
            for face, item in zip(result.faces, payload["faces"]):
                item["liveness"] = (
                    self._liveness(image, face.box) if scores else without_scores(self._liveness(image, face.box))
                )
        payload["size"] = [int(image.shape[1]), int(image.shape[0])]
        payload["truncated"] = payload["faces_found"] > len(result.faces)
        return payload

    def each(self, uploads: list[Upload], answer: Callable[[Upload], dict[str, Any]]) -> list[dict[str, Any]]:
        """`answer` for each upload, in order, each with its ``index``: an image that cannot be answered (not an
        image, too large, no face: a 4xx of its own) is ``{"index", "probe", "status", "error", "detail"}``
        without failing the others; what fails the request itself (an unreachable gallery, the time budget:
        5xx, 429, the key revoked meanwhile: 403) fails it whole."""
        results = []
        for i, upload in enumerate(uploads):
            try:
                item = answer(upload)
            except (ServiceError, SiamfaceError) as exc:
                err = exc if isinstance(exc, ServiceError) else from_siamface(exc, *self.secrets)
                if err.status >= 500 or err.status in (403, 429):  # the key revoked meanwhile: the request
                    raise
                item = {"probe": upload.label, "status": err.status, **err.body()}
            results.append({"index": i, **item})
        return results

    def identify_many(
        self,
        probes: list[Upload],
        top: int,
        margin: float | None,
        locked=frozenset(),
        key: str | None = None,
        scores: bool = True,
        fpir: float | None = None,
        counted: bool = False,
    ) -> dict[str, Any]:
        """`identify` for each probe, in order (see `each`), each decision audited as one."""
        return {
            "results": self.each(
                probes, lambda probe: self.identify(probe, top, margin, locked, key, scores, fpir, counted)
            )
        }

    def embed_many(self, uploads: list[Upload]) -> dict[str, Any]:
        """The faces of each image (the `max_faces` largest) with their boxes, detection scores and embeddings
        (the templates a gallery stores), in order (see `each`); the faces of all the images go through the
        encoder together, in batches."""
        found: dict[int, tuple[np.ndarray, Any]] = {}

        def detect(upload: Upload) -> dict[str, Any]:
            image = self.decode(upload)
            _budget.check("detection")
            faces = self.pipeline.detect(image)
            if not len(faces):
                raise ServiceError(422, "no-face", f"no face found in {upload.label}")
            found[id(upload)] = (image, faces)
            return {"probe": upload.label, "faces_found": len(faces), "truncated": len(faces) > self.settings.max_faces}

        results = self.each(uploads, detect)
        kept = [(u, *found[id(u)]) for u in uploads if id(u) in found]
        embedded = self.pipeline.embed_many([(image, faces[: self.settings.max_faces]) for _, image, faces in kept])
        by_upload = {id(u): (image, faces) for (u, image, _), faces in zip(kept, embedded)}
        for upload, item in zip(uploads, results):
            if id(upload) in by_upload:
                image, faces = by_upload[id(upload)]
                item["size"] = [int(image.shape[1]), int(image.shape[0])]
                item["faces"] = [
                    {
                        "box": [round(float(v), 2) for v in faces.boxes[i]],
                        "score": round(float(faces.scores[i]), 4),
                        "embedding": [float(v) for v in faces.embeddings[i]],
                    }
                    for i in range(len(faces))
                ]
        info = self.pipeline.encoder.info
        return {"model": info.name, "version": info.version, "embedding_size": info.embedding_size, "results": results}

    def enroll(
        self,
        name: str,
        uploads: list[Upload | tuple[np.ndarray, str]],
        metadata: dict[str, Any] | None,
        must_exist: bool,
        force: bool = False,
        key: str | None = None,
        admin: bool = False,
    ) -> tuple[bool, dict[str, Any]]:
        """Enroll `name` from `uploads`: a new person (409 when the name is taken, decided inside the
        gallery's write transaction, so two requests racing for one new name cannot both create it), or,
        with `must_exist`, more faces of an enrolled one (those that do not match the person are rejected
        unless `force`). (anything added, report). A bad name, a taken one or an unknown one raise the
        gallery's errors, which the app answers with 400 `invalid-name`, 409 `person-exists` and 404
        `unknown-person`. A new person whose face matches someone enrolled is 409 `already-enrolled`,
        naming whom to an `admin` only. Unless `admin`, the report carries no score and names nobody else:
        a refused face "does not match". An upload may be an image already decoded, with its label."""
        # answered before decoding anything; the gallery decides again, inside its write transaction
        name = self.gallery.check_enrollment(name, new=not must_exist, existing=must_exist)
        images = [u if isinstance(u, tuple) else (self.decode(u), u.label) for u in uploads]
        capped = must_exist and not admin and not force
        report = self.gallery.enroll(
            name,
            [image for image, _ in images],
            metadata=metadata,
            sources=[label for _, label in images],
            new=not must_exist,
            existing=must_exist,
            force=force,
            actor=actor(key),
            provisional=not admin,
            cap=AdditionCap(self.settings.additions_per_person, self.additions_since(), iso(self.wall()))
            if capped
            else None,
            before_commit=functools.partial(self.refuse_revoked, key),
        ).to_dict()
        if capped and not report["added"] and any(r["reason"] == "too-many-additions" for r in report["rejected"]):
            self.refuse_more_additions(name)
        clashes = [r for r in report["rejected"] if r["reason"] == "already-enrolled"]
        if clashes and not report["added"]:
            detail = (
                clashes[0]["message"].split(": ", 1)[-1]
                if admin
                else "the face already matches a person enrolled; a face belongs to one person (an admin "
                "key may force it)"
            )
            raise ServiceError(409, "already-enrolled", detail)
        if not admin:
            report = _without_scores(report)
        return bool(report["added"]), report

    def refuse_revoked(self, key: str | None) -> None:
        """403 ``revoked-api-key`` when `key` (the one a request was let in with) was revoked or removed since:
        checked again right before a change or a decision is written, after the work that may take long
        (decoding, embedding)."""
        if key is not None and not self.keys.still_active(key):
            raise ServiceError(403, "revoked-api-key", "this API key was revoked")

    def notice(self, person) -> None:
        """Forget what this process holds under `person`'s id when it held it for another person, since removed
        (by the command line, or another server sharing the gallery; SQLite gives a removed person's id to the
        next person enrolled): their lock-out and liveness sessions. Called as a claim or an addition names the
        person, on the event loop (the lock-out book's)."""
        if isinstance(person, Unenrolled):
            return
        seen = self._refs.setdefault(person.id, person.ref)
        if seen != person.ref:
            self._refs[person.id] = person.ref
            self.sessions.forget(person.id)
            self.lockout.forget(person.id)

    def remove(self, name: str, key: str | None) -> tuple[Any, dict[str, Any]]:
        """Remove the person `name` from the gallery (their templates and kept images, audited with `key`) and
        from this process's memory: the photo library's faces that are theirs (`PhotoLibrary.forget`), the
        capture sessions opened for them, the index's copy of their templates. (person, answer); the route then
        clears their lock-out (`Lockout.forget`, on the event loop)."""
        store = self.gallery.store
        person = store.person(name, metadata=False)  # a damaged person can be removed
        _, templates = store.person_matrix(person.id)
        removed = store.delete(person.name, actor=actor(key))
        self.gallery.index.catch_up()  # the in-memory index leaves the person now, not at the next search
        model = self.pipeline.encoder.info.name
        self.library.forget(templates, self.gallery.thresholds.verify.value, self.library_threshold(), model)
        self.sessions.forget(person.id)
        return person, {"removed": person.name, "templates": removed}

    def additions_since(self) -> str:
        """The start of the additions window now, as the gallery stores times (ISO, UTC)."""
        return iso(self.wall() - self.settings.additions_window_s)

    def refuse_more_additions(self, name: str, more: int = 1) -> None:
        """429 ``too-many-additions`` when `more` faces added to `name` by a key below admin would pass the cap,
        counted from the gallery's stored provisional templates (so every server sharing the gallery, and one
        restarted, counts the same); the gallery decides again inside its write transaction."""
        limit = self.settings.additions_per_person
        made = self.gallery.recent_provisional(name, self.additions_since())
        if len(made) + more <= limit:
            return
        oldest = datetime.fromisoformat(made[0]).timestamp() if made else self.wall()
        retry = max(1, math.ceil(oldest + self.settings.additions_window_s - self.wall()))
        raise ServiceError(
            429,
            "too-many-additions",
            f"at most {limit} faces may be added to one person within {self.settings.additions_window_s:g} s by a "
            f"key below admin; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )

    # -- photo library (routes/library.py) -----------------------------------------------------------------
    def library_threshold(self) -> float:
        from ..library.groups import cluster_threshold

        return cluster_threshold(self.pipeline)

    def library_view(self) -> dict[str, Any]:
        version, grouping, entries = self.library.grouping(self.library_threshold(), self.pipeline.encoder.info.name)
        face = lambda f: entries[id(f)].to_dict()  # noqa: E731
        return {
            **self.library.counts(),
            "version": version,
            "folder": self.library.root is not None,
            "clusters": [{"id": k, "faces": [face(f) for f in group]} for k, group in enumerate(grouping.clusters)],
            "unclustered": [face(f) for f in grouping.unclustered],
            "model": grouping.model,
            "threshold": round(float(grouping.threshold), 6),
        }

    def library_scan(self) -> dict[str, Any]:
        """The folder's new photos, read for at most half the request's time budget."""
        deadline = self.clock() + self.settings.time_budget_s / 2
        return self.library.scan(self.pipeline, self.settings.max_pixels, lambda: self.clock() > deadline)

    def library_add(self, uploads: list[Upload]) -> dict[str, Any]:
        from ..errors import ImageError

        photos = []
        for u in uploads:
            try:
                photos.append({"file": u.label, "faces": self.library.add(self.pipeline, self.decode(u), u.label)})
            except ImageError as exc:
                photos.append({"file": u.label, "error": str(exc)})
        return {**self.library.counts(), "photos": photos}

    def library_enroll(
        self, group: int, version: int, name: str, key: str | None, admin: bool
    ) -> tuple[bool, dict[str, Any]]:
        """Enroll group `group` of the library at `version` as the new person `name` (see the route)."""
        from ..library.groups import ENROLL_TEMPLATES, largest

        name = self.gallery.check_enrollment(name, new=True, existing=False)
        shown, grouping, entries = self.library.grouping(self.library_threshold(), self.pipeline.encoder.info.name)
        if shown != version:
            raise ServiceError(
                409, "library-changed", f"the library changed since version {version} (now {shown}): look again"
            )
        if not 0 <= group < len(grouping.clusters):
            raise ServiceError(404, "unknown-group", f"no group {group} (the library has {len(grouping.clusters)})")
        chosen = [entries[id(f)] for f in largest(grouping.clusters[group], ENROLL_TEMPLATES)]
        from .library import PhotoChanged

        try:
            crops = [(self.library.enrol_crop(e, self.settings.max_pixels), e.face.file) for e in chosen]
        except PhotoChanged as exc:
            raise ServiceError(
                409, "library-changed", f"{exc} changed since the library read it: scan again and look again"
            ) from None
        return self.enroll(name, crops, None, False, False, key, admin)


def _without_scores(report: dict[str, Any]) -> dict[str, Any]:
    """An enrolment report for a key that may not force: a refused face "does not match", with no score and
    no threshold, a face enrolled as someone else names no one; warnings that name someone else or give a
    score are left out."""
    rejected = []
    for r in report["rejected"]:
        if r["reason"] == "other-person":
            r = {**r, "message": f"{r['source']}: does not match the person; not added"}
        elif r["reason"] == "duplicate":
            r = {**r, "message": f"{r['source']}: a near-copy of a template the person has; not added"}
        elif r["reason"] == "already-enrolled":
            r = {**r, "message": f"{r['source']}: the face already matches a person enrolled; not added"}
        rejected.append(r)
    warnings = [w for w in report["warnings"] if "similarity" not in w and "matches" not in w]
    return {**report, "rejected": rejected, "warnings": warnings}
