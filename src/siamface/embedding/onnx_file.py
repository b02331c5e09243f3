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
training data. The metadata is checked against what siamface can run and against the graph when the file is
loaded, and the output when it runs (`_contract`); a file keeping its weights elsewhere (ONNX external data) is
refused. `preprocess` turns aligned chips into the network's input; the trainer uses the same function, so
training and run time cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import math
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
#: The largest input side and chip side a model file may ask for (the trained ones: 64, 150, 160): a hand-edited
#: file asking for more would have every face resized to a buffer of gigabytes.
MAX_SIDE = 1024
#: The longest embedding a model file may state.
MAX_EMBEDDING = 8192


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


def _chip_spec(meta) -> ChipSpec:
    """The `ChipSpec` of a ``chip`` metadata entry; ValueError when it is not one a face can be cropped to (a
    side outside 1..`MAX_SIDE`, a negative or non-finite padding or margin, an unknown crop)."""
    if not isinstance(meta, dict) or "size" not in meta:
        raise ValueError("not an object with a size")
    padding, margin = _number(meta.get("padding", 0.25)), _number(meta.get("margin", 0.0))
    if padding < 0 or margin < 0:
        raise ValueError("padding and margin must be >= 0")
    return ChipSpec(
        size=_whole(meta["size"], "chip size", 1, MAX_SIDE),
        padding=padding,
        crop=str(meta.get("crop", "landmarks")),
        margin=margin,
        square=bool(meta.get("square", True)),
    )


