"""The passive liveness decision on one face: the default (weights the project may ship), or a user's combiner.

The default (``passive_v5``, `PassiveCheck()`), for a **colour** camera::

    face ──► MiniFASNetV2 / V1SE (pretrained, Apache-2.0): mean probability of real >= CNN_THRESHOLD
         ──► colour spread of the inner face (`colour.colour_spread`) >= COLOUR_MIN   (no weights)
         ──► live when both hold; the frame cue (`frame_sides`) is reported, not decided on

and for a **grey** camera (``camera="grey"``: IR, monochrome): the frame converted to grey, the same pair at
``GREY_CNN_THRESHOLD``, no colour test (a grey camera has none). Nothing in it was fitted by the project: the
two networks are Minivision's, unchanged; the three thresholds were chosen by evaluating on the training
split of the shared development data (see the README, Liveness), which is the only way data shaped them.

A **user's combiner** (`PassiveCheck(path)`): the logistic combination of the texture model, the CNN pair
and the frame cue that ``python -m siamface.liveness.train --combine`` or ``tools/finetune_minifasnet.py``
write, for users who hold data they may train on. The file names its CNN pair (``networks``, a folder
relative to the file; else the shipped pretrained pair) and its texture model (``texture``, a file relative
to it; default ``passive_v2.npz`` beside it). Its inputs::

    cues ──► inputs (log-odds of each model; the frame cue's count of straight sides) ──► logistic ──► score

The package ships no such file: the ones the project fitted (passive_v2, passive_v3, passive_v4) were
trained on NUAA, replay_crops and celeba_ids, whose terms do not allow shipping them (`siamface.provenance`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError
from .cnn import AntiSpoofCnn, CnnScore
from .colour import colour_reading, colour_spread, to_grey
from .passive import SIDES, PassiveLiveness, features, frame_sides, is_framed

#: the camera kinds the passive check knows
CAMERAS = ("colour", "grey")
#: the default check's name and thresholds (how they were chosen: docs/liveness.md)
DEFAULT_NAME = "passive_v5"
CNN_THRESHOLD = 0.125  # BPCER <= 2 % on every live source of the training split (NUAA, replay crops, celeba_ids)
GREY_CNN_THRESHOLD = 0.05  # APCER <= 5 % on the training split's printed photos and replays, read as grey
COLOUR_MIN = 0.013  # BPCER <= 1 % on every live source of the training split; grey or tinted faces <= 0.006
#: the combiner's inputs, in order
INPUTS = ("texture", "minifasnet_v2", "minifasnet_v1se", "frame_sides")
EPS = 0.01  # no cue is trusted beyond 99 % either way: log-odds within +-4.6


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def combiner_inputs(texture, cnn, sides) -> np.ndarray:
    """(n, 4): log-odds of the texture model and of each network, and the number of framed sides (0-4)."""
    texture = np.atleast_1d(np.asarray(texture, np.float64))
    cnn = np.asarray(cnn, np.float64).reshape(-1, 2)
    sides = np.asarray(sides, np.float64).reshape(-1, len(SIDES))
    return np.column_stack([logit(texture), logit(cnn[:, 0]), logit(cnn[:, 1]), sides.sum(axis=1)])


def default_live(cnn, colour, camera: str = "colour") -> np.ndarray:
    """The default decision from its cues (arrays of n faces): the pair's mean probability of real
    (``cnn`` (n, 2), on the grey frame for a grey camera) and, for a colour camera, the colour spread."""
    mean = np.asarray(cnn, np.float64).reshape(-1, 2).mean(axis=1)
    if camera == "grey":
        return mean >= GREY_CNN_THRESHOLD
    return (mean >= CNN_THRESHOLD) & (np.asarray(colour, np.float64).reshape(-1) >= COLOUR_MIN)


@dataclass
class PassiveScore:
    """One face's passive check: every cue, the score compared with the threshold, and the decision.

    The default check's `score` is the CNN pair's mean probability of real, and `colour` (the colour spread)
    must also reach `colour_min` on a colour camera; a user's combiner's `score` is its combined probability
    (`texture` its texture model's)."""

    score: float
    threshold: float
    model: str
    texture: float | None
    cnn: CnnScore
    frame: tuple[str, ...] = ()
    colour: float | None = None
    colour_min: float | None = None
    camera: str = "colour"
    cues: dict = field(default_factory=dict)
    readable: bool = True  # False: the colour cue could not read the face (too small or too dark): no verdict

    @property
    def framed(self) -> bool:
        """The frame cue alone would call it a photo or a screen (straight edges on 3-4 sides); evidence,
        not a veto."""
        return is_framed(self.frame)

    @property
    def colourless(self) -> bool:
        """On a colour camera, a face with no colour of skin (grey, or one uniform tint)."""
        return self.colour_min is not None and self.colour is not None and self.colour < self.colour_min

    @property
    def live(self) -> bool:
        return self.score >= self.threshold and not self.colourless

    @property
    def decision_score(self) -> float:
        return 0.0 if self.colourless else self.score

    def to_dict(self) -> dict:
        out = {
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "live": self.live,
            "model": self.model,
            "camera": self.camera,
            "cnn": self.cnn.to_dict(),
            "frame": list(self.frame),
            "framed": self.framed,
        }
        if self.texture is not None:
            out["texture"] = round(self.texture, 4)
        if self.colour is not None:
            out["colour"] = round(self.colour, 4)
            out["colour_min"] = self.colour_min
            out["colourless"] = self.colourless
            out["readable"] = self.readable
        return out


class PassiveCheck:
    """The passive check: the default (``path`` None), or a user's combiner file. ``threshold`` overrides
    the CNN threshold of the default (or the file's); ``camera``: "colour" or "grey" (see the module
    docstring; a user's combiner is used as it was fitted, on colour frames)."""

    def __init__(
        self,
        path: str | Path | None = None,
        threshold: float | None = None,
        texture: PassiveLiveness | None = None,
        cnn: AntiSpoofCnn | None = None,
        camera: str = "colour",
    ) -> None:
        if camera not in CAMERAS:
            raise ConfigError(f"camera must be one of {', '.join(CAMERAS)}, not {camera!r}")
        self.camera = camera
        self.path = None if path is None else Path(path)
        self.texture = texture
        self.meta: dict = {}
        if self.path is None:
            self.name = DEFAULT_NAME if camera == "colour" else f"{DEFAULT_NAME}-grey"
            default = GREY_CNN_THRESHOLD if camera == "grey" else CNN_THRESHOLD
            self.threshold = float(threshold) if threshold is not None else default
            self.cnn = cnn or AntiSpoofCnn()
            return
        path = self.path
        if not path.is_file():
            raise ModelError(f"liveness model {path} is missing")
        try:
            data = json.loads(path.read_text())
            self.mean = np.array(data["mean"], np.float64)
            self.scale = np.array(data["scale"], np.float64)
            self.weights = np.array(data["weights"], np.float64)
            self.bias = float(data["bias"])
            self.meta = data["meta"]
            file_threshold = float(data["threshold"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"liveness model {path} is not a combiner file ({exc})") from None
        if list(data.get("inputs", [])) != list(INPUTS):
            raise ModelError(f"liveness model {path} expects inputs {data.get('inputs')}, not {list(INPUTS)}")
        self.threshold = float(threshold) if threshold is not None else file_threshold
        self.name = self.meta.get("name", path.stem)
        networks, texture_file = data.get("networks"), data.get("texture", "passive_v2.npz")
        if cnn is None and networks is not None and not isinstance(networks, str):
            raise ModelError(f"liveness model {path}: 'networks' must name a folder")
        if not isinstance(texture_file, str):
            raise ModelError(f"liveness model {path}: 'texture' must name a file")
        self.texture = texture or PassiveLiveness(path.parent / texture_file)
        self.cnn = cnn or (AntiSpoofCnn(path.parent / networks) if networks is not None else AntiSpoofCnn())

    @property
    def combiner(self) -> bool:
        """A user's combiner file (not the default)?"""
        return self.path is not None

    def combine(self, texture, cnn, sides) -> np.ndarray:
        """A user's combiner: combined probability of live from the cues' values (arrays of n faces)."""
        z = ((combiner_inputs(texture, cnn, sides) - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

    def score(self, image: np.ndarray, box) -> PassiveScore:
        frame = frame_sides(image, box)
        if not self.combiner:
            seen = to_grey(image) if self.camera == "grey" else image
            v2, v1se = self.cnn.probabilities(seen, [box])[0]
            cnn = CnnScore(float(v2), float(v1se))
            reading = None if self.camera == "grey" else colour_reading(image, box)
            colour = None if self.camera == "grey" else (reading or 0.0)
            return PassiveScore(
                cnn.score,
                self.threshold,
                self.name,
                None,
                cnn,
                frame,
                colour=colour,
                colour_min=None if colour is None else COLOUR_MIN,
                camera=self.camera,
                readable=self.camera == "grey" or reading is not None,
            )
        texture = float(self.texture.probability(features(image, box))[0])
        v2, v1se = self.cnn.probabilities(image, [box])[0]
        sides = [[side in frame for side in SIDES]]
        score = float(self.combine([texture], [[v2, v1se]], sides)[0])
        return PassiveScore(
            score,
            self.threshold,
            self.name,
            texture,
            CnnScore(float(v2), float(v1se)),
            frame,
            colour=colour_spread(image, box),  # evidence: a user's combiner decides without it
            camera=self.camera,
        )


def liveness_models() -> list[dict]:
    """The liveness checks and files shipped, for ``siamface models``: the default check (grey camera too),
    then every file of the liveness model folder with its provenance record (source, licence, training
    data), then the frame and colour cues (no files)."""
    from ..provenance import describe

    models = [
        {
            "name": DEFAULT_NAME,
            "default": True,
            "role": "the passive decision on a colour camera: the pretrained CNN pair's mean probability of real "
            f">= {CNN_THRESHOLD}, and the face's colour spread >= {COLOUR_MIN} (no learned weights of our own)",
            "file": None,
            "threshold": CNN_THRESHOLD,
            "source": "siamface (thresholds chosen on the training split of the development data: docs/liveness.md)",
            "licence": "MIT",
            "training_data": [],
        },
        {
            "name": f"{DEFAULT_NAME}-grey",
            "role": f"the passive decision on a grey camera (--camera grey): the pair on the grey frame >= "
            f"{GREY_CNN_THRESHOLD}",
            "file": None,
            "threshold": GREY_CNN_THRESHOLD,
            "source": "siamface (thresholds chosen on the training split of the development data: docs/liveness.md)",
            "licence": "MIT",
            "training_data": [],
        },
    ]
    for entry in describe(["liveness/models"]):
        name = Path(entry["file"]).name
        if name.endswith(".onnx"):
            models.append({"name": Path(name).stem, "role": "anti-spoofing CNN (pretrained)", **entry})
    for name, role in (
        ("frame", "frame cue: straight edges around the face (geometry, no weights; evidence only)"),
        ("colour", "colour cue: spread of the inner face's saturation (no weights)"),
    ):
        models.append({"name": name, "role": role, "file": None, "source": "siamface", "licence": "MIT"})
    return models
