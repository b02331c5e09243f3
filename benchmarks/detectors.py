"""Which detector should be the default? Faces found, verification accuracy and speed on celeba_ids.

    python benchmarks/detectors.py [--data ../shared/datasets/celeba_ids] [--detectors retinaface,hog,...]
                                   [--per-id 8] [--impostors 100000] [--model dlib-resnet]

For each detector, with the encoder --model (default: siamface's default model): the images where no face was found, the
median ms of detection per image, and verification figures on two pair sets:
  official: the 1,000 genuine + 1,000 impostor pairs shipped with celeba_ids (all impostor pairs share one
            anchor photo, so one missed face decides all 1,000: read with care);
  folder:   every genuine pair among the first --per-id photos of each of the 299 identities, and a seeded
            sample of --impostors impostor pairs across identities.
A pair with an undetected face is scored as a non-match (a false reject if genuine). Embeddings are
cached in --cache so that re-runs are instant. One figure per line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from siamface import Pipeline  # noqa: E402
from siamface.evaluation.metrics import best_accuracy_threshold, confusion_at, eer, tar_at_far  # noqa: E402
from siamface.evaluation.protocols import folder_identities, genuine_pairs, impostor_pairs  # noqa: E402
from siamface.pipeline import DEFAULT_MODEL  # noqa: E402


def official_pairs(root: Path) -> tuple[list[tuple[str, str]], np.ndarray]:
    pairs, labels = [], []
    for name, label in (("pairs_same.txt", 1), ("pairs_different.txt", 0)):
        for line in (root / name).read_text().split("\n"):
            if line.strip():
                a, b = line.split()
                pairs.append((a, b))
                labels.append(label)
    return pairs, np.array(labels)


def folder_pairs(root: Path, per_id: int, n_impostors: int) -> tuple[list[tuple[str, str]], np.ndarray]:
    ids = {k: v[:per_id] for k, v in folder_identities(root).items()}
    gen = genuine_pairs(ids)
    imp = impostor_pairs(ids, n_impostors, seed=0)
    rel = lambda p: str(Path(p).relative_to(root))  # noqa: E731
    pairs = [(rel(p.a), rel(p.b)) for p in gen + imp]
    return pairs, np.array([1] * len(gen) + [0] * len(imp))


def embed_all(detector: str, model: str, root: Path, files: list[str], cache: Path) -> tuple[dict, float]:
    path = cache / f"celeba_{detector}_{model}.npz"
    out: dict[str, np.ndarray | None] = {}
    det_ms = float("nan")
    if path.exists():
        data = np.load(path, allow_pickle=False)
        out = {f: data["emb"][i] if data["found"][i] else None for i, f in enumerate(data["files"])}
        det_ms = float(data["ms"])
    todo = [f for f in files if f not in out]
    if todo:
        pipe = Pipeline(detector=detector, model=model)
        size = pipe.encoder.info.embedding_size
        times = []
        for f in todo:
            image = pipe.load_image(root / f)
            t = time.perf_counter()
            faces = pipe.detect(image)
            times.append(time.perf_counter() - t)
            out[f] = pipe.embed(image, faces[0]).embeddings[0] if len(faces) else None
        det_ms = float(np.median(times) * 1000)
        cache.mkdir(parents=True, exist_ok=True)
        names = sorted(out)
        emb = np.stack([out[f] if out[f] is not None else np.zeros(size, np.float32) for f in names])
        np.savez(path, files=np.array(names), emb=emb, found=np.array([out[f] is not None for f in names]), ms=det_ms)
    return out, det_ms


def report(prefix: str, emb: dict, pairs: list[tuple[str, str]], labels: np.ndarray, threshold: float) -> None:
    scores = np.array(
        [float(emb[a] @ emb[b]) if emb[a] is not None and emb[b] is not None else np.nan for a, b in pairs]
    )
    rate, thr = eer(scores, labels)
    best = best_accuracy_threshold(scores, labels)
    print(f"{prefix}.pairs {int(labels.sum())}+{int((1 - labels).sum())}")
    print(f"{prefix}.pairs_with_failure {int(np.isnan(scores).sum())}")
    print(f"{prefix}.eer {rate:.4f}")
    print(f"{prefix}.eer_threshold {thr:.4f}")
    print(f"{prefix}.best_accuracy {best.accuracy:.4f}")
    print(f"{prefix}.best_accuracy_threshold {best.threshold:.4f}")
    for far in (1e-2, 1e-3):
        t = tar_at_far(scores, labels, far)
        flag = "" if t.supported else " (too few impostor pairs)"
        print(f"{prefix}.tar_at_far_{far:g} {t.tar:.4f}{flag}")
        print(f"{prefix}.threshold_at_far_{far:g} {t.threshold:.4f}")
    at_default = confusion_at(scores, labels, threshold)
    print(f"{prefix}.accuracy_at_default_threshold {at_default.accuracy:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared/datasets/celeba_ids")
    ap.add_argument("--detectors", default="retinaface,blazeface,blazeface-back,hog,mtcnn,haar,cnn")
    ap.add_argument("--per-id", type=int, default=8)
    ap.add_argument("--impostors", type=int, default=100_000)
    ap.add_argument("--cache", type=Path, default=HERE.parent / ".cache/bench")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the encoder (default: %(default)s)")
    args = ap.parse_args()
    threshold = Pipeline(model=args.model).encoder.info.threshold  # the model's default, not a calibration
    off_pairs, off_labels = official_pairs(args.data)
    fol_pairs, fol_labels = folder_pairs(args.data, args.per_id, args.impostors)
    files = sorted({f for p in off_pairs + fol_pairs for f in p})
    print(f"images {len(files)}, model {args.model}")
    for det in args.detectors.split(","):
        emb, ms = embed_all(det, args.model, args.data, files, args.cache)
        missed = sum(emb[f] is None for f in files)
        print(f"{det}.no_face {missed}/{len(files)}")
        print(f"{det}.detect_ms_median {ms:.1f}")
        report(f"{det}.official", emb, off_pairs, off_labels, threshold)
        report(f"{det}.folder", emb, fol_pairs, fol_labels, threshold)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
