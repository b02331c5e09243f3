"""Where every file shipped in the package's model folders comes from, and whether it may ship.

Each model folder (``detection/models``, ``liveness/models``, ``embedding/models`` when there is one) holds a
``PROVENANCE.json``: for every other file in the folder, its ``source``, ``licence`` and ``training_data`` (the
data sets its weights were fitted on, as keys of `DATASETS`; an empty list for a file with no weights: a
licence text, a notice, a source note) and, for a statistic measured on data (the impostor tails),
``measured_on``: those data sets, which must be known, and may be development sets (no weights are fitted). `problems` lists what would make the package unshippable: a file
with no record, a record for a file that is not there, a data set that is not in `DATASETS`, or one whose
terms do not allow shipping weights fitted on it. ``siamface models`` prints the records.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelError

PACKAGE = Path(__file__).parent
#: the package's folders of shipped model files
MODEL_FOLDERS = ("detection/models", "liveness/models", "embedding/models")
RECORD = "PROVENANCE.json"

#: training data -> (its terms, may weights fitted on it ship in the package?)
DATASETS: dict[str, tuple[str, bool]] = {
    # the project's development sets (../shared/datasets): evaluation only, never weights that ship
    "nuaa": ("NUAA Photograph Imposter Database: research use only", False),
    "replay_crops": ("no licence stated; test and development only", False),
    "replay_videos": ("no licence stated; test and development only", False),
    "celeba_ids": ("CelebA: non-commercial research purposes only", False),
    "att_faces": ("AT&T (ORL) faces: free for research, credit given", False),
    "yale_faces": ("Yale faces: research use", False),
    "videos_hamilton": ("a clip of a broadcast: no licence to redistribute", False),
    "deepface_pairs": ("test photos of private individuals: no licence to redistribute", False),
    # pretrained upstream releases: the weights come with their licence, which allows shipping them
    "upstream:silent-face": (
        "Minivision's training data for Silent-Face-Anti-Spoofing (not stated upstream); the weights are "
        "released under Apache-2.0",
        True,
    ),
    "upstream:retinaface": (
        "WIDER FACE, as trained by biubug6/Pytorch_Retinaface; the weights are released under MIT",
        True,
    ),
    "upstream:mediapipe": ("Google's data for MediaPipe BlazeFace; the weights are released under Apache-2.0", True),
    "upstream:yunet": (
        "WIDER FACE, as trained by ShiqiYu/libfacedetection.train; the weights are released under MIT",
        True,
    ),
    "upstream:sface": (
        "not named by OpenCV Zoo (the SFace paper: CASIA-WebFace, VGGFace2, MS1M-derived data); the weights are "
        "released under Apache-2.0",
        True,
    ),
}


def record_file(folder: str | Path) -> Path:
    folder = Path(folder)
    return (folder if folder.is_absolute() else PACKAGE / folder) / RECORD


def records(folder: str | Path) -> dict[str, dict]:
    """The folder's records: file name -> {source, licence, training_data}; {} when it has none."""
    path = record_file(folder)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(name): dict(entry) for name, entry in data["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path} is not a provenance record ({exc})") from None


def shipped_files(folder: str | Path) -> list[str]:
    """The files of a model folder (recursively, relative names), less its record."""
    root = record_file(folder).parent
    if not root.is_dir():
        return []
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.name != RECORD and "__pycache__" not in p.parts
    )


def problems(folders=MODEL_FOLDERS) -> list[str]:
    """Why the package's model files may not ship as they are (empty: they may)."""
    found = []
    for folder in folders:
        files, recorded = shipped_files(folder), records(folder)
        for name in files:
            entry = recorded.get(name)
            if entry is None:
                found.append(f"{folder}/{name}: no provenance record")
                continue
            for key in ("source", "licence", "training_data"):
                if key not in entry:
                    found.append(f"{folder}/{name}: the record has no {key}")
            for dataset in entry.get("training_data", []):
                terms = DATASETS.get(dataset)
                if terms is None:
                    found.append(f"{folder}/{name}: training data {dataset!r} has no known terms")
                elif not terms[1]:
                    found.append(f"{folder}/{name}: trained on {dataset} ({terms[0]}), which may not ship")
            for dataset in entry.get("measured_on", []):
                if dataset not in DATASETS:
                    found.append(f"{folder}/{name}: measured on {dataset!r}, which has no known terms")
        for name in sorted(set(recorded) - set(files)):
            found.append(f"{folder}/{name}: recorded but not shipped")
    return found


def describe(folders=MODEL_FOLDERS) -> list[dict]:
    """Every shipped model file with its record, for ``siamface models``."""
    out = []
    for folder in folders:
        recorded = records(folder)
        for name in shipped_files(folder):
            entry = recorded.get(name, {})
            out.append(
                {
                    "file": f"{folder}/{name}",
                    "source": entry.get("source"),
                    "licence": entry.get("licence"),
                    "measured_on": entry.get("measured_on", []),
                    "training_data": [
                        f"{d} ({DATASETS[d][0]})" if d in DATASETS else d for d in entry.get("training_data", [])
                    ],
                }
            )
    return out
