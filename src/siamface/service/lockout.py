"""Lock-out of failed verifications per claimed person, as phones do.

After `max_failures` denied verifications of the same person within `window` seconds, that person cannot be
verified for `duration` seconds (HTTP 429 with ``Retry-After``). A granted verification clears the count.

Concurrent attempts cannot get round the limit: at most ``max_failures - failures so far`` attempts for one
person are in flight at a time; further ones wait their turn (they are not refused, so honest concurrent
clients are only slowed, never failed). The state lives in the server process's memory: a restart clears
it, and several server processes each keep their own.

All methods run on the event loop (no threads), which is what makes the bookkeeping race-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field


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

    @contextlib.asynccontextmanager
    async def attempt(self, key: Hashable) -> AsyncIterator[Attempt]:
        """Reserve an attempt for `key` (raises `LockedOut`), yield it, then record its outcome."""
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
        if not state.failures and not state.in_flight and not state.waiting and state.locked_until <= now:
            self._states.pop(key, None)

    def record_failure(self, key: Hashable) -> None:
        """A failure of `key` decided elsewhere (a liveness session that failed or expired unused); counts
        as a denied verification. Event loop only, as the rest."""
        self._record(key, self._states.setdefault(key, _State()), False)

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
