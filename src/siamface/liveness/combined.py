"""The passive liveness decision: the CNN pair, the colour-texture model and the frame cue, combined.

    cues ──► inputs (log-odds of each model; the frame cue's count of straight sides) ──► logistic ──► score
    score >= threshold  ──►  live

* ``cnn``: the MiniFASNetV2 / V1SE pair (`siamface.liveness.cnn`, Apache-2.0), each network's probability
  of a real face: in ``passive_v4`` (the default) the pair fine-tuned by siamface (`tools/finetune_minifasnet.py
  --anchor 1`), shipped beside its combiner file (the file's ``networks`` entry); in ``passive_v3`` the
  pretrained pair;
* ``texture``: the project's colour-texture model (`PassiveLiveness`, ``passive_v2``);
* ``frame``: the straight edges found around the face (`frame_sides`). It is an input like the others,
  not a veto: door frames, shelves and collars put straight edges beside live faces too.

The combiner is a logistic regression over those inputs, fitted by ``python -m siamface.liveness.train
--combine`` on the training split only (subject-disjoint from the held-out data), with the texture model's
scores taken out of fold so that the combiner does not learn to trust a model on the faces it was fitted
to. Its threshold is chosen out of fold at a stated BPCER on every live source of the training split. The
default ships as ``models/passive_v4/`` (its combiner file with a few numbers and the figures it was measured
with, and its two networks); ``models/passive_v3.json``, the combiner over the pretrained pair, stays
(``PassiveCheck(PRETRAINED_COMBINED)``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .cnn import AntiSpoofCnn, CnnScore
from .passive import MODEL_DIR, SIDES, PassiveLiveness, features, frame_sides, is_framed

DEFAULT_COMBINED = MODEL_DIR / "passive_v4" / "passive_v4.json"
#: the previous default: the same kind of combiner over the pretrained CNN pair
PRETRAINED_COMBINED = MODEL_DIR / "passive_v3.json"
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


@dataclass
class PassiveScore:
    """One face's passive check: every cue, the combined probability of live and the decision."""

    score: float
    threshold: float
    model: str
    texture: float
    cnn: CnnScore
    frame: tuple[str, ...] = ()
    cues: dict = field(default_factory=dict)

    @property
    def framed(self) -> bool:
        """The frame cue alone would call it a photo or a screen (straight edges on 3-4 sides); evidence,
        not a veto: it is one input of `score`."""
        return is_framed(self.frame)

    @property
    def live(self) -> bool:
        return self.score >= self.threshold

    @property
    def decision_score(self) -> float:
        return self.score

    def to_dict(self) -> dict:
        return {
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "live": self.live,
            "model": self.model,
            "texture": round(self.texture, 4),
            "cnn": self.cnn.to_dict(),
            "frame": list(self.frame),
            "framed": self.framed,
        }


class PassiveCheck:
    """The shipped (or a given) combiner over its cue models. ``threshold`` overrides the file's. The CNN pair
    is ``cnn`` when given, else the folder the file's ``networks`` entry names (relative to the file), else
    the shipped pretrained pair."""

    def __init__(
        self,
        path: str | Path = DEFAULT_COMBINED,
        threshold: float | None = None,
        texture: PassiveLiveness | None = None,
        cnn: AntiSpoofCnn | None = None,
    ) -> None:
        path = Path(path)
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
        self.texture = texture or PassiveLiveness()
        networks = data.get("networks")
        if cnn is None and networks is not None and not isinstance(networks, str):
            raise ModelError(f"liveness model {path}: 'networks' must name a folder")
        self.cnn = cnn or (AntiSpoofCnn(path.parent / networks) if networks is not None else AntiSpoofCnn())

    def combine(self, texture, cnn, sides) -> np.ndarray:
        """Combined probability of live from the cues' values (arrays of n faces)."""
        z = ((combiner_inputs(texture, cnn, sides) - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

    def score(self, image: np.ndarray, box) -> PassiveScore:
        texture = float(self.texture.probability(features(image, box))[0])
        v2, v1se = self.cnn.probabilities(image, [box])[0]
        frame = frame_sides(image, box)
        sides = [[side in frame for side in SIDES]]
        score = float(self.combine([texture], [[v2, v1se]], sides)[0])
        return PassiveScore(score, self.threshold, self.name, texture, CnnScore(float(v2), float(v1se)), frame)


def liveness_models() -> list[dict]:
    """The shipped liveness models, for ``siamface models``: name, role, files, source and licence; the
    default combiner first."""
    from .cnn import LICENCE, NETWORKS, SOURCE

    texture = PassiveLiveness() if (MODEL_DIR / "passive_v2.npz").is_file() else None
    ours = "trained by siamface (python -m siamface.liveness.train{})"
    models = []
    for path, default in ((DEFAULT_COMBINED, True), (PRETRAINED_COMBINED, False)):
        combiner = json.loads(path.read_text()) if path.is_file() else {}
        meta = combiner.get("meta", {})
        own = combiner.get("networks") is not None
        models.append(
            {
                "name": meta.get("name", path.stem),
                "default": default,
                "role": "the passive decision: logistic combination of the texture model, the frame cue and "
                + ("its own fine-tuned CNN pair" if own else "the pretrained CNN pair"),
                "file": str(path.relative_to(MODEL_DIR)),
                "threshold": combiner.get("threshold"),
                "source": "trained by siamface (tools/finetune_minifasnet.py --anchor 1)"
                if own
                else ours.format(" --combine"),
                "licence": "MIT",
            }
        )
        for name, scale in NETWORKS.items() if own else ():
            models.append(
                {
                    "name": f"{meta.get('name', path.stem)}/{name}",
                    "role": f"anti-spoofing CNN fine-tuned by siamface, face box x{scale:g}, 80x80 BGR",
                    "file": str((path.parent / combiner["networks"] / f"{name}.onnx").relative_to(MODEL_DIR)),
                    "source": f"{SOURCE}, fine-tuned from the pretrained weights by tools/finetune_minifasnet.py",
                    "licence": f"{LICENCE} (LICENSE-silent-face, NOTICE-silent-face beside it)",
                }
            )
    for name, scale in NETWORKS.items():
        models.append(
            {
                "name": name,
                "role": f"anti-spoofing CNN (pretrained), face box x{scale:g}, 80x80 BGR",
                "file": f"{name}.onnx",
                "source": SOURCE + ", converted to ONNX by tools/convert_silent_face.py",
                "licence": f"{LICENCE} (LICENSE-silent-face, NOTICE-silent-face)",
            }
        )
    models.append(
        {
            "name": texture.name if texture else "passive_v2",
            "role": "colour-texture model (LBP, spectrum; logistic)",
            "file": "passive_v2.npz",
            "threshold": texture.threshold if texture else None,
            "source": ours.format(""),
            "licence": "MIT",
        }
    )
    models.append(
        {
            "name": "frame",
            "role": "frame cue: straight edges around the face (geometry, no weights)",
            "file": None,
            "source": "siamface",
            "licence": "MIT",
        }
    )
    return models
