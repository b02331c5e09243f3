"""Accuracy of the chain on the shared datasets: verification and open-set identification, per detector.

    python benchmarks/accuracy.py [--data ../shared/datasets] [--detectors retinaface,hog] [--model dlib-flip+facenet]
                                  [--cache PATH | --no-cache] [--out out/bench-accuracy] [--quiet]
    python benchmarks/accuracy.py --table [--data ../shared/datasets]

``--table``: the encoders side by side, one table (see `model_table`): dlib-resnet and facenet, each with and
without flip averaging, sface, the fused dlib+facenet with flip on neither part, on dlib's only or on both,
and the SFace fusions (sface+dlib-flip, sface+dlib, sface+facenet, sface+dlib-flip+facenet), on
celeba_ids (folder protocol on the identities NOT used for fitting the fused model), AT&T, yale_faces and
deepface_pairs, detector retinaface.

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
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.decision import resolve  # noqa: E402
from siamface.evaluation import runner  # noqa: E402
from siamface.evaluation.cache import EmbeddingCache, default_cache_path  # noqa: E402
from siamface.pipeline import DEFAULT_MODEL  # noqa: E402


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


def _sets(data: Path):
    """(name, root, files, labels or None, explicit pairs or None, face choice) of each table data set."""
    from _facecache import att_files, celeba_files, fit_split, yale_files

    files, labels = celeba_files(data / "celeba_ids")
    test = ~fit_split(labels)
    yield (
        "celeba_ids (test ids)",
        data / "celeba_ids",
        [f for f, k in zip(files, test) if k],
        labels[test],
        None,
        "largest",
    )
    yield "att_faces", data / "att_faces", *att_files(data / "att_faces"), None, "largest"
    yield "yale_faces", data / "yale_faces", *yale_files(data / "yale_faces"), None, "largest"
    deep = data / "deepface_pairs" / "dataset"
    rows = [line.split(",") for line in (deep / "master.csv").read_text().split("\n")[1:] if line.strip()]
    pairs = [(a, b, int(d.strip() == "Yes")) for a, b, d in rows]
    files = sorted({a for a, _, _ in pairs} | {b for _, b, _ in pairs})
    yield "deepface_pairs", deep, files, None, pairs, "centre"


def model_table(data: Path, models: str | None = None, detector: str = "retinaface") -> None:
    """One table: rows = models, columns = data sets x (images with no face, EER, TAR@FAR 1e-3, 1e-4).

    Pairs: celeba_ids, AT&T and yale_faces: every genuine and every impostor pair of the set (celeba_ids: the
    first 8 photos of each of the 199 test identities); deepface_pairs: its 300 labelled pairs (too few
    impostors for FAR 1e-3: n/a), the face nearest each image's centre. A pair with a missed face scores as
    a non-match. A fused model's scores are ``sum_k w_k s_k`` from its parts' cached embeddings, which is
    exactly the dot product of its embeddings; checked here against the real fused encoder on the first
    images of each set. `models`: a comma-separated subset of the rows (default: all); `detector`: another
    detector than retinaface.
    """
    import _facecache as fc

    from siamface.embedding.fused import (
        DLIB_FACENET,
        DLIB_FACENET_FLIP,
        DLIB_FLIP_FACENET,
        SFACE_DLIB,
        SFACE_DLIB_FLIP,
        SFACE_DLIB_FLIP_FACENET,
        SFACE_FACENET,
    )
    from siamface.evaluation.metrics import eer, tar_at_far

    fusions = (
        DLIB_FACENET,
        DLIB_FLIP_FACENET,
        DLIB_FACENET_FLIP,
        SFACE_DLIB_FLIP,
        SFACE_DLIB,
        SFACE_FACENET,
        SFACE_DLIB_FLIP_FACENET,
    )
    singles = {
        "dlib-resnet": fc.part_key("dlib-resnet", {}),
        "dlib-resnet +flip": fc.part_key("dlib-resnet", {"flip": True}),
        "facenet": fc.part_key("facenet", {}),
        "facenet +flip": fc.part_key("facenet", {"flip": True}),
        "sface": fc.part_key("sface", {}),
    }
    wanted = None if not models else {m.strip() for m in models.split(",") if m.strip()}
    fusions = tuple(f for f in fusions if wanted is None or f.name in wanted)
    singles = {k: v for k, v in singles.items() if wanted is None or k in wanted}
    needed = set(singles.values()) | {fc.part_key(p, o) for f in fusions for p, o in f.parts}
    det = Pipeline(detector=detector).detector
    rows: dict[str, list[str]] = {}
    header = ["model"]
    for name, root, files, labels, pairs, face in _sets(data):
        dets = fc.detections(root, files, det, detector)
        emb = {}
        for key in sorted(needed):
            pipe = Pipeline(detector=det, model=fc.part_encoder(key))
            tag = fc.part_tag(key) + ("" if detector == "retinaface" else f"-{detector}")
            emb[key] = fc.embeddings(tag, root, files, dets, pipe, face)
        check = [f for f in files[:40] if dets[f] is not None and len(dets[f])][:8]
        idx = [files.index(f) for f in check]
        for fusion in fusions:
            real = fc.embeddings(
                f"{fusion.name}-check" + ("" if detector == "retinaface" else f"-{detector}"),
                root,
                check,
                {f: dets[f] for f in check},
                Pipeline(detector=det, model=fusion.name),
                face,
            )
            composed = np.concatenate(
                [np.sqrt(w) * emb[fc.part_key(p, o)][idx] for (p, o), w in zip(fusion.parts, fusion.part_weights())],
                axis=1,
            )
            assert np.abs(real - composed).max() < 1e-4, f"{fusion.name} differs from its parts"
        i, j, y = fc.set_pairs(files, labels, pairs)
        s = {key: fc.pair_scores(e, i, j) for key, e in emb.items()}
        scored = {
            **{row: s[key] for row, key in singles.items()},
            **{
                f"{f.name} (w={f.weight_label()})": sum(
                    w * s[fc.part_key(p, o)] for (p, o), w in zip(f.parts, f.part_weights())
                )
                for f in fusions
            },
        }
        no_face = int(np.isnan(next(iter(emb.values()))[:, 0]).sum())
        header += [f"{name}: no face", "EER", "TAR@1e-3", "TAR@1e-4"]
        print(
            f"# {name}: {len(files)} images, {int(y.sum())} genuine / {int((1 - y).sum())} impostor pairs", flush=True
        )
        for model, sc in scored.items():
            cells = [f"{no_face}/{len(files)}", f"{eer(sc, y)[0]:.2%}"]
            for far in (1e-3, 1e-4):
                t = tar_at_far(sc, y, far)
                cells.append(f"{t.tar:.2%}" if t.supported else "n/a")
            rows.setdefault(model, []).extend(cells)
            print(f"{name}.{model.split(' ')[0]}.eer {eer(sc, y)[0]:.4f}", flush=True)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model, cells in rows.items():
        print(f"| {model} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", action="store_true", help="the encoders side by side (see the module doc)")
    ap.add_argument("--table-models", default=None, help="with --table: only these rows (comma-separated)")
    ap.add_argument("--table-detector", default="retinaface", help="with --table: the detector (default: %(default)s)")
    ap.add_argument(
        "--data",
        default=str(HERE.parent.parent / "shared" / "datasets"),
        help="folder holding att_faces/ and celeba_ids/ (default: ../shared/datasets)",
    )
    ap.add_argument("--detectors", default="retinaface,hog")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the encoder (default: %(default)s, siamface's default)")
    ap.add_argument("--protocols", default="att,celeba,celeba1n")
    ap.add_argument("--att-impostors", type=int, default=10_000)
    c = ap.add_mutually_exclusive_group()
    c.add_argument("--cache", default=None, help=f"embedding cache (default {default_cache_path()})")
    c.add_argument("--no-cache", action="store_true")
    ap.add_argument("--out", default=None, help="also write report.json + plots per run into OUT/<protocol>-<detector>")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    data = Path(args.data)
    if args.table:
        model_table(data, args.table_models, args.table_detector)
        return 0
    att, celeba = data / "att_faces", data / "celeba_ids"
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    cache = None if args.no_cache else EmbeddingCache(args.cache)
    t_all = time.perf_counter()
    try:
        for det in [d.strip() for d in args.detectors.split(",") if d.strip()]:
            pipe = Pipeline(detector=det, model=args.model)
            defaults = resolve(pipe.encoder.info)  # the model's defaults, not the user's calibration
            thr = defaults.verify.value
            common = {"cache": cache, "progress": not args.quiet, "threshold": thr}
            for proto in protocols:
                if proto == "att":
                    r = runner.evaluate_folder(pipe, att, n_impostors=args.att_impostors, seed=0, **common)
                elif proto == "celeba":
                    r = runner.evaluate_pair_lists(
                        pipe, celeba / "pairs_same.txt", celeba / "pairs_different.txt", celeba, **common
                    )
                elif proto == "celeba1n":  # 1:N: the model's 1:N default
                    one_to_n = {**common, "threshold": defaults.identify.value}
                    r = runner.evaluate_identification(
                        pipe, celeba, gallery_per_id=1, unknown_fraction=0.2, seed=0, **one_to_n
                    )
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
