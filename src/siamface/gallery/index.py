"""1:N search over a store's templates, in memory, with NumPy: exact, and an approximate inverted-file
index (`IVFIndex`) that takes over past `APPROX_MIN_TEMPLATES` templates.

The index keeps one float32 matrix of every template (rows sorted by person) and rebuilds it lazily: each
search first reads the store's change counter (`Store.generation`, one small query) and reloads the
matrix only when it moved, so changes made by other threads or processes are seen at the next search.

A person's score for a probe is their best template's cosine similarity. Search is a matrix product
followed by a per-person maximum over contiguous row segments (``np.maximum.reduceat``).

Past `APPROX_MIN_TEMPLATES` templates `GalleryIndex` also builds an `IVFIndex` (inverted file: a spherical
k-means coarse quantizer trained on the templates, each template filed under its nearest centroid; a
query scans only the `nprobe` lists whose centroids are nearest and re-ranks those candidates with exact
cosine similarity). It is rebuilt, like the matrix, when the store's generation moves. Measured by
benchmarks/gallery.py on synthetic templates (people = random unit vectors, templates and probes at cosine
0.93-0.97 to their person): at 1M templates the exact search is tens of ms, the IVF one a few ms with
recall@1 (same top person as exact) above 99 %. NumPy only: no optional dependency.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Collection

import numpy as np

from .store import Store

log = logging.getLogger(__name__)

#: From this many templates on, `GalleryIndex` searches with an `IVFIndex` (measured: below it, exact
#: search is as fast, see benchmarks/gallery.py).
APPROX_MIN_TEMPLATES = 50_000
#: Lists scanned per query (of about 2 * sqrt(n)): recall@1 >= 99 % on the synthetic benchmark at 1M.
DEFAULT_NPROBE = 12


class IVFIndex:
    """Inverted-file approximate search over L2-normalised rows (cosine similarity), NumPy only.

    `nlist` lists (default about 2 * sqrt(n)) from spherical k-means trained on a sample of the rows;
    the rows are stored grouped by list, so that a query reads `nprobe` contiguous blocks.
    """

    def __init__(self, matrix: np.ndarray, nlist: int | None = None, *, iterations: int = 8,
                 sample: int = 64, seed: int = 0, centroids: np.ndarray | None = None) -> None:
        start = time.perf_counter()
        matrix = np.ascontiguousarray(matrix, np.float32)
        n, d = matrix.shape
        if n == 0:
            raise ValueError("an IVF index needs at least one row")
        if centroids is not None:  # re-filing after a change: the quantizer trained before still fits
            self.nlist = len(centroids)
            iterations = 0
        else:
            self.nlist = int(min(n, nlist or max(16, round(2 * math.sqrt(n)))))
        rng = np.random.default_rng(seed)
        train = matrix[rng.choice(n, size=min(n, self.nlist * sample), replace=False)] if iterations else matrix[:0]
        if centroids is None:
            centroids = train[rng.choice(len(train), size=self.nlist, replace=False)].copy()
        for _ in range(iterations):
            assign = np.argmax(train @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assign, train)
            norms = np.linalg.norm(sums, axis=1, keepdims=True)
            empty = norms[:, 0] == 0
            centroids = np.where(empty[:, None], centroids, sums / np.maximum(norms, 1e-12))
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        assign = np.empty(n, np.int64)
        for lo in range(0, n, 65536):
            assign[lo:lo + 65536] = np.argmax(matrix[lo:lo + 65536] @ self.centroids.T, axis=1)
        self.order = np.argsort(assign, kind="stable")               # list-grouped position -> row
        self.vectors = matrix[self.order]
        self.offsets = np.r_[0, np.cumsum(np.bincount(assign, minlength=self.nlist))]
        self.build_seconds = time.perf_counter() - start

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes + self.order.nbytes + self.centroids.nbytes + self.offsets.nbytes

    def candidates(self, query: np.ndarray, nprobe: int = DEFAULT_NPROBE) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the original matrix, their exact similarities) in the `nprobe` nearest lists."""
        nprobe = max(1, min(int(nprobe), self.nlist))
        near = self.centroids @ query
        lists = np.argpartition(-near, nprobe - 1)[:nprobe] if nprobe < self.nlist else np.arange(self.nlist)
        blocks = [(self.offsets[i], self.offsets[i + 1]) for i in lists]
        scores = np.concatenate([self.vectors[lo:hi] @ query for lo, hi in blocks])
        positions = np.concatenate([np.arange(lo, hi) for lo, hi in blocks])
        return self.order[positions], scores


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
    ivf: IVFIndex | None = field(default=None, compare=False)


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


