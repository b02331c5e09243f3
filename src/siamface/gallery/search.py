"""Search in a gallery: 1:1 (`verify`, is the probe's face the claimed person, with every template's score as
evidence) and 1:N (`identify`, who is each face of the probe, with the best candidates), each decided by
`siamface.decision` and written to the audit log; mixed into `Gallery` by `Searching`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from .. import _budget
from ..decision import DEFAULT_FRACTION, Threshold, Thresholds, check_rule, identity, in_originals_reach
from ..decision import claim as decide_claim
from ..errors import ConfigError, GalleryError
from ..image import describe, load_image
from .index import Hit
from .results import (
    AMBIGUOUS,
    KNOWN,
    Candidate,
    ClaimVerification,
    FaceIdentity,
    Identification,
    TemplateScore,
)
from .sqlbase import embedding_problems
from .store import AuditRecord, ModelBinding, Store, Template


def _provisional(template: Template | None) -> bool:
    return template is not None and bool(template.quality.get("provisional"))


class Searching:
    """The search verbs of `Gallery`, which provides what they use (declared here)."""

    store: Store
    index: Any  # `index_for`: a GalleryIndex, or a PostgreSQL store's own
    pipeline: Any
    thresholds: Thresholds
    check_model: Callable[[], ModelBinding]
    audit: Callable[[list[AuditRecord]], tuple[str, ...]]

    def verify(
        self,
        claim: str,
        probe: Any,
        *,
        rule: str = "best",
        fraction: float = DEFAULT_FRACTION,
        threshold: float | None = None,
        audit: bool = True,
        actor: str = "",
    ) -> ClaimVerification:
        """Is the (largest) face of `probe` the person `claim`? Compared with every template of that person
        and decided by `rule` (see `ClaimVerification`). Raises `UnknownPersonError` for an unknown claim
        and `NoFaceError` when the probe has no face. `audit=False`: the caller logs the decision it makes
        from this one (the service, once liveness has had its say); `actor`: who asked, for the audit."""
        check_rule(rule, fraction)
        model = self.check_model()
        person = self.store.person(claim, metadata=False)  # decisions read no metadata
        label = describe(probe)
        face, n_found = self.pipeline.embed_largest(probe)
        chosen = self.thresholds.given(threshold).verify
        ids, scores = self.index.person_scores(face.embeddings, person.id)
        scores = scores[0]
        if len(scores) == 0:  # a store never keeps a person without templates; be safe all the same
            raise GalleryError(f"{person.name!r} has no templates to verify against")
        stored = {t.id: t for t in self.store.templates(person.name)}
        provisional = np.array([_provisional(stored.get(int(i))) for i in ids], bool)
        deciding = in_originals_reach(scores, provisional, chosen)
        decided = decide_claim(deciding, chosen, rule, fraction)
        accepted, score, thr = decided.accepted, decided.score, chosen.value
        sources = {i: t.source for i, t in stored.items()}
        matches = chosen.accepts(scores) & (~provisional | (len(deciding) == len(scores)))
        evidence = tuple(
            sorted(
                (
                    TemplateScore(int(i), float(s), sources.get(int(i), ""), bool(m))
                    for i, s, m in zip(ids, scores, matches)
                ),
                key=lambda t: -t.similarity,
            )
        )
        notes = (f"{n_found} faces found in the probe, the largest was used",) if n_found > 1 else ()
        result = decided.extend(
            ClaimVerification,
            claim=person.name,
            rule=rule,
            templates=evidence,
            matched=int(matches.sum()),
            model=model.name,
            box=tuple(float(v) for v in face.boxes[0]),
            faces_found=n_found,
            fraction=fraction if rule == "fraction" else None,
            probe=label,
            notes=notes,
            threshold_far=chosen.far,
        )
        if audit:
            _budget.check("writing the decision")
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
                        actor,
                    )
                ]
            )
            result = dataclasses.replace(result, notes=result.notes + unlogged)
        return result

    def identify(
        self,
        probe: Any,
        *,
        top: int = 5,
        threshold: float | None = None,
        margin: float | None = None,
        audit: bool = True,
        exclude: Collection[int] = (),
        max_faces: int | None = None,
        actor: str = "",
        fpir: float | None = None,
    ) -> Identification:
        """Name every face of `probe` (biggest first): the person with the best template similarity when it
        reaches the threshold and the next person is more than `margin` below (default `DEFAULT_MARGIN`),
        "ambiguous" when the next is within `margin`, else "unknown" (`siamface.decision.identity`, see
        `FaceIdentity`); the `top` best people are the evidence.
        People whose ids are in `exclude` (the service's: people locked out of verification) are named for no
        face and shown nowhere, nor is anyone else for a face they match best or within `margin` of the best:
        such a face is unknown (searched as if they were not enrolled, it would be named as their look-alike,
        whom the margin keeps it from being named as otherwise). `max_faces`: only the largest that many faces are identified (and
        audited); `faces_found` and a note say how many there were. `fpir`: another FPIR target for this
        search (1:N set by FPIR only; the threshold, the target and the gallery size are in the answer)."""
        if top < 1:
            raise ConfigError(f"top must be >= 1, got {top}")
        if max_faces is not None and max_faces < 1:  # found[:-1] identified every face but the smallest
            raise ConfigError(f"max_faces must be >= 1 (None: every face), got {max_faces}")
        self.check_model()
        image = load_image(probe)  # once: an array of floats was converted again by detect and by embed
        found = self.pipeline.detect(image)
        faces = self.pipeline.embed(image, found if max_faces is None else found[:max_faces])
        return self.identify_faces(
            describe(probe),
            faces,
            top=top,
            threshold=threshold,
            margin=margin,
            audit=audit,
            exclude=exclude,
            actor=actor,
            n_found=len(found),
            fpir=fpir,
        )

    def identify_faces(
        self,
        label: str,
        faces: Any,
        *,
        top: int = 5,
        threshold: float | None = None,
        margin: float | None = None,
        audit: bool = True,
        exclude: Collection[int] = (),
        actor: str = "",
        n_found: int | None = None,
        fpir: float | None = None,
        withhold: Callable[[list[list[Hit]]], Collection[int]] | None = None,
    ) -> Identification:
        """`identify` for faces already embedded with this gallery's pipeline (anything with ``boxes`` (n, 4)
        and ``embeddings`` (n, d), e.g. a `Faces`, or faces read back from the embedding cache): the same
        decision, candidates and audit, for `label` (the probe's name). Embeddings that are not finite unit
        vectors are a `ConfigError` (`_unit_rows`), decided and logged for no face. `n_found`: the faces the probe had
        before a cap (default: these). `withhold`: more people to search as if not enrolled, chosen from the
        search's candidates (each face's, best first) by the caller, with no search of its own."""
        if top < 1:
            raise ConfigError(f"top must be >= 1, got {top}")
        embeddings = _unit_rows(faces.embeddings, len(faces))
        n_found = len(faces) if n_found is None else n_found
        policy = self.thresholds.given(threshold).with_margin(margin).with_fpir(fpir)
        margin, chosen = policy.margin, policy.identify
        model = self.check_model()
        thr, source = chosen.value, chosen.source
        withheld = {int(i) for i in exclude}
        # room for the withheld people, at most 64 of them (past that, a face whose candidates they fill is
        # theirs: unknown), so that locking many people out does not make every search long
        k = max(top, 2) + min(len(withheld), 64)
        hits = self.index.search(embeddings, k=k) if len(faces) else []
        names = self.store.names([h.person_id for row in hits for h in row])
        # a person removed since the search (another process) is named by nobody: searched as if gone
        hits = [[h for h in row if h.person_id in names] for row in hits]
        hits = self.within_originals_reach(embeddings, hits, self.thresholds.given(threshold).verify)
        if withhold is not None:
            withheld |= {int(i) for i in withhold(hits)}
        hits = [_withhold(row, withheld, margin) for row in hits]
        identities, records = [], []
        for i, row in enumerate(hits):
            candidates = tuple(
                Candidate(names.get(h.person_id, str(h.person_id)), h.similarity, h.template_id) for h in row
            )
            best = row[0] if row else None
            status = identity([h.similarity for h in row], chosen, margin)
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
                    actor,
                )
            )
        notes = () if len(faces) else ("no face found",)
        if n_found > len(faces):
            notes += (f"{n_found} faces found, the {len(faces)} largest were identified",)
        if audit:
            _budget.check("writing the decision")
            notes += self.audit(records)
        return Identification(
            label,
            tuple(identities),
            thr,
            source,
            model.name,
            notes,
            margin,
            n_found,
            fpir=chosen.fpir,
            gallery_people=chosen.people,
            gallery_templates=chosen.templates,
        )

    def within_originals_reach(
        self, queries: np.ndarray, hits: list[list[Hit]], one_to_one: Threshold
    ) -> list[list[Hit]]:
        """Each face's candidates, a candidate found on a provisional template rescored on its person's templates
        within the originals' reach (`in_originals_reach`: on the originals alone unless one matches at the 1:1
        threshold), best first again: what a key below admin added names nobody the originals would not."""
        found = {h.template_id for row in hits for h in row}
        flagged = self.store.provisional_templates(found) if found else set()
        if not flagged:
            return hits
        out = []
        for query, row in zip(queries, hits):
            rescored = []
            for h in row:
                if h.template_id in flagged:
                    ids, scores = self.index.person_scores(query, h.person_id)
                    provisional = self._provisional_mask(ids)
                    if len(in_originals_reach(scores[0], provisional, one_to_one)) < len(ids):
                        k = int(np.argmax(np.where(provisional, -np.inf, scores[0])))  # the originals' best
                        h = Hit(h.person_id, float(scores[0][k]), int(ids[k]))
                rescored.append(h)
            out.append(sorted(rescored, key=lambda h: -h.similarity))
        return out

    def best_within_reach(self, queries: np.ndarray, person_id: int, one_to_one: Threshold) -> np.ndarray:
        """Per query, its best similarity to the person's templates within the originals' reach
        (`in_originals_reach` at the 1:1 threshold `one_to_one`); -1 when the person has no templates left."""
        ids, scores = self.index.person_scores(queries, person_id)
        if not scores.shape[1]:
            return np.full(len(scores), -1.0)
        provisional = self._provisional_mask(ids)
        return np.array([in_originals_reach(row, provisional, one_to_one).max() for row in scores])

    def _provisional_mask(self, template_ids: np.ndarray) -> np.ndarray:
        """Per template id, in order: whether the store marks it provisional."""
        marks = self.store.provisional_templates({int(i) for i in template_ids})
        return np.array([int(i) in marks for i in template_ids], bool)


def _unit_rows(embeddings: Any, n: int) -> np.ndarray:
    """`embeddings` as an (n, d) float32 array of unit vectors (as a stored template must be: `sqlbase`'s check),
    else `ConfigError`: similarities are dot products of L2-normalised embeddings, so a longer vector (not
    normalised, a sum of several faces') reached the ceiling of 1 with every person, and named a stranger whenever
    one person stood out; a NaN one was silently unknown."""
    rows = np.asarray(embeddings, np.float32)
    if not n:
        return rows.reshape(0, rows.shape[-1] if rows.ndim == 2 else 0)
    if rows.ndim != 2 or len(rows) != n:
        raise ConfigError(f"embeddings must be an (n, d) array with a row for each of the {n} faces, got {rows.shape}")
    problem = next((p for p in embedding_problems(rows) if p), "")
    if problem:
        raise ConfigError(f"an embedding {problem}: give L2-normalised embeddings (as siamface's own are)")
    return rows


def _withhold(row: list[Hit], withheld: set[int], margin: float) -> list[Hit]:
    """A face's candidates (best first) without the `withheld` people, or none at all when one of them is the
    best or within `margin` of the best: the face is then nobody's (see `Searching.identify`)."""
    if not withheld or not row:
        return row
    if any(h.person_id in withheld and h.similarity >= row[0].similarity - margin for h in row):
        return []
    return [h for h in row if h.person_id not in withheld]
