"""The one decision module: the thresholds in force (caller > explicit calibration file > the user's > model
default, 1:1 and 1:N), the claim rules, the liveness gate, and the one result type every verb answers with."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import att
from test_thresholds import cal

from siamface import Pipeline
from siamface.decision import CALLER, Liveness, Threshold, claim, gate, in_originals_reach, resolve, same
from siamface.errors import ConfigError
from siamface.tails import shipped_tail
from siamface.thresholds import save_calibration, user_calibration_file
from siamface.types import Decision, Verification


def test_resolution_order_with_sources(tmp_path):
    info = Pipeline().encoder.info
    default = resolve(info)
    tail = shipped_tail(info.name)
    floor = max(tail.score_at(0.01), info.threshold)  # 1:N never below 1:1
    assert (default.verify.value, default.identify.value) == (info.threshold, pytest.approx(floor))
    assert default.verify.source == info.threshold_source and default.identify.source.startswith("FPIR 0.01")
    given = resolve(info, given=0.8, calibration=cal(0.95))
    assert given.verify == given.identify == Threshold(0.8, CALLER)  # the caller's wins, no FAR claimed
    calibrated = resolve(info, calibration=cal(0.95))
    assert calibrated.verify == calibrated.identify and calibrated.verify.value == 0.95
    assert calibrated.verify.far == 0.0009 and "calibrated (far=0.001) on unit" in calibrated.verify.source
    assert calibrated.given(None) is calibrated and calibrated.given(0.8).identify.source == CALLER


def test_an_explicit_file_without_the_model_falls_back_to_the_users(tmp_path):
    beside = tmp_path / "gallery.thresholds.json"
    save_calibration(cal(0.95, model="another-model"), beside)
    save_calibration(cal(0.93))  # the user's file
    try:
        p = Pipeline(calibration_file=beside)
        assert p.threshold == p.identify_threshold == 0.93 and p.calibration.threshold == 0.93
    finally:
        user_calibration_file().unlink()
    assert Pipeline(calibration_file=beside).thresholds.calibration is None  # then the model's default


@pytest.mark.parametrize(
    "rule, fraction, score, accepted",
    [
        ("best", 0.5, 0.99, True),
        ("mean", 0.5, 0.91, False),
        ("fraction", 0.5, 0.95, True),  # 2 of the 4 templates reach 0.93
        ("fraction", 0.75, 0.90, False),  # 3 of 4 do not
        ("fraction", 0.25, 0.99, True),
    ],
)
def test_claim_rules(rule, fraction, score, accepted):
    decided = claim(np.array([0.80, 0.95, 0.99, 0.90]), Threshold(0.93, "test"), rule, fraction)
    assert decided.score == pytest.approx(score) and decided.accepted is accepted
    assert (decided.threshold, decided.threshold_source) == (0.93, "test")


@pytest.mark.parametrize("rule, fraction", [("median", 0.5), ("fraction", 0.0), ("fraction", 1.5)])
def test_bad_claim_rules_are_config_errors(rule, fraction):
    with pytest.raises(ConfigError):
        claim(np.array([0.9]), Threshold(0.93, "test"), rule, fraction)


@pytest.mark.parametrize(
    "scores, provisional, deciding",
    [
        ([0.30, 0.60], [False, True], [0.30]),  # no original matches: the provisional 0.60 decides nothing
        ([0.45, 0.60], [False, True], [0.45, 0.60]),  # an original matches: every template decides
        ([0.30, 0.35], [False, False], [0.30, 0.35]),  # no provisional template: unchanged
        ([0.60, 0.20], [True, True], [0.60, 0.20]),  # no original at all: decided on what there is
    ],
)
def test_provisional_templates_decide_only_within_the_originals_reach(scores, provisional, deciding):
    kept = in_originals_reach(np.array(scores), np.array(provisional), Threshold(0.4, "test"))
    assert kept.tolist() == deciding


@pytest.mark.parametrize(
    "similarity, liveness, accepted, note",
    [
        (0.97, Liveness(), True, None),
        (0.97, Liveness(live=True), True, None),
        (0.97, Liveness(live=False), False, "did not pass the liveness check"),
        (0.90, Liveness(live=False), False, None),  # no match: nothing to explain
        (0.97, Liveness(challenge=False, challenge_reason="no parallax"), False, "challenge failed: no parallax"),
        (0.97, Liveness(challenge=True, same_person=False, lowest=0.41), False, "is not s3 (lowest score 0.41)"),
        (0.97, Liveness(live=True, challenge=True, same_person=True), True, None),
    ],
)
def test_liveness_gate(similarity, liveness, accepted, note):
    decided = gate(same(similarity, Threshold(0.93, "test")), liveness, who="s3")
    assert decided.accepted is accepted and type(decided) is Decision
    assert (note is None and decided.notes == ()) or (len(decided.notes) == 1 and note in decided.notes[0])


def test_a_pair_verification_is_a_decision(pipeline):
    result = pipeline.verify(att(3, 1), att(3, 2))
    assert isinstance(result, Verification) and isinstance(result, Decision)
    assert result.same is result.accepted is True and result.similarity == result.score >= result.threshold
    assert result.to_dict()["same"] is True and "accepted" not in result.to_dict()  # the JSON keeps its names
