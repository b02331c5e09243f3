"""The passive check on bona fide photos the liveness data does not cover: grey-level cameras (AT&T, Yale)
beside colour photos (deepface_pairs), for the default passive check on a colour camera (passive_v5), the
same in the grey-camera mode (``--camera grey``, passive_v5-grey), and, when given, passive_v4 (the previous
default, fitted on data whose terms forbid shipping it).

    python benchmarks/liveness_bona_fide.py [--data ../shared/datasets] [--finetuned DIR]

Each image's largest face (RetinaFace) is scored; the figure is the share refused as not live (BPCER). These
are photographs of live people taken by cameras, not presentation attacks, so every refusal is an error of
the check on that kind of camera.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _facecache import att_files, yale_files  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.image import load_image  # noqa: E402
from siamface.liveness import PassiveCheck  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    ap.add_argument("--finetuned", type=Path, metavar="DIR", help="passive_v4's files (see benchmarks/liveness.py)")
    args = ap.parse_args(argv)
    pipeline = Pipeline()
    checks = {"passive_v5": PassiveCheck(), "passive_v5-grey": PassiveCheck(camera="grey")}
    if args.finetuned:
        checks["passive_v4"] = PassiveCheck(args.finetuned / "passive_v4.json")
    yale, att = args.data / "yale_faces", args.data / "att_faces"
    sets = {
        "yale_faces (grey)": [yale / f for f in yale_files(yale)[0]],
        "att_faces (grey)": [att / f for f in att_files(att)[0]],
        "deepface_pairs (colour)": sorted((args.data / "deepface_pairs" / "dataset").glob("*.jpg")),
    }
    for name, files in sets.items():
        refused = {k: [] for k in checks}
        for path in files:
            image = load_image(path)
            faces = pipeline.detect(image)
            if not len(faces):
                continue
            box = faces.boxes[int(np.argmax(faces.areas))]
            for k, check in checks.items():
                refused[k].append(not check.score(image, box).live)
        cells = ", ".join(f"{k} {np.mean(v):.1%} ({int(np.sum(v))}/{len(v)})" for k, v in refused.items())
        print(f"bpcer {name}: {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
