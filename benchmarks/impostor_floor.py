"""The impostor score distribution of each shipped model: the floor of its plausible thresholds.

    python benchmarks/impostor_floor.py [--data ../shared/datasets]

Data: every impostor pair among the first 8 photos of the 100 fitting identities of celeba_ids
(`_facecache.fit_split`) and among all AT&T photos (retinaface). Prints, per model and data set, the
impostor similarity percentiles 50 / 90 / 99 and the lower of the two medians: `ModelInfo.impostor_median`,
below which `siamface.decision.check_threshold` refuses a threshold (it would let most strangers in).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _facecache import all_pairs, att_files, celeba_files, detections, embeddings, fit_split, pair_scores  # noqa: E402

from siamface import Pipeline  # noqa: E402

MODELS = (
    "dlib-resnet",
    "facenet",
    "dlib+facenet",
    "dlib-flip+facenet",
    "dlib+facenet-flip",
    "sface",
    "sface+dlib-flip",
    "sface+dlib",
    "sface+facenet",
    "sface+dlib-flip+facenet",
)


def _sets(data: Path) -> dict[str, tuple[Path, list[str], np.ndarray]]:
    """(root, files, identity of each) of the two data sets measured."""
    celeba_all, celeba_ids = celeba_files(data / "celeba_ids")
    keep = fit_split(celeba_ids)
    return {
        "celeba_ids fit": (data / "celeba_ids", [f for f, k in zip(celeba_all, keep) if k], celeba_ids[keep]),
        "AT&T": (data / "att_faces", *att_files(data / "att_faces")),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    sets = _sets(Path(parser.parse_args(argv).data))
    det = Pipeline(detector="retinaface").detector
    for model in MODELS:
        medians = []
        for label, (root, names, ids) in sets.items():
            dets = detections(root, names, det, "retinaface")
            emb = embeddings(model, root, names, dets, Pipeline(detector=det, model=model))
            i, j, y = all_pairs(ids)
            s = pair_scores(emb, i, j)
            imp = s[(y == 0) & (s > -1)]
            p50, p90, p99 = np.percentile(imp, [50, 90, 99])
            medians.append(p50)
            print(f"{model:20s} {label:15s} {len(imp):7d} impostor pairs: p50 {p50:.3f} p90 {p90:.3f} p99 {p99:.3f}")
        print(f"{model:20s} impostor median floor: {min(medians):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
