"""The one progress bar: a line on stderr for the commands that take a while (evaluate, train, enroll
--folder, evaluate --liveness). Library code takes a ``progress`` callback or flag; only this draws.

On a terminal the line is redrawn in place (at most every ``interval`` seconds, and at the end):
``label [#####.....] done/total  rate/s  eta m:ss  status``. Elsewhere (a pipe, a log file) it is silent,
or, with ``lines=True``, writes one line per step: ``[done/total] status``.
"""

from __future__ import annotations

import sys
import time
import unicodedata
from typing import TextIO


def printable(text: object, keep: str = "") -> str:
    """`text` as a terminal may be given it: every control, format or unassigned character (ESC, BEL, C1
    controls, the bidirectional overrides, line breaks) as ``?``, except those in `keep`. For what others may
    have chosen (a file name in a folder they may write, a template's source): printed raw, ESC sequences
    would clear the operator's screen, set their clipboard (OSC 52) or reorder what they read."""
    return "".join(c if c in keep or not unicodedata.category(c).startswith("C") else "?" for c in str(text))


class Progress:
    """A progress line on `stream` (stderr); ``with Progress(n, "embedding") as bar: ... bar.update()``."""

    def __init__(
        self,
        total: int,
        label: str = "",
        stream: TextIO | None = None,
        enabled: bool = True,
        width: int = 28,
        interval: float = 0.1,
        lines: bool = False,
    ) -> None:
        self.total = int(total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.enabled = bool(enabled) and (self.tty or lines)
        self.width = width
        self.interval = interval
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, n: int = 1, status: str = "") -> None:
        """`n` more steps done; `status` says what the last one was (e.g. a person's name)."""
        self.done += n
        if not self.enabled or self.total <= 0:
            return
        if not self.tty:
            self.stream.write(f"{self.label + ' ' if self.label else ''}[{self.done}/{self.total}] {status}\n")
            self.stream.flush()
            return
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._draw(now, status)

    def to(self, done: int, total: int | None = None, status: str = "") -> None:
        """A ``progress(done, total)`` callback: `done` steps of `total` (which may be learnt only now)."""
        if total is not None:
            self.total = int(total)
        self.update(done - self.done, status)

    def show(self, text: str, end: bool = False) -> None:
        """`text` in place of the bar (a training epoch's figures); ``end``: keep it and start a new line."""
        if self.enabled and self.tty:
            self.stream.write("\r" + text.ljust(100) + ("\n" if end else ""))
            self.stream.flush()
            self._drawn = not end

    def _draw(self, now: float, status: str) -> None:
        frac = min(1.0, self.done / self.total)
        filled = int(round(frac * self.width))
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        head = f"{self.label} " if self.label else ""
        tail = f" {status[:40]:<40}" if status else ""
        self.stream.write(
            f"\r{head}[{bar}] {self.done}/{self.total}  {rate:5.1f}/s  eta {int(eta) // 60}:{int(eta) % 60:02d} {tail}"
        )
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
