"""Gallery speed, one figure per line.

- 1:N search latency (p50 / p99 over single-face queries, median of repeats) at 1k, 10k, 100k and 1M
  synthetic templates (10 per person; `siamface.gallery.synthetic`: people are random unit vectors, templates
  and probes at cosine 0.93-0.97 to their person), exact vs the FAISS index (faiss extra), with its recall@1
  (same top person as exact), build time and memory;
- the index's load time from an SQLite gallery (100k templates);
- enrollment throughput (faces/s) on a folder of person folders (real chain, quality gates, one
  transaction per person), and whole-chain identify time per probe.

    python benchmarks/gallery.py [--sizes 1000 10000 100000 1000000] [--folder DIR] [--detector retinaface]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ATT = ROOT / "tests" / "fixtures" / "att"


class ArrayStore:
    """The two reads an index makes (generation, matrix), over arrays: search is measured without SQLite."""

    def __init__(self, owners: np.ndarray, matrix: np.ndarray) -> None:
        self.owners, self.rows = owners, matrix

    def generation(self) -> int:
        return 0

    def matrix(self):
        return 0, np.arange(len(self.rows), dtype=np.int64), self.owners.astype(np.int64) + 1, self.rows


def _latencies(index, queries, repeats: int, **kw) -> tuple[np.ndarray, list]:
    """Per-query seconds (median over `repeats` of each query) and the first run's top hits."""
    times = np.empty((repeats, len(queries)))
    tops = []
    for r in range(repeats):
        for i, q in enumerate(queries):
            start = time.perf_counter()
            hits = index.search(q[None], k=5, **kw)[0]
            times[r, i] = time.perf_counter() - start
            if r == 0:
                tops.append(hits[0].person_id)
    return np.median(times, axis=0), tops


def search_speed(n: int, queries: int, repeats: int) -> None:
    from siamface.gallery import GalleryIndex, synthetic

    centres, owners, templates = synthetic.gallery(n, seed=0)
    who, probes = synthetic.probes(centres, queries, seed=1)
    _, strangers = synthetic.probes(synthetic.gallery(queries, per_person=1, seed=2)[0], queries, seed=3)
    store = ArrayStore(owners, templates)
    exact = GalleryIndex(store, approx_min=None)
    len(exact)
    exact.search(probes[:1])
    t_exact, top_exact = _latencies(exact, probes, repeats)
    truth = float(np.mean(np.array(top_exact) == who + 1))
    print(
        f"search exact   {n:>8} templates: p50 {1000 * np.median(t_exact):.3f} ms, p99 "
        f"{1000 * np.percentile(t_exact, 99):.3f} ms (rank-1 of the true person {truth:.2%}; matrix "
        f"{templates.nbytes / 2**20:.0f} MiB)"
    )
    approx = GalleryIndex(store, approx_min=1)
    start = time.perf_counter()
    len(approx)
    build = time.perf_counter() - start
    faiss = approx._current().index
    approx.search(probes[:1])
    t_faiss, top_faiss = _latencies(approx, probes, repeats)
    recall = float(np.mean(np.array(top_faiss) == np.array(top_exact)))
    _, stranger_exact = _latencies(exact, strangers, 1)
    _, stranger_faiss = _latencies(approx, strangers, 1)
    stranger_recall = float(np.mean(np.array(stranger_exact) == np.array(stranger_faiss)))
    print(
        f"search faiss   {n:>8} templates: p50 {1000 * np.median(t_faiss):.3f} ms, p99 "
        f"{1000 * np.percentile(t_faiss, 99):.3f} ms, recall@1 {recall:.2%} vs exact ({queries} enrolled "
        f"probes; {stranger_recall:.2%} on {queries} strangers), {approx.kind}, build {build:.2f} s, "
        f"index {faiss.nbytes / 2**20:.0f} MiB (no matrix kept beside it)"
    )


def load_speed(n: int, workdir: Path, per_person: int = 10) -> None:
    from siamface.gallery import ExactIndex, ModelBinding, SQLiteStore, synthetic

    _, owners, templates = synthetic.gallery(n, per_person=per_person, seed=0)
    store = SQLiteStore(workdir / f"s{n}.db", ModelBinding("bench", "1", 128), create=True)
    now = datetime.now(UTC).isoformat()
    # Bulk load in one transaction (a benchmark shortcut; enrollment itself goes through add_templates).
    with store._write() as db:
        db.executemany(
            "INSERT INTO people (id, name, created) VALUES (?, ?, ?)",
            [(p + 1, f"p{p}", now) for p in range(int(owners.max()) + 1)],
        )
        db.executemany(
            "INSERT INTO templates (person_id, embedding, model, model_version, created) "
            "VALUES (?, ?, 'bench', '1', ?)",
            [(int(owners[i]) + 1, templates[i].tobytes(), now) for i in range(n)],
        )
        store._bump(db)
    index = ExactIndex(store)
    start = time.perf_counter()
    len(index)
    print(
        f"index load from SQLite {n} templates: {1000 * (time.perf_counter() - start):.0f} ms; "
        f"file {store.stats()['file_bytes'] / 1e6:.1f} MB"
    )
    store.close()


def enroll_speed(folder: Path, detector: str, workdir: Path) -> None:
    from siamface import Pipeline
    from siamface.gallery import Gallery
    from siamface.gallery.enroll import person_folders

    pipe = Pipeline(detector=detector)
    first = person_folders(folder)[0][1][0]
    pipe.embed(first)  # load the models outside the timing
    with Gallery(workdir / "enroll.db", pipe, create=True) as g:
        start = time.perf_counter()
        reports = g.enroll_bulk(folder)
        elapsed = time.perf_counter() - start
        images = sum(len(r.added) + len(r.rejected) for r in reports)
        added = sum(len(r.added) for r in reports)
        print(
            f"enroll {folder}: {images / elapsed:.1f} faces/s ({images} images, {added} templates, "
            f"{len(reports)} people, {elapsed:.1f} s; detector {detector}, gates + embedding + one "
            "transaction per person)"
        )
        probe = first
        g.identify(probe, audit=False)
        times = []
        for _ in range(10):
            start = time.perf_counter()
            g.identify(probe, audit=False)
            times.append(time.perf_counter() - start)
        print(f"identify (whole chain, 1 face, {len(g.index)} templates): {1000 * np.median(times):.1f} ms/probe")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--queries", type=int, default=200, help="probes per size (default: 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per probe, median kept (default: 3)")
    parser.add_argument(
        "--folder", type=Path, default=ATT, help="person folders to enroll (default: the AT&T test fixtures)"
    )
    parser.add_argument("--detector", default="retinaface")
    parser.add_argument("--skip-enroll", action="store_true")
    args = parser.parse_args()
    for n in args.sizes:
        search_speed(n, args.queries, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        load_speed(100_000, Path(tmp))
        if not args.skip_enroll:
            enroll_speed(args.folder, args.detector, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
