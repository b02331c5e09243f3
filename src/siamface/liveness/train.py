"""Train the passive liveness models on attack data, split by subject, and report ISO/IEC 30107-3 figures.

    python -m siamface.liveness.train --nuaa ../shared/datasets/nuaa_train \\
        --replay ../shared/datasets/replay_crops --live ../shared/datasets/celeba_ids --live-every 3 \\
        [--out out/liveness/passive_v2.npz]

    # then the combiner of the passive check (CNN pair + that texture model + frame cue):
    python -m siamface.liveness.train --combine --bpcer 0.02 --name passive_v3 (same data options) \\
        [--out out/liveness/passive_v3.json]

    # then use them: siamface authenticate/serve --liveness-model out/liveness/passive_v3.json
    # (the combiner file names its texture model, passive_v2.npz beside it by default)

Only for data you may train on: the package ships no model fitted here (see `siamface.provenance`).

Data layouts understood (``--data`` may be given several times, as TYPE=DIR):
* NUAA: ``live/<subject>/*.jpg`` and ``photo/<subject>/*.jpg`` (640x480 frames; the face is detected);
* crops: ``real/*.png`` and ``fake/*.png`` (face crops; the face is detected in the crop, or the crop is
  the face); attack type "replay";
* more bona fide faces (``--live DIR``, ``DIR/<person>/*.jpg``): photos of real people from other cameras.
  NUAA and the crops show one webcam each; a model that saw only them learns "this webcam is live" and
  rejects real faces from any other camera. These folders get ``--live-share`` of the live class's weight.

Split: NUAA and ``--live`` folders by subject (the last third held out); crops have no subject labels, so they are
split by file number in blocks (frames of one recording are neighbours), the last 30 % held out. The
threshold is chosen on the training split (out of fold) at BPCER 5 %, then the held-out figures are
printed; the final model is refitted on everything (`--final`) or on the training split only (default).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from .._files import IMAGE_SUFFIXES
from .metrics import LIVE, pad_report
from .passive import DEFAULT_MODEL, features, fit_logistic, hellinger


def _number(path: Path) -> int:
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else 0


def collect(
    nuaa: Path | None, replay: Path | None, live: list[Path] = (), live_every: int = 1
) -> list[tuple[Path, str, str, bool]]:
    """(file, label, group, is_crop): label "live"/"photo"/"replay"; group decides the split."""
    items = []
    for root in live:
        files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)[::live_every]
        items += [(f, LIVE, f"live:{root.name}:{f.parent.name}", False) for f in files]
    if nuaa is not None:
        for kind, label in (("live", LIVE), ("photo", "photo")):
            for subject in sorted((nuaa / kind).iterdir()):
                for f in sorted(subject.iterdir()):
                    if f.suffix.lower() in IMAGE_SUFFIXES:
                        items.append((f, label, f"nuaa:{subject.name}", False))
    if replay is not None:
        for kind, label in (("real", LIVE), ("fake", "replay")):
            files = sorted((f for f in (replay / kind).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), key=_number)
            for rank, f in enumerate(files):
                block = int(10 * rank / len(files))  # ten blocks of neighbouring frames
                items.append((f, label, f"replay:{kind}:{block}", True))
    return items


def extract(items, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features of every item (None rows dropped), with a cache keyed by the file list."""
    from ..detection import create_detector
    from ..image import load_image

    if cache is not None:  # one cache file per list of files
        digest = hashlib.sha256("\n".join(str(i[0]) for i in items).encode()).hexdigest()[:12]
        cache = cache.with_name(f"{cache.stem}-{digest}{cache.suffix}")
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if list(data["files"]) == [str(i[0]) for i in items]:
                return data["x"], data["ok"]
    detector = create_detector("retinaface", min_face_size=16)
    rows, ok = [], []
    for n, (path, _, _, is_crop) in enumerate(items):
        image = load_image(path)
        faces = detector.detect(image)
        if len(faces):
            box = faces.boxes[0]
        elif is_crop:
            h, w = image.shape[:2]
            box = np.array([w * 0.1, h * 0.1, w * 0.9, h * 0.9]) / 1.0
        else:
            rows.append(np.zeros(1))
            ok.append(False)
            continue
        rows.append(features(image, box))
        ok.append(True)
        if n % 200 == 0:
            print(f"  features {n}/{len(items)}", file=sys.stderr)
    width = max(len(r) for r in rows)
    x = np.stack([r if len(r) == width else np.zeros(width, np.float32) for r in rows]).astype(np.float32)
    ok = np.array(ok)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x, ok=ok, files=np.array([str(i[0]) for i in items]))
    return x, ok


