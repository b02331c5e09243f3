"""FAISS IVF-flat lists scanned per query (nprobe) against recall, on synthetic templates of each layout.

The in-process index of SQLite galleries (`siamface.gallery.faiss_index.FaissIndex`, its lists as a gallery
of that size gets them) is built once on `--templates` synthetic templates (10 a person) and searched with
500 probes of enrolled people at each nprobe, one thread, one probe a search; recall@1: the best template's
person is the exact search's (computed here in NumPy). Layouts (`siamface.gallery.synthetic`):
isotropic (256-d, a person's templates 0.88-0.94 alike: the tight clusters of the first scale figures),
sface (128-d, SFace's statistics: a person's templates about 0.58 alike), fused (256-d, `sface+dlib`'s).

    python benchmarks/faiss_nprobe.py --layout sface
    python benchmarks/faiss_nprobe.py --layout fused --nprobe 16 32 64 128
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=["isotropic", "sface", "fused"], default="fused")
    parser.add_argument("--templates", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    args = parser.parse_args()

    import faiss
    from gallery_backends import _truth  # this folder's: the exact best person of each probe

    from siamface.gallery import synthetic
    from siamface.gallery.faiss_index import FaissIndex

    layout = {"isotropic": None, "sface": synthetic.SFACE_LIKE, "fused": synthetic.SFACE_DLIB_LIKE}[args.layout]
    d = 256 if layout is None else layout.size
    centres, owners, templates = synthetic.gallery(args.templates, per_person=10, d=d, seed=3, layout=layout)
    _, probes = synthetic.probes(centres, args.queries, seed=4, layout=layout)
    truth = _truth(templates, owners, probes)
    index = FaissIndex(d, len(templates))
    start = time.perf_counter()
    index.train(templates)
    index.add(np.arange(len(templates), dtype=np.int64), templates)
    print(
        f"{args.layout}: {len(templates)} templates, {index.nlist} lists, built in {time.perf_counter() - start:.1f} s"
    )
    faiss.omp_set_num_threads(1)
    print(f"{'nprobe':>6} {'recall@1':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for nprobe in args.nprobe:
        index.index.nprobe = nprobe
        times, found = [], []
        for q in probes:
            t0 = time.perf_counter()
            ids, _ = index.candidates(q[None], 50)
            times.append(time.perf_counter() - t0)
            found.append(owners[int(ids[0][0])])
        recall = float(np.mean(np.array(found) == truth))
        print(f"{nprobe:>6} {recall:>8.3f} {1000 * np.median(times):>7.2f} {1000 * np.percentile(times, 99):>7.2f}")


if __name__ == "__main__":
    main()
