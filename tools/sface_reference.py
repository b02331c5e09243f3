"""Record OpenCV's SFace feature vectors for a few fixture faces, once, as the reference of tests/test_sface.py.

    python tools/sface_reference.py [--model ../shared/models/sface/face_recognition_sface_2021dec_int8bq.onnx]

OpenCV's own implementation (`cv2.FaceRecognizerSF`, in opencv-python-headless 4.x) runs the original
int8bq file as published (its dnn ignores the dangling inputs and de-quantises itself): for each face, the
image (an AT&T fixture, tinted so that the colour order matters, scaled x2 like a webcam face) is given to
``alignCrop`` with retinaface's five keypoints and the aligned crop to ``feature``. Written to
tests/fixtures/sface_reference.json: the image recipe, the keypoints and OpenCV's 128-d vector. The test
aligns with siamface's own code from the same keypoints and embeds with siamface's converted model.
A throwaway script: not imported by the package; rerun only to re-record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

FACES = ["s3/1.pgm", "s3/4.pgm", "s4/1.pgm", "s7/2.pgm"]
TINT = (1.0, 0.8, 0.55)  # R, G, B gains
SCALE = 2


def fixture_image(name: str) -> np.ndarray:
    """The RGB image the reference and the test both use: the AT&T face, tinted, scaled x2."""
    from siamface.image import load_image

    grey = load_image(ROOT / "tests" / "fixtures" / "att" / name)
    tinted = np.clip(grey.astype(np.float32) * np.array(TINT, np.float32), 0, 255).round().astype(np.uint8)
    return cv2.resize(tinted, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_LINEAR)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = ROOT.parent / "shared" / "models" / "sface" / "face_recognition_sface_2021dec_int8bq.onnx"
    ap.add_argument("--model", default=str(default))
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "sface_reference.json"))
    args = ap.parse_args(argv)
    from siamface.detection import create_detector

    recogniser = cv2.FaceRecognizerSF.create(args.model, "")
    detector = create_detector("retinaface")
    faces = []
    for name in FACES:
        image = fixture_image(name)
        found = detector.detect(image)
        kps = found.data["keypoints"][0].astype(np.float64).round(3)  # as recorded
        x1, y1, x2, y2 = found.boxes[0].astype(np.float64)
        row = np.array([[x1, y1, x2 - x1, y2 - y1, *kps.ravel(), found.scores[0]]], np.float32)
        crop = recogniser.alignCrop(np.ascontiguousarray(image[:, :, ::-1]), row)
        feature = recogniser.feature(crop).ravel()
        faces.append(
            {
                "file": name,
                "keypoints": [[round(float(x), 3), round(float(y), 3)] for x, y in kps],
                "feature": [float(v) for v in feature],
            }
        )
    payload = {
        "source": f"cv2.FaceRecognizerSF (OpenCV {cv2.__version__}) on {Path(args.model).name}, by "
        "tools/sface_reference.py",
        "image": {"tint_rgb": list(TINT), "scale": SCALE, "resize": "cv2.INTER_LINEAR"},
        "faces": faces,
    }
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {len(faces)} reference vectors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
