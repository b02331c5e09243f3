"""Presentation-attack detection metrics (ISO/IEC 30107-3).

* APCER (per attack type): share of attack presentations of that type accepted as live.
* BPCER: share of bona fide (live) presentations rejected as attacks.
* ACER: (max APCER over attack types + BPCER) / 2, the usual summary.
A presentation where no face was found is neither: it is counted apart (`no_face`), because the chain
never gets to a decision on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LIVE = "live"


@dataclass
class PadReport:
    threshold: float
    bpcer: float
    apcer: dict[str, float]
    counts: dict[str, int]
    eer: float
    eer_threshold: float
    bpcer_at_apcer: dict[str, float] = field(default_factory=dict)

    @property
    def acer(self) -> float:
        return (max(self.apcer.values(), default=0.0) + self.bpcer) / 2

    def to_dict(self) -> dict:
        return {
            "threshold": round(self.threshold, 4),
            "bpcer": round(self.bpcer, 4),
            "apcer": {k: round(v, 4) for k, v in self.apcer.items()},
            "acer": round(self.acer, 4),
            "eer": round(self.eer, 4),
            "eer_threshold": round(self.eer_threshold, 4),
            "bpcer_at_apcer": {k: round(v, 4) for k, v in self.bpcer_at_apcer.items()},
            "counts": self.counts,
        }


def pad_report(scores: np.ndarray, labels: list[str] | np.ndarray, threshold: float) -> PadReport:
    """`scores`: probability of live per presentation; `labels`: "live" or the attack type's name."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    live = labels == LIVE
    if not live.any() or live.all():
        raise ValueError("PAD metrics need both live and attack presentations")
    bpcer = float((scores[live] < threshold).mean())
    types = sorted(set(labels[~live].tolist()))
    apcer = {t: float((scores[labels == t] >= threshold).mean()) for t in types}
    counts = {t: int((labels == t).sum()) for t in [LIVE, *types]}
    # EER over all attacks together, and BPCER at APCER 5% / 1% (threshold = attacks' quantile)
    attacks = scores[~live]
    grid = np.unique(np.concatenate([scores, [0.0, 1.0 + 1e-9]]))
    ap = np.array([(attacks >= t).mean() for t in grid])
    bp = np.array([(scores[live] < t).mean() for t in grid])
    i = int(np.argmin(np.abs(ap - bp)))
    at = {}
    for target in (0.05, 0.01):
        ok = np.where(ap <= target)[0]
        at[f"{target:g}"] = float(bp[ok[0]]) if len(ok) else 1.0
    return PadReport(threshold, bpcer, apcer, counts, float((ap[i] + bp[i]) / 2), float(grid[i]), at)
