"""ONNX Runtime session settings shared by every model siamface runs.

Threads do not spin while waiting for work (``session.intra_op.allow_spinning = 0``): on a 2-core machine
where a capture thread, a second model or another process also wants the CPU, spinning threads take the
cores from the work itself. Measured on RetinaFace at 640x480 with one core busy elsewhere: 40 ms per frame
with spinning, 21-25 ms without; on an idle machine the difference is within noise.
"""

from __future__ import annotations

import threading
from pathlib import Path


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
    path: str | Path, threads: int, providers: tuple[str, ...] = ("CPUExecutionProvider",), sha256: str | None = None
):
    """An `onnxruntime.InferenceSession` of the file `path` with `session_options(threads)`, shared by every
    caller in the process that asks for the same file (same size and modification time), threads and
    providers: a process that builds several pipelines (a test run, a command run many times in one
    process) loads each model once. A session's ``run`` is thread-safe. `sha256`: the hash the file's bytes
    must have (a cached conversion, `siamface._files.accepted_digest`); the session is made from the bytes
    checked. Errors are ONNX Runtime's own (or OSError for a missing file, ValueError for a changed one):
    callers turn them into a ModelError."""
    import hashlib

    import onnxruntime as ort

    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, int(threads), tuple(providers))
    with _shared_lock:
        session = _shared.get(key)
        if session is None:
            data = path.read_bytes()  # the bytes checked are the bytes loaded
            if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
                raise ValueError(f"{path} changed since it was checked against its source; run again")
            session = ort.InferenceSession(data, sess_options=session_options(threads), providers=list(providers))
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
