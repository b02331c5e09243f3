"""Synthetic templates that behave like real ones, for index tests and benchmarks.

People are random unit vectors ("centres"); each template and each probe of a person is that centre plus
noise, at a cosine similarity to it drawn uniformly from `cosine` (0.93-0.97: real same-person embeddings
of dlib-resnet sit about there), so two templates of one person are about 0.88-0.94 alike and people are
near-orthogonal, as in a real gallery of many strangers.
"""

from __future__ import annotations

import numpy as np


def around(centres: np.ndarray, rng: np.random.Generator, cosine=(0.93, 0.97)) -> np.ndarray:
    """One unit vector per centre row, at a cosine drawn from `cosine` to it."""
    c = rng.uniform(cosine[0], cosine[1], size=(len(centres), 1)).astype(np.float32)
    noise = rng.standard_normal(centres.shape, dtype=np.float32)
    noise -= (noise * centres).sum(axis=1, keepdims=True) * centres  # orthogonal to the centre
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (c * centres + np.sqrt(1 - c * c) * noise).astype(np.float32)


def gallery(
    n_templates: int, per_person: int = 10, d: int = 128, seed: int = 0, cosine=(0.93, 0.97)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres (p, d), person index of each template (n,), templates (n, d)), sorted by person."""
    rng = np.random.default_rng(seed)
    people = -(-n_templates // per_person)
    centres = rng.standard_normal((people, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    owners = np.arange(n_templates) // per_person
    templates = np.empty((n_templates, d), np.float32)
    for lo in range(0, n_templates, 100_000):
        hi = min(n_templates, lo + 100_000)
        templates[lo:hi] = around(centres[owners[lo:hi]], rng, cosine)
    return centres, owners, templates


def probes(centres: np.ndarray, n: int, seed: int = 1, cosine=(0.93, 0.97)) -> tuple[np.ndarray, np.ndarray]:
    """(person index (n,), probe vectors (n, d)) of `n` enrolled people chosen at random."""
    rng = np.random.default_rng(seed)
    who = rng.integers(0, len(centres), n)
    return who, around(centres[who], rng, cosine)
