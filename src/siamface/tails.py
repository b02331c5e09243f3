"""The upper tail of a model's impostor scores: how often two strangers' faces score at least `t`.

A 1:N threshold set by FPIR (`siamface.decision.fpir_threshold`) needs, for a stranger compared with M
templates, a single-comparison rate p(t) small enough that ``1 - (1 - p(t))**M`` is the target: p is
about FPIR / M, far below what a few hundred thousand impostor pairs measure once M is in the thousands.
An `ImpostorTail` therefore holds two parts:

- ``quantiles``: the measured score at each exceedance rate p from 10 % down to `MEASURED_EXCEEDANCES` / n (the
  rate at which the data still has that many impostor scores above it); between two of them p is
  interpolated log-linearly;
- ``gpd``: a generalised Pareto distribution fitted (probability-weighted moments) to the scores above the
  `TAIL_SHARE` quantile ``u``: ``p(t) = zeta * (1 + xi (t - u) / sigma) ** (-1 / xi)``, used below the finest
  measured rate. A bounded shape (``xi < 0``) is never extrapolated: the fit then takes the exponential tail
  (``xi = 0``, ``p(t) = zeta * exp(-(t - u) / sigma)``, sigma the mean excess), the lightest tail that
  data far beyond the fitted range still support. Why: impostor scores are a mixture (pairs of people
  differ in how alike they look), and such a mixture's shape estimate rises the farther out it is taken:
  on celeba_ids every model's fit to the top 0.3 % of the fitting identities says ``xi`` -0.02 to -0.15,
  yet on 2.1 million independent impostor pairs (held-out identities, and fitting x held-out) the scores
  at rates 3e-5 to 3e-6 lie above that bounded tail and on the exponential one (benchmarks/fpir.py, "tail").

`fit_tail` makes one from impostor scores; `shipped_tail` reads a model's from the package's
``embedding/models/impostor_tails.json`` (made by ``benchmarks/impostor_tails.py``; its provenance record
says what it was measured on). The file format is ``{"source": ..., "models": {name: ImpostorTail.to_dict()}}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

#: the package file of the shipped tails
TAILS_FILE = Path(__file__).parent / "embedding" / "models" / "impostor_tails.json"
#: the measured part of a tail stops where fewer impostor scores than this lie above the quantile
MEASURED_EXCEEDANCES = 100
#: the fewest scores the tail model is fitted to
MIN_EXCEEDANCES = 20
#: the share of the highest impostor scores the generalised Pareto model is fitted to (the top 0.3 %: on
#: celeba_ids' fitting identities it follows the far tail of the held-out identities better than the top 1 %)
TAIL_SHARE = 0.003
#: the measured exceedance rates kept: 4 per decade from 10 % down
_STEPS_PER_DECADE = 4


@dataclass(frozen=True)
class ImpostorTail:
    """A model's impostor score tail (see the module docstring). `n`: impostor scores measured;
    `quantiles`: ((p, score), ...) with p decreasing; `u`, `zeta`, `xi`, `sigma`: the fitted tail model;
    `source`: what it was measured on."""

    n: int
    quantiles: tuple[tuple[float, float], ...]
    u: float
    zeta: float
    xi: float
    sigma: float
    source: str = ""

    def __post_init__(self) -> None:
        numbers = [self.u, self.zeta, self.xi, self.sigma] + [v for q in self.quantiles for v in q]
        if self.n < 1 or not self.quantiles or not all(math.isfinite(float(v)) for v in numbers):
            raise ConfigError("an impostor tail needs scores, its measured quantiles and finite tail parameters")
        if self.sigma <= 0 or not 0 < self.zeta < 1:
            raise ConfigError(
                f"an impostor tail's model needs sigma > 0 and 0 < zeta < 1 (got {self.sigma}, {self.zeta})"
            )
        ps = [p for p, _ in self.quantiles]
        if any(b >= a for a, b in zip(ps, ps[1:])) or not all(0 < p < 1 for p in ps):
            raise ConfigError("an impostor tail's measured rates must decrease within (0, 1)")

    @property
    def finest(self) -> float:
        """The smallest exceedance rate measured (below it the fitted model answers)."""
        return self.quantiles[-1][0]

    def model_score(self, p: float) -> float:
        """The fitted model's score exceeded with probability `p` (< `zeta`)."""
        ratio = (p / self.zeta) ** (-self.xi)
        return (
            float(self.u + self.sigma * (ratio - 1) / self.xi)
            if self.xi != 0
            else self.u - self.sigma * math.log(p / self.zeta)
        )

    def model_rate(self, t: float) -> float:
        """The fitted model's probability that an impostor score is at least `t` (t >= u)."""
        z = (t - self.u) / self.sigma
        if self.xi == 0:
            return float(self.zeta * math.exp(-z))
        base = 1 + self.xi * z
        return float(self.zeta * base ** (-1 / self.xi)) if base > 0 else 0.0

    def score_at(self, p: float) -> float:
        """The score an impostor comparison reaches with probability `p`: measured (log-linear between the
        kept quantiles) down to `finest`, the fitted model below it (never below the finest measured
        score, so that a smaller `p` never lowers the score)."""
        if not 0 < p < 1:
            raise ConfigError(f"an exceedance rate must be in (0, 1), got {p}")
        ps = np.log([q[0] for q in self.quantiles])[::-1]
        ts = np.array([q[1] for q in self.quantiles])[::-1]
        if p >= self.finest:
            return float(np.interp(math.log(p), ps, ts))
        return max(self.model_score(p), self.quantiles[-1][1])

    def rate(self, t: float) -> float:
        """The probability that one impostor comparison scores at least `t` (the inverse of `score_at`)."""
        ts = np.array([q[1] for q in self.quantiles])
        if t <= ts[-1]:
            return float(math.exp(np.interp(t, ts, np.log([q[0] for q in self.quantiles]))))
        return min(self.model_rate(t), self.finest)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "quantiles": [[float(f"{p:.6g}"), round(t, 6)] for p, t in self.quantiles],
            "gpd": {"u": round(self.u, 6), "zeta": self.zeta, "xi": round(self.xi, 6), "sigma": round(self.sigma, 6)},
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "impostor tail") -> ImpostorTail:
        try:
            gpd = raw["gpd"]
            return cls(
                n=int(raw["n"]),
                quantiles=tuple((float(p), float(t)) for p, t in raw["quantiles"]),
                u=float(gpd["u"]),
                zeta=float(gpd["zeta"]),
                xi=float(gpd["xi"]),
                sigma=float(gpd["sigma"]),
                source=str(raw.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: not an impostor tail ({exc!r})") from None


def fit_gpd(excess: np.ndarray) -> tuple[float, float]:
    """(xi, sigma) of a generalised Pareto distribution fitted to `excess` (scores above the threshold,
    less it) by probability-weighted moments (Hosking and Wallis 1987; valid for xi < 1/2)."""
    y = np.sort(np.asarray(excess, np.float64))
    n = len(y)
    if n < MIN_EXCEEDANCES or not np.isfinite(y).all() or y[-1] <= 0:
        raise ConfigError(f"a tail model needs at least {MIN_EXCEEDANCES} distinct scores above its threshold")
    a0 = y.mean()
    a1 = float(np.mean((1 - (np.arange(1, n + 1) - 0.35) / n) * y))
    k = a0 / (a0 - 2 * a1) - 2  # Hosking's k = -xi
    return float(-k), float(2 * a0 * a1 / (a0 - 2 * a1))


def fit_tail(scores: np.ndarray, source: str = "") -> ImpostorTail:
    """The `ImpostorTail` of these impostor scores (non-finite ones are left out): quantiles down to
    `MEASURED_EXCEEDANCES` scores above them (the 10 % one always), the model fitted to the top `TAIL_SHARE`
    (at least `MIN_EXCEEDANCES` scores; exponential where the fitted shape is bounded). `ConfigError` with fewer than 10 * `MIN_EXCEEDANCES` scores."""
    s = np.sort(np.asarray(scores, np.float64)[np.isfinite(scores)])[::-1]
    n = len(s)
    if n * 0.1 < MIN_EXCEEDANCES:
        raise ConfigError(
            f"{n:,} impostor scores are too few to measure a tail: at least {10 * MIN_EXCEEDANCES:,} are needed "
            "(more people, or more photos each)"
        )
    quantiles = [(0.1, float(s[int(round(0.1 * n)) - 1]))]
    step = 1
    while True:
        p = float(f"{10 ** (-1 - step / _STEPS_PER_DECADE):.6g}")
        if p * n < MEASURED_EXCEEDANCES:
            break
        quantiles.append((p, float(s[int(round(p * n)) - 1])))
        step += 1
    m = max(int(round(TAIL_SHARE * n)), MIN_EXCEEDANCES)
    u = float(s[m])
    xi, sigma = fit_gpd(s[:m] - u)
    if xi < 0:  # a bounded tail is not extrapolated (module docstring): the exponential one, its MLE scale
        xi, sigma = 0.0, float(np.mean(s[:m] - u))
    return ImpostorTail(n, tuple(quantiles), u, m / n, xi, sigma, source)


def read_tails(path: str | Path) -> dict[str, ImpostorTail]:
    """Every model's tail in a tails file (see the module docstring)."""
    try:
        raw = json.loads(Path(path).read_text())
        models = raw["models"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not an impostor tails file ({exc!r})") from None
    return {name: ImpostorTail.from_dict(entry, f"{path}: {name}") for name, entry in models.items()}


@cache
def _shipped() -> dict[str, ImpostorTail]:
    return read_tails(TAILS_FILE) if TAILS_FILE.is_file() else {}


def shipped_tail(model: str) -> ImpostorTail | None:
    """The package's impostor tail of `model` (by its registered name), None when it has none."""
    return _shipped().get(model)
