"""The ``siamface evaluate`` and ``siamface calibrate`` commands (see `siamface.cli`).

    siamface evaluate --folder DIR [--impostors N | --impostor-ratio R] [--seed S]
    siamface evaluate --lfw-pairs pairs.txt --root DIR
    siamface evaluate --pairs-same F --pairs-different F --root DIR
    siamface evaluate --identify DIR [--gallery-per-id N] [--unknown-fraction F]
        [--out DIR] [--cache PATH | --no-cache] [--quiet] [--detector D] [--threshold T] [--json]

    siamface calibrate (same data options) --target far=0.001|fpir=0.01|eer|best-accuracy [--write FILE] [--force]

Both exit 0 on success and 2 on error (one line on stderr). Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from .._progress import Progress
from ..errors import ConfigError
from ._common import add_cache_options, add_chain_options, pipeline_from_args

_DATA_HELP = """data (one of):
  --folder DIR                         folder per person: every genuine pair + seeded impostor pairs
  --lfw-pairs FILE --root DIR          LFW pairs.txt, images DIR/name/name_0001.jpg; k-fold accuracy
  --pairs-same F --pairs-different F --root DIR
                                       two-column pair lists relative to DIR (celeba_ids)
  --identify DIR                       open-set 1:N from a folder per person
"""
_LIVENESS_HELP = """  --liveness DIR                       DIR/live/ + DIR/<attack type>/, images or videos (one
                                       presentation each): APCER, BPCER, ACER of the passive check
                                       and of every cue alone (CNN pair, colour, frame)
