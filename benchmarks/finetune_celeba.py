"""Fine-tuning dlib's pretrained ResNet with a Siamese loss on celeba_ids' training identities, against
the un-tuned encoder on the unseen identities, at the same FAR.

    .venv/bin/python benchmarks/finetune_celeba.py [--data /work/shared/datasets/celeba_ids] [--epochs 3]
        [--loss triplet] [--freeze -2] [--per-identity-max 10] [--lr 1e-4]

Split by identity (seeded): 30 % of the identities for test, 10 % validation, the rest trained on, at most
--per-identity-max photos each (CPU time). Faces detected (retinaface) and aligned as at run time (cached).
Only the last blocks train (--freeze -2: the last residual unit and the fc layer). Test pairs: every
genuine pair of the test identities + as many impostor pairs (seeded); both encoders are scored on the same
pairs: FRR at FAR 1e-3 (threshold chosen on those impostors, the same FAR for both) and EER. One figure a line.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from siamface.training.data import load_faces, split_identities, verification_pairs
from siamface.training.trainer import TrainConfig, train, verification_figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/work/shared/datasets/celeba_ids")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--loss", default="triplet")
    ap.add_argument("--freeze", type=int, default=-2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--per-identity-max", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    faces = load_faces(args.data, max_per_identity=args.per_identity_max, min_per_identity=2)
    print(
        f"celeba images aligned: {len(faces)} of {len(faces) + len(faces.skipped)}, {len(faces.identities)} identities"
    )
    split = split_identities(faces.identities, 0.1, 0.3, args.seed)
    test = faces.subset(split["test"])
    a, b, same = verification_pairs(test.labels, seed=args.seed + 2)
    labels = same.astype(int)

    from siamface.embedding import create_encoder

    emb = create_encoder("dlib-resnet").embed(test.chips)
    base = verification_figures(np.sum(emb[a] * emb[b], 1), labels)
    print(
        f"test: {len(split['test'])} unseen identities, {base['genuine']} genuine + {base['impostor']} impostor pairs"
    )
    print(f"un-tuned dlib-resnet FRR at FAR 1e-3: {1 - base['tar_at_far_1e-3']:.2%}")
    print(f"un-tuned dlib-resnet EER: {base['eer']:.2%}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            dataset=args.data,
            out=f"{tmp}/ft",
            loss=args.loss,
            encoder="resnet",
            epochs=args.epochs,
            freeze=args.freeze,
            lr=args.lr,
            val=0.1,
            test=0.3,
            seed=args.seed,
            batch=32,
            max_per_identity=args.per_identity_max,
            progress=False,
            plot=False,
        )
        r = train(cfg, faces=faces)
    t = r["test"]
    print(
        f"fine-tuned ({args.loss}, freeze {args.freeze}, {len(split['train'])} identities, {r['epochs_run']} epochs, "
        f"best {r['best_epoch']}) FRR at FAR 1e-3: {1 - t['tar_at_far_1e-3']:.2%}"
    )
    print(f"fine-tuned EER: {t['eer']:.2%}")
    print(f"fine-tuning time: {r['train_seconds']:.0f} s")


if __name__ == "__main__":
    main()
