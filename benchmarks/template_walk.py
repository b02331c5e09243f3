"""The template walk: can faces added by a key below admin (provisional templates) move a person's reach onto
a stranger's face? And what does each rule against it cost honest users?

    python benchmarks/template_walk.py [--data ../shared/datasets] [--model sface] [--steps 20] [--pairs 3]

The attacker holds an enrol key and wants stranger B to be granted as enrolled person A. They submit faces
that go from A's photo to B's photo (aligned chips blended in ``--steps`` equal steps, default 10 %: the embedding of
each blend is what the service would store), in order, as additions to A; every one the rule accepts is
stored (no cap: a patient attacker waits out the per-person additions window). Then B's other photos are
claimed as A. A walk *succeeds* when one of them is granted and was not granted by A's originals alone
(those are the 1:1 false accepts that exist without any addition, counted apart as ``baseline``).

People: A's first 3 photos are the originals (made at enrolment, as the service's tests enrol); the walk
starts at A's first photo and ends at B's first; B's other photos are the claims. Honest cost: A's other
genuine photos, each offered as an addition (share refused), and as claims after they were added (share
granted, beside the share the originals alone grant: what additions are for).

Pairs: celeba_ids' held-out identities (the 199 not used for fitting, `_facecache.fit_split`) and AT&T's s3-s40,
each person with at least 5 photos as A, paired with ``--pairs`` random others and, apart, with the nearest other
(the attacker who picks the victim who looks most like them).

Rules (t1 = the model's 1:1 threshold, tN = its stricter 1:N default, ``identify_threshold``):

* ``current``: an addition matches an original at t1; a claim is granted on any template at t1;
* ``add@tN``: an addition must match an original at tN; claims as ``current``;
* ``add@X``: the same at the threshold X (a sweep between t1 and tN);
* ``reach``: additions as ``current``; a claim granted on a provisional template stands only when an
  original also matches at t1 (so additions can widen nothing beyond the originals' reach);
* ``add@tN+reach``: both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _facecache import att_files, celeba_files, clean_celeba, detections, fit_split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from siamface import Pipeline  # noqa: E402
from siamface.embedding.base import encoder_chips  # noqa: E402

ORIGINALS = 3
DETECTOR = "retinaface"
MIN_PHOTOS = 5


def _specs(encoder) -> tuple:
    """The chip of each part of the encoder (one for a single network; a fusion's parts each their own)."""
    return tuple(getattr(encoder, "chip_specs", None) or (encoder.info.chip,))


def _embed(encoder, chips: list[np.ndarray]) -> np.ndarray:
    """`encoder.embed` of chips held one array per part (`_specs`), as the encoder takes them."""
    return encoder.embed(tuple(chips) if getattr(encoder, "chip_specs", None) else chips[0])


def chips_of(pipe, root: Path, files: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """The aligned chips of each file's largest face, one array per part of the encoder (`_specs`), and a
    mask of the files where one was found (the detections read from the benchmarks' cache,
    `_facecache.detections`, when there)."""
    specs = _specs(pipe.encoder)
    out = [np.zeros((len(files), spec.size, spec.size, 3), np.uint8) for spec in specs]
    ok = np.zeros(len(files), bool)
    found = detections(root, files, pipe.detector, DETECTOR)
    for i, f in enumerate(files):
        faces = found.get(f)
        if faces is None or len(faces) == 0:
            continue
        image = pipe.load_image(root / f)
        one = faces[faces.chosen("largest", image.shape)]
        made = encoder_chips(pipe.encoder, image, one.boxes, one.landmarks, one.data.get("keypoints"))
        for part, chip in zip(out, made if len(specs) > 1 else (made,)):
            part[i] = chip[0]
        ok[i] = True
    return out, ok


def people(ok: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Per identity with at least MIN_PHOTOS faces found, the indices of its photos."""
    groups = [np.flatnonzero((labels == k) & ok) for k in np.unique(labels)]
    return [g for g in groups if len(g) >= MIN_PHOTOS]


def walk_embeddings(pipe, chips: list[np.ndarray], a: int, b: int, steps: int) -> np.ndarray:
    """The embeddings of A's chip blended into B's in `steps` steps (each part's chips blended alike)."""
    w = (np.arange(1, steps + 1) / steps)[:, None, None, None]
    mixes = [
        ((1 - w) * c[a].astype(np.float32) + w * c[b].astype(np.float32)).clip(0, 255).astype(np.uint8) for c in chips
    ]
    return _embed(pipe.encoder, mixes)


def run(pipe, emb, chips, groups, pairs, steps, rules, t1, tn):
    """Per rule: walks that succeed, baseline false accepts, and the honest figures."""
    stats = {
        r: {
            "walks": 0,
            "success": 0,
            "baseline": 0,
            "honest": 0,
            "refused": 0,
            "granted": 0,
            "alone": 0,
            "named": 0,
            "named_alone": 0,
        }
        for r in rules
    }
    for ia, ib in pairs:
        a_idx, b_idx = groups[ia], groups[ib]
        originals = emb[a_idx[:ORIGINALS]]
        blends = walk_embeddings(pipe, chips, a_idx[0], b_idx[0], steps)
        claims = emb[b_idx[1:]]
        alone = (claims @ originals.T).max(axis=1) >= t1
        for name, (t_add, reach) in rules.items():
            s = stats[name]
            added = [e for e in blends if (originals @ e).max() >= t_add]
            templates = np.concatenate([originals, np.array(added).reshape(-1, originals.shape[1])])
            granted = (claims @ templates.T).max(axis=1) >= t1
            if reach:
                granted &= alone
            s["walks"] += 1
            s["success"] += int((granted & ~alone).any())
            s["baseline"] += int(alone.any())
    # honest users: A's other photos as additions, then as claims (each leaving that photo out)
    for ia in sorted({ia for ia, _ in pairs}):
        a_idx = groups[ia]
        originals, others = emb[a_idx[:ORIGINALS]], emb[a_idx[ORIGINALS:]]
        for name, (t_add, reach) in rules.items():
            s = stats[name]
            accepted = (others @ originals.T).max(axis=1) >= t_add
            s["honest"] += len(others)
            s["refused"] += int((~accepted).sum())
            for j in range(len(others)):
                rest = [others[k] for k in range(len(others)) if k != j and accepted[k]]
                templates = np.concatenate([originals, np.array(rest).reshape(-1, originals.shape[1])])
                original_best = float((originals @ others[j]).max())
                best = float((templates @ others[j]).max())
                deciding = best if original_best >= t1 or not reach else original_best
                s["granted"] += int(deciding >= t1)
                s["alone"] += int(original_best >= t1)
                s["named"] += int(deciding >= tn)
                s["named_alone"] += int(original_best >= tn)
    return stats


def report(title: str, stats: dict) -> None:
    print(f"\n{title}")
    head = ("rule", "walks", "B granted as A", "baseline", "additions refused", "genuine granted", "named at tN")
    print(f"{head[0]:<16}{head[1]:>6}{head[2]:>18}{head[3]:>10}{head[4]:>22}{head[5]:>17}{head[6]:>14}")
    for name, s in stats.items():
        walks, honest = max(s["walks"], 1), max(s["honest"], 1)
        print(
            f"{name:<16}{s['walks']:>6}{s['success']:>8} ({s['success'] / walks:6.1%}){s['baseline']:>10}"
            f"{s['refused']:>9} / {s['honest']:<5} ({s['refused'] / honest:5.1%})"
            f"{s['granted'] / honest:>10.1%} [{s['alone'] / honest:.1%}]{s['named'] / honest:>7.1%} [{s['named_alone'] / honest:.1%}]"
        )
    print("(baseline: walks whose claims the originals alone grant; [..]: the originals alone)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--model", default=None, help="encoder (default: the project's default model)")
    ap.add_argument("--steps", type=int, default=10, help="blends from A's photo to B's (default 10: 10 %% each)")
    ap.add_argument("--pairs", type=int, default=3, help="random strangers per victim (default 3)")
    ap.add_argument("--only", choices=("celeba", "att"), default=None)
    args = ap.parse_args(argv)
    pipe = Pipeline(detector=DETECTOR, model=args.model) if args.model else Pipeline(detector=DETECTOR)
    info = pipe.encoder.info
    t1, tn = info.threshold, info.identify_threshold or info.threshold
    rules = {"current": (t1, False)}
    for x in np.linspace(t1, tn, 4)[1:-1]:
        rules[f"add@{x:.3f}"] = (float(x), False)
    rules.update({f"add@tN {tn:.3f}": (tn, False), "reach": (t1, True), "add@tN+reach": (tn, True)})
    print(f"model {info.name}: 1:1 threshold t1 {t1:.3f}, 1:N default tN {tn:.3f}; {args.steps} steps a walk")
    rng = np.random.default_rng(0)
    data = Path(args.data)
    sets = []
    if args.only in (None, "celeba"):
        files, labels = clean_celeba(*celeba_files(data / "celeba_ids"))
        keep = ~fit_split(labels)
        files, labels = [f for f, k in zip(files, keep) if k], labels[keep]
        sets.append(("celeba_ids held-out identities", data / "celeba_ids", files, labels))
    if args.only in (None, "att"):
        files, labels = att_files(data / "att_faces")
        keep = ~np.isin(labels, ["s1", "s2"])  # not ORL (see its SOURCE.txt)
        sets.append(
            (
                "AT&T s3-s40",
                data / "att_faces",
                [f for f, k in zip(files, keep) if k],
                labels[keep],
            )
        )
    for title, root, files, labels in sets:
        started = time.perf_counter()
        chips, ok = chips_of(pipe, root, files)
        emb = np.full((len(files), info.embedding_size), np.nan, np.float32)
        emb[ok] = _embed(pipe.encoder, [c[ok] for c in chips])
        groups = people(ok, labels)
        n = len(groups)
        centres = np.stack([emb[g[:ORIGINALS]].mean(axis=0) for g in groups])
        near = centres @ centres.T
        np.fill_diagonal(near, -np.inf)
        others = [[k for k in range(n) if k != a] for a in range(n)]
        random_pairs = [(a, int(b)) for a in range(n) for b in rng.choice(others[a], args.pairs, replace=False)]
        nearest = [(a, int(np.argmax(near[a]))) for a in range(n)]
        for label, pairs in (
            (f"{len(random_pairs)} random pairs", random_pairs),
            ("each with the nearest other", nearest),
        ):
            report(f"{title}: {n} people, {label}", run(pipe, emb, chips, groups, pairs, args.steps, rules, t1, tn))
        print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
