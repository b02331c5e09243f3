"""The impostor score tail of every registered model, the package's ``embedding/models/impostor_tails.json``.

    python benchmarks/impostor_tails.py [--data ../shared/datasets] [--write]

Data: every impostor pair among the first 8 photos of the 100 fitting identities of celeba_ids
(`_facecache.fit_split`, retinaface, the embedding cache), the data the 1:N defaults were measured on, less
its label noise (`_facecache.clean_celeba`: 4 fitting identities mixing several people); held-out
identities are never used. Per model it fits `siamface.tails.fit_tail` (measured quantiles down
to 100 exceedances, a generalised Pareto model of the top 0.3 %, exponential where its
fitted shape is bounded) and prints the pair count, the measured
rate finest, the fitted shape and the score at rates 1e-4, 1e-6, 1e-8 (measured where it can be, fitted
below). ``--write`` saves the tails file (a statistic of development data, no weights: its provenance
record says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _facecache import all_pairs, celeba_files, clean_celeba, detections, embeddings, fit_split, pair_scores  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.embedding import model_names  # noqa: E402
from siamface.embedding.build import create_encoder  # noqa: E402
from siamface.tails import TAILS_FILE, fit_tail  # noqa: E402

SOURCE = (
    "every impostor pair among the first 8 photos of the 96 fitting identities of celeba_ids not mixing "
    "several people (retinaface, largest face), benchmarks/impostor_tails.py"
)


def fitting_impostors(data: Path, model: str, det) -> np.ndarray:
    """The impostor scores of `model` on the fitting identities of celeba_ids (pairs with a missed face left out)."""
    root = data / "celeba_ids"
    files, labels = celeba_files(root)
    keep = fit_split(labels)
    files, labels = clean_celeba([f for f, k in zip(files, keep) if k], labels[keep])
    dets = detections(root, files, det, "retinaface")
    emb = embeddings(model, root, files, dets, Pipeline(detector=det, model=model))
    i, j, y = all_pairs(labels)
    s = pair_scores(emb, i, j)
    return s[(y == 0) & (s > -1)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    parser.add_argument("--write", action="store_true", help=f"write {TAILS_FILE.name} into the package")
    args = parser.parse_args(argv)
    det = Pipeline(detector="retinaface").detector
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
