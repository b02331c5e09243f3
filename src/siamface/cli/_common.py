"""What several commands share: the chain options, the gallery option, building the chain from them
(through `siamface.factory`) and printing JSON. Nothing heavy is imported until a command runs."""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2


def add_chain_options(
    p: argparse.ArgumentParser, threshold: bool = False, gallery: bool = False, json_flag: bool = True
) -> None:
    """--detector, --model, --min-face, --upsample, --no-keypoint-refinement, --device (and --threshold), --json:
    the options of the chain.
    `gallery`: the command opens an existing gallery, whose model is then the default; `json_flag`: the
    command prints something --json can change (not `serve`, which prints a start line and a log)."""
    from ..detection import detector_names
    from ..embedding import model_names
    from ..pipeline import DEFAULT_DETECTOR, DEFAULT_MODEL

    p.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=detector_names(),
        help=f"face detector (default: {DEFAULT_DETECTOR})",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME|FILE.onnx",
        help=f"face encoder: {', '.join(model_names())}, or a model exported by 'siamface train' "
        f"(path to its .onnx file) (default: {DEFAULT_MODEL}"
        + ("; on an existing gallery, the model it is bound to)" if gallery else ")"),
    )
    p.add_argument(
        "--min-face",
        type=int,
        default=20,
        metavar="PX",
        help="ignore faces whose box is smaller than PX pixels (default: 20)",
    )
    p.add_argument(
        "--upsample",
        type=int,
        default=None,
        metavar="N",
        help="upsample the image N times (x2 each) to find small faces (default: detector's own)",
    )
    p.add_argument(
        "--no-keypoint-refinement",
        dest="refine_keypoints",
        action="store_false",
        help="align faces under 112 px on retinaface's first keypoints, as before, instead of finding them "
        "again with a second pass on the face (SFace and its fusions; other models never use it)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="where the networks run: cpu, cuda (a GPU through onnxruntime-gpu, pip install 'siamface[gpu]'; "
        "exit 2 when none is usable) or auto (cuda when usable, else cpu) (default: $SIAMFACE_DEVICE, else cpu)",
    )
    if threshold:
        p.add_argument(
            "--threshold",
            type=float,
            default=None,
            help="cosine-similarity threshold: same person when similarity >= it (default: the model's "
            "entry in "
            + ("the calibration file beside the gallery (<gallery>.thresholds.json), else in " if gallery else "")
            + "the user's calibration file, written by 'siamface calibrate'; else the model's default, "
            "see 'siamface models'). Each must lie in the model's plausible range, from the median "
            "similarity of its strangers' pairs to 1, else exit 2",
        )
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_camera_options(p: argparse.ArgumentParser) -> None:
    """--camera and --liveness-model: what the passive liveness check is (authenticate, serve)."""
    p.add_argument(
        "--camera",
        choices=("colour", "grey"),
        default="colour",
        help="the camera's kind, for the passive check: colour (default; a face without the colour of skin "
        "is not live) or grey (an IR or monochrome camera: frames read as grey, with the grey thresholds)",
    )
    p.add_argument(
        "--liveness-model",
        metavar="FILE",
        default=None,
        help="a passive-check combiner file you trained on data you may use (python -m "
        "siamface.liveness.train --combine, or tools/finetune_minifasnet.py) instead of the default "
        "(the pretrained anti-spoofing CNN pair and the colour cue)",
    )


def add_margin_option(p: argparse.ArgumentParser) -> None:
    """--margin: the 1:N ambiguity margin (identify and watch decide alike, see siamface.decision)."""
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        metavar="M",
        help="ambiguous when the second person is within M similarity of the best (default: 0.01; 0 turns it off)",
    )


def add_fpir_option(p: argparse.ArgumentParser) -> None:
    """--fpir: the share of strangers 1:N may name (identify and watch alike, see siamface.decision)."""
    p.add_argument(
        "--fpir",
        type=float,
        default=None,
        metavar="RATE",
        help="1:N threshold set so that at most this share of strangers is named as someone, for the "
        "gallery's current size (default: the calibration's target, else 0.01; not with --threshold, "
        "which fixes the 1:N threshold)",
    )


def add_lockout_options(p: argparse.ArgumentParser, meanwhile: str) -> None:
    """--lockout-failures, --lockout-window, --lockout-seconds (serve, authenticate): failed verifications of
    one person, counted from the gallery's audit, that lock it; `meanwhile`: what a claim gets while locked."""
    p.add_argument(
        "--lockout-failures",
        type=int,
        default=5,
        metavar="N",
        help="failed verifications of one person that lock it (default: 5)",
    )
    p.add_argument(
        "--lockout-window", type=float, default=300.0, metavar="S", help="... within S seconds (default: 300)"
    )
    p.add_argument(
        "--lockout-seconds",
        type=float,
        default=300.0,
        metavar="S",
        help=f"how long the lock lasts (default: 300; meanwhile {meanwhile}; with the window, at most a day: the "
        "audit keeps a day at least)",
    )


def add_cache_options(p: argparse.ArgumentParser) -> None:
    """--cache PATH | --no-cache: the embedding cache (`siamface.evaluation.cache`)."""
    c = p.add_mutually_exclusive_group()
    c.add_argument(
        "--cache",
        metavar="PATH",
        help="embedding cache file (SQLite; default "
        "$SIAMFACE_CACHE/embeddings.sqlite, else "
        "~/.cache/siamface/embeddings.sqlite)",
    )
    c.add_argument("--no-cache", action="store_true", help="embed everything, read and write no cache")


def add_gallery_option(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    """--gallery/-g (default $SIAMFACE_GALLERY, else required), and --json with `json_flag`."""
    default = os.environ.get("SIAMFACE_GALLERY")
    p.add_argument(
        "--gallery",
        "-g",
        metavar="FILE|URL",
        default=default,
        required=default is None,
        help="the gallery: an SQLite file or a postgresql:// URL"
        + (f" (default: $SIAMFACE_GALLERY = {default})" if default else "; or set $SIAMFACE_GALLERY"),
    )
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON instead of text")


def require_folder(path, option: str, hint: str) -> None:
    """ConfigError (exit 2, one line) when the folder that would hold `path` (a file named by `option`) does
    not exist: a command that makes a file beside a gallery as a side effect (`keys`, `serve`) does not make
    folders, so that a typo in a path (``typo/people.db``) fails instead of starting a second, empty gallery
    or keys file somewhere nobody looks. `hint`: how to go on. A ``postgresql://`` URL passes."""
    from ..errors import ConfigError
    from ..gallery.store import is_database_url

    if path is None or is_database_url(path):
        return
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise ConfigError(f"{option} {path}: the folder {folder} does not exist (a typo?); {hint}")


def pipeline_from_args(args, gallery=None):
    """The chain from the chain options; with `gallery`, the calibration file beside it when there is one
    and, without --model, an existing gallery's own model (its note goes to stderr)."""
    from ..factory import build_pipeline

    pipeline, note = build_pipeline(args, gallery=gallery)
    if note:
        print(f"siamface: note: {note}", file=sys.stderr)
    return pipeline


def open_gallery(args, pipeline=None, create: bool = False, keep_images: bool = False):
    """The gallery of --gallery, searched with `pipeline`."""
    from ..factory import open_gallery

    return open_gallery(args.gallery, pipeline, create=create, keep_images=keep_images)


def print_json(payload) -> None:
    print(json.dumps(payload, indent=2))


def silence_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for it, and Python's own flush at exit, can then
    neither fail (a reader gone: a broken pipe) nor block (a reader that stopped reading)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's buffer): nothing to silence
        pass
