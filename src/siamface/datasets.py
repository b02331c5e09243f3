"""Folder-per-person datasets: listing them, splitting their identities, sampling their pairs.

One reader, one split and one pair sampler, shared by evaluation (`siamface.evaluation.protocols`), training
(`siamface.training.data`) and bulk enrollment (`siamface.gallery.enroll`). Pure NumPy; nothing here reads
an image, it only lists paths and draws indices.

* Layout: ``root/<identity>/<image>`` (AT&T ``sN/*.pgm``, LFW ``Name/Name_0001.jpg``, ``celeba_ids/<id>/*.jpg``).
  Images are the files whose suffix is in `siamface._files.IMAGE_SUFFIXES`; hidden entries are skipped.
* Order: **natural order** everywhere, identities and files alike (`natural_key`: ``s2`` before ``s10``,
  ``2.pgm`` before ``10.pgm``, case-insensitive). Every split and sample below depends only on that order
  and the seed.
* Randomness: every choice goes through ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._files import IMAGE_SUFFIXES, WALKED_PHOTO_SUFFIXES

__all__ = [
    "Pair",
    "folder_identities",
    "genuine_indices",
    "genuine_pairs",
    "files_under",
    "image_files",
    "impostor_indices",
    "impostor_pairs",
    "natural_key",
    "split_by_counts",
    "split_identities",
]

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- #
# reading
# --------------------------------------------------------------------------- #
def natural_key(name: str) -> list[Any]:
    """Sort key so that ``2.pgm`` < ``10.pgm`` and ``s2`` < ``s10`` (case-insensitive)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _norm_exts(exts: Iterable[str]) -> tuple[str, ...]:
    out = tuple(("." + e.lstrip(".")).lower() for e in exts)
    if not out:
        raise ValueError("exts is empty: give at least one image extension")
    return out