def _number(value) -> float:
    """A finite JSON number (not a boolean, not a string), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _whole(value, what: str, low: int, high: int) -> int:
    """A whole JSON number in [low, high] (8 or 8.0; not 8.7, "8" or true), else ValueError."""
    try:
        number = _number(value)
    except ValueError:
        number = math.nan
    if not (low <= number <= high and number == int(number)):
        raise ValueError(f"{what} {value!r} is not a whole number in {low}..{high}")
    return int(number)


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
    _refuse_external_data(data, path)
    try:
        return new_session(data, num_threads), hashlib.sha256(data).hexdigest()
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime could not load {path}: {exc}") from None


def _refuse_external_data(data: bytes, path: Path) -> None:
    """`ModelError` when a tensor of the model keeps its values in another file (ONNX external data): made from
    bytes, ONNX Runtime reads such a file relative to the working directory, not the model's, so whoever may
    write a file of that name in whatever folder a command runs from would choose the weights, and the version
    galleries bind (the digest of the model file) would not cover them. ``siamface train`` never writes one."""
    from google.protobuf.message import DecodeError
    from onnx import ModelProto

    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:  # refused, not left to onnxruntime, which might read
        # what this parser cannot (nesting deeper than its limit) and the external data in it
        raise ModelError(f"{path}: not an ONNX model ({str(exc)[:200] or type(exc).__name__})") from None
    name = _external_tensor(model)
    if name is not None:
        raise ModelError(
            f"{path}: tensor {printable(name)[:80]!r} keeps its weights in another file (ONNX external data); "
            "siamface runs only a self-contained model file (save it with save_as_external_data=False)"
        )


def _external_tensor(message) -> str | None:
    """The name of a tensor anywhere in `message` (an ONNX ModelProto: initialisers, node attributes, subgraphs,
    functions) whose data is external, else None."""
    from google.protobuf.message import Message
    from onnx import TensorProto

    if isinstance(message, TensorProto) and message.data_location == TensorProto.EXTERNAL:
        return message.name or "(unnamed)"
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        for item in [value] if isinstance(value, Message) else value:
            found = _external_tensor(item)
            if found is not None:
                return found
    return None


def _contract(meta: dict, session, path: Path) -> dict:
    """The file's preprocessing contract, checked against what siamface can run and against the graph's own
    input and output: a hand-edited (or foreign) file whose metadata is wrong is refused when it is loaded,
    rather than failing at the first face with a traceback, running out of memory on a side of 100,000
    pixels, or comparing embeddings it misreads. Returns batch (1 for a graph of fixed batches of one, else
    None), input_size, channels, mean, std (float32 arrays),
    embedding_size, threshold, chip (a `ChipSpec`)."""
    try:
        size = _whole(meta["input_size"], "input_size", 1, MAX_SIDE)
        channels = _whole(meta["channels"], "channels", 1, 3)
        if channels == 2:
            raise ValueError("channels 2 is neither 1 (grey) nor 3 (RGB)")
        mean, std = (_per_channel(meta[key], key, channels) for key in ("mean", "std"))
        if (std <= 0).any():
            raise ValueError(f"std {meta['std']!r} is not above 0")
        embedding_size = _whole(meta["embedding_size"], "embedding_size", 1, MAX_EMBEDDING)
        if meta["metric"] != "cosine":
            raise ValueError(f"metric {meta['metric']!r} is not cosine, the only comparison siamface makes")
        try:
            threshold = _number(meta["threshold"])
        except ValueError as exc:
            raise ValueError(f"threshold {exc}") from None
        chip = meta.get("chip", {"size": 150, "padding": 0.25})
        try:
            chip = _chip_spec(chip)
        except ValueError as exc:
            raise ValueError(f"chip {chip!r}: {exc}") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise ValueError(
                f"the graph takes {[i.name for i in inputs]} and gives {[o.name for o in outputs]}, not one "
                f"input {INPUT_NAME!r} and an output {OUTPUT_NAME!r}"
            )
        output = next(o for o in outputs if o.name == OUTPUT_NAME)
        if inputs[0].type != "tensor(float)":
            raise ValueError(f"the graph's input is a {inputs[0].type}, not a tensor(float)")
        _same_shape(inputs[0].shape, ["n", channels, size, size], "input")
        _same_shape(output.shape, ["n", embedding_size], "output")
        batch = inputs[0].shape[0]
        if isinstance(batch, int) and batch != 1:  # one face at a time runs a graph made for batches of one
            raise ValueError(f"the graph takes batches of exactly {batch} faces, not any number (or one)")
    except ValueError as exc:
        raise ModelError(f"{path}: the model's metadata does not describe it: {exc}") from None
    return {
        "batch": 1 if batch == 1 else None,
        "input_size": size,
        "channels": channels,
        "mean": mean,
        "std": std,
        "embedding_size": embedding_size,
        "threshold": threshold,
        "chip": chip,
    }


def _per_channel(value, what: str, channels: int) -> np.ndarray:
    """``mean`` or ``std``: one finite number, or one per channel."""
    values = value if isinstance(value, list) else [value]
    if len(values) not in (1, channels):
        raise ValueError(f"{what} {value!r} has {len(values)} values for {channels} channel(s)")
    try:
        return np.array([_number(v) for v in values], np.float32)
    except ValueError as exc:
        raise ValueError(f"{what} {exc}") from None


def _same_shape(declared, wanted: list, what: str) -> None:
    """ValueError when the graph's declared shape of its `what` differs from the metadata's: another rank, or
    a fixed dimension of another size (a named or unknown dimension is checked when the model runs)."""
    declared = list(declared or [])
    if len(declared) != len(wanted) or any(
        isinstance(d, int) and isinstance(w, int) and d != w for d, w in zip(declared, wanted)
    ):
        shown = ", ".join(str(w) for w in wanted)
        raise ValueError(f"the graph's {what} is {declared}, the metadata says ({shown})")


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
        contract = _contract(m, self._session_obj, self.path)
        self.input_size, self.channels = contract["input_size"], contract["channels"]
        self._mean, self._std = contract["mean"], contract["std"]
        self.batch_size = contract["batch"] or int(batch_size)
        self.info = ModelInfo(
            name=_model_name(m.get("name") or self.path.stem, self.path),
            version=digest[:16],
            embedding_size=contract["embedding_size"],
            chip=contract["chip"],
            metric="cosine",
            threshold=contract["threshold"],
            threshold_source=str(m.get("threshold_source", "stored in the model file")),
            impostor_median=_impostor_median(m.get("impostor_median"), self.path),
            extra={"path": str(self.path), **{k: v for k, v in m.items() if k not in ("name", "threshold")}},
        )
        self._lock = threading.Lock()

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, self.info.chip.size)
        if len(chips) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        x = preprocess(chips, self.input_size, self.channels, self._mean, self._std)
        parts = []
        for start in range(0, len(x), self.batch_size):
            batch = x[start : start + self.batch_size]
            try:
                (out,) = self._session_obj.run([OUTPUT_NAME], {INPUT_NAME: batch})
            except Exception as exc:  # onnxruntime raises its own exception types
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ModelError(f"{self.path}: onnxruntime could not run the model: {why[:300]}") from None
            # a graph whose named dimensions hid another size, or whose weights give NaN, is caught here rather
            # than as a concatenation traceback or a NaN stored as a template
            wanted = (len(batch), self.info.embedding_size)
            if np.shape(out) != wanted:
                raise ModelError(f"{self.path}: the model gave an output of shape {np.shape(out)}, not {wanted}")
            if not np.isfinite(out).all():
                raise ModelError(f"{self.path}: the model gave non-finite values (NaN or infinity) for a face")
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
