"""1:N set by FPIR on celeba_ids held-out identities: the FPIR measured against the target at every gallery
size, beside today's fixed threshold; the score rule for several templates; a scale check of the tail.

    nice -n 10 python benchmarks/fpir.py [--data ../shared/datasets] [--models sface dlib-flip+facenet]
                                         [--fpir 0.01] [--scale 10000 100000 1000000] [--probes 2000]

Data: the first 8 photos of each of the 199 celeba_ids identities not used for fitting (retinaface, the
embedding cache of `_facecache`); the shipped impostor tails were measured on the 100 fitting identities
only (benchmarks/impostor_tails.py), so nothing here was seen by them.

1. Sweep (`siamface.evaluation.metrics.gallery_sweep`): galleries of 10 people up to 190 (of 199: the
   others are strangers), one template each (and 3 each), every face of every other identity a stranger's
   search, random galleries redrawn until 4,000 stranger searches per size. Per size: the threshold the
   FPIR policy sets (`siamface.decision`, the shipped tail, target --fpir), the FPIR measured and FNIR; the
   same with today's fixed 1:N default (``ModelInfo.identify_threshold``, FAR 1e-4 per comparison).
2. Rules with 3 templates per person (best, mean, mean of the best two): FNIR at a measured FPIR of --fpir
   (threshold set on the strangers), 100 people, pooled over 20 galleries.
3. Scale check: galleries of 10k, 100k and 1M synthetic templates, unit vectors drawn from a Gaussian fitted
   to the held-out embeddings (its impostor percentiles against real faces are printed beside the real
   ones); probes: every real celeba_ids face (up to --probes). A tail is fitted (`siamface.tails.fit_tail`)
   to the probes' scores against 200 synthetic templates only, and its threshold for each size predicts
   an FPIR of --fpir; measured: the share of probes whose best score over the whole synthetic gallery
   reaches it (about 9 minutes on 2 cores for both models, most of it dlib-flip+facenet's 640-d 1M). One
   figure per line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _facecache import celeba_files, clean_celeba, detections, embeddings, fit_split  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.decision import FpirPolicy, fpir_threshold, resolve  # noqa: E402
from siamface.embedding import create_encoder  # noqa: E402
from siamface.evaluation.metrics import gallery_sweep, threshold_at_fpir  # noqa: E402
from siamface.evaluation.metrics.identification import SCORE_RULES  # noqa: E402
from siamface.tails import fit_tail  # noqa: E402

SIZES = (10, 20, 50, 100, 150, 190)
#: stranger searches per gallery size (random galleries redrawn until then)
SEARCHES = 20_000


def celeba(data: Path, model: str, det, held_out: bool = True, clean: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and identities of celeba_ids' held-out identities (or all), less its label noise
    (`_facecache.clean_celeba`) unless `clean` is false."""
    root = data / "celeba_ids"
    files, labels = celeba_files(root)
    keep = ~fit_split(labels) if held_out else np.ones(len(labels), bool)
    files, labels = [f for f, k in zip(files, keep) if k], labels[keep]
    if clean:
        files, labels = clean_celeba(files, labels)
    dets = detections(root, files, det, "retinaface")
    return embeddings(model, root, files, dets, Pipeline(detector=det, model=model)), labels


def sweep(model: str, e: np.ndarray, y: np.ndarray, fpir: float) -> None:
    info = create_encoder(model).info
    policy = resolve(info, fpir=fpir)
    fixed = info.identify_threshold
    for k in (1, 3):
        ours = gallery_sweep(
            e,
            y,
            lambda n, m: policy.for_gallery(n, m).identify.value,
            SIZES,
            per_person=k,
            target=fpir,
            min_searches=SEARCHES,
            max_draws=1000,
        )
        today = gallery_sweep(e, y, lambda n, m: fixed, SIZES, per_person=k, min_searches=SEARCHES, max_draws=1000)
        for a, b in zip(ours, today):
            print(
                f"{model}.k{k}.n{a.people:<4d} FPIR policy: threshold {a.threshold:.4f} FPIR {a.fpir:.4f} "
                f"(target {fpir:g}, {a.n_non_mated} strangers) FNIR {a.fnir:.4f} | today's fixed {fixed}: "
                f"FPIR {b.fpir:.4f} FNIR {b.fnir:.4f}"
            )
        inside = all(0.5 * fpir <= p.fpir <= 1.5 * fpir for p in ours)
        print(f"{model}.k{k}.fpir_within_half_to_one_and_half_target {inside}")


