"""Print the `siamface._conversions.KNOWN_CONVERSIONS` table: each converter run on its installed source file.

    python tools/conversion_hashes.py

Run after a converter (and its CONVERTER_VERSION) changes, or when a package ships a new source file, and
paste the output into src/siamface/_conversions.py. Each conversion is made twice to show it is deterministic.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from siamface._files import file_sha256  # noqa: E402
from siamface._models import dlib_model_path  # noqa: E402
from siamface.detection import yunet  # noqa: E402
from siamface.detection.mmod_onnx import MMOD_CONVERTER_VERSION, build_mmod_onnx  # noqa: E402
from siamface.embedding import sface  # noqa: E402
from siamface.embedding.dlib_onnx import CONVERTER_VERSION, build_resnet_onnx  # noqa: E402
from siamface.embedding.facenet_onnx import CONVERTER_VERSION as FACENET_VERSION  # noqa: E402
from siamface.embedding.facenet_onnx import build_facenet_onnx, facenet_graph_path  # noqa: E402


def main() -> int:
    for source, build, version in (
        (dlib_model_path("resnet"), build_resnet_onnx, CONVERTER_VERSION),
        (dlib_model_path("mmod"), lambda p: build_mmod_onnx(p)[0], MMOD_CONVERTER_VERSION),
        (facenet_graph_path(), build_facenet_onnx, FACENET_VERSION),
        (sface.MODEL_FILE, sface.build_sface_onnx, sface.CONVERTER_VERSION),
        (yunet.MODEL_FILE, yunet.build_yunet_onnx, yunet.CONVERTER_VERSION),
    ):
        made = {hashlib.sha256(build(source)).hexdigest() for _ in range(2)}
        if len(made) != 1:
            print(f"# {source.name}: two conversions differ: not deterministic", file=sys.stderr)
            return 1
        print(f"    # {source.name}\n    ({file_sha256(source)!r}, {version}): ({made.pop()!r}),")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
