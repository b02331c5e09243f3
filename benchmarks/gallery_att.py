"""The gallery's open-set experiment on the AT&T faces (40 people x 10 images), one figure per line.

Enroll images 1-5 of 30 people (a seeded choice), then identify the held-out images 6-10 of those 30
(genuine probes) and all 10 images of the other 10 people (strangers, who must come back "unknown"):

- rank-1 identification rate: genuine probes whose best candidate is the right person (no threshold);
- FNIR at the threshold: genuine probes not named as the right person (unknown, ambiguous or wrong);
- FPIR at the threshold: stranger probes named as anyone;
- enrollment rejections with their reasons.

    python benchmarks/gallery_att.py --att /work/shared/datasets/att_faces [--seed 0] [--margin 0.01]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--att", type=Path, required=True, help="the AT&T folder (s3 ... s40, 1.pgm ... 10.pgm)")
    parser.add_argument("--seed", type=int, default=0, help="which 30 people are enrolled (default: 0)")
    parser.add_argument("--enrolled", type=int, default=30)
    parser.add_argument("--margin", type=float, default=None, help="ambiguity margin (default: the gallery's)")
    parser.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the gallery's)")
    parser.add_argument("--detector", default=None, help="detector (default: the pipeline's)")
    args = parser.parse_args()

    from siamface import Pipeline
    from siamface.gallery import Gallery
    from siamface.gallery.core import DEFAULT_MARGIN

    margin = DEFAULT_MARGIN if args.margin is None else args.margin
    subjects = sorted(
        (d.name for d in args.att.iterdir() if d.is_dir() and d.name.startswith("s")), key=lambda s: int(s[1:])
    )
    if len(subjects) < args.enrolled + 1:
        raise SystemExit(f"{args.att}: {len(subjects)} people, need more than {args.enrolled}")
    rng = np.random.default_rng(args.seed)
    enrolled = sorted(rng.choice(subjects, size=args.enrolled, replace=False).tolist(), key=lambda s: int(s[1:]))
    strangers = [s for s in subjects if s not in enrolled]
    pipe = Pipeline(**({"detector": args.detector} if args.detector else {}))
    with (
        tempfile.TemporaryDirectory() as tmp,
        Gallery(Path(tmp) / "att.db", pipe, create=True, threshold=args.threshold) as g,
    ):
        start = time.perf_counter()
        reasons: Counter = Counter()
        templates = 0
        for s in enrolled:
            report = g.enroll(s, [args.att / s / f"{i}.pgm" for i in range(1, 6)])
            templates += len(report.added)
            reasons.update(r.reason for r in report.rejected)
        enroll_s = time.perf_counter() - start
        genuine = [(s, args.att / s / f"{i}.pgm") for s in enrolled for i in range(6, 11)]
        impostor = [(s, args.att / s / f"{i}.pgm") for s in strangers for i in range(1, 11)]
        rank1 = named_right = named_wrong = ambiguous = no_face = 0
        genuine_scores, impostor_scores = [], []
        for truth, probe in genuine:
            faces = g.identify(probe, top=2, margin=margin, audit=False).faces
            if not faces:
                no_face += 1
                continue
            f = faces[0]
            rank1 += f.candidates[0].person == truth
            named_right += f.person == truth
            named_wrong += f.person is not None and f.person != truth
            ambiguous += f.status == "ambiguous"
            genuine_scores.append(f.similarity)
        false_pos = stranger_no_face = stranger_ambiguous = 0
        for _, probe in impostor:
            faces = g.identify(probe, top=2, margin=margin, audit=False).faces
            if not faces:
                stranger_no_face += 1
                continue
            false_pos += faces[0].person is not None
            stranger_ambiguous += faces[0].status == "ambiguous"
            impostor_scores.append(faces[0].similarity)
        n_g, n_i = len(genuine), len(impostor)
        print(
            f"AT&T open set: {len(enrolled)} people enrolled (seed {args.seed}: {', '.join(enrolled)}), "
            f"{len(strangers)} strangers ({', '.join(strangers)}); detector {pipe.detector.name}"
        )
        print(
            f"enrollment: {templates} templates from {5 * len(enrolled)} images in {enroll_s:.1f} s; "
            f"{sum(reasons.values())} rejected"
            + (": " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) if reasons else "")
        )
        print(f"threshold {g.identify_threshold:.4f} ({g.identify_threshold_source}); ambiguity margin {margin:g}")
        print(
            f"rank-1 identification rate: {rank1 / n_g:.2%} ({rank1}/{n_g} genuine probes; "
            f"{no_face} without a face count as misses)"
        )
        print(
            f"FNIR at the threshold: {(n_g - named_right) / n_g:.2%} ({n_g - named_right}/{n_g}: "
            f"{ambiguous} ambiguous, {named_wrong} named as someone else, {no_face} no face, the rest unknown)"
        )
        print(
            f"FPIR at the threshold: {false_pos / n_i:.2%} ({false_pos}/{n_i} stranger probes named; "
            f"{stranger_ambiguous} ambiguous, {stranger_no_face} without a face)"
        )
        if genuine_scores and impostor_scores:
            print(
                f"best similarity: genuine median {np.median(genuine_scores):.4f} (min {min(genuine_scores):.4f}); "
                f"strangers median {np.median(impostor_scores):.4f} (max {max(impostor_scores):.4f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
