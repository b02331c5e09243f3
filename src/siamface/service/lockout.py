"""Lock-out of failed verifications per claimed person, as phones do.

After `max_failures` denied verifications of the same person within `window` seconds, that person cannot be
verified for `duration` seconds (HTTP 429 with ``Retry-After``). A granted verification clears the count.

Concurrent attempts cannot get round the limit: at most ``max_failures - failures so far`` attempts for one
person are in flight at a time; further ones wait their turn (they are not refused, so honest concurrent
clients are only slowed, never failed). That bookkeeping lives in the server process's memory; the count
itself is also taken from the gallery's audit when the caller gives `attempt` a way to read it (`stored`: the
ages of the person's denied claims since their last granted one): the failures are then the larger of the
process's count and the audit's, and a lock is derived from the audited denials as this book would have
set it, so that a restarted server, or several servers sharing one gallery, count the same denials.

All methods run on the event loop (no threads), which is what makes the bookkeeping race-free; the audit is
read (off the loop, by `stored`) before the attempt is reserved.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..errors import ConfigError
from ..gallery.store import AUDIT_KEPT_DAYS


def check_lockout(failures: int, window: float, duration: float) -> None:
    """`ConfigError` unless a lock-out of `failures` denials within `window` seconds for `duration` seconds
    can be counted from the gallery's audit (`serve`'s and `authenticate`'s --lockout-* options)."""
    if not (failures >= 1 and window > 0 and duration > 0):  # NaN too
        raise ConfigError("lock-out needs at least 1 failure and a positive window and duration")
    if not window + duration <= AUDIT_KEPT_DAYS * 86400:
        raise ConfigError(
            f"the lock-out window plus the lock-out ({window:g} + {duration:g} s) may reach "
            f"back at most {AUDIT_KEPT_DAYS:g} day ({AUDIT_KEPT_DAYS * 86400:g} s): the denials a lock-out counts "
            "are read from the gallery's audit, whose rows that old may be pruned (gallery audit --prune-older-than)"
        )