class GalleryIndex:
    """Nearest-person search over the templates of `store` (rebuilt when the store changes): exact NumPy
    search, or an `IVFIndex` from `approx_min` templates on (``approx_min=None``: always exact)."""

    def __init__(self, store: Store, *, approx_min: int | None = APPROX_MIN_TEMPLATES,
                 nprobe: int = DEFAULT_NPROBE) -> None:
        self.store = store
        self.approx_min = approx_min
        self.nprobe = nprobe
        self._snap: _Snapshot | None = None
        self._lock = threading.Lock()

    def _current(self) -> _Snapshot:
        generation = self.store.generation()
        snap = self._snap
        if snap is not None and snap.generation == generation:
            return snap
        with self._lock:
            if self._snap is None or self._snap.generation != generation:
                old = self._snap.ivf if self._snap is not None else None
                snap = _snapshot(*self.store.matrix())
                n = len(snap.template_ids)
                if self.approx_min is not None and n >= self.approx_min:
                    # Keep the trained quantizer while the gallery is within a factor 2 of its size then:
                    # re-filing the templates is a fraction of training.
                    reuse = old is not None and old.centroids.shape[1] == snap.matrix.shape[1] and \
                        len(old.order) / 2 <= n <= 2 * len(old.order)
                    ivf = IVFIndex(snap.matrix, centroids=old.centroids if reuse else None)
                    snap = _Snapshot(**{**snap.__dict__, "ivf": ivf})
                    log.info("IVF index over %d templates built in %.1f s", len(snap.template_ids),
                             snap.ivf.build_seconds)
                self._snap = snap
            return self._snap

    def __len__(self) -> int:
        return len(self._current().template_ids)

    @property
    def n_people(self) -> int:
        return len(self._current().people)

    @property
    def approximate(self) -> bool:
        """Whether searches go through the IVF index now."""
        return self._current().ivf is not None

    def search(self, queries: np.ndarray, k: int = 5, exclude: int | Collection[int] | None = None,
               exact: bool | None = None) -> list[list[Hit]]:
        """The `k` best people for each query row (best first), each with their best template.

        `queries`: (m, d) L2-normalised embeddings. `exclude`: a person id (or several) to leave out, as if
        not enrolled. `exact`: force exact search (True) or the IVF index when built (default: whichever is
        in force).
        """
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        exclude = _ids(exclude)
        snap = self._current()
        if not len(snap.people) or k < 1:
            return [[] for _ in range(len(queries))]
        if queries.shape[1] != snap.matrix.shape[1]:
            raise ValueError(f"query embeddings are {queries.shape[1]}-d; the gallery's are "
                             f"{snap.matrix.shape[1]}-d")
        if snap.ivf is not None and not exact:
            return [self._search_ivf(snap, q, k, exclude) for q in queries]
        return _search_exact(snap, queries, k, exclude)

    def _search_ivf(self, snap: _Snapshot, query: np.ndarray, k: int, exclude: np.ndarray | None) -> list[Hit]:
        rows, scores = snap.ivf.candidates(query, self.nprobe)
        people = snap.person_ids[rows]
        if exclude is not None:
            keep = ~np.isin(people, exclude)
            rows, scores, people = rows[keep], scores[keep], people[keep]
        hits: list[Hit] = []
        seen: set[int] = set()
        width = min(len(scores), 64 * k)
        while len(hits) < k and width:
            top = np.argpartition(-scores, width - 1)[:width] if width < len(scores) else np.arange(len(scores))
            hits, seen = [], set()
            for i in top[np.argsort(-scores[top], kind="stable")]:
                person = int(people[i])
                if person not in seen:
                    seen.add(person)
                    hits.append(Hit(person, float(np.clip(scores[i], -1.0, 1.0)), int(snap.template_ids[rows[i]])))
                    if len(hits) == k:
                        break
            if width == len(scores):
                break
            width = len(scores) if len(hits) < k else 0
        return hits

    def person_scores(self, queries: np.ndarray, person_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(template ids (t,), similarities (m, t)) of one person's templates against each query."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        snap = self._current()
        lo, hi = np.searchsorted(snap.person_ids, [person_id, person_id + 1])
        scores = np.clip(queries @ snap.matrix[lo:hi].T, -1.0, 1.0)
        return snap.template_ids[lo:hi], scores


def index_for(store: Store):
    """The 1:N index a gallery searches with: the store's own when it has one (a PostgreSQL gallery searches
    inside the database, `siamface.gallery.postgres.PostgresIndex`), else a `GalleryIndex` in this process."""
    own = getattr(store, "search_index", None)
    return own() if own is not None else GalleryIndex(store)


class ExactIndex(GalleryIndex):
    """A `GalleryIndex` that always searches exactly."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, approx_min=None)


def _ids(exclude: int | Collection[int] | None) -> np.ndarray | None:
    """Person ids to leave out of a search, as an array (None: nobody)."""
    if exclude is None:
        return None
    ids = np.array([exclude] if isinstance(exclude, (int, np.integer)) else sorted(exclude), np.int64)
    return ids if len(ids) else None


def _search_exact(snap: _Snapshot, queries: np.ndarray, k: int, exclude: np.ndarray | None) -> list[list[Hit]]:
    scores = queries @ snap.matrix.T                                  # (m, n)
    per_person = np.maximum.reduceat(scores, snap.starts, axis=1)     # (m, p)
    if exclude is not None:
        per_person[:, np.isin(snap.people, exclude)] = -np.inf
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
            hits.append(Hit(int(snap.people[seg]), float(np.clip(value, -1.0, 1.0)), int(snap.template_ids[best])))
        results.append(hits)
    return results