def cue_table(items, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Every cue of every item's largest face, computed once and cached (keyed by the file list):
    ``ok`` (a face was scored), ``box``, ``x`` (texture features), ``cnn`` (MiniFASNetV2 / V1SE probability
    of real), ``sides`` (frame edges found left, right, top, bottom), ``kps`` (the 5 keypoints). Crops with no face found are scored
    on the crop less a 10 % margin, as `extract` does."""
    from ..detection import create_detector
    from ..image import load_image
    from .cnn import AntiSpoofCnn
    from .colour import colour_spread, to_grey
    from .passive import SIDES, frame_sides

    files = [str(i[0]) for i in items]
    if cache is not None:
        digest = hashlib.sha256("\n".join(files).encode()).hexdigest()[:12]
        cache = cache.with_name(f"{cache.stem}-{digest}{cache.suffix}")
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as data:
                if list(data["files"]) == files:
                    return {k: data[k] for k in data.files if k != "files"}
    detector = create_detector("retinaface", min_face_size=16)
    cnn = AntiSpoofCnn()
    n = len(items)
    table = {
        "ok": np.zeros(n, bool),
        "box": np.zeros((n, 4), np.float32),
        "x": np.zeros((n, 373), np.float32),
        "cnn": np.zeros((n, 2), np.float32),
        "sides": np.zeros((n, 4), bool),
        "kps": np.zeros((n, 5, 2), np.float32),
        "colour": np.zeros(n, np.float32),
        "cnn_grey": np.zeros((n, 2), np.float32),
    }
    for i, (path, _, _, is_crop) in enumerate(items):
        image = load_image(path)
        faces = detector.detect(image)
        if len(faces):
            largest = int(np.argmax(faces.areas))
            box = faces.boxes[largest]
            table["kps"][i] = faces.data["keypoints"][largest]
        elif is_crop:
            h, w = image.shape[:2]
            box = np.array([w * 0.1, h * 0.1, w * 0.9, h * 0.9])
        else:
            continue
        table["ok"][i], table["box"][i] = True, box
        table["x"][i] = features(image, box)
        table["cnn"][i] = cnn.probabilities(image, [box])[0]
        table["colour"][i] = colour_spread(image, box)
        table["cnn_grey"][i] = cnn.probabilities(to_grey(image), [box])[0]
        found = frame_sides(image, box)
        table["sides"][i] = [side in found for side in SIDES]
        if i % 200 == 0:
            print(f"  cues {i}/{n}", file=sys.stderr)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, files=np.array(files), **table)
    return table


def source_of(group: str) -> str:
    """The data source of an item's group: "nuaa", "replay" or "live:<folder>" (the group less its subject
    or block)."""
    return "replay" if group.startswith("replay:") else group.rsplit(":", 1)[0]


def split(items) -> np.ndarray:
    """True for held-out items: the last third of the subjects of NUAA and of each ``--live`` folder, the
    last 3 of 10 blocks of each crop kind."""
    held_subjects = set()
    for source in {source_of(g) for _, _, g, _ in items} - {"replay"}:
        subjects = sorted({g for _, _, g, _ in items if source_of(g) == source})
        held_subjects |= set(subjects[len(subjects) - len(subjects) // 3 :])
    test = []
    for _, _, group, _ in items:
        if not group.startswith("replay:"):
            test.append(group in held_subjects)
        else:
            test.append(int(group.rsplit(":", 1)[1]) >= 7)
    return np.array(test)


def sample_weights(y: np.ndarray, groups: np.ndarray | None = None, live_share: float = 0.25) -> np.ndarray:
    """Live and attack classes weigh the same; within the live class the ``--live`` folders weigh
    ``live_share`` (when there are any), the attack datasets' own live faces the rest."""
    extra = np.zeros(len(y), bool) if groups is None else np.char.startswith(groups.astype(str), "live:")
    w = np.where(y == 1, 0.5, 0.5 / max((y == 0).sum(), 1))
    own = (y == 1) & ~extra
    if extra.any() and own.any():
        w[extra] *= live_share / extra.sum()
        w[own] *= (1 - live_share) / own.sum()
    else:
        w[y == 1] /= max((y == 1).sum(), 1)
    return w * len(y)


