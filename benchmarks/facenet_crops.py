"""Which crop and normalisation does FaceNet want? Measured on celeba_ids *training* identities only.

    python benchmarks/facenet_crops.py [--data ../shared/datasets] [--variants all]

The fitting identities (`fit_split`: 100 of the 299, seeded) are the ones every choice of the FaceNet and
fused models is made on; benchmarks/accuracy.py excludes them from its figures. Pairs: every genuine pair
among the first 8 photos of each fitting identity and every impostor pair between them. Detector:
retinaface (the default). Prints, per variant, EER and TAR at FAR 1e-3 (one figure per line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _facecache import N_FIT, all_pairs, celeba_files, detections, embeddings, fit_split, pair_scores  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.alignment import ChipSpec  # noqa: E402
from siamface.embedding.facenet import FaceNetEncoder  # noqa: E402
from siamface.evaluation.metrics import eer, tar_at_far  # noqa: E402

VARIANTS = {
    "box-m-0.05": dict(chip=ChipSpec(size=160, crop="box", margin=-0.05)),
    "box-m0.10-stretch": dict(chip=ChipSpec(size=160, crop="box", margin=0.10, square=False)),
    "box-m0.00-stretch": dict(chip=ChipSpec(size=160, crop="box", margin=0.0, square=False)),
    "box-m0.05-stretch": dict(chip=ChipSpec(size=160, crop="box", margin=0.05, square=False)),
    "box-m0.15-stretch": dict(chip=ChipSpec(size=160, crop="box", margin=0.15, square=False)),
    "box-m0.20-stretch": dict(chip=ChipSpec(size=160, crop="box", margin=0.20, square=False)),
    "box-m0.10-stretch-prewhiten": dict(
        chip=ChipSpec(size=160, crop="box", margin=0.10, square=False), normalisation="prewhiten"
    ),
    "box-m0.00": dict(chip=ChipSpec(size=160, crop="box", margin=0.0)),
    "box-m0.05": dict(chip=ChipSpec(size=160, crop="box", margin=0.05)),
    "box-m0.10": dict(chip=ChipSpec(size=160, crop="box", margin=0.10)),
    "box-m0.15": dict(chip=ChipSpec(size=160, crop="box", margin=0.15)),
    "box-m0.20": dict(chip=ChipSpec(size=160, crop="box", margin=0.20)),
    "box-m0.30": dict(chip=ChipSpec(size=160, crop="box", margin=0.30)),
    "box-m0.10-prewhiten": dict(chip=ChipSpec(size=160, crop="box", margin=0.10), normalisation="prewhiten"),
    "aligned-p0.10": dict(chip=ChipSpec(size=160, padding=0.10)),
    "aligned-p0.20": dict(chip=ChipSpec(size=160, padding=0.20)),
    "aligned-p0.25": dict(chip=ChipSpec(size=160, padding=0.25)),
    "aligned-p0.30": dict(chip=ChipSpec(size=160, padding=0.30)),
    "aligned-p0.40": dict(chip=ChipSpec(size=160, padding=0.40)),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    ap.add_argument("--variants", default="all")
    args = ap.parse_args(argv)
    root = Path(args.data) / "celeba_ids"
    files, labels = celeba_files(root)
    fit = fit_split(labels)
    files_fit = [f for f, k in zip(files, fit) if k]
    base = Pipeline(detector="retinaface")
    dets = detections(root, files, base.detector, "retinaface")
    dets_fit = {f: dets[f] for f in files_fit}
    i, j, y = all_pairs(labels[fit])
    print(f"fit.identities {N_FIT}\nfit.images {len(files_fit)}\nfit.genuine {y.sum()}\nfit.impostor {(1 - y).sum()}")
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    for name in names:
        pipe = Pipeline(detector=base.detector, model=FaceNetEncoder(**VARIANTS[name]))
        emb = embeddings(f"facenet-{name}", root, files_fit, dets_fit, pipe)
        s = pair_scores(emb, i, j)
        print(f"{name}.eer {eer(s, y)[0]:.4f}\n{name}.tar_at_far_0.001 {tar_at_far(s, y, 1e-3).tar:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
