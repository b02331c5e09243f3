"""Training data: a folder per person, turned into aligned chips, split by identity.

`load_faces` reads every image of ``root/<identity>/<image>`` (AT&T ``sN/*.pgm``, LFW ``Name/Name_0001.jpg``,
your own folders), finds the largest face with the run-time detector and aligns (or, for a ``crop="box"``
chip such as FaceNet's, crops) it exactly as `siamface.pipeline.Pipeline` does, so a network learns on the
chips it will see at run time. Images where no face is found are skipped and counted. The chips are cached
(``.npz`` keyed by the files' names, sizes and times, the detector and the chip geometry). ``aligned=True``
uses the images as given, resized to the chip size (for datasets that are already aligned crops).

`split_identities` cuts the identities (never the images) into train / validation / test; `verification_pairs`
gives every genuine pair and a seeded sample of impostor pairs. The folder reader, the split and the pair
sampler are evaluation's (`siamface.datasets`), so a dataset is read, split and paired the same way by both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .._files import atomic_file, atomic_write_bytes, exposure
from .._progress import printable
from ..alignment import DLIB_CHIP, ChipSpec, crop_all
from ..datasets import (
    count_impostor_pairs,
    folder_identities,
    genuine_indices,
    impostor_indices,
    split_by_counts,
)
from ..errors import ConfigError, SiamfaceError
from ..image import load_image

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class FaceSet:
    """Aligned chips with their identities: ``chips`` (n, s, s, 3) uint8 RGB, ``labels`` (n,) int indexes
    into ``identities``, ``paths`` relative to ``root``."""

    chips: np.ndarray
    labels: np.ndarray
    identities: list[str]
    paths: list[str]
    root: str = ""
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.chips)
        if self.chips.ndim != 4 or self.chips.shape[3] != 3 or self.chips.dtype != np.uint8:
            raise ValueError(f"chips must be (n, s, s, 3) uint8, got {self.chips.dtype} {self.chips.shape}")
        if len(self.labels) != n or len(self.paths) != n:
            raise ValueError(f"{n} chips but {len(self.labels)} labels and {len(self.paths)} paths")

    def __len__(self) -> int:
        return len(self.chips)

    def subset(self, identities: list[str]) -> FaceSet:
        """The images of some identities (labels renumbered in the given order)."""
        index = {name: i for i, name in enumerate(identities)}
        old = np.array([index.get(name, -1) for name in self.identities], np.int64)
        new_labels = old[self.labels]
        keep = np.flatnonzero(new_labels >= 0)
        return FaceSet(self.chips[keep], new_labels[keep], list(identities), [self.paths[i] for i in keep], self.root)

    def describe(self) -> str:
        return f"{len(self.identities)} identities, {len(self)} images from {self.root}"


def _cache_key(root: Path, files: dict[str, list[Path]], detector: str, aligned: bool, chip: ChipSpec) -> str:
    h = hashlib.sha256()
    geometry = [chip.size, chip.padding] + ([chip.crop, chip.margin, chip.square] if chip.crop != "landmarks" else [])
    h.update(json.dumps([CACHE_VERSION, str(root.resolve()), detector, aligned, *geometry]).encode())
    for ident, paths in files.items():
        for p in paths:
            st = p.stat()
            h.update(f"{ident}/{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _others_may_change(cache: Path) -> bool:
    """Is the chips file `cache` one another user owns or others may write (a shared cache folder)? Then it
    is not read: whoever wrote it would choose what is trained on."""
    writable, _ = exposure(cache)
    if writable:
        log.warning("%s: aligned chips not read from it; aligning again", writable)
    return writable is not None


def default_chip_cache() -> Path:
    from .._files import default_cache_dir

    return default_cache_dir() / "train-chips"


def load_faces(
    root: str | os.PathLike,
    *,
    detector: str = "retinaface",
    aligned: bool = False,
    chip: ChipSpec = DLIB_CHIP,
    max_per_identity: int | None = None,
    min_per_identity: int = 1,
    cache_dir: str | os.PathLike | None = None,
    progress=None,
) -> FaceSet:
    """Read a folder-per-person dataset into aligned chips (see module doc).

    max_per_identity: keep the first N images of each identity (natural order); min_per_identity: drop
    identities with fewer images (after faceless ones are skipped). cache_dir: where chips are cached
    (default: the user cache); ``False``-y string "none" disables the cache.
    """
    root = Path(root)
    try:
        files = folder_identities(root)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    if max_per_identity:
        files = {k: v[:max_per_identity] for k, v in files.items()}
    if not files:
        raise ConfigError(f"{root}: no identity folders with images found")
    key = _cache_key(root, files, detector, aligned, chip)
    cache = None if str(cache_dir).lower() == "none" else Path(cache_dir or default_chip_cache()) / f"{key}.npz"
    trusted = cache is not None and cache.is_file() and not _others_may_change(cache)
    cached = _read_chips(cache, files, chip) if trusted else None
    if cached is not None:
        chips, rel, idents, skipped = cached
        log.info("aligned chips read from %s", cache)
    else:
        chips, rel, idents, skipped = _align_all(root, files, detector, aligned, chip, progress)
        if cache is not None:
            try:  # a temporary file of a random name, made O_EXCL (never through a link), renamed into place
                with atomic_file(cache, mode=0o600, fsync=False) as f:
                    np.savez(
                        f,
                        chips=chips,
                        paths=np.array(rel, str),
                        identities=np.array(idents, str),
                        skipped=np.array(skipped, str),
                    )
            except OSError as exc:
                log.warning("%s: the aligned chips are not cached (%s)", cache, exc.strerror or exc)
    counts: dict[str, int] = {}
    for ident in idents:
        counts[ident] = counts.get(ident, 0) + 1
    names = [k for k in files if counts.get(k, 0) >= max(1, min_per_identity)]
    if len(names) < len(files):  # a person with one photo (or none readable) cannot make a genuine pair
        left = [k for k in files if k not in set(names)]
        shown = ", ".join(printable(k) for k in left[:5]) + (", ..." if len(left) > 5 else "")
        log.warning(
            "%d identities left out: fewer than %d usable images (%s)", len(left), max(1, min_per_identity), shown
        )
    index = {name: i for i, name in enumerate(names)}
    keep = [i for i, ident in enumerate(idents) if ident in index]
    return FaceSet(
        np.ascontiguousarray(chips[keep]),
        np.array([index[idents[i]] for i in keep], np.int64),
        names,
        [str(rel[i]) for i in keep],
        str(root),
        [str(s) for s in skipped],
    )


def _read_chips(cache: Path, files: dict[str, list[Path]], chip: ChipSpec):
    """(chips, paths, identities, skipped) from a chips file, or None, with a warning, when it cannot be read or
    does not hold chips of these files (a file cut short when the machine stopped before it reached the disk:
    it is written without fsync; one of another layout): a cache is aligned again, never trusted blindly."""
    try:
        with np.load(cache, allow_pickle=False) as z:
            chips, rel, idents, skipped = z["chips"], list(z["paths"]), list(z["identities"]), list(z["skipped"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: aligned chips not read (%s); aligning again", cache, exc)
        return None
    known = {f"{ident}/{p.name}" for ident, paths in files.items() for p in paths}
    if (
        chips.ndim != 4
        or chips.shape[1:] != (chip.size, chip.size, 3)
        or chips.dtype != np.uint8
        or not len(chips) == len(rel) == len(idents)
        or not {str(r).replace(os.sep, "/") for r in rel} <= known
        or not {str(i) for i in idents} <= set(files)
    ):
        log.warning("%s: not aligned chips of this dataset; aligning again", cache)
        return None
    return chips, rel, idents, skipped


def _align_all(root, files, detector_name, aligned, chip, progress):
    detector = None
    if not aligned:
        from ..detection import create_detector

        detector = create_detector(detector_name)
    chips, rel, idents, skipped = [], [], [], []
    total = sum(len(v) for v in files.values())
    done = 0
    for ident, paths in files.items():
        for path in paths:
            name = str(path.relative_to(root))
            try:
                image = load_image(path)
            except SiamfaceError as exc:
                log.warning("skipped %s: %s", name, exc)
                skipped.append(name)
                continue
            if aligned:
                interp = cv2.INTER_AREA if max(image.shape[:2]) > chip.size else cv2.INTER_LINEAR
                chips.append(cv2.resize(image, (chip.size, chip.size), interpolation=interp))
            else:
                faces = detector.detect(image)
                if len(faces) == 0:
                    skipped.append(name)
                    continue
                chips.append(crop_all(image, faces.boxes[:1], faces.landmarks[:1], chip)[0])
            rel.append(name)
            idents.append(ident)
            done += 1
            if progress is not None:
                progress(done + len(skipped), total)
    if not chips:
        raise ConfigError(f"{root}: no face found in any image")
    if skipped:
        log.warning("%d of %d images skipped (no face or unreadable)", len(skipped), total)
    return np.stack(chips), rel, idents, skipped


def _count(value: float, n: int, what: str) -> int:
    """How many of `n` identities a ``--val`` / ``--test`` value takes: a fraction below 1 (rounded; one that
    comes to a single identity takes two), or a whole count, 0 or at least 2. One identity has no impostor
    pair: its EER, which picks the best epoch (validation) or is the reported figure (test), is undefined."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"--{what} must be a count or a fraction of the identities, >= 0, not {value!r}")
    if value < 1:
        count = int(round(value * n))
        return 2 if count == 1 else count
    if value != int(value) or value == 1:
        raise ConfigError(
            f"--{what} {value:g}: a count of identities is 0 or a whole number from 2 (one identity has no "
            "impostor pairs to measure an error rate on), a fraction is below 1"
        )
    return int(value)


