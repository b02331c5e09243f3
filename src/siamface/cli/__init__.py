"""The `siamface` command: every sub-command and its options live in this package, one module per family.

    faces      verify A B, detect, embed, models              (images alone)
    gallery    enroll, identify, verify --claim                (recognition against a gallery)
    library    cluster, find                                   (photo libraries and recordings)
    index      index                                           (archives, on Ray)
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
from . import admin, evaluate, faces, gallery, index, library, live, serve, train
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
    for module in (faces, evaluate, gallery, library, index, admin, train, live, serve):
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
        code = args.func(args)
        sys.stdout.flush()  # a pipe closed early fails here, inside the try, not in Python's flush at exit
        return code
    except SiamfaceError as exc:
        if args.debug:
            raise
        print(f"siamface: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("siamface: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`siamface detect --json ... | head`): nothing more can be said on stdout, and
        # Python's own flush at exit must not fail on it either, so stdout now points at /dev/null.
        _silence_stdout()
        return EXIT_BROKEN_PIPE


#: What a shell reports for a program ended by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def _one_line(text: str) -> str:
    """An error as one line a terminal shows as written: control and format characters (a line break, an
    escape sequence, a right-to-left override in a file's name) are written as their escapes (``\\x1b``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's buffer): nothing to silence
        pass
