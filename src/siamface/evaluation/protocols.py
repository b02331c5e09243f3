"""Evaluation protocols: which comparisons to make.

* LFW's ``pairs.txt`` (:func:`read_lfw_pairs`, :func:`lfw_image_path`,
  :func:`flatten_folds`);
* folder-per-person datasets (AT&T/ORL ``sN/*.pgm``, ``celeba_ids/<id>/*.jpg``):
  :func:`make_pairs`; the reader, pair sampler and identity split it uses
  (:func:`folder_identities`, :func:`genuine_pairs`, :func:`impostor_pairs`,
  :func:`split_identities`) live in :mod:`siamface.datasets`, shared with
  training and enrollment, and are re-exported here;
* simple two-column pair lists (:func:`read_pairs_file`);
* open-set 1:N splits (:func:`open_set_split`).

Everything is deterministic: files are listed in a fixed (natural) order and
every random choice goes through ``numpy.random.default_rng(seed)``. Nothing
here reads images; it only lists paths. Labels: 1 = same person, 0 = different.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._files import IMAGE_SUFFIXES, open_for_reading
from ..datasets import (
    Pair,
    count_impostor_pairs,
    folder_identities,
    genuine_pairs,
    impostor_pairs,
    split_identities,
)

__all__ = [
    "IMAGE_EXTS",
    "LfwPair",
    "Pair",
    "OpenSetSplit",
    "read_lfw_pairs",
    "lfw_image_path",
    "flatten_folds",
    "folder_identities",
    "genuine_pairs",
    "impostor_pairs",
    "make_pairs",
    "pair_labels",
    "split_identities",
    "read_pairs_file",
    "open_set_split",
]

#: Image extensions recognised by :func:`folder_identities` (case-insensitive): siamface's one set,
#: :data:`siamface._files.IMAGE_SUFFIXES`, under its old name.
IMAGE_EXTS = IMAGE_SUFFIXES

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- #
# LFW
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class LfwPair:
    """One line of LFW's pairs file: images ``name1_{idx1:04d}`` and ``name2_{idx2:04d}``."""

    name1: str
    idx1: int
    name2: str
    idx2: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2

    @property
    def label(self) -> int:
        """1 for a matched (same person) pair, 0 for a mismatched pair."""
        return int(self.same)

    def paths(self, root: PathLike) -> tuple[Path, Path]:
        return lfw_image_path(root, self.name1, self.idx1), lfw_image_path(root, self.name2, self.idx2)


def lfw_image_path(root: PathLike, name: str, i: int) -> Path:
    """``root/name/name_{i:04d}.jpg``, LFW's file layout (e.g. ``Aaron_Peirsol/Aaron_Peirsol_0001.jpg``)."""
    return Path(root) / name / f"{name}_{int(i):04d}.jpg"


def _parse_lfw_line(tokens: list[str], where: str) -> LfwPair:
    """One pair line; ValueError naming it when it is not one, or is a pair whose label would be false: a
    matched pair of one image with itself (a perfect score counted as a genuine success), a mismatched pair
    naming one person twice (a genuine pair counted as an impostor)."""
    try:
        if len(tokens) == 3:
            pair = LfwPair(tokens[0], int(tokens[1]), tokens[0], int(tokens[2]))
        elif len(tokens) == 4:
            pair = LfwPair(tokens[0], int(tokens[1]), tokens[2], int(tokens[3]))
        else:
            raise LookupError
    except ValueError:
        raise ValueError(f"{where}: image numbers must be integers: {' '.join(tokens)!r}") from None
    except LookupError:
        raise ValueError(
            f"{where}: expected 'name i j' (matched) or 'name1 i name2 j' (mismatched), got {' '.join(tokens)!r}"
        ) from None
    if min(pair.idx1, pair.idx2) < 1:
        raise ValueError(f"{where}: image numbers start at 1: {' '.join(tokens)!r}")
    if len(tokens) == 3 and pair.idx1 == pair.idx2:
        raise ValueError(f"{where}: a matched pair of one image with itself: {' '.join(tokens)!r}")
    if len(tokens) == 4 and pair.name1 == pair.name2:
        raise ValueError(f"{where}: a mismatched pair naming one person twice: {' '.join(tokens)!r}")
    return pair


