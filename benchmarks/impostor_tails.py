"""The impostor score tail of every registered model, the package's ``embedding/models/impostor_tails.json``.

    python benchmarks/impostor_tails.py [--data ../shared/datasets] [--write]

Data: every impostor pair among the first 8 photos of the 100 fitting identities of celeba_ids
(`_facecache.fit_split`, retinaface, the embedding cache), the data the 1:N defaults were measured on, less
its label noise (`_facecache.clean_celeba`: 4 fitting identities mixing several people); held-out
identities are never used. Per model it fits `siamface.tails.fit_tail` (measured quantiles down
to 100 exceedances, a generalised Pareto model of the top 0.3 %, exponential where its
fitted shape is bounded) and prints the pair count, the measured
rate finest, the fitted shape and the score at rates 1e-4, 1e-6, 1e-8 (measured where it can be, fitted
below). ``--grey sface dlib-flip+facenet`` instead compares, per model, the tail of the same pairs with both
photos converted to grey (luma, the colour detections) and of grey x colour pairs, and the impostor
quantiles of the grey studio sets att_faces (s3-s40) and yale_faces against the shipped tail.
``--shape-interval sface dlib-flip+facenet`` instead prints the 90 % interval of the fitted shape over 100
bootstrap resamples of the fitting identities (people drawn with replacement; pairs of one person left out).
``--write`` saves the tails file (a statistic of development data, no weights: its provenance
record says so).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _facecache import (  # noqa: E402
    CACHE,
    all_pairs,
    att_files,
    celeba_files,
    clean_celeba,
    detections,
    embeddings,
    fit_split,
    pair_scores,
    yale_files,
)

from siamface import Pipeline  # noqa: E402
from siamface.embedding import model_names  # noqa: E402
from siamface.embedding.build import create_encoder  # noqa: E402
from siamface.image import load_image  # noqa: E402
from siamface.tails import TAIL_SHARE, TAILS_FILE, fit_gpd, fit_tail, shipped_tail  # noqa: E402

SOURCE = (
    "every impostor pair among the first 8 photos of the 96 fitting identities of celeba_ids not mixing "
    "several people (retinaface, largest face), benchmarks/impostor_tails.py"
)


def _fitting(data: Path, det) -> tuple[Path, list[str], np.ndarray, dict]:
    root = data / "celeba_ids"
    files, labels = celeba_files(root)
    keep = fit_split(labels)
    files, labels = clean_celeba([f for f, k in zip(files, keep) if k], labels[keep])
    return root, files, labels, detections(root, files, det, "retinaface")


def fitting_impostors(data: Path, model: str, det) -> np.ndarray:
    """The impostor scores of `model` on the fitting identities of celeba_ids (pairs with a missed face left out)."""
    root, files, labels, dets = _fitting(data, det)
    emb = embeddings(model, root, files, dets, Pipeline(detector=det, model=model))
    i, j, y = all_pairs(labels)
    s = pair_scores(emb, i, j)
    return s[(y == 0) & (s > -1)]


def _grey(image: np.ndarray) -> np.ndarray:
    luma = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def grey_check(data: Path, model: str, det) -> None:
    """The fitting identities' tail in colour, in grey and grey x colour; AT&T and Yale against the shipped tail."""
    root, files, labels, dets = _fitting(data, det)
    pipe = Pipeline(detector=det, model=model)
    colour = embeddings(model, root, files, dets, pipe)
    info = pipe.encoder.info
    cached = (
        CACHE / f"celeba_ids-grey-{model}-{hashlib.sha1(f'{info.name}@{info.version}'.encode()).hexdigest()[:8]}.npy"
    )
    if cached.exists():
        grey = np.load(cached)
    else:
        grey = np.full_like(colour, np.nan)
        for n, f in enumerate(files):
            if dets[f] is not None and len(dets[f]):
                image = load_image(root / f)
                k = dets[f].chosen("largest", image.shape)
                grey[n] = pipe.embed(_grey(image), dets[f][k : k + 1]).embeddings[0]
        np.save(cached, grey)
    i, j, y = all_pairs(labels)
    different = np.concatenate([y == 0, y == 0])
    pairs = {
        "colour": pair_scores(colour, i, j)[y == 0],
        "grey": pair_scores(grey, i, j)[y == 0],
        "grey x colour": np.sum(np.concatenate([grey[i] * colour[j], grey[j] * colour[i]]), axis=1)[different],
    }
    for name, s in pairs.items():
        tail = fit_tail(s[s > -1])
        at = "  ".join(f"p={p:g}: {tail.score_at(p):.4f}" for p in (1e-3, 1e-4, 1e-6))
        print(f"{model}.grey celeba fitting {name:13s} {tail.n:7d} pairs  {at}")
    shipped = shipped_tail(pipe.encoder.info.name)
    for folder, listing in (("att_faces", att_files), ("yale_faces", yale_files)):
        where = data / folder
        names, people = listing(where)
        keep = ~np.isin(people, ["s1", "s2"])  # not ORL (SOURCE.txt)
        names, people = [f for f, k in zip(names, keep) if k], np.unique(people[keep], return_inverse=True)[1]
        emb = embeddings(model, where, names, detections(where, names, det, "retinaface"), pipe)
        i, j, y = all_pairs(people)
        s = pair_scores(emb, i, j)
        s = np.sort(s[(y == 0) & (s > -1)])[::-1]
        at = "  ".join(
            f"p={p:g}: {s[int(round(p * len(s))) - 1]:.4f} (shipped {shipped.score_at(p):.4f})"
            for p in (1e-2, 1e-3, 1e-4)
        )
        print(f"{model}.grey {folder} {len(s):,} impostor pairs  {at}")


