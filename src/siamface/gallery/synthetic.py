"""Synthetic templates that behave like real ones, for index tests and benchmarks.

People are random unit vectors ("centres"); each template and each probe of a person is that centre plus
noise, at a cosine similarity to it drawn uniformly from `cosine` (0.93-0.97: real same-person embeddings
of dlib-resnet sit about there), so two templates of one person are about 0.88-0.94 alike and people are
near-orthogonal, as in a real gallery of many strangers.

`FusedLayout` makes fused-like templates instead: ``[sqrt(w1) a, sqrt(w2) b]`` as a fusion does
(`siamface.embedding.fused`), each part a unit vector around the person's part centre, each part's centres
in a cone (strangers' parts alike by a floor, as real encoders' are), the cosines chosen to match the
statistics of real templates (`SFACE_DLIB_LIKE`). Isotropic templates are the hardest case for a graph
index; fused-like ones tell how well a part of the template ranks candidates for the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Part:
    """One part of a fused-like template: its size, its weight (the parts' sum to 1), the cosine of its
    centres to a common direction (0: isotropic; strangers' centres then about ``cone**2`` alike), and the
    range of cosines of a template to its person's centre (two templates of a person: about its square)."""

    size: int
    weight: float
    cone: float
    cosine: tuple[float, float]


@dataclass(frozen=True)
class FusedLayout:
    parts: tuple[Part, ...]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    def _slices(self):
        start = 0
        for part in self.parts:
            yield part, slice(start, start + part.size)
            start += part.size

    def centres(self, people: int, rng: np.random.Generator) -> np.ndarray:
        """(people, size): each part a unit centre in its cone, weighted (rows of length 1)."""
        out = np.empty((people, self.size), np.float32)
        for part, cut in self._slices():
            axis = np.zeros(part.size, np.float32)
            axis[0] = 1.0  # the common direction (any fixed one)
            spread = rng.standard_normal((people, part.size), dtype=np.float32)
            spread -= spread[:, :1] * axis  # orthogonal to it
            spread /= np.linalg.norm(spread, axis=1, keepdims=True)
            out[:, cut] = np.sqrt(part.weight) * (part.cone * axis + np.sqrt(1 - part.cone**2) * spread)
        return out

    def around(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One template per centre row (from `centres`): each part around its centre by the part's cosine."""
        out = np.empty_like(centres, dtype=np.float32)
        for part, cut in self._slices():
            unit = centres[:, cut] / np.sqrt(part.weight)
            out[:, cut] = np.sqrt(part.weight) * around(unit, rng, part.cosine)
        return out


#: Fused-like templates with the statistics of real `sface+dlib` templates: SFace's part first (weight 0.3),
#: dlib's (0.7). On celeba_ids (2,222 faces, each against all others) the real parts' cosines were, same
#: person / strangers, SFace 0.58 / 0.10, dlib 0.944 / 0.83 (the whole 0.836 / 0.611); these parts give
#: about 0.58 / 0.09 and 0.945 / 0.83 (the whole about 0.83 / 0.61).
SFACE_DLIB_LIKE = FusedLayout(
    (Part(128, 0.3, 0.4, (0.72, 0.80)), Part(128, 0.7, 0.94, (0.96, 0.985))),
)


#: SFace-like templates alone (128-d): `SFACE_DLIB_LIKE`'s SFace part as a whole template (a gallery of
#: ``--model sface``): same person about 0.58 alike, strangers about 0.16.
SFACE_LIKE = FusedLayout((Part(128, 1.0, 0.4, (0.72, 0.80)),))


def around(centres: np.ndarray, rng: np.random.Generator, cosine=(0.93, 0.97)) -> np.ndarray:
    """One unit vector per centre row, at a cosine drawn from `cosine` to it."""
    c = rng.uniform(cosine[0], cosine[1], size=(len(centres), 1)).astype(np.float32)
    noise = rng.standard_normal(centres.shape, dtype=np.float32)
    noise -= (noise * centres).sum(axis=1, keepdims=True) * centres  # orthogonal to the centre
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (c * centres + np.sqrt(1 - c * c) * noise).astype(np.float32)


def gallery(
    n_templates: int,
    per_person: int = 10,
    d: int = 128,
    seed: int = 0,
    cosine=(0.93, 0.97),
    layout: FusedLayout | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres (p, d), person index of each template (n,), templates (n, d)), sorted by person. With a
    `layout`, fused-like templates of its size (`d` and `cosine` unused)."""
    rng = np.random.default_rng(seed)
    people = -(-n_templates // per_person)
    if layout is None:
        centres = rng.standard_normal((people, d), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    else:
        centres = layout.centres(people, rng)
    owners = np.arange(n_templates) // per_person
    templates = np.empty((n_templates, centres.shape[1]), np.float32)
    for lo in range(0, n_templates, 100_000):
        hi = min(n_templates, lo + 100_000)
        templates[lo:hi] = _around(centres[owners[lo:hi]], rng, cosine, layout)
    return centres, owners, templates


def _around(centres, rng, cosine, layout: FusedLayout | None) -> np.ndarray:
    return around(centres, rng, cosine) if layout is None else layout.around(centres, rng)


def probes(
    centres: np.ndarray, n: int, seed: int = 1, cosine=(0.93, 0.97), layout: FusedLayout | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(person index (n,), probe vectors (n, d)) of `n` enrolled people chosen at random (`layout`: the one
    the centres were made with)."""
    rng = np.random.default_rng(seed)
    who = rng.integers(0, len(centres), n)
    return who, _around(centres[who], rng, cosine, layout)
