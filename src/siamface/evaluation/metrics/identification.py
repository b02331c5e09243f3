"""1:N figures: closed-set rank-k and the CMC, open-set FPIR/FNIR at a threshold."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._checks import _COUNT_EPS, _ratio


# --------------------------------------------------------------------------- #
# identification (1:N)
# --------------------------------------------------------------------------- #
def _validate_search(
    similarity: Any, probe_ids: Any, gallery_ids: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns (per-identity best score matrix (P, I) with NaN -> -inf,
    identity labels (I,), probe ids (P,), mated mask (P,), failed-probe mask (P,))."""
    m = np.asarray(similarity, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D (probes x gallery), got shape {m.shape}")
    p_n, g_n = m.shape
    if p_n == 0:
        raise ValueError("no probes: the similarity matrix has 0 rows")
    if g_n == 0:
        raise ValueError("empty gallery: the similarity matrix has 0 columns")
    pid = np.asarray(probe_ids)
    gid = np.asarray(gallery_ids)
    if pid.ndim != 1 or pid.size != p_n:
        raise ValueError(f"probe_ids must have one id per row ({p_n}), got shape {pid.shape}")
    if gid.ndim != 1 or gid.size != g_n:
        raise ValueError(f"gallery_ids must have one id per column ({g_n}), got shape {gid.shape}")
    if np.isinf(m).any():
        raise ValueError("similarity matrix contains +/-inf; use NaN for a failure")
    failed = np.isnan(m).all(axis=1)
    m = np.where(np.isnan(m), -np.inf, m)
    idents, inverse = np.unique(gid, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")  # group each identity's templates together
    starts = np.searchsorted(inverse[order], np.arange(idents.size))
    per_id = np.maximum.reduceat(m[:, order], starts, axis=1)  # best template per identity
    mated = np.isin(pid, idents)
    return per_id, idents, pid, mated, failed


def _mated_ranks(per_id: np.ndarray, idents: np.ndarray, pid: np.ndarray, mated: np.ndarray) -> np.ndarray:
    """Rank (1-based) of the true identity for mated probes; inf when it cannot be found.

    Pessimistic on ties: identities scoring *equal* to the true one rank ahead of it.
    """
    rows = np.flatnonzero(mated)
    cols = np.searchsorted(idents, pid[rows])
    true = per_id[rows, cols]
    ranks = (per_id[rows] >= true[:, None]).sum(axis=1).astype(np.float64)
    ranks[np.isneginf(true)] = np.inf  # failure / NaN mated score: never found
    return ranks


@dataclass(frozen=True)
class RankResult:
    """Closed-set rank-k identification rate (see :func:`rank_k_rate`)."""

    k: int
    rate: float
    n_hits: int
    n_mated: int
    n_non_mated_ignored: int
    n_failures: int

    def __float__(self) -> float:
        return self.rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cmc_curve(similarity: Any, probe_ids: Any, gallery_ids: Any, max_rank: int | None = None) -> np.ndarray:
    """Cumulative match characteristic: ``cmc[r-1]`` = rank-r identification rate, r = 1..max_rank.

    Same conventions as :func:`rank_k_rate` (closed set: only mated probes count;
    ranks are over gallery *identities*; ties pessimistic; failures are misses).
    ``max_rank`` defaults to the number of gallery identities. All NaN when no
    probe is mated.
    """
    per_id, idents, pid, mated, _ = _validate_search(similarity, probe_ids, gallery_ids)
    r_max = idents.size if max_rank is None else int(max_rank)
    if r_max < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    n_mated = int(mated.sum())
    if n_mated == 0:
        return np.full(r_max, np.nan)
    ranks = _mated_ranks(per_id, idents, pid, mated)
    r = np.arange(1, r_max + 1)
    return (ranks[None, :] <= r[:, None]).sum(axis=1) / n_mated


def rank_k_rate(similarity: Any, probe_ids: Any, gallery_ids: Any, k: int = 1) -> RankResult:
    """Closed-set rank-k identification rate.

    ``similarity`` is a (P, G) matrix of probe-vs-gallery-template scores,
    ``probe_ids`` the P true ids, ``gallery_ids`` the G template ids (an
    identity may own several templates: its score is the best of its
    templates, and ranks are over *identities*). Only **mated** probes (whose id
    is in the gallery) count; the others are ignored and counted in
    ``n_non_mated_ignored``. A probe is a hit when its identity's rank is <= k.

    Ties are pessimistic: another identity with a score *equal* to the true
    identity's ranks ahead of it. NaN entries are failures (never a match); a
    probe whose row is all NaN (failure to acquire) is a miss and is counted in
    ``n_failures`` (over all probes). ``rate`` is NaN when no probe is mated.
    Raises ``ValueError`` on empty input, shape mismatch or k < 1.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    per_id, idents, pid, mated, failed = _validate_search(similarity, probe_ids, gallery_ids)
    n_mated = int(mated.sum())
    ranks = _mated_ranks(per_id, idents, pid, mated)
    hits = int((ranks <= k).sum())
    return RankResult(
        k=k,
        rate=_ratio(hits, n_mated),
        n_hits=hits,
        n_mated=n_mated,
        n_non_mated_ignored=int((~mated).sum()),
        n_failures=int(failed.sum()),
    )


@dataclass(frozen=True)
class OpenSetResult:
    """Open-set identification error rates at one threshold (see :func:`open_set_rates`)."""

    threshold: float
    rank: int
    fpir: float
    fnir: float
    n_false_positives: int
    n_non_mated: int
    n_misses: int
    n_mated: int
    n_failures: int

    @property
    def tpir(self) -> float:
        """True positive identification rate, 1 - FNIR."""
        return 1.0 - self.fnir

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_set_rates(
    similarity: Any, probe_ids: Any, gallery_ids: Any, threshold: float, *, rank: int = 1
) -> OpenSetResult:
    """Open-set (watch-list) identification rates: FPIR and FNIR at ``threshold``.

    Definitions follow ISO/IEC 19795-1 and NIST FRVT 1:N:

    * **FPIR** (false positive identification rate) = fraction of *non-mated*
      searches (probe id not in the gallery) that return any candidate with
      score >= threshold, i.e. whose best score over the gallery is >= threshold.
    * **FNIR** (false negative identification rate) = fraction of *mated*
      searches whose true identity is **not** returned within the top ``rank``
      identities (default 1) with a score >= threshold. ``TPIR = 1 - FNIR``.

    The gallery may hold several templates per identity (``gallery_ids``
    repeats): an identity scores its best template, ranks are over identities,
    and ties with another identity are pessimistic (the true identity loses).
    NaN entries are failures and never match. A probe whose whole row is NaN
    (failure to acquire) is a miss if mated and a correct non-match if
    non-mated; such probes are counted in ``n_failures``. FPIR is NaN when there
    is no non-mated probe; FNIR is NaN when there is no mated probe.
    Raises ``ValueError`` on empty input, shape mismatch, NaN threshold, rank < 1.
    """
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold is NaN")
    rank = int(rank)
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    per_id, idents, pid, mated, failed = _validate_search(similarity, probe_ids, gallery_ids)
    best = per_id.max(axis=1)  # -inf for failed probes
    non_mated = ~mated
    fp = int(np.count_nonzero(non_mated & (best >= t)))
    rows = np.flatnonzero(mated)
    ranks = _mated_ranks(per_id, idents, pid, mated)
    true = per_id[rows, np.searchsorted(idents, pid[rows])]
    found = (ranks <= rank) & (true >= t)
    misses = int(np.count_nonzero(~found))
    n_mated = int(rows.size)
    n_non = int(np.count_nonzero(non_mated))
    return OpenSetResult(
        threshold=t,
        rank=rank,
        fpir=_ratio(fp, n_non),
        fnir=_ratio(misses, n_mated),
        n_false_positives=fp,
        n_non_mated=n_non,
        n_misses=misses,
        n_mated=n_mated,
        n_failures=int(failed.sum()),
    )


# --------------------------------------------------------------------------- #
# FNIR at FPIR targets, the DET curve, the gallery-size sweep
# --------------------------------------------------------------------------- #
#: The FPIR operating points `evaluate --identify` reports: 10 %, 1 %, 0.1 %.
DEFAULT_FPIR_TARGETS: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
#: How a probe is scored against a person with several templates: the best one, their mean, the mean of
#: the best two.
SCORE_RULES: tuple[str, ...] = ("best", "mean", "top2")


def _person_scores(similarity: np.ndarray, gallery_ids: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(identities (I,), (P, I) per-identity scores by `rule`), NaN -> -inf (a failure never matches)."""
    if rule not in SCORE_RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(SCORE_RULES)}")
    m = np.where(np.isnan(similarity), -np.inf, np.asarray(similarity, np.float64))
    idents, inverse = np.unique(gallery_ids, return_inverse=True)
    out = np.empty((m.shape[0], idents.size))
    for j in range(idents.size):
        cols = np.sort(m[:, inverse.ravel() == j], axis=1)[:, ::-1]
        if rule == "best":
            out[:, j] = cols[:, 0]
        elif rule == "mean":
            out[:, j] = cols.mean(axis=1)
        else:
            out[:, j] = cols[:, : min(2, cols.shape[1])].mean(axis=1)
    return idents, out


def threshold_at_fpir(non_mated_best: Any, fpir: float) -> float:
    """The lowest threshold naming at most a share `fpir` of these non-mated searches (their best scores,
    -inf for a failure): just above the (k+1)-th best, k = floor(fpir * searches)."""
    best = np.sort(np.asarray(non_mated_best, np.float64))[::-1]
    k = int(math.floor(fpir * best.size + _COUNT_EPS))
    if k >= best.size:
        return -math.inf
    return float(np.nextafter(best[k], np.inf))


def fnir_at_fpir(
    similarity: Any, probe_ids: Any, gallery_ids: Any, fpir: float, *, rule: str = "best"
) -> OpenSetResult:
    """Open-set rates at the threshold where the measured FPIR is at most `fpir` (`threshold_at_fpir` on
    the non-mated probes' best scores), identities scored by `rule` (see `SCORE_RULES`)."""
    per_id, idents, pid, mated, _ = _validate_search(similarity, probe_ids, gallery_ids)
    if rule != "best":
        idents, per_id = _person_scores(np.asarray(similarity, np.float64), np.asarray(gallery_ids), rule)
    t = threshold_at_fpir(per_id[~mated].max(axis=1), fpir) if (~mated).any() else math.inf
    return _open_set_from_scores(per_id, idents, pid, mated, t)


def _open_set_from_scores(per_id, idents, pid, mated, t: float) -> OpenSetResult:
    best = per_id.max(axis=1)
    rows = np.flatnonzero(mated)
    ranks = _mated_ranks(per_id, idents, pid, mated)
    true = per_id[rows, np.searchsorted(idents, pid[rows])]
    found = (ranks <= 1) & (true >= t)
    fp = int(np.count_nonzero(~mated & (best >= t)))
    n_non = int(np.count_nonzero(~mated))
    return OpenSetResult(
        threshold=float(t),
        rank=1,
        fpir=_ratio(fp, n_non),
        fnir=_ratio(int(np.count_nonzero(~found)), rows.size),
        n_false_positives=fp,
        n_non_mated=n_non,
        n_misses=int(np.count_nonzero(~found)),
        n_mated=int(rows.size),
        n_failures=int(np.isneginf(best).sum()),
    )


def det_curve(similarity: Any, probe_ids: Any, gallery_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """The open-set DET curve: (FPIR, FNIR) at every threshold a non-mated best score sets, FPIR
    decreasing."""
    per_id, idents, pid, mated, _ = _validate_search(similarity, probe_ids, gallery_ids)
    cuts = np.unique(per_id[~mated].max(axis=1))
    cuts = cuts[np.isfinite(cuts)]
    points = [_open_set_from_scores(per_id, idents, pid, mated, float(t)) for t in cuts]
    return np.array([p.fpir for p in points]), np.array([p.fnir for p in points])


@dataclass(frozen=True)
class SweepPoint:
    """One gallery size of the sweep: `people` enrolled with `templates` in all, the `threshold` in force
    for that size, the FPIR measured on `n_non_mated` stranger searches against the `target`, and the
    FNIR of `n_mated` mated searches, pooled over `draws` random galleries."""

    people: int
    templates: int
    threshold: float
    target: float | None
    fpir: float
    n_non_mated: int
    fnir: float
    n_mated: int
    draws: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gallery_sweep(
    embeddings: Any,
    labels: Any,
    threshold_for: Any,
    sizes: Sequence[int],
    *,
    per_person: int = 1,
    min_searches: int = 4000,
    max_draws: int = 200,
    target: float | None = None,
    seed: int = 0,
) -> list[SweepPoint]:
    """FPIR and FNIR measured at each gallery size: `people` identities drawn at random (among those with
    more than `per_person` faces) are enrolled with their first `per_person` faces; their other faces are
    mated searches, every face of every other identity a stranger's search. The threshold at each size is
    ``threshold_for(people, templates)`` (a fixed one ignores both); the best template decides (the
    best-of-k rule). Draws repeat until `min_searches` stranger searches (at most `max_draws`).
    `embeddings`: (n, d) L2-normalised, NaN rows where no face was found (left out)."""
    e = np.asarray(embeddings, np.float64)
    y = np.asarray(labels)
    ok = ~np.isnan(e).any(axis=1)
    e, y = e[ok], y[ok]
    idents, counts = np.unique(y, return_counts=True)
    eligible = idents[counts > per_person]
    sim = e @ e.T
    rng = np.random.default_rng(seed)
    rows = np.arange(len(y))
    out = []
    for people in sizes:
        if people > len(eligible) or people >= len(idents):
            continue
        fp = n_non = misses = n_mated = draws = 0
        t = float(threshold_for(people, people * per_person))
        while draws < max_draws and (n_non < min_searches or draws == 0):
            chosen = rng.choice(eligible, people, replace=False)
            enrolled = np.isin(y, chosen)
            gallery = np.concatenate([rows[y == c][:per_person] for c in chosen])
            mated = enrolled & ~np.isin(rows, gallery)
            s = sim[:, gallery]
            best = s.max(axis=1)
            named = y[gallery][s.argmax(axis=1)]
            fp += int(np.count_nonzero(~enrolled & (best >= t)))
            n_non += int(np.count_nonzero(~enrolled))
            misses += int(np.count_nonzero(mated & ~((named == y) & (best >= t))))
            n_mated += int(np.count_nonzero(mated))
            draws += 1
        out.append(
            SweepPoint(
                people,
                people * per_person,
                t,
                target,
                _ratio(fp, n_non),
                n_non,
                _ratio(misses, n_mated),
                n_mated,
                draws,
            )
        )
    return out
