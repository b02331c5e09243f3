"""From-scratch Siamese training on the AT&T faces: each loss, unseen-subject verification, wall time.

    .venv/bin/python benchmarks/train_att.py [--data /work/shared/datasets/att_faces] [--epochs 40] [--seed 0]

Split by identity (seeded): 10 test subjects never seen in training, 4 validation subjects (best epoch and
threshold), the other 26 trained on. Test pairs: every genuine pair of the 10 test subjects + as many
impostor pairs (seeded). Accuracy is at the threshold calibrated on the validation subjects (EER point:
too few impostor pairs there for FAR 1e-3); best accuracy is the test-optimal threshold (optimistic).
Faces are detected (retinaface) and aligned as at run time; the chips are cached, so the time printed is
training alone. dlib-resnet (pretrained on millions of faces) on the same test pairs is the reference.
Prints one figure per line.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from siamface.embedding import create_encoder
from siamface.training.data import load_faces, split_identities, verification_pairs
from siamface.training.trainer import TrainConfig, train, verification_figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/work/shared/datasets/att_faces")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--losses", default="contrastive,bce,triplet")
    args = ap.parse_args()
    faces = load_faces(args.data)
    print(f"att images aligned: {len(faces)} of {len(faces) + len(faces.skipped)} (no face: {len(faces.skipped)})")
    with tempfile.TemporaryDirectory() as tmp:
        for loss in args.losses.split(","):
            cfg = TrainConfig(
                dataset=args.data,
                out=f"{tmp}/{loss}",
                loss=loss,
                epochs=args.epochs,
                val=4,
                test=10,
                seed=args.seed,
                progress=False,
                plot=False,
            )
            t0 = time.monotonic()
            r = train(cfg, faces=faces)
            wall = time.monotonic() - t0
            t = r["test"]
            print(f"{loss} test pairs: {t['genuine']} genuine + {t['impostor']} impostor (10 unseen subjects)")
            print(f"{loss} accuracy at val threshold {r['threshold']:.3f}: {t['accuracy']:.2%}")
            print(f"{loss} EER: {t['eer']:.2%}")
            print(f"{loss} best accuracy (test-optimal threshold): {t['best_accuracy']:.2%}")
            print(
                f"{loss} training time: {r['train_seconds']:.0f} s ({r['epochs_run']} epochs, best {r['best_epoch']}; "
                f"{wall:.0f} s with validation, test and export)"
            )
    split = split_identities(faces.identities, 4, 10, args.seed)
    test = faces.subset(split["test"])
    a, b, same = verification_pairs(test.labels, seed=args.seed + 2)
    emb = create_encoder("dlib-resnet").embed(test.chips)
    ref = verification_figures(np.sum(emb[a] * emb[b], 1), same.astype(int), 0.93)
    print(
        f"dlib-resnet (pretrained) same pairs: accuracy at 0.93 {ref['accuracy']:.2%}, EER {ref['eer']:.2%}, "
        f"best accuracy {ref['best_accuracy']:.2%}"
    )


if __name__ == "__main__":
    main()
