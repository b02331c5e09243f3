"""Writing files so that a reader never sees half of one: temp file in the same folder, fsync, rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import ModelError


def atomic_write_bytes(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached_conversion(source: Path, target: Path, build: Callable[[], bytes]) -> Path:
    """`target` if it exists, else ``build()`` written there atomically; errors become `ModelError`."""
    if target.is_file() and target.stat().st_size > 0:
        return target
    data = build()
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise ModelError(f"cannot write the converted model of {source} to {target.parent}: {exc}") from None
    return target