def iso(seconds: float) -> str:
    """A time (seconds since the epoch) as the gallery stores times: ISO, UTC, milliseconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def audited_denial_ages(store, person_id, reach: float, now: float) -> list[float]:
    """The ages in seconds at `now` (seconds since the epoch) of the denied claims of `person_id` in `store`'s
    audit since their last granted one, at most `reach` seconds back (a lock-out's window plus its length)."""
    times = store.recent_denials(person_id, iso(now - reach))
    return [now - datetime.fromisoformat(t).timestamp() for t in times]


class LockedOut(Exception):
    """Verification of this person is locked; retry after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many failed verifications; retry in {self.retry_after} s")


@dataclass
class _State:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0
    in_flight: int = 0
    waiting: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class Attempt:
    """One verification attempt in progress: call `succeeded()` or `failed()` with its outcome (neither:
    the attempt did not reach a decision, e.g. no face in the probe, and does not count)."""

    def __init__(self) -> None:
        self.outcome: bool | None = None

    def succeeded(self) -> None:
        self.outcome = True

    def failed(self) -> None:
        self.outcome = False


class Lockout:
    def __init__(
        self,
        max_failures: int = 5,
        window: float = 300.0,
        duration: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window <= 0 or duration <= 0:
            raise ValueError("lock-out needs max_failures >= 1 and a positive window and duration")
        self.max_failures = int(max_failures)
        self.window = float(window)
        self.duration = float(duration)
        self.clock = clock
        self._states: dict[Hashable, _State] = {}

    def _prune(self, state: _State, now: float) -> None:
        state.failures = [t for t in state.failures if now - t < self.window]

    def remaining_lock(self, key: Hashable) -> float:
        """Seconds left of a lock on `key` (0 when not locked)."""
        state = self._states.get(key)
        return max(0.0, state.locked_until - self.clock()) if state is not None else 0.0

    def merge(self, key: Hashable, ages: Sequence[float]) -> None:
        """Take in the denials of `key` recorded elsewhere (the gallery's audit: every process's), given by
        their ages in seconds (those since the key's last granted attempt): replayed as `_record` would have
        counted them, they lock `key` when they would have, and count as its failures when they are more
        than this process's own (which the audit holds too: the larger count, never the sum)."""
        now = self.clock()
        until, failures = self._replay(ages, now)
        state = self._states.setdefault(key, _State())
        self._prune(state, now)
        state.locked_until = max(state.locked_until, until)
        if len(failures) > len(state.failures):
            state.failures = failures
        self._tidy(key, state, now)

    def _replay(self, ages: Sequence[float], now: float) -> tuple[float, list[float]]:
        """(when the lock the denials `ages` seconds old set ends, their failures still in the window), as
        `_record` would have counted them."""
        failures: list[float] = []
        until = 0.0
        for t in sorted(now - float(age) for age in ages):
            failures = [f for f in failures if t - f < self.window]
            failures.append(t)
            if len(failures) >= self.max_failures:
                until, failures = t + self.duration, []
        return until, [f for f in failures if now - f < self.window]

    def lock_left(self, ages: Sequence[float]) -> float:
        """Seconds left of the lock that denials `ages` seconds old set (0: none), without touching the book:
        safe from any thread (identification's check of the audit, `Service.audit_locked`)."""
        now = self.clock()
        return max(0.0, self._replay(ages, now)[0] - now)

    @contextlib.asynccontextmanager
    async def attempt(
        self, key: Hashable, stored: Callable[[], Awaitable[Sequence[float]]] | None = None
    ) -> AsyncIterator[Attempt]:
        """Reserve an attempt for `key` (raises `LockedOut`), yield it, then record its outcome. `stored`:
        reads the ages of `key`'s denials recorded elsewhere (see `merge`), awaited before the reservation."""
        if stored is not None:
            self.merge(key, await stored())
        state = self._states.setdefault(key, _State())
        async with state.changed:
            while True:
                now = self.clock()
                self._prune(state, now)
                if state.locked_until > now:
                    raise LockedOut(state.locked_until - now)
                if len(state.failures) + state.in_flight < self.max_failures:
                    break
                state.waiting += 1
                try:
                    await state.changed.wait()
                finally:
                    state.waiting -= 1
            state.in_flight += 1
        attempt = Attempt()
        try:
            yield attempt
        finally:
            async with state.changed:
                state.in_flight -= 1
                self._record(key, state, attempt.outcome)
                state.changed.notify_all()

    def _record(self, key: Hashable, state: _State, outcome: bool | None) -> None:
        now = self.clock()
        if outcome is True:
            state.failures.clear()
        elif outcome is False:
            state.failures.append(now)
            self._prune(state, now)
            if len(state.failures) >= self.max_failures:
                state.locked_until = now + self.duration
                state.failures.clear()
        self._tidy(key, state, now)

    def _tidy(self, key: Hashable, state: _State, now: float) -> None:
        """Forget `key` when nothing is left to remember of it."""
        if not state.failures and not state.in_flight and not state.waiting and state.locked_until <= now:
            self._states.pop(key, None)

    def record_failure(self, key: Hashable) -> None:
        """A failure of `key` decided elsewhere (a liveness session that failed or expired unused); counts
        as a denied verification. Event loop only, as the rest."""
        self._record(key, self._states.setdefault(key, _State()), False)

    def forget(self, key: Hashable) -> None:
        """Forget `key` (a person removed from the gallery: the next person given their id starts afresh)."""
        self._states.pop(key, None)

    def locked(self) -> set[Hashable]:
        """The keys locked now."""
        now = self.clock()
        return {key for key, state in self._states.items() if state.locked_until > now}

    def failures(self, key: Hashable) -> int:
        state = self._states.get(key)
        if state is None:
            return 0
        self._prune(state, self.clock())
        return len(state.failures)
