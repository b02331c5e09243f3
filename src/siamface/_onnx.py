"""ONNX Runtime session settings shared by every model siamface runs.

Threads do not spin while waiting for work (``session.intra_op.allow_spinning = 0``): on a 2-core machine
where a capture thread, a second model or another process also wants the CPU, spinning threads take the
cores from the work itself. Measured on RetinaFace at 640x480 with one core busy elsewhere: 40 ms per frame
with spinning, 21-25 ms without; on an idle machine the difference is within noise.

The device: every session of the process (detectors, encoders, liveness) is made by `new_session` with the
providers of the device in force, set once by `use_device` (``--device``, ``SIAMFACE_DEVICE``, the service's
setting; the factory calls it) and read from ``SIAMFACE_DEVICE`` (else ``cpu``) when nothing set it:

    cpu    CPUExecutionProvider only (the default: results bit-for-bit those of every earlier release)
    cuda   CUDAExecutionProvider first, the CPU for the operators CUDA lacks; an error when onnxruntime
           offers no CUDA (``pip install 'siamface[gpu]'``: onnxruntime-gpu, which replaces onnxruntime)
    auto   cuda when onnxruntime offers it, else cpu
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
#: Faces per forward pass of an encoder, by device. On a CPU a face costs about the same at any batch size for
#: SFace (the default sface+dlib's first part; its conversion 3, one thread, CPU ms per face at batch 1 / 4 / 16: 8.3 / 8.7 / 9.9;
#: its convolutions already run near the core's arithmetic peak with one face, and larger batches leave the
#: cache); dlib-resnet gains from 4 (faces/s at batch 1 / 4 / 8 / 16: 291 / 347 / 343 / 349), facenet is flat:
#: 4 keeps a request's time budget checked often. A GPU is fed by larger batches (benchmarks/throughput.py).
BATCH = {CPU: 4, CUDA: 64}


def providers_for(device: str, available: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The providers a session runs with on `device` ("auto", "cpu" or "cuda"), given the providers
    onnxruntime offers (`available`). Raises ConfigError for another name, ModelError for cuda without CUDA."""
    from .errors import ConfigError, ModelError

    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu" or (device == "auto" and CUDA not in available):
        return (CPU,)
    if CUDA not in available:
        raise ModelError(
            "device cuda: onnxruntime offers no CUDAExecutionProvider (it offers "
            f"{', '.join(available) or 'none'}): install the gpu extra, pip install 'siamface[gpu]' (onnxruntime-gpu "
            "in place of onnxruntime, with CUDA 12 and cuDNN 9), or use --device cpu or auto"
        )
    return (CUDA, CPU)


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


_device_lock = threading.Lock()
_device: tuple[str, tuple[str, ...]] | None = None  # (device asked for, providers)


def use_device(device: str | None = None, available: list[str] | None = None) -> tuple[str, ...]:
    """Make `device` (None: ``$SIAMFACE_DEVICE``, else "cpu") the device of every session made from now on,
    and return its providers. `available`: the providers offered (default: onnxruntime's)."""
    global _device
    device = (device or os.environ.get("SIAMFACE_DEVICE") or "cpu").strip().lower()
    found = providers_for(device, available if available is not None else available_providers())
    with _device_lock:
        _device = (device, found)
    return found


def providers() -> tuple[str, ...]:
    """The providers of the device in force (see `use_device`)."""
    current = _device
    if current is None:
        use_device()
        current = _device
    return current[1]


def device_report() -> dict:
    """The device asked for, the providers sessions run with, and those onnxruntime offers."""
    runs = providers()
    return {"device": _device[0], "providers": list(runs), "available": available_providers()}


def embed_batch() -> int:
    """Faces per forward pass of an encoder on the device in force (`BATCH`)."""
    return BATCH[providers()[0]]


def new_session(model, threads: int, provider_list: tuple[str, ...] | None = None):
    """An `onnxruntime.InferenceSession` of `model` (a path or the model's bytes) with `session_options(threads)`
    and the providers of the device in force (or `provider_list`): the one place sessions are made."""
    import onnxruntime as ort

    model = str(model) if isinstance(model, Path) else model
    chosen = list(provider_list or providers())
    return ort.InferenceSession(model, sess_options=session_options(threads), providers=chosen)


def session_options(threads: int):
    """`onnxruntime.SessionOptions` for `threads` intra-op threads, sequential, all graph optimisations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


_shared_lock = threading.Lock()
_shared: dict[tuple, object] = {}


def shared_session(
    path: str | Path, threads: int, provider_list: tuple[str, ...] | None = None, sha256: str | None = None
):
    """An `onnxruntime.InferenceSession` of the file `path` with `session_options(threads)`, shared by every
    caller in the process that asks for the same file (same size and modification time), threads and
    providers (default: the device's): a process that builds several pipelines (a test run, a command run many times in one
    process) loads each model once. A session's ``run`` is thread-safe. `sha256`: the hash the file's bytes
    must have (a cached conversion, `siamface._files.accepted_digest`); the session is made from the bytes
    checked. Errors are ONNX Runtime's own (or OSError for a missing file, ValueError for a changed one):
    callers turn them into a ModelError."""
    import hashlib

    path = Path(path)
    stat = path.stat()
    chosen = tuple(provider_list or providers())
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, int(threads), chosen)
    with _shared_lock:
        session = _shared.get(key)
        if session is None:
            data = path.read_bytes()  # the bytes checked are the bytes loaded
            if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
                raise ValueError(f"{path} changed since it was checked against its source; run again")
            session = new_session(data, threads, chosen)
            _shared[key] = session
        return session


class LazySession:
    """A `shared_session` opened on first use (thread-safe) from the file `path()` returns, which may convert
    a model into the cache first; errors become `ModelError`. ``LazySession(cached_sface_onnx, 2).session``.
    `sha256`: given the path, the hash its bytes must have (`siamface._files.accepted_digest` for a cached
    conversion; see `shared_session`)."""

    def __init__(self, path, threads: int, sha256=None) -> None:
        self._path = path
        self._sha256 = sha256
        self.threads = int(threads)
        self._session = None
        self._lock = threading.Lock()

    @property
    def session(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    from .errors import ModelError

                    try:
                        import onnxruntime  # noqa: F401
                    except ImportError:
                        raise ModelError("onnxruntime is not installed: pip install onnxruntime") from None
                    path = self._path()
                    try:
                        digest = self._sha256(path) if self._sha256 is not None else None
                        self._session = shared_session(path, self.threads, sha256=digest)
                    except Exception as exc:  # onnxruntime raises its own exception types
                        raise ModelError(f"onnxruntime could not load {path}: {exc}") from None
        return self._session
