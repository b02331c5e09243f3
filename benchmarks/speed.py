"""Speed side by side in one run: siamface end to end against the face_recognition package on the same photos,
and the embedding cost per face of every registered model.

    python benchmarks/speed.py [IMAGE_DIR] [--photos 150] [--repeats 3]
                               [--variants default,sface,dlib-resnet,face_recognition]
                               [--embed-faces 8] [--embed-repeats 5] [--models all] [--skip-e2e] [--skip-embed]

1. End to end (decode -> detect -> landmarks/keypoints -> align -> embed every face) on the same --photos photos
   of IMAGE_DIR (default ../shared/datasets/celeba_ids; photos spread evenly over the sorted file list), through
   the Python API: ``Pipeline(...).embed(path)`` per photo for siamface, ``load_image_file`` +
   ``face_locations`` (its default HOG, upsample 1) + ``face_encodings`` (its default small model, no jitter)
   for the `face_recognition` package (``pip install --no-deps face_recognition==1.3.0``; the pkg_resources
   stand-in of benchmarks/engines.py is used). Variants: ``default`` (siamface's default detector and model),
   ``face_recognition``, or a model name, optionally ``MODEL@DETECTOR`` (detector default otherwise).
   Every variant runs in a fresh Python process of its own (this script with ``--child``), so none shares a
   loaded model, a cache or a warmed allocator with another. Two figures per variant and run:
   * ``process_s``: the whole process, start to exit, as the parent sees it (interpreter, imports, model
     loading, every photo): what a user running a script on these photos waits;
   * ``warm_s``: the photos alone, after one warm-up photo has loaded the models (the child's own clock).
   The variants are interleaved (one run of each, in turn, --repeats rounds) and each figure is the median of
   the rounds. ``x_vs_face_recognition`` is face_recognition's seconds over the variant's (above 1: faster),
   from the medians and, ``..._per_round_median``, the median of the ratios taken within each round (steadier
   when the machine's load drifts between rounds).
2. Embedding milliseconds per face for every model of ``siamface models`` (or --models), in this process: faces
   found by the default detector in the first --embed-faces photos with a face; per model ``batch1_ms`` (one
   face's chips already cut, one call), ``batch16_ms_per_face`` (16 faces in one call, over 16) and
   ``crop_embed_ms`` (cutting the chips from the photo and embedding one face: what the chain spends after
   detection). Models interleaved over --embed-repeats rounds; medians over rounds and faces.

The load average (1, 5, 15 min) is printed before and after every round: the machine may be shared.
One figure per line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_VARIANTS = "default,sface,dlib-resnet,face_recognition"


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def select_photos(image_dir: Path, count: int) -> list[Path]:
    from siamface._files import IMAGE_SUFFIXES

    files = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no image under {image_dir}")
    step = max(1, len(files) // count)
    return files[::step][:count]


# -- child: one variant, one process ------------------------------------------------------------------------
def faces_counter(variant: str):
    """A function photo path -> number of faces embedded, for one variant (models not loaded yet)."""
    if variant == "face_recognition":
        from engines import _face_recognition

        fr = _face_recognition()
        if fr is None:
            raise SystemExit("face_recognition not installed (pip install --no-deps face_recognition==1.3.0)")

        def fr_faces(path: Path) -> int:
            img = fr.load_image_file(str(path))
            boxes = fr.face_locations(img, number_of_times_to_upsample=1)
            return len(fr.face_encodings(img, known_face_locations=boxes))

        return fr_faces

    from siamface import Pipeline

    if variant == "default":
        pipe = Pipeline()
    else:
        model, _, detector = variant.partition("@")
        pipe = Pipeline(model=model, detector=detector) if detector else Pipeline(model=model)
    return lambda path: len(pipe.embed(path))


def child(variant: str, photo_list: Path) -> int:
    photos = [Path(line) for line in photo_list.read_text().splitlines() if line]
    faces_of = faces_counter(variant)
    t_import = time.perf_counter() - T_START
    t = time.perf_counter()
    faces_of(photos[0])  # warm-up: model loading
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    faces = sum(faces_of(p) for p in photos)
    warm = time.perf_counter() - t
    print(json.dumps({"faces": faces, "warm_s": warm, "import_s": t_import, "first_photo_s": t_first}))
    return 0


# -- parent -------------------------------------------------------------------------------------------------
def end_to_end(photos: list[Path], variants: list[str], repeats: int, tmp: Path) -> None:
    listing = tmp / "photos.txt"
    listing.write_text("".join(f"{p}\n" for p in photos))
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(repeats):
        print(f"e2e.round {r + 1} load_before {load_avg()}", flush=True)
        for v in variants:
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--child", v, "--photo-list", str(listing)],
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t
            if out.returncode != 0:
                raise SystemExit(f"variant {v} failed:\n{out.stderr[-3000:]}")
            got = json.loads(out.stdout.strip().splitlines()[-1])
            got["process_s"] = wall
            runs[v].append(got)
            print(
                f"e2e.round {r + 1} {v} process_s {wall:.2f} warm_s {got['warm_s']:.2f} faces {got['faces']}",
                flush=True,
            )
        print(f"e2e.round {r + 1} load_after {load_avg()}", flush=True)

    med = {v: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for v, rs in runs.items()}
    print(f"e2e.photos {len(photos)}")
    print(f"e2e.repeats {repeats} (median, variants interleaved)")
    for v, m in med.items():
        print(f"e2e.{v}.faces {m['faces']:.0f}")
        print(f"e2e.{v}.process_s {m['process_s']:.2f}")
        print(f"e2e.{v}.warm_s {m['warm_s']:.2f}")
        print(f"e2e.{v}.faces_per_s_warm {m['faces'] / m['warm_s']:.1f}")
        print(f"e2e.{v}.import_s {m['import_s']:.2f}")
        print(f"e2e.{v}.first_photo_s {m['first_photo_s']:.2f}")
    peer = med.get("face_recognition")
    if peer:
        for v, m in med.items():
            if v != "face_recognition":
                print(f"e2e.{v}.process_x_vs_face_recognition {peer['process_s'] / m['process_s']:.2f}")
                print(f"e2e.{v}.warm_x_vs_face_recognition {peer['warm_s'] / m['warm_s']:.2f}")
                for k in ("process_s", "warm_s"):  # the same ratio taken within each round, then the median
                    per_round = [p[k] / o[k] for p, o in zip(runs["face_recognition"], runs[v])]
                    print(f"e2e.{v}.{k[:-2]}_x_vs_face_recognition_per_round_median {statistics.median(per_round):.2f}")


def embedding_costs(photos: list[Path], models: list[str], count: int, repeats: int) -> None:
    from siamface.detection import create_detector
    from siamface.embedding import create_encoder, encoder_chips
    from siamface.image import load_image
    from siamface.pipeline import DEFAULT_DETECTOR

    det = create_detector(DEFAULT_DETECTOR)
    pairs = []
    for p in photos:
        im = load_image(p)
        f = det.detect(im)[:1]
        if len(f):
            pairs.append((im, f))
        if len(pairs) >= count:
            break
    print(f"embed.faces {len(pairs)} (detector {DEFAULT_DETECTOR})")

    def chips_of(enc, im, f):
        return encoder_chips(enc, im, f.boxes, f.landmarks, f.data.get("keypoints"))

    encoders, chips, batches = {}, {}, {}
    for m in models:
        enc = create_encoder(m)
        encoders[m] = enc
        chips[m] = [chips_of(enc, im, f) for im, f in pairs]
        batches[m] = _batch(chips[m], 16)
        enc.embed(chips[m][0])  # warm-up: model loading
        enc.embed(batches[m])

    times: dict[str, dict[str, list[float]]] = {m: {"batch1": [], "batch16": [], "crop": []} for m in models}
    for r in range(repeats):
        print(f"embed.round {r + 1} load_before {load_avg()}", flush=True)
        for m in models:
            enc = encoders[m]
            for one in chips[m]:
                t = time.perf_counter()
                enc.embed(one)
                times[m]["batch1"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            enc.embed(batches[m])
            times[m]["batch16"].append((time.perf_counter() - t) * 1000 / 16)
            for im, f in pairs:
                t = time.perf_counter()
                enc.embed(chips_of(enc, im, f))
                times[m]["crop"].append((time.perf_counter() - t) * 1000)
        print(f"embed.round {r + 1} load_after {load_avg()}", flush=True)
    for m in models:
        tm = times[m]
        print(
            f"embed.{m} dim {encoders[m].info.embedding_size}"
            f" batch1_ms {statistics.median(tm['batch1']):.1f}"
            f" batch16_ms_per_face {statistics.median(tm['batch16']):.1f}"
            f" crop_embed_ms {statistics.median(tm['crop']):.1f}"
        )


def _batch(chips: list, n: int):
    """n faces' chips from a list of per-face chips (arrays, or tuples of arrays for a fused model)."""
    if isinstance(chips[0], tuple):
        return tuple(_batch([c[k] for c in chips], n) for k in range(len(chips[0])))
    return np.repeat(np.concatenate(chips), n // len(chips) + 1, axis=0)[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", nargs="?", type=Path, default=None)
    ap.add_argument("--photos", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the end-to-end runs (default 3)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--embed-faces", type=int, default=8)
    ap.add_argument("--embed-repeats", type=int, default=5)
    ap.add_argument("--models", default="all", help="comma-separated models for part 2 (default: all registered)")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-embed", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--photo-list", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.photo_list)

    import tempfile

    from engines import default_dir

    from siamface.embedding import model_names
    from siamface.pipeline import DEFAULT_DETECTOR, DEFAULT_MODEL

    image_dir = args.image_dir or default_dir()
    photos = select_photos(image_dir, args.photos)
    print(f"source {image_dir}")
    print(f"default {DEFAULT_MODEL} @ {DEFAULT_DETECTOR}")
    print(f"cpus {os.cpu_count()} load {load_avg()}")
    if not args.skip_e2e:
        with tempfile.TemporaryDirectory() as tmp:
            end_to_end(photos, args.variants.split(","), args.repeats, Path(tmp))
    if not args.skip_embed:
        models = model_names() if args.models == "all" else args.models.split(",")
        embedding_costs(photos, list(models), args.embed_faces, args.embed_repeats)
    print(f"load_end {load_avg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