def rules(model: str, e: np.ndarray, y: np.ndarray, fpir: float, people: int = 100, draws: int = 20) -> None:
    """FNIR at a measured FPIR of `fpir` for each score rule, 3 templates per person."""
    ok = ~np.isnan(e).any(axis=1)
    e, y = e[ok].astype(np.float64), y[ok]
    ids, counts = np.unique(y, return_counts=True)
    eligible = ids[counts > 3]
    sim = e @ e.T
    rng = np.random.default_rng(1)
    rows = np.arange(len(y))
    pooled = {r: ([], [], []) for r in SCORE_RULES}  # stranger best, mated own score, mated rank-1
    for _ in range(draws):
        chosen = rng.choice(eligible, people, replace=False)
        gallery = [rows[y == c][:3] for c in chosen]
        enrolled = np.isin(y, chosen)
        mated = enrolled & ~np.isin(rows, np.concatenate(gallery))
        for rule in SCORE_RULES:
            per = np.stack([_rule(sim[:, g], rule) for g in gallery], axis=1)
            pooled[rule][0].append(per[~enrolled].max(axis=1))
            own = per[mated][np.arange(mated.sum()), [list(chosen).index(v) for v in y[mated]]]
            pooled[rule][1].append(own)
            pooled[rule][2].append(per[mated].max(axis=1) <= own)
    for rule, (strangers, own, top) in pooled.items():
        t = threshold_at_fpir(np.concatenate(strangers), fpir)
        found = np.concatenate(top) & (np.concatenate(own) >= t)
        print(
            f"{model}.rule_{rule}.fnir_at_fpir_{fpir:g} {1 - found.mean():.4f}  (3 templates, {people} people, {draws} galleries)"
        )


def _rule(s: np.ndarray, rule: str) -> np.ndarray:
    s = np.sort(s, axis=1)[:, ::-1]
    return s[:, 0] if rule == "best" else s.mean(axis=1) if rule == "mean" else s[:, :2].mean(axis=1)


def scale(
    model: str, held: np.ndarray, labels: np.ndarray, probes: np.ndarray, fpir: float, sizes, seed: int = 0
) -> None:
    """The tail fitted on a small synthetic gallery predicts the FPIR of large ones: predicted vs measured."""
    rng = np.random.default_rng(seed)
    found = ~np.isnan(held).any(axis=1)
    held, labels = held[found].astype(np.float64), labels[found]
    probes = probes[~np.isnan(probes).any(axis=1)].astype(np.float32)
    mean, cov = held.mean(axis=0), np.cov(held, rowvar=False)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(len(mean)))

    def draw(n: int) -> np.ndarray:
        v = (mean + rng.standard_normal((n, len(mean))) @ chol.T).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    i, j = np.triu_indices(len(held), 1)
    real = (held @ held.T)[i, j][labels[i] != labels[j]]
    small = (probes @ draw(200).T).ravel()
    print(
        f"{model}.scale impostor p50/p99/p99.99: real faces {np.percentile(real, 50):.3f}/{np.percentile(real, 99):.3f}/"
        f"{np.percentile(real, 99.99):.3f} (held-out impostor pairs), synthetic vs real faces "
        f"{np.percentile(small, 50):.3f}/{np.percentile(small, 99):.3f}/{np.percentile(small, 99.99):.3f}"
    )
    policy = FpirPolicy(fpir, fit_tail(small, "synthetic"), "fitted on 200 synthetic templates")
    best = np.full(len(probes), -np.inf, np.float32)
    done = 0
    for m in sorted(sizes):
        start = time.perf_counter()
        while done < m:
            n = min(50_000, m - done)
            best = np.maximum(best, (probes @ draw(n).T).max(axis=1))
            done += n
        t = fpir_threshold(policy, m, m)
        measured = float((best >= t.value).mean())
        print(
            f"{model}.scale.{m} templates: threshold {t.value:.4f} ({t.source.split(':')[1].split('(')[0].strip()}), "
            f"predicted FPIR {fpir:g}, measured {measured:.4f} ({len(probes)} probes, {time.perf_counter() - start:.0f} s)"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    ap.add_argument("--models", nargs="+", default=["sface", "dlib-flip+facenet"])
    ap.add_argument("--fpir", type=float, default=0.01)
    ap.add_argument("--scale", nargs="*", type=int, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--probes", type=int, default=2000)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--as-labelled", action="store_true", help="keep celeba_ids' label noise in")
    args = ap.parse_args(argv)
    det = Pipeline(detector="retinaface").detector
    for model in args.models:
        e, y = celeba(Path(args.data), model, det, clean=not args.as_labelled)
        if not args.skip_sweep:
            sweep(model, e, y, args.fpir)
            rules(model, e, y, args.fpir)
        if args.scale:
            everyone, _ = celeba(Path(args.data), model, det, held_out=False)
            scale(model, e, y, everyone[: args.probes], args.fpir, args.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
