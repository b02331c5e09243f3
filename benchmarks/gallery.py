"""Gallery speed, one figure per line: enrollment ms/image on the AT&T fixtures (real chain), and 1:N search
latency over 1k / 10k / 100k synthetic templates (10 per person), with the index load time.

    python benchmarks/gallery.py [--sizes 1000 10000 100000] [--detector retinaface]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ATT = ROOT / "tests" / "fixtures" / "att"


def enroll_speed(detector: str, workdir: Path) -> None:
    from siamface import Pipeline
    from siamface.gallery import Gallery

    pipe = Pipeline(detector=detector)
    pipe.embed(ATT / "s1" / "1.pgm")                       # load the models outside the timing
    with Gallery(workdir / "enroll.db", pipe, create=True) as g:
        images = 0
        start = time.perf_counter()
        for folder in sorted(ATT.glob("s*")):
            files = sorted(folder.glob("*.pgm"))
            g.enroll(folder.name, files)
            images += len(files)
        elapsed = time.perf_counter() - start
        print(f"enroll: {1000 * elapsed / images:.1f} ms/image ({images} images, detector {detector}, "
              f"gates + embedding + one transaction per person)")
        probe = ATT / "s3" / "1.pgm"
        g.identify(probe)
        start = time.perf_counter()
        for _ in range(10):
            g.identify(probe, audit=False)
        print(f"identify (whole chain, 1 face, {len(g.index)} templates): "
              f"{100 * (time.perf_counter() - start):.1f} ms/probe")


def search_speed(n: int, workdir: Path, per_person: int = 10) -> None:
    from siamface.gallery import ExactIndex, ModelBinding, SQLiteStore

    rng = np.random.default_rng(0)
    store = SQLiteStore(workdir / f"s{n}.db", ModelBinding("bench", "1", 128), create=True)
    vectors = rng.normal(size=(n, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = datetime.now(timezone.utc).isoformat()
    # Bulk load in one transaction (a benchmark shortcut; enrollment itself goes through add_templates).
    with store._write() as db:
        db.executemany("INSERT INTO people (id, name, created) VALUES (?, ?, ?)",
                       [(p + 1, f"p{p}", now) for p in range(n // per_person)])
        db.executemany("INSERT INTO templates (person_id, embedding, model, model_version, created) "
                       "VALUES (?, ?, 'bench', '1', ?)",
                       [(i // per_person + 1, vectors[i].tobytes(), now) for i in range(n)])
        store._bump(db)
    index = ExactIndex(store)
    start = time.perf_counter()
    len(index)
    load = time.perf_counter() - start
    queries = vectors[rng.integers(0, n, 50)] + rng.normal(0, 0.02, (50, 128)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index.search(queries[:1])
    start = time.perf_counter()
    for q in queries:
        index.search(q[None], k=5)
    one = (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    index.search(queries, k=5)
    batch = (time.perf_counter() - start) / len(queries)
    print(f"search {n} templates ({n // per_person} people): {1000 * one:.2f} ms/face, {1000 * batch:.3f} ms/face "
          f"batched by 50; index load {1000 * load:.0f} ms; file {store.stats()['file_bytes'] / 1e6:.1f} MB")
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--detector", default="retinaface")
    parser.add_argument("--skip-enroll", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_enroll:
            enroll_speed(args.detector, Path(tmp))
        for n in args.sizes:
            search_speed(n, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
