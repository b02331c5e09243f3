"""1:N figures: closed-set rank-k and the CMC, open-set FPIR/FNIR at a threshold."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._checks import _ratio


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
