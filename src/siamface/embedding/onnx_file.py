"""Encoders exported by ``siamface train``: an ``.onnx`` file whose metadata carries its preprocessing contract.

    enc = create_encoder("runs/att/model.onnx")   # any spec ending in .onnx, or an existing file
    vectors = enc.embed(chips)                     # (n, 150, 150, 3) uint8 aligned chips -> (n, d) float32

Runs with ONNX Runtime only (no torch). The file's ``metadata_props`` (keys `META_PREFIX` + name) say what
the network wants: ``input_size``, ``channels`` (1 = grey, 3 = RGB), ``mean`` / ``std`` (pixel units,
0..255, one value or one per channel), ``embedding_size``, ``metric``, ``threshold`` (+ its source), the
median similarity of the validation impostors (``impostor_median``, optional: the floor of its plausible
thresholds), the
``chip`` the network was trained on (size and padding of the aligned crop; for a box crop also ``crop``,
``margin`` and ``square``) and a description of the
training data. `preprocess` turns aligned chips into the network's input; the trainer uses the same
function, so training and run time cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from .._onnx import new_session
from .._progress import printable
from ..alignment import ChipSpec
from ..errors import ModelError
from .base import ModelInfo, check_chips, l2_normalise

META_PREFIX = "siamface."
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
REQUIRED_KEYS = ("input_size", "channels", "mean", "std", "embedding_size", "metric", "threshold")


def preprocess(chips: np.ndarray, size: int, channels: int, mean, std) -> np.ndarray:
    """(n, s, s, 3) uint8 RGB chips -> (n, channels, size, size) float32, ``(pixel - mean) / std``.

    Resized with area interpolation when shrinking, bilinear when enlarging; channels 1 = grey (ITU-R 601).
    """
    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    n = len(chips)
    out = np.empty((n, channels, size, size), np.float32)
    mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(std, np.float32).reshape(-1, 1, 1)
    for i, chip in enumerate(chips):
        if chip.shape[0] != size or chip.shape[1] != size:
            interp = cv2.INTER_AREA if chip.shape[0] > size else cv2.INTER_LINEAR
            chip = cv2.resize(chip, (size, size), interpolation=interp)
        if channels == 1:
            img = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)[None]
        elif channels == 3:
            img = chip.transpose(2, 0, 1)
        else:
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        out[i] = (img.astype(np.float32) - mean) / std
    return out


def chip_metadata(chip: ChipSpec) -> dict:
    """The ``chip`` metadata entry: size and padding of a landmark-aligned chip; for a box crop (FaceNet's)
    also ``crop``, ``margin`` and ``square``."""
    meta = {"size": chip.size, "padding": chip.padding}
    if chip.crop != "landmarks":
        meta.update(crop=chip.crop, margin=chip.margin, square=chip.square)
    return meta


def chip_from_metadata(meta: dict) -> ChipSpec:
    try:
        return ChipSpec(
            size=int(meta["size"]),
            padding=float(meta.get("padding", 0.25)),
            crop=str(meta.get("crop", "landmarks")),
            margin=float(meta.get("margin", 0.0)),
            square=bool(meta.get("square", True)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"bad chip metadata {meta!r}: {exc}") from None


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``siamface.*`` metadata of an exported model, values decoded from JSON."""
    session, _ = _loaded(Path(path), 1)
    return _decode(session.get_modelmeta().custom_metadata_map, path)


def _decode(raw: dict, path) -> dict:
    meta = {}
    for key, value in raw.items():
        if key.startswith(META_PREFIX):
            try:
                meta[key[len(META_PREFIX) :]] = json.loads(value)
            except ValueError:
                meta[key[len(META_PREFIX) :]] = value
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelError(
            f"{path} is not a siamface model: metadata lacks {', '.join(META_PREFIX + k for k in missing)}"
        )
    return meta


def _loaded(path: Path, num_threads: int):
    """(session, sha256 of its bytes): the file is read once and the session made from the bytes hashed, so
    that the version galleries bind (the digest) is that of the model that runs, whatever the file holds later."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ModelError("onnxruntime is not installed: pip install onnxruntime") from None
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return new_session(data, num_threads), hashlib.sha256(data).hexdigest()
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime could not load {path}: {exc}") from None


def _impostor_median(value, path) -> float | None:
    """The ``impostor_median`` metadata (written by ``siamface train``: the floor of the model's plausible
    thresholds), or None when absent; `ModelError` when it is not a number in [-1, 1)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= float(value) < 1.0:
        raise ModelError(f"{path}: impostor_median {value!r} is not a cosine similarity in [-1, 1)")
    return float(value)


def is_model_path(spec: str) -> bool:
    """Is a ``--model`` value a path to an exported file rather than a registered name?"""
    return str(spec).lower().endswith(".onnx") or os.path.sep in str(spec)


class OnnxFileEncoder:
    """An exported siamface model (see module doc). The session opens here: the metadata is the contract."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None, batch_size: int = 64) -> None:
        from .onnx_runtime import default_num_threads

        self.path = Path(path)
        self._session_obj, digest = _loaded(self.path, num_threads or default_num_threads())
        self.meta = _decode(self._session_obj.get_modelmeta().custom_metadata_map, self.path)
        m = self.meta
        self.input_size = int(m["input_size"])
        self.channels = int(m["channels"])
        self.batch_size = int(batch_size)
        chip = m.get("chip", {"size": 150, "padding": 0.25})
        self.info = ModelInfo(
            name=_model_name(m.get("name") or self.path.stem, self.path),
            version=digest[:16],
            embedding_size=int(m["embedding_size"]),
            chip=chip_from_metadata(chip),
            metric=str(m["metric"]),
            threshold=float(m["threshold"]),
            threshold_source=str(m.get("threshold_source", "stored in the model file")),
            impostor_median=_impostor_median(m.get("impostor_median"), self.path),
            extra={"path": str(self.path), **{k: v for k, v in m.items() if k not in ("name", "threshold")}},
        )
        self._lock = threading.Lock()

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, self.info.chip.size)
        if len(chips) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        x = preprocess(chips, self.input_size, self.channels, self.meta["mean"], self.meta["std"])
        parts = []
        for start in range(0, len(x), self.batch_size):
            (out,) = self._session_obj.run([OUTPUT_NAME], {INPUT_NAME: x[start : start + self.batch_size]})
            parts.append(out)
        return l2_normalise(np.concatenate(parts))


def _model_name(name: object, path: Path) -> str:
    """The model's name as the file states it: printed by every command and stored in the galleries bound to
    it, so one with a control, format or unassigned character (an ESC sequence for the operator's terminal, a
    bidirectional override, a line break in a log line) or over 200 characters is refused."""
    text = str(name)
    if len(text) > 200 or printable(text) != text:
        raise ModelError(f"{path}: the model's name holds control characters or is too long: not a file to trust")
    return text
