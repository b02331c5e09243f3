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
traceback, unless --debug; so are usage errors, which name the likely fix (a command or option mistyped:
"did you mean ...?") and the command's --help.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
from typing import NoReturn

from .. import __version__
from .._progress import printable
from ..errors import SiamfaceError
from . import admin, evaluate, faces, gallery, index, library, live, serve, train
from ._common import EXIT_ERROR, silence_stdout


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command they were given to, which knows its own options
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
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


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line naming the likely fix, instead of the usage (seven
    lines for a command with the chain options) above the error: a mistyped command, action, choice or option
    gets "did you mean ...?", and every error points at the command's --help."""

    def error(self, message: str) -> NoReturn:
        hint = _did_you_mean(self, message)
        if hint and " (choose from " in message:  # the near one instead of every one
            message = message[: message.index(" (choose from ")]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}{hint}; see '{self.prog} --help'\n")


def _did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    """The hint " (did you mean X?)" for the words of a usage error nearest to what `parser` knows, or ""."""
    choice = re.search(r"invalid choice: '?([^' ]+)'?", message)
    if choice:
        wrong = [choice.group(1)]
        known = [str(c) for a in parser._actions if a.choices for c in a.choices]
    elif message.startswith("unrecognized arguments:"):
        wrong = [word.split("=")[0] for word in message.split()[2:] if word.startswith("-")]
        known = [option for action in parser._actions for option in action.option_strings]
    else:
        return ""
    near = [match for word in wrong for match in difflib.get_close_matches(word, known, n=1)]
    return f" (did you mean {' '.join(near)}?)" if near else ""


def _innermost(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The parser of the command (and action) `args` was parsed for: `siamface people list`'s own."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _innermost(action.choices[getattr(args, action.dest)], args)
    return parser


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
        silence_stdout()
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
