"""Clustering faces without a gallery (`siamface cluster`), one figure per line.

On celeba_ids (every person, every photo; the largest face of each photo, embedded once through the
embedding cache): BCubed precision and recall, pairwise precision / recall / F, the number of groups against
the true number of people, and the clustering time (after embedding), for each method and threshold shift;
then the clustering time of 10,000 faces and the growth with synthetic templates up to 100,000
(`siamface.gallery.synthetic`).

    python benchmarks/cluster.py [--root /work/shared/datasets/celeba_ids] [--cache .cache/bench/embeddings.sqlite]
                                 [--shifts -0.05 0 0.05] [--synthetic 10000 30000 100000] [--embed-only]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_ROOT = Path("/work/shared/datasets/celeba_ids")


def celeba_embeddings(root: Path, cache_path: Path):
    """(embeddings of the photos with a face, their person labels, pipeline, photos without a face)."""
    from siamface.evaluation.cache import EmbeddingCache
    from siamface.evaluation.embed import embed_images
    from siamface.evaluation.protocols import folder_identities
    from siamface.pipeline import Pipeline

    ids = folder_identities(root)
    files, labels = [], []
    for k, name in enumerate(sorted(ids)):
        for p in ids[name]:
            files.append(Path(p))
            labels.append(k)
    pipeline = Pipeline()
    with EmbeddingCache(cache_path) as cache:
        run = embed_images(pipeline, files, cache=cache, progress=True, stream=sys.stderr)
    keep = [i for i, f in enumerate(files) if run.outcomes[f].embedding is not None]
    emb = np.stack([run.outcomes[files[i]].embedding for i in keep]).astype(np.float32)
    return emb, np.array(labels)[keep], pipeline, len(files) - len(keep), run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench" / "embeddings.sqlite")
    ap.add_argument("--embed-only", action="store_true")
    ap.add_argument(
        "--shifts", type=float, nargs="+", default=[-0.06, -0.04, -0.02, 0.0, 0.01, 0.015, 0.02, 0.025, 0.04]
    )
    ap.add_argument("--synthetic", type=int, nargs="*", default=[10_000, 30_000, 100_000])
    ap.add_argument("--methods", nargs="+", default=None, help="default: every method")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    emb, labels, pipeline, missed, run = celeba_embeddings(args.root, args.cache)
    print(
        f"celeba_ids: {len(emb)} faces of {len(np.unique(labels))} people ({missed} photos without a face); "
        f"embedded {run.n_computed}, from the cache {run.n_cached}, {time.perf_counter() - t0:.0f} s"
    )
    if args.embed_only:
        return 0
    from siamface.library import DEFAULT_METHOD, METHODS, bcubed, cluster, pairwise
    from siamface.library.groups import DEFAULT_SHIFT

    methods = args.methods or METHODS
    base = pipeline.threshold
    people = len(np.unique(labels))
    print(f"model {pipeline.encoder.info.name}, 1:1 threshold in force {base:.4f} ({pipeline.threshold_source})")
    print(f"siamface cluster's default: {DEFAULT_METHOD} at shift {DEFAULT_SHIFT:+.3f}")
    print("method      shift  threshold  BCubed-P  BCubed-R  pair-P  pair-R  pair-F  groups(>1)  alone  true  seconds")
    for method in methods:
        for shift in args.shifts:
            t = time.perf_counter()
            found = cluster(emb, base + shift, method)
            seconds = time.perf_counter() - t
            bp, br = bcubed(found, labels)
            pp, pr, pf = pairwise(found, labels)
            sizes = np.bincount(found)
            print(
                f"{method:<11} {shift:+.3f} {base + shift:.4f}     {bp:.4f}    {br:.4f}    {pp:.4f}  {pr:.4f}  "
                f"{pf:.4f}  {int((sizes > 1).sum()):>10}  {int((sizes == 1).sum()):>5}  {people:>4}  {seconds:7.2f}",
                flush=True,
            )
    synthetic_growth(args.synthetic, methods, emb.shape[1], base + DEFAULT_SHIFT)
    return 0


def synthetic_growth(sizes: list[int], methods, dim: int, threshold: float) -> None:
    """Clustering time of n synthetic templates (10 per person, `siamface.gallery.synthetic`) of the
    model's dimension, at its threshold, with BCubed against the synthetic people."""
    from siamface.gallery import synthetic
    from siamface.library import bcubed, cluster
    from siamface.library.cluster import EXACT_LIMIT

    print(f"synthetic templates ({dim}-d, 10 per person), threshold {threshold:.4f}; FAISS exact up to {EXACT_LIMIT}")
    print("n        method      seconds  BCubed-P  BCubed-R")
    for n in sizes:
        _, owners, templates = synthetic.gallery(n, d=dim, seed=0)
        for method in methods:
            t = time.perf_counter()
            found = cluster(templates, threshold, method)
            seconds = time.perf_counter() - t
            bp, br = bcubed(found, owners)
            print(f"{n:<8} {method:<11} {seconds:7.2f}  {bp:.4f}    {br:.4f}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
