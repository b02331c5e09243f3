"""Fine-tuning FaceNet with a Siamese loss on celeba_ids' fitting identities, against the un-tuned `facenet`
on the unseen identities (the protocol of ``benchmarks/accuracy.py --table``) and on AT&T.

    python benchmarks/finetune_facenet.py [--data ../shared/datasets] [--loss triplet] [--freeze -2]
        [--epochs 10] [--lr 1e-4] [--batch 32] [--out out/finetune-facenet]

Training data: the first 8 photos of each of the 100 fitting identities of celeba_ids (`_facecache.fit_split`,
the identities the fused model's weight was fitted on; 10 of them are the validation split that picks the
best epoch and the threshold), their largest retinaface face cropped with FaceNet's contract. Nothing of
the 199 test identities is seen. The run is ``siamface train --encoder facenet`` (the same `train`), on
these chips; the exported model is then scored through the product's own stages (`Pipeline` with
``--model OUT/model.onnx``) exactly like the un-tuned one: every pair of the test identities' first 8
photos, and every pair of AT&T; a missed face scores as a non-match. EER and TAR at FAR 1e-3 / 1e-4.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import _facecache as fc  # noqa: E402
import numpy as np  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.alignment import crop_all  # noqa: E402
from siamface.embedding import create_encoder  # noqa: E402
from siamface.embedding.facenet import FACENET_CHIP  # noqa: E402
from siamface.evaluation.metrics import eer, tar_at_far  # noqa: E402
from siamface.image import load_image  # noqa: E402


def fit_faces(root: Path, det):
    """The fitting identities' chips (FaceNet crop of the largest face) as a training `FaceSet`."""
    from siamface.training.data import FaceSet

    files, labels = fc.celeba_files(root)
    fit = fc.fit_split(labels)
    files = [f for f, k in zip(files, fit) if k]
    dets = fc.detections(root, files, det, "retinaface")
    chips, paths, idents = [], [], []
    for f in files:
        faces = dets[f]
        if faces is None or not len(faces):
            continue
        chips.append(crop_all(load_image(root / f), faces.boxes[:1], faces.landmarks[:1], FACENET_CHIP)[0])
        paths.append(f)
        idents.append(f.split("/")[0])
    names = sorted(set(idents))
    index = {n: i for i, n in enumerate(names)}
    return FaceSet(
        np.stack(chips),
        np.array([index[i] for i in idents]),
        names,
        paths,
        str(root),
        [f for f in files if f not in set(paths)],
    )


def figures(scores: np.ndarray, y: np.ndarray) -> str:
    cells = [f"EER {eer(scores, y)[0]:.2%}"]
    for far in (1e-3, 1e-4):
        t = tar_at_far(scores, y, far)
        cells.append(f"TAR@FAR{far:g} " + (f"{t.tar:.2%}" if t.supported else "n/a"))
    return ", ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    ap.add_argument("--loss", default="triplet")
    ap.add_argument("--freeze", type=int, default=-2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--margin", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/finetune-facenet")
    args = ap.parse_args()
    from siamface.training.trainer import TrainConfig, train

    data = Path(args.data)
    celeba = data / "celeba_ids"
    det = Pipeline(detector="retinaface").detector
    faces = fit_faces(celeba, det)
    print(
        f"# training: {faces.describe()} (fitting identities), {len(faces.skipped)} photos without a face", flush=True
    )
    config = TrainConfig(
        dataset=str(celeba),
        out=args.out,
        loss=args.loss,
        encoder="facenet",
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        margin=args.margin,
        freeze=args.freeze,
        augment="none",
        val=10,
        test=0,
        seed=args.seed,
        progress=False,
        plot=False,
        patience=100,
    )
    r = train(config, faces=faces)
    print(
        f"# fine-tuned: {args.loss}, freeze {args.freeze} ({r['frozen_blocks']} of 25 blocks frozen), "
        f"{r['epochs_run']} epochs, best {r['best_epoch']}, {r['train_seconds']:.0f} s, model {r['model']}",
        flush=True,
    )

    files, labels = fc.celeba_files(celeba)
    test = ~fc.fit_split(labels)
    att = data / "att_faces"
    sets = [
        ("celeba_ids (test ids)", celeba, [f for f, k in zip(files, test) if k], labels[test]),
        ("att_faces", att, *fc.att_files(att)),
    ]
    models = {"facenet": create_encoder("facenet"), "facenet fine-tuned": create_encoder(r["model"])}
    for name, root, set_files, set_labels in sets:
        dets = fc.detections(root, set_files, det, "retinaface")
        i, j, y = fc.all_pairs(set_labels)
        print(
            f"# {name}: {len(set_files)} images, {int(y.sum())} genuine / {int((1 - y).sum())} impostor pairs",
            flush=True,
        )
        for model, encoder in models.items():
            emb = fc.embeddings(model.replace(" ", "-"), root, set_files, dets, Pipeline(detector=det, model=encoder))
            print(f"{name} | {model} | {figures(fc.pair_scores(emb, i, j), y)}", flush=True)


if __name__ == "__main__":
    main()
