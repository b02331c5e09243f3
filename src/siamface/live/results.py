"""What a runner (`Watcher`, `Authenticator`) reports: a `FrameResult` per frame, `Stats` over the run, the
time stamp of its events, and `json_lines`, which writes those events one JSON object a line."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from ..types import Faces
from ..video import Frame


@dataclass
class FrameResult:
    """What was decided on one frame: the faces, their tracks' labels, and timing."""

    frame: Frame
    faces: Faces
    labels: list[str]
    scores: list[float]
    track_ids: list[int]
    latency_ms: float
    embedded: int


@dataclass
class Stats:
    frames: int = 0
    dropped: int = 0
    embedded: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)) if lat else (lambda q: None)
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "faces_embedded": self.embedded,
            "fps": round(self.frames / self.seconds, 1) if self.seconds > 0 else None,
            "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
            "latency_ms_p99": pick(0.99),
        }


def now_iso() -> str:
    from datetime import datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds")


def json_lines(stream) -> Callable[[dict], None]:
    def emit(event: dict) -> None:
        stream.write(json.dumps(event) + "\n")
        stream.flush()

    return emit
