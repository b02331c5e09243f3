"""Where the detector's five keypoints land in dlib's 150 px chip, and dlib's ResNet aligned from them.

    python benchmarks/dlib_keypoints.py [--data ../shared/datasets]

On the 100 celeba_ids fitting identities (retinaface, largest face): each face's dlib chip is defined by dlib's
five landmarks (`siamface.alignment.chip_transform`); retinaface's five keypoints of the same face are mapped
into that chip and the median over the faces is printed (`siamface.embedding.dlib_resnet.KEYPOINTS_IN_CHIP`).
Then dlib's verification on the fitting pairs, aligned from its landmarks (``dlib-resnet``) and from the
keypoints onto those medians, refined for small faces as the product does (``dlib-resnet`` with
``keypoints=True``, the part of `sface+dlib`): EER and TAR at FAR 1e-3 for both. The fusion's weight and
thresholds are fitted by sface_fit.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from fusion_fit import fit_sets  # noqa: E402

from siamface.alignment import DLIB_CHIP, chip_transform  # noqa: E402
from siamface.evaluation.metrics import eer, tar_at_far  # noqa: E402
from siamface.image import load_image  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    args = ap.parse_args(argv)
    sets = fit_sets(Path(args.data))
    mapped = []
    for f in sets.files:
        faces = sets.dets[f]
        if faces is None or not len(faces) or "keypoints" not in faces.data:
            continue
        k = faces.chosen("largest", load_image(sets.celeba / f).shape)
        points = faces.data["keypoints"][k].astype(np.float64)
        if not np.isfinite(points).all():
            continue
        to_chip = cv2.invertAffineTransform(chip_transform(faces.landmarks[k], DLIB_CHIP))
        mapped.append(points @ to_chip[:, :2].T + to_chip[:, 2])
    mapped = np.array(mapped)
    print(f"faces {len(mapped)}")
    for (x, y), (sx, sy) in zip(np.median(mapped, axis=0), mapped.std(axis=0)):
        print(f"keypoint_in_chip {x:.1f} {y:.1f}  (sd {sx:.1f} {sy:.1f})")
    for tag, options in (("landmarks", {}), ("keypoints", {"keypoints": True})):
        s, _ = sets.scores("dlib-resnet", False, **options)
        print(f"dlib-resnet.aligned_from_{tag}.eer {eer(s, sets.y)[0]:.4f}")
        print(f"dlib-resnet.aligned_from_{tag}.tar_at_far_0.001 {tar_at_far(s, sets.y, 1e-3).tar:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
