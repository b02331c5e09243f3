"""A time budget for one piece of work (a request of `siamface serve`): `start` sets its deadline in the current
context (a `contextvars` context, which follows the work into the worker thread that runs it), and the
stages call `check` between their steps (before detection, before each batch of faces is embedded, before a
decision is written), so that past the deadline the work stops with `OverBudgetError` instead of holding a
worker. Outside a budget `check` does nothing: the commands and the Python API have none.

    >>> token = start(30.0)            # the first call of a request sets it; later ones keep it
    >>> check("detection")             # OverBudgetError once 30 s have passed
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar

from .errors import OverBudgetError

_deadline: ContextVar[tuple[float, float, Callable[[], float]] | None] = ContextVar("siamface_deadline", default=None)


def start(seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
    """Give the work of the current context `seconds` from now, unless it has a budget already (a request that
    runs several steps keeps the deadline of its first). None: no budget."""
    if seconds is not None and _deadline.get() is None:
        _deadline.set((clock() + seconds, seconds, clock))


def check(step: str) -> None:
    """Raise `OverBudgetError` (naming `step`, what was about to start) when the current budget is spent."""
    current = _deadline.get()
    if current is not None and current[2]() > current[0]:
        raise OverBudgetError(step, current[1])