def image_files(folder: PathLike, exts: Iterable[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The image files directly in `folder` (suffix in `exts`, case-insensitive), hidden ones skipped, in
    natural order. The folder must exist (``FileNotFoundError``/``NotADirectoryError`` otherwise)."""
    ext_set = _norm_exts(exts)
    files = [f for f in Path(folder).iterdir() if not f.name.startswith(".") and f.suffix.lower() in ext_set]
    return sorted((f for f in files if f.is_file()), key=lambda q: natural_key(q.name))


def files_under(
    paths: Iterable[PathLike], exts: Iterable[str] = WALKED_PHOTO_SUFFIXES, what: str = "image", links: bool = False
) -> list[str]:
    """The files that `paths` name: a file as given; a folder as every file inside it whose suffix is in
    `exts`, subfolders included (not through symbolic links), hidden files and folders skipped (a drive's
    ``.Trash-1000`` holds the photos its user deleted, ``._IMG.jpg`` is a Mac's companion of a photo, not an
    image), in natural order. A folder with no such file is a `ConfigError` (naming `what` it lacks), not a
    silent nothing. By default the photos siamface decodes and those it does not (`WALKED_PHOTO_SUFFIXES`: the
    reader reports a HEIC as unreadable rather than the walk passing over it). `links`: the links to folders
    met inside a folder (not walked) are listed too, in their place, for the caller to report."""
    from .errors import ConfigError

    ext_set = _norm_exts(exts)
    out: list[str] = []
    for path in paths:
        if not Path(path).is_dir():
            out.append(os.fspath(path))
            continue
        found = []
        for root, folders, names in os.walk(path):
            folders[:] = [f for f in folders if not f.startswith(".")]  # not walked into
            found += [Path(root) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in ext_set]
            if links:  # os.walk lists a link to a folder among the folders, and does not go through it
                found += [Path(root) / f for f in folders if (Path(root) / f).is_symlink()]
        if not found:
            raise ConfigError(f"{os.fspath(path)}: a folder with no {what} in it ({', '.join(sorted(ext_set))})")
        out.extend(str(f) for f in sorted(found, key=lambda f: [natural_key(part) for part in f.parts]))
    return out


def folder_identities(
    root: PathLike, exts: Iterable[str] = IMAGE_SUFFIXES, keep_empty: bool = False
) -> dict[str, list[Path]]:
    """``{identity: [image paths]}`` for a dataset laid out as ``root/<identity>/<image>``.

    Identities are the immediate sub-folders of ``root`` and files are those
    directly inside them whose extension (case-insensitive) is in ``exts``
    (default: siamface's image suffixes, which include ``.pgm``). Hidden entries are
    skipped, as are files directly under ``root`` (``README``, ``SOURCE.txt``)
    and, unless ``keep_empty``, folders without any image. Identities and files
    are in natural sort order (``s2`` before ``s10``, ``2.pgm`` before ``10.pgm``).
    Raises ``FileNotFoundError`` if ``root`` is not a directory.
    """
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"dataset root is not a directory: {r}")
    ext_set = _norm_exts(exts)
    out: dict[str, list[Path]] = {}
    for d in sorted(r.iterdir(), key=lambda q: natural_key(q.name)):
        if d.name.startswith(".") or not d.is_dir():
            continue
        files = image_files(d, ext_set)
        if files or keep_empty:
            out[d.name] = files
    return out


# --------------------------------------------------------------------------- #
# identity split
# --------------------------------------------------------------------------- #
def split_by_counts(ids: Iterable[Any], counts: Sequence[int], seed: int = 0) -> tuple[list[Any], ...]:
    """Cut the unique ``ids`` into disjoint parts of the given sizes: the ids are sorted, shuffled with
    ``seed`` (one permutation), and part k takes the next ``counts[k]`` of them; each part is returned
    sorted. The one split behind `split_identities` (fractions) and training's (counts of test/val)."""
    uniq = sorted(set(ids), key=lambda v: (str(type(v)), v))
    if any(int(c) < 0 for c in counts) or sum(int(c) for c in counts) > len(uniq):
        raise ValueError(f"cannot cut {len(uniq)} identities into parts of {list(counts)}")
    perm = np.random.default_rng(seed).permutation(len(uniq))
    bounds = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
    return tuple(sorted(uniq[i] for i in perm[bounds[k] : bounds[k + 1]]) for k in range(len(counts)))


def split_identities(
    ids: Iterable[Any], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> tuple[list[Any], ...]:
    """Split identities into disjoint groups (e.g. train/val/test) of the given fractions.

    Duplicate ids are merged (so a per-image id list may be passed). The unique
    ids are sorted, shuffled with ``seed`` and cut into ``len(fractions)``
    parts; sizes use the largest-remainder rule so they add up exactly (ties to
    the earlier part), e.g. 40 ids with (0.7, 0.15, 0.15) -> 28, 6, 6. Each part
    is returned sorted. Same input and seed -> same split. Raises
    ``ValueError`` for negative fractions or fractions not summing to 1.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0:
        raise ValueError("fractions must be a non-empty sequence")
    if (fr < 0).any() or not np.isclose(fr.sum(), 1.0, atol=1e-6):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    ids = list(ids)
    n = len(set(ids))
    raw = fr * n
    counts = np.floor(raw + 1e-9).astype(int)
    rest = n - int(counts.sum())
    if rest > 0:
        order = sorted(range(fr.size), key=lambda k: (-(raw[k] - counts[k]), k))
        for k in order[:rest]:
            counts[k] += 1
    return split_by_counts(ids, counts.tolist(), seed)


# --------------------------------------------------------------------------- #
# pairs
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Pair:
    """Two images to compare, with their identities; ``label`` is 1 when same person."""

    a: Path
    b: Path
    id_a: str
    id_b: str

    @property
    def same(self) -> bool:
        return self.id_a == self.id_b

    @property
    def label(self) -> int:
        return int(self.same)


def genuine_indices(sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)`` flat indices of every same-identity pair, ``i < j``, for identities of these sizes laid out
    one block after another: block by block, then ``i``, then ``j``."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else np.zeros(0, np.int64)
    parts = [np.triu_indices(int(s), 1) for s in sizes]
    i = np.concatenate([p[0] + s for p, s in zip(parts, starts)] or [np.zeros(0, np.int64)]).astype(np.int64)
    j = np.concatenate([p[1] + s for p, s in zip(parts, starts)] or [np.zeros(0, np.int64)]).astype(np.int64)
    return i, j


def count_impostor_pairs(sizes: Sequence[int]) -> int:
    """How many different-identity pairs identities of these sizes give."""
    total = sum(sizes)
    return (total * total - sum(s * s for s in sizes)) // 2


def impostor_indices(sizes: Sequence[int], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct different-identity pairs ``(i, j)``, ``i < j``, drawn uniformly without replacement,
    as flat indices into identities of these sizes laid out one block after another; in sampling order.

    The pairs are numbered in ``(i, j)`` order and ``n`` numbers are drawn with ``rng.choice(total, n,
    replace=False)``: no list of every pair is built, so millions of combinations are cheap.
    Raises ``ValueError`` if ``n`` is negative or exceeds the number of different-identity pairs.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    total = count_impostor_pairs(sizes)
    if n > total:
        raise ValueError(f"asked for {n} impostor pairs but only {total} different-person pairs exist")
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    block_end = np.cumsum(sizes)[owner]  # first flat index after image i's identity block
    per_image = int(sizes.sum()) - block_end  # partners j > i of another identity
    offsets = np.concatenate([[0], np.cumsum(per_image)])
    lin = rng.choice(total, size=n, replace=False)
    i = np.searchsorted(offsets, lin, side="right") - 1
    j = block_end[i] + (lin - offsets[i])
    return i.astype(np.int64), j.astype(np.int64)


def genuine_pairs(identities: Mapping[str, Sequence[PathLike]]) -> list[Pair]:
    """All same-person pairs ``(files[i], files[j])``, ``i < j``, identity by identity in mapping order.

    An identity with n images gives n(n-1)/2 pairs (AT&T: 40 x 45 = 1,800).
    """
    out: list[Pair] = []
    for ident, files in identities.items():
        fs = [Path(f) for f in files]
        for i in range(len(fs)):
            for j in range(i + 1, len(fs)):
                out.append(Pair(fs[i], fs[j], ident, ident))
    return out


def impostor_pairs(identities: Mapping[str, Sequence[PathLike]], n: int, seed: int = 0) -> list[Pair]:
    """``n`` distinct different-person pairs drawn uniformly at random without replacement.

    Unordered pairs are never repeated (``(x, y)`` and ``(y, x)`` are the same
    pair). In each returned pair ``a`` comes before ``b`` in the mapping's
    order (identity order, then file order); the list is in sampling order,
    which depends only on ``identities`` and ``seed`` (`impostor_indices`).
    Raises ``ValueError`` if ``n`` is negative or exceeds the number of
    possible different-person pairs.
    """
    names = list(identities)
    files = [[Path(f) for f in identities[k]] for k in names]
    sizes = [len(f) for f in files]
    i, j = impostor_indices(sizes, n, np.random.default_rng(seed))
    flat = [f for fs in files for f in fs]
    owner = np.repeat(np.arange(len(names)), sizes)
    return [Pair(flat[a], flat[b], names[owner[a]], names[owner[b]]) for a, b in zip(i.tolist(), j.tolist())]
