"""The ``siamface train`` command (see `siamface.cli`; torch is imported only when it runs).

siamface train DATASET --loss contrastive|bce|triplet --encoder small|resnet|facenet --out runs/NAME
    [--epochs N --batch N --lr X --margin X --seed N --val N --test N --aligned --freeze N
     --augment SPEC --no-hard-negatives --patience N --resume]
"""

from __future__ import annotations

import argparse
import json
import shlex
import textwrap

from ..errors import ConfigError


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a Siamese face encoder on a folder-per-person dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Align every face of DATASET (one folder per person) with the run-time detector (cached), split "
            "the identities into train / validation / test, train the encoder with a Siamese loss, keep the "
            "best epoch by validation EER, calibrate its threshold on the validation split and export it to "
            "OUT/model.onnx for --model. Prints the test-split figures and the 'siamface evaluate' command "
            "that reproduces them. Needs the train extra (torch). Exit code 0, or 2 on error.",
            88,
        ),
    )
    p.add_argument("dataset", help="folder with one sub-folder of images per person")
    p.add_argument("--out", default=None, metavar="DIR", help="run folder (default: runs/<dataset name>-<loss>)")
    p.add_argument(
        "--loss",
        default="contrastive",
        choices=["contrastive", "bce", "triplet"],
        help="contrastive (Euclidean distance, margin), bce (L1 distance + dense + sigmoid) or "
        "triplet (batch-hard); default contrastive",
    )
    p.add_argument(
        "--encoder",
        default="small",
        choices=["small", "resnet", "facenet"],
        help="small: CNN from scratch; resnet: dlib's pretrained ResNet, fine-tuned; facenet: "
        "FaceNet's pretrained Inception-ResNet-v1, fine-tuned on its own box crops "
        "(default small)",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs (default 40; with --resume, the run's own unless more)"
    )
    p.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--per-identity", type=int, default=4, metavar="K", help="images per identity in a batch (4)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate, at most 1 (default 2e-3 small, 1e-4 resnet and facenet)",
    )
    p.add_argument(
        "--schedule", default="cosine", choices=["cosine", "step", "none"], help="LR schedule (default cosine)"
    )
    p.add_argument(
        "--margin", type=float, default=None, help="margin, at most 2 (default 1.4 contrastive, 0.3 triplet)"
    )
    p.add_argument(
        "--hard-negatives",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pair losses: impostor = the nearest other identity in the batch (default; "
        "--no-hard-negatives: a random one)",
    )
    p.add_argument(
        "--augment",
        default=None,
        metavar="SPEC",
        help="'default', 'none' or KEY=VALUE,... over the defaults (flip=0.5, rotate=10, scale=0.1, "
        "shift=0.05, contrast=0.2, brightness=20, blur=0.2); default: 'default', for facenet "
        "'none' (then its frozen blocks run once per image and are cached)",
    )
    p.add_argument(
        "--freeze",
        type=int,
        default=None,
        metavar="N",
        help="freeze the first N blocks of the encoder (negative: all but the last -N); default 0, "
        "for facenet -2 (only Block8 and the bottleneck train, of 25 blocks)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split, sampling, augmentation and weights")
    p.add_argument(
        "--val",
        type=float,
        default=0.1,
        metavar="N",
        help="validation identities: a count (0, or 2 or more) or a fraction below 1 (default 0.1; one that "
        "comes to one identity takes two)",
    )
    p.add_argument(
        "--test",
        type=float,
        default=0.25,
        metavar="N",
        help="test identities: a count (0, or 2 or more) or a fraction below 1 (default 0.25)",
    )
    p.add_argument("--aligned", action="store_true", help="images are aligned face crops: use them as given")
    p.add_argument(
        "--padding",
        type=float,
        default=0.25,
        help="context around the face in the aligned chip (dlib's 0.25; saved with the model; "
        "facenet keeps its own box crop)",
    )
    p.add_argument("--max-per-identity", type=int, default=None, metavar="N", help="use at most N images each")
    p.add_argument("--input-size", type=int, default=64, help="small encoder: input side in pixels (64)")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3], help="small encoder: 1 grey (default), 3 RGB")
    p.add_argument("--embedding-size", type=int, default=128, help="small encoder: embedding size (128)")
    p.add_argument("--patience", type=int, default=10, help="stop after N epochs without a better val EER (default 10)")
    p.add_argument("--name", default=None, help="model name in the exported file (default: run folder name)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint, on DATASET (the same people), with its settings",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs available)")
    p.add_argument("--detector", default="retinaface", help="face detector for alignment (default retinaface)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from pathlib import Path

    from ..training.trainer import TrainConfig, train

    out = args.out or f"runs/{Path(args.dataset).resolve().name}-{args.loss}"
    if args.resume and not (Path(out) / "last.pt").is_file():
        raise ConfigError(f"--resume: no checkpoint in {out}")
    config = TrainConfig(
        dataset=args.dataset,
        out=out,
        loss=args.loss,
        encoder=args.encoder,
        # resumed without --epochs: to the run's own count (the larger of the two is run), not 40
        epochs=args.epochs if args.epochs is not None else (1 if args.resume else 40),
        batch=args.batch,
        per_identity=args.per_identity,
        lr=args.lr,
        schedule=args.schedule,
        margin=args.margin,
        hard_negatives=args.hard_negatives,
        seed=args.seed,
        augment=args.augment if args.augment is not None else ("none" if args.encoder == "facenet" else "default"),
        freeze=args.freeze if args.freeze is not None else (-2 if args.encoder == "facenet" else 0),
        val=args.val,
        test=args.test,
        aligned=args.aligned,
        padding=args.padding,
        detector=args.detector,
        max_per_identity=args.max_per_identity,
        input_size=args.input_size,
        channels=args.channels,
        embedding_size=args.embedding_size,
        patience=args.patience,
        threads=args.threads,
        name=args.name,
        progress=not args.quiet,
    )
    result = train(config, resume=args.resume)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    t = result["test"]
    print(
        f"run: {result['run']}  ({result['epochs_run']} epochs, best {result['best_epoch']}, "
        f"{result['train_seconds']:.0f} s)"
    )
    print(f"model: {result['model']}  threshold {result['threshold']:.4f} ({result['threshold_source']})")
    if t:
        print(
            f"test split ({result['identities']['test']} unseen identities, {t['genuine']} genuine + "
            f"{t['impostor']} impostor pairs): accuracy {t['accuracy']:.2%} at the threshold, "
            f"EER {t['eer']:.2%}, best accuracy {t['best_accuracy']:.2%}, TAR@FAR1e-3 {t['tar_at_far_1e-3']:.2%}"
        )
        run = Path(result["run"])
        extra = " --detector " + shlex.quote(args.detector) if args.detector != "retinaface" else ""
        print(
            "evaluate the test split with:\n  siamface evaluate --model "
            + shlex.quote(result["model"])
            + " --pairs-same "
            + shlex.quote(str(run / "test_pairs_same.txt"))
            + " --pairs-different "
            + shlex.quote(str(run / "test_pairs_different.txt"))
            + " --root "
            + shlex.quote(args.dataset)
            + extra
        )
    return 0
