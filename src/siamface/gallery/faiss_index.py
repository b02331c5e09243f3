"""FAISS (``faiss-cpu``, the ``faiss`` extra) as the in-process 1:N index of an SQLite gallery.

`FaissIndex` is an inverted file over inner products (cosine on L2-normalised templates): a coarse k-means
quantizer of about ``2 * sqrt(n)`` lists trained once on a sample, each template filed under its nearest
list by its template id, ``nprobe`` lists scanned per query. Two kinds:

- ``flat`` (IVFFlat): the templates themselves in the lists, so the similarities it returns are exact; what
  a gallery uses. 512 bytes per 128-d template.
- ``sq8`` (IVF, 8-bit scalar quantisation): a quarter of the memory, similarities within about 1e-3; for
  galleries of tens of millions in process (benchmarks/gallery_backends.py --faiss-only).

Templates are added and removed by id without a rebuild. `save` / `load` keep it in a file (written 0600,
atomically) with the gallery generation and change sequence it reflects; `siamface.gallery.index` keeps
it in step with the gallery from the store's change log and rebuilds only when the file is stale beyond
what the log covers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .._files import atomic_file

#: Lists scanned per query. 1M synthetic templates (benchmarks/faiss_nprobe.py), recall@1 against exact
#: search by lists scanned 16 / 32 / 64 / 128: templates as loose as real SFace ones (a person's about 0.58
#: alike, `synthetic.SFACE_LIKE`, 128-d) 91.8 / 97.8 / 99.8 / 100 %; fused-like `sface+dlib` ones
#: (`SFACE_DLIB_LIKE`, 256-d) 94.6 / 99.0 / 100 / 100 %; the tight isotropic ones of the first figures
#: (0.88-0.94 alike) reached 99 % with 16. Hence 64: the fewest with 99 % and a margin on every layout.
DEFAULT_NPROBE = 64
#: Training sample per list (k-means on at most this many templates per list).
SAMPLE_PER_LIST = 40
#: Format tag of the persisted file's header line.
FILE_FORMAT = "siamface-faiss-index"
#: The longest header line read (a damaged file's first "line" may be all of it).
MAX_HEADER = 64 * 1024


def available() -> bool:
    """Whether faiss-cpu can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss():
    import faiss

    return faiss


