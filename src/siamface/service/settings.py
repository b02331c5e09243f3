"""`Settings`: everything a service process is started with (from `siamface serve`'s options)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..decision import LIVENESS_MODES
from ..errors import ConfigError
from .keys import keys_file_for
from .lockout import check_lockout
from .quota import DECISIONS_PER_MINUTE

#: Largest request body accepted, in bytes (HTTP 413 above it).
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Request bytes received and held at once, all requests together (HTTP 503 ``server-busy`` above).
MAX_INFLIGHT_BYTES = 256 * 1024 * 1024
#: Largest decoded image, in pixels (a 24 MP photo; HTTP 400 above it).
MAX_PIXELS = 24_000_000
#: Images accepted by one enrollment request.
MAX_ENROLL_IMAGES = 20
#: Images one /v1/identify or /v1/embed request may carry in field 'images' (HTTP 413 above).
MAX_BATCH_IMAGES = 16
#: Liveness: capture sessions open at once (429 above), and frames one session takes (then it fails).
MAX_LIVENESS_SESSIONS = 100
MAX_SESSION_FRAMES = 300
#: Liveness sessions one API key, and one claimed person, may open a minute (429 above).
SESSIONS_PER_KEY = 20
SESSIONS_PER_PERSON = 10
#: Faces of one image identified by /v1/identify: the largest; the answer says how many were found.
MAX_FACES = 20
#: Seconds one request's work may take, from its first step (waiting for a worker included); 503 past it.
TIME_BUDGET_S = 30.0
#: Seconds a client has to send a request's headers (then the connection is closed), and its body (408).
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
#: Connections open at once (more are answered 503 and closed); lowered at start to fit the file limit.
MAX_CONNECTIONS = 1000
#: Seconds an idle keep-alive connection stays open after a response.
KEEP_ALIVE_S = 5.0
#: Faces that keys below admin may add to one person within ADDITIONS_WINDOW_S seconds (429 above).
ADDITIONS_PER_PERSON = 5
ADDITIONS_WINDOW_S = 86400.0


@dataclass(frozen=True)
class Settings:
    gallery: Path | str  # an SQLite file, or a postgresql:// URL (then keys_file is needed)
    keys_file: Path | None = None
    detector: str = "retinaface"
    model: str | None = None  # None: an existing gallery's own model, else the default model
    min_face: int = 20
    upsample: int | None = None
    refine_keypoints: bool = True  # retinaface: small faces' keypoints found again for SFace's chips
    device: str | None = None  # "auto", "cpu" or "cuda"; None: $SIAMFACE_DEVICE, else cpu (siamface._onnx)
    threshold: float | None = None
    fpir: float | None = None  # 1:N: the share of strangers that may be named (None: calibration's, else 1 %)
    min_enroll_face: int = 60  # enrollment gate: smallest face side, in pixels
    keep_images: bool = False  # only when the gallery is created by the server
    liveness: str = "off"  # "off", or a capture session: "passive", "active" (prompts) or "both"
    camera: str = "colour"  # the passive check's camera kind: "colour" or "grey" (IR, monochrome)
    liveness_model: Path | None = None  # a user's combiner file instead of the default passive check
    challenge_s: float = 20.0  # a session's capture must end within this, from its first frame
    session_ttl_s: float = 60.0  # a session's life, from its opening to its use by /v1/verify
    max_frame_gap_s: float = 1.5  # the longest silence between two frames of a session
    max_sessions: int = MAX_LIVENESS_SESSIONS
    max_session_frames: int = MAX_SESSION_FRAMES
    sessions_per_key: int = SESSIONS_PER_KEY
    sessions_per_person: int = SESSIONS_PER_PERSON
    challenges: tuple[str, ...] | None = None  # tests only: the same prompts for every session
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES
    allowed_hosts: tuple[str, ...] | None = None  # the Host names answered (None: any); `serve` picks them
    max_pixels: int = MAX_PIXELS
    max_enroll_images: int = MAX_ENROLL_IMAGES
    max_batch_images: int = MAX_BATCH_IMAGES
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    lockout_failures: int = 5
    lockout_window_s: float = 300.0
    lockout_s: float = 300.0
    max_faces: int = MAX_FACES
    time_budget_s: float = TIME_BUDGET_S
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    keep_alive_s: float = KEEP_ALIVE_S
    additions_per_person: int = ADDITIONS_PER_PERSON
    additions_window_s: float = ADDITIONS_WINDOW_S
    decisions_per_minute: int = DECISIONS_PER_MINUTE  # per key below admin (0: not counted); see quota.py
    library: Path | None = None  # the one folder whose photos the page's photo library may read

    @property
    def active_liveness(self) -> bool:
        """Do liveness sessions prompt the user (turn, tilt, come closer)?"""
        return self.liveness in ("active", "both")

    @property
    def sessions_needed(self) -> bool:
        """Does a claim verification need a passed capture session (every liveness mode but off)?"""
        return self.liveness != "off"

    @property
    def passive_frames(self) -> bool:
        """Is the passive check run on every frame of a session?"""
        return self.liveness in ("passive", "both")

    def __post_init__(self) -> None:
        for f in fields(self):  # NaN passes every "<= 0" check: a NaN lock-out would never lock
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        from ..gallery.store import is_database_url

        if not is_database_url(self.gallery):
            object.__setattr__(self, "gallery", Path(self.gallery))
        if self.keys_file is None:
            object.__setattr__(self, "keys_file", keys_file_for(self.gallery))
        object.__setattr__(self, "keys_file", Path(self.keys_file))
        from .._onnx import DEVICES

        if self.device is not None and self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.library is not None:
            folder = Path(self.library).resolve()  # the operator's folder, links resolved once, here
            if not folder.is_dir():
                raise ConfigError(f"--library {self.library}: not a folder")
            object.__setattr__(self, "library", folder)
        if self.fpir is not None:
            from ..decision import check_fpir

            check_fpir(self.fpir, "fpir")
            if self.threshold is not None:
                raise ConfigError("a fixed threshold and an FPIR target exclude each other: give one")
        if self.liveness not in LIVENESS_MODES:
            raise ConfigError(f"liveness must be one of {', '.join(LIVENESS_MODES)}, got {self.liveness!r}")
        if self.challenge_s <= 0 or self.session_ttl_s < self.challenge_s:
            raise ConfigError(
                f"the challenge time must be positive and the session life at least as long "
                f"(got {self.challenge_s:g} s and {self.session_ttl_s:g} s)"
            )
        if self.max_sessions < 1 or self.max_session_frames < 1:
            raise ConfigError("max_sessions and max_session_frames must be >= 1")
        if not 0.1 <= self.max_frame_gap_s <= 10:
            raise ConfigError(f"the longest gap between frames must be 0.1-10 s, got {self.max_frame_gap_s:g}")
        if self.sessions_per_key < 1 or self.sessions_per_person < 1:
            raise ConfigError("sessions_per_key and sessions_per_person must be >= 1")
        from ..liveness.combined import CAMERAS

        if self.camera not in CAMERAS:
            raise ConfigError(f"camera must be one of {', '.join(CAMERAS)}, got {self.camera!r}")
        if self.liveness_model is not None:
            object.__setattr__(self, "liveness_model", Path(self.liveness_model))
        if self.challenges is not None:
            from ..liveness.session import CaptureSession

            object.__setattr__(self, "challenges", tuple(CaptureSession("active", prompts=self.challenges).prompts))
        if (
            self.max_upload_bytes < 1024
            or self.max_pixels < 1024
            or min(self.max_enroll_images, self.max_batch_images) < 1
        ):
            raise ConfigError("upload, pixel and image-count limits must be positive (upload >= 1 kB)")
        if self.max_inflight_bytes < self.max_upload_bytes:
            raise ConfigError(
                f"the uploads received at once ({self.max_inflight_bytes} bytes) must hold at least one of the "
                f"largest request ({self.max_upload_bytes} bytes)"
            )
        if self.allowed_hosts is not None:
            object.__setattr__(self, "allowed_hosts", tuple(h.strip().lower() for h in self.allowed_hosts))
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        check_lockout(self.lockout_failures, self.lockout_window_s, self.lockout_s)
        if self.additions_per_person < 0 or self.additions_window_s <= 0:
            raise ConfigError("the faces added per person must be >= 0, within a positive number of seconds")
        if self.decisions_per_minute < 0 or self.decisions_per_minute != int(self.decisions_per_minute):
            # 0.5 would be int() 0 in the quota: the count silently off
            raise ConfigError(
                f"decisions per minute must be a whole number >= 0 (0: not counted), got {self.decisions_per_minute}"
            )
        if self.max_faces < 1 or self.max_connections < 1:
            raise ConfigError("max_faces and max_connections must be >= 1")
        timeouts = (self.time_budget_s, self.header_timeout_s, self.body_timeout_s, self.keep_alive_s)
        if not all(0 < t < float("inf") for t in timeouts):
            raise ConfigError("the time budget, the header, body and keep-alive timeouts must be positive seconds")
