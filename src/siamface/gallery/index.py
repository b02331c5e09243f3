"""1:N search over a store's templates in this process: exact NumPy search, and FAISS (`FaissIndex`, the
``faiss`` extra) past `APPROX_MIN_TEMPLATES` templates. (A PostgreSQL gallery searches inside the database
instead: `index_for` hands out its `PostgresIndex`.)

Each search first reads the store's change counter (`Store.generation`, one small query). Exact search
keeps one float32 matrix of every template (rows sorted by person) and reloads it when the counter moved.
The FAISS index keeps no such copy: when the counter moved it reads only the templates changed since
(`SQLiteStore.changes`, a log the gallery keeps by trigger) and adds or removes them by id, so a change made
by another process is seen at the next search in milliseconds, not after a reload. It is kept in a file
beside the gallery (``<gallery>.faiss``, 0600, with the change-log position it reflects) and loaded from
there at the next start, rebuilt when the log no longer reaches back to it; removing a person deletes
that file, so that their templates do not outlive them on disk (an index in memory rewrites it). The file
is a cache, never the truth: a loaded one is checked against the gallery (every template id, its person and
its vector bit for bit, each in its nearest list) and rebuilt, with a warning, when they disagree; a
damaged header is a rebuild too.

A person's score for a probe is their best template's cosine similarity. Exact search is a matrix product
followed by a per-person maximum over contiguous row segments (``np.maximum.reduceat``); FAISS returns the
nearest templates with their exact similarity (IVFFlat), grouped here per person. Without faiss-cpu,
galleries of any size search exactly, and the first search says so in the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .store import Store

log = logging.getLogger(__name__)

#: From this many templates on, `GalleryIndex` searches with FAISS when installed (measured: below it, exact
#: search is as fast, see benchmarks/gallery.py).
APPROX_MIN_TEMPLATES = 50_000
#: Logged once per process when a gallery this large searches exactly because faiss-cpu is missing.
NO_FAISS = (
    "faiss-cpu is not installed: 1:N search over %d templates is exact (NumPy, reloaded after every "
    "change); pip install 'siamface[faiss]' for the FAISS index"
)


@dataclass(frozen=True)
class Hit:
    """A person found for a probe: their id, best similarity, and the template that gave it."""

    person_id: int
    similarity: float
    template_id: int


@dataclass(frozen=True)
class _Snapshot:
    generation: int
    template_ids: np.ndarray  # (n,) int64
    person_ids: np.ndarray  # (n,) int64, sorted
    matrix: np.ndarray  # (n, d) float32
    starts: np.ndarray  # (p,) first row of each person
    people: np.ndarray  # (p,) person id of each segment


def _snapshot(generation: int, template_ids: np.ndarray, person_ids: np.ndarray, matrix: np.ndarray) -> _Snapshot:
    if len(person_ids) and np.any(np.diff(person_ids) < 0):
        order = np.argsort(person_ids, kind="stable")
        template_ids, person_ids, matrix = template_ids[order], person_ids[order], matrix[order]
    if len(person_ids):
        starts = np.flatnonzero(np.r_[True, person_ids[1:] != person_ids[:-1]])
    else:
        starts = np.zeros(0, np.int64)
    return _Snapshot(
        generation, template_ids, person_ids, np.ascontiguousarray(matrix, np.float32), starts, person_ids[starts]
    )


@dataclass
class _Faiss:
    """The FAISS state of a `GalleryIndex`: the index, and the person of each template id (sorted by id)."""

    generation: int
    seq: int | None  # position in the store's change log it reflects (None: the store keeps none)
    index: object  # FaissIndex
    template_ids: np.ndarray  # (n,) int64, sorted
    person_ids: np.ndarray  # (n,) int64
    unsaved: int = 0  # changes applied since it was last written to its file


class GalleryIndex:
    """Nearest-person search over the templates of `store`, kept in step with it: exact NumPy search, or
    FAISS from `approx_min` templates on when faiss-cpu is installed (``approx_min=None``: always exact).
    `persist`: keep the FAISS index in ``<gallery>.faiss`` beside an SQLite gallery (default: when the
    gallery is writable)."""

    def __init__(
        self,
        store: Store,
        *,
        approx_min: int | None = APPROX_MIN_TEMPLATES,
        nprobe: int | None = None,
        persist: bool | None = None,
    ) -> None:
        self.store = store
        self.approx_min = approx_min
        self.nprobe = nprobe
        path = getattr(store, "path", None)
        writable = path is not None and not getattr(store, "read_only", False)
        self.path = Path(f"{path}.faiss") if path is not None and (persist or persist is None) else None
        self._save_file = writable and persist is not False
        self._state: _Snapshot | _Faiss | None = None
        self._lock = threading.RLock()
        self._saver: threading.Thread | None = None

    # -- keeping in step with the store ----------------------------------------------------------------
    def catch_up(self) -> None:
        """Bring the in-memory index in step with the store now (after a change), not at the next search."""
        self._current()

    def _current(self) -> _Snapshot | _Faiss:
        generation = self.store.generation()
        state = self._state
        if state is not None and state.generation == generation:
            return state
        with self._lock:
            if self._state is None or self._state.generation != generation:
                self._state = self._refresh()
            return self._state

    def _faiss_wanted(self) -> bool:
        if self.approx_min is None:
            return False
        from . import faiss_index

        return faiss_index.available()

    def _refresh(self) -> _Snapshot | _Faiss:
        state = self._state
        if isinstance(state, _Faiss) and self._catch_up(state):
            return state
        if state is None and self._faiss_wanted() and self.path is not None:
            loaded = self._load()
            if loaded is not None:
                return loaded
        return self._full()

    def _full(self) -> _Snapshot | _Faiss:
        """Read every template; a FAISS index over them when the gallery is large enough (and faiss-cpu is
        there), else an exact snapshot."""
        seq = self.store.change_seq() if hasattr(self.store, "change_seq") else None  # before the matrix:
        generation, template_ids, person_ids, matrix = self.store.matrix()  # changes in between replay
        n = len(template_ids)
        if self.approx_min is not None and n >= self.approx_min:
            if self._faiss_wanted():
                return self._build(generation, seq, template_ids, person_ids, matrix)
            _warn_no_faiss(n)
        return _snapshot(generation, template_ids, person_ids, matrix)

    def _build(self, generation, seq, template_ids, person_ids, matrix) -> _Faiss:
        from .faiss_index import FaissIndex

        start = time.perf_counter()
        index = FaissIndex(matrix.shape[1], len(template_ids), **({"nprobe": self.nprobe} if self.nprobe else {}))
        index.train(matrix)
        index.add(template_ids, matrix)
        order = np.argsort(template_ids, kind="stable")
        state = _Faiss(generation, seq, index, template_ids[order], person_ids[order], unsaved=1)
        log.info(
            "FAISS index over %d templates (%d lists) built in %.1f s",
            len(template_ids),
            index.nlist,
            time.perf_counter() - start,
        )
        self._save(state)
        return state

    def _catch_up(self, state: _Faiss) -> bool:
        """Apply the templates changed since `state` was made (from the store's change log) to it, in place;
        False when that cannot be done (no log, or it no longer reaches back, or another embedding size)."""
        if state.seq is None or not hasattr(self.store, "changes"):
            return False
        found = self.store.changes(state.seq)
        if found is None:
            return False
        generation, seq, touched, (ids, people, matrix) = found
        if len(ids) and matrix.shape[1] != state.index.d:
            return False
        present = touched[np.isin(touched, state.template_ids)]
        if len(present):
            state.index.remove(present)
            keep = ~np.isin(state.template_ids, present)
            state.template_ids, state.person_ids = state.template_ids[keep], state.person_ids[keep]
        if len(ids):
            state.index.add(ids, matrix)
            template_ids = np.concatenate([state.template_ids, ids])
            person_ids = np.concatenate([state.person_ids, people])
            order = np.argsort(template_ids, kind="stable")
            state.template_ids, state.person_ids = template_ids[order], person_ids[order]
        state.generation, state.seq = generation, seq
        state.unsaved += len(touched)
        # a removal is written at once, after any write under way (which may hold the removed templates: the
        # store deleted the file for that); additions in batches, and not while a write is under way (the
        # search does not wait for the disk)
        if len(present):
            self._save(state)
        elif state.unsaved >= max(1000, len(state.template_ids) // 100) or (
            self.path is not None and not self.path.exists()
        ):
            self._save(state, wait=False)
        return True

    def _header(self) -> dict:
        model = self.store.model
        return {
            "model": [model.name, model.version, model.embedding_size],
            "gallery_created": getattr(self.store, "created", ""),
        }

    def _save(self, state: _Faiss, wait: bool = True) -> None:
        """Write the index to its file (in the background: searches go on meanwhile). ``wait=False``: not now
        when a write is under way (what is unsaved is written by a later change or `close`)."""
        if self.path is None or not self._save_file or state.seq is None:
            return
        if not wait and self._saver is not None and self._saver.is_alive():
            return
        from .faiss_index import FaissIndex

        header = {**self._header(), "generation": state.generation, "seq": state.seq}
        arrays = (state.template_ids.copy(), state.person_ids.copy())
        copy = FaissIndex(
            state.index.d, 0, kind=state.index.kind, index=_clone(state.index.index)
        )  # the writer works on its own copy
        state.unsaved = 0

        def write() -> None:
            try:
                copy.save(self.path, header, arrays)
            except OSError as exc:
                log.warning("%s: FAISS index not saved (%s)", self.path, exc)

        if self._saver is not None:
            self._saver.join()
        self._saver = threading.Thread(target=write, name="faiss-save")
        self._saver.start()

    def _load(self) -> _Faiss | None:
        """The index saved beside the gallery, brought up to date from the change log; None when there is
        none, it is of another gallery or model, or the log no longer reaches back to it (rebuild)."""
        from .._files import exposure
        from .faiss_index import FaissIndex

        writable, _ = exposure(self.path)
        if writable:  # its bytes go to FAISS's own reader before they are checked: not from another user
            log.warning("%s: not loaded (%s): rebuilt", self.path, writable)
            return None
        found = FaissIndex.load(self.path, **({"nprobe": self.nprobe} if self.nprobe else {}))
        if found is None:
            return None
        index, header, arrays = found
        if (
            any(header.get(k) != v for k, v in self._header().items())
            or len(arrays) != 2
            or not hasattr(self.store, "changes")
        ):
            return None
        state = _Faiss(int(header["generation"]), int(header["seq"]), index, arrays[0], arrays[1])
        if not self._catch_up(state) or not self._agrees(state):
            log.warning("%s does not match the gallery (damaged or changed by hand): rebuilt", self.path)
            return None
        log.info("FAISS index over %d templates loaded from %s", len(state.template_ids), self.path)
        return state

    def _agrees(self, state: _Faiss) -> bool:
        """Does a loaded index hold exactly the gallery's templates: the same ids, each under its person,
        with the same vector, each in the list of its nearest centroid? The file is a cache, never the truth:
        this reads every template once (what a rebuild reads too; it saves the k-means training)."""
        generation, ids, people, matrix = self.store.matrix()
        held = state.index.contents()
        if generation != state.generation or held is None or len(held[0]) != len(ids):
            return False
        order = np.argsort(ids, kind="stable")
        ids, people, matrix = ids[order], people[order], matrix[order]
        if not (np.array_equal(ids, state.template_ids) and np.array_equal(people, state.person_ids)):
            return False
        held_ids, rows, lists = held
        where = np.argsort(held_ids, kind="stable")
        if not np.array_equal(held_ids[where], ids):
            return False
        if not np.array_equal(rows[where].view(np.uint32), matrix.view(np.uint32)):  # bit for bit (NaN too)
            return False
        return state.index.filed_right(rows, lists)

    def close(self) -> None:
        """Write what the index learnt since its last save, caught up with the gallery first (another process
        may have removed someone since this one last searched: their templates are not written back), and
        wait for the writer."""
        with self._lock:
            if isinstance(self._state, _Faiss) and self._save_file:  # a save under way may hold them too
                try:
                    self._current()
                except Exception as exc:  # noqa: BLE001 - the gallery unreadable now: nothing written
                    log.warning("%s: FAISS index not saved: the gallery could not be read (%s)", self.path, exc)
                    self._state = None
            if isinstance(self._state, _Faiss) and self._state.unsaved:
                self._save(self._state)
            if self._saver is not None:
                self._saver.join()
                self._saver = None

    # -- what it holds ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._current().template_ids)

    @property
    def n_people(self) -> int:
        state = self._current()
        return len(state.people) if isinstance(state, _Snapshot) else len(np.unique(state.person_ids))

    @property
    def approximate(self) -> bool:
        """Whether searches go through FAISS now."""
        return isinstance(self._current(), _Faiss)

    @property
    def kind(self) -> str:
        state = self._current()
        if isinstance(state, _Faiss):
            return f"FAISS IVF-{state.index.kind} {state.index.nlist} lists, nprobe {state.index.index.nprobe}"
        return "exact"

    # -- search ----------------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int = 5, exclude: int | Collection[int] | None = None, exact: bool | None = None
    ) -> list[list[Hit]]:
        """The `k` best people for each query row (best first), each with their best template.

        `queries`: (m, d) L2-normalised embeddings. `exclude`: a person id (or several) to leave out, as if
        not enrolled. `exact`: force exact search (True) or FAISS when built (default: whichever is in force).
        """
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        exclude = _ids(exclude)
        if k < 1:
            return [[] for _ in range(len(queries))]
        state = self._current()
        if isinstance(state, _Faiss):
            if state.index.d != queries.shape[1]:
                raise ValueError(f"query embeddings are {queries.shape[1]}-d; the gallery's are {state.index.d}-d")
            if not exact:
                excluded = set() if exclude is None else {int(i) for i in exclude}
                with self._lock:  # FAISS is changed in place (under this lock): never search meanwhile
                    return [_search_faiss(state, q, k, excluded) for q in queries]
            state = _snapshot(*self.store.matrix())
        if not len(state.people):
            return [[] for _ in range(len(queries))]
        if queries.shape[1] != state.matrix.shape[1]:
            raise ValueError(f"query embeddings are {queries.shape[1]}-d; the gallery's are {state.matrix.shape[1]}-d")
        return _search_exact(state, queries, k, exclude)

    def person_scores(self, queries: np.ndarray, person_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(template ids (t,), similarities (m, t)) of one person's templates against each query."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        state = self._current()
        if isinstance(state, _Faiss):  # no copy of the templates here: read that person's rows
            ids, matrix = self.store.person_matrix(person_id)
            return ids, np.clip(queries @ matrix.T, -1.0, 1.0)
        lo, hi = np.searchsorted(state.person_ids, [person_id, person_id + 1])
        scores = np.clip(queries @ state.matrix[lo:hi].T, -1.0, 1.0)
        return state.template_ids[lo:hi], scores


def _clone(index):
    from .faiss_index import _faiss

    return _faiss().clone_index(index)


_warned: set[int] = set()


def _warn_no_faiss(n: int) -> None:
    if not _warned:
        _warned.add(n)
        log.warning(NO_FAISS, n)


def _search_faiss(state: _Faiss, query: np.ndarray, k: int, exclude: set[int]) -> list[Hit]:
    """The k best people among the nearest templates FAISS finds (more of them fetched while the people
    found fall short of k because of exclusions or people with many templates)."""
    total = len(state.template_ids)
    want = min(total, 32 * k)
    while True:
        ids, scores = state.index.candidates(query[None], want)
        ids, scores = ids[0], scores[0]
        valid = ids >= 0
        ids, scores = ids[valid], scores[valid]
        people = state.person_ids[np.searchsorted(state.template_ids, ids)]
        hits: list[Hit] = []
        seen: set[int] = set()
        for i in np.argsort(-scores, kind="stable"):
            person = int(people[i])
            if person in seen or person in exclude:
                continue
            seen.add(person)
            hits.append(Hit(person, float(np.clip(scores[i], -1.0, 1.0)), int(ids[i])))
            if len(hits) == k:
                return hits
        if want >= total or len(ids) < want:
            return hits
        want = min(total, want * 4)


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
    scores = queries @ snap.matrix.T  # (m, n)
    per_person = np.maximum.reduceat(scores, snap.starts, axis=1)  # (m, p)
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