def split_identities(identities: list[str], val: float, test: float, seed: int) -> dict[str, list[str]]:
    """Disjoint train / val / test lists of identities; ``val`` and ``test`` are counts (0, or >= 2) or
    fractions (see `_count`).

    The identities are sorted, shuffled with ``seed``; test takes the first ones, val the next, train the rest
    (`siamface.datasets.split_by_counts`, the split evaluation uses too).
    """
    n = len(set(identities))
    n_test, n_val = _count(test, n, "test"), _count(val, n, "val")
    if n_test + n_val > n - 2:
        raise ConfigError(
            f"{n} identities cannot give {n_test} test + {n_val} validation identities and still leave two to train "
            "on (--test 0 and --val 0 leave those splits out)"
        )
    test_ids, val_ids, train_ids = split_by_counts(identities, [n_test, n_val, n - n_test - n_val], seed)
    return {"train": train_ids, "val": val_ids, "test": test_ids}


def verification_pairs(
    labels: np.ndarray, seed: int = 0, impostor_ratio: float = 1.0, max_genuine: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, same) index arrays: every genuine pair (i < j, at most ``max_genuine``, seeded sample), then
    ``impostor_ratio`` times as many distinct impostor pairs drawn without replacement (seeded), each part
    in (a, b) order.

    The pairs come from evaluation's sampler (`siamface.datasets.genuine_indices`, `impostor_indices`) over
    the identities in the order they first appear in ``labels``; a `FaceSet`'s labels run identity by
    identity, so there the images keep their own order.
    """
    labels = np.asarray(labels)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # identity -> its place by first appearance
    order = np.argsort(rank[inverse.ravel()], kind="stable")  # images grouped by identity, own order kept
    sizes = np.bincount(rank[inverse.ravel()], minlength=len(first)).tolist()
    rng = np.random.default_rng(seed)
    gi, gj = genuine_indices(sizes)
    if max_genuine is not None and len(gi) > max_genuine:
        keep = np.sort(rng.choice(len(gi), max_genuine, replace=False))
        gi, gj = gi[keep], gj[keep]
    n_imp = min(count_impostor_pairs(sizes), int(round(impostor_ratio * len(gi))))
    ii, ij = impostor_indices(sizes, n_imp, rng)
    a = np.concatenate([order[gi], order[ii]])
    b = np.concatenate([order[gj], order[ij]])
    a, b = np.minimum(a, b), np.maximum(a, b)
    n_gen = len(gi)
    parts = [np.lexsort((b[:n_gen], a[:n_gen])), n_gen + np.lexsort((b[n_gen:], a[n_gen:]))]
    pick = np.concatenate(parts)
    a, b = a[pick], b[pick]
    return a, b, labels[a] == labels[b]


def write_split(
    run_dir: str | os.PathLike,
    faces: FaceSet,
    split: dict[str, list[str]],
    seed: int,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Save ``split.json`` (identities and files per part) and, given the test pairs (indexes into the test
    subset), ``test_pairs_same.txt`` / ``test_pairs_different.txt`` for ``siamface evaluate``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = {}
    for name, ids in split.items():
        wanted = set(ids)
        parts[name] = {
            "identities": ids,
            "files": [p for p, lab in zip(faces.paths, faces.labels) if faces.identities[lab] in wanted],
        }
    doc = {"root": str(Path(faces.root).resolve()), "seed": seed, "skipped": faces.skipped, **parts}
    path = run_dir / "split.json"
    atomic_write_bytes(path, json.dumps(doc, indent=1).encode())  # never through a link planted at its name
    if pairs is not None:
        test = faces.subset(split["test"])
        a, b, same = pairs
        # one pair a line, its two paths separated by a tab (paths hold spaces: "Ada Lovelace/1.jpg"); a path
        # with a line break or a tab cannot be written so: its pairs are left out, said in the log
        unwritable = {p for p in test.paths if any(c in p for c in "\t\r\n")}
        if unwritable:
            log.warning(
                "%d test image(s) left out of the test pair files: a line break or tab in the path", len(unwritable)
            )
        for flag, fname in ((True, "test_pairs_same.txt"), (False, "test_pairs_different.txt")):
            lines = [
                f"{test.paths[x]}\t{test.paths[y]}"
                for x, y, s in zip(a, b, same)
                if bool(s) == flag and not {test.paths[x], test.paths[y]} & unwritable
            ]
            atomic_write_bytes(run_dir / fname, ("\n".join(lines) + "\n").encode())
    return path


def read_split(run_dir: str | os.PathLike) -> dict:
    return json.loads((Path(run_dir) / "split.json").read_text())
