"""`ExactIndex`: exact 1:N search over a store's templates, in memory, with NumPy.

The index keeps one float32 matrix of every template (rows sorted by person) and rebuilds it lazily: each
search first reads the store's change counter (`Store.generation`, one small query) and reloads the
matrix only when it moved, so changes made by other threads or processes are seen at the next search.

A person's score for a probe is their best template's cosine similarity. Search is a matrix product
followed by a per-person maximum over contiguous row segments (``np.maximum.reduceat``); see
benchmarks/gallery.py for its latency at 1k-100k templates. Past the size where that is too slow, an ANN
index can take this one's place behind the same two methods.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .store import Store


@dataclass(frozen=True)
class Hit:
    """A person found for a probe: their id, best similarity, and the template that gave it."""

    person_id: int
    similarity: float
    template_id: int


@dataclass(frozen=True)
class _Snapshot:
    generation: int
    template_ids: np.ndarray   # (n,) int64
    person_ids: np.ndarray     # (n,) int64, sorted
    matrix: np.ndarray         # (n, d) float32
    starts: np.ndarray         # (p,) first row of each person
    people: np.ndarray         # (p,) person id of each segment


def _snapshot(generation: int, template_ids: np.ndarray, person_ids: np.ndarray, matrix: np.ndarray) -> _Snapshot:
    if len(person_ids) and np.any(np.diff(person_ids) < 0):
        order = np.argsort(person_ids, kind="stable")
        template_ids, person_ids, matrix = template_ids[order], person_ids[order], matrix[order]
    if len(person_ids):
        starts = np.flatnonzero(np.r_[True, person_ids[1:] != person_ids[:-1]])
    else:
        starts = np.zeros(0, np.int64)
    return _Snapshot(generation, template_ids, person_ids, np.ascontiguousarray(matrix, np.float32), starts,
                     person_ids[starts])


class ExactIndex:
    """Exact nearest-person search over the templates of `store` (rebuilt when the store changes)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._snap: _Snapshot | None = None
        self._lock = threading.Lock()

    def _current(self) -> _Snapshot:
        generation = self.store.generation()
        snap = self._snap
        if snap is not None and snap.generation == generation:
            return snap
        with self._lock:
            if self._snap is None or self._snap.generation != generation:
                self._snap = _snapshot(*self.store.matrix())
            return self._snap

    def __len__(self) -> int:
        return len(self._current().template_ids)

    @property
    def n_people(self) -> int:
        return len(self._current().people)

    def search(self, queries: np.ndarray, k: int = 5, exclude: int | None = None) -> list[list[Hit]]:
        """The `k` best people for each query row (best first), each with their best template.

        `queries`: (m, d) L2-normalised embeddings. `exclude`: a person id to leave out.
        """
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        snap = self._current()
        if not len(snap.people) or k < 1:
            return [[] for _ in range(len(queries))]
        if queries.shape[1] != snap.matrix.shape[1]:
            raise ValueError(f"query embeddings are {queries.shape[1]}-d; the gallery's are "
                             f"{snap.matrix.shape[1]}-d")
        scores = queries @ snap.matrix.T                                  # (m, n)
        per_person = np.maximum.reduceat(scores, snap.starts, axis=1)     # (m, p)
        if exclude is not None:
            per_person[:, snap.people == exclude] = -np.inf
        k = min(k, per_person.shape[1])
        if k < per_person.shape[1]:
            top = np.argpartition(-per_person, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(per_person.shape[1]), (len(queries), k))
        ends = np.r_[snap.starts[1:], len(snap.person_ids)]
        results = []
        for row in range(len(queries)):
            order = top[row][np.argsort(-per_person[row, top[row]], kind="stable")]
            hits = []
            for seg in order:
                value = per_person[row, seg]
                if not np.isfinite(value):
                    continue
                lo, hi = snap.starts[seg], ends[seg]
                best = lo + int(np.argmax(scores[row, lo:hi]))
                hits.append(Hit(int(snap.people[seg]), float(np.clip(value, -1.0, 1.0)),
                                int(snap.template_ids[best])))
            results.append(hits)
        return results

    def person_scores(self, queries: np.ndarray, person_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(template ids (t,), similarities (m, t)) of one person's templates against each query."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        snap = self._current()
        lo, hi = np.searchsorted(snap.person_ids, [person_id, person_id + 1])
        scores = np.clip(queries @ snap.matrix[lo:hi].T, -1.0, 1.0)
        return snap.template_ids[lo:hi], scores
