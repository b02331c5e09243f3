"""The log of `siamface serve`: rate-limited, so that a flood of refused connections or failing requests
cannot fill a disk, and an access log that never shows a secret sent in a URL.

- `RateLimit`: at most one line per kind (logger, level and message, or a record's ``kind``) per interval,
  siamface's own INFO lines (one per audited change) excepted;
  the next line of that kind says how many were suppressed meanwhile, and `RateLimit.flush` (at shutdown)
  says it for the kinds still counting. An operating-system error (a refused accept: "too many open files")
  is one line, without its traceback.
- `redact_query`: the access log's request line with the value of every query parameter that looks like a
  credential (``key``, ``api_key``, ``token``, ...), and every path segment shaped like an API key (a key
  pasted into the URL's path), replaced by ``[redacted]``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable

#: Seconds between two lines of one kind.
LOG_INTERVAL_S = 10.0
#: Kinds remembered at once (the oldest are forgotten past it).
MAX_KINDS = 1000
#: Query parameters whose values are never logged (their names compared lower-case, ``-`` read as ``_``).
SECRET_PARAMS = frozenset(
    {"key", "api_key", "apikey", "x_api_key", "token", "access_token", "secret", "password", "auth", "authorization"}
)


#: A value shaped like an API key (``sf_<8 hex>_...``), whatever the parameter is called.
_KEY_SHAPED = re.compile(r"sf_[0-9a-f]{8}_", re.IGNORECASE)


def secret_param(part: str) -> bool:
    """Is the query parameter `part` (``name=value``, still URL-encoded) a credential: a credential-like name
    (``key``, ``api_key``, ``token``, ...) or a value shaped like an API key under any name?"""
    name, _, value = part.partition("=")
    if urllib.parse.unquote_plus(name).strip().lower().replace("-", "_") in SECRET_PARAMS:
        return True
    return bool(_KEY_SHAPED.search(urllib.parse.unquote_plus(value)))


def redact_query(target: str) -> str:
    """`target` (a path with its query) with the values of credential-like query parameters, and the path's
    segments that hold something shaped like an API key, redacted."""
    path, mark, query = target.partition("?")
    path = "/".join(
        "[redacted]" if _KEY_SHAPED.search(urllib.parse.unquote(segment)) else segment for segment in path.split("/")
    )
    if not mark:
        return path
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}=[redacted]" if eq and secret_param(part) else part)
    return f"{path}?{'&'.join(parts)}"


class RateLimit(logging.Filter):
    """A filter (put on handlers) that lets one record of a kind through per `interval` seconds."""

    def __init__(self, interval: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._kinds: OrderedDict[tuple, list] = OrderedDict()  # kind -> [time of the last line let through, count]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access":
            return True  # asked for with --access-log: every request, on purpose
        if record.levelno < logging.WARNING and record.name.startswith("siamface"):
            return True  # one INFO line per audited change (made with a key): each is an event, never a flood
        kind = (record.name, record.levelno, getattr(record, "kind", None) or str(record.msg))
        now = self.clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return False
            suppressed = seen[1] if seen is not None else 0
            self._kinds[kind] = [now, 0]
            self._kinds.move_to_end(kind)
            while len(self._kinds) > MAX_KINDS:
                self._kinds.popitem(last=False)
        if record.exc_info and isinstance(record.exc_info[1], OSError):
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args, record.exc_info, record.exc_text = (), None, None
        if suppressed:
            record.msg = f"{record.getMessage()} [{suppressed} more like it suppressed in the last {self.interval:g} s]"
            record.args = ()
        return True

    def flush(self, logger: logging.Logger) -> None:
        """Log, once, the count of lines suppressed since the last line of each kind (at shutdown)."""
        with self._lock:
            pending = [(kind, seen[1]) for kind, seen in self._kinds.items() if seen[1]]
            for kind, _ in pending:
                self._kinds[kind][1] = 0
        for (name, _, what), count in pending:
            logger.warning("%d more log lines like %r (%s) were suppressed", count, str(what)[:80], name)


class _RedactAccess(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def configure(debug: bool, access_log: bool) -> RateLimit:
    """Rate-limit the handlers of the root logger (where siamface, asyncio and uvicorn log: `serve` runs
    uvicorn without a logging config of its own), and set uvicorn's loggers' levels: its errors at WARNING
    (DEBUG with `debug`), its access log at INFO when `access_log`, with query secrets redacted. Undo it with
    `unconfigure` (at shutdown)."""
    limit = RateLimit()
    for handler in logging.getLogger().handlers:
        handler.addFilter(limit)
    level = logging.DEBUG if debug else logging.WARNING
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
        logging.getLogger(name).setLevel(level)
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO if access_log else logging.CRITICAL + 1)
    if not any(isinstance(f, _RedactAccess) for f in access.filters):
        access.addFilter(_RedactAccess())
    return limit


def unconfigure(limit: RateLimit) -> None:
    """Say what `limit` suppressed since its last lines, and take it off the handlers."""
    limit.flush(logging.getLogger("siamface.service"))
    for handler in logging.getLogger().handlers:
        handler.removeFilter(limit)
