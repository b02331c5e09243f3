"""Gallery backends side by side: SQLite file vs PostgreSQL database, through the `Store` API and the
in-process 1:N index (`GalleryIndex`), on synthetic dlib-like templates (siamface.gallery.synthetic).

Per size and backend:
- enrollment: templates/s bulk-inserting people of 10 templates through `Store.add_people`, 1000 people
  (10k templates) per transaction;
- index load: the first search, which reads every template (`Store.matrix`) and builds the index;
- 1:N latency p50/p99 of `GalleryIndex.search` for one probe, which includes the generation check (one
  row read: a round trip to the server for PostgreSQL);
- refresh: the first search after another connection enrolled one more person (the index reloads).

    python benchmarks/gallery_backends.py                       # 100k and 1M, a throwaway PostgreSQL
    python benchmarks/gallery_backends.py --sizes 100000 --postgres postgresql://me@db/bench_empty

Without --postgres a throwaway cluster is started with Debian's server binaries (as in the tests).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH_PEOPLE = 1000
PER_PERSON = 10


def _fill(store, owners: np.ndarray, templates: np.ndarray) -> float:
    from siamface.gallery import NewTemplate

    start = time.perf_counter()
    people = owners.max() + 1
    for lo in range(0, people, BATCH_PEOPLE):
        batch = []
        for p in range(lo, min(people, lo + BATCH_PEOPLE)):
            rows = templates[p * PER_PERSON:(p + 1) * PER_PERSON]
            batch.append((f"person{p:07d}", {}, [NewTemplate(v, f"synthetic/{p}/{i}") for i, v in enumerate(rows)]))
        store.add_people(batch)
    return len(templates) / (time.perf_counter() - start)


def run(spec, make_other, n: int, queries: int) -> dict[str, float]:
    from siamface.gallery import GalleryIndex, ModelBinding, NewTemplate, open_store, synthetic

    centres, owners, templates = synthetic.gallery(n, per_person=PER_PERSON, seed=3)
    _, probes = synthetic.probes(centres, queries, seed=4)
    model = ModelBinding("dlib-resnet", "bench", 128)
    out: dict[str, float] = {}
    with open_store(spec, model, create=True) as store:
        out["enroll_tps"] = _fill(store, owners, templates)
        index = GalleryIndex(store)
        start = time.perf_counter()
        index.search(probes[:1])
        out["load_s"] = time.perf_counter() - start
        times = []
        for q in probes:
            start = time.perf_counter()
            index.search(q[None])
            times.append(time.perf_counter() - start)
        out["p50_ms"] = 1000 * float(np.percentile(times, 50))
        out["p99_ms"] = 1000 * float(np.percentile(times, 99))
        with make_other() as other:                      # another process's connection enrolls someone
            other.add_templates("newcomer", [NewTemplate(probes[0])])
        start = time.perf_counter()
        hit = index.search(probes[:1])[0][0]
        out["refresh_s"] = time.perf_counter() - start
        assert store.names([hit.person_id])[hit.person_id] == "newcomer"
        out["approximate"] = float(index.approximate)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--postgres", metavar="URL", help="a server to use (CREATE DATABASE rights); "
                                                          "default: a throwaway cluster")
    args = parser.parse_args()
    from siamface.gallery import open_store

    cluster = None
    if args.postgres:
        server = args.postgres
    else:
        sys.path.insert(0, str(ROOT / "tests" / "gallery"))
        from postgres_support import Cluster, server_bin

        bindir = server_bin()
        if bindir is None:
            sys.exit("no PostgreSQL server binaries (apt-get install postgresql) and no --postgres URL")
        cluster = Cluster(bindir)
        server = cluster.url()
    import psycopg

    def new_database(name: str) -> str:
        with psycopg.connect(server, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}"')
            db.execute(f'CREATE DATABASE "{name}"')
        return server.rsplit("/", 1)[0] + "/" + name

    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.sizes:
                sqlite_path = Path(tmp) / f"bench{n}.db"
                results[("SQLite", n)] = run(sqlite_path, lambda: open_store(sqlite_path), n, args.queries)
                url = new_database(f"siamface_bench_{n}")
                results[("PostgreSQL", n)] = run(url, lambda: open_store(url), n, args.queries)
                sqlite_path.unlink()
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"{'templates':>10} {'backend':<11} {'enroll tpl/s':>12} {'index load s':>12} {'1:N p50 ms':>10} "
          f"{'1:N p99 ms':>10} {'refresh s':>9}  index")
    for (backend, n), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{n:>10} {backend:<11} {r['enroll_tps']:>12.0f} {r['load_s']:>12.2f} {r['p50_ms']:>10.3f} "
              f"{r['p99_ms']:>10.3f} {r['refresh_s']:>9.2f}  {'IVF' if r['approximate'] else 'exact'}")


if __name__ == "__main__":
    main()
