"""Where dlib's five landmarks land in SFace's 112x112 chip, for detectors that give no keypoints.

    python benchmarks/sface_landmarks.py [--data ../shared/datasets]

On the 100 celeba_ids fitting identities (retinaface, largest face): each face's chip is defined by
retinaface's five keypoints and the ArcFace template; dlib's five landmarks of the same face are mapped into
that chip and the median over the faces is printed (`siamface.embedding.sface.LANDMARKS_IN_CHIP`). Then
SFace's verification on the fitting pairs, aligned from the keypoints and, as a face from ``haar``/``hog``
would be, from dlib's landmarks onto those medians: EER and TAR at FAR 1e-3 for both.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _facecache import all_pairs, celeba_files, detections, embeddings, fit_split, pair_scores  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.alignment import similarity_transform  # noqa: E402
from siamface.embedding.sface import ARCFACE_TEMPLATE, SFACE_INFO, SFaceEncoder  # noqa: E402
from siamface.evaluation.metrics import eer, tar_at_far  # noqa: E402
from siamface.image import load_image  # noqa: E402


class _LandmarksOnly(SFaceEncoder):
    """SFace with every face aligned from dlib's landmarks (as for a detector without keypoints)."""

    def __init__(self, landmarks_in_chip: np.ndarray) -> None:
        super().__init__()
        points = tuple((float(x) / 112, float(y) / 112) for x, y in np.round(landmarks_in_chip, 1))
        chip = replace(SFACE_INFO.chip, template=points, landmark_template=points)
        self.info = replace(SFACE_INFO, version=f"{SFACE_INFO.version}-from-landmarks-{points}", chip=chip)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    args = ap.parse_args(argv)
    celeba = Path(args.data) / "celeba_ids"
    files, labels = celeba_files(celeba)
    fit = fit_split(labels)
    files = [f for f, k in zip(files, fit) if k]
    labels = labels[fit]
    det = Pipeline(detector="retinaface").detector
    dets = detections(celeba, files, det, "retinaface")
    template = np.array(ARCFACE_TEMPLATE)
    mapped = []
    for f in files:
        faces = dets[f]
        if faces is None or not len(faces) or "keypoints" not in faces.data:
            continue
        image_shape = load_image(celeba / f).shape
        k = faces.chosen("largest", image_shape)
        m = similarity_transform(faces.data["keypoints"][k], template)
        lm = faces.landmarks[k].astype(np.float64)
        mapped.append(lm @ m[:, :2].T + m[:, 2])
    mapped = np.array(mapped)
    median = np.median(mapped, axis=0)
    print(f"faces {len(mapped)}")
    for (x, y), (sx, sy) in zip(median, mapped.std(axis=0)):
        print(f"landmark_in_chip {x:.1f} {y:.1f}  (sd {sx:.1f} {sy:.1f})")
    i, j, y = all_pairs(labels)
    # no keypoints in the detections handed over: every face aligned from its landmarks
    no_kps = {f: (replace(v, data={}) if v is not None else None) for f, v in dets.items()}
    for tag, encoder, found in (("keypoints", SFaceEncoder(), dets), ("landmarks", _LandmarksOnly(median), no_kps)):
        emb = embeddings(f"sface-{tag}", celeba, files, found, Pipeline(detector=det, model=encoder))
        s = pair_scores(emb, i, j)
        print(f"sface.aligned_from_{tag}.eer {eer(s, y)[0]:.4f}")
        print(f"sface.aligned_from_{tag}.tar_at_far_0.001 {tar_at_far(s, y, 1e-3).tar:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
