"""Write SFace's fp32 ONNX conversion (and YuNet's) to a file, as siamface makes it in its cache on first use.

    python tools/convert_sface.py OUT.onnx [--source ../shared/models/sface/face_recognition_sface_2021dec_int8bq.onnx]
    python tools/convert_sface.py OUT.onnx --yunet [--source face_detection_yunet_2023mar_int8bq.onnx]

The conversion is siamface's own (`siamface.embedding.sface.build_sface_onnx`,
`siamface.detection.yunet.build_yunet_onnx`, both `siamface._quantised.fold_dequantisation`): dangling
graph inputs pruned, block de-quantisation folded into fp32, dynamic batch (YuNet: image size). It is
deterministic: a rerun writes the same bytes (the sha256 printed). The package ships the original int8bq
files (10.7 MB and 0.12 MB, against 38.7 MB and 0.23 MB converted) and converts them on first use.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--source", help="the int8bq file (default: the one shipped in the package)")
    ap.add_argument("--yunet", action="store_true", help="convert YuNet instead of SFace")
    args = ap.parse_args(argv)
    if args.yunet:
        from siamface.detection.yunet import MODEL_FILE
        from siamface.detection.yunet import build_yunet_onnx as build
    else:
        from siamface.embedding.sface import MODEL_FILE
        from siamface.embedding.sface import build_sface_onnx as build
    data = build(args.source or MODEL_FILE)
    Path(args.out).write_bytes(data)
    print(f"{args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