def shape_interval(data: Path, model: str, det, resamples: int = 100) -> None:
    """The fitted shape's 5th and 95th percentiles over bootstrap resamples of the fitting identities."""
    root, files, labels, dets = _fitting(data, det)
    emb = embeddings(model, root, files, dets, Pipeline(detector=det, model=model)).astype(np.float64)
    found = ~np.isnan(emb).any(axis=1)
    emb, labels = emb[found], labels[found]
    sim, people, rng, shapes = emb @ emb.T, np.unique(labels), np.random.default_rng(0), []
    for _ in range(resamples):
        rows = np.concatenate([np.flatnonzero(labels == c) for c in rng.choice(people, len(people))])
        i, j = np.triu_indices(len(rows), 1)
        s = np.sort(sim[rows[i], rows[j]][labels[rows[i]] != labels[rows[j]]])[::-1]
        m = int(round(TAIL_SHARE * len(s)))
        shapes.append(fit_gpd(s[:m] - s[m])[0])
    low, high = np.percentile(shapes, [5, 95])
    print(
        f"{model}.shape 90 % interval over {resamples} resamples of the fitting identities: {low:+.3f} to {high:+.3f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    parser.add_argument("--write", action="store_true", help=f"write {TAILS_FILE.name} into the package")
    parser.add_argument("--grey", nargs="+", metavar="MODEL", help="the grey check of these models instead")
    parser.add_argument("--shape-interval", nargs="+", metavar="MODEL", help="the shape's bootstrap interval instead")
    args = parser.parse_args(argv)
    det = Pipeline(detector="retinaface").detector
    for model in args.grey or []:
        grey_check(Path(args.data), model, det)
    for model in args.shape_interval or []:
        shape_interval(Path(args.data), model, det)
    if args.grey or args.shape_interval:
        return 0
    tails = {}
    for name in model_names():
        model = create_encoder(name).info.name
        if model in tails:
            continue
        tail = fit_tail(fitting_impostors(Path(args.data), model, det), SOURCE)
        tails[model] = tail
        at = "  ".join(f"p={p:g}: {tail.score_at(p):.4f}" for p in (1e-4, 1e-6, 1e-8))
        print(f"{model:24s} {tail.n:7d} pairs, measured to p={tail.finest:.2g}, xi {tail.xi:+.3f}  {at}")
    if args.write:
        payload = {"source": SOURCE, "models": {k: v.to_dict() for k, v in sorted(tails.items())}}
        TAILS_FILE.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {TAILS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
