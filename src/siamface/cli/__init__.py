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
from .._progress import printable
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
    before = set(logging.getLogger().handlers)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for handler in set(logging.getLogger().handlers) - before:  # a warning may name files others named
        handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    stdout = sys.stdout
    sys.stdout = _PrintableStream(stdout)
    try:
        return _run(args)
    finally:
        sys.stdout = stdout


def _run(args) -> int:
    try:
        code = args.func(args)
        sys.stdout.flush()  # a pipe closed early fails here, inside the try, not in Python's flush at exit
        return code
    except SiamfaceError as exc:
        if args.debug:
            raise
        print(f"siamface: error: {printable(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("siamface: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`siamface detect --json ... | head`): nothing more can be said on stdout, and
        # Python's own flush at exit must not fail on it either, so stdout now points at /dev/null.
        _silence_stdout()
        return EXIT_BROKEN_PIPE


class _PrintableStream:
    """stdout with every control, format or unassigned character but line breaks and tabs as '?' (`printable`):
    a person's name, a template's source or metadata read from a gallery someone else wrote (a crafted file)
    were printed as stored, so an ESC sequence in one set the operator's terminal title, clipboard (OSC 52) or
    rewrote the lines above (a name shown as another). A valid name has no such character, and JSON output is
    ASCII (escaped), so what siamface writes itself is unchanged."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if not text.translate(_LAYOUT).isprintable():  # the fast test first: most output is plain text
            text = printable(text, keep="\n\t")
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


#: The layout characters stdout keeps (see `_PrintableStream`), removed before `str.isprintable`.
_LAYOUT = {ord("\n"): None, ord("\t"): None}


class _PrintableFormatter(logging.Formatter):
    """Log lines with every control or format character but the line breaks (a traceback's) as '?'."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), keep="\n")


#: What a shell reports for a program ended by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's buffer): nothing to silence
        pass
