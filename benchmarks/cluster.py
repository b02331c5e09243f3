"""Clustering faces without a gallery (`siamface cluster`), one figure per line.

On celeba_ids (every person, every photo; the largest face of each photo, embedded once through the
embedding cache): first, on the 100 FITTING identities of celeba_ids only (`_facecache.fit_split`, the
identities every other model choice is made on), ``whispers+mean`` with its join threshold loosened below the
linking threshold by fractions of the model's decade of false-accept rate (its 1:N default less its 1:1
default): the evidence for joining at the linking threshold itself (fraction 0, the shipped default); and
whispers against whispers+mean on the 199 held-out identities alone. Then, on every person: BCubed precision
and recall, pairwise precision / recall / F, the number of groups against the true number of people, and the
clustering time (after embedding), for each method and shift of the linking threshold (from
`siamface.library.groups.cluster_threshold`), and scikit-learn's HDBSCAN where it is installed (a baseline
only); then the clustering time of 10,000 faces and the growth with synthetic templates up to 100,000
(`siamface.gallery.synthetic`). Another labelled set (att_faces, yale_faces) checks that precision holds
elsewhere.

    python benchmarks/cluster.py [--root /work/shared/datasets/celeba_ids] [--model sface] [--detector D]
                                 [--cache .cache/bench/embeddings.sqlite] [--shifts -0.05 0 0.05]
                                 [--methods whispers+mean whispers average components hdbscan]
                                 [--fractions 0 0.125 0.25 0.5 1] [--synthetic 10000 100000] [--embed-only]
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


def labelled_files(root: Path) -> tuple[list[Path], np.ndarray]:
    """The photos of a labelled set and their person: ``root/<person>/<photo>`` (celeba_ids, att_faces), or
    files named ``<person>.<anything>`` directly in root (yale_faces: subject01.glasses ...)."""
    from siamface.datasets import folder_identities

    ids = folder_identities(root)
    if ids:
        files = [Path(p) for name in sorted(ids) for p in ids[name]]
        people = [name for name in sorted(ids) for _ in ids[name]]
    else:
        files = sorted(
            p
            for p in root.iterdir()
            if p.is_file() and "." in p.name and p.name[0] != "." and p.suffix.lower() not in (".txt", ".md", ".csv")
        )
        people = [p.name.split(".")[0] for p in files]
    return files, np.unique(people, return_inverse=True)[1]


def embeddings(root: Path, cache_path: Path, model: str | None, detector: str | None):
    """(embeddings of the photos with a face, their person labels, pipeline, photos without a face, the run,
    which of them are celeba_ids' fitting identities or None for another set)."""
    from siamface.evaluation.cache import EmbeddingCache
    from siamface.evaluation.embed import embed_images
    from siamface.pipeline import Pipeline

    files, labels = labelled_files(root)
    fit = None
    if root.name == "celeba_ids":
        from _facecache import fit_split

        fit = fit_split(labels)  # on every person's label, before photos without a face are left out
    options = {k: v for k, v in (("model", model), ("detector", detector)) if v}
    pipeline = Pipeline(**options)
    with EmbeddingCache(cache_path) as cache:
        run = embed_images(pipeline, files, cache=cache, progress=True, stream=sys.stderr)
    keep = [i for i, f in enumerate(files) if run.outcomes[f].embedding is not None]
    emb = np.stack([run.outcomes[files[i]].embedding for i in keep]).astype(np.float32)
    return emb, labels[keep], pipeline, len(files) - len(keep), run, None if fit is None else fit[keep]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="a labelled set (celeba_ids, att_faces, yale_faces)"
    )
    ap.add_argument("--model", default=None, help="the encoder (default: siamface's default model)")
    ap.add_argument("--detector", default=None, help="the detector (default: siamface's default detector)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench" / "embeddings.sqlite")
    ap.add_argument("--embed-only", action="store_true")
    ap.add_argument(
        "--shifts",
        type=float,
        nargs="+",
        default=[-0.10, -0.05, -0.02, 0.0, 0.02, 0.05],
        help="added to the default linking threshold (siamface.library.groups.cluster_threshold)",
    )
    ap.add_argument(
        "--fractions",
        type=float,
        nargs="*",
        default=[0.0, 0.125, 0.25, 0.5, 1.0],
        help="whispers+mean's join loosened by these fractions of the model's decade, on celeba_ids' fitting "
        "identities (none: skip)",
    )
    ap.add_argument(
        "--synthetic", type=int, nargs="*", default=[10_000, 30_000, 100_000], help="none: no growth measured"
    )
    ap.add_argument(
        "--methods", nargs="+", default=None, help="default: every method, and hdbscan where scikit-learn is installed"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    emb, labels, pipeline, missed, run, fit = embeddings(args.root, args.cache, args.model, args.detector)
    print(
        f"{args.root.name}: {len(emb)} faces of {len(np.unique(labels))} people ({missed} photos without a face); "
        f"embedded {run.n_computed}, from the cache {run.n_cached}, {time.perf_counter() - t0:.0f} s"
    )
    if args.embed_only:
        return 0
    from siamface.library import DEFAULT_METHOD, METHODS, cluster
    from siamface.library.groups import cluster_threshold

    methods = args.methods or [*METHODS, *(["hdbscan"] if _sklearn() else [])]
    base = cluster_threshold(pipeline)
    info = pipeline.encoder.info
    print(
        f"model {info.name}, 1:1 threshold in force {pipeline.threshold:.4f} ({pipeline.threshold_source}); "
        f"model defaults 1:1 {info.threshold} (FAR 1e-3), 1:N {info.identify_threshold} (FAR 1e-4)"
    )
    print(f"siamface cluster's default: {DEFAULT_METHOD} at {base:.4f} (cluster_threshold: shift 0 below)")
    if fit is not None and args.fractions:
        step = (info.identify_threshold or base) - info.threshold  # the model's decade of false-accept rate
        print(
            f"on the {len(np.unique(labels[fit]))} FITTING identities only: whispers, then whispers+mean joining at "
            f"the linking threshold less a fraction of the model's decade ({step:.4f})"
        )
        print("fraction       join    BCubed-P  BCubed-R  pair-P  pair-R  pair-F  groups(>1)  alone  true  seconds")
        _row("whispers", None, None, cluster(emb[fit], base, "whispers"), labels[fit], 0.0)
        for fraction in args.fractions:
            t = time.perf_counter()
            found = cluster(emb[fit], base, "whispers+mean", join=base - fraction * step)
            _row(f"{fraction:.3f}", None, base - fraction * step, found, labels[fit], time.perf_counter() - t)
        held = ~fit
        print(f"the {len(np.unique(labels[held]))} held-out identities alone (linking {base:.4f}):")
        for name in ("whispers", "whispers+mean"):
            _row(name, None, None, cluster(emb[held], base, name), labels[held], 0.0)
    print(f"every person (linking threshold {base:.4f} + shift):")
    print(
        "method         shift  threshold  BCubed-P  BCubed-R  pair-P  pair-R  pair-F  groups(>1)  alone  true  seconds"
    )
    for method in methods:
        for shift in [None] if method.startswith("hdbscan") else args.shifts:
            t = time.perf_counter()
            found = _hdbscan(emb) if method == "hdbscan" else cluster(emb, base + shift, method)
            _row(method, shift, None if shift is None else base + shift, found, labels, time.perf_counter() - t)
    if args.synthetic:
        synthetic_growth(args.synthetic, [m for m in methods if m != "hdbscan"], emb.shape[1], base)
    return 0


def _row(method, shift, threshold, found, labels, seconds) -> None:
    from siamface.library import bcubed, pairwise

    bp, br = bcubed(found, labels)
    pp, pr, pf = pairwise(found, labels)
    sizes = np.bincount(found)
    if threshold is None:
        where = "   -      -   "
    else:
        where = f"{shift:+.3f} {threshold:.4f}" if shift is not None else f"{threshold:.4f}"
    print(
        f"{method:<14} {where}     {bp:.4f}    {br:.4f}    {pp:.4f}  {pr:.4f}  {pf:.4f}  "
        f"{int((sizes > 1).sum()):>10}  {int((sizes == 1).sum()):>5}  {len(np.unique(labels)):>4}  {seconds:7.2f}",
        flush=True,
    )


def _sklearn() -> bool:
    try:
        import sklearn.cluster  # noqa: F401
    except ImportError:
        return False
    return True


def _hdbscan(emb: np.ndarray, min_cluster_size: int = 3) -> np.ndarray:
    """scikit-learn's HDBSCAN (a baseline, not a dependency of siamface) on the unit embeddings (Euclidean
    distance, monotone in cosine similarity), min_samples 1; its noise faces each alone, numbered by size."""
    from sklearn.cluster import HDBSCAN

    from siamface.library.cluster import renumber

    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=1, copy=True).fit_predict(x)
    noise = labels < 0
    labels[noise] = labels.max() + 1 + np.arange(int(noise.sum()))
    return renumber(labels)


def synthetic_growth(sizes: list[int], methods, dim: int, threshold: float) -> None:
    """Clustering time of n synthetic templates (10 per person, `siamface.gallery.synthetic`) of the
    model's dimension, at its threshold, with BCubed against the synthetic people."""
    from siamface.gallery import synthetic
    from siamface.library import bcubed, cluster
    from siamface.library.cluster import EXACT_LIMIT

    print(f"synthetic templates ({dim}-d, 10 per person), threshold {threshold:.4f}; FAISS exact up to {EXACT_LIMIT}")
    print("n        method         seconds  BCubed-P  BCubed-R")
    for n in sizes:
        _, owners, templates = synthetic.gallery(n, d=dim, seed=0)
        for method in methods:
            t = time.perf_counter()
            found = cluster(templates, threshold, method)
            seconds = time.perf_counter() - t
            bp, br = bcubed(found, owners)
            print(f"{n:<8} {method:<14} {seconds:7.2f}  {bp:.4f}    {br:.4f}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
