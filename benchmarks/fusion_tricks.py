"""Three cheap ways to lift the fused model's accuracy, measured against the default `dlib-flip+facenet`
(all three tried for issue 16, none kept; this script shows why).

    python benchmarks/fusion_tricks.py [--data ../shared/datasets]

* **jitter**: dlib's part embeds, beside the chip and its mirror, shifted (±3 px) or rescaled (×0.93,
  ×1.07) copies of it and averages them (dlib's own ``num_jitters`` idea; 3x or 6x dlib's time);
* **WCCN**: each part's embedding whitened by the within-person covariance of the fitting identities
  (shrunk towards the identity by lambda), then re-normalised: a linear map fitted on training data;
* **per-face weight**: w by the face's width (under 80 px, about the median: 0.9, else 0.8, and the
  reverse); the fused embedding stays one unit vector per face, [sqrt(w_i) a, sqrt(1 - w_i) b];
* **AS-norm**: adaptive score normalisation against a cohort (the fitting identities' fused embeddings, or
  the AT&T faces): each side's top-K cohort scores give a mean and spread, s' = ((s - mu_a) / sd_a +
  (s - mu_b) / sd_b) / 2.

Data: celeba_ids (the fitting identities, on which anything is fitted, and the held-out identities, as in
`accuracy.py --table`), AT&T and yale_faces (all pairs); detector retinaface; embeddings through
`_facecache` (shared with accuracy.py and fusion_fit.py). Prints EER and TAR at FAR 1e-3 / 1e-4 per row.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import _facecache as fc  # noqa: E402

from siamface import Pipeline  # noqa: E402
from siamface.embedding import create_encoder  # noqa: E402
from siamface.embedding.base import check_chips, l2_normalise  # noqa: E402
from siamface.embedding.fused import DLIB_FLIP_FACENET  # noqa: E402
from siamface.evaluation.metrics import eer, tar_at_far  # noqa: E402

W = DLIB_FLIP_FACENET.weight


class Jittered:
    """dlib's encoder on the chip, its mirror and `kind`'s moved copies (and their mirrors for scale)."""

    def __init__(self, encoder, kind: str) -> None:
        self.encoder, self.kind = encoder, kind
        self.info = replace(encoder.info, version=f"{encoder.info.version}+jitter-{kind}")

    def _moved(self, chips: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        n = chips.shape[1]
        return np.stack([cv2.warpAffine(c, matrix, (n, n), borderMode=cv2.BORDER_REFLECT) for c in chips])

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, self.info.chip.size)
        if len(chips) == 0:
            return np.zeros((0, self.info.embedding_size), np.float32)
        n = chips.shape[1]
        views = [chips, chips[:, :, ::-1]]
        if self.kind == "scale":
            for scale in (0.93, 1.07):
                v = self._moved(chips, cv2.getRotationMatrix2D((n / 2, n / 2), 0, scale))
                views += [v, v[:, :, ::-1]]
        else:
            for dx, dy in ((3, 0), (-3, 0), (0, 3), (0, -3)):
                views.append(self._moved(chips, np.float32([[1, 0, dx], [0, 1, dy]])))
        e = self.encoder.embed(np.concatenate(views)).reshape(len(views), len(chips), -1).sum(0)
        return l2_normalise(e)


def wccn(x: np.ndarray, labels: np.ndarray, lam: float) -> np.ndarray:
    """(Sw / mean eigenvalue + lam I)^-1/2 from the rows of `x` that have a face."""
    ok = ~np.isnan(x[:, 0])
    x, labels = x[ok], labels[ok]
    means = {k: x[labels == k].mean(0) for k in np.unique(labels)}
    r = x - np.stack([means[k] for k in labels])
    sw = r.T @ r / len(r)
    sw *= len(sw) / np.trace(sw)
    vals, vecs = np.linalg.eigh(sw + lam * np.eye(len(sw)))
    return vecs @ np.diag(vals**-0.5) @ vecs.T


def whiten(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    z = x @ m
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def as_norm(x: np.ndarray, cohort: np.ndarray, i, j, s, k: int) -> np.ndarray:
    cohort = cohort[~np.isnan(cohort[:, 0])]
    top = -np.sort(-(np.nan_to_num(x) @ cohort.T), axis=1)[:, :k]
    mu, sd = top.mean(1), top.std(1) + 1e-6
    out = 0.5 * ((s - mu[i]) / sd[i] + (s - mu[j]) / sd[j])
    return np.where(s <= -1.0, -1e9, out)  # a pair with a missed face stays a non-match


def row(name: str, s: np.ndarray, y: np.ndarray) -> None:
    cells = [f"{eer(s, y)[0]:.2%}"] + [
        f"{t.tar:.2%}" if t.supported else "n/a" for t in (tar_at_far(s, y, 1e-3), tar_at_far(s, y, 1e-4))
    ]
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def refused_pairs(s: np.ndarray, y: np.ndarray, i, j, files: list[str]) -> None:
    """The genuine pairs refused at the FAR 1e-3 point, and the photos refused against all their person's."""
    t = tar_at_far(s, y, 1e-3).threshold
    bad = (y == 1) & (s < t)
    photos = np.bincount(np.concatenate([i[bad], j[bad]]), minlength=len(files))
    pairs = np.bincount(np.concatenate([i[y == 1], j[y == 1]]), minlength=len(files))
    alone = [files[k] for k in np.flatnonzero((photos == pairs) & (pairs > 0))]
    print(
        f"# genuine pairs refused at the FAR 1e-3 point ({t:.4f}): {int(bad.sum())} of {int(y.sum())}, over "
        f"{int((photos > 0).sum())} photos; {len(alone)} photos refused against every other photo of their "
        f"person: {' '.join(alone)}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "datasets"))
    args = ap.parse_args(argv)
    data = Path(args.data)
    det = Pipeline(detector="retinaface").detector
    files, labels = fc.celeba_files(data / "celeba_ids")
    sets = {
        "celeba_ids": (data / "celeba_ids", files, labels),
        "att_faces": (data / "att_faces", *fc.att_files(data / "att_faces")),
        "yale_faces": (data / "yale_faces", *fc.yale_files(data / "yale_faces")),
    }
    encoders = {
        "dlib-resnet-flip": create_encoder("dlib-resnet", flip=True),
        "facenet": create_encoder("facenet"),
        "dlib-jitter-shift": Jittered(create_encoder("dlib-resnet"), "shift"),
        "dlib-jitter-scale": Jittered(create_encoder("dlib-resnet"), "scale"),
    }
    emb, width = {}, {}
    for name, (root, names, _) in sets.items():
        dets = fc.detections(root, names, det, "retinaface")
        width[name] = np.array(
            [(d.boxes[:, 2] - d.boxes[:, 0]).max() if d is not None and len(d) else 0 for d in (dets[f] for f in names)]
        )
        for tag, enc in encoders.items():
            if tag.startswith("dlib-jitter") and name != "celeba_ids":
                continue
            emb[name, tag] = fc.embeddings(tag, root, names, dets, Pipeline(detector=det, model=enc))

    fit = fc.fit_split(labels)
    evals = {
        "celeba_ids held-out ids": ("celeba_ids", ~fit),
        "AT&T": ("att_faces", None),
        "yale_faces": ("yale_faces", None),
    }

    def part(name, tag, mask):
        e = emb[name, tag]
        return e if mask is None else e[mask]

    def fused(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([np.sqrt(W) * a, np.sqrt(1 - W) * b], axis=1)

    cohorts = {
        "celeba_ids fitting ids": fused(emb["celeba_ids", "dlib-resnet-flip"][fit], emb["celeba_ids", "facenet"][fit]),
        "AT&T": fused(emb["att_faces", "dlib-resnet-flip"], emb["att_faces", "facenet"]),
    }
    maps = {
        lam: [wccn(emb["celeba_ids", t][fit], labels[fit], lam) for t in ("dlib-resnet-flip", "facenet")]
        for lam in (0.3, 1.0, 3.0)
    }
    for title, (name, mask) in evals.items():
        lab = sets[name][2] if mask is None else sets[name][2][mask]
        i, j, y = fc.all_pairs(lab)
        a, b = part(name, "dlib-resnet-flip", mask), part(name, "facenet", mask)
        base = W * fc.pair_scores(a, i, j) + (1 - W) * fc.pair_scores(b, i, j)
        print(f"\n{title}: {int(y.sum())} genuine / {int((1 - y).sum())} impostor pairs")
        print("| scoring | EER | TAR @ FAR 1e-3 | TAR @ FAR 1e-4 |\n|---|---|---|---|")
        row("dlib-flip+facenet (default)", base, y)
        if name == "celeba_ids":
            refused_pairs(base, y, i, j, [f for f, k in zip(sets[name][1], mask) if k])
            for tag in ("dlib-jitter-shift", "dlib-jitter-scale"):
                s = W * fc.pair_scores(part(name, tag, mask), i, j) + (1 - W) * fc.pair_scores(b, i, j)
                row(f"{tag} + facenet", s, y)
            small = width[name][mask] < 80
            for w_small, w_large in ((0.9, 0.8), (0.8, 0.9)):
                w = np.where(small, w_small, w_large)
                s = np.sqrt(w[i] * w[j]) * fc.pair_scores(a, i, j) + np.sqrt((1 - w[i]) * (1 - w[j])) * fc.pair_scores(
                    b, i, j
                )
                row(f"per-face weight: {w_small:g} under 80 px wide, else {w_large:g}", np.where(np.isnan(s), -1, s), y)
        for lam, (ma, mb) in maps.items():
            s = W * fc.pair_scores(whiten(a, ma), i, j) + (1 - W) * fc.pair_scores(whiten(b, mb), i, j)
            row(f"WCCN lambda {lam:g}", s, y)
        for cname, cohort in cohorts.items():
            if cname == title:
                continue
            for k in (50, 200):
                row(f"AS-norm, cohort {cname}, top {k}", as_norm(fused(a, b), cohort, i, j, base, k), y)
    return 0


if __name__ == "__main__":
    sys.exit(main())