"""


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure accuracy, EER and TAR@FAR on a dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Embed every image of a protocol once (cached), score the pairs and report accuracy, "
            "precision, recall and F1 at the threshold in force, ROC AUC, EER, TAR at FAR 1e-1..1e-4 "
            "and the best-accuracy threshold. An image where no face is found makes its pairs "
            "non-matches (counted and reported). Writes report.json, scores.csv, roc.png and "
            "scores.png (the plots with the plot extra: pip install 'siamface[plot]') into --out. "
            "Exit code 0, or 2 on error."
        ),
        epilog=_DATA_HELP + _LIVENESS_HELP,
    )
    _data_options(p, liveness=True)
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/evaluate-<dataset name>)")
    _run_options(p)
    add_chain_options(p, threshold=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "calibrate",
        help="choose the threshold on a dataset and save it for verify",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_wrap(
            "Score a protocol's pairs, pick the threshold meeting --target and save it as the "
            "model's calibration (the user calibration file unless --write FILE), with the FAR and "
            "FRR it achieves and the data it was measured on; 'siamface verify' then uses it. A FAR "
            "target finer than 1 / (number of impostor pairs) is refused unless --force. "
            "--target fpir=RATE calibrates 1:N instead: the data's impostor score tail is saved with the "
            "target, and identify/watch/serve set the 1:N threshold from it for the gallery's size "
            "(--folder: every impostor pair is used unless --impostors says otherwise). "
            "Exit code 0, or 2 on error."
        ),
        epilog=_DATA_HELP,
    )
    _data_options(p)
    p.add_argument(
        "--target",
        required=True,
        metavar="far=RATE|fpir=RATE|eer|best-accuracy",
        help="criterion: the lowest threshold with FAR <= RATE on this data (e.g. far=0.001), 1:N naming at "
        "most RATE of strangers at any gallery size (e.g. fpir=0.01), the equal-error-rate threshold, "
        "or the threshold of best accuracy",
    )
    p.add_argument("--write", metavar="FILE", help="calibration file to write (default: the user's, read by verify)")
    p.add_argument(
        "--force", action="store_true", help="save a FAR target even when the data has fewer than 1/FAR impostor pairs"
    )
    p.add_argument("--out", metavar="DIR", help="also write the report and plots into DIR")
    _run_options(p)
    add_chain_options(p)
    p.set_defaults(func=cmd_calibrate)


def _wrap(text: str) -> str:
    return textwrap.fill(text, 88)


def _data_options(p: argparse.ArgumentParser, liveness: bool = False) -> None:
    g = p.add_argument_group("data")
    x = g.add_mutually_exclusive_group(required=True)
    if liveness:
        x.add_argument(
            "--liveness",
            metavar="DIR",
            help="presentation-attack detection: DIR/live/ and one folder per attack type, images "
            "or videos (a video is one presentation: the median over 30 of its frames); APCER, "
            "BPCER, ACER of the passive check and of every cue alone (CNN pair, colour, frame), "
            "per presentation and per frame (--threshold: the passive check's threshold)",
        )
    x.add_argument("--folder", metavar="DIR", help="dataset with one sub-folder of images per person")
    x.add_argument("--lfw-pairs", metavar="FILE", help="LFW pairs file (header 'folds pairs-per-class'); needs --root")
    x.add_argument(
        "--pairs-same", metavar="FILE", help="same-person pair list 'a b' per line; needs --pairs-different and --root"
    )
    x.add_argument("--identify", metavar="DIR", help="open-set 1:N identification on a folder-per-person dataset")
    g.add_argument("--pairs-different", metavar="FILE", help="different-person pair list (with --pairs-same)")
    g.add_argument("--root", metavar="DIR", help="image root for --lfw-pairs and the pair lists")
    g.add_argument(
        "--impostors",
        type=int,
        metavar="N",
        help="--folder: number of impostor pairs (default: --impostor-ratio x genuine pairs)",
    )
    g.add_argument(
        "--impostor-ratio",
        type=float,
        default=1.0,
        metavar="R",
        help="--folder: impostor pairs per genuine pair (default 1.0)",
    )
    g.add_argument(
        "--face",
        choices=("largest", "centre"),
        default=None,
        help="the face used when an image has several: the one nearest the image centre (default "
        "for --lfw-pairs and the pair lists, whose images are centred on the subject) or the "
        "largest (default for --folder; always for --identify)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the impostor sample / open-set split (default 0)")
    g.add_argument(
        "--gallery-per-id",
        type=int,
        default=1,
        metavar="N",
        help="--identify: images enrolled per known identity (default 1)",
    )
    g.add_argument(
        "--unknown-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="--identify: share of identities kept out of the gallery (default 0.2)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    add_cache_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------------------------------- #
def _dataset_name(args) -> str:
    if args.folder:
        return Path(args.folder).resolve().name
    if args.identify:
        return Path(args.identify).resolve().name + "-identify"
    if args.root:
        return Path(args.root).resolve().name
    return "pairs"


def _run(args, pipeline=None):
    """Build the pipeline (unless given) and cache from the arguments, run the chosen protocol, return the
    report."""
    from ..evaluation import runner
    from ..evaluation.cache import EmbeddingCache

    if (args.lfw_pairs or args.pairs_same) and not args.root:
        raise ConfigError(f"{'--lfw-pairs' if args.lfw_pairs else '--pairs-same'} needs --root DIR (the image folder)")
    if args.pairs_same and not args.pairs_different:
        raise ConfigError("--pairs-same needs --pairs-different (a list of different-person pairs)")
    if args.pairs_different and not args.pairs_same:
        raise ConfigError("--pairs-different needs --pairs-same")
    if args.impostors is not None and args.impostors < 0:
        raise ConfigError("--impostors must be >= 0")
    if args.identify and args.face == "centre":
        raise ConfigError("--face centre is not for --identify, which uses the largest face")
    pipeline = pipeline or pipeline_from_args(args)
    cache = None if args.no_cache else EmbeddingCache(args.cache)
    common = {"cache": cache, "progress": not args.quiet}
    pair_face = {"face": args.face or "centre"}
    try:
        if args.folder:
            return runner.evaluate_folder(
                pipeline,
                args.folder,
                n_impostors=args.impostors,
                impostor_ratio=args.impostor_ratio,
                seed=args.seed,
                face=args.face or "largest",
                **common,
            )
        if args.lfw_pairs:
            return runner.evaluate_lfw(pipeline, args.lfw_pairs, args.root, **common, **pair_face)
        if args.pairs_same:
            return runner.evaluate_pair_lists(
                pipeline, args.pairs_same, args.pairs_different, args.root, **common, **pair_face
            )
        return runner.evaluate_identification(
            pipeline,
            args.identify,
            gallery_per_id=args.gallery_per_id,
            unknown_fraction=args.unknown_fraction,
            seed=args.seed,
            **common,
        )
    finally:
        if cache is not None:
            cache.close()


def _write(report, out_dir: str, echo) -> None:
    from ..evaluation.runner import write_outputs

    written, skipped = write_outputs(report, out_dir)
    echo(f"wrote {', '.join(str(p) for p in written)}")
    if skipped:
        echo(skipped)


def cmd_evaluate(args) -> int:
    from ..evaluation.runner import format_report

    if getattr(args, "liveness", None):
        return _evaluate_liveness(args)
    report = _run(args)
    out = args.out or str(Path("out") / f"evaluate-{_dataset_name(args)}")
    if args.json:
        _write(report, out, lambda m: print(m, file=sys.stderr))
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
        _write(report, out, print)
    return 0


def _evaluate_liveness(args) -> int:
    from ..liveness.evaluate import evaluate_liveness, format_evaluation

    root = Path(args.liveness)

    bars: list[Progress] = []  # the one progress line, made when the number of files is known

    def progress(done, total):
        if not bars:
            bars.append(Progress(total, "  scoring", enabled=not args.quiet))
        bars[0].to(done, total)

    out = Path(args.out or f"out/evaluate-liveness-{root.resolve().name}")
    try:
        result = evaluate_liveness(root, pipeline_from_args(args), out, threshold=args.threshold, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps(result.payload, indent=2))
    else:
        print(format_evaluation(result))
    return 0


def cmd_calibrate(args) -> int:
    from dataclasses import asdict

    from ..evaluation.runner import calibrate, parse_target
    from ..thresholds import user_calibration_file

    criterion, _ = parse_target(args.target)  # a bad --target fails before any image is embedded
    if criterion.startswith("fpir=") and args.folder and args.impostors is None:
        args.impostor_ratio = 1e12  # a tail is measured on every impostor pair of the folder
    pipeline = pipeline_from_args(args)
    report = _run(args, pipeline)
    cal, path = calibrate(report, args.target, args.write, force=args.force, info=pipeline.encoder.info)
    user_file = user_calibration_file()
    if args.out:
        _write(report, args.out, (lambda m: print(m, file=sys.stderr)) if args.json else print)
    if args.json:
        print(
            json.dumps(
                {
                    "calibration": asdict(cal),
                    "file": str(path),
                    "read_by_verify": path.resolve() == user_file.resolve(),
                },
                indent=2,
            )
        )
        return 0
    kind = "comparisons" if report.protocol == "identify" else "pairs"
    print(f"calibrated {cal.model} (detector {cal.detector}) for {cal.criterion} on {cal.dataset}")
    print(
        f"  threshold {cal.threshold:.4f}: FAR {cal.far:.4%}, FRR {cal.frr:.4%} on {cal.n_genuine:,} genuine / "
        f"{cal.n_impostor:,} impostor {kind} ({report.n_failures} of {report.n_images:,} images with no "
        f"usable face; their {kind} count as non-matches)"
    )
    print(
        f"  for reference: EER {report.eer:.2%} at {report.eer_threshold:.4f}, best accuracy "
        f"{report.best_accuracy.accuracy:.2%} at {report.best_accuracy.threshold:.4f}, "
        f"ROC AUC {report.auc:.4f}"
    )
    if cal.criterion.startswith("far=") and args.force:
        n_imp = cal.n_impostor
        far = float(cal.criterion[4:])
        if n_imp * far < 1:
            print(
                f"  warning: forced; {n_imp:,} impostor {kind} cannot measure a FAR of {far:g} "
                f"(needs >= {round(1 / far):,})"
            )
    if cal.fpir is not None:
        tail = cal.tail or {}
        measured = tail.get("quantiles", [[None]])[-1][0]
        print(
            f"  1:N set by FPIR {cal.fpir:g}: impostor tail of {tail.get('n', 0):,} comparisons, measured down to "
            f"p={measured:g} per comparison, a fitted generalised Pareto model below (xi "
            f"{tail.get('gpd', {}).get('xi', float('nan')):+.3f})"
        )
    print(f"  wrote {path}")
    if path.resolve() == user_file.resolve():
        print(f"  'siamface verify --model {cal.model}' now uses this threshold (unless --threshold is given)")
    elif path.name.endswith(".thresholds.json"):  # the file that travels with a gallery
        gallery = path.with_name(path.name[: -len(".thresholds.json")])
        print(
            f"  note: the gallery {gallery} uses it (identify, verify --claim, watch, authenticate, serve, "
            f"a library Gallery); verify of two images reads {user_file}"
        )
    else:
        print(
            f"  note: verify reads {user_file}; use this file with Pipeline(calibration_file=...), or name it "
            "<gallery>.thresholds.json beside a gallery"
        )
    return 0
