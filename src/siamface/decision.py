"""The one decision policy: which thresholds are in force, and every "is it them?" decision made with them.

Every verb decides here, so that a change of rule is made once: `Pipeline.verify` (one pair), the
gallery's `verify` (a claimed identity), `identify` (1:N), `enroll` (is a new face the person's?), `watch`
and `authenticate` (live), the HTTP service (with its liveness checks), and evaluation (the threshold it
reports at).

Thresholds (`resolve`), for 1:1 and 1:N, each with the source said in every answer, the first found of:

1. the caller's threshold (one value, for 1:1 and 1:N alike);
2. the model's entry in the calibration file given explicitly (the one beside a gallery,
   ``<gallery>.thresholds.json``);
3. the model's entry in the user's calibration file (`siamface.thresholds.user_calibration_file`);
   a calibration is the user's operating point for 1:1 and 1:N alike;
4. the model's measured defaults: 1:1 ``info.threshold``; 1:N set by FPIR (below) when the package ships
   the model's impostor tail, else ``info.identify_threshold`` (stricter), or the 1:1 one.

1:N by FPIR (`fpir_threshold`): the operator states the share of strangers that may be named (`fpir`,
default `DEFAULT_FPIR`); a stranger meets every template of the gallery (M = its templates: the best-of-k
rule), so the threshold in force is the impostor score a single comparison reaches with probability
``p = 1 - (1 - fpir) ** (1 / M)`` (never below the 1:1 threshold: a small gallery would name on less
evidence than a verification takes), read from the model's impostor tail (`siamface.tails`: measured quantiles,
a fitted generalised Pareto model below them, exponential where its shape comes out bounded), recomputed
for the gallery's size at every search (`Thresholds.for_gallery`). A calibration made with
``--target fpir=X`` brings its own tail and target. A caller's fixed threshold, or a calibration to a FAR,
sets a fixed 1:N threshold instead.

Every threshold is checked where it enters (`check_threshold`): a finite number in the model's plausible
range, from its impostor median (``info.impostor_median``: below it most strangers match) to 1, else
`ConfigError` naming where it came from. A calibration file with a value outside it is refused, never used.

Decisions, all on cosine similarity (higher = more alike; a face matches when ``similarity >= threshold``):

    same(similarity, t)                  one pair                                        -> Decision
    claim(scores, t, rule, fraction)     a probe against a claimed person's templates    -> Decision
    in_originals_reach(scores, provisional, t)  the templates' scores that may decide (provisional ones
                                         only when an original matches at the 1:1 t)     -> scores
    gate(decision, liveness)             a match refused unless the liveness checks pass -> Decision
    fpir_threshold(tail, fpir, people, templates)  the 1:N threshold for a gallery's size  -> Threshold
    identity(similarities, t, margin)    1:N, open set, with the ambiguity margin        -> known / ambiguous / unknown
    in_reach(similarity, t, margin)      a 1:N candidate near enough to count as evidence -> bool

`Decision` (in `siamface.types`) is the one answer to "is it them?"; `Verification`, `ClaimVerification`
and `live.AuthDecision` extend it with their verb's evidence.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ._files import exposure
from .errors import ConfigError
from .tails import ImpostorTail, shipped_tail
from .thresholds import Calibration, load_calibration, user_calibration_file
from .types import Decision

log = logging.getLogger(__name__)

#: The source said for the caller's threshold (an argument, ``--threshold``).
CALLER = "given by the caller"
#: 1:N calls a face ambiguous when the second person is within this similarity of the best (see
#: benchmarks/gallery_att.py for its effect on the AT&T open-set experiment).
DEFAULT_MARGIN = 0.01
#: How a probe is scored against a claimed person's templates (see `claim`).
RULES = ("best", "mean", "fraction")
DEFAULT_FRACTION = 0.5
#: The 1:N statuses (see `identity`).
KNOWN, AMBIGUOUS, UNKNOWN = "known", "ambiguous", "unknown"
#: The plausible thresholds of a model whose impostor median was not measured: above 0 (a threshold of 0 or
#: less matches about half of all strangers in any embedding space) and at most 1 (cosine similarity).
PLAUSIBLE = (0.0, 1.0)
#: The share of strangers 1:N may name (false-positive identification rate), by default.
DEFAULT_FPIR = 0.01

D = TypeVar("D", bound=Decision)


# -- thresholds ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """One threshold in force: its value, where it comes from (said in every answer) and, when a
    calibration or the model measured it, the false-accept rate at it. A 1:N threshold set by FPIR also
    says its target `fpir` and the gallery size it was computed for (`people`, `templates`)."""

    value: float
    source: str
    far: float | None = None
    fpir: float | None = None
    people: int | None = None
    templates: int | None = None

    def describe_1n(self) -> dict[str, Any]:
        """The 1:N fields every identify answer carries: threshold, its source, FPIR target, gallery size."""
        return {
            "threshold": round(self.value, 6),
            "threshold_source": self.source,
            "fpir": self.fpir,
            "gallery_size": {"people": self.people, "templates": self.templates},
        }

    def accepts(self, similarity):
        """Does `similarity` reach the threshold? A number gives a bool, an array an array of bools."""
        if np.ndim(similarity) == 0:
            return bool(float(similarity) >= self.value)
        return np.asarray(similarity) >= self.value


def plausible_range(info: Any = None) -> tuple[float, float, bool]:
    """(low, high, low included) of the thresholds plausible for the model `info` describes: from its
    impostor median (included) to 1, or above 0 to 1 when it has none (see `PLAUSIBLE`)."""
    median = getattr(info, "impostor_median", None)
    if median is None:
        return PLAUSIBLE[0], PLAUSIBLE[1], False
    return float(median), PLAUSIBLE[1], True


def check_threshold(value: Any, info: Any = None, where: str = "threshold") -> float:
    """`value` as a float if it is a finite number in the plausible range of the model `info` describes
    (`plausible_range`), else `ConfigError` saying `where` it came from and why."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{where}: {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    low, high, included = plausible_range(info)
    if number > high or number < low or (number == low and not included):
        name = getattr(info, "name", None)
        if number > high:
            why = f"above {high:g}, the most a cosine similarity can be"
        elif included:
            why = (
                f"below {low:g}, the median similarity of two strangers' faces for model {name} (it would let "
                "most strangers in)"
            )
        else:
            why = f"a cosine-similarity threshold must be above {low:g}"
        raise ConfigError(f"{where}: {number:.10g} is outside the plausible range ({why}; at most {high:g})")
    return number


