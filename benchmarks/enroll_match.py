"""What the "added faces must match the person" check of enrollment costs and buys, one figure per line.

For each person of a folder-per-person dataset, the first `--templates` images that pass the enrollment
gates are the person's templates; every later image of the person that passes the gates is offered as a
genuine addition, and `--impostors` images of other people (one each, seeded) as impostor additions. An
addition is refused when its best similarity to the person's templates is under the 1:1 threshold, the
rule `Gallery.enroll` applies (without --force):

- genuine additions refused: the cost (the owner must use --force, or enroll better images);
- impostor additions accepted: what gets through the check (without it: all of them).

    python benchmarks/enroll_match.py --folder /work/shared/datasets/att_faces
    python benchmarks/enroll_match.py --folder /work/shared/datasets/celeba_ids --people 60 --per-person 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="one sub-folder of images per person")
    parser.add_argument("--people", type=int, default=None, help="the first N people (default: all)")
    parser.add_argument("--per-person", type=int, default=None, help="the first N images of each (default: all)")
    parser.add_argument("--templates", type=int, default=3, help="images enrolled per person (default: 3)")
    parser.add_argument("--impostors", type=int, default=20, help="impostor additions per person (default: 20)")
    parser.add_argument("--threshold", type=float, default=None, help="1:1 threshold (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from siamface import Pipeline
    from siamface.gallery import QualityGates, Rejection, assess, image_files

    pipe = Pipeline()
    threshold = float(args.threshold if args.threshold is not None else pipe.threshold)
    folders = sorted(d for d in args.folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    folders = folders[: args.people] if args.people else folders
    people: dict[str, list[np.ndarray]] = {}
    rejected = offered = 0
    for folder in folders:
        files = sorted(image_files(folder))  # plain name order (AT&T: 1, 10, 2, ...), as the README's figures
        files = files[: args.per_person] if args.per_person else files
        kept = []
        for f in files:
            offered += 1
            outcome = assess(pipe, f, str(f), QualityGates())
            if isinstance(outcome, Rejection):
                rejected += 1
            else:
                kept.append(outcome.embedding)
        if len(kept) > args.templates:
            people[folder.name] = kept
    rng = np.random.default_rng(args.seed)
    names = sorted(people)
    genuine_refused = genuine = impostor_accepted = impostor = 0
    for name in names:
        templates = np.stack(people[name][: args.templates])
        for e in people[name][args.templates :]:
            genuine += 1
            genuine_refused += float((templates @ e).max()) < threshold
        others = [n for n in names if n != name]
        for other in rng.choice(others, size=min(args.impostors, len(others)), replace=False):
            pool = people[other]
            e = pool[int(rng.integers(len(pool)))]
            impostor += 1
            impostor_accepted += float((templates @ e).max()) >= threshold
    print(f"dataset: {args.folder}")
    print(f"threshold: {threshold:.4f}")
    print(f"images offered: {offered}, rejected by the gates: {rejected}")
    print(f"people with more than {args.templates} good images: {len(names)}")
    print(
        f"genuine additions refused: {genuine_refused} of {genuine} ({100 * genuine_refused / max(genuine, 1):.1f} %)"
    )
    print(
        f"impostor additions accepted: {impostor_accepted} of {impostor} "
        f"({100 * impostor_accepted / max(impostor, 1):.2f} %; without the check: 100 %)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