def _text_lines(path: Path) -> list[str]:
    """The lines of a pairs file (UTF-8, line ends kept), or ValueError naming the file: one that is not a
    regular file (a FIFO in a dataset handed over blocked `evaluate` for ever), or not UTF-8 text."""
    fd, info = open_for_reading(path)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path}: not a regular file (a pairs file is a text file)")
        data = f.read()
    try:
        return list(io.StringIO(data.decode("utf-8"), newline=None))  # lines as a text file reads them
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def read_lfw_pairs(path: PathLike) -> list[list[LfwPair]]:
    """Parse an LFW pairs file into a list of folds (each a list of :class:`LfwPair`).

    LFW's ``pairs.txt`` starts with ``10\\t300`` (10 folds x 300 pairs per class);
    each fold then has 300 matched lines ``name i j`` followed by 300 mismatched
    lines ``name1 i name2 j``. Tabs or spaces separate fields; blank lines and
    lines starting with ``#`` are skipped. Also accepted:

    * a one-number header ``N`` (as in ``pairsDevTrain.txt``/``pairsDevTest.txt``):
      one fold of N matched then N mismatched pairs;
    * no header at all: all lines form a single fold, in file order, each line
      being a matched or mismatched pair by its number of fields.

    With a header the layout is checked strictly (counts, matched-then-mismatched
    order, a matched line naming one person); any violation raises ``ValueError``
    naming the line.
    """
    p = Path(path)
    lines: list[tuple[int, list[str]]] = []
    for no, raw in enumerate(_text_lines(p), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        lines.append((no, line.split()))
    if not lines:
        raise ValueError(f"{p}: no pairs found (empty file)")

    first_no, first = lines[0]
    is_header = 1 <= len(first) <= 2 and all(t.isdigit() for t in first)
    if not is_header:
        return [[_parse_lfw_line(tok, f"{p}:{no}") for no, tok in lines]]

    if len(first) == 2:
        n_folds, per_class = int(first[0]), int(first[1])
    else:
        n_folds, per_class = 1, int(first[0])
    if n_folds < 1 or per_class < 1:
        raise ValueError(f"{p}:{first_no}: header must give positive counts, got {' '.join(first)!r}")
    body = lines[1:]
    expected = n_folds * 2 * per_class
    if len(body) != expected:
        raise ValueError(
            f"{p}: header says {n_folds} fold(s) x {per_class} pairs per class = {expected} pair lines, "
            f"but the file has {len(body)}"
        )
    folds: list[list[LfwPair]] = []
    for f in range(n_folds):
        fold: list[LfwPair] = []
        for k in range(2 * per_class):
            no, tok = body[f * 2 * per_class + k]
            where = f"{p}:{no}"
            pair = _parse_lfw_line(tok, where)
            want_matched = k < per_class
            if want_matched and len(tok) != 3:
                raise ValueError(f"{where}: fold {f + 1} expects a matched line 'name i j' here, got {' '.join(tok)!r}")
            if not want_matched and len(tok) != 4:
                raise ValueError(
                    f"{where}: fold {f + 1} expects a mismatched line 'name1 i name2 j' here, got {' '.join(tok)!r}"
                )
            fold.append(pair)
        folds.append(fold)
    return folds


def flatten_folds(folds: Sequence[Sequence[LfwPair]]) -> tuple[list[LfwPair], np.ndarray, np.ndarray]:
    """``(pairs, labels, fold_ids)`` for use with :func:`siamface.evaluation.metrics.lfw_10fold`."""
    pairs: list[LfwPair] = []
    fold_ids: list[int] = []
    for f, fold in enumerate(folds):
        pairs.extend(fold)
        fold_ids.extend([f] * len(fold))
    labels = np.array([pr.label for pr in pairs], dtype=np.int64)
    return pairs, labels, np.array(fold_ids, dtype=np.int64)


# --------------------------------------------------------------------------- #
# folder-per-person datasets
# --------------------------------------------------------------------------- #
def pair_labels(pairs: Iterable[Pair | LfwPair]) -> np.ndarray:
    """The 0/1 labels of a list of pairs, as an int array."""
    return np.array([p.label for p in pairs], dtype=np.int64)


def make_pairs(
    root: PathLike | Mapping[str, Sequence[PathLike]],
    impostor_ratio: float = 1.0,
    n_impostors: int | None = None,
    seed: int = 0,
    exts: Iterable[str] = IMAGE_EXTS,
) -> list[Pair]:
    """Verification pairs for a folder-per-person dataset: all genuine pairs, then sampled impostors.

    ``root`` is a dataset folder (see :func:`folder_identities`) or an already
    built ``{identity: files}`` mapping. The number of impostor pairs is
    ``n_impostors`` when given, otherwise ``round(impostor_ratio * n_genuine)``
    (capped at the number of possible different-person pairs). Returns genuine
    pairs first, then impostors; use :func:`pair_labels` for the labels.
    """
    ids = dict(root) if isinstance(root, Mapping) else folder_identities(root, exts)
    gen = genuine_pairs(ids)
    if n_impostors is None:
        if not 0 <= impostor_ratio < np.inf:  # NaN too
            raise ValueError(f"impostor_ratio must be a finite number >= 0, got {impostor_ratio}")
        n_imp = min(round(impostor_ratio * len(gen)), count_impostor_pairs([len(v) for v in ids.values()]))
    else:
        n_imp = int(n_impostors)
    return gen + impostor_pairs(ids, n_imp, seed)


def read_pairs_file(path: PathLike, root: PathLike | None = None) -> list[tuple[Any, Any]]:
    """Read a two-column pair list (``a b`` per line, e.g. ``07399/000093.jpg 07256/000114.jpg``).

    Fields are separated by a tab when the line holds one (paths with spaces, as `siamface train` writes
    them), else by whitespace; blank lines and ``#`` comments are skipped. Returns ``(a, b)`` string tuples, or ``Path`` tuples joined to
    ``root`` when it is given. The label is not in the file (it is implied by
    which file it is: ``pairs_same.txt`` / ``pairs_different.txt``). Raises
    ``ValueError`` naming the line when a line has other than two fields.
    """
    p = Path(path)
    out: list[tuple[Any, Any]] = []
    for no, raw in enumerate(_text_lines(p), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tok = raw.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        if len(tok) != 2:
            raise ValueError(f"{p}:{no}: expected two fields 'a b', got {len(tok)}: {line!r}")
        if root is not None:
            out.append((Path(root) / tok[0], Path(root) / tok[1]))
        else:
            out.append((tok[0], tok[1]))
    return out


# --------------------------------------------------------------------------- #
# open-set 1:N
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class OpenSetSplit:
    """An open-set identification protocol.

    ``gallery``: ``{identity: [enrolled files]}`` (known identities only);
    ``probes``: ``[(file, identity)]`` searched against the gallery, from known
    identities (mated searches) and from ``unknown_ids`` (non-mated searches,
    absent from the gallery).
    """

    gallery: dict[str, list[Path]]
    probes: list[tuple[Path, str]]
    known_ids: list[str]
    unknown_ids: list[str]

    @property
    def gallery_files(self) -> list[tuple[Path, str]]:
        """Flattened gallery as ``(file, identity)`` (several templates per identity)."""
        return [(f, k) for k, fs in self.gallery.items() for f in fs]

    @property
    def probe_ids(self) -> list[str]:
        return [k for _, k in self.probes]

    @property
    def n_mated(self) -> int:
        return sum(1 for _, k in self.probes if k in self.gallery)


def open_set_split(
    root: PathLike | Mapping[str, Sequence[PathLike]],
    n_gallery_per_id: int = 1,
    unknown_fraction: float = 0.2,
    seed: int = 0,
    exts: Iterable[str] = IMAGE_EXTS,
) -> OpenSetSplit:
    """Split a folder-per-person dataset into an open-set gallery and probes.

    ``round(unknown_fraction * n_identities)`` identities, chosen with ``seed``,
    are *unknown*: all their images become non-mated probes and they are absent
    from the gallery. For every other (*known*) identity, ``n_gallery_per_id``
    images chosen with ``seed`` are enrolled and the rest become mated probes;
    a known identity with ``<= n_gallery_per_id`` images is enrolled whole and
    gives no probe (it still acts as a gallery distractor). Probes are listed
    identity by identity in natural file order. Deterministic for a given
    dataset and seed.
    """
    if int(n_gallery_per_id) < 1:
        raise ValueError(f"n_gallery_per_id must be >= 1, got {n_gallery_per_id}")
    if not 0.0 <= float(unknown_fraction) < 1.0:
        raise ValueError(f"unknown_fraction must be in [0, 1), got {unknown_fraction}")
    ids = (
        {k: [Path(f) for f in v] for k, v in root.items()}
        if isinstance(root, Mapping)
        else folder_identities(root, exts)
    )
    if not ids:
        raise ValueError("no identities with images found")
    names = list(ids)
    rng = np.random.default_rng(seed)
    n_unknown = int(round(float(unknown_fraction) * len(names)))
    if n_unknown >= len(names):
        raise ValueError("unknown_fraction leaves no identity for the gallery")
    unknown = set(rng.choice(len(names), size=n_unknown, replace=False).tolist()) if n_unknown else set()
    gallery: dict[str, list[Path]] = {}
    probes: list[tuple[Path, str]] = []
    for k, name in enumerate(names):
        files = ids[name]
        if k in unknown:
            probes.extend((f, name) for f in files)
            continue
        if len(files) <= n_gallery_per_id:
            gallery[name] = list(files)
            continue
        chosen = set(rng.choice(len(files), size=n_gallery_per_id, replace=False).tolist())
        gallery[name] = [f for i, f in enumerate(files) if i in chosen]
        probes.extend((f, name) for i, f in enumerate(files) if i not in chosen)
    return OpenSetSplit(
        gallery=gallery,
        probes=probes,
        known_ids=[n for k, n in enumerate(names) if k not in unknown],
        unknown_ids=[n for k, n in enumerate(names) if k in unknown],
    )
