"""dlib vs ONNX Runtime for dlib's networks, and siamface end to end vs the face_recognition package.

    python benchmarks/engines.py [IMAGE_DIR] [--faces 32] [--repeats 15] [--threads N]
                                 [--frames DIR] [--photos 60]

1. The face ResNet: median milliseconds per face, batch 1 and batch 16, dlib vs ONNX Runtime.
2. Detection: median milliseconds per 640x480 frame (--frames, default nuaa_train/live) for retinaface,
   hog, cnn (MMOD in ONNX) and cnn-dlib (MMOD in dlib).
3. End to end on --photos photos of IMAGE_DIR (decode, detect, landmarks, align, embed every face): faces
   per second for siamface (default detector, and dlib's HOG detector like face_recognition; encoder
   dlib-resnet, the network face_recognition runs, whatever siamface's default model) and for the
   `face_recognition` package when it is installed (`pip install --no-deps face_recognition==1.3.0`;
   its model package needs pkg_resources, gone from setuptools >= 82, so a stand-in is given here).

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

from siamface._files import IMAGE_SUFFIXES as IMAGE_EXTS  # noqa: E402


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
    ap.add_argument("--frames", type=Path, default=None, help="640x480 frames for detection timing")
    ap.add_argument("--photos", type=int, default=60, help="photos for the end-to-end figure (default 60)")
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

        singles = [chips[i : i + 1] for i in range(len(chips))]
        sixteens = [chips[i : i + 16] for i in range(0, len(chips) - 15, 16)] or [chips[:16]]

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

    frames_dir = args.frames or ROOT.parent / "shared" / "datasets" / "nuaa_train" / "live"
    frames = [f for f in (load_rgb(p) for p in sorted(frames_dir.rglob("*.jpg"))[::97][:4]) if f is not None]
    if frames:
        detect_per_frame(frames, args.repeats)
    end_to_end(image_dir, args.photos)
    return 0


def detect_per_frame(frames: list[np.ndarray], repeats: int) -> None:
    from siamface.detection import create_detector

    h, w = frames[0].shape[:2]
    for name in ("retinaface", "hog", "cnn", "cnn-dlib"):
        det = create_detector(name)
        reps = 3 if name == "cnn-dlib" else repeats
        det.detect(frames[0])
        times = []
        for r in range(reps):
            t = time.perf_counter()
            det.detect(frames[r % len(frames)])
            times.append((time.perf_counter() - t) * 1000)
        print(f"detect.{name}_ms_per_{w}x{h} {statistics.median(times):.1f}")


def _face_recognition():
    """The face_recognition package, or None; its models package imports pkg_resources, so give it a
    stand-in that resolves package files the way pkg_resources.resource_filename did."""
    import importlib.util
    import types

    if importlib.util.find_spec("face_recognition") is None:
        return None
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, resource: str) -> str:
            spec = importlib.util.find_spec(package)
            return str(Path(spec.origin).parent / resource)

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    import face_recognition

    return face_recognition


def end_to_end(image_dir: Path, count: int) -> None:
    from siamface import Pipeline

    photos = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTS)[::7][:count]
    print(f"e2e.photos {len(photos)}")

    def run(name: str, faces_of) -> float:
        faces_of(photos[0])  # warm-up: model loading
        t = time.perf_counter()
        n = sum(faces_of(p) for p in photos)
        rate = n / (time.perf_counter() - t)
        print(f"e2e.{name}.faces {n}")
        print(f"e2e.{name}.faces_per_s {rate:.1f}")
        return rate

    rates = {}
    for detector in ("retinaface", "hog"):
        pipe = Pipeline(detector=detector, model="dlib-resnet")  # face_recognition's network: engines compared
        rates[f"siamface_{detector}"] = run(f"siamface_{detector}", lambda p, pipe=pipe: len(pipe.embed(p)))
    fr = _face_recognition()
    if fr is None:
        print("e2e.face_recognition not installed (pip install --no-deps face_recognition==1.3.0)")
        return

    def fr_faces(path: Path) -> int:
        img = fr.load_image_file(str(path))
        boxes = fr.face_locations(img, number_of_times_to_upsample=1)
        return len(fr.face_encodings(img, known_face_locations=boxes))

    peer = run("face_recognition", fr_faces)
    for name, rate in rates.items():
        print(f"e2e.ratio.{name}_vs_face_recognition {rate / peer:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
