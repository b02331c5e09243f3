"""Stage outputs cached on disk for the accuracy benchmarks, so that one detection pass serves every model.

    dets = detections(root, files, "retinaface")         # {file: Faces (all faces, biggest first) or None}
    emb = embeddings("facenet", root, files, dets, pipe) # (n, d) float32, NaN rows where no face / unreadable

Detections (boxes, scores, landmarks and the detector's own five keypoints, NaN where it gives none, of every
face) are stored per dataset and detector; embeddings of the
chosen face per dataset, model, face choice and flip setting, as .npz files in CACHE (default: the
worktree's .cache/bench/, git-ignored). A cache file is only valid for the same files in the same order
(checked) and the same code: delete the folder after changing a model. Everything goes through the
library's own stages (`Pipeline.detect`, `Pipeline.embed`), so the figures are those of the product.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from siamface.errors import ImageError  # noqa: E402
from siamface.evaluation.protocols import folder_identities  # noqa: E402
from siamface.image import load_image  # noqa: E402
from siamface.types import Faces  # noqa: E402

#: celeba_ids folder protocol: the first PER_ID photos of each identity; N_FIT identities (seeded) are the
#: fitting identities, on which every choice of the FaceNet and fused models is made.
PER_ID = 8
N_FIT = 100

CACHE = Path(os.environ.get("SIAMFACE_BENCH_CACHE", HERE.parent / ".cache" / "bench"))


def _key(root: Path, tag: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE / f"{root.name}-{tag}.npz"


def _progress(label: str, i: int, n: int) -> None:
    if i % 200 == 0 or i == n:
        print(f"  {label}: {i}/{n}", file=sys.stderr, flush=True)


def _load_detections(path: Path, tag: str) -> dict[str, Faces | None]:
    if not path.exists():
        return {}
    d = np.load(path, allow_pickle=False)
    if "keypoints" not in d.files:  # written before the keypoints were kept: detect again
        return {}
    out: dict[str, Faces | None] = {}
    for i, f in enumerate(d["files"]):
        a, b = d["offsets"][i], d["offsets"][i + 1]
        out[str(f)] = (
            None
            if d["unreadable"][i]
            else Faces(
                boxes=d["boxes"][a:b],
                scores=d["scores"][a:b],
                landmarks=d["landmarks"][a:b],
                detector=tag,
                data={} if np.isnan(d["keypoints"][a:b]).all() and b > a else {"keypoints": d["keypoints"][a:b]},
            )
        )
    return out


def detections(root: Path, files: list[str], detector, tag: str) -> dict[str, Faces | None]:
    """Every face of each image (None: unreadable), computed once per (dataset, detector tag, file)."""
    path = _key(root, f"det-{tag}")
    known = _load_detections(path, tag)
    todo = [f for f in files if f not in known]
    for i, f in enumerate(todo, 1):
        try:
            known[f] = detector.detect(load_image(root / f))
        except ImageError:
            known[f] = None
        _progress(f"detect {root.name}", i, len(todo))
    if todo:
        names = list(known)
        faces = [known[f] if known[f] is not None else Faces() for f in names]
        offsets = np.cumsum([0] + [len(x) for x in faces])
        np.savez(
            path,
            files=np.array(names),
            offsets=offsets,
            boxes=np.concatenate([x.boxes.reshape(-1, 4) for x in faces]).astype(np.float32),
            scores=np.concatenate([x.scores.reshape(-1) for x in faces]).astype(np.float32),
            landmarks=np.concatenate([x.landmarks.reshape(-1, 5, 2) for x in faces]).astype(np.float32),
            keypoints=np.concatenate(
                [np.asarray(x.data.get("keypoints", np.full((len(x), 5, 2), np.nan))).reshape(-1, 5, 2) for x in faces]
            ).astype(np.float32),
            unreadable=np.array([known[f] is None for f in names]),
        )
    return {f: known[f] for f in files}


def embeddings(
    tag: str, root: Path, files: list[str], dets: dict[str, Faces | None], pipeline, face: str = "largest"
) -> np.ndarray:
    """(n, d) embeddings of the chosen face of each file (NaN rows: no face or unreadable), cached by tag and
    the model's name@version (and the detector's keypoint refinement, for encoders aligned on keypoints)."""
    import hashlib

    info = pipeline.encoder.info
    version = hashlib.sha1(f"{info.name}@{info.version}{_refinement(pipeline)}".encode()).hexdigest()[:8]
    path = _key(root, f"emb-{tag}-{version}-{face}")
    known: dict[str, np.ndarray] = {}
    if path.exists():
        d = np.load(path, allow_pickle=False)
        known = {str(f): e for f, e in zip(d["files"], d["emb"])}
    todo = [f for f in files if f not in known]
    dim = info.embedding_size
    for i, f in enumerate(todo, 1):
        e = np.full(dim, np.nan, np.float32)
        faces = dets[f]
        if faces is not None and len(faces):
            image = load_image(root / f)
            k = faces.chosen(face, image.shape)
            e = pipeline.embed(image, faces[k : k + 1]).embeddings[0]
        known[f] = e
        _progress(f"embed {root.name} {tag}", i, len(todo))
    if todo:
        np.savez(path, files=np.array(list(known)), emb=np.stack(list(known.values())))
    return np.stack([known[f] for f in files]) if files else np.zeros((0, dim), np.float32)


def part_key(name: str, options: dict) -> tuple[str, bool, tuple]:
    """A fused model's part (its encoder's name and options, `Fusion.parts`) as a key: name, flip averaging, the
    other options sorted."""
    return name, bool(options.get("flip")), tuple(sorted((k, v) for k, v in options.items() if k != "flip"))


def part_tag(key: tuple[str, bool, tuple]) -> str:
    """The embedding cache tag of a `part_key`: ``dlib-resnet-flip``, ``dlib-resnet-keypoints`` ..."""
    name, flip, options = key
    return name + ("-flip" if flip else "") + "".join(f"-{k}" for k, v in options if v)


def part_encoder(key: tuple[str, bool, tuple]):
    from siamface.embedding import create_encoder

    name, flip, options = key
    return create_encoder(name, flip=flip, **dict(options))


def _refinement(pipeline) -> str:
    """What the pipeline's keypoint refinement adds to an embedding's cache key: nothing for an encoder whose
    chips are not warped from keypoints, or a detector that does not refine (the keys of before)."""
    from siamface.embedding import uses_keypoints

    det = pipeline.detector
    below = getattr(det, "refine_below", None)
    if below is None or not hasattr(det, "refine_keypoints") or not uses_keypoints(pipeline.encoder):
        return ""
    return f"+refine<{below:g}:{det.refine_region:g}x{det.refine_box}"


def celeba_files(root: Path) -> tuple[list[str], np.ndarray]:
    """The first PER_ID photos of each identity (the folder protocol's images) and their identity index."""
    ids = folder_identities(root)
    files, labels = [], []
    for k, name in enumerate(sorted(ids)):
        for p in ids[name][:PER_ID]:
            files.append(str(Path(p).relative_to(root)))
            labels.append(k)
    return files, np.array(labels)


#: celeba_ids label noise, left out where a tail of impostor scores is measured (`clean_celeba`): identities
#: holding a byte-identical copy of another identity's photo (SOURCE.txt's duplicate groups; 07312 is a mix of
#: several people), and two identities that are one person (looked at: 45 of their 64 cross pairs score
#: above 0.6 with sface).
MIXED_IDENTITIES = ("07310", "07312", "07314", "07317", "07320")
SAME_PERSON = (("07392", "07393"),)


def clean_celeba(files: list[str], labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """`celeba_files`' files and labels less the MIXED_IDENTITIES, with each SAME_PERSON pair one identity."""
    names = np.array([f.split("/")[0] for f in files])
    labels = labels.copy()
    for a, b in SAME_PERSON:
        if (names == a).any():
            labels[names == b] = labels[names == a][0]
    keep = ~np.isin(names, MIXED_IDENTITIES)
    return [f for f, k in zip(files, keep) if k], labels[keep]


def att_files(root: Path) -> tuple[list[str], np.ndarray]:
    """Every AT&T image (s3/1.pgm ...), person by person, and its person's folder name."""
    ids = folder_identities(root)
    files = [str(Path(p).relative_to(root)) for k in sorted(ids) for p in ids[k]]
    return files, np.array([f.split("/")[0] for f in files])


def yale_files(root: Path) -> tuple[list[str], np.ndarray]:
    """Every yale_faces image (subject01.glasses ...) and its subject."""
    files = sorted(p.name for p in root.iterdir() if p.name.startswith("subject"))
    return files, np.array([f.split(".")[0] for f in files])


def fit_split(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the images whose identity is one of the N_FIT fitting identities (seed 0)."""
    fit = np.random.default_rng(0).permutation(np.unique(labels))[:N_FIT]
    return np.isin(labels, fit)


def all_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) of a labelled set: indices and 1 for genuine, 0 for impostor."""
    i, j = np.triu_indices(len(labels), 1)
    return i, j, (labels[i] == labels[j]).astype(int)


def set_pairs(files: list[str], labels: np.ndarray | None, pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A set's pairs as indices into `files` and 1 for genuine: every pair of a labelled set (`all_pairs`),
    or its explicit (file, file, same) `pairs`."""
    if pairs is None:
        return all_pairs(labels)
    pos = {f: k for k, f in enumerate(files)}
    i = np.array([pos[a] for a, _, _ in pairs])
    j = np.array([pos[b] for _, b, _ in pairs])
    return i, j, np.array([d for _, _, d in pairs])


def pair_scores(emb: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair; a pair with a missed face scores -1 (a non-match)."""
    gram = emb.astype(np.float64) @ emb.astype(np.float64).T
    s = gram[i, j]
    return np.where(np.isnan(s), -1.0, s)
