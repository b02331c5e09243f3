"""The `siamface` command: every sub-command and its options live in this package, one module per family.

    faces      verify A B, detect, embed, models              (images alone)
    gallery    enroll, identify, verify --claim                (recognition against a gallery)
    admin      people ..., gallery ...                         (the gallery's records)
    evaluate   evaluate, calibrate
    train      train
    live       watch, authenticate
    serve      serve, keys

`main(argv)` runs one command in this process and returns its exit code (the console script and
``python -m siamface`` call it). Every command has --help. Errors are one line on stderr (exit 2), never a
traceback, unless --debug.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from ..errors import SiamfaceError
from . import admin, evaluate, faces, gallery, live, serve, train
from ._common import EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siamface",
        description="Face verification and identification around a Siamese encoder. Offline: every model "
        "comes from an installed package.",
    )
    parser.add_argument("--version", action="version", version=f"siamface {__version__}")
    parser.add_argument("--debug", action="store_true", help="log details and show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # Each module adds its own commands, in the order --help lists them.
    for module in (faces, evaluate, gallery, admin, train, live, serve):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.func(args)
    except SiamfaceError as exc:
        if args.debug:
            raise
        print(f"siamface: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("siamface: interrupted", file=sys.stderr)
        return 130