def fit(x: np.ndarray, y: np.ndarray, l2: float, weights: np.ndarray | None = None) -> dict:
    x = hellinger(x)
    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    if weights is None:  # balance live and attack presentations
        weights = sample_weights(y)
    weights, bias = fit_logistic((x - mean) / scale, y, l2=l2, weights=weights)
    return {"mean": mean, "scale": scale, "weights": weights, "bias": bias}


def probability(model: dict, x: np.ndarray) -> np.ndarray:
    z = ((hellinger(x) - model["mean"]) / model["scale"]) @ model["weights"] + model["bias"]
    return 1 / (1 + np.exp(-np.clip(z, -30, 30)))


def fold_of(group: str, index: int, folds: int) -> int:
    """Cross-validation fold of a group: NUAA subjects in turn; crop blocks two by two, so that a fold
    holds a contiguous stretch of recording that its neighbours do not see (frames next to each other are
    near-copies: mixing them would make validation a memory test)."""
    if group.startswith("replay:"):
        return (int(group.rsplit(":", 1)[1]) // 2) % folds
    return index % folds


def folds_of(groups, folds: int = 4) -> np.ndarray:
    """The cross-validation fold of every item (`fold_of` its group)."""
    fold_map = {g: fold_of(g, i, folds) for i, g in enumerate(sorted(set(groups)))}
    return np.array([fold_map[g] for g in groups])


def out_of_fold(
    x, y, groups, l2: float, folds: int = 4, weights: np.ndarray | None = None, fit_fn=None, predict_fn=None
) -> np.ndarray:
    """Scores of each training item from a model that did not see its fold (the texture model's `fit` and
    `probability` unless others are given)."""
    fit_fn, predict_fn = fit_fn or fit, predict_fn or probability
    fold = folds_of(groups, folds)
    scores = np.zeros(len(y))
    for k in range(folds):
        held = fold == k
        if held.any() and (~held).any():
            w = None if weights is None else weights[~held]
            scores[held] = predict_fn(fit_fn(x[~held], y[~held], l2, w), x[held])
    return scores


def threshold_at_bpcer(scores: np.ndarray, live: np.ndarray, bpcer: float = 0.05) -> float:
    return float(np.quantile(scores[live], bpcer))


def fit_combiner(inputs: np.ndarray, y: np.ndarray, l2: float, weights: np.ndarray | None = None) -> dict:
    """Logistic regression over the combiner's inputs (`combined.combiner_inputs`), standardised."""
    mean, scale = inputs.mean(0), inputs.std(0) + 1e-6
    w, bias = fit_logistic((inputs - mean) / scale, y, l2=l2, weights=sample_weights(y) if weights is None else weights)
    return {"mean": mean, "scale": scale, "weights": w, "bias": bias}


def combiner_json(
    model: dict, threshold: float, meta: dict, networks: str | None = None, texture: str = "passive_v2.npz"
) -> str:
    """A fitted combiner (`fit_combiner`) with its threshold and facts, as the JSON file `PassiveCheck`
    loads (``--liveness-model FILE``). ``networks``: the folder of its own CNN pair,
    relative to the file (``"."``: beside it); None: the shipped pretrained pair. ``texture``: its texture
    model file, relative to the file."""
    from .combined import INPUTS

    payload = {
        **({"networks": networks} if networks is not None else {}),
        "texture": texture,
        "inputs": list(INPUTS),
        "mean": model["mean"].tolist(),
        "scale": model["scale"].tolist(),
        "weights": model["weights"].tolist(),
        "bias": model["bias"],
        "threshold": threshold,
        "meta": meta,
    }
    return json.dumps(payload, indent=1) + "\n"


def combiner_probability(model: dict, inputs: np.ndarray) -> np.ndarray:
    z = ((inputs - model["mean"]) / model["scale"]) @ model["weights"] + model["bias"]
    return 1 / (1 + np.exp(-np.clip(z, -30, 30)))


def threshold_on_every_source(scores, y, sources, bpcer: float) -> tuple[float, list[str]]:
    """The highest threshold that keeps the BPCER of every live source at most ``bpcer``."""
    live_sources = sorted(set(sources[y == 1]))
    return min(threshold_at_bpcer(scores, (y == 1) & (sources == src), bpcer) for src in live_sources), live_sources


def leave_one_source_out(x, y, groups, l2: float, live_share: float) -> np.ndarray:
    """Texture scores of each training item from a texture model fitted on the other data sources only.

    Out-of-fold by subject is not enough here: folds of one dataset share its camera, its lighting and its
    attack material, so the texture model scores them almost perfectly (out-of-fold EER ~0), and a combiner
    fitted on such scores learns to trust texture over everything. What the issue measured is the opposite:
    on people, cameras and attacks it never saw, the texture model lets half of the printed photos through
    and refuses live faces from new cameras. Scores from a model that never saw the item's dataset show the
    combiner how texture carries over, which is what it meets in use."""
    sources = np.array([source_of(g) for g in groups])
    scores = np.zeros(len(y))
    for src in sorted(set(sources)):
        own = sources == src
        rest = ~own
        if (y[rest] == 1).any() and (y[rest] == 0).any():
            model = fit(x[rest], y[rest], l2, sample_weights(y[rest], groups[rest], live_share))
            scores[own] = probability(model, x[own])
        else:
            scores[own] = 0.5
    return scores


def train_combiner(args, items) -> int:
    """``--combine``: fit the combiner of `siamface.liveness.combined` on the training split."""
    from .combined import INPUTS, combiner_inputs
    from .passive import PassiveLiveness

    table = cue_table(items, args.cache.with_name("cues.npz"))
    ok = table["ok"]
    labels = np.array([i[1] for i in items])
    groups = np.array([i[2] for i in items])
    sources = np.array([source_of(g) for g in groups])
    y = (labels == LIVE).astype(np.float64)
    train, held = ok & ~split(items), ok & split(items)
    texture = PassiveLiveness(args.texture)
    if texture.meta.get("trained_on", {}).get("split") != "training split only":
        raise SystemExit(f"{args.texture}: the texture model must be fitted on the training split only")
    w_train = sample_weights(y[train], groups[train], args.live_share)
    texture_train = leave_one_source_out(
        table["x"][train], y[train], groups[train], float(texture.meta["l2"]), args.live_share
    )
    inputs = combiner_inputs(texture_train, table["cnn"][train], table["sides"][train])
    oof = out_of_fold(
        inputs,
        y[train],
        groups[train],
        args.combine_l2,
        weights=w_train,
        fit_fn=fit_combiner,
        predict_fn=combiner_probability,
    )
    thr, live_sources = threshold_on_every_source(oof, y[train], sources[train], args.bpcer)
    cnn_train = table["cnn"][train].mean(1)
    cnn_thr, _ = threshold_on_every_source(cnn_train, y[train], sources[train], args.bpcer)
    print(
        f"out-of-fold EER {pad_report(oof, labels[train], 0.5).eer:.4f}; threshold (out-of-fold BPCER <= "
        f"{args.bpcer:g} on each live source of the training split: {', '.join(live_sources)}) {thr:.4f}; "
        f"the CNN pair alone, same rule: {cnn_thr:.4f}"
    )
    model = fit_combiner(inputs, y[train], args.combine_l2, w_train)
    print(
        "weights (standardised inputs):",
        dict(zip(INPUTS, np.round(model["weights"], 3).tolist())),
        f"bias {model['bias']:.3f}",
    )
    held_inputs = combiner_inputs(texture.probability(table["x"][held]), table["cnn"][held], table["sides"][held])
    p_held = combiner_probability(model, held_inputs)
    report = pad_report(p_held, labels[held], thr)
    per_source = {
        src: round(float(np.mean(p_held[(sources[held] == src) & (y[held] == 1)] < thr)), 4)
        for src in sorted(set(sources[held & (y == 1)]))
    }
    print("held-out:", json.dumps(report.to_dict()))
    print("held-out BPCER per live source:", json.dumps(per_source))
    meta = {
        "name": args.name,
        "texture_model": texture.name,
        "cnn": "minifasnet_v2 + minifasnet_v1se",
        "l2": args.combine_l2,
        "live_share": args.live_share,
        "bpcer_target": args.bpcer,
        "cnn_alone_threshold": cnn_thr,
        "trained_on": {
            "nuaa": str(args.nuaa) if args.nuaa else None,
            "replay": str(args.replay) if args.replay else None,
            "live": [f"{d} (every {args.live_every})" for d in args.live],
            "split": "training split only (texture scores leave-one-source-out)",
        },
        "held_out": {**report.to_dict(), "bpcer_per_live_source": per_source},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    texture_file = os.path.relpath(Path(args.texture).resolve(), Path(args.out).resolve().parent)
    args.out.write_text(combiner_json(model, thr, meta, texture=texture_file))
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nuaa", type=Path)
    ap.add_argument("--replay", type=Path)
    ap.add_argument(
        "--live",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="more bona fide faces, DIR/<person>/*.jpg (repeatable)",
    )
    ap.add_argument("--live-every", type=int, default=1, metavar="N", help="use every N-th file of --live folders")
    ap.add_argument(
        "--live-share",
        type=float,
        default=0.25,
        help="share of the live class's weight given to the --live folders (0.25)",
    )
    ap.add_argument(
        "--bpcer",
        type=float,
        default=0.05,
        help="threshold: at most this out-of-fold BPCER on every live source of the training split",
    )
    ap.add_argument("--name", default="passive_v2", help="model name in the file's metadata")
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--cache", type=Path, default=Path(".cache/liveness/features.npz"))
    ap.add_argument(
        "--l2",
        type=float,
        nargs="+",
        default=[30.0, 100.0, 300.0, 1000.0, 3000.0],
        help="L2 strengths tried; the one with the lowest out-of-fold EER on the training split wins",
    )
    ap.add_argument("--final", action="store_true", help="refit on every item (train + held out) at the end")
    ap.add_argument(
        "--combine",
        action="store_true",
        help="fit the combiner of the cues (CNN pair, texture model --texture, frame cue) instead "
        "of the texture model; --out defaults to out/liveness/passive_v3.json (the combiner over the pretrained CNN pair)",
    )
    ap.add_argument("--texture", type=Path, default=DEFAULT_MODEL, help="with --combine: the texture model")
    ap.add_argument("--combine-l2", type=float, default=1.0, help="with --combine: the combiner's L2 strength")
    args = ap.parse_args(argv)
    if args.nuaa is None and args.replay is None:
        ap.error("give --nuaa and/or --replay")

    items = collect(args.nuaa, args.replay, args.live, args.live_every)
    if args.combine:
        if args.out == DEFAULT_MODEL:
            args.out = DEFAULT_MODEL.with_name("passive_v3.json")  # a combiner over the pretrained pair
        return train_combiner(args, items)
    x, ok = extract(items, args.cache)
    labels = np.array([i[1] for i in items])
    groups = np.array([i[2] for i in items])
    sources = np.array([source_of(g) for g in groups])
    test = split(items)
    y = (labels == LIVE).astype(np.float64)
    print(f"items {len(items)}, no face {int((~ok).sum())}, held out {int((test & ok).sum())}")
    train = ok & ~test
    w_train = sample_weights(y[train], groups[train], args.live_share)
    best = None
    for l2 in args.l2:  # model selection on the training split only
        oof = out_of_fold(x[train], y[train], groups[train], l2, weights=w_train)
        eer = pad_report(oof, labels[train], 0.5).eer
        print(f"l2 {l2:g}: out-of-fold EER {eer:.4f}")
        if best is None or eer < best[0]:
            best = (eer, l2, oof)
    _, l2, oof = best
    live_sources = sorted(set(sources[train & (y == 1)]))
    thr = min(threshold_at_bpcer(oof, (y[train] == 1) & (sources[train] == src), args.bpcer) for src in live_sources)
    print(
        f"l2 {l2:g}; threshold (out-of-fold BPCER <= {args.bpcer:g} on each live source of the training "
        f"split: {', '.join(live_sources)}) {thr:.4f}"
    )
    model = fit(x[train], y[train], l2, w_train)
    held = ok & test
    p_held = probability(model, x[held])
    report = pad_report(p_held, labels[held], thr)
    print("held-out:", json.dumps(report.to_dict()))
    per_source = {
        src: round(float(np.mean(p_held[(sources[held] == src) & (y[held] == 1)] < thr)), 4)
        for src in sorted(set(sources[held & (y == 1)]))
    }
    print("held-out BPCER per live source:", json.dumps(per_source))
    if args.final:
        model = fit(x[ok], y[ok], l2, sample_weights(y[ok], groups[ok], args.live_share))
    meta = {
        "name": args.name,
        "features": "colour LBP + spectrum, 64x64 face x1.2, Hellinger map",
        "threshold": thr,
        "l2": l2,
        "live_share": args.live_share,
        "bpcer_target": args.bpcer,
        "trained_on": {
            "nuaa": str(args.nuaa) if args.nuaa else None,
            "replay": str(args.replay) if args.replay else None,
            "live": [f"{d} (every {args.live_every})" for d in args.live],
            "split": "final refit on all" if args.final else "training split only",
        },
        "held_out": {**report.to_dict(), "bpcer_per_live_source": per_source},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        mean=model["mean"].astype(np.float32),
        scale=model["scale"].astype(np.float32),
        weights=model["weights"].astype(np.float32),
        bias=np.float32(model["bias"]),
        meta=np.array(json.dumps(meta)),
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