class FaissIndex:
    """An IVF index over L2-normalised rows with int64 ids (template ids). Not thread-safe: the caller
    serialises searches and changes."""

    def __init__(
        self, d: int, expected: int, kind: str | None = None, nprobe: int = DEFAULT_NPROBE, index=None
    ) -> None:
        faiss = _faiss()
        self.d = int(d)
        self.kind = kind or "flat"
        if index is None:
            nlist = int(max(16, min(8192, round(2 * math.sqrt(max(1, expected))))))
            quantizer = faiss.IndexFlatIP(self.d)
            if self.kind == "flat":
                index = faiss.IndexIVFFlat(quantizer, self.d, nlist, faiss.METRIC_INNER_PRODUCT)
            elif self.kind == "sq8":
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer, self.d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
                )
            else:
                raise ValueError(f"unknown FAISS index kind {kind!r}")
            self._quantizer = quantizer  # the index does not own it: kept alive with it
            index.cp.niter = 10  # k-means iterations (FAISS's default 25 buys no recall here)
        self.index = index
        self.index.nprobe = int(nprobe)

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    @property
    def trained(self) -> bool:
        return bool(self.index.is_trained)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def nbytes(self) -> int:
        """Memory the lists take (codes and ids) plus the quantizer."""
        code = self.d * 4 if self.kind == "flat" else self.d
        return len(self) * (code + 8) + self.nlist * self.d * 4

    def train(self, rows: np.ndarray, seed: int = 0) -> None:
        """Train the coarse quantizer (and the scalar quantizer) on a sample of `rows`."""
        rows = np.ascontiguousarray(rows, np.float32)
        take = min(len(rows), self.nlist * SAMPLE_PER_LIST)
        if take < len(rows):
            rows = rows[np.sort(np.random.default_rng(seed).choice(len(rows), take, replace=False))]
        if len(rows) < self.nlist:  # fewer rows than lists: repeat them (tiny galleries only)
            rows = np.resize(rows, (self.nlist, self.d))
        self.index.train(rows)

    def add(self, ids: np.ndarray, rows: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(rows, np.float32), np.ascontiguousarray(ids, np.int64))

    def remove(self, ids) -> int:
        ids = np.ascontiguousarray(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids), np.int64)
        return int(self.index.remove_ids(ids)) if len(ids) else 0

    def candidates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (m, k), similarities (m, k)) of the `k` nearest rows of each query (-1 ids pad short rows)."""
        scores, ids = self.index.search(np.ascontiguousarray(np.atleast_2d(queries), np.float32), int(k))
        return ids, scores

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: Path, header: dict, arrays: tuple[np.ndarray, ...] = ()) -> None:
        """Write the index to `path` (0600, replaced atomically): a JSON header line, the int64 `arrays`,
        then FAISS's bytes."""
        data = _faiss().serialize_index(self.index)
        arrays = tuple(np.ascontiguousarray(a, np.int64) for a in arrays)
        line = (
            json.dumps(
                {"format": FILE_FORMAT, "kind": self.kind, "d": self.d, **header, "arrays": [len(a) for a in arrays]}
            ).encode()
            + b"\n"
        )
        with atomic_file(path, mode=0o600, fsync=False) as f:  # a cache: the gallery is the truth
            f.write(line)
            for a in arrays:
                f.write(memoryview(a).cast("B"))
            f.write(memoryview(data))

    @classmethod
    def load(cls, path: Path, nprobe: int = DEFAULT_NPROBE) -> tuple[FaissIndex, dict, list[np.ndarray]] | None:
        """The index in `path`, its header and arrays, or None when there is none, it is not one of ours or
        it is damaged (a header claiming more than the file holds is refused before anything is allocated).
        Whether it agrees with the gallery is the caller's to check (`contents`)."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                header = json.loads(f.readline(MAX_HEADER))
                if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
                    return None
                counts = [int(n) for n in header["arrays"]]
                d = int(header["d"])
                if d < 1 or any(n < 0 for n in counts) or 8 * sum(counts) > size - f.tell():
                    return None
                arrays = [np.frombuffer(f.read(8 * n), np.int64).copy() for n in counts]
                data = np.frombuffer(f.read(), np.uint8)
            index = _faiss().deserialize_index(data)
            if int(index.d) != d:
                return None
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, MemoryError, OverflowError):
            return None
        return cls(d, 0, kind=header.get("kind"), nprobe=nprobe, index=index), header, arrays

    def contents(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(ids (n,), rows (n, d) float32, list of each row (n,)) as the index holds them (IVFFlat keeps the
        rows themselves), to be checked against the gallery; None when it is not an IVFFlat index."""
        faiss = _faiss()
        try:
            ivf = faiss.extract_index_ivf(self.index)
        except RuntimeError:
            return None
        lists = ivf.invlists
        if self.kind != "flat" or int(lists.code_size) != 4 * self.d:
            return None
        ids, codes, owner = [], [], []
        for number in range(int(ivf.nlist)):
            n = int(lists.list_size(number))
            if n:
                ids.append(faiss.rev_swig_ptr(lists.get_ids(number), n).copy())
                codes.append(faiss.rev_swig_ptr(lists.get_codes(number), n * 4 * self.d).copy())
                owner.append(np.full(n, number, np.int64))
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, self.d), np.float32), np.zeros(0, np.int64)
        rows = np.concatenate(codes).view(np.float32).reshape(-1, self.d)
        return np.concatenate(ids).astype(np.int64), rows, np.concatenate(owner)

    def filed_right(self, rows: np.ndarray, lists: np.ndarray, tolerance: float = 1e-5) -> bool:
        """Is each row in the list of its nearest centroid (within `tolerance`), as `add` files it? A
        quantizer changed in the file would send searches to the wrong lists."""
        faiss = _faiss()
        ivf = faiss.extract_index_ivf(self.index)
        centroids = ivf.quantizer.reconstruct_n(0, int(ivf.nlist))
        for lo in range(0, len(rows), 4096):
            scores = rows[lo : lo + 4096] @ centroids.T
            own = scores[np.arange(len(scores)), lists[lo : lo + 4096]]
            if not np.all(np.isfinite(scores)) or np.any(own < scores.max(axis=1) - tolerance):
                return False
        return True
