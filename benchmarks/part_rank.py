"""Which part of a fused template ranks candidates for the whole: the question behind the PostgreSQL index
on a part of templates over 128-d (`siamface.gallery.postgres.index_part`).

    python benchmarks/part_rank.py [--model sface+dlib] [--data ../shared/datasets]

Data: the celeba_ids photos of the folder protocol (`_facecache.celeba_files`, retinaface, the largest face),
embedded with the model (default: the default model, a fusion). Each face is a probe against all the others:
its best match by the whole template is found, and its rank when the others are ordered by one part's
cosine alone. Printed per part: the share of probes whose whole-template best is first, and within the 5, 10,
20, 50 and 100 nearest by that part, the worst rank, and each part's weighted cosine for the same person and
for strangers (mean and spread).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _facecache import celeba_files, detections, embeddings  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.embedding.fused import part_sizes  # noqa: E402
from siamface.pipeline import DEFAULT_MODEL  # noqa: E402

WITHIN = (1, 5, 10, 20, 50, 100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a fused model (default: the default model)")
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    args = parser.parse_args(argv)
    sizes = part_sizes(args.model)
    if not sizes:
        parser.error(f"{args.model} is not a fusion")
    root = Path(args.data) / "celeba_ids"
    files, ids = celeba_files(root)
    pipe = Pipeline(detector="retinaface", model=args.model)
    emb = embeddings(args.model, root, files, detections(root, files, pipe.detector, "retinaface"), pipe)
    found = ~np.isnan(emb).any(axis=1)
    emb, ids = emb[found], np.asarray(ids)[found]
    n = len(emb)
    whole = emb @ emb.T
    np.fill_diagonal(whole, -np.inf)
    best = whole.argmax(axis=1)
    same = ids[:, None] == ids[None, :]
    upper = np.triu_indices(n, 1)
    print(f"{args.model}: {n} faces of {len(set(ids.tolist()))} people (celeba_ids), parts {sizes}")
    start = 0
    for number, size in enumerate(sizes, 1):
        part = emb[:, start : start + size]
        start += size
        scores = part @ part.T
        genuine, strangers = scores[upper][same[upper]], scores[upper][~same[upper]]
        np.fill_diagonal(scores, -np.inf)
        rank = (scores > scores[np.arange(n), best][:, None]).sum(axis=1)  # 0: first
        shares = ", ".join(f"{k}: {np.mean(rank < k):.1%}" for k in WITHIN)
        print(
            f"part {number} ({size}-d): the whole template's best within the first {shares}; worst rank "
            f"{rank.max() + 1}; weighted cosine same person {genuine.mean():.3f} (sd {genuine.std():.3f}), "
            f"strangers {strangers.mean():.3f} (sd {strangers.std():.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
