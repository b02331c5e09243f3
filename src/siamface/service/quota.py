"""Decisions per API key: how many verifications and identifications a key below admin may ask for a minute.

A stolen door or kiosk key is a way to ask the gallery about any photo: is this face enrolled, and as whom.
The lock-out bounds guesses at one person; this bounds the whole key. Each key has a bucket of `per_minute`
decisions that refills continuously (a token bucket: `per_minute` at once after an idle minute, then
`per_minute / 60` a second); a verification (a pair or a claim) takes one, an identification one per face
it names (each is a decision and an audit row: a picture of 20 stolen photos side by side asks 20 times).
A request the bucket cannot pay one decision per image for is refused whole, before any work (HTTP 429
``too-many-decisions`` with ``Retry-After``; 413 ``over-quota`` when it asks for more than a full bucket
holds, which no wait would pay) and not audited: no decision was made; an image's faces past
the first are identified, largest first, as far as the bucket pays once they are found (`take_up_to`). Admin keys are not counted (they may read the gallery
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
            if n > self.per_minute:  # no wait would help: not a 429
                raise ServiceError(
                    413,
                    "over-quota",
                    f"this API key may ask for {self.per_minute} decisions a minute; this request asks for {n} at "
                    f"once, more than the bucket ever holds: send at most {self.per_minute} images per request",
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
            self._store(key, tokens - n, now)

    def take_up_to(self, key: Hashable, n: int) -> int:
        """Count at most `n` decisions for `key`, as many as its bucket holds now; how many were counted (`n`
        when not counted at all). Never raises: the faces of an image past the first (`Service.identify`)."""
        if self.per_minute <= 0 or n <= 0:
            return max(n, 0)
        now = self.clock()
        with self._lock:
            tokens = self._tokens(key, now)
            got = min(n, int(tokens))
            self._store(key, tokens - got, now)
        return got

    def _store(self, key: Hashable, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > 4096:  # forget the full ones: a full bucket is what an unknown key gets
            full = [k for k, (t, w) in self._buckets.items() if t + (now - w) * self.per_minute / 60 >= self.per_minute]
            for k in full:
                del self._buckets[k]
