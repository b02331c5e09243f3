"""dlib vs ONNX Runtime for dlib's face ResNet: median milliseconds per face, batch 1 and batch 16.

    python benchmarks/engines.py [IMAGE_DIR] [--faces 32] [--repeats 15] [--threads N]

Faces come from real images under IMAGE_DIR (default ../shared/datasets/celeba_ids, else att_faces),
found with dlib's HOG detector (upsample 1) and aligned with the 5-point predictor and
dlib.get_face_chip(size=150, padding=0.25). Prints one figure per line, e.g. ``embed.dlib.batch1_ms 78.1``,
plus the conversion time and the largest difference between the two engines' descriptors.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".ppm"}


def default_dir() -> Path:
    for name in ("celeba_ids", "att_faces"):
        p = ROOT.parent / "shared" / "datasets" / name
        if p.is_dir():
            return p
    return ROOT.parent / "shared" / "datasets" / "celeba_ids"


def load_rgb(path: Path) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except OSError:
        return None


def aligned_chips(image_dir: Path, count: int) -> np.ndarray:
    import dlib

    from siamface._models import dlib_model_path

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(dlib_model_path("landmarks5")))
    chips = []
    for path in sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
        img = load_rgb(path)
        if img is None:
            continue
        rects = det(img, 1)
        if not rects:
            continue
        chips.append(dlib.get_face_chip(img, sp(img, rects[0]), size=150, padding=0.25))
        if len(chips) >= count:
            break
    if not chips:
        raise SystemExit(f"no face found under {image_dir}")
    return np.stack(chips).astype(np.uint8)


def median_ms_per_face(fn, batches: list[np.ndarray], repeats: int, warmup: int = 2) -> float:
    for b in batches[:warmup]:
        fn(b)
    times = []
    for r in range(repeats):
        b = batches[r % len(batches)]
        t = time.perf_counter()
        fn(b)
        times.append((time.perf_counter() - t) * 1000 / len(b))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", nargs="?", type=Path, default=None)
    ap.add_argument("--faces", type=int, default=32, help="faces to align (default 32)")
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per figure (default 15)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    args = ap.parse_args(argv)

    import dlib

    from siamface._models import dlib_model_path
    from siamface.embedding.dlib_onnx import cached_resnet_onnx
    from siamface.embedding.onnx_runtime import OnnxDlibResnet

    image_dir = args.image_dir or default_dir()
    chips = aligned_chips(image_dir, max(16, args.faces))
    print(f"faces {len(chips)}")
    print(f"source {image_dir}")

    dat = dlib_model_path("resnet")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        onnx_path = cached_resnet_onnx(dat, tmp)
        print(f"convert.resnet_s {time.perf_counter() - t:.2f}")
        print(f"onnx.resnet_mb {onnx_path.stat().st_size / 2**20:.1f}")
        enc = OnnxDlibResnet(onnx_path, num_threads=args.threads)
        t = time.perf_counter()
        enc.embed(chips[:1])
        print(f"onnx.session_first_call_s {time.perf_counter() - t:.2f}")

        rec = dlib.face_recognition_model_v1(str(dat))

        def dlib_embed(batch: np.ndarray) -> np.ndarray:
            if len(batch) == 1:
                return np.array(rec.compute_face_descriptor(batch[0]), np.float32)[None]
            return np.array([np.array(d) for d in rec.compute_face_descriptor(list(batch))], np.float32)

        singles = [chips[i:i + 1] for i in range(len(chips))]
        sixteens = [chips[i:i + 16] for i in range(0, len(chips) - 15, 16)] or [chips[:16]]

        ref = dlib_embed(chips)
        got = enc.embed(chips)
        cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        print(f"embed.max_abs_diff {np.abs(ref - got).max():.2e}")
        print(f"embed.min_cosine {cos.min():.7f}")

        d1 = median_ms_per_face(dlib_embed, singles, args.repeats)
        d16 = median_ms_per_face(dlib_embed, sixteens, max(3, args.repeats // 3))
        o1 = median_ms_per_face(enc.embed, singles, args.repeats)
        o16 = median_ms_per_face(enc.embed, sixteens, max(3, args.repeats // 3))
        print(f"embed.dlib.batch1_ms {d1:.1f}")
        print(f"embed.dlib.batch16_ms {d16:.1f}")
        print(f"embed.onnx.batch1_ms {o1:.1f}")
        print(f"embed.onnx.batch16_ms {o16:.1f}")
        print(f"embed.speedup.batch1 {d1 / o1:.2f}")
        print(f"embed.speedup.batch16 {d16 / o16:.2f}")
        print(f"onnx.threads {enc.num_threads}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
