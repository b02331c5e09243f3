"""What the gallery answers: enrollment reports, 1:1 verifications against a claimed identity and 1:N
identifications, each with its evidence and a JSON-ready ``to_dict()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..decision import AMBIGUOUS as AMBIGUOUS  # the 1:N statuses, named by the decision module
from ..decision import KNOWN as KNOWN
from ..decision import UNKNOWN
from ..types import Decision


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class Rejection:
    """An image or frame refused at enrollment, and why. `reason` is a short code (see
    `siamface.gallery.enroll.REASONS`), `message` the sentence for people."""

    source: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class EnrolledTemplate:
    template_id: int
    source: str
    quality: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"template_id": self.template_id, "source": self.source, "quality": self.quality}


@dataclass(frozen=True)
class EnrollmentReport:
    """One person's enrollment: templates added, images rejected (with reasons), warnings.

    `person` is the name as enrolled (an existing person's stored name: names match ignoring case);
    `created` says the call created the person, `existing` that it was enrolled before the call; neither
    when nothing was enrolled for a new name (no person is left behind then)."""

    person: str
    created: bool
    added: tuple[EnrolledTemplate, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    warnings: tuple[str, ...] = ()
    templates_total: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.added)

    @property
    def existing(self) -> bool:
        """The person was enrolled before this call (a store never keeps a person without templates)."""
        return not self.created and self.templates_total > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "created": self.created,
            "existing": self.existing,
            "added": [a.to_dict() for a in self.added],
            "rejected": [r.to_dict() for r in self.rejected],
            "warnings": list(self.warnings),
            "templates_total": self.templates_total,
        }


@dataclass(frozen=True)
class TemplateScore:
    """One template's similarity to the probe, as evidence."""

    template_id: int
    similarity: float
    source: str = ""
    matched: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "similarity": _r(self.similarity),
            "source": self.source,
            "matched": self.matched,
        }


@dataclass(frozen=True, kw_only=True)
class ClaimVerification(Decision):
    """Is the probe's face the person it claims to be? A `Decision` (`accepted`, `score`, `threshold`,
    `threshold_source`, `notes`) with its evidence.

    `score` is the rule's figure on the similarity scale, compared with `threshold`: the best template
    similarity (rule ``best``), their mean (``mean``), or for ``fraction`` the k-th best similarity with
    k = ceil(fraction * templates), which reaches the threshold exactly when at least that fraction of the
    templates match (see `siamface.decision.claim`). `templates` holds every template's similarity (best
    first).
    """

    claim: str
    rule: str
    templates: tuple[TemplateScore, ...]
    matched: int
    model: str
    box: tuple[float, float, float, float]
    faces_found: int
    fraction: float | None = None
    probe: str = ""
    threshold_far: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "accepted": self.accepted,
            "score": _r(self.score),
            "rule": self.rule,
            "fraction": self.fraction,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "threshold_far": self.threshold_far,
            "matched": self.matched,
            "templates": [t.to_dict() for t in self.templates],
            "model": self.model,
            "probe": self.probe,
            "box": [round(v, 1) for v in self.box],
            "faces_found": self.faces_found,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Candidate:
    """A person considered for a face: their best template's similarity and which template it was."""

    person: str
    similarity: float
    template_id: int

    def to_dict(self) -> dict[str, Any]:
        return {"person": self.person, "similarity": _r(self.similarity), "template_id": self.template_id}


@dataclass(frozen=True)
class FaceIdentity:
    """Who one face of a probe is (`status`):

    - ``known``: the best candidate reaches the threshold and the next *person* is more than the margin
      below it; `person` is that candidate.
    - ``ambiguous``: the best candidate reaches the threshold but the second person is within the margin
      of it; `person` is None (the candidates tell who was too close to call).
    - ``unknown``: nobody reaches the threshold (open set); `person` is None.
    """

    box: tuple[float, float, float, float]
    person: str | None
    similarity: float | None
    accepted: bool
    candidates: tuple[Candidate, ...] = ()
    status: str = UNKNOWN

    @property
    def name(self) -> str:
        return self.person if self.person is not None else self.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "person": self.name,
            "status": self.status,
            "known": self.accepted,
            "similarity": _r(self.similarity),
            "candidates": [c.to_dict() for c in self.candidates],
        }


@dataclass(frozen=True)
class Identification:
    """Every face of one probe image, biggest first, each named or unknown."""

    probe: str
    faces: tuple[FaceIdentity, ...]
    threshold: float
    threshold_source: str
    model: str
    notes: tuple[str, ...] = field(default=())
    margin: float = 0.0
    faces_found: int | None = None  # faces detected, when more than the faces identified (a cap)
    fpir: float | None = None  # 1:N set by FPIR: the target, and the gallery size the threshold is for
    gallery_people: int | None = None
    gallery_templates: int | None = None

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.faces]

    @property
    def found(self) -> bool:
        return any(f.accepted for f in self.faces)

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "faces": [f.to_dict() for f in self.faces],
            "threshold": self.threshold,
            "margin": self.margin,
            "threshold_source": self.threshold_source,
            "fpir": self.fpir,
            "gallery_size": {"people": self.gallery_people, "templates": self.gallery_templates},
            "model": self.model,
            "notes": list(self.notes),
            "faces_found": len(self.faces) if self.faces_found is None else self.faces_found,
        }
