"""Accuracy of the chain on the shared datasets: verification and open-set identification, per detector.

    python benchmarks/accuracy.py [--data ../shared/datasets] [--detectors retinaface,hog] [--model dlib-resnet]
                                  [--cache PATH | --no-cache] [--out out/bench-accuracy] [--quiet]

Protocols (every figure at the model's built-in threshold — its 1:N one for ``celeba1n`` — never the user's
calibration file):

* ``att``       att_faces, folder per person: all 1,800 genuine pairs + ``--att-impostors`` sampled impostors
                (default 10,000, enough for FAR 1e-4), seed 0;
* ``celeba``    celeba_ids/pairs_same.txt + pairs_different.txt (1,000 + 1,000 pairs, 1,723 images);
* ``celeba1n``  celeba_ids open-set 1:N: 20% of the 299 identities unknown, 1 enrolled image per known one,
                every other image a probe; rank-1/rank-5, FPIR/FNIR at the threshold.

An image without a detected face makes its pairs non-matches (counted in ``failures``). Embeddings go
through the evaluation cache, so a second run only scores. Prints one figure per line
(``att.retinaface.eer 0.0123``); rates are fractions. ``--out`` also gets each run's report.json and plots.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from siamface import Pipeline  # noqa: E402
from siamface.evaluation import runner  # noqa: E402
from siamface.evaluation.cache import EmbeddingCache, default_cache_path  # noqa: E402


def figure(name: str, value) -> None:
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    else:
        text = str(value)
    print(f"{name} {text}", flush=True)


def verification_figures(prefix: str, r: runner.EvaluationReport) -> None:
    c = r.at_threshold
    figure(f"{prefix}.images", r.n_images)
    figure(f"{prefix}.failures", r.n_failures)
    figure(f"{prefix}.genuine", r.n_genuine)
    figure(f"{prefix}.impostor", r.n_impostor)
    figure(f"{prefix}.failed_pairs", r.n_failed_pairs)
    figure(f"{prefix}.threshold", r.threshold)
    figure(f"{prefix}.accuracy", c.accuracy)
    figure(f"{prefix}.precision", c.precision)
    figure(f"{prefix}.recall", c.recall)
    figure(f"{prefix}.f1", c.f1)
    figure(f"{prefix}.far", c.far)
    figure(f"{prefix}.frr", c.frr)
    figure(f"{prefix}.auc", r.auc)
    figure(f"{prefix}.eer", r.eer)
    figure(f"{prefix}.eer_threshold", r.eer_threshold)
    figure(f"{prefix}.best_accuracy", r.best_accuracy.accuracy)
    figure(f"{prefix}.best_accuracy_threshold", r.best_accuracy.threshold)
    for t in r.tar_at_far:
        key = f"{prefix}.tar_at_far_{t.far_target:g}"
        if t.supported:
            figure(key, t.tar)
            figure(f"{key}.threshold", t.threshold)
        else:
            print(f"{key} n/a  # needs >= {math.ceil(1 / t.far_target - 1e-9):,} impostors, has {t.n_impostors:,}")
    figure(f"{prefix}.seconds", r.seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"),
                    help="folder holding att_faces/ and celeba_ids/ (default: ../shared/datasets)")
    ap.add_argument("--detectors", default="retinaface,hog")
    ap.add_argument("--model", default="dlib-resnet")
    ap.add_argument("--protocols", default="att,celeba,celeba1n")
    ap.add_argument("--att-impostors", type=int, default=10_000)
    c = ap.add_mutually_exclusive_group()
    c.add_argument("--cache", default=None, help=f"embedding cache (default {default_cache_path()})")
    c.add_argument("--no-cache", action="store_true")
    ap.add_argument("--out", default=None, help="also write report.json + plots per run into OUT/<protocol>-<detector>")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    data = Path(args.data)
    att, celeba = data / "att_faces", data / "celeba_ids"
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    cache = None if args.no_cache else EmbeddingCache(args.cache)
    t_all = time.perf_counter()
    try:
        for det in [d.strip() for d in args.detectors.split(",") if d.strip()]:
            pipe = Pipeline(detector=det, model=args.model)
            thr = pipe.encoder.info.threshold  # the model default, not the user's calibration
            common = {"cache": cache, "progress": not args.quiet, "threshold": thr}
            for proto in protocols:
                if proto == "att":
                    r = runner.evaluate_folder(pipe, att, n_impostors=args.att_impostors, seed=0, **common)
                elif proto == "celeba":
                    r = runner.evaluate_pair_lists(pipe, celeba / "pairs_same.txt", celeba / "pairs_different.txt",
                                                   celeba, **common)
                elif proto == "celeba1n":                  # 1:N: the model's 1:N default
                    info = pipe.encoder.info
                    one_to_n = {**common, "threshold": info.identify_threshold or info.threshold}
                    r = runner.evaluate_identification(pipe, celeba, gallery_per_id=1, unknown_fraction=0.2,
                                                       seed=0, **one_to_n)
                else:
                    ap.error(f"unknown protocol {proto!r} (att, celeba, celeba1n)")
                prefix = f"{proto}.{det}"
                verification_figures(prefix, r)
                if r.identification is not None:
                    i = r.identification
                    figure(f"{prefix}.gallery_ids", i.n_gallery_ids)
                    figure(f"{prefix}.probes_mated", i.n_mated)
                    figure(f"{prefix}.probes_non_mated", i.n_non_mated)
                    figure(f"{prefix}.probe_failures", i.n_probe_failures)
                    figure(f"{prefix}.gallery_failures", i.n_gallery_failures)
                    figure(f"{prefix}.rank1", i.rank1.rate)
                    figure(f"{prefix}.rank5", i.rank5.rate)
                    figure(f"{prefix}.fpir", i.open_set.fpir)
                    figure(f"{prefix}.fnir", i.open_set.fnir)
                if args.out:
                    runner.write_outputs(r, Path(args.out) / f"{proto}-{det}")
    finally:
        if cache is not None:
            cache.close()
    figure("total.seconds", time.perf_counter() - t_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
