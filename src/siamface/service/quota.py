"""Decisions per API key: how many verifications and identifications a key below admin may ask for a minute.

A stolen door or kiosk key is a way to ask the gallery about any photo: is this face enrolled, and as whom.
The lock-out bounds guesses at one person; this bounds the whole key. Each key has a bucket of `per_minute`
decisions that refills continuously (a token bucket: `per_minute` at once after an idle minute, then
`per_minute / 60` a second); a verification (a pair or a claim) takes one, an identification one per image.
A request the bucket cannot pay for is refused whole, before any work (HTTP 429 ``too-many-decisions`` with
``Retry-After``) and not audited: no decision was made. Admin keys are not counted (they may read the gallery
anyway). The buckets live in the server process's memory: a restart refills them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable

from .errors import ServiceError

#: Decisions one key below admin may ask for a minute (the web page's live identification asks about 200).
DECISIONS_PER_MINUTE = 240


class DecisionQuota:
    """Token buckets of decisions, one per key; `per_minute` 0 counts nothing."""

    def __init__(self, per_minute: int = DECISIONS_PER_MINUTE, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = int(per_minute)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, then = self._buckets.get(key, (float(self.per_minute), now))
        return min(float(self.per_minute), tokens + max(0.0, now - then) * self.per_minute / 60.0)

    def take(self, key: Hashable, n: int = 1) -> None:
        """Count `n` decisions for `key`, or raise 429 ``too-many-decisions`` (nothing counted)."""
        if self.per_minute <= 0 or n <= 0:
            return
        now = self.clock()
        with self._lock:
            tokens = self._tokens(key, now)
            if n > self.per_minute:
                raise ServiceError(
                    429,
                    "too-many-decisions",
                    f"this API key may ask for {self.per_minute} decisions a minute; this request asks for {n}: "
                    "send fewer images at once",
                    headers={"Retry-After": "60"},
                )
            if tokens < n:
                wait = max(1, math.ceil((n - tokens) * 60.0 / self.per_minute))
                self._buckets[key] = (tokens, now)
                raise ServiceError(
                    429,
                    "too-many-decisions",
                    f"this API key asked for more than its {self.per_minute} decisions a minute; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            self._buckets[key] = (tokens - n, now)
            if len(self._buckets) > 4096:  # forget the full ones: a full bucket is what an unknown key gets
                for k in [
                    k for k, (t, w) in self._buckets.items() if t + (now - w) * self.per_minute / 60 >= self.per_minute
                ]:
                    del self._buckets[k]