def check_fpir(value: Any, where: str = "the FPIR target") -> float:
    """`value` as a float if it is a rate strictly between 0 and 1, else `ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{where}: {value!r} is not a number")
    if not 0 < float(value) < 1:
        raise ConfigError(f"{where}: {value!r} is not a rate between 0 and 1 (e.g. 0.01 for 1 % of strangers)")
    return float(value)


@dataclass(frozen=True)
class FpirPolicy:
    """1:N set by FPIR: the target `fpir`, the impostor `tail` it is read from and where that tail comes
    from (`origin`, said in every answer)."""

    fpir: float
    tail: ImpostorTail = dataclasses.field(repr=False)
    origin: str


def comparison_rate(fpir: float, comparisons: int) -> float:
    """The single-comparison false-match rate p at which a stranger compared with `comparisons` templates
    is named with probability `fpir`: ``1 - (1 - p) ** M = fpir``."""
    return float(-math.expm1(math.log1p(-fpir) / max(int(comparisons), 1)))


def fpir_threshold(policy: FpirPolicy, people: int, templates: int) -> Threshold:
    """The 1:N threshold naming a share `policy.fpir` of strangers in a gallery of `people` people and
    `templates` templates (at least one of each is assumed): the tail's score at `comparison_rate`
    (measured down to ``tail.finest``, the fitted model below; at most 1)."""
    p = comparison_rate(policy.fpir, templates)
    value = min(policy.tail.score_at(p), PLAUSIBLE[1])
    shape = "exponential" if policy.tail.xi == 0 else "generalised Pareto"
    part = "measured" if p >= policy.tail.finest else f"fitted ({shape})"
    source = (
        f"FPIR {policy.fpir:g} for {people} people / {templates} templates: the {part} impostor tail "
        f"({policy.origin}) at p={p:.3g} per comparison"
    )
    return Threshold(float(value), source, p, policy.fpir, int(people), int(templates))


def _at_least_verify(identify: Threshold, verify: Threshold) -> Threshold:
    """A 1:N threshold by FPIR, raised to the 1:1 one when below it (a small gallery): naming someone never
    takes less evidence than verifying them (the source says so)."""
    if identify.value >= verify.value:
        return identify
    return dataclasses.replace(
        identify, value=verify.value, source=f"{identify.source}, raised to the 1:1 threshold {verify.value:g}"
    )


@dataclass(frozen=True)
class Thresholds:
    """The thresholds in force for a model: 1:1 (`verify`), 1:N (`identify`) and the 1:N ambiguity
    `margin`, resolved once (see `resolve`); `info`: the model they are for (its plausible range checks
    a caller's threshold, see `given`). With `fpir` (1:N by FPIR), `identify` holds for the gallery size it
    says until `for_gallery` computes it for another."""

    verify: Threshold
    identify: Threshold
    margin: float = DEFAULT_MARGIN
    calibration: Calibration | None = None
    info: Any = dataclasses.field(default=None, repr=False, compare=False)
    fpir: FpirPolicy | None = None

    def given(self, value: float | None, source: str | None = None) -> Thresholds:
        """These thresholds with a caller's `value` in force for 1:1 and 1:N (unchanged when None), checked
        against the model's plausible range (`check_threshold`): a fixed 1:N threshold, no FPIR policy."""
        if value is None:
            return self
        return resolve(self.info, given=value, given_source=source, margin=self.margin)

    def for_gallery(self, people: int, templates: int) -> Thresholds:
        """These thresholds with the 1:N one computed for a gallery of `people` people and `templates`
        templates (unchanged for a fixed 1:N threshold)."""
        if self.fpir is None:
            return self
        identify = _at_least_verify(fpir_threshold(self.fpir, max(int(people), 1), max(int(templates), 1)), self.verify)
        return dataclasses.replace(self, identify=identify)

    def with_fpir(self, fpir: float | None, *, stricter_only: bool = False) -> Thresholds:
        """These thresholds with another FPIR target (unchanged when None). `stricter_only`: a target above
        the one in force is refused (`ConfigError`): a client may narrow the server's policy, never widen
        it. Without an FPIR policy (a fixed 1:N threshold) a target is refused too."""
        if fpir is None:
            return self
        fpir = check_fpir(fpir)
        if self.fpir is None:
            raise ConfigError(
                "the 1:N threshold in force is fixed (a given threshold or a FAR calibration): no FPIR target applies"
            )
        if stricter_only and fpir > self.fpir.fpir:
            raise ConfigError(
                f"an FPIR target of {fpir:g} is above the {self.fpir.fpir:g} in force; it may only be lower"
            )
        policy = dataclasses.replace(self.fpir, fpir=fpir)
        identify = self.identify
        if identify.people is not None and identify.templates is not None:
            identify = _at_least_verify(fpir_threshold(policy, identify.people, identify.templates), self.verify)
        return dataclasses.replace(self, fpir=policy, identify=identify)

    def with_margin(self, margin: float | None) -> Thresholds:
        """These thresholds with another ambiguity margin (unchanged when None); ConfigError outside [0, 1)."""
        if margin is None:
            return self
        if not 0 <= margin < 1:
            raise ConfigError(f"margin must be in [0, 1), got {margin}")
        return dataclasses.replace(self, margin=float(margin))


class ThresholdsInForce:
    """For a class with a `thresholds` property: the values and sources under the names callers read
    (`threshold` and `threshold_source` 1:1, `identify_threshold` and `identify_threshold_source` 1:N)."""

    thresholds: Thresholds

    @property
    def threshold(self) -> float:
        """The 1:1 threshold in force."""
        return self.thresholds.verify.value

    @property
    def threshold_source(self) -> str:
        return self.thresholds.verify.source

    @property
    def identify_threshold(self) -> float:
        """The 1:N threshold in force: a caller's or a calibration's is the 1:1 one, the model's default is
        stricter."""
        return self.thresholds.identify.value

    @property
    def identify_threshold_source(self) -> str:
        return self.thresholds.identify.source


def find_calibration(model: str, calibration_file: str | Path | None = None, info: Any = None) -> Calibration | None:
    """The model's calibration in force: its entry in `calibration_file` when given, else in the user's
    calibration file, else None. With `info` (the model's), a threshold outside its plausible range is a
    `ConfigError` naming the file (`check_threshold`): such a file is refused, not skipped. So is a file that
    other users may change (owned by another user, their write bits, or a folder where they may replace it,
    `siamface._files.exposure`): a calibration decides who is granted. With `info`, an entry measured on another
    version of the model (``model_version``) is passed over with a warning."""
    for path in ([Path(calibration_file)] if calibration_file is not None else []) + [user_calibration_file()]:
        found = load_calibration(model, path)
        version = getattr(info, "version", None)
        if found is not None and found.model_version and version is not None and found.model_version != version:
            # another model under the same name (a model file trained again into the same run folder, or
            # another run's of that folder name): its threshold is not this model's
            log.warning(
                "%s: the calibration of %s is of its version %s, not %s: not used (calibrate this one)",
                path,
                model,
                found.model_version,
                version,
            )
            continue
        if found is not None:
            writable, _ = exposure(path)
            if writable:
                raise ConfigError(
                    f"{writable}: whoever may change a calibration in force decides who is granted; make it "
                    "yours alone (chmod 600, in a folder only you may write) or remove it"
                )
            if info is not None:
                check_threshold(found.threshold, info, f"{path}: the threshold of {model}")
            return found
    return None


def resolve(
    info: Any,
    *,
    given: float | None = None,
    given_source: str | None = None,
    calibration: Calibration | None = None,
    margin: float = DEFAULT_MARGIN,
    fpir: float | None = None,
) -> Thresholds:
    """The thresholds in force for the model described by `info` (an `embedding.ModelInfo`; None when not
    known: only the general range is checked): the caller's `given` value, else `calibration` (see
    `find_calibration`), else the model's defaults. Each is checked by `check_threshold`. `fpir`: the 1:N
    target when 1:N is set by FPIR (default: the calibration's, else `DEFAULT_FPIR`); refused with a fixed
    1:N threshold."""
    if given is not None:
        source = given_source or CALLER
        chosen = Threshold(check_threshold(given, info, f"the threshold {source}"), source)
        return Thresholds(chosen, chosen, margin, info=info).with_fpir(fpir)
    if calibration is not None:
        value = check_threshold(calibration.threshold, info, f"the calibrated threshold of {calibration.model}")
        chosen = Threshold(value, calibration.describe(), float(calibration.far))
        policy = None
        if calibration.tail is not None:
            tail = ImpostorTail.from_dict(calibration.tail, f"the calibration of {calibration.model}")
            policy = FpirPolicy(check_fpir(calibration.fpir), tail, f"calibrated on {calibration.dataset}")
        found = Thresholds(chosen, chosen, margin, calibration, info=info, fpir=policy)
        return found.for_gallery(1, 1).with_fpir(fpir) if policy is not None else found.with_fpir(fpir)
    far = (getattr(info, "extra", None) or {}).get("far")
    where = f"the default threshold of model {info.name}"
    verify = Threshold(
        check_threshold(info.threshold, info, where), info.threshold_source, float(far) if far is not None else None
    )
    tail = shipped_tail(info.name)
    if tail is not None:
        policy = FpirPolicy(DEFAULT_FPIR, tail, f"model {info.name}'s, {tail.n:,} impostor pairs of celeba_ids")
        return Thresholds(verify, verify, margin, info=info, fpir=policy).for_gallery(1, 1).with_fpir(fpir)
    if info.identify_threshold is None:
        return Thresholds(verify, verify, margin, info=info).with_fpir(fpir)
    identify = Threshold(
        check_threshold(info.identify_threshold, info, where + " (1:N)"), info.identify_threshold_source
    )
    return Thresholds(verify, identify, margin, info=info).with_fpir(fpir)


# -- 1:1 ----------------------------------------------------------------------------------------------
def same(similarity: float, threshold: Threshold) -> Decision:
    """Are two faces with this similarity the same person?"""
    return Decision(
        accepted=threshold.accepts(similarity),
        score=float(similarity),
        threshold=threshold.value,
        threshold_source=threshold.source,
    )


def check_rule(rule: str, fraction: float = DEFAULT_FRACTION) -> None:
    """ConfigError unless `rule` is one of `RULES` and `fraction` is in (0, 1]."""
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose one of: {', '.join(RULES)}")
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")


def claim(scores: np.ndarray, threshold: Threshold, rule: str = "best", fraction: float = DEFAULT_FRACTION) -> Decision:
    """Is a probe the claimed person, from its similarities to each of that person's templates?

    The score compared with the threshold: the best similarity (rule ``best``), their mean (``mean``), or
    for ``fraction`` the k-th best with k = ceil(fraction * templates), which reaches the threshold exactly
    when at least that fraction of the templates match."""
    check_rule(rule, fraction)
    scores = np.asarray(scores, np.float64).ravel()
    if len(scores) == 0:
        raise ConfigError("no templates to score a claim against")
    ordered = np.sort(scores)[::-1]
    if rule == "best":
        score = float(ordered[0])
    elif rule == "mean":
        score = float(scores.mean())
    else:
        score = float(ordered[max(1, math.ceil(fraction * len(ordered) - 1e-9)) - 1])
    return same(score, threshold)


def in_originals_reach(scores: np.ndarray, provisional: np.ndarray, threshold: Threshold) -> np.ndarray:
    """The similarities of a person's templates that may decide: all of them when one of the person's
    *original* templates (made at enrolment, by an admin or the command line) matches at `threshold` (the 1:1
    one), else the originals' alone. A provisional template (added by a key below admin, `provisional` True)
    thus widens nothing beyond the originals' reach: blends added one step at a time towards a stranger's
    face (each matching the originals) cannot get that stranger granted or named, who the originals do not
    already match (benchmarks/template_walk.py). A person with no original template (none can be made so
    today) is decided on all of them."""
    scores = np.asarray(scores, np.float64).ravel()
    provisional = np.asarray(provisional, bool).ravel()
    originals = scores[~provisional]
    if len(originals) == 0 or threshold.accepts(float(originals.max())):
        return scores
    return originals


# -- liveness ---------------------------------------------------------------------------------------------
#: the liveness modes of `authenticate` and the service: no check, the passive check on every frame's face,
#: the active challenge, or both
LIVENESS_MODES = ("off", "passive", "active", "both")


@dataclass(frozen=True)
class Liveness:
    """What the liveness checks asked for found, for `gate` (None: that check was not asked for).

    `live`: the passive check's verdict on the face. `challenge`: the active challenge was met, or why not
    (`challenge_reason`); `same_person`: every face seen during it was the claimed person (its `lowest`
    score, for the note)."""

    live: bool | None = None
    challenge: bool | None = None
    challenge_reason: str = ""
    same_person: bool | None = None
    lowest: float | None = None


def gate(decision: Decision, liveness: Liveness, who: str = "") -> Decision:
    """The decision once liveness is weighed: accepted only when the face matched and every check asked
    for passed; a refused match says why in its notes. Returns a plain `Decision`."""
    accepted, notes = decision.accepted, list(decision.notes)
    if liveness.challenge is not None:
        if accepted and not liveness.challenge:
            notes.append(f"the face matches but the liveness challenge failed: {liveness.challenge_reason}")
        elif accepted and not liveness.same_person:
            notes.append(f"a face seen during the liveness challenge is not {who} (lowest score {liveness.lowest})")
        accepted = accepted and liveness.challenge and bool(liveness.same_person)
    if accepted and liveness.live is False:
        accepted = False
        notes.append("the face matches but did not pass the liveness check")
    return Decision(
        accepted=bool(accepted),
        score=decision.score,
        threshold=decision.threshold,
        threshold_source=decision.threshold_source,
        notes=tuple(notes),
    )


# -- 1:N ------------------------------------------------------------------------------------------------
def identity(similarities: Sequence[float], threshold: Threshold, margin: float = DEFAULT_MARGIN) -> str:
    """Open-set decision for one face from the best *people*'s similarities, best first: ``known`` when
    the best reaches the threshold and the second person is more than `margin` below it, ``ambiguous``
    when the second is within `margin`, ``unknown`` when nobody reaches the threshold."""
    if len(similarities) == 0 or not threshold.accepts(similarities[0]):
        return UNKNOWN
    if len(similarities) > 1 and similarities[0] - similarities[1] <= margin:
        return AMBIGUOUS
    return KNOWN


def in_reach(similarity: float, threshold: Threshold, margin: float = DEFAULT_MARGIN) -> bool:
    """Is a 1:N candidate close enough to the threshold to count as evidence for a decision: at or above
    the threshold less the margin? (The service shows no candidate below it: no score oracle.)"""
    return bool(similarity >= threshold.value - margin)
