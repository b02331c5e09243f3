"""Hand-computed checks of siamface.evaluation.metrics.

Every expected number below was worked out by hand (the derivation is in the
comments); none is produced by calling the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from siamface.evaluation import (
    DEFAULT_FAR_TARGETS,
    auc,
    best_accuracy_threshold,
    cmc_curve,
    confusion_at,
    eer,
    lfw_10fold,
    open_set_rates,
    rank_k_rate,
    roc_curve,
    tar_at_far,
    tar_at_fars,
    threshold_for_far,
)

NAN = float("nan")


def same(a: float, b: float) -> bool:
    """Equal, NaN == NaN, to 1e-12."""
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return a == pytest.approx(b, abs=1e-12)


# --------------------------------------------------------------------------- #
# Set A: a tie between a genuine and an impostor score, and one genuine failure.
# genuine: .9 .8 .3 NaN  (4)     impostor: .8 .2  (2)
# --------------------------------------------------------------------------- #
A_SCORES = [0.9, 0.8, 0.8, 0.3, 0.2, NAN]
A_LABELS = [1, 1, 0, 1, 0, 1]

# threshold, tp, fp, tn, fn, accuracy, precision, recall, f1, far, frr
CONFUSION_A = [
    # accept .9 only
    (0.85, 1, 0, 2, 3, 3 / 6, 1.0, 0.25, 0.4, 0.0, 0.75),
    # threshold equal to a score accepts it (>=): accept .9 .8g .8i
    (0.8, 2, 1, 1, 2, 3 / 6, 2 / 3, 0.5, 4 / 7, 0.5, 0.5),
    # accept every scored pair; the NaN genuine stays a false reject
    (0.0, 3, 2, 0, 1, 3 / 6, 3 / 5, 0.75, 2 / 3, 1.0, 0.25),
    # below every score, still no NaN accepted
    (-5.0, 3, 2, 0, 1, 3 / 6, 3 / 5, 0.75, 2 / 3, 1.0, 0.25),
    # accept nothing: precision reported as 0.0, f1 0.0
    (1.0, 0, 0, 2, 4, 2 / 6, 0.0, 0.0, 0.0, 0.0, 1.0),
]


@pytest.mark.parametrize("thr,tp,fp,tn,fn,acc,prec,rec,f1,far,frr", CONFUSION_A)
def test_confusion_at_table(thr, tp, fp, tn, fn, acc, prec, rec, f1, far, frr):
    c = confusion_at(A_SCORES, A_LABELS, thr)
    assert (c.tp, c.fp, c.tn, c.fn) == (tp, fp, tn, fn)
    got = (c.accuracy, c.precision, c.recall, c.f1, c.far, c.frr)
    for g, want in zip(got, (acc, prec, rec, f1, far, frr)):
        assert same(g, want)
    assert (c.n_failures, c.n_genuine_failures, c.n_impostor_failures) == (1, 1, 0)
    assert c.tar == c.recall and c.fmr == c.far and c.fnmr == c.frr
    d = c.to_dict()
    assert d["tp"] == tp and d["n_failures"] == 1 and d["threshold"] == thr


def test_confusion_impostor_failure_is_a_correct_reject():
    # genuine .7; impostors NaN, .4 -> at .5: tp1 tn2 (the NaN and .4)
    c = confusion_at([0.7, NAN, 0.4], [1, 0, 0], 0.5)
    assert (c.tp, c.fp, c.tn, c.fn) == (1, 0, 2, 0)
    assert (c.n_failures, c.n_genuine_failures, c.n_impostor_failures) == (1, 0, 1)
    assert c.far == 0.0 and c.accuracy == 1.0


@pytest.mark.parametrize(
    "labels,thr,expect",
    [
        # all genuine (.9, .5) at .6: tp1 fn1; FAR undefined
        (
            [1, 1],
            0.6,
            dict(tp=1, fp=0, tn=0, fn=1, accuracy=0.5, precision=1.0, recall=0.5, f1=2 / 3, far=NAN, frr=0.5),
        ),
        # all impostor (.9, .5) at .6: fp1 tn1; TAR, FRR, F1 undefined
        ([0, 0], 0.6, dict(tp=0, fp=1, tn=1, fn=0, accuracy=0.5, precision=0.0, recall=NAN, f1=NAN, far=0.5, frr=NAN)),
    ],
)
def test_confusion_one_class(labels, thr, expect):
    c = confusion_at([0.9, 0.5], labels, thr).to_dict()
    for k, v in expect.items():
        assert same(float(c[k]), v), k


def test_labels_may_be_bool():
    c = confusion_at(np.array([0.9, 0.1]), np.array([True, False]), 0.5)
    assert (c.tp, c.tn) == (1, 1)


@pytest.mark.parametrize(
    "scores,labels,match",
    [
        ([], [], "empty"),
        ([0.1, 0.2], [1], "length"),
        ([0.1, 0.2], [1, 2], "0 \\(impostor\\) or 1"),
        ([0.1, np.inf], [1, 0], "inf"),
        ([[0.1, 0.2]], [1, 0], "1-D"),
        ([0.1, 0.2], ["a", "b"], "labels"),
    ],
)
def test_bad_input_raises(scores, labels, match):
    for fn in (
        lambda: confusion_at(scores, labels, 0.5),
        lambda: roc_curve(scores, labels),
        lambda: eer(scores, labels),
        lambda: tar_at_far(scores, labels, 0.1),
        lambda: best_accuracy_threshold(scores, labels),
    ):
        with pytest.raises(ValueError, match=match):
            fn()


def test_nan_threshold_raises():
    with pytest.raises(ValueError, match="threshold"):
        confusion_at([0.1], [1], NAN)


# --------------------------------------------------------------------------- #
# ROC, AUC, EER
# --------------------------------------------------------------------------- #
ROC_CASES = [
    # Set A: distinct thresholds .9 .8 .3 .2; the .8 tie moves diagonally (+1 gen, +1 imp);
    # the NaN genuine needs the closing point (1,1) at -inf.
    (A_SCORES, A_LABELS, [0, 0, 0.5, 0.5, 1, 1], [0, 0.25, 0.5, 0.75, 0.75, 1], [np.inf, 0.9, 0.8, 0.3, 0.2, -np.inf]),
    # separable, no failures: ends at (1,1) at the lowest score, no closing point
    ([0.9, 0.7, 0.4, 0.1], [1, 1, 0, 0], [0, 0, 0, 0.5, 1], [0, 0.5, 1, 1, 1], [np.inf, 0.9, 0.7, 0.4, 0.1]),
    # a genuine/impostor tie at .5; input order shuffled
    ([0.5, 0.2, 0.8, 0.5], [0, 0, 1, 1], [0, 0, 0.5, 1], [0, 0.5, 1, 1], [np.inf, 0.8, 0.5, 0.2]),
    # three-way tie among all scores: one diagonal step
    ([0.5, 0.5, 0.5], [1, 0, 1], [0, 1], [0, 1], [np.inf, 0.5]),
]


@pytest.mark.parametrize("scores,labels,far,tar,thr", ROC_CASES)
def test_roc_curve(scores, labels, far, tar, thr):
    f, t, th = roc_curve(scores, labels)
    np.testing.assert_allclose(f, far)
    np.testing.assert_allclose(t, tar)
    np.testing.assert_array_equal(th, thr)


@pytest.mark.parametrize(
    "scores,labels,want_auc",
    [
        # Mann-Whitney by hand, NaN genuine ranked lowest: .9 beats 2; .8 ties .8 (1/2) beats .2;
        # .3 beats .2; NaN beats none -> 4.5 / 8
        (A_SCORES, A_LABELS, 0.5625),
        ([0.9, 0.7, 0.4, 0.1], [1, 1, 0, 0], 1.0),
        # .8 beats both, .5 ties .5 and beats .2 -> 3.5 / 4
        ([0.5, 0.2, 0.8, 0.5], [0, 0, 1, 1], 0.875),
        # everything tied -> chance
        ([0.5, 0.5, 0.5], [1, 0, 1], 0.5),
        # perfectly inverted
        ([0.1, 0.9], [1, 0], 0.0),
    ],
)
def test_auc_of_roc(scores, labels, want_auc):
    f, t, _ = roc_curve(scores, labels)
    assert auc(f, t) == pytest.approx(want_auc)


def test_auc_direct():
    assert auc([0, 0.5, 1], [0, 1, 1]) == pytest.approx(0.75)
    assert auc([1, 0.5, 0], [1, 1, 0]) == pytest.approx(0.75)  # decreasing order is fine
    assert math.isnan(auc([NAN, NAN], [0, 1]))
    with pytest.raises(ValueError):
        auc([0, 0.5, 0.2], [0, 1, 1])  # not monotonic
    with pytest.raises(ValueError):
        auc([0], [0])


@pytest.mark.parametrize(
    "scores,labels,want_eer,want_thr",
    [
        # Set A: at threshold .8 FAR = FRR = .5 exactly
        (A_SCORES, A_LABELS, 0.5, 0.8),
        # separable: FAR = FRR = 0 at threshold .7
        ([0.9, 0.7, 0.4, 0.1], [1, 1, 0, 0], 0.0, 0.7),
        # genuine .9 .6 .4, impostor .7 .2:
        #   at .7 FAR=1/2 FRR=2/3 (FAR-FRR=-1/6); at .6 FAR=1/2 FRR=1/3 (+1/6)
        #   halfway: EER = 1/2, threshold = (.7+.6)/2
        ([0.9, 0.7, 0.6, 0.4, 0.2], [1, 0, 1, 1, 0], 0.5, 0.65),
        # tie at .5: at .8 (FAR 0, FRR 1/2), at .5 (FAR 1/2, FRR 0): crossing halfway -> 1/4, thr .65
        ([0.5, 0.2, 0.8, 0.5], [0, 0, 1, 1], 0.25, 0.65),
        # one-class sets: undefined
        ([0.9, 0.5], [1, 1], NAN, NAN),
        ([0.9, 0.5], [0, 0], NAN, NAN),
    ],
)
def test_eer(scores, labels, want_eer, want_thr):
    e, thr = eer(scores, labels)
    assert same(e, want_eer)
    assert same(thr, want_thr)


def test_roc_one_class_is_nan_not_crash():
    f, t, _ = roc_curve([0.9, 0.5], [1, 1])
    assert np.isnan(f).all()
    np.testing.assert_allclose(t, [0, 0.5, 1])
    assert math.isnan(auc(f, t))
    f, t, _ = roc_curve([0.9, 0.5], [0, 0])
    assert np.isnan(t).all()
    np.testing.assert_allclose(f, [0, 0.5, 1])


def test_all_failures():
    # no scored pair: the ROC goes straight from (0,0) at +inf to (1,1) at -inf
    f, t, th = roc_curve([NAN, NAN], [1, 0])
    np.testing.assert_allclose(f, [0, 1])
    np.testing.assert_allclose(t, [0, 1])
    np.testing.assert_array_equal(th, [np.inf, -np.inf])
    c = confusion_at([NAN, NAN], [1, 0], 0.0)
    assert (c.tp, c.fp, c.tn, c.fn, c.n_failures) == (0, 0, 1, 1, 2)
    bt = best_accuracy_threshold([NAN, NAN], [1, 0])
    assert bt.threshold == np.inf and bt.accuracy == 0.5


# --------------------------------------------------------------------------- #
# TAR at FAR, threshold for FAR
# --------------------------------------------------------------------------- #
# 10 impostors .1 .2 .3 .4 .5 .6 .7 .8 .9 .95 and 5 genuines .99 .92 .85 .75 .65
D_IMP = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
D_GEN = [0.99, 0.92, 0.85, 0.75, 0.65]
D_SCORES = D_IMP + D_GEN
D_LABELS = [0] * 10 + [1] * 5


@pytest.mark.parametrize(
    "target,tar,thr,achieved,supported",
    [
        # 1 false accept allowed: must reject .9, smallest score above .9 is .92 -> accept .99 .92 (+ imp .95)
        (0.1, 0.4, 0.92, 0.1, True),
        # 2 allowed: must reject .8, smallest score above it .85 -> 3 genuines, imps .95 .9
        (0.2, 0.6, 0.85, 0.2, True),
        # 0 allowed: above .95 -> .99; 10 impostors < 1/0.05 = 20 -> unsupported
        (0.05, 0.2, 0.99, 0.0, False),
        (0.01, 0.2, 0.99, 0.0, False),
        (1e-4, 0.2, 0.99, 0.0, False),
        # 5 allowed: reject .5 -> smallest score above .5 is .6 -> all genuines, imps .6..95
        (0.5, 1.0, 0.6, 0.5, True),
        # everything allowed: lowest score
        (1.0, 1.0, 0.1, 1.0, True),
    ],
)
def test_tar_at_far(target, tar, thr, achieved, supported):
    r = tar_at_far(D_SCORES, D_LABELS, target)
    assert r.tar == pytest.approx(tar)
    assert r.threshold == thr
    assert r.achieved_far == pytest.approx(achieved)
    assert r.supported is supported
    assert r.achieved_far <= target
    t, th, a, s = r[:4]  # unpacks as the 4-tuple
    assert (t, th, a, s) == (r.tar, r.threshold, r.achieved_far, r.supported)
    assert threshold_for_far(D_SCORES, D_LABELS, target) == thr


def test_tar_at_fars_default_targets():
    rs = tar_at_fars(D_SCORES, D_LABELS)
    assert DEFAULT_FAR_TARGETS == (1e-1, 1e-2, 1e-3, 1e-4)
    assert [r.far_target for r in rs] == [1e-1, 1e-2, 1e-3, 1e-4]
    assert [r.tar for r in rs] == pytest.approx([0.4, 0.2, 0.2, 0.2])
    assert [r.supported for r in rs] == [True, False, False, False]


def test_tar_at_far_top_score_is_impostor_gives_inf():
    # imp .9 .1, gen .5; target .4 -> 0 false accepts allowed -> must reject .9, no score above it
    r = tar_at_far([0.9, 0.1, 0.5], [0, 0, 1], 0.4)
    assert r.threshold == np.inf and r.tar == 0.0 and r.achieved_far == 0.0
    assert r.supported is False  # 2 impostors < 1/0.4


def test_tar_at_far_with_failures():
    # imp .9, NaN ; gen .5, NaN. target .5 -> 1 FA allowed -> threshold .5, tp 1 of 2 genuines
    r = tar_at_far([0.9, NAN, 0.5, NAN], [0, 0, 1, 1], 0.5)
    assert (r.tar, r.threshold, r.achieved_far, r.supported) == (0.5, 0.5, 0.5, True)
    assert r.n_failures == 2 and r.n_impostors == 2


def test_tar_at_far_one_class():
    r = tar_at_far([0.9, 0.5], [1, 1], 0.1)
    assert math.isnan(r.tar) and math.isnan(r.threshold) and math.isnan(r.achieved_far)
    assert r.supported is False
    # all impostors: TAR undefined but the threshold is still meaningful (1 FA of 2 allowed at .5)
    r = tar_at_far([0.9, 0.5], [0, 0], 0.5)
    assert math.isnan(r.tar) and r.threshold == 0.9 and r.achieved_far == 0.5 and r.supported


@pytest.mark.parametrize(
    "target,thr",
    [
        # 5 impostor comparisons (one failed): .2 -> 1 FA allowed -> above .3 -> .4
        (0.2, 0.4),
        # 2 allowed -> above .2 -> .3
        (0.4, 0.3),
        # 0 allowed -> above .4 -> nothing observed -> +inf
        (0.1, np.inf),
        # 4 allowed = every scored impostor -> .1
        (0.8, 0.1),
    ],
)
def test_threshold_for_far_impostor_scores_only(target, thr):
    assert threshold_for_far([0.3, 0.1, 0.2, 0.4, NAN], None, target) == thr


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5, NAN])
def test_far_target_out_of_range(target):
    with pytest.raises(ValueError, match="far_target"):
        tar_at_far(D_SCORES, D_LABELS, target)
    with pytest.raises(ValueError, match="far_target"):
        threshold_for_far(D_IMP, None, target)


# --------------------------------------------------------------------------- #
# best-accuracy threshold and LFW 10-fold
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "scores,labels,thr,acc",
    [
        # distinct .1 .2 .8 .9 -> midpoint .5 separates perfectly
        ([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0], 0.5, 1.0),
        # imp .1, gen .2, imp .3, gen .4: candidates .05 .15 .25 .35 .45 (margin = half mean gap .05)
        # accuracies .5 .75 .5 .75 .5 -> tie .15/.35, the largest wins
        ([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], 0.35, 0.75),
        # Set A: candidates ~.083 .25 .55 .85 ~1.017; at .25: tp3 fp1 tn1 fn1(NaN) -> 4/6
        (A_SCORES, A_LABELS, 0.25, 4 / 6),
        # one distinct score: candidates .0 and 1.0 both give .5 -> largest
        ([0.5, 0.5], [1, 0], 1.0, 0.5),
        # all impostors: candidates .3 .7 1.1 (margin = half the mean gap .4) -> reject all at 1.1
        ([0.9, 0.5], [0, 0], 1.1, 1.0),
    ],
)
def test_best_accuracy_threshold(scores, labels, thr, acc):
    r = best_accuracy_threshold(scores, labels)
    assert r.threshold == pytest.approx(thr)
    assert r.accuracy == pytest.approx(acc)


# Three folds of (genuine, impostor): (.9,.1), (.8,.3), (.4,.6)
#  test fold 0, train on (.8,.3),(.4,.6): candidates 13/60 .35 .5 .7 53/60 -> .75 at .35 and .7 -> .7
#     fold 0 at .7: .9 accepted, .1 rejected -> 1.0
#  test fold 1, train on (.9,.1),(.4,.6): candidates -1/30 .25 .5 .75 31/30 -> .75 at .25 and .75 -> .75
#     fold 1 at .75: .8 accepted, .3 rejected -> 1.0
#  test fold 2, train on (.9,.1),(.8,.3): .55 separates -> fold 2 at .55: .4 rejected, .6 accepted -> 0.0
# mean 2/3; sample std sqrt(((1/3)^2 + (1/3)^2 + (2/3)^2) / 2) = sqrt(1/3); s.e. = sqrt(1/3)/sqrt(3) = 1/3
K_SCORES = [0.9, 0.1, 0.8, 0.3, 0.4, 0.6]
K_LABELS = [1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize(
    "scores,labels,folds",
    [
        (K_SCORES, K_LABELS, 3),  # contiguous folds, like pairs.txt order
        (K_SCORES, K_LABELS, [0, 0, 1, 1, 2, 2]),
        # shuffled order with explicit fold ids (any sortable ids)
        ([0.6, 0.9, 0.3, 0.1, 0.4, 0.8], [0, 1, 0, 0, 1, 1], ["c", "a", "b", "a", "c", "b"]),
    ],
)
def test_lfw_10fold_three_folds(scores, labels, folds):
    r = lfw_10fold(scores, labels, folds)
    assert r.accuracies == pytest.approx((1.0, 1.0, 0.0))
    assert r.thresholds == pytest.approx((0.7, 0.75, 0.55))
    assert r.fold_sizes == (2, 2, 2)
    assert r.mean == pytest.approx(2 / 3)
    assert r.std == pytest.approx(math.sqrt(1 / 3))
    assert r.standard_error == pytest.approx(1 / 3)
    assert r.n_failures == 0
    assert r.to_dict()["mean"] == pytest.approx(2 / 3)


def test_lfw_10fold_ten_folds_and_failures():
    # 10 folds of (genuine .9, impostor .1), except fold 3 whose genuine failed (NaN).
    # Training always finds .5 (candidates from .1 and .9; margin .4 -> -.3 .5 1.3);
    # fold 3: NaN genuine is a false reject, impostor rejected -> 0.5; others 1.0.
    scores = [0.9, 0.1] * 10
    scores[6] = NAN
    labels = [1, 0] * 10
    r = lfw_10fold(scores, labels, 10)
    assert r.fold_sizes == (2,) * 10
    assert r.accuracies == pytest.approx((1.0, 1.0, 1.0, 0.5) + (1.0,) * 6)
    assert r.thresholds == pytest.approx((0.5,) * 10)
    assert r.mean == pytest.approx(0.95)
    # deviations: nine of +.05, one of -.45 -> sum sq = 9*.0025 + .2025 = .225; /9 = .025
    assert r.std == pytest.approx(math.sqrt(0.025))
    assert r.n_failures == 1


@pytest.mark.parametrize("folds", [1, [0, 0, 0, 0, 0, 0], [0, 1]])
def test_lfw_10fold_bad_folds(folds):
    with pytest.raises(ValueError):
        lfw_10fold(K_SCORES, K_LABELS, folds)


# --------------------------------------------------------------------------- #
# identification
# --------------------------------------------------------------------------- #
# gallery: 7 templates of 6 identities, A has two
GALLERY = ["A", "A", "B", "C", "D", "E", "F"]
PROBES = ["A", "B", "C", "X", "D", "E", "Y"]
SIM = np.array(
    [
        # A1    A2    B     C     D     E     F
        [0.20, 0.90, 0.50, 0.10, 0.00, 0.00, 0.00],  # A: best A .9 -> rank 1
        [0.70, 0.30, 0.60, 0.10, 0.20, 0.00, 0.00],  # B: A .7 above B .6 -> rank 2
        [0.80, 0.75, 0.70, 0.40, 0.60, 0.50, 0.45],  # C: identities A B D E F above -> rank 6 (7 by template)
        [0.30, 0.20, 0.95, 0.10, 0.10, 0.10, 0.10],  # X: non-mated, best .95
        [NAN, NAN, NAN, NAN, NAN, NAN, NAN],  # D: failure to acquire -> always a miss
        [0.50, 0.50, 0.10, 0.10, 0.10, 0.50, 0.10],  # E: tie with A at .5 -> pessimistic rank 2
        [0.60, 0.10, 0.20, 0.30, 0.10, 0.10, 0.10],  # Y: non-mated, best .6
    ]
)


@pytest.mark.parametrize(
    "k,hits,rate",
    [
        (1, 1, 1 / 5),  # A
        (2, 3, 3 / 5),  # A B E
        (5, 3, 3 / 5),
        (6, 4, 4 / 5),  # + C (identity-level rank 6)
        (7, 4, 4 / 5),  # D never
    ],
)
def test_rank_k_rate(k, hits, rate):
    r = rank_k_rate(SIM, PROBES, GALLERY, k)
    assert (r.k, r.n_hits, r.n_mated, r.n_non_mated_ignored, r.n_failures) == (k, hits, 5, 2, 1)
    assert r.rate == pytest.approx(rate)
    assert float(r) == pytest.approx(rate)


def test_cmc_curve():
    np.testing.assert_allclose(cmc_curve(SIM, PROBES, GALLERY), [0.2, 0.6, 0.6, 0.6, 0.6, 0.8])
    np.testing.assert_allclose(cmc_curve(SIM, PROBES, GALLERY, max_rank=2), [0.2, 0.6])


def test_rank_k_no_mated_probe_is_nan():
    r = rank_k_rate(SIM[[3, 6]], ["X", "Y"], GALLERY, 1)
    assert math.isnan(r.rate) and r.n_mated == 0 and r.n_non_mated_ignored == 2


@pytest.mark.parametrize(
    "thr,rank,fpir,fnir,fp,misses",
    [
        # non-mated X (.95) >= .65 is a false positive, Y (.6) not; only A found at rank 1 with >= .65
        (0.65, 1, 1 / 2, 4 / 5, 1, 4),
        # boundary: X at exactly .95 counts; A's .9 < .95 -> every mated search misses
        (0.95, 1, 1 / 2, 5 / 5, 1, 5),
        (0.96, 1, 0 / 2, 5 / 5, 0, 5),
        # threshold 0: both non-mated are false positives; rank-1 still finds only A
        (0.0, 1, 2 / 2, 4 / 5, 2, 4),
        # rank 2 at .5: A (.9), B (.6), E (.5, tie -> rank 2) found; C rank 6 and D missed
        (0.5, 2, 2 / 2, 2 / 5, 2, 2),
    ],
)
def test_open_set_rates(thr, rank, fpir, fnir, fp, misses):
    r = open_set_rates(SIM, PROBES, GALLERY, thr, rank=rank)
    assert r.fpir == pytest.approx(fpir)
    assert r.fnir == pytest.approx(fnir)
    assert r.tpir == pytest.approx(1 - fnir)
    assert (r.n_false_positives, r.n_non_mated, r.n_misses, r.n_mated, r.n_failures) == (fp, 2, misses, 5, 1)


def test_open_set_failed_non_mated_probe_is_not_a_false_positive():
    sim = np.array([[NAN, NAN], [0.9, 0.1]])
    r = open_set_rates(sim, ["X", "A"], ["A", "B"], -1.0)
    assert r.fpir == 0.0 and r.fnir == 0.0 and r.n_failures == 1


def test_open_set_undefined_rates_are_nan():
    r = open_set_rates(SIM[[0]], ["A"], GALLERY, 0.5)  # no non-mated probe
    assert math.isnan(r.fpir) and r.fnir == 0.0
    r = open_set_rates(SIM[[3]], ["X"], GALLERY, 0.5)  # no mated probe
    assert math.isnan(r.fnir) and r.fpir == 1.0


@pytest.mark.parametrize(
    "sim,pids,gids",
    [
        (np.zeros((0, 3)), [], ["A", "B", "C"]),  # no probes
        (np.zeros((2, 0)), ["A", "B"], []),  # empty gallery
        (np.zeros((2, 3)), ["A"], ["A", "B", "C"]),  # probe ids mismatch
        (np.zeros((2, 3)), ["A", "B"], ["A", "B"]),  # gallery ids mismatch
        (np.zeros(3), ["A"], ["A", "B", "C"]),  # not 2-D
    ],
)
def test_identification_bad_input(sim, pids, gids):
    with pytest.raises(ValueError):
        rank_k_rate(sim, pids, gids, 1)
    with pytest.raises(ValueError):
        open_set_rates(sim, pids, gids, 0.5)


def test_rank_k_must_be_positive():
    with pytest.raises(ValueError, match="k"):
        rank_k_rate(SIM, PROBES, GALLERY, 0)


# --------------------------------------------------------------------------- #
# plots (optional dependency)
# --------------------------------------------------------------------------- #
def test_plots_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    from siamface.evaluation.plots import plot_roc, plot_score_histograms

    far, tar, _ = roc_curve(D_SCORES, D_LABELS)
    p1 = plot_roc(far, tar, tmp_path / "roc.png", label="test")
    p2 = plot_score_histograms(D_GEN + [NAN], D_IMP, 0.92, tmp_path / "hist.png")
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
