"""Calibrated thresholds: where `siamface calibrate` writes them and where the chain reads them.

A calibration file is JSON mapping a model name to a `Calibration` (threshold, the criterion that chose it,
the error rates measured at it, the data it was measured on). The user's calibration file is
``thresholds.json`` in ``$SIAMFACE_CONFIG_DIR`` or ``$XDG_CONFIG_HOME/siamface`` or ``~/.config/siamface``.
This module is the file format only: which threshold is in force (the caller's, a calibration file given
explicitly, the user's, the model's default) is decided in one place, `siamface.decision.resolve`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ._files import atomic_write_bytes, exclusive_lock
from .errors import ConfigError

FILE_NAME = "thresholds.json"


def config_dir() -> Path:
    if os.environ.get("SIAMFACE_CONFIG_DIR"):
        return Path(os.environ["SIAMFACE_CONFIG_DIR"])
    if os.environ.get("XDG_CONFIG_HOME"):
        return Path(os.environ["XDG_CONFIG_HOME"]) / "siamface"
    return Path.home() / ".config" / "siamface"


def user_calibration_file() -> Path:
    return config_dir() / FILE_NAME


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen from measurements, with what it was chosen for and what it achieved."""

    model: str
    threshold: float
    criterion: str  # "far=0.001", "eer", "best-accuracy" or "fpir=0.01"
    far: float  # false-accept rate measured at the threshold on the calibration data
    frr: float  # false-reject rate measured there
    dataset: str = ""
    detector: str = ""
    n_genuine: int = 0
    n_impostor: int = 0
    created: str = ""
    fpir: float | None = None  # a calibration for 1:N by FPIR ("fpir=X"): its target ...
    tail: dict | None = None  # ... and the impostor tail measured (`siamface.tails.ImpostorTail.to_dict`)
    #: The version of the model measured (`ModelInfo.version`; for a model file, the digest of its bytes): a
    #: calibration is of those embeddings only. "" (files of older releases): any version of the model's name.
    model_version: str = ""

    def describe(self) -> str:
        where = f" on {self.dataset}" if self.dataset else ""
        if self.fpir is not None:
            return (
                f"calibrated ({self.criterion}){where}: 1:1 at FAR {self.far:.4%} ({self.n_impostor} impostor pairs), "
                "1:N set by FPIR from this data's impostor tail"
            )
        return (
            f"calibrated ({self.criterion}){where}: FAR {self.far:.4%}, FRR {self.frr:.4%} "
            f"at this threshold ({self.n_genuine} genuine / {self.n_impostor} impostor pairs)"
        )


def read_calibrations(path: Path) -> dict[str, Calibration]:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable calibration file ({exc})") from None
    except RecursionError:  # JSON nested deeper than Python's stack: a traceback on every command that read it
        raise ConfigError(f"{path}: not a calibration file (JSON nested too deeply)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a calibration file (a JSON object of model name -> calibration)")
    out = {}
    for name, entry in raw.items():
        try:
            out[name] = Calibration(**entry)
        except TypeError as exc:
            raise ConfigError(f"{path}: unexpected calibration entry ({exc})") from None
        _check_entry(path, name, out[name])
    return out


def _check_entry(path: Path, name: str, cal: Calibration) -> None:
    """ConfigError unless the entry is of its model and its threshold and rates are finite numbers (the
    model's plausible range is checked where the model is known, `siamface.decision.find_calibration`)."""
    if cal.model != name:
        raise ConfigError(f"{path}: the entry of {name!r} is a calibration of {cal.model!r}")
    for field, value, low in (("threshold", cal.threshold, -1.0), ("far", cal.far, 0.0), ("frr", cal.frr, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{path}: the {field} of {name} is {value!r}, not a finite number")
        if not low <= value <= 1.0:
            raise ConfigError(f"{path}: the {field} of {name} is {value!r}, outside [{low:g}, 1]")


def load_calibration(model: str, path: Path | None = None) -> Calibration | None:
    """The calibration of `model` in `path` (default: the user's file), or None."""
    return read_calibrations(path or user_calibration_file()).get(model)


def save_calibration(calibration: Calibration, path: Path | None = None) -> Path:
    """Add or replace the model's entry in the calibration file; returns the file. The file is read, changed
    and written back under an advisory lock beside it (`siamface._files.exclusive_lock`: two calibrations
    written at once both stay, where one lost the other's entry) and replaced atomically (0600; a reader
    sees the whole file before or after)."""
    path = Path(path or user_calibration_file())
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path, "the calibration file"):
        entries = read_calibrations(path)
        entries[calibration.model] = calibration
        payload = {name: asdict(c) for name, c in sorted(entries.items())}
        atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode(), mode=0o600)
    return path
