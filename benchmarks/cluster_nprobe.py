"""What `siamface cluster` loses past FAISS's exact limit: the inverted-file range search against the exact
threshold graph, on synthetic templates as loose as real ones, for each number of lists searched (nprobe).

Templates: `siamface.gallery.synthetic` with the statistics of real `sface` templates (``SFACE_LIKE``, 128-d, a
person's templates about 0.58 alike) or of `sface+dlib` ones (``SFACE_DLIB_LIKE``, 256-d, about 0.83), 10 a
person, linked at that model's default linking threshold (its 1:N default: 0.526, 0.806). For each size the
exact graph (FAISS flat, whatever the size) and its clustering (``whispers+mean``, the default) are the
reference; then for each nprobe the library's inverted-file index (`siamface.library.cluster._faiss_index`:
about 4 sqrt(n) lists) is built and searched, and the row gives:

- missed: the share of the exact graph's edges the search did not find, kept both ways (`both_ways`: a pair
  found from either face's search, as shipped) and one-sided (only the pairs found from the lower face's
  search: what the library kept before),
- pair-P / pair-R: the pairwise precision and recall of the groups made from that graph against the exact
  graph's groups (1.0 / 1.0: the very same grouping), and BCubed against the synthetic people,
- seconds: building and searching the index (train, add, range search), then grouping.

Rule (written before the figures): nprobe is the fewest lists of those measured whose search misses under
0.5 % of the exact graph's edges at every size and layout measured; where that search (building the index
included) costs as much as the exact one, the exact search is kept up to that size (`EXACT_LIMIT` raised).

    python benchmarks/cluster_nprobe.py                        # 60,000 and 200,000 faces, both layouts, 16-256 lists
    python benchmarks/cluster_nprobe.py --sizes 60000 --layouts sface --nprobe 16 64
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[60_000, 200_000])
    ap.add_argument("--layouts", nargs="+", choices=["sface", "fused"], default=["sface", "fused"])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import faiss

    from siamface.embedding.fused import SFACE_DLIB
    from siamface.embedding.sface import SFACE_INFO
    from siamface.gallery import synthetic
    from siamface.library import bcubed, cluster, pairwise
    from siamface.library.cluster import EXACT_LIMIT, NPROBE, Graph, _faiss_index, both_ways, range_search

    layouts = {
        "sface": (synthetic.SFACE_LIKE, SFACE_INFO.identify_threshold),
        "fused": (synthetic.SFACE_DLIB_LIKE, SFACE_DLIB.identify_threshold),
    }
    print(
        f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads; exact up to {EXACT_LIMIT} faces, "
        f"shipped nprobe {NPROBE}; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}",
        flush=True,
    )
    header = "layout  n        nprobe  lists  edges      missed   one-sided  pair-P  pair-R  BCubed-P  BCubed-R  s-graph  s-group"
    print(header, flush=True)
    for name in args.layouts:
        layout, threshold = layouts[name]
        for n in args.sizes:
            _, owners, x = synthetic.gallery(n, per_person=10, seed=args.seed, layout=layout)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            t = time.perf_counter()
            flat = faiss.IndexFlatIP(x.shape[1])
            flat.add(x)
            exact = both_ways(*range_search(flat, x, threshold))
            del flat
            s_graph = time.perf_counter() - t
            reference, s_group = _group(x, threshold, Graph(n, *exact), cluster)
            keys = exact[0] * n + exact[1]
            _row(name, n, "exact", "-", len(keys), None, None, (1.0, 1.0), bcubed(reference, owners), s_graph, s_group)
            for nprobe in args.nprobe:
                t = time.perf_counter()
                index = _faiss_index(faiss, x, nprobe)
                rows, cols, sims = range_search(index, x, threshold)
                found = both_ways(rows, cols, sims)
                s_graph = time.perf_counter() - t
                lists = index.nlist
                del index
                one = rows < cols
                missed = 1.0 - np.isin(keys, found[0] * n + found[1]).mean()
                missed_one = 1.0 - np.isin(keys, rows[one] * n + cols[one]).mean()
                labels, s_group = _group(x, threshold, Graph(n, *found), cluster)
                pp, pr, _ = pairwise(labels, reference)
                _row(
                    name,
                    n,
                    nprobe,
                    lists,
                    len(found[0]),
                    missed,
                    missed_one,
                    (pp, pr),
                    bcubed(labels, owners),
                    s_graph,
                    s_group,
                )
            print(f"  load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    return 0


def _group(x, threshold, graph, cluster):
    t = time.perf_counter()
    labels = cluster(x, threshold, graph=graph)
    return labels, time.perf_counter() - t


def _row(name, n, nprobe, lists, edges, missed, missed_one, pair, cubed, s_graph, s_group) -> None:
    pct = lambda v: "   -   " if v is None else f"{100 * v:6.3f}%"  # noqa: E731
    print(
        f"{name:<7} {n:<8} {nprobe!s:>6}  {lists!s:>5}  {edges:<9}  {pct(missed)}  {pct(missed_one)}    "
        f"{pair[0]:.4f}  {pair[1]:.4f}  {cubed[0]:.4f}    {cubed[1]:.4f}    {s_graph:7.1f}  {s_group:7.1f}",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
