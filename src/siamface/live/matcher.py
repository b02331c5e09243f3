"""The matcher a runner asks "who is this?" and "is this them?": the `Matcher` protocol, and `GalleryMatcher`,
which answers from a `siamface.gallery.Gallery`'s index and names a face as `Gallery.identify` does."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..decision import AMBIGUOUS, KNOWN, Thresholds, ThresholdsInForce, identity


class Matcher(Protocol):
    #: The thresholds in force: 1:1 for `verify`, 1:N and the ambiguity margin for `identify`.
    thresholds: Thresholds

    def identify(self, embeddings: np.ndarray) -> list[tuple[str | None, float]]:
        """Per embedding: the name decided (`siamface.decision.identity`: the person, or ``ambiguous``;
        None when unknown) and the best similarity."""

    def verify(self, claim: str, embeddings: np.ndarray) -> np.ndarray:
        """Per embedding: the best similarity to the claimed person's templates."""


class GalleryMatcher(ThresholdsInForce):
    """`Matcher` over a `siamface.gallery.Gallery`: its index and its thresholds (the caller's `threshold`
    when given), so that a face is named as `Gallery.identify` names it."""

    def __init__(
        self, gallery, threshold: float | None = None, margin: float | None = None, fpir: float | None = None
    ) -> None:
        self.gallery = gallery
        gallery.check_model()
        self._asked = (threshold, margin, fpir)
        self.thresholds  # noqa: B018 - a bad threshold, margin or target fails here, not at the first face
        self._ids: dict[str, int] = {}  # claim -> the person id it named when the session began

    @property
    def thresholds(self) -> Thresholds:  # type: ignore[override]
        """The thresholds in force now: 1:N by FPIR follows the gallery's size as people are enrolled."""
        threshold, margin, fpir = self._asked
        return self.gallery.thresholds.given(threshold).with_margin(margin).with_fpir(fpir)

    def _person_id(self, claim: str) -> int:
        if claim not in self._ids:
            self._ids[claim] = self.gallery.store.person(claim).id
        return self._ids[claim]

    def _named(self, claim: str) -> int | None:
        """The id the claim names now (None: nobody)."""
        from ..gallery.store import UnknownPersonError

        try:
            return self.gallery.store.person(claim, metadata=False).id
        except UnknownPersonError:
            return None

    def identify(self, embeddings: np.ndarray) -> list[tuple[str | None, float]]:
        """Per embedding: the person when known, ``ambiguous`` when the second person is within the margin,
        None when unknown (as `Gallery.identify` decides), and the best similarity (-1 with nobody enrolled).
        `ModelMismatchError` once the gallery was re-embedded with another model (one small read a call)."""
        self.gallery.check_model()  # re-embedded by another process under a running loop: refused, not compared
        policy = self.thresholds
        hits = self.gallery.index.search(embeddings, k=2)  # the second person decides "ambiguous"
        hits = self.gallery.within_originals_reach(embeddings, hits, policy.verify)
        names = self.gallery.store.names([row[0].person_id for row in hits if row])
        out: list[tuple[str | None, float]] = []
        for row in hits:
            status = identity([h.similarity for h in row], policy.identify, policy.margin)
            if status == KNOWN:
                out.append((names.get(row[0].person_id, str(row[0].person_id)), float(row[0].similarity)))
            else:
                out.append((AMBIGUOUS if status == AMBIGUOUS else None, float(row[0].similarity) if row else -1.0))
        return out

    def verify(self, claim: str, embeddings: np.ndarray) -> np.ndarray:
        """Best similarity of each embedding to the claimed person's templates (-1 when none are left:
        a person removed during the session matches nothing; `ModelMismatchError` once the gallery was re-embedded
        with another model)."""
        self.gallery.check_model()
        person_id = self._person_id(claim)
        if self._named(claim) != person_id:  # removed (or removed and enrolled again) during the session: the
            return np.full(len(embeddings), -1.0)  # id may be another person's now (SQLite gives it again)
        return self.gallery.best_within_reach(embeddings, person_id, self.thresholds.verify)

    def log_claim(self, claim: str, accepted: bool, score: float | None, rule: str = "live") -> tuple[str, ...]:
        """Record a live 1:1 decision in the gallery's audit log (notes: why it could not be, when so)."""
        from ..gallery.store import AuditRecord

        person = self.gallery.store.person(claim, metadata=False)
        return self.gallery.audit(
            [
                AuditRecord(
                    "verify",
                    person.id,
                    person.id if accepted else None,
                    score,
                    self.thresholds.verify.value,
                    bool(accepted),
                    rule,
                    self.gallery.check_model().name,
                )
            ]
        )
